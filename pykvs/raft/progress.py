"""What a leader knows about each follower's log (after etcd's tracker.Progress).

A follower is in one of three states:

- PROBE: the leader does not know where the logs match; it sends one AppendEntries and waits
  for the answer (or a heartbeat answer) before sending another.
- REPLICATE: the logs match up to ``match``; the leader streams entries optimistically, keeping
  at most ``max_inflight`` AppendEntries unanswered (the pipelining window).
- SNAPSHOT: the follower needs entries the leader has compacted away; a snapshot is on its way
  and nothing else is sent until it lands (or fails).
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """The last index of each AppendEntries sent but not yet acknowledged, oldest first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"max_inflight must be at least 1, got {capacity}")
        self.capacity = capacity
        self._last_indexes: deque[int] = deque()

    def __len__(self) -> int:
        return len(self._last_indexes)

    def full(self) -> bool:
        return len(self._last_indexes) >= self.capacity

    def add(self, last_index: int) -> None:
        self._last_indexes.append(last_index)

    def free_le(self, index: int) -> None:
        """Forget every message whose entries are all acknowledged by an ack of ``index``."""
        while self._last_indexes and self._last_indexes[0] <= index:
            self._last_indexes.popleft()

    def free_first_one(self) -> None:
        if self._last_indexes:
            self._last_indexes.popleft()

    def reset(self) -> None:
        self._last_indexes.clear()


class Progress:
    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False  # PROBE: an AppendEntries is out, wait for its answer
        self.pending_snapshot = 0  # SNAPSHOT: index of the snapshot being sent
        self.recent_active = False  # heard from since the last check-quorum round
        self.inflights = Inflights(max_inflight)

    def __repr__(self) -> str:
        return (
            f"Progress({self.state.value} match={self.match} next={self.next} "
            f"inflight={len(self.inflights)} probe_sent={self.probe_sent} "
            f"pending_snapshot={self.pending_snapshot})"
        )

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            # The snapshot (if it landed) covers everything up to pending_snapshot.
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflights.reset()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflights.reset()

    def become_snapshot(self, snapshot_index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = snapshot_index
        self.probe_sent = False
        self.inflights.reset()

    def maybe_update(self, acked: int) -> bool:
        """An AppendEntries was accepted up to ``acked``; True if that moved ``match``."""
        updated = acked > self.match
        if updated:
            self.match = acked
            self.probe_sent = False
        self.next = max(self.next, acked + 1)
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """An AppendEntries with prev index ``rejected`` was refused; False if that is stale.

        ``match_hint`` is the follower's guess of the last index where the logs may agree
        (fast backtracking: one round trip per conflicting term instead of per entry).
        """
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def sent_entries(self, count: int, last_index: int) -> None:
        """Account for an AppendEntries just sent: ``count`` entries up to ``last_index``."""
        if self.state is ProgressState.REPLICATE:
            if count:
                self.next = last_index + 1
                self.inflights.add(last_index)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True
