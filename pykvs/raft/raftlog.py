"""The core's view of the log: what the LogStore holds plus what is not yet persisted.

The view is ``storage[first .. offset-1] + unstable`` where ``unstable`` holds entries (and
possibly a snapshot) the core produced or accepted but the driver has not yet saved. Entries in
storage at or after ``offset`` are stale (about to be overwritten) and are never read. Only the
driver writes the LogStore; this class only reads it.
"""

from __future__ import annotations

from collections.abc import Sequence

from pykvs.raft.interfaces import CompactedError, LogStore, UnavailableError
from pykvs.raft.types import Entry, SnapshotMeta

# The newest durable entries kept in memory: the leader applies and replicates entries just
# saved, and reading them back from the LogStore (LMDB read, CRC, decode) was ~4 % of the
# event loop with 64 writes in flight.
RECENT_MAX_ENTRIES = 1024
RECENT_MAX_BYTES = 8 << 20


class RaftLog:
    def __init__(self, storage: LogStore) -> None:
        self.storage = storage
        snap = storage.snapshot_meta()
        self.committed = max(storage.hard_state().commit, snap.index if snap else 0)
        # A restarted FSM is rebuilt from the latest snapshot, then re-applies the log.
        self.applied = snap.index if snap else 0
        self.unstable_snapshot: SnapshotMeta | None = None
        self.unstable: list[Entry] = []
        self.offset = storage.last_index() + 1  # index of unstable[0]
        self.in_progress = 0  # unstable[:in_progress] are in the outstanding Ready
        self.snapshot_in_progress = False
        # recent: copies of the durable entries just below ``offset`` (recent[-1] is at
        # offset - 1), so reading what was just saved does not go to the LogStore.
        self.recent: list[Entry] = []
        self.recent_bytes = 0
        if self.committed > self.last_index():
            raise ValueError(
                f"log store is inconsistent: commit index {self.committed} is past the last "
                f"index {self.last_index()}"
            )

    # -- reading ----------------------------------------------------------------------------

    def first_index(self) -> int:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self.unstable:
            return self.offset + len(self.unstable) - 1
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.index
        return self.offset - 1

    def persisted_last_index(self) -> int:
        """The last index already durable and still part of this log."""
        if self.unstable_snapshot is not None:
            return 0
        return self.offset - 1

    def term(self, index: int) -> int:
        snap = self.unstable_snapshot
        if snap is not None and index == snap.index:
            return snap.term
        if self.offset <= index < self.offset + len(self.unstable):
            return self.unstable[index - self.offset].term
        if index > self.last_index():
            raise UnavailableError(f"index {index} is past the last index {self.last_index()}")
        if snap is not None and index < snap.index:
            raise CompactedError(f"index {index} is below the incoming snapshot {snap.index}")
        if index == 0:
            return 0
        recent = self.recent
        if recent:
            pos = index - recent[0].index
            if 0 <= pos < len(recent) and index >= self.storage.first_index():
                return recent[pos].term
        return self.storage.term(index)

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        try:
            return self.term(index) == term
        except (CompactedError, UnavailableError):
            return False

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Is a candidate's log (ending at last_index/last_term) at least as up to date as ours?"""
        ours = self.last_term()
        return last_term > ours or (last_term == ours and last_index >= self.last_index())

    def entries(
        self, lo: int, hi: int, max_bytes: int | None = None, max_count: int | None = None
    ) -> list[Entry]:
        """Entries in ``[lo, hi)``, at least one if any, then within max_bytes / max_count."""
        if lo < self.first_index():
            raise CompactedError(f"entries from {lo}: compacted (first index {self.first_index()})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"entries up to {hi}: past the last index {self.last_index()}")
        if max_count is not None:
            hi = min(hi, lo + max(max_count, 1))
        if lo >= hi:
            return []
        out: list[Entry] = []
        if lo < self.offset:
            stored_hi = min(hi, self.offset)
            recent = self.recent
            if recent and lo >= recent[0].index:
                first = recent[0].index
                out = recent[lo - first:stored_hi - first]
                if max_bytes is not None:
                    out = limit_bytes(out, max_bytes)
            else:
                out = self.storage.entries(lo, stored_hi, max_bytes)
            if len(out) < stored_hi - lo or hi <= self.offset:
                return out
        tail = self.unstable[max(lo, self.offset) - self.offset : hi - self.offset]
        if max_bytes is None:
            return out + tail
        used = sum(len(e.data) for e in out)
        if out and used + len(tail[0].data) > max_bytes:
            return out
        return out + limit_bytes(tail, max_bytes - used)

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The last index <= ``index`` whose term is <= ``term``, with that term.

        Used on both sides of fast backtracking: every entry above it has a bigger term than
        the other side's entry at ``index``, so none of them can match.
        """
        while index > 0:
            try:
                ours = self.term(index)
            except CompactedError:
                return index, 0
            if ours <= term:
                return index, ours
            index -= 1
        return 0, 0

    def next_committed_entries(self, max_bytes: int) -> list[Entry]:
        if self.unstable_snapshot is not None:
            return []  # the snapshot is installed first
        lo = max(self.applied + 1, self.first_index())
        if lo > self.committed:
            return []
        return self.entries(lo, self.committed + 1, max_bytes)

    def has_next_committed_entries(self) -> bool:
        return self.unstable_snapshot is None and self.applied < self.committed

    # -- changing -----------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Put ``entries`` at their indexes, dropping whatever followed (never committed ones)."""
        if not entries:
            return
        after = entries[0].index
        if after <= self.committed:
            raise AssertionError(
                f"raft safety: overwriting committed index {after} (commit {self.committed})"
            )
        if after > self.last_index() + 1:
            raise AssertionError(f"append at {after} leaves a gap after {self.last_index()}")
        if after == self.offset + len(self.unstable):
            self.unstable.extend(entries)
        elif after <= self.offset:
            self._forget_recent_from(after)
            self.offset = after
            self.unstable = list(entries)
            self.in_progress = 0
        else:
            keep = after - self.offset
            self.unstable = self.unstable[:keep] + list(entries)
            self.in_progress = min(self.in_progress, keep)

    def maybe_append(
        self, prev_index: int, prev_term: int, commit: int, entries: Sequence[Entry]
    ) -> tuple[int, list[Entry]] | None:
        """AppendEntries on a follower: None if the logs disagree at prev_index, else
        (last index now known to match the leader, the entries actually written)."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        written: list[Entry] = []
        for pos, entry in enumerate(entries):
            if entry.index > self.last_index() or not self.match_term(entry.index, entry.term):
                written = list(entries[pos:])
                self.append(written)
                break
        self.commit_to(min(commit, last_new))
        return last_new, written

    def commit_to(self, index: int) -> bool:
        if index <= self.committed:
            return False
        if index > self.last_index():
            raise AssertionError(
                f"raft safety: commit {index} is past the last index {self.last_index()}"
            )
        self.committed = index
        return True

    def restore(self, snap: SnapshotMeta) -> None:
        """Reset the log to a snapshot accepted from the leader (installed by the next Ready)."""
        self.committed = snap.index
        self.unstable_snapshot = snap
        self.unstable = []
        self.recent = []
        self.recent_bytes = 0
        self.offset = snap.index + 1
        self.in_progress = 0
        self.snapshot_in_progress = False

    # -- the Ready handshake ------------------------------------------------------------------

    def take_unstable(self) -> tuple[list[Entry], SnapshotMeta | None]:
        """What the next Ready must persist; marked in progress until ``stable_to``."""
        entries = self.unstable[self.in_progress :]
        self.in_progress = len(self.unstable)
        snap = None
        if self.unstable_snapshot is not None and not self.snapshot_in_progress:
            snap = self.unstable_snapshot
            self.snapshot_in_progress = True
        return entries, snap

    def has_unstable(self) -> bool:
        pending_snap = self.unstable_snapshot is not None and not self.snapshot_in_progress
        return pending_snap or self.in_progress < len(self.unstable)

    def stable_to(self, entries: Sequence[Entry], snap: SnapshotMeta | None) -> None:
        """The driver persisted ``snap`` then ``entries``; forget what is still the same."""
        if snap is not None and self.unstable_snapshot == snap:
            self.unstable_snapshot = None
        self.snapshot_in_progress = False
        # Entries may have been replaced meanwhile: keep unstable whatever now differs.
        durable = 0
        for entry in entries:
            pos = entry.index - self.offset
            if 0 <= pos < len(self.unstable) and self.unstable[pos].term == entry.term:
                durable = entry.index
            else:
                break
        if durable and self.unstable_snapshot is None:
            saved = self.unstable[: durable + 1 - self.offset]
            del self.unstable[: durable + 1 - self.offset]
            self.offset = durable + 1
            self._remember(saved)
        self.in_progress = 0

    def _remember(self, saved: list[Entry]) -> None:
        """``saved`` (contiguous, ending at offset - 1) are durable now: keep the newest."""
        if self.recent and self.recent[-1].index + 1 != saved[0].index:
            self.recent, self.recent_bytes = [], 0
        self.recent.extend(saved)
        self.recent_bytes += sum(len(e.data) for e in saved)
        drop = 0
        size = self.recent_bytes
        while len(self.recent) - drop > RECENT_MAX_ENTRIES or size > RECENT_MAX_BYTES:
            size -= len(self.recent[drop].data)
            drop += 1
        if drop:
            del self.recent[:drop]
            self.recent_bytes = size

    def _forget_recent_from(self, index: int) -> None:
        """Entries from ``index`` on are being replaced: forget their old copies."""
        recent = self.recent
        if recent and index <= recent[-1].index:
            keep = max(0, index - recent[0].index)
            self.recent_bytes -= sum(len(e.data) for e in recent[keep:])
            del recent[keep:]

    def applied_to(self, index: int) -> None:
        if index > self.committed:
            raise AssertionError(f"applied {index} past the commit index {self.committed}")
        self.applied = max(self.applied, index)


def limit_bytes(entries: list[Entry], max_bytes: int) -> list[Entry]:
    """The longest prefix of ``entries`` whose payloads fit ``max_bytes`` (at least one entry)."""
    total = 0
    for n, entry in enumerate(entries):
        total += len(entry.data)
        if n > 0 and total > max_bytes:
            return entries[:n]
    return entries
