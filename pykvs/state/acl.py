"""The replicated ACL tables: policies and tokens, as Consul's state store keeps them.

Five trees of the state (each a C radix tree like the KV tables, kept in the FSM snapshot):

- ``acl_policies``: policy ID -> ``Policy.encode()`` (tree index = ModifyIndex);
- ``acl_policy_names``: policy Name -> policy ID (names are unique, as in Consul);
- ``acl_tokens``: AccessorID -> ``Token.encode()``;
- ``acl_token_secrets``: SecretID -> AccessorID (the resolver's look-up);
- ``acl_meta``: ``bootstrap``, ``policies``, ``tokens`` -> u64 index (the bootstrap index, 0
  until the cluster is bootstrapped; the tables' indexes for blocking reads).

:class:`ACLState` reads one committed version; :class:`ACLWriter` holds a write transaction's
pending changes (``WriteTxn.acl``).  The verbs check what every replica must agree on (name
and secret uniqueness, links to existing policies, the built-in records) and raise
:class:`ACLError`, which the FSM returns as the entry's result.  :func:`apply_command` is the
FSM handler of ``{"t": "acl", "op": ...}`` commands (pykvs.fsm documents the schema).
"""

from __future__ import annotations

import struct
from dataclasses import replace
from typing import Any

from pykvs import radix
from pykvs.acl.authorizer import ANONYMOUS_TOKEN_ID
from pykvs.acl.policy import (
    ANONYMOUS_TOKEN,
    GLOBAL_MANAGEMENT_POLICY,
    GLOBAL_MANAGEMENT_POLICY_ID,
    Policy,
    Token,
)
from pykvs.acl.rules import RulesError
from pykvs.state.errors import StateError
from pykvs.state.tables import TableView

__all__ = [
    "ACL_COMMAND_OPS",
    "ACL_TABLES",
    "ACLError",
    "ACLState",
    "ACLWriter",
    "apply_command",
    "bootstrap_not_allowed",
]

ACL_TABLES = ("acl_policies", "acl_policy_names", "acl_tokens", "acl_token_secrets", "acl_meta")
ACL_COMMAND_OPS = ("bootstrap", "policy-set", "policy-delete", "token-set", "token-delete",
                   "restore")
BOOTSTRAP_NOT_ALLOWED = "ACL bootstrap no longer allowed"  # Consul's ACLBootstrapNotAllowedErr

_U64 = struct.Struct("<Q")
_BOOTSTRAP, _POLICIES, _TOKENS = b"bootstrap", b"policies", b"tokens"


class ACLError(StateError):
    """An ACL write every replica refuses (its text is Consul's where Consul has one)."""


def bootstrap_not_allowed(index: int) -> str:
    return f"{BOOTSTRAP_NOT_ALLOWED} (reset index: {index})"


def _meta_index(stored: bytes | None) -> int:
    return 0 if stored is None else _U64.unpack(stored)[0]


class ACLState:
    """The ACL tables of one committed version (never changed once published)."""

    __slots__ = ("trees",)

    def __init__(self, trees: dict[str, Any] | None = None) -> None:
        self.trees = trees if trees is not None else {name: radix.Tree() for name in ACL_TABLES}

    def index_of(self, what: bytes) -> int:
        return _meta_index(self.trees["acl_meta"].get(what))

    @property
    def bootstrap_index(self) -> int:
        """The index of the bootstrap; 0 while ``PUT /v1/acl/bootstrap`` is still allowed."""
        return self.index_of(_BOOTSTRAP)

    @property
    def policies_index(self) -> int:
        return max(self.index_of(_POLICIES), 1)

    @property
    def tokens_index(self) -> int:
        return max(self.index_of(_TOKENS), 1)

    def policy(self, policy_id: str) -> Policy | None:
        stored = self.trees["acl_policies"].get(policy_id.encode())
        return None if stored is None else Policy.decode(stored)

    def policy_by_name(self, name: str) -> Policy | None:
        policy_id = self.trees["acl_policy_names"].get(name.encode())
        return None if policy_id is None else self.policy(policy_id.decode())

    def policies(self) -> list[Policy]:
        return [Policy.decode(v) for _, v, _ in self.trees["acl_policies"].list_prefix(b"")]

    def token(self, accessor_id: str) -> Token | None:
        stored = self.trees["acl_tokens"].get(accessor_id.encode())
        return None if stored is None else Token.decode(stored)

    def token_by_secret(self, secret_id: str) -> Token | None:
        accessor = self.trees["acl_token_secrets"].get(secret_id.encode())
        return None if accessor is None else self.token(accessor.decode())

    def tokens(self) -> list[Token]:
        return [Token.decode(v) for _, v, _ in self.trees["acl_tokens"].list_prefix(b"")]

    def watch(self, ws: Any, table: str) -> None:
        """Add ``table``'s whole-table watch to a blocking read's watch set."""
        if ws is not None:
            ws.add(self.trees[table].prefix_watch(b""))


class ACLWriter:
    """Pending changes to the ACL tables inside one WriteTxn (or a child of one)."""

    __slots__ = ("parent", "views")

    def __init__(self, base: ACLState | None = None, parent: ACLWriter | None = None) -> None:
        self.parent = parent
        self.views: dict[str, TableView]
        if parent is not None:
            self.views = {name: view.child() for name, view in parent.views.items()}
        else:
            trees = (base or ACLState()).trees
            self.views = {name: TableView(trees[name]) for name in ACL_TABLES}

    def child(self) -> ACLWriter:
        return ACLWriter(parent=self)

    def merge(self) -> None:
        for view in self.views.values():
            view.merge_into_parent()

    def commit(self) -> tuple[ACLState | None, set[int]]:
        """``(new state or None when nothing changed, fired watch ids)`` (root only)."""
        if not any(view.dirty for view in self.views.values()):
            return None, set()
        trees: dict[str, Any] = {}
        fired: set[int] = set()
        for name, view in self.views.items():
            trees[name], ids = view.commit()
            fired |= ids
        return ACLState(trees), fired

    # -------------------------------------------------------------------------------- reads
    def _index(self, what: bytes) -> int:
        return _meta_index(self.views["acl_meta"].get(what))

    def _bump(self, idx: int, what: bytes) -> None:
        self.views["acl_meta"].put(what, _U64.pack(idx), idx)

    def policy(self, policy_id: str) -> Policy | None:
        stored = self.views["acl_policies"].get(policy_id.encode())
        return None if stored is None else Policy.decode(stored)

    def token(self, accessor_id: str) -> Token | None:
        stored = self.views["acl_tokens"].get(accessor_id.encode())
        return None if stored is None else Token.decode(stored)

    # ------------------------------------------------------------------------------- verbs
    def bootstrap(self, idx: int, token: Token) -> Token:
        """Consul's ACLBootstrap: once per cluster; also installs the built-in records."""
        done = self._index(_BOOTSTRAP)
        if done:
            raise ACLError(bootstrap_not_allowed(done))
        if self.policy(GLOBAL_MANAGEMENT_POLICY_ID) is None:
            self.policy_set(idx, GLOBAL_MANAGEMENT_POLICY)
        if self.token(ANONYMOUS_TOKEN_ID) is None:
            self.token_set(idx, replace(ANONYMOUS_TOKEN, create_time_ns=token.create_time_ns))
        stored = self.token_set(idx, token)
        self._bump(idx, _BOOTSTRAP)
        return stored

    def policy_set(self, idx: int, policy: Policy) -> Policy:
        """Create or update a policy (by ID); its Name must be free and its rules valid."""
        if not policy.id:
            raise ACLError("Invalid Policy: no ID")
        try:
            policy.validate()
        except RulesError as exc:
            raise ACLError(str(exc)) from None
        except ValueError as exc:
            raise ACLError(str(exc)) from None
        names = self.views["acl_policy_names"]
        holder = names.get(policy.name.encode())
        if holder is not None and holder.decode() != policy.id:
            raise ACLError(f"Invalid Policy: A Policy with Name {policy.name!r} already exists")
        existing = self.policy(policy.id)
        create_index = idx
        if existing is not None:
            create_index = existing.create_index
            if policy.id == GLOBAL_MANAGEMENT_POLICY_ID and policy.rules != existing.rules:
                raise ACLError("Changing the Rules for the builtin global-management policy "
                               "is not permitted")
            if existing.name != policy.name:
                names.delete(existing.name.encode())
        stored = replace(policy, create_index=create_index, modify_index=idx)
        self.views["acl_policies"].put(policy.id.encode(), stored.encode(), idx)
        names.put(policy.name.encode(), policy.id.encode(), idx)
        self._bump(idx, _POLICIES)
        return stored

    def policy_delete(self, idx: int, policy_id: str) -> bool:
        """Delete a policy; tokens keep their (now dangling) links, as in Consul."""
        if policy_id == GLOBAL_MANAGEMENT_POLICY_ID:
            raise ACLError("Delete operation not permitted on the builtin global-management "
                           "policy")
        existing = self.policy(policy_id)
        if existing is None:
            return False
        self.views["acl_policies"].delete(policy_id.encode())
        self.views["acl_policy_names"].delete(existing.name.encode())
        self._bump(idx, _POLICIES)
        return True

    def token_set(self, idx: int, token: Token) -> Token:
        """Create or update a token (by AccessorID); its SecretID may not change or clash."""
        if not token.accessor_id or not token.secret_id:
            raise ACLError("Invalid Token: AccessorID and SecretID must be set")
        for link in token.policies:
            if self.policy(link.id) is None:
                raise ACLError(f"No such policy with ID: {link.id}")
        secrets = self.views["acl_token_secrets"]
        holder = secrets.get(token.secret_id.encode())
        if holder is not None and holder.decode() != token.accessor_id:
            raise ACLError("Invalid Token: SecretID is already in use")
        existing = self.token(token.accessor_id)
        create_index = idx
        if existing is not None:
            if existing.secret_id != token.secret_id:
                raise ACLError("Changing a tokens SecretID is not permitted")
            create_index = existing.create_index
            token = replace(token, create_time_ns=existing.create_time_ns)
        stored = token.with_indexes(create_index, idx)
        self.views["acl_tokens"].put(token.accessor_id.encode(), stored.encode(), idx)
        secrets.put(token.secret_id.encode(), token.accessor_id.encode(), idx)
        self._bump(idx, _TOKENS)
        return stored

    def token_delete(self, idx: int, accessor_id: str) -> bool:
        if accessor_id == ANONYMOUS_TOKEN_ID:
            raise ACLError("Delete operation not permitted on the anonymous token")
        existing = self.token(accessor_id)
        if existing is None:
            return False
        self.views["acl_tokens"].delete(accessor_id.encode())
        self.views["acl_token_secrets"].delete(existing.secret_id.encode())
        self._bump(idx, _TOKENS)
        return True

    def restore(self, idx: int, policies: list[Policy], tokens: list[Token],
                bootstrap_index: int) -> None:
        """Replace every ACL table (a snapshot restore through the HTTP API)."""
        for view in self.views.values():
            view.delete_prefix(b"")
        for policy in policies:
            self.views["acl_policies"].put(policy.id.encode(), policy.encode(), idx)
            self.views["acl_policy_names"].put(policy.name.encode(), policy.id.encode(), idx)
        for token in tokens:
            self.views["acl_tokens"].put(token.accessor_id.encode(), token.encode(), idx)
            self.views["acl_token_secrets"].put(token.secret_id.encode(),
                                                token.accessor_id.encode(), idx)
        if bootstrap_index:
            self.views["acl_meta"].put(_BOOTSTRAP, _U64.pack(bootstrap_index), idx)
        self._bump(idx, _POLICIES)
        self._bump(idx, _TOKENS)


def apply_command(txn: Any, idx: int, cmd: dict[str, Any]) -> Any:
    """The FSM handler of ``"t": "acl"`` commands; a refusal raises ACLError (returned)."""
    op = cmd["op"]
    writer: ACLWriter = txn.acl
    if op == "bootstrap":
        return writer.bootstrap(idx, Token.from_wire(cmd["token"]))
    if op == "policy-set":
        return writer.policy_set(idx, Policy.from_wire(cmd["policy"]))
    if op == "policy-delete":
        return writer.policy_delete(idx, str(cmd["id"]))
    if op == "token-set":
        return writer.token_set(idx, Token.from_wire(cmd["token"]))
    if op == "token-delete":
        return writer.token_delete(idx, str(cmd["id"]))
    if op == "restore":
        policies = [Policy.from_wire(w) for w in cmd["policies"]]
        tokens = [Token.from_wire(w) for w in cmd["tokens"]]
        writer.restore(idx, policies, tokens, int(cmd.get("bootstrap", 0)))
        return True
    raise ACLError(f"Invalid ACL operation {op!r}")
