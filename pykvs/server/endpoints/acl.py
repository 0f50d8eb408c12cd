"""The ``ACL.*`` endpoints: Consul's agent/consul/acl_endpoint.go.

Bootstrap (once, no token needed), policy and token set/delete (``acl = "write"``), read/list
(``acl = "read"``; a token read by a caller without ``acl = "write"`` shows SecretID as
``<hidden>``). Replies carry Consul's JSON shapes (``Policy.to_json()``, ``Token.to_json()``)
so the HTTP layer passes them through. IDs and secrets are random, so records are made here,
before proposing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pykvs import fsm
from pykvs._pack import packb
from pykvs.acl import ANONYMOUS_TOKEN_ID, Policy, PolicyLink, Token, bootstrap_token
from pykvs.server.acl import ACL_DISABLED
from pykvs.server.args import check_size, field_bool, field_map, field_str, uuid_problem
from pykvs.server.endpoints.common import raise_if_error
from pykvs.server.rpc import RPCError
from pykvs.state.acl import bootstrap_not_allowed

if TYPE_CHECKING:
    from pykvs.server.seam import ServerCore
    from pykvs.state.acl import ACLState
    from pykvs.state.store import StateSnapshot
    from pykvs.state.watch import WatchSet

# A policy or token as written to the log: the HTTP API reads bodies up to 1 MiB, so no valid
# record is larger.
MAX_ACL_RECORD = 1 << 20


def policy_stub(policy: Policy) -> dict[str, Any]:
    """Consul's ACLPolicyListStub: the policy without its Rules."""
    body = policy.to_json()
    del body["Rules"]
    return body


def token_json(acl: ACLState, token: Token, *, show_secret: bool) -> dict[str, Any]:
    """A token as Consul shows it: links name the policies' current names, dangling ones go."""
    links = []
    for link in token.policies:
        policy = acl.policy(link.id)
        if policy is not None:
            links.append(PolicyLink(policy.id, policy.name))
    return replace(token, policies=tuple(links)).to_json(show_secret=show_secret)


class ACLEndpoints:
    """The ACL.* endpoints of one server."""

    def __init__(self, core: ServerCore) -> None:
        self.core = core

    def table(self) -> dict[str, Any]:
        return {
            "ACL.BootstrapTokens": self.bootstrap,
            "ACL.PolicySet": self.policy_set,
            "ACL.PolicyDelete": self.policy_delete,
            "ACL.PolicyRead": self.policy_read,
            "ACL.PolicyList": self.policy_list,
            "ACL.TokenSet": self.token_set,
            "ACL.TokenDelete": self.token_delete,
            "ACL.TokenRead": self.token_read,
            "ACL.TokenList": self.token_list,
        }

    # ---------------------------------------------------------------------------- helpers
    async def _forwarded(self, method: str, args: dict[str, Any], read: bool) -> tuple[bool, Any]:
        if not self.core.config.acl_enabled:
            raise RPCError(ACL_DISABLED)
        return await self.core.forward(method, args, read=read)

    async def _apply(self, op: str, **fields: Any) -> Any:
        return raise_if_error(await self.core.raft_apply(fsm.acl_command(op, **fields)))

    def _acl(self) -> ACLState:
        return self.core.state.snapshot().acl

    async def _read(self, args: dict[str, Any],
                    read: Callable[[WatchSet, StateSnapshot], tuple[int, Any]]) -> Any:
        index, body = await self.core.local_query(args, read)
        return {**body, **self.core.query_meta(index)}

    # -------------------------------------------------------------------------- bootstrap
    async def bootstrap(self, args: dict[str, Any]) -> Any:
        forwarded, reply = await self._forwarded("ACL.BootstrapTokens", args, read=False)
        if forwarded:
            return reply
        done = self._acl().bootstrap_index
        if done:  # refuse before Raft, as Consul does (curbs abuse); the FSM checks again
            raise RPCError(bootstrap_not_allowed(done))
        token: Token = await self._apply("bootstrap", token=bootstrap_token().to_wire())
        return token_json(self._acl(), token, show_secret=True)

    # --------------------------------------------------------------------------- policies
    async def policy_set(self, args: dict[str, Any]) -> Any:
        forwarded, reply = await self._forwarded("ACL.PolicySet", args, read=False)
        if forwarded:
            return reply
        self.core.authorize(args).require_acl_write()
        body = field_map(args, "Policy", required=True)
        policy = Policy.from_json(body)
        acl = self._acl()
        if not policy.id:
            policy = replace(policy, id=str(uuid.uuid4()))
        elif acl.policy(policy.id) is None:
            raise RPCError(f"Cannot find policy {policy.id}")
        policy.validate()
        wire = policy.to_wire()
        check_size("Policy", len(packb(wire)), MAX_ACL_RECORD)
        stored: Policy = await self._apply("policy-set", policy=wire)
        return stored.to_json()

    async def policy_delete(self, args: dict[str, Any]) -> Any:
        forwarded, reply = await self._forwarded("ACL.PolicyDelete", args, read=False)
        if forwarded:
            return reply
        self.core.authorize(args).require_acl_write()
        policy_id = field_str(args, "PolicyID")
        if not policy_id:
            raise ValueError("Must specify a PolicyID")
        if self._acl().policy(policy_id) is not None:  # as Consul: an unknown one is a no-op
            await self._apply("policy-delete", id=policy_id)
        return True

    async def policy_read(self, args: dict[str, Any]) -> Any:
        forwarded, reply = await self._forwarded("ACL.PolicyRead", args, read=True)
        if forwarded:
            return reply
        self.core.authorize(args).require_acl_read()
        policy_id, name = field_str(args, "PolicyID"), field_str(args, "PolicyName")

        def read(ws: WatchSet, state: StateSnapshot) -> tuple[int, Any]:
            state.acl.watch(ws, "acl_policies")
            found = state.acl.policy_by_name(name) if name else state.acl.policy(policy_id)
            return state.acl.policies_index, {"Policy": None if found is None else found.to_json()}

        return await self._read(args, read)

    async def policy_list(self, args: dict[str, Any]) -> Any:
        forwarded, reply = await self._forwarded("ACL.PolicyList", args, read=True)
        if forwarded:
            return reply
        self.core.authorize(args).require_acl_read()

        def read(ws: WatchSet, state: StateSnapshot) -> tuple[int, Any]:
            state.acl.watch(ws, "acl_policies")
            stubs = [policy_stub(p) for p in state.acl.policies()]
            return state.acl.policies_index, {"Policies": stubs}

        return await self._read(args, read)

    # ----------------------------------------------------------------------------- tokens
    def _links(self, acl: ACLState, token: Token) -> Token:
        """Name-only links resolved to IDs (Consul lets a token name its policies)."""
        links = []
        for link in token.policies:
            policy = acl.policy(link.id) if link.id else acl.policy_by_name(link.name)
            if policy is None:
                what = f"ID: {link.id}" if link.id else f"name: {link.name}"
                raise RPCError(f"No such ACL policy with {what}")
            links.append(PolicyLink(policy.id, policy.name))
        return replace(token, policies=tuple(links))

    async def token_set(self, args: dict[str, Any]) -> Any:
        forwarded, reply = await self._forwarded("ACL.TokenSet", args, read=False)
        if forwarded:
            return reply
        self.core.authorize(args).require_acl_write()
        body = field_map(args, "ACLToken", required=True)
        create = field_bool(args, "Create")
        for name in ("AccessorID", "SecretID"):
            if body.get(name) and uuid_problem(field_str(body, name)) is not None:
                raise ValueError(f"Invalid Token: {name} is not a valid UUID")
        acl = self._acl()
        token = self._links(acl, Token.from_json(body, now_ns=time.time_ns()))
        existing = acl.token(token.accessor_id) if body.get("AccessorID") else None
        if create:
            if existing is not None:
                raise RPCError("Invalid Token: AccessorID is already in use")
            if body.get("SecretID") and acl.token_by_secret(token.secret_id) is not None:
                raise RPCError("Invalid Token: SecretID is already in use")
        else:
            if existing is None:
                raise RPCError(f"Cannot find token {token.accessor_id!r}")
            if body.get("SecretID") and body["SecretID"] != existing.secret_id:
                raise RPCError("Changing a tokens SecretID is not permitted")
            if body.get("Local") is not None and bool(body["Local"]) != existing.local:
                raise RPCError("Cannot toggle local mode of an existing token")
            token = replace(token, secret_id=existing.secret_id, local=existing.local,
                            expiration_time_ns=existing.expiration_time_ns)
        wire = token.to_wire()
        check_size("Token", len(packb(wire)), MAX_ACL_RECORD)
        stored: Token = await self._apply("token-set", token=wire)
        return token_json(self._acl(), stored, show_secret=True)

    async def token_delete(self, args: dict[str, Any]) -> Any:
        forwarded, reply = await self._forwarded("ACL.TokenDelete", args, read=False)
        if forwarded:
            return reply
        authz = self.core.authorize(args)
        authz.require_acl_write()
        accessor = field_str(args, "TokenID")
        if not accessor:
            raise ValueError("Must specify a TokenID")
        if uuid_problem(accessor) is not None:
            raise ValueError("Accessor ID is missing or an invalid UUID")
        if accessor == ANONYMOUS_TOKEN_ID:
            raise RPCError("Delete operation not permitted on the anonymous token")
        secret = field_str(args, "Token")
        acl = self._acl()
        own = acl.token_by_secret(secret) if secret else None
        if own is not None and own.accessor_id == accessor:
            raise RPCError("Deletion of the request's authorization token is not permitted")
        if acl.token(accessor) is not None:  # an unknown one: nothing to propose
            await self._apply("token-delete", id=accessor)
        return True

    async def token_read(self, args: dict[str, Any]) -> Any:
        """By AccessorID (``TokenID``), or the caller's own token (``TokenIDType: secret``,
        ``/v1/acl/token/self``, which needs no ACL rights)."""
        forwarded, reply = await self._forwarded("ACL.TokenRead", args, read=True)
        if forwarded:
            return reply
        authz = self.core.authorize(args)
        by_secret = field_str(args, "TokenIDType") == "secret"
        wanted = field_str(args, "TokenID")
        if not by_secret:
            authz.require_acl_read()
        show = authz.acl_write() or by_secret

        def read(ws: WatchSet, state: StateSnapshot) -> tuple[int, Any]:
            state.acl.watch(ws, "acl_tokens")
            acl = state.acl
            found = acl.token_by_secret(wanted) if by_secret else acl.token(wanted)
            body = None if found is None else token_json(acl, found, show_secret=show)
            return acl.tokens_index, {"Token": body}

        return await self._read(args, read)

    async def token_list(self, args: dict[str, Any]) -> Any:
        forwarded, reply = await self._forwarded("ACL.TokenList", args, read=True)
        if forwarded:
            return reply
        authz = self.core.authorize(args)
        authz.require_acl_read()
        show = authz.acl_write()
        policy_id = field_str(args, "Policy")

        def read(ws: WatchSet, state: StateSnapshot) -> tuple[int, Any]:
            state.acl.watch(ws, "acl_tokens")
            acl = state.acl
            tokens = [t for t in acl.tokens()
                      if not policy_id or any(link.id == policy_id for link in t.policies)]
            tokens.sort(key=lambda t: (t.accessor_id != ANONYMOUS_TOKEN_ID, t.create_index))
            return acl.tokens_index, {
                "Tokens": [token_json(acl, t, show_secret=show) for t in tokens]}

        return await self._read(args, read)
