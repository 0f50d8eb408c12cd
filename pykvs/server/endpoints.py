"""The RPC endpoints, in the shape of Consul's agent/consul/*_endpoint.go.

Each endpoint reads as "forward, check, apply or query": the shared machinery (``forward``,
``raft_apply``, ``blocking_query`` and the QueryMeta of a reply) lives on the server object
passed in, so these functions only say what is particular to each method.

Replies that carry KV entries are assembled from the stored encodings (``Entries`` is a msgpack
array of ``[key, stored entry]`` pairs, the stored entry being the state store's 6-array), so
nothing is decoded and re-encoded on the way out.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgpack

from pykvs import fsm, transcode
from pykvs.acl import (
    ACLNotFound,
    Authorizer,
    PermissionDenied,
    check_txn_ops,
    filter_entries,
    filter_key_list,
    filter_packed,
    filter_sessions,
    txn_op_denial,
)
from pykvs.server.args import (
    NS_PER_SECOND,
    QueryOptions,
    field_bytes,
    field_map,
    field_str,
    field_uint,
)
from pykvs.server.restore import RestoreUploads
from pykvs.server.rpc import RawMsgpack, RPCError
from pykvs.state.sessions import Session, SessionError, validate_session
from pykvs.state.txn import TXN_VERBS, TxnOp, TxnResult

if TYPE_CHECKING:
    from pykvs.server.server import Server
    from pykvs.state.store import StateSnapshot
    from pykvs.state.watch import WatchSet

KV_APPLY_OPS = fsm.KV_VERBS
TXN_READ_VERBS = ("get", "get-tree", "check-index", "check-session", "check-not-exists")
MAX_TXN_OPS = 128

Endpoint = Callable[[dict[str, Any]], Awaitable[Any]]


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def raw_reply(meta: dict[str, Any], name: str, raw: bytes | None) -> RawMsgpack:
    """A reply map of ``meta`` plus one field whose value is already msgpack (or nil)."""
    if len(meta) + 1 > 15:
        raise ValueError("raw_reply is for small maps")
    parts = [bytes([0x80 | (len(meta) + 1)])]
    for key, value in meta.items():
        parts.append(_pack(key))
        parts.append(_pack(value))
    parts.append(_pack(name))
    parts.append(raw if raw is not None else b"\xc0")
    return RawMsgpack(b"".join(parts))


def _entry_pair(key: bytes, stored: bytes) -> bytes:
    """msgpack ``[[key, stored]]`` with the stored entry embedded as is."""
    return b"\x91\x92" + _pack(key) + stored


def session_to_wire(session: Session) -> dict[str, Any]:
    return {
        "ID": session.id,
        "Name": session.name,
        "Node": session.node,
        "LockDelay": session.lock_delay,
        "Behavior": session.behavior,
        "TTL": session.ttl,
        "CreateIndex": session.create_index,
        "ModifyIndex": session.modify_index,
    }


def txn_result_to_wire(result: TxnResult) -> dict[str, Any]:
    results = None
    if result.results is not None:
        results = [
            {
                "KV": {
                    "Key": entry.key,
                    "Value": entry.value,
                    "Flags": entry.flags,
                    "CreateIndex": entry.create_index,
                    "ModifyIndex": entry.modify_index,
                    "LockIndex": entry.lock_index,
                    "Session": entry.session or "",
                }
            }
            for entry in result.results
        ]
    errors = [{"OpIndex": err.op_index, "What": err.what} for err in result.errors] or None
    return {"Results": results, "Errors": errors}


def _acl_errors(endpoint: Endpoint) -> Endpoint:
    """ACL refusals travel as their Consul text (the HTTP layer answers them 403)."""

    async def checked(args: dict[str, Any]) -> Any:
        try:
            return await endpoint(args)
        except (PermissionDenied, ACLNotFound) as exc:
            raise RPCError(str(exc)) from None

    return checked


def _filtered_txn(authz: Authorizer, result: TxnResult) -> TxnResult:
    """A transaction's get/get-tree results without the keys the token may not read."""
    if result.results is None:
        return result
    kept, _ = filter_entries(authz, result.results)
    return TxnResult(kept, result.errors)


def _denied_txn(authz: Authorizer, ops: list[TxnOp]) -> dict[str, Any] | None:
    """Consul's Txn preCheck: every op the token may not run, as the reply's Errors."""
    errors = check_txn_ops(authz, ops)
    if not errors:
        return None
    return {"Results": None, "Errors": [{"OpIndex": i, "What": what} for i, what in errors]}


def _raise_if_error(result: Any) -> Any:
    """The FSM returns (not raises) Consul's refusals so every replica agrees; surface them."""
    if isinstance(result, Exception):
        raise RPCError(str(result))
    return result


def list_keys(
    authz: Authorizer, state: StateSnapshot, prefix: bytes, separator: bytes,
    ws: WatchSet | None = None,
) -> tuple[int, list[bytes], bool]:
    """Consul's ListKeys under ACLs: ``(index, keys, filtered)``.  A token that may read the
    whole prefix gets the tree's fold in C; any other filters the full keys, then folds."""
    if authz.key_read_prefix(prefix):
        index, keys = state.kv_list_keys(prefix, separator, ws)
        return index, keys, False
    index, every = state.kv_list_keys(prefix, b"", ws)
    keys, filtered = filter_key_list(authz, every, prefix, separator)
    return index, keys, filtered


class Endpoints:
    """KVS, Txn, Session, Status and Operator methods bound to one server."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self._restores = RestoreUploads()

    def table(self) -> dict[str, Endpoint]:
        return {name: _acl_errors(endpoint) for name, endpoint in self._methods().items()}

    def _methods(self) -> dict[str, Endpoint]:
        return {
            **self.server.acl.table(),
            "KVS.Apply": self.kvs_apply,
            "KVS.Get": self.kvs_get,
            "KVS.List": self.kvs_list,
            "KVS.ListKeys": self.kvs_list_keys,
            "Txn.Apply": self.txn_apply,
            "Txn.Read": self.txn_read,
            "Session.Apply": self.session_apply,
            "Session.Get": self.session_get,
            "Session.List": self.session_list,
            "Session.NodeSessions": self.session_node_sessions,
            "Session.Renew": self.session_renew,
            "Status.Leader": self.status_leader,
            "Status.Peers": self.status_peers,
            "Status.Ping": self.status_ping,
            "Operator.RaftGetConfiguration": self.operator_raft_configuration,
            "Operator.RaftRemovePeer": self.operator_raft_remove_peer,
            "Operator.TransferLeader": self.operator_transfer_leader,
            "Snapshot.Save": self.snapshot_save,
            "Snapshot.Read": self.snapshot_read,
            "Snapshot.Restore": self.snapshot_restore,
        }

    # ---------------------------------------------------------------------------------- KVS
    async def kvs_apply(self, args: dict[str, Any]) -> Any:
        forwarded, reply = await self.server.forward("KVS.Apply", args, read=False)
        if forwarded:
            return reply
        command, may_delete = self.kvs_apply_command(args)
        return _raise_if_error(await self.server.raft_apply(command, may_delete=may_delete))

    def kvs_apply_command(self, args: dict[str, Any]) -> tuple[bytes, bool]:
        """KVS.Apply's checks on the server that applies it: ``(FSM command, may delete)``."""
        op = field_str(args, "Op")
        if op not in KV_APPLY_OPS:
            raise ValueError(f"unknown KVS operation {op!r} (expected one of {KV_APPLY_OPS})")
        ent = field_map(args, "DirEnt", required=True)
        key = field_bytes(ent, "Key")
        value = field_bytes(ent, "Value")
        if not key and op != "delete-tree":
            raise ValueError("Must provide key")
        self.server.check_value_size(value)
        session = field_str(ent, "Session") or None
        if op in ("lock", "unlock") and not session:
            raise ValueError(f"{op} needs DirEnt.Session")
        denied = txn_op_denial(self.server.acl.authorize(args), op, key)
        if denied is not None:
            raise denied
        command = fsm.kv_command(
            op,
            key,
            value,
            flags=field_uint(ent, "Flags"),
            index=field_uint(ent, "ModifyIndex"),
            session=session,
            ts=time.time_ns(),
        )
        return command, op.startswith("delete")

    @staticmethod
    def kvs_apply_result(result: Any) -> Any:
        """KVS.Apply's answer from the FSM's result (its refusals raised as RPCError)."""
        return _raise_if_error(result)

    async def kvs_get(self, args: dict[str, Any]) -> Any:
        forwarded, reply = await self.server.forward("KVS.Get", args, read=True)
        if forwarded:
            return reply
        key = field_bytes(args, "Key")
        self.server.acl.authorize(args).require_key_read(key)

        def read(ws: WatchSet, state: StateSnapshot) -> tuple[int, bytes | None]:
            index, stored = state.kv_get_stored(key, ws)
            return index, None if stored is None else _entry_pair(key, stored)

        return await self.server.blocking_query(args, read, "Entries")

    async def kvs_list(self, args: dict[str, Any]) -> Any:
        forwarded, reply = await self.server.forward("KVS.List", args, read=True)
        if forwarded:
            return reply
        prefix = field_bytes(args, "Key")
        authz = self.server.acl.authorize(args)

        def read(ws: WatchSet, state: StateSnapshot) -> tuple[int, tuple[bytes | None, bool]]:
            index, packed = state.kv_list_packed(prefix, ws)
            packed, filtered = filter_packed(authz, packed, prefix)
            listing = transcode.pack_kv_listing_msgpack(packed)
            return index, (None if listing == b"\x90" else listing, filtered)

        return await self.filtered_query(args, read, "Entries")

    async def filtered_query(self, args: dict[str, Any], read: Callable[..., Any],
                             name: str) -> RawMsgpack:
        """A blocking query whose ``read`` answers ``(index, (raw, filtered))``; the reply
        says ResultsFilteredByACLs when something was dropped and the request named a token
        (as Consul: the anonymous caller is not told)."""
        index, (raw, filtered) = await self.server.local_query(args, read)
        meta = self.server.query_meta(index)
        if filtered and field_str(args, "Token"):
            meta["ResultsFilteredByACLs"] = True
        return raw_reply(meta, name, raw)

    async def kvs_list_keys(self, args: dict[str, Any]) -> Any:
        forwarded, reply = await self.server.forward("KVS.ListKeys", args, read=True)
        if forwarded:
            return reply
        prefix = field_bytes(args, "Prefix")
        # Consul's Go field really is spelled "Seperator"; accept both spellings.
        separator = field_bytes(args, "Seperator") or field_bytes(args, "Separator")
        authz = self.server.acl.authorize(args)

        def read(ws: WatchSet, state: StateSnapshot) -> tuple[int, tuple[bytes, bool]]:
            index, keys, filtered = list_keys(authz, state, prefix, separator, ws)
            return index, (_pack(keys), filtered)

        return await self.filtered_query(args, read, "Keys")

    # ---------------------------------------------------------------------------------- Txn
    def _txn_ops(self, args: dict[str, Any]) -> list[TxnOp]:
        raw_ops = args.get("Ops")
        if not isinstance(raw_ops, list) or not raw_ops:
            raise ValueError("Ops must be a non-empty list of operations")
        if len(raw_ops) > MAX_TXN_OPS:
            raise ValueError(
                f"Transaction contains too many operations ({len(raw_ops)} > {MAX_TXN_OPS})"
            )
        ops = []
        for position, raw in enumerate(raw_ops):
            try:
                if not isinstance(raw, dict):
                    raise ValueError("must be a map with a KV field")
                kv = field_map(raw, "KV", required=True)
                verb = field_str(kv, "Verb")
                if verb not in TXN_VERBS:
                    raise ValueError(f"unknown KV verb {verb!r}")
                value = field_bytes(kv, "Value")
                self.server.check_value_size(value)
                ops.append(
                    TxnOp(
                        verb,
                        field_bytes(kv, "Key"),
                        value,
                        field_uint(kv, "Flags"),
                        field_uint(kv, "Index"),
                        field_str(kv, "Session") or None,
                    )
                )
            except ValueError as exc:
                raise ValueError(f"operation {position}: {exc}") from None
        return ops

    async def txn_apply(self, args: dict[str, Any]) -> Any:
        forwarded, reply = await self.server.forward("Txn.Apply", args, read=False)
        if forwarded:
            return reply
        ops = self._txn_ops(args)
        authz = self.server.acl.authorize(args)
        denied = _denied_txn(authz, ops)
        if denied is not None:
            return denied
        may_delete = any(op.verb.startswith("delete") for op in ops)
        result = _raise_if_error(
            await self.server.raft_apply(
                fsm.txn_command(ops, ts=time.time_ns()), may_delete=may_delete
            )
        )
        return txn_result_to_wire(_filtered_txn(authz, result))

    async def txn_read(self, args: dict[str, Any]) -> Any:
        forwarded, reply = await self.server.forward("Txn.Read", args, read=True)
        if forwarded:
            return reply
        ops = self._txn_ops(args)
        for position, op in enumerate(ops):
            if op.verb not in TXN_READ_VERBS:
                raise ValueError(f"operation {position}: {op.verb!r} is not a read-only verb")
        authz = self.server.acl.authorize(args)
        denied = _denied_txn(authz, ops)
        meta = self.server.query_meta(self.server.state.index)
        if denied is not None:
            return {**denied, **meta}
        await self.server.prepare_read(QueryOptions.from_args(args))
        result = _filtered_txn(authz, self.server.read_txn(ops))
        return {**txn_result_to_wire(result), **meta}

    # ------------------------------------------------------------------------------ Session
    async def session_apply(self, args: dict[str, Any]) -> Any:
        forwarded, reply = await self.server.forward("Session.Apply", args, read=False)
        if forwarded:
            return reply
        op = field_str(args, "Op")
        body = field_map(args, "Session", required=True)
        authz = self.server.acl.authorize(args)
        if op == "destroy":
            session_id = field_str(body, "ID")
            if not session_id:
                raise ValueError("Must provide ID")
            _, existing = self.server.state.session_get(session_id)
            if existing is not None:
                authz.require_session_write(existing.node)
            command = fsm.session_destroy_command(session_id, ts=time.time_ns())
            _raise_if_error(await self.server.raft_apply(command, may_delete=True))
            self.server.sessions.stop_timer(session_id)
            return session_id
        if op != "create":
            raise ValueError(f"unknown session operation {op!r} (expected create or destroy)")
        lock_delay = body.get("LockDelay")
        session = Session(
            id=str(uuid.uuid4()),
            node=field_str(body, "Node") or self.server.config.node_name,
            name=field_str(body, "Name"),
            lock_delay=(
                field_uint(body, "LockDelay") if lock_delay is not None else 15 * NS_PER_SECOND
            ),
            behavior=field_str(body, "Behavior") or "release",
            ttl=field_str(body, "TTL"),
        )
        try:
            validate_session(session)
        except SessionError as exc:
            raise RPCError(str(exc)) from None
        authz.require_session_write(session.node)
        command = fsm.session_create_command(session, ts=time.time_ns())
        session_id = _raise_if_error(await self.server.raft_apply(command))
        self.server.sessions.start_timer(session_id, session.ttl)
        return session_id

    async def _session_query(
        self, method: str, args: dict[str, Any], select: Callable[..., Any]
    ) -> Any:
        forwarded, reply = await self.server.forward(method, args, read=True)
        if forwarded:
            return reply
        authz = self.server.acl.authorize(args)

        def read(ws: WatchSet, state: StateSnapshot) -> tuple[int, tuple[bytes, bool]]:
            index, found = select(state, ws)
            kept, filtered = filter_sessions(authz, found)
            return index, (_pack([session_to_wire(s) for s in kept]), filtered)

        return await self.filtered_query(args, read, "Sessions")

    async def session_get(self, args: dict[str, Any]) -> Any:
        session_id = field_str(args, "SessionID")

        def select(state: StateSnapshot, ws: WatchSet) -> tuple[int, list[Session]]:
            index, found = state.session_get(session_id, ws)
            return index, [] if found is None else [found]

        return await self._session_query("Session.Get", args, select)

    async def session_list(self, args: dict[str, Any]) -> Any:
        return await self._session_query(
            "Session.List", args, lambda state, ws: state.session_list(ws)
        )

    async def session_node_sessions(self, args: dict[str, Any]) -> Any:
        node = field_str(args, "Node")
        return await self._session_query(
            "Session.NodeSessions", args, lambda state, ws: state.node_sessions(node, ws)
        )

    async def session_renew(self, args: dict[str, Any]) -> Any:
        # Renew resets the leader's TTL timer, so it always goes to the leader.
        forwarded, reply = await self.server.forward("Session.Renew", args, read=False)
        if forwarded:
            return reply
        session_id = field_str(args, "SessionID")
        index, found = self.server.state.session_get(session_id)
        if found is not None:
            self.server.acl.authorize(args).require_session_write(found.node)
            self.server.sessions.start_timer(found.id, found.ttl)
        sessions = [] if found is None else [session_to_wire(found)]
        return {"Sessions": sessions, **self.server.query_meta(index)}

    # ------------------------------------------------------------------------------- Status
    async def status_leader(self, args: dict[str, Any]) -> str:
        forwarded, reply = await self.server.forward_dc_only("Status.Leader", args)
        return reply if forwarded else self.server.leader_address()

    async def status_peers(self, args: dict[str, Any]) -> list[str]:
        forwarded, reply = await self.server.forward_dc_only("Status.Peers", args)
        if forwarded:
            return reply
        return sorted(self.server.require_node().configuration().voters.values())

    async def status_ping(self, args: dict[str, Any]) -> bool:
        return True

    # ----------------------------------------------------------------------------- Operator
    async def operator_raft_configuration(self, args: dict[str, Any]) -> Any:
        forwarded, reply = await self.server.forward("Operator.RaftGetConfiguration", args,
                                                     read=True)
        if forwarded:
            return reply
        self.server.acl.authorize(args).require_operator_read()
        return self.server.raft_configuration()

    async def operator_raft_remove_peer(self, args: dict[str, Any]) -> Any:
        forwarded, reply = await self.server.forward("Operator.RaftRemovePeer", args, read=False)
        if forwarded:
            return reply
        self.server.acl.authorize(args).require_operator_write()
        return await self.server.remove_peer(field_str(args, "ID"), field_str(args, "Address"))

    async def operator_transfer_leader(self, args: dict[str, Any]) -> Any:
        forwarded, reply = await self.server.forward("Operator.TransferLeader", args, read=False)
        if forwarded:
            return reply
        self.server.acl.authorize(args).require_operator_write()
        return await self.server.transfer_leader(field_str(args, "ID") or None)

    # ----------------------------------------------------------------------------- Snapshot
    async def snapshot_save(self, args: dict[str, Any]) -> Any:
        """Take a point-in-time snapshot; the client pulls it with Snapshot.Read (same
        Datacenter and AllowStale, so the same server answers)."""
        forwarded, reply = await self.server.forward("Snapshot.Save", args, read=True)
        if forwarded:
            return reply
        self.server.acl.authorize(args).require_snapshot()
        await self.server.prepare_read(QueryOptions.from_args(args))
        snapshot_id, size, index = await self.server.save_snapshot()
        return {"ID": snapshot_id, "Size": size, **self.server.query_meta(index)}

    async def snapshot_read(self, args: dict[str, Any]) -> Any:
        forwarded, reply = await self.server.forward("Snapshot.Read", args, read=True)
        if forwarded:
            return reply
        self.server.acl.authorize(args).require_snapshot()
        data, eof = self.server.read_snapshot(field_str(args, "ID"), field_uint(args, "Offset"))
        return {"Data": data, "EOF": eof}

    async def snapshot_restore(self, args: dict[str, Any]) -> Any:
        """Replace the whole state by an FSM snapshot stream sent in pieces (see
        pykvs.server.restore); a follower forwards every piece to the leader."""
        forwarded, reply = await self.server.forward("Snapshot.Restore", args, read=False)
        if forwarded:
            return reply
        self.server.acl.authorize(args).require_snapshot()
        return await self._restores.receive(self.server, args)
