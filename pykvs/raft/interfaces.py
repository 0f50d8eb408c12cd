"""The seams of the Raft layer, as small protocols (in the spirit of hashicorp/raft's LogStore,
StableStore and SnapshotStore). ``storage.py`` implements them on LMDB; ``memstore.py``
implements them in memory for the core's tests and the deterministic simulator.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from pykvs.raft.types import Entry, HardState, SnapshotMeta


class CompactedError(LookupError):
    """The requested index is at or below the last snapshot: the log no longer holds it."""


class UnavailableError(LookupError):
    """The requested index is above the last index in the log."""


class LogStore(Protocol):
    """The durable log plus the hard state (term, vote, commit).

    Indexes start at 1. After compaction the log keeps the term of its last compacted index so
    that ``term(first_index() - 1)`` still answers (the AppendEntries consistency check needs it).
    """

    def first_index(self) -> int:
        """Index of the first entry held (``snapshot index + 1`` once compacted; 1 when empty)."""
        ...

    def last_index(self) -> int:
        """Index of the last entry held (the snapshot index when the log is empty after it)."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry at ``index``; raises CompactedError / UnavailableError."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries in ``[lo, hi)``; at least one entry if any is in range, then up to max_bytes."""
        ...

    def hard_state(self) -> HardState: ...

    def snapshot_meta(self) -> SnapshotMeta | None:
        """Metadata of the newest snapshot the log was compacted to or reset from."""
        ...

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: SnapshotMeta | None = None,
    ) -> None:
        """Persist one Ready in a single durable write (one transaction, one sync).

        ``snapshot`` (when given) is applied first: entries up to its index are dropped, and the
        whole log is dropped if it does not contain the snapshot's (index, term). Then ``entries``
        are written; any entry already stored at or after ``entries[0].index`` is replaced.
        """
        ...

    def compact(self, upto: int, meta: SnapshotMeta) -> None:
        """Drop entries ``<= upto`` (covered by the snapshot ``meta``), durably."""
        ...


class SnapshotSink(Protocol):
    def write(self, chunk: bytes) -> None: ...
    def commit(self) -> SnapshotMeta:
        """Make the snapshot durable and visible; returns its meta with size and CRC filled in."""
        ...
    def abort(self) -> None: ...


class SnapshotStore(Protocol):
    """Snapshot bodies, written in chunks; the newest two are kept."""

    def create(self, meta: SnapshotMeta) -> SnapshotSink: ...

    def latest(self) -> SnapshotMeta | None: ...

    def open(self, index: int) -> Iterator[bytes]:
        """The body of the snapshot at ``index``, chunk by chunk, its CRC verified at the end."""
        ...
