"""The FSM: committed log entries -> the state store, and snapshot / restore of that state.

Log entry schema (msgpack map; every command names its type and its schema version):

    {"v": 1, "t": "kv", "op": <KV verb>, "key": bin, "value": bin, "flags": int,
     "index": int (CAS index), "session": str|nil, "ts": int}
    {"v": 1, "t": "txn", "ops": [[verb, key, value, flags, index, session], ...], "ts": int}
    {"v": 1, "t": "session", "op": "create", "id": str, "node": str, "name": str,
     "lock_delay": int (ns), "behavior": "release"|"delete", "ttl": str, "ts": int}
    {"v": 1, "t": "session", "op": "destroy", "id": str, "ts": int}
    {"v": 1, "t": "reap", "upto": int}
    {"v": 1, "t": "acl", "op": "bootstrap"|"token-set", "token": Token wire}
    {"v": 1, "t": "acl", "op": "policy-set", "policy": Policy wire}
    {"v": 1, "t": "acl", "op": "policy-delete"|"token-delete", "id": str}
    {"v": 1, "t": "acl", "op": "restore", "policies": [...], "tokens": [...], "bootstrap": int}

(ACL wire forms: pykvs.acl.policy; the verbs: pykvs.state.acl.)

``ts`` is the leader's wall clock in ns when it accepted the write; lock-delay is judged against
it, so applying is deterministic.  A command may carry ``"ignore": true``: a replica that does
not know its type then skips it (Consul's IgnoreUnknownTypeFlag) instead of reporting an error.

``apply`` returns what the writer gets back: True/False for KV verbs (Consul's reply), a
:class:`~pykvs.state.txn.TxnResult` for a transaction, the session ID for a create, True for a
destroy or reap, None for an ignored command, or an *instance* of :class:`ApplyError`,
:class:`~pykvs.state.errors.StateError` or :class:`~pykvs.state.sessions.SessionError` (returned,
not raised: the entry is committed and every replica reaches the same answer).

Snapshot and restore are the state store's (pykvs.state.snapshot holds the stream format):
``FSM.snapshot`` takes an O(1) version to stream, ``FSM.restore`` reads a stream into new tables
and swaps them in only once it verifies.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Any, BinaryIO

import msgpack

from pykvs._pack import packb
from pykvs.state import acl as acl_state
from pykvs.state.errors import StateError
from pykvs.state.sessions import Session, SessionError
from pykvs.state.snapshot import (
    SNAPSHOT_FORMAT,
    SNAPSHOT_MAGIC,
    SnapshotError,
    SnapshotHeader,
    SnapshotStream,
    read_snapshot,
)
from pykvs.state.store import StateStore
from pykvs.state.txn import TXN_VERBS, TxnOp, WriteTxn

COMMAND_VERSION = 1
KV_VERBS = ("set", "cas", "lock", "unlock", "delete", "delete-cas", "delete-tree")

FSMSnapshot = SnapshotStream  # what FSM.snapshot returns (pykvs.state.snapshot)


class ApplyError(Exception):
    """A log entry the FSM could not apply (undecodable, unknown type, bad fields)."""


# --------------------------------------------------------------------------- command builders
def _command(kind: str, fields: dict[str, Any], ignorable: bool = False) -> bytes:
    body = {"v": COMMAND_VERSION, "t": kind, **fields}
    if ignorable:
        body["ignore"] = True
    return packb(body)


def kv_command(
    op: str,
    key: bytes,
    value: bytes = b"",
    flags: int = 0,
    index: int = 0,
    session: str | None = None,
    ts: int = 0,
) -> bytes:
    """Encode a single-verb KV command (``index`` is the CAS index)."""
    if op not in KV_VERBS:
        raise ValueError(f"op must be one of {KV_VERBS}, got {op!r}")
    return _command(
        "kv",
        {
            "op": op,
            "key": key,
            "value": value,
            "flags": flags,
            "index": index,
            "session": session,
            "ts": ts,
        },
    )


def txn_command(ops: Iterable[TxnOp], ts: int = 0) -> bytes:
    wire = [[op.verb, op.key, op.value, op.flags, op.index, op.session] for op in ops]
    return _command("txn", {"ops": wire, "ts": ts})


def session_create_command(session: Session, ts: int = 0) -> bytes:
    return _command(
        "session",
        {
            "op": "create",
            "id": session.id,
            "node": session.node,
            "name": session.name,
            "lock_delay": session.lock_delay,
            "behavior": session.behavior,
            "ttl": session.ttl,
            "ts": ts,
        },
    )


def session_destroy_command(session_id: str, ts: int = 0) -> bytes:
    return _command("session", {"op": "destroy", "id": session_id, "ts": ts})


def acl_command(op: str, **fields: Any) -> bytes:
    """An ACL table command (see the module docstring for each op's fields)."""
    if op not in acl_state.ACL_COMMAND_OPS:
        raise ValueError(f"op must be one of {acl_state.ACL_COMMAND_OPS}, got {op!r}")
    return _command("acl", {"op": op, **fields})


def reap_command(upto_index: int) -> bytes:
    """Remove tombstones whose delete index is <= ``upto_index``."""
    return _command("reap", {"upto": upto_index})


# ------------------------------------------------------------------------------ applying
def _apply_kv(txn: WriteTxn, idx: int, cmd: dict) -> Any:
    op, key = cmd["op"], bytes(cmd["key"])
    value, flags = bytes(cmd.get("value", b"")), int(cmd.get("flags", 0))
    if not key and op != "delete-tree":
        return StateError("Must provide key")
    if op == "set":
        txn.kv_set(idx, key, value, flags)
        return True
    if op == "cas":
        return txn.kv_cas(idx, key, value, flags, int(cmd.get("index", 0))) is not None
    if op == "lock":
        if txn.lock_delays.blocks(key, int(cmd.get("ts", 0))):
            return False  # Consul answers false, not an error, during lock-delay
        return txn.kv_lock(idx, key, value, flags, cmd.get("session")) is not None
    if op == "unlock":
        return txn.kv_unlock(idx, key, value, flags, cmd.get("session")) is not None
    if op == "delete":
        txn.kv_delete(idx, key)
        return True
    if op == "delete-cas":
        return txn.kv_delete_cas(idx, key, int(cmd.get("index", 0)))
    if op == "delete-tree":
        txn.kv_delete_tree(idx, key)
        return True
    return ApplyError(f"Invalid KVS operation '{op}'")


def _apply_txn(txn: WriteTxn, idx: int, cmd: dict, results: bool = True) -> Any:
    ops = []
    for wire in cmd["ops"]:
        verb, key, value, flags, cas_index, session = wire
        ops.append(TxnOp(verb, bytes(key), bytes(value), int(flags), int(cas_index), session))
    return txn.txn(idx, ops, int(cmd.get("ts", 0)), results)


def _apply_txn_quiet(txn: WriteTxn, idx: int, cmd: dict) -> Any:
    """``_apply_txn`` for a result nobody reads: the same writes, no result entries built."""
    return _apply_txn(txn, idx, cmd, results=False)


def _apply_session(txn: WriteTxn, idx: int, cmd: dict) -> Any:
    op = cmd["op"]
    if op == "create":
        session = Session(
            str(cmd["id"]),
            str(cmd.get("node", "")),
            str(cmd.get("name", "")),
            int(cmd.get("lock_delay", 0)),
            str(cmd.get("behavior", "")),
            str(cmd.get("ttl", "")),
        )
        return txn.session_create(idx, session)
    if op == "destroy":
        session_id = str(cmd["id"])
        if not session_id:
            return SessionError("Must provide ID")
        txn.session_destroy(idx, session_id, int(cmd.get("ts", 0)))
        return True
    return ApplyError(f"Invalid session operation '{op}'")


def _apply_reap(txn: WriteTxn, idx: int, cmd: dict) -> Any:
    txn.reap_tombstones(int(cmd["upto"]))
    return True


_HANDLERS = {"kv": _apply_kv, "txn": _apply_txn, "session": _apply_session, "reap": _apply_reap,
             "acl": acl_state.apply_command}
# When nobody reads the result (a replayed log, a follower's entries): cheaper, same writes.
_QUIET_HANDLERS = {**_HANDLERS, "txn": _apply_txn_quiet}


def _dispatch(txn: WriteTxn, idx: int, data: bytes, handlers: dict = _HANDLERS) -> Any:
    try:
        cmd = msgpack.unpackb(data)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        return ApplyError(f"log entry {idx}: not a msgpack command: {exc}")
    if not isinstance(cmd, dict):
        return ApplyError(f"log entry {idx}: a command must be a msgpack map")
    version, kind = cmd.get("v"), cmd.get("t")
    handler = handlers.get(kind)
    if handler is None or version != COMMAND_VERSION:
        if cmd.get("ignore"):
            return None
        if handler is None:
            return ApplyError(f"log entry {idx}: unknown command type {kind!r}")
        return ApplyError(f"log entry {idx}: unsupported {kind} command version {version!r}")
    try:
        return handler(txn, idx, cmd)
    except (StateError, SessionError) as exc:
        return exc
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # Handlers read every field before writing, so a malformed command changes nothing.
        return ApplyError(f"log entry {idx}: malformed {kind} command: {exc!r}")


class FSM:
    """Applies committed entries, in log order, to its state store (the only writer)."""

    def __init__(self, store: StateStore | None = None) -> None:
        self.store = store if store is not None else StateStore()

    @property
    def last_applied(self) -> int:
        return self.store.index

    def _check_index(self, index: int) -> None:
        if index <= self.store.index:
            raise ValueError(
                f"index {index} must be above the last applied index {self.store.index}"
            )

    def apply(self, index: int, data: bytes) -> Any:
        """Apply one committed entry at log ``index``; returns the writer's result."""
        self._check_index(index)
        txn = self.store.begin()
        result = _dispatch(txn, index, data)
        self.store.commit(txn, index)
        return result

    def apply_batch(self, entries: Iterable[tuple[int, bytes]],
                    results_for: Container[int] | None = None) -> list[Any]:
        """Apply consecutive entries with one tree commit and one wake-up round.

        Results are exactly those of applying them one at a time: each entry sees the writes
        of the entries before it, and a transaction that fails leaves no trace.

        ``results_for``: the indexes whose results someone reads (None: every one). The
        others are applied all the same, to the same state, but their result is None (so
        a replayed log does not build results nobody waits for).
        """
        txn = self.store.begin()
        results = []
        last = self.store.index
        for index, data in entries:
            if index <= last:
                raise ValueError(f"index {index} must be above the previous index {last}")
            if results_for is None or index in results_for:
                results.append(_dispatch(txn, index, data))
            else:
                _dispatch(txn, index, data, _QUIET_HANDLERS)
                results.append(None)
            last = index
        if results:
            self.store.commit(txn, last)
        return results

    def snapshot(self, term: int = 0) -> SnapshotStream:
        """A point-in-time snapshot (O(1)); stream it with chunks() or write_to()."""
        return SnapshotStream(self.store.snapshot(), self.store.lock_delays, term)

    def restore(self, stream: BinaryIO | bytes) -> SnapshotHeader:
        """Replace the state with a snapshot; a bad stream raises SnapshotError, state intact."""
        header, version, delays = read_snapshot(stream)
        self.store.replace(version, delays)
        return header


__all__ = [
    "COMMAND_VERSION",
    "FSM",
    "KV_VERBS",
    "SNAPSHOT_FORMAT",
    "SNAPSHOT_MAGIC",
    "TXN_VERBS",
    "ApplyError",
    "FSMSnapshot",
    "SnapshotError",
    "SnapshotHeader",
    "acl_command",
    "kv_command",
    "read_snapshot",
    "reap_command",
    "session_create_command",
    "session_destroy_command",
    "txn_command",
]
