"""The Raft log and hard state on LMDB (``interfaces.AsyncLogStore``).

Corruption: refuse, never truncate
----------------------------------
LMDB commits are atomic: data pages are written and synced before the meta page that makes them
reachable. A crash therefore loses only transactions whose commit had not returned, and LMDB
already discards those; it cannot leave half a record reachable. So a reachable record with a bad
CRC, a hole in the index sequence, a term that goes backwards or a commit index past the end of the
log is damage after the fact (media, a bug, a hand edit, a disk that ignored fsync), not a torn
write. Each such record was committed, hence ``save()`` returned for it, hence the driver may have
acknowledged it and the leader may have counted this server in a quorum. This layer cannot know
whether it did, so dropping any reachable record is never provably safe here: opening fails with
``CorruptLogError`` naming the file and the index. Start-up checks the tail (the last
``verify_tail`` records, or all with ``verify="full"``) and the structure (contiguity, base,
commit); every later read checks the CRC of what it returns, so a record outside the verified tail
is never served either. Recovery is an operator's decision: restore the directory, or wipe it and
re-join the cluster as a new server, which then receives a snapshot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Literal

from pykvs.raft.interfaces import CompactedError, UnavailableError
from pykvs.raft.storage.errors import CorruptLogError, StorageError
from pykvs.raft.storage.records import (
    FORMAT_VERSION,
    K_FACT,
    K_FORMAT,
    K_HARD_STATE,
    K_LOG_BASE,
    K_SNAPSHOT_META,
    LogState,
    Txn,
    encode_entry,
    entries_size,
    index_key,
    pack,
    seal,
    unpack,
    unseal,
)
from pykvs.raft.storage.writer import Env
from pykvs.raft.types import Entry, EntryType, HardState, SnapshotMeta


class LMDBLogStore:
    """The Raft log and hard state (``interfaces.AsyncLogStore``) on LMDB. Made by ``LMDBStorage``.

    Reads (``term``, ``entries``, ...) may be called from any thread and never block on a write
    in progress: they see the last committed state.
    """

    def __init__(self, env: Env, verify: Literal["tail", "full"], verify_tail: int) -> None:
        self._env = env
        self._path = env.data_file
        env.state = self._load(verify, verify_tail)

    # -- loading and checking ----------------------------------------------------------------

    def _corrupt(self, what: str, reason: str, index: int | None = None) -> CorruptLogError:
        return CorruptLogError(self._path, what, reason, index)

    def _stable_get(self, txn: Txn, key: bytes) -> Any:
        raw = txn.get(key, db=self._env.stable)
        if raw is None:
            return None
        payload = unseal(key, raw)
        if payload is None:
            raise self._corrupt(f"stable record {key.decode()!r}", "CRC mismatch")
        try:
            return unpack(payload)
        except Exception as exc:
            raise self._corrupt(f"stable record {key.decode()!r}", f"undecodable: {exc}") from None

    def _stable_put(self, txn: Txn, key: bytes, value: Any) -> None:
        txn.put(key, seal(key, pack(value)), db=self._env.stable)

    def _decode(self, index: int, raw: bytes) -> Entry:
        payload = unseal(index_key(index), raw)
        if payload is None:
            raise self._corrupt("log record", "CRC mismatch", index)
        try:
            term, etype, data = unpack(payload)
            if not isinstance(term, int) or not isinstance(data, bytes):
                raise ValueError("wrong field types")
            return Entry(index, term, EntryType(etype), data)
        except Exception as exc:
            raise self._corrupt("log record", f"undecodable: {exc}", index) from None

    def _load(self, verify: Literal["tail", "full"], verify_tail: int) -> LogState:
        env = self._env
        with env.env.begin(write=True) as txn:
            fmt = self._stable_get(txn, K_FORMAT)
            if fmt is None:
                if txn.stat(env.logs)["entries"] or txn.stat(env.stable)["entries"]:
                    raise self._corrupt("stable record 'format'", "missing in a non-empty store")
                self._stable_put(txn, K_FORMAT, FORMAT_VERSION)
            elif fmt != FORMAT_VERSION:
                raise StorageError(f"{self._path}: storage format {fmt!r} is not supported "
                                   f"(this build reads format {FORMAT_VERSION})")
        with env.read() as txn:
            hs = self._stable_get(txn, K_HARD_STATE)
            base = self._stable_get(txn, K_LOG_BASE)
            meta = self._stable_get(txn, K_SNAPSHOT_META)
            try:
                hard_state = HardState() if hs is None else HardState.from_wire(hs)
                base_index, base_term = (0, 0) if base is None else (int(base[0]), int(base[1]))
                snapshot_meta = None if meta is None else SnapshotMeta.from_wire(meta)
            except Exception as exc:
                raise self._corrupt("stable records", f"undecodable: {exc}") from None
            count = txn.stat(env.logs)["entries"]
            last = base_index
            if count:
                cur = txn.cursor(db=env.logs)
                cur.first()
                first_key = int.from_bytes(cur.key(), "big")
                cur.last()
                last = int.from_bytes(cur.key(), "big")
                if first_key != base_index + 1:
                    raise self._corrupt(
                        "log", f"first record is {first_key} but the log was compacted up to "
                        f"{base_index}", first_key)
                if last - first_key + 1 != count:
                    raise self._corrupt("log", "records are missing (a hole in the log)",
                                        self._first_hole(txn, first_key))
                lo = first_key if verify == "full" else max(first_key, last - verify_tail + 1)
                self._verify_range(txn, lo, last, first_key, base_term)
            if hard_state.commit > last:
                raise self._corrupt(
                    "log", f"the hard state's commit index {hard_state.commit} is past the last "
                    f"record {last}: committed entries are gone", last + 1)
        return LogState(base_index, base_term, last, hard_state, snapshot_meta)

    def _first_hole(self, txn: Txn, first: int) -> int:
        expect = first
        for key in txn.cursor(db=self._env.logs).iternext(values=False):
            if int.from_bytes(key, "big") != expect:
                return expect
            expect += 1
        return expect

    def _verify_range(self, txn: Txn, lo: int, hi: int, first: int,
                      base_term: int) -> None:
        """Check CRC, decoding and non-decreasing terms of records ``lo..hi``."""
        # the term check needs the record before `lo`: verify it too (or the base term)
        prev_term = base_term if lo == first else 0
        lo = max(first, lo - 1)
        cur = txn.cursor(db=self._env.logs)
        cur.set_key(index_key(lo))
        expect = lo
        for key, raw in cur.iternext():
            index = int.from_bytes(key, "big")
            if index != expect:
                raise self._corrupt("log", "records are missing (a hole in the log)", expect)
            entry = self._decode(index, raw)
            if entry.term < prev_term:
                raise self._corrupt("log record", f"term {entry.term} is below the term "
                                    f"{prev_term} of the record before it", index)
            prev_term = entry.term
            expect += 1
        if expect != hi + 1:
            raise self._corrupt("log", "records are missing (a hole in the log)", expect)

    # -- reads (interfaces.LogStore) ---------------------------------------------------------

    @property
    def _state(self) -> LogState:
        state = self._env.state
        assert state is not None
        return state

    def first_index(self) -> int:
        return self._state.first

    def last_index(self) -> int:
        return self._state.last

    def hard_state(self) -> HardState:
        return self._state.hard_state

    def snapshot_meta(self) -> SnapshotMeta | None:
        return self._state.snapshot_meta

    def _check_range(self, state: LogState, lo: int, hi: int) -> None:
        if lo < state.first:
            raise CompactedError(f"index {lo} is compacted (the log starts at {state.first})")
        if hi > state.last:
            raise UnavailableError(f"index {hi} is past the last index {state.last}")

    def term(self, index: int) -> int:
        state = self._state
        if index == state.base_index:
            return state.base_term
        self._check_range(state, index, index)
        with self._env.read() as txn:
            raw = txn.get(index_key(index), db=self._env.logs)
        if raw is None:  # replaced or compacted by a commit that landed since `state` was read
            self._check_range(self._state, index, index)
            raise self._corrupt("log", "record missing", index)
        return self._decode(index, raw).term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries in ``[lo, hi)``; at least one if any is in range, then while the sum of their
        ``data`` sizes stays within ``max_bytes``."""
        state = self._state
        if lo >= hi:
            return []
        self._check_range(state, lo, hi - 1)
        out: list[Entry] = []
        size = 0
        with self._env.read() as txn:
            cur = txn.cursor(db=self._env.logs)
            if cur.set_key(index_key(lo)):
                for key, raw in cur.iternext():
                    index = int.from_bytes(key, "big")
                    if index >= hi:
                        break
                    entry = self._decode(index, raw)
                    size += len(entry.data)
                    if out and max_bytes is not None and size > max_bytes:
                        break
                    out.append(entry)
        if not out or out[-1].index != lo + len(out) - 1:
            self._check_range(self._state, lo, hi - 1)
            raise self._corrupt("log", "records missing in a range the log claims",
                                lo + len(out))
        return out

    def fact(self, name: str) -> Any:
        """A small durable fact stored with ``put_fact`` (None when absent)."""
        with self._env.read() as txn:
            return self._stable_get(txn, K_FACT + name.encode())

    # -- writes ------------------------------------------------------------------------------

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: SnapshotMeta | None = None,
    ) -> None:
        """Persist one Ready durably (see ``interfaces.LogStore.save``); blocks until synced.

        Raises ValueError for entries that are not contiguous, leave a hole after the last
        index, or whose terms go backwards, and for a snapshot older than the log's base.
        """
        entries = tuple(entries)
        self._env.count_save(len(entries))
        self._env.run_sync(self._save_job(hard_state, entries, snapshot), entries_size(entries))

    def save_async(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: SnapshotMeta | None = None,
    ) -> asyncio.Future[None]:
        """As ``save``, from the event loop: queues the write now (calls are applied in the
        order they are made) and returns a future that resolves once it is synced. Concurrent
        calls are coalesced into one transaction and one sync."""
        entries = tuple(entries)
        self._env.count_save(len(entries))
        return self._env.run_async(self._save_job(hard_state, entries, snapshot),
                                   entries_size(entries))

    def compact(self, upto: int, meta: SnapshotMeta) -> None:
        """Drop entries ``<= upto`` (covered by the snapshot ``meta``), durably."""
        self._env.run_sync(self._compact_job(upto, meta))

    def compact_async(self, upto: int, meta: SnapshotMeta) -> asyncio.Future[None]:
        """As ``compact``, from the event loop: queued now, in order with the saves (and
        coalesced with them), it returns a future that resolves once it is synced."""
        return self._env.run_async(self._compact_job(upto, meta))

    def put_fact(self, name: str, value: Any) -> None:
        """Durably store a small msgpack-able ``value`` under ``name`` in the stable store."""
        key = K_FACT + name.encode()
        pack(value)  # fail here, not in the writer thread, if it cannot be encoded

        def apply(txn: Txn, state: LogState) -> tuple[LogState, None]:
            self._stable_put(txn, key, value)
            return state, None

        self._env.run_sync(apply)

    def _save_job(
        self, hard_state: HardState | None, entries: tuple[Entry, ...],
        snapshot: SnapshotMeta | None,
    ) -> Callable[[Txn, LogState], tuple[LogState, None]]:
        def apply(txn: Txn, state: LogState) -> tuple[LogState, None]:
            if snapshot is not None:
                state = self._apply_snapshot(txn, state, snapshot)
            if entries:
                state = self._append(txn, state, entries)
            if hard_state is not None and hard_state != state.hard_state:
                self._stable_put(txn, K_HARD_STATE, hard_state.to_wire())
                state = replace(state, hard_state=hard_state)
            return state, None

        return apply

    def _compact_job(
        self, upto: int, meta: SnapshotMeta,
    ) -> Callable[[Txn, LogState], tuple[LogState, None]]:
        def apply(txn: Txn, state: LogState) -> tuple[LogState, None]:
            if upto > meta.index:
                raise ValueError(f"compact upto={upto} is past the snapshot's index {meta.index}")
            if upto > state.last:
                raise ValueError(f"compact upto={upto} is past the last index {state.last}")
            if upto > state.base_index:
                term = meta.term if upto == meta.index else self._term_in(txn, state, upto)
                self._delete_range(txn, state.first, upto)
                self._stable_put(txn, K_LOG_BASE, (upto, term))
                state = replace(state, base_index=upto, base_term=term)
            if state.snapshot_meta is None or meta.index >= state.snapshot_meta.index:
                self._stable_put(txn, K_SNAPSHOT_META, meta.to_wire())
                state = replace(state, snapshot_meta=meta)
            return state, None

        return apply

    def _term_in(self, txn: Txn, state: LogState, index: int) -> int:
        if index == state.base_index:
            return state.base_term
        raw = txn.get(index_key(index), db=self._env.logs)
        if raw is None:
            raise self._corrupt("log", "record missing", index)
        return self._decode(index, raw).term

    def _delete_range(self, txn: Txn, lo: int, hi: int) -> None:
        hi_key = index_key(hi)
        cur = txn.cursor(db=self._env.logs)
        more = cur.set_range(index_key(lo))
        while more:
            key = cur.key()
            if not key or key > hi_key:
                break
            more = cur.delete()

    def _apply_snapshot(
        self, txn: Txn, state: LogState, meta: SnapshotMeta,
    ) -> LogState:
        if meta.index < state.base_index:
            raise ValueError(f"snapshot at index {meta.index} is older than the log's "
                             f"compaction point {state.base_index}")
        # As memstore: the log is kept only if it holds (index, term) as an entry; a snapshot
        # at the compaction point itself resets the log.
        keeps_log = (state.first <= meta.index <= state.last
                     and self._term_in(txn, state, meta.index) == meta.term)
        if keeps_log:
            self._delete_range(txn, state.first, meta.index)
            last = state.last
        else:
            txn.drop(self._env.logs, delete=False)
            last = meta.index
        self._stable_put(txn, K_LOG_BASE, (meta.index, meta.term))
        self._stable_put(txn, K_SNAPSHOT_META, meta.to_wire())
        return replace(state, base_index=meta.index, base_term=meta.term, last=last,
                       snapshot_meta=meta)

    def _append(
        self, txn: Txn, state: LogState, entries: tuple[Entry, ...],
    ) -> LogState:
        start = entries[0].index
        for offset, entry in enumerate(entries):
            if entry.index != start + offset:
                raise ValueError(f"entries are not contiguous: index {entry.index} at position "
                                 f"{offset} after index {start}")
            if offset and entry.term < entries[offset - 1].term:
                raise ValueError(f"entry terms go backwards at index {entry.index}")
        if entries[-1].index <= state.base_index:
            return state  # all covered by the snapshot already
        if start <= state.base_index:  # the head is covered by the snapshot: keep the rest
            entries = entries[state.base_index + 1 - start:]
            start = entries[0].index
        if start > state.last + 1:
            raise ValueError(f"entries start at index {start} but the log ends at {state.last}: "
                             f"that would leave a hole")
        prev_term = self._term_in(txn, state, start - 1)
        if entries[0].term < prev_term:
            raise ValueError(f"entry term {entries[0].term} at index {start} is below the term "
                             f"{prev_term} of the entry before it")
        if start <= state.last:  # a conflict: everything from `start` on is replaced
            self._delete_range(txn, start, state.last)
        txn.cursor(db=self._env.logs).putmulti(
            [(index_key(e.index), encode_entry(e)) for e in entries], append=True)
        return replace(state, last=entries[-1].index)
