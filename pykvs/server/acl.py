"""ACLs on the server: resolving a request's token.

``ServerACL.authorize(args)`` resolves the request's ``Token`` (the secret, as Consul's
``QueryOptions.Token`` / ``WriteRequest.Token``) against this server's replicated ACL tables;
with ACLs off it answers ``MANAGE_ALL`` and nothing is looked up. A forwarded request carries
the secret, never the resolved rights, so the server that answers it decides with its own
tables. The ``ACL.*`` endpoints are in pykvs.server.endpoints.acl.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pykvs.acl import MANAGE_ALL, Authorizer, Policy, Resolver, Token
from pykvs.server.args import field_str
from pykvs.state.acl import BOOTSTRAP_NOT_ALLOWED

if TYPE_CHECKING:
    from pykvs.state.acl import ACLState

__all__ = ["ACL_DISABLED", "ACL_NOT_FOUND", "BOOTSTRAP_NOT_ALLOWED", "DEFAULT_POLICIES",
           "ServerACL"]

ACL_DISABLED = "ACL support disabled"  # Consul's acl.ErrDisabled
ACL_NOT_FOUND = "ACL not found"
DEFAULT_POLICIES = ("allow", "deny")


class ServerACL:
    """The token resolver of one server."""

    def __init__(self, enabled: bool, default_policy: str,
                 acl_state: Callable[[], ACLState]) -> None:
        self.enabled = enabled
        self._acl_state = acl_state
        self.resolver = Resolver(default_policy == "allow", self._token_by_secret,
                                 self._policy_by_id)

    def _token_by_secret(self, secret: str) -> Token | None:
        return self._acl_state().token_by_secret(secret)

    def _policy_by_id(self, policy_id: str) -> Policy | None:
        return self._acl_state().policy(policy_id)

    def authorize(self, args: dict[str, Any]) -> Authorizer:
        """The rights of the request's token (MANAGE_ALL with ACLs off); ACLNotFound when
        the secret names no token."""
        if not self.enabled:
            return MANAGE_ALL
        return self.resolver.resolve(field_str(args, "Token") or None)
