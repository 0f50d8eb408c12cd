"""RaftLog keeps the newest durable entries in memory (raftlog.RECENT_MAX_*): reads of what
was just saved do not go back to the LogStore, and a conflicting append, a snapshot or the
bounds never let it answer an entry the store no longer holds."""

from __future__ import annotations

from typing import Any

import pytest

from pykvs.raft import raftlog
from pykvs.raft.interfaces import CompactedError
from pykvs.raft.memstore import MemLogStore
from pykvs.raft.raftlog import RaftLog
from pykvs.raft.types import Entry, SnapshotMeta


class CountingStore(MemLogStore):
    """A MemLogStore that counts the reads RaftLog sends it."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def term(self, index: int) -> int:
        self.reads += 1
        return super().term(index)

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        self.reads += 1
        return super().entries(lo, hi, max_bytes)


def persist(log: RaftLog, store: CountingStore) -> None:
    """What the driver does with a Ready: save the unstable entries, then stable_to."""
    entries, snap = log.take_unstable()
    store.save(None, entries, snap)
    log.stable_to(entries, snap)


def entries(lo: int, hi: int, term: int, tag: bytes = b"") -> list[Entry]:
    return [Entry(i, term, data=tag + b"%d" % i) for i in range(lo, hi)]


def test_just_saved_entries_are_read_from_memory() -> None:
    store = CountingStore()
    log = RaftLog(store)
    log.append(entries(1, 11, 1))
    persist(log, store)
    assert log.entries(1, 11) == entries(1, 11, 1)
    assert log.entries(3, 9, max_bytes=4) == entries(3, 7, 1)  # 1-byte payloads, as the store
    assert log.term(7) == 1
    assert store.reads == 0


def test_a_conflicting_append_replaces_what_memory_holds() -> None:
    store = CountingStore()
    log = RaftLog(store)
    log.append(entries(1, 11, 1))
    persist(log, store)
    log.append(entries(6, 9, 2, b"new"))  # a new leader overwrote 6..10
    assert log.term(6) == 2 and log.last_index() == 8
    persist(log, store)
    assert log.entries(1, 9) == entries(1, 6, 1) + entries(6, 9, 2, b"new")
    assert store.entries(1, 9) == log.entries(1, 9)


def test_compacted_and_snapshot_entries_are_not_answered_from_memory() -> None:
    store = CountingStore()
    log = RaftLog(store)
    log.append(entries(1, 11, 1))
    persist(log, store)
    store.compact(5, SnapshotMeta(index=5, term=1, configuration=None))  # type: ignore[arg-type]
    with pytest.raises(CompactedError):
        log.entries(3, 8)
    with pytest.raises(CompactedError):
        log.term(3)
    log.restore(SnapshotMeta(index=20, term=3, configuration=None))  # type: ignore[arg-type]
    assert log.recent == []


def test_memory_is_bounded(monkeypatch: Any) -> None:
    monkeypatch.setattr(raftlog, "RECENT_MAX_ENTRIES", 8)
    monkeypatch.setattr(raftlog, "RECENT_MAX_BYTES", 1 << 20)
    store = CountingStore()
    log = RaftLog(store)
    for start in range(1, 41, 5):
        log.append(entries(start, start + 5, 1))
        persist(log, store)
    assert [e.index for e in log.recent] == list(range(33, 41))
    assert log.entries(1, 41) == entries(1, 41, 1)  # older ones from the store
    assert store.reads == 1
    monkeypatch.setattr(raftlog, "RECENT_MAX_BYTES", 10)
    log.append(entries(41, 46, 1))
    persist(log, store)
    assert sum(len(e.data) for e in log.recent) <= 10 and log.recent[-1].index == 45
