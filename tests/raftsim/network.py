"""A seeded, simulated network: drops, duplicates, delays (hence reordering) and partitions.

Nothing here knows about Raft: a message is any object sent from one node id to another. Time is
the simulator's integer clock. Every random choice comes from the ``random.Random`` passed in, and
the in-flight queue is ordered by (delivery time, send sequence), so a seed replays exactly.

A link can be cut two ways: ``partition()`` splits nodes into groups (only nodes in the same group
hear each other), and ``block(src, dst)`` cuts one direction of one link (asymmetric faults). A
message is checked both when sent and when due, so a partition also eats what was in flight.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any

NodeId = Hashable


@dataclass(frozen=True, slots=True)
class Faults:
    """How unreliable the network is. Delays are drawn uniformly from [min_delay, max_delay]."""

    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    min_delay: int = 1
    max_delay: int = 1

    def __post_init__(self) -> None:
        for name in ("drop_rate", "duplicate_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"Faults.{name} must be in [0, 1), got {rate!r}")
        if not 0 <= self.min_delay <= self.max_delay:
            raise ValueError(
                f"Faults.min_delay ({self.min_delay!r}) must be >= 0 and <= "
                f"max_delay ({self.max_delay!r})"
            )


RELIABLE = Faults()


@dataclass
class NetworkStats:
    sent: int = 0
    delivered: int = 0
    dropped: int = 0  # by the drop rate
    cut: int = 0  # by a partition or a blocked link
    duplicated: int = 0


class Network:
    """The in-flight messages between a fixed set of nodes."""

    def __init__(self, rng: random.Random, nodes: Iterable[NodeId], faults: Faults = RELIABLE):
        self.rng = rng
        self.nodes = list(nodes)
        self._node_set = set(self.nodes)
        if len(self._node_set) != len(self.nodes):
            raise ValueError(f"Network nodes must be distinct, got {self.nodes!r}")
        self.faults = faults
        self.stats = NetworkStats()
        self._queue: list[tuple[int, int, NodeId, NodeId, Any]] = []
        self._seq = 0
        self._group: dict[NodeId, int] = {}  # absent: group 0
        self._blocked: set[tuple[NodeId, NodeId]] = set()

    # --- faults ---------------------------------------------------------------------------

    def partition(self, *groups: Iterable[NodeId]) -> None:
        """Split the nodes: each group hears only itself; nodes in no group form one more group."""
        self._group = {}
        for number, group in enumerate(groups, start=1):
            for node in group:
                self._check_node(node, "partition groups")
                if node in self._group:
                    raise ValueError(f"partition groups overlap: {node!r} is in two groups")
                self._group[node] = number

    def isolate(self, node: NodeId) -> None:
        """Cut ``node`` off from everyone (keeps other cuts between the rest)."""
        self._check_node(node, "isolate node")
        self._group[node] = max(self._group.values(), default=0) + 1

    def block(self, src: NodeId, dst: NodeId) -> None:
        """Drop everything from ``src`` to ``dst`` (one direction only)."""
        self._check_node(src, "block src")
        self._check_node(dst, "block dst")
        self._blocked.add((src, dst))

    def heal(self) -> None:
        """Remove every partition and blocked link (the fault rates are left as they are)."""
        self._group = {}
        self._blocked = set()

    def connected(self, src: NodeId, dst: NodeId) -> bool:
        return (
            self._group.get(src, 0) == self._group.get(dst, 0) and (src, dst) not in self._blocked
        )

    # --- traffic ---------------------------------------------------------------------------

    def send(self, src: NodeId, dst: NodeId, message: Any, now: int) -> bool:
        """Queue ``message``; False when the link is cut (what a transport would notice: a
        refused connection), True otherwise, even if the message is then silently dropped."""
        self._check_node(dst, "send dst")
        self.stats.sent += 1
        if not self.connected(src, dst):
            self.stats.cut += 1
            return False
        faults = self.faults
        if faults.drop_rate and self.rng.random() < faults.drop_rate:
            self.stats.dropped += 1
            return True
        self._enqueue(src, dst, message, now)
        if faults.duplicate_rate and self.rng.random() < faults.duplicate_rate:
            self.stats.duplicated += 1
            self._enqueue(src, dst, message, now)
        return True

    def _enqueue(self, src: NodeId, dst: NodeId, message: Any, now: int) -> None:
        faults = self.faults
        delay = faults.min_delay
        if faults.max_delay > delay:
            delay = self.rng.randint(delay, faults.max_delay)
        self._seq += 1
        heapq.heappush(self._queue, (now + delay, self._seq, src, dst, message))

    def deliver(self, now: int) -> list[tuple[NodeId, NodeId, Any]]:
        """Pop every message due at or before ``now`` whose link is still up, in delivery order."""
        due = []
        queue = self._queue
        while queue and queue[0][0] <= now:
            _, _, src, dst, message = heapq.heappop(queue)
            if self.connected(src, dst):
                due.append((src, dst, message))
            else:
                self.stats.cut += 1
        self.stats.delivered += len(due)
        return due

    def next_due(self) -> int | None:
        """When the earliest in-flight message is due, or None when nothing is in flight."""
        return self._queue[0][0] if self._queue else None

    def in_flight(self) -> int:
        return len(self._queue)

    def _check_node(self, node: NodeId, what: str) -> None:
        if node not in self._node_set:
            raise ValueError(f"{what} {node!r} is not a node of this network ({self.nodes!r})")
