"""Consul-style ACLs for pykvs: the rule language, policies and tokens, compiled authorizers.

A self-contained layer of pure logic (no I/O): the server resolves a request's token with a
:class:`Resolver`, asks the resulting :class:`Authorizer` before it acts, and filters listings
with the helpers of :mod:`pykvs.acl.filter`.  See docs/ACL.md.
"""

from pykvs.acl.authorizer import (
    ALLOW_ALL,
    ANONYMOUS_TOKEN_ID,
    DENY_ALL,
    MANAGE_ALL,
    ACLNotFound,
    Authorizer,
    PermissionDenied,
)
from pykvs.acl.filter import (
    check_txn_ops,
    filter_entries,
    filter_key_list,
    filter_keys,
    filter_packed,
    filter_sessions,
    txn_op_denial,
)
from pykvs.acl.policy import (
    ANONYMOUS_TOKEN,
    ANONYMOUS_TOKEN_SECRET,
    GLOBAL_MANAGEMENT_POLICY,
    GLOBAL_MANAGEMENT_POLICY_ID,
    Policy,
    PolicyLink,
    Token,
    bootstrap_token,
)
from pykvs.acl.resolver import Resolver
from pykvs.acl.rules import Rules, RulesError, merge_rules, parse_rules

__all__ = [
    "ALLOW_ALL",
    "ANONYMOUS_TOKEN",
    "ANONYMOUS_TOKEN_ID",
    "ANONYMOUS_TOKEN_SECRET",
    "DENY_ALL",
    "GLOBAL_MANAGEMENT_POLICY",
    "GLOBAL_MANAGEMENT_POLICY_ID",
    "MANAGE_ALL",
    "ACLNotFound",
    "Authorizer",
    "PermissionDenied",
    "Policy",
    "PolicyLink",
    "Resolver",
    "Rules",
    "RulesError",
    "Token",
    "bootstrap_token",
    "check_txn_ops",
    "filter_entries",
    "filter_key_list",
    "filter_keys",
    "filter_packed",
    "filter_sessions",
    "merge_rules",
    "parse_rules",
    "txn_op_denial",
]
