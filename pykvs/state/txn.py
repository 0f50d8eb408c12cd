"""Write transactions: Consul's KV, transaction and session verbs over pending table views.

This is the counterpart of Consul's agent/consul/state kvs.go, txn.go and session.go.  A
:class:`WriteTxn` starts from a committed version; every verb reads through the pending changes
(read-your-writes) and the single writer commits it into a new version.  Every verb takes the log
index it is applied at; a batch of log entries shares one WriteTxn.

Tables (each a C radix tree; see store.py): ``kvs`` (key -> stored entry, tree index =
ModifyIndex), ``tombstones`` (key -> b"", tree index = delete index), ``sessions`` (id -> session
record), and two lock indexes kept in step with the entries' Session field so that destroying a
session finds its keys without a scan: ``locks`` (key -> session id) and ``session_locks``
(session id + NUL + key -> b"").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pykvs.goformat import go_quote
from pykvs.state.acl import ACLWriter
from pykvs.state.entry import DirEntry, decode_fields, encode_entry, use_slot_setters
from pykvs.state.errors import StateError
from pykvs.state.sessions import (
    BEHAVIOR_DELETE,
    MAX_LOCK_DELAY_NS,
    LockDelays,
    Session,
    SessionError,
    validate_session,
)
from pykvs.state.tables import TableView

if TYPE_CHECKING:
    from pykvs.state.store import StateSnapshot

TXN_VERBS = (
    "set",
    "cas",
    "lock",
    "unlock",
    "get",
    "get-tree",
    "check-index",
    "check-session",
    "check-not-exists",
    "delete",
    "delete-tree",
    "delete-cas",
)


@dataclass(frozen=True, slots=True)
class TxnOp:
    """One KV operation of a transaction, as Consul's TxnKVOp (``index`` is the CAS index)."""

    verb: str
    key: bytes
    value: bytes = b""
    flags: int = 0
    index: int = 0
    session: str | None = None


use_slot_setters(TxnOp)  # a replayed log builds one per op


@dataclass(frozen=True, slots=True)
class TxnError:
    op_index: int
    what: str


@dataclass(frozen=True, slots=True)
class TxnResult:
    """What a transaction returns: ``results`` (entries) when it applied, else ``errors``."""

    results: list[DirEntry] | None
    errors: list[TxnError]

    @property
    def ok(self) -> bool:
        return not self.errors


_TABLES = ("kvs", "tombstones", "sessions", "locks", "session_locks")  # store.TABLES


def _session_prefix(session: str) -> bytes:
    return session.encode() + b"\x00"


class WriteTxn:
    """Pending writes on top of one committed version (or of a parent WriteTxn)."""

    __slots__ = (
        "acl",
        "kvs",
        "kvs_index",
        "lock_delays",
        "locks",
        "parent",
        "session_locks",
        "sessions",
        "sessions_index",
        "tombstones",
        "tombstones_index",
    )

    def __init__(self, base: StateSnapshot, lock_delays: LockDelays) -> None:
        self.parent: WriteTxn | None = None
        self.kvs = TableView(base.kvs)
        self.tombstones = TableView(base.tombstones)
        self.sessions = TableView(base.sessions)
        self.locks = TableView(base.locks)
        self.session_locks = TableView(base.session_locks)
        self.kvs_index = base.kvs_index
        self.tombstones_index = base.tombstones_index
        self.sessions_index = base.sessions_index
        self.lock_delays = lock_delays
        self.acl = ACLWriter(base.acl)

    def child(self) -> WriteTxn:
        """A nested transaction: merge() it on success, drop it on failure."""
        sub = WriteTxn.__new__(WriteTxn)
        sub.parent = self
        sub.kvs = self.kvs.child()
        sub.tombstones = self.tombstones.child()
        sub.sessions = self.sessions.child()
        sub.locks = self.locks.child()
        sub.session_locks = self.session_locks.child()
        sub.kvs_index = self.kvs_index
        sub.tombstones_index = self.tombstones_index
        sub.sessions_index = self.sessions_index
        sub.lock_delays = self.lock_delays
        sub.acl = self.acl.child()
        return sub

    def merge(self) -> None:
        parent = self.parent
        if parent is None:
            raise RuntimeError("merge() on a root WriteTxn")
        for view in (self.kvs, self.tombstones, self.sessions, self.locks, self.session_locks):
            view.merge_into_parent()
        self.acl.merge()
        parent.kvs_index = self.kvs_index
        parent.tombstones_index = self.tombstones_index
        parent.sessions_index = self.sessions_index

    def commit_tables(self) -> tuple[dict[str, Any], set[int]]:
        """Commit every dirty table: ``({table: new_tree}, fired_ids)`` (root only)."""
        trees: dict[str, Any] = {}
        fired: set[int] = set()
        for name in _TABLES:
            view: TableView = getattr(self, name)
            if not view.changes and not view.dropped:
                trees[name] = view.tree
                continue
            tree, ids = view.commit()
            trees[name] = tree
            fired |= ids
        return trees, fired

    # ------------------------------------------------------------------------ KV internals
    def _existing(self, key: bytes) -> list | None:
        stored = self.kvs.get(key)
        return None if stored is None else decode_fields(stored)

    def _relock(self, idx: int, key: bytes, old: str | None, new: str | None) -> None:
        if old:
            self.locks.delete(key)
            self.session_locks.delete(_session_prefix(old) + key)
        if new:
            self.locks.put(key, new.encode(), idx)
            self.session_locks.put(_session_prefix(new) + key, b"", idx)

    def _write(
        self,
        idx: int,
        key: bytes,
        value: bytes,
        flags: int,
        lock_index: int,
        session: str | None,
        existing: list | None,
    ) -> tuple[int, int]:
        """Consul's kvsSetTxn: keep CreateIndex; an unchanged entry is not rewritten.
        Returns the entry's ``(CreateIndex, ModifyIndex)``."""
        if existing is None:
            create_index = idx
        else:
            create_index = existing[2]
            if (
                existing[0] == value
                and existing[1] == flags
                and existing[4] == lock_index
                and existing[5] == session
            ):
                return create_index, existing[3]
            if existing[5] != session:
                self._relock(idx, key, existing[5], session)
        if existing is None and session:
            self._relock(idx, key, None, session)
        self.kvs.put(key, encode_entry(value, flags, create_index, idx, lock_index, session), idx)
        self.kvs_index = idx
        return create_index, idx

    def _store(self, idx: int, key: bytes, value: bytes, flags: int, lock_index: int,
               session: str | None, existing: list | None) -> DirEntry:
        """``_write``, returning the entry as it now is."""
        create_index, modify_index = self._write(idx, key, value, flags, lock_index, session,
                                                 existing)
        return DirEntry(key, value, flags, create_index, modify_index, lock_index, session)

    def _delete_existing(self, idx: int, key: bytes, existing: list) -> None:
        self.tombstones.put(key, b"", idx)
        self.tombstones_index = idx
        self.kvs.delete(key)
        self.kvs_index = idx
        if existing[5]:
            self._relock(idx, key, existing[5], None)

    # -------------------------------------------------------------------------- KV verbs
    def kv_get(self, key: bytes) -> DirEntry | None:
        fields = self._existing(key)
        if fields is None:
            return None
        value, flags, create_index, modify_index, lock_index, session = fields
        return DirEntry(key, value, flags, create_index, modify_index, lock_index, session)

    def kv_list(self, prefix: bytes) -> list[DirEntry]:
        out = []
        for key, stored, _ in self.kvs.list(prefix):
            value, flags, create_index, modify_index, lock_index, session = decode_fields(stored)
            out.append(DirEntry(key, value, flags, create_index, modify_index, lock_index, session))
        return out

    def kv_set(self, idx: int, key: bytes, value: bytes = b"", flags: int = 0) -> DirEntry:
        """Set; keeps the key's session (a plain set never takes or drops a lock)."""
        existing = self._existing(key)
        session = existing[5] if existing is not None else None
        return self._store(idx, key, value, flags, 0, session, existing)

    def kv_cas(
        self, idx: int, key: bytes, value: bytes, flags: int, cas_index: int
    ) -> DirEntry | None:
        """Check-and-set: index 0 means only if absent; else only if ModifyIndex matches."""
        existing = self._existing(key)
        if cas_index == 0:
            if existing is not None:
                return None
        elif existing is None or existing[3] != cas_index:
            return None
        session = existing[5] if existing is not None else None
        return self._store(idx, key, value, flags, 0, session, existing)

    def kv_lock(
        self, idx: int, key: bytes, value: bytes, flags: int, session: str | None
    ) -> DirEntry | None:
        """Acquire; None when another session holds the key.  Raises StateError."""
        if not session:
            raise StateError("missing session")
        if self.sessions.get(session.encode()) is None:
            raise StateError(f"invalid session {go_quote(session)}")
        existing = self._existing(key)
        if existing is None:
            lock_index = 1
        elif existing[5] == session:
            lock_index = existing[4]  # re-acquire: the lock did not change hands
        elif existing[5]:
            return None
        else:
            lock_index = existing[4] + 1
        return self._store(idx, key, value, flags, lock_index, session, existing)

    def kv_unlock(
        self, idx: int, key: bytes, value: bytes, flags: int, session: str | None
    ) -> DirEntry | None:
        """Release; None unless ``session`` holds the key.  Raises StateError."""
        if not session:
            raise StateError("missing session")
        existing = self._existing(key)
        if existing is None or existing[5] != session:
            return None
        return self._store(idx, key, value, flags, existing[4], None, existing)

    def kv_delete(self, idx: int, key: bytes) -> None:
        existing = self._existing(key)
        if existing is not None:
            self._delete_existing(idx, key, existing)

    def kv_delete_cas(self, idx: int, key: bytes, cas_index: int) -> bool:
        """Delete if ModifyIndex matches; True also when the key is absent (as Consul)."""
        existing = self._existing(key)
        if existing is None:
            return True
        if existing[3] != cas_index:
            return False
        self._delete_existing(idx, key, existing)
        return True

    def kv_delete_tree(self, idx: int, prefix: bytes) -> None:
        if not self.kvs.any_under(prefix):
            return
        for key, holder, _ in self.locks.list(prefix):
            self.session_locks.delete(holder + b"\x00" + key)
        self.locks.delete_prefix(prefix)
        self.kvs.delete_prefix(prefix)
        if prefix:  # Consul leaves no tombstone when the whole table goes
            self.tombstones.put(prefix, b"", idx)
            self.tombstones_index = idx
        self.kvs_index = idx

    # ------------------------------------------------------------------------ transactions
    def txn(self, idx: int, ops: list[TxnOp], now_ns: int, results: bool = True) -> TxnResult:
        """Consul's Txn.Apply pre-checks and TxnRW: all ops or none, every error reported.

        ``results=False`` (nobody reads them, as when a log is replayed at start-up): the
        same writes and errors, but the result is ``TxnResult([], [])`` when it applied
        (its entries are not built)."""
        errors = []
        for position, op in enumerate(ops):
            if not op.key and op.verb != "delete-tree":
                errors.append(TxnError(position, "Must provide key"))
            elif op.verb == "lock" and self.lock_delays.blocks(op.key, now_ns):
                errors.append(
                    TxnError(position, f"failed to lock key {go_quote(op.key)} due to lock delay")
                )
        if errors:
            return TxnResult(None, errors)
        sub = self.child()
        entries: list[DirEntry] = []
        out = entries if results else None
        for position, op in enumerate(ops):
            try:
                sub._txn_op(idx, op, out)
            except StateError as exc:
                errors.append(TxnError(position, str(exc)))
        if errors:
            return TxnResult(None, errors)
        sub.merge()
        return TxnResult(entries, [])

    def _txn_op(self, idx: int, op: TxnOp, results: list[DirEntry] | None) -> None:
        """Apply one op; append what Consul returns for it to ``results`` unless None."""
        verb, key = op.verb, op.key
        entry: DirEntry | None = None
        if verb == "set":  # kv_set, without building the entry twice (or at all)
            existing = self._existing(key)
            session = existing[5] if existing is not None else None
            create_index, modify_index = self._write(idx, key, op.value, op.flags, 0, session,
                                                     existing)
            if results is not None:
                results.append(DirEntry(key, b"", op.flags, create_index, modify_index, 0,
                                        session))
            return
        elif verb == "cas":
            entry = self.kv_cas(idx, key, op.value, op.flags, op.index)
            if entry is None:
                raise StateError(f"failed to set key {go_quote(key)}, index is stale")
        elif verb == "lock":
            entry = self.kv_lock(idx, key, op.value, op.flags, op.session)
            if entry is None:
                raise StateError(f"failed to lock key {go_quote(key)}, lock is already held")
        elif verb == "unlock":
            entry = self.kv_unlock(idx, key, op.value, op.flags, op.session)
            if entry is None:
                raise StateError(
                    f"failed to unlock key {go_quote(key)}, lock isn't held, "
                    "or is held by another session"
                )
        elif verb == "get":
            found = self.kv_get(key)
            if found is None:
                raise StateError(f"key {go_quote(key)} doesn't exist")
            if results is not None:
                results.append(found)  # a get keeps its value
            return
        elif verb == "get-tree":
            if results is not None:
                results.extend(self.kv_list(key))
            return
        elif verb == "check-index":
            entry = self._check(key, "index")
            if entry.modify_index != op.index:
                raise StateError(
                    f"failed index check for key {go_quote(key)}, current modify index "
                    f"{entry.modify_index} != {op.index}"
                )
        elif verb == "check-session":
            entry = self._check(key, "session")
            if (entry.session or "") != (op.session or ""):
                raise StateError(
                    f"failed session check for key {go_quote(key)}, current session "
                    f"{go_quote(entry.session or '')} != {go_quote(op.session or '')}"
                )
        elif verb == "check-not-exists":
            if self.kvs.get(key) is not None:
                raise StateError(f"key {go_quote(key)} exists")
            return
        elif verb == "delete":
            self.kv_delete(idx, key)
            return
        elif verb == "delete-tree":
            self.kv_delete_tree(idx, key)
            return
        elif verb == "delete-cas":
            if not self.kv_delete_cas(idx, key, op.index):
                raise StateError(f"failed to delete key {go_quote(key)}, index is stale")
            return
        else:
            raise StateError(f"unknown KV verb {go_quote(verb)}")
        if results is not None:
            results.append(entry.without_value())

    def _check(self, key: bytes, what: str) -> DirEntry:
        found = self.kv_get(key)
        if found is None:
            raise StateError(f"failed to check {what}, key {go_quote(key)} doesn't exist")
        return found

    # ---------------------------------------------------------------------------- sessions
    def session_create(self, idx: int, session: Session) -> str:
        """Register a new session (its ID chosen by the leader).  Raises SessionError."""
        session = validate_session(session)
        sid = session.id.encode()
        if self.sessions.get(sid) is not None:
            raise SessionError(f"session {go_quote(session.id)} already exists")
        stored = Session(
            session.id,
            session.node,
            session.name,
            session.lock_delay,
            session.behavior,
            session.ttl,
            idx,
            idx,
        )
        self.sessions.put(sid, stored.encode(), idx)
        self.sessions_index = idx
        return session.id

    def session_get(self, session_id: str) -> Session | None:
        stored = self.sessions.get(session_id.encode())
        return None if stored is None else Session.decode(session_id, stored)

    def session_destroy(self, idx: int, session_id: str, now_ns: int) -> None:
        """Destroy; release or delete the keys it holds and start their lock-delay."""
        session = self.session_get(session_id)
        if session is None:
            return
        self.sessions.delete(session_id.encode())
        self.sessions_index = idx
        delay = min(session.lock_delay, MAX_LOCK_DELAY_NS)
        skip = len(_session_prefix(session_id))
        for held, _, _ in self.session_locks.list(_session_prefix(session_id)):
            key = held[skip:]
            existing = self._existing(key)
            if existing is not None:
                if session.behavior == BEHAVIOR_DELETE:
                    self._delete_existing(idx, key, existing)
                else:
                    value, flags, _, _, lock_index, _ = existing
                    self._store(idx, key, value, flags, lock_index, None, existing)
            if delay > 0:
                self.lock_delays.set(key, now_ns, delay)

    # -------------------------------------------------------------------------- tombstones
    def reap_tombstones(self, upto_index: int) -> int:
        """Remove tombstones with an index <= ``upto_index``; returns how many went."""
        reaped = 0
        for key, _, index in self.tombstones.list(b""):
            if index <= upto_index:
                self.tombstones.delete(key)
                reaped += 1
        return reaped
