"""In-memory LogStore and SnapshotStore (see interfaces.py), for the core's tests and the simulator.

Everything written here counts as durable: a simulated crash keeps the store and builds a new
RaftCore over it. ``save_count`` lets tests check that one Ready costs one write.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import replace

from pykvs.raft.interfaces import CompactedError, UnavailableError
from pykvs.raft.raftlog import limit_bytes
from pykvs.raft.types import Entry, HardState, SnapshotMeta


class MemLogStore:
    """The log as a list starting at ``first_index()``, plus the term of the entry before it."""

    def __init__(self) -> None:
        self._entries: list[Entry] = []
        self._offset = 1  # index of _entries[0]
        self._prev_term = 0  # term of index _offset - 1 (0 before the first entry)
        self._hard_state = HardState()
        self._snapshot: SnapshotMeta | None = None
        self.save_count = 0

    def first_index(self) -> int:
        return self._offset

    def last_index(self) -> int:
        return self._offset + len(self._entries) - 1

    def term(self, index: int) -> int:
        if index == self._offset - 1:
            return self._prev_term
        if index < self._offset:
            raise CompactedError(f"index {index} is compacted (first index {self._offset})")
        if index > self.last_index():
            raise UnavailableError(f"index {index} is past the last index {self.last_index()}")
        return self._entries[index - self._offset].term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        if lo < self._offset:
            raise CompactedError(f"entries from {lo}: compacted (first index {self._offset})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"entries up to {hi}: past the last index {self.last_index()}")
        selected = self._entries[lo - self._offset : hi - self._offset]
        if max_bytes is None:
            return selected
        return limit_bytes(selected, max_bytes)

    def hard_state(self) -> HardState:
        return self._hard_state

    def snapshot_meta(self) -> SnapshotMeta | None:
        return self._snapshot

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: SnapshotMeta | None = None,
    ) -> None:
        if snapshot is not None:
            self._install_snapshot(snapshot)
        if entries:
            self._write_entries(entries)
        if hard_state is not None:
            self._hard_state = hard_state
        self.save_count += 1

    def compact(self, upto: int, meta: SnapshotMeta) -> None:
        if upto > self.last_index():
            raise ValueError(f"compact upto={upto} is past the last index {self.last_index()}")
        if upto > meta.index:
            raise ValueError(f"compact upto={upto} is past the snapshot index {meta.index}")
        if self._snapshot is None or meta.index > self._snapshot.index:
            self._snapshot = meta
        if upto < self._offset:
            return
        self._prev_term = self.term(upto)
        del self._entries[: upto + 1 - self._offset]
        self._offset = upto + 1

    def _install_snapshot(self, snap: SnapshotMeta) -> None:
        first, last = self._offset, self.last_index()
        if first <= snap.index <= last and self.term(snap.index) == snap.term:
            del self._entries[: snap.index + 1 - first]
        else:
            self._entries = []
        self._offset = snap.index + 1
        self._prev_term = snap.term
        self._snapshot = snap

    def _write_entries(self, entries: Sequence[Entry]) -> None:
        start = entries[0].index
        for prev, entry in itertools.pairwise(entries):
            if entry.index != prev.index + 1:
                raise ValueError(f"entries are not contiguous: {prev.index} then {entry.index}")
        if start < self._offset:
            raise ValueError(f"entries start at {start}, below the first index {self._offset}")
        if start > self.last_index() + 1:
            raise ValueError(f"entries start at {start}, leaving a gap after {self.last_index()}")
        del self._entries[start - self._offset :]
        self._entries.extend(entries)


class _MemSnapshotSink:
    def __init__(self, store: MemSnapshotStore, meta: SnapshotMeta) -> None:
        self._store = store
        self._meta = meta
        self._chunks: list[bytes] = []
        self._done = False

    def write(self, chunk: bytes) -> None:
        if self._done:
            raise ValueError("write to a snapshot sink that was already committed or aborted")
        self._chunks.append(bytes(chunk))

    def commit(self) -> SnapshotMeta:
        if self._done:
            raise ValueError("commit of a snapshot sink that was already committed or aborted")
        self._done = True
        body = b"".join(self._chunks)
        meta = replace(self._meta, size=len(body), crc=zlib.crc32(body))
        self._store._keep(meta, body)
        return meta

    def abort(self) -> None:
        self._done = True
        self._chunks = []


class MemSnapshotStore:
    """Snapshot bodies in memory; the newest two are kept."""

    chunk_size = 64 * 1024

    def __init__(self) -> None:
        self._snapshots: dict[int, tuple[SnapshotMeta, bytes]] = {}

    def create(self, meta: SnapshotMeta) -> _MemSnapshotSink:
        return _MemSnapshotSink(self, meta)

    def latest(self) -> SnapshotMeta | None:
        if not self._snapshots:
            return None
        return self._snapshots[max(self._snapshots)][0]

    def open(self, index: int) -> Iterator[bytes]:
        if index not in self._snapshots:
            raise KeyError(f"no snapshot at index {index} (have {sorted(self._snapshots)})")
        meta, body = self._snapshots[index]
        crc = 0
        for pos in range(0, len(body), self.chunk_size):
            chunk = body[pos : pos + self.chunk_size]
            crc = zlib.crc32(chunk, crc)
            yield chunk
        if crc != meta.crc:
            raise ValueError(f"snapshot {index}: CRC mismatch ({crc:#x} != {meta.crc:#x})")

    def _keep(self, meta: SnapshotMeta, body: bytes) -> None:
        self._snapshots[meta.index] = (meta, body)
        for old in sorted(self._snapshots)[:-2]:
            del self._snapshots[old]
