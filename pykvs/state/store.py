"""The state store: immutable versions of the KV tables, one writer, blocking reads.

A :class:`StateSnapshot` is one committed version: the five trees and the table indexes.  Taking
it is O(1) (the trees are persistent) and it never changes, so readers never block the writer.
:class:`StateStore` holds the current version; the single writer (the FSM) opens a
:class:`~pykvs.state.txn.WriteTxn`, applies verbs at their log index, and commits: the store
publishes the new version, then fires the watch ids the commit reported.

Reads return the index a Consul client sees (Consul's KVS/Session endpoints): a found key reports
its ModifyIndex; a listing reports the highest ModifyIndex under the prefix or of a tombstone
under it (so the index never goes backwards after a delete); otherwise the table index; never 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from pykvs import radix, transcode
from pykvs.state.acl import ACL_TABLES, ACLState
from pykvs.state.entry import DirEntry, decode_fields
from pykvs.state.sessions import LockDelays, Session
from pykvs.state.txn import WriteTxn
from pykvs.state.watch import Notifier, WatchSet, blocking_query

T = TypeVar("T")

KV_TABLES = ("kvs", "tombstones", "sessions", "locks", "session_locks")
TABLES = KV_TABLES + ACL_TABLES  # snapshot frame tags follow this order: append only



def _as_key(key: bytes | str, name: str = "key") -> bytes:
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    raise TypeError(f"{name} must be bytes or str, not {type(key).__name__}")


@dataclass(slots=True)
class StateSnapshot:
    """One immutable version of the state.  ``index`` is the last log index applied.

    Never changed once published (not frozen only because a frozen dataclass is several
    times slower to create, and the writer creates one per applied entry).
    """

    kvs: Any
    tombstones: Any
    sessions: Any
    locks: Any
    session_locks: Any
    kvs_index: int = 0
    tombstones_index: int = 0
    sessions_index: int = 0
    index: int = 0
    acl: ACLState = None  # type: ignore[assignment]  # the ACL tables (pykvs.state.acl)

    @classmethod
    def empty(cls) -> StateSnapshot:
        return cls(radix.Tree(), radix.Tree(), radix.Tree(), radix.Tree(), radix.Tree(),
                   acl=ACLState())

    def table(self, name: str) -> Any:
        """The tree of table ``name`` (see TABLES)."""
        return self.acl.trees[name] if name in ACL_TABLES else getattr(self, name)

    @classmethod
    def from_tables(
        cls,
        trees: dict[str, Any],
        kvs_index: int,
        tombstones_index: int,
        sessions_index: int,
        index: int,
        acl: ACLState | None = None,
    ) -> StateSnapshot:
        """A version from its trees by table name (see TABLES) and its indexes; the ACL
        tables come from ``acl`` or, when it is None, from ``trees`` (empty if absent)."""
        kvs, tombstones, sessions, locks, session_locks = (trees[name] for name in KV_TABLES)
        if acl is None:
            acl = ACLState({name: trees.get(name) or radix.Tree() for name in ACL_TABLES})
        return cls(
            kvs, tombstones, sessions, locks, session_locks,
            kvs_index, tombstones_index, sessions_index, index, acl,
        )

    # ------------------------------------------------------------------------------ KV
    def kv_table_index(self) -> int:
        """Consul's kvsMaxIndex: the max of the kvs and tombstones table indexes."""
        return max(self.kvs_index, self.tombstones_index)

    def kv_get_stored(
        self, key: bytes | str, ws: WatchSet | None = None
    ) -> tuple[int, bytes | None]:
        """``(index, stored entry bytes or None)``; the entry is not decoded."""
        key = _as_key(key)
        stored, watch_id = self.kvs.get_watch(key)
        if ws is not None:
            ws.add(watch_id)
        if stored is None:
            return max(self.kv_table_index(), 1), None
        return decode_fields(stored)[3], stored  # a found key reports its ModifyIndex

    def kv_get(self, key: bytes | str, ws: WatchSet | None = None) -> tuple[int, DirEntry | None]:
        key = _as_key(key)
        index, stored = self.kv_get_stored(key, ws)
        if stored is None:
            return index, None
        value, flags, create_index, modify_index, lock_index, session = decode_fields(stored)
        return index, DirEntry(key, value, flags, create_index, modify_index, lock_index, session)

    def kv_get_json(self, key: bytes | str, ws: WatchSet | None = None) -> tuple[int, bytes | None]:
        """``(index, Consul's JSON body for the key)``; None when the key is absent (a 404)."""
        key = _as_key(key)
        index, stored = self.kv_get_stored(key, ws)
        if stored is None:
            return index, None
        return index, transcode.render_kv_entry_json(key, stored)

    def kv_list_index(self, prefix: bytes) -> int:
        """Consul's kvsListTxn index for ``prefix`` (O(key length): the trees' max index)."""
        index = self.kv_table_index()
        if prefix:
            sub = max(self.kvs.max_index(prefix), self.tombstones.max_index(prefix))
        else:
            sub = index
        return max(sub or index, 1)

    def kv_list_packed(self, prefix: bytes | str, ws: WatchSet | None = None) -> tuple[int, bytes]:
        """``(index, packed listing)`` of the stored entries under ``prefix``, one C call."""
        prefix = _as_key(prefix, "prefix")
        if ws is not None:
            ws.add(self.kvs.prefix_watch(prefix))
        return self.kv_list_index(prefix), self.kvs.list_prefix_packed(prefix)

    def kv_list_json(self, prefix: bytes | str, ws: WatchSet | None = None) -> tuple[int, bytes]:
        """``(index, Consul's JSON body for ?recurse)``, rendered in C from the stored bytes."""
        index, packed = self.kv_list_packed(prefix, ws)
        return index, transcode.render_kv_json(packed)

    def kv_list(
        self, prefix: bytes | str, ws: WatchSet | None = None
    ) -> tuple[int, list[DirEntry]]:
        """``(index, entries)`` decoded for Python callers."""
        prefix = _as_key(prefix, "prefix")
        if ws is not None:
            ws.add(self.kvs.prefix_watch(prefix))
        entries = []
        for key, stored, _ in self.kvs.list_prefix(prefix):
            value, flags, create_index, modify_index, lock_index, session = decode_fields(stored)
            entries.append(
                DirEntry(key, value, flags, create_index, modify_index, lock_index, session)
            )
        return self.kv_list_index(prefix), entries

    def kv_list_keys(
        self, prefix: bytes | str, separator: bytes | str = b"", ws: WatchSet | None = None
    ) -> tuple[int, list[bytes]]:
        """``(index, keys)`` with Consul's ``?keys&separator=`` meaning, done in C."""
        prefix = _as_key(prefix, "prefix")
        separator = _as_key(separator, "separator")
        if ws is not None:
            ws.add(self.kvs.prefix_watch(prefix))
        return self.kv_list_index(prefix), self.kvs.list_keys(prefix, separator)

    # ------------------------------------------------------------------------- sessions
    def session_get(
        self, session_id: str, ws: WatchSet | None = None
    ) -> tuple[int, Session | None]:
        stored, watch_id = self.sessions.get_watch(session_id.encode())
        if ws is not None:
            ws.add(watch_id)
        found = None if stored is None else Session.decode(session_id, stored)
        return max(self.sessions_index, 1), found

    def session_list(self, ws: WatchSet | None = None) -> tuple[int, list[Session]]:
        if ws is not None:
            ws.add(self.sessions.prefix_watch(b""))
        found = [Session.decode(k.decode(), v) for k, v, _ in self.sessions.list_prefix(b"")]
        return max(self.sessions_index, 1), found

    def node_sessions(self, node: str, ws: WatchSet | None = None) -> tuple[int, list[Session]]:
        index, found = self.session_list(ws)
        return index, [s for s in found if s.node == node]

    def session_keys(self, session_id: str) -> list[bytes]:
        """The keys ``session_id`` holds, in key order."""
        prefix = session_id.encode() + b"\x00"
        return [k[len(prefix) :] for k, _, _ in self.session_locks.list_prefix(prefix)]


class StateStore:
    """The current version plus the writer's side: lock-delays and the notifier."""

    def __init__(self, notifier: Notifier | None = None) -> None:
        self.notifier = notifier if notifier is not None else Notifier()
        self._version = StateSnapshot.empty()
        self.lock_delays = LockDelays()

    def snapshot(self) -> StateSnapshot:
        """The current version, O(1); it never changes."""
        return self._version

    @property
    def index(self) -> int:
        """The last log index applied."""
        return self._version.index

    # ---------------------------------------------------------------------------- writing
    def begin(self) -> WriteTxn:
        return WriteTxn(self._version, self.lock_delays)

    def commit(self, txn: WriteTxn, index: int) -> StateSnapshot:
        """Publish ``txn`` as the version at log ``index``, then wake its watchers."""
        if txn.parent is not None:
            raise ValueError("txn must be a root WriteTxn, not a child")
        if index < self._version.index:
            raise ValueError(f"index {index} is below the applied index {self._version.index}")
        trees, fired = txn.commit_tables()
        acl, acl_fired = txn.acl.commit()
        fired |= acl_fired
        self._version = StateSnapshot.from_tables(
            trees, txn.kvs_index, txn.tombstones_index, txn.sessions_index, index,
            acl or self._version.acl,
        )
        if fired:
            self.notifier.fire(fired)
        return self._version

    @contextmanager
    def write(self, index: int) -> Iterator[WriteTxn]:
        """``with store.write(index) as txn:`` applies the verbs and commits on success."""
        txn = self.begin()
        yield txn
        self.commit(txn, index)

    def replace(self, version: StateSnapshot, lock_delays: LockDelays) -> None:
        """Swap in a restored state; every blocked reader wakes (their state is gone)."""
        self._version = version
        self.lock_delays = lock_delays
        self.notifier.fire_all()

    def kv_lock_delay(self, key: bytes | str) -> int:
        """When ``key``'s lock-delay ends (ns, the leader's clock); 0 when it has none."""
        return self.lock_delays.expiry(_as_key(key))

    # ---------------------------------------------------------------------------- reading
    def kv_get(self, key: bytes | str, ws: WatchSet | None = None) -> tuple[int, DirEntry | None]:
        return self._version.kv_get(key, ws)

    def kv_get_json(self, key: bytes | str, ws: WatchSet | None = None) -> tuple[int, bytes | None]:
        return self._version.kv_get_json(key, ws)

    def kv_list(
        self, prefix: bytes | str, ws: WatchSet | None = None
    ) -> tuple[int, list[DirEntry]]:
        return self._version.kv_list(prefix, ws)

    def kv_list_json(self, prefix: bytes | str, ws: WatchSet | None = None) -> tuple[int, bytes]:
        return self._version.kv_list_json(prefix, ws)

    def kv_list_keys(
        self, prefix: bytes | str, separator: bytes | str = b"", ws: WatchSet | None = None
    ) -> tuple[int, list[bytes]]:
        return self._version.kv_list_keys(prefix, separator, ws)

    def session_get(
        self, session_id: str, ws: WatchSet | None = None
    ) -> tuple[int, Session | None]:
        return self._version.session_get(session_id, ws)

    def session_list(self, ws: WatchSet | None = None) -> tuple[int, list[Session]]:
        return self._version.session_list(ws)

    def session_renew(self, session_id: str) -> tuple[int, Session | None]:
        """Consul's Session.Renew reads the session; the TTL timer lives with the leader."""
        return self._version.session_get(session_id)

    async def blocking_query(
        self,
        run_read: Callable[[WatchSet, StateSnapshot], tuple[int, T]],
        min_index: int,
        max_wait: float | None = None,
        **options: Any,
    ) -> tuple[int, T]:
        """Consul's blocking query over this store; ``run_read(ws, version)`` does one read."""

        def read(ws: WatchSet) -> tuple[int, T]:
            return run_read(ws, self._version)

        return await blocking_query(self.notifier, read, min_index, max_wait, **options)
