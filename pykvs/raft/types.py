"""Plain data shared by the Raft core, its storage and its driver.

These are the only types that cross between ``core.py`` (pure protocol), ``storage/``
(LMDB) and ``node.py`` (the asyncio driver). Keep them small, immutable and msgpack-friendly:
each has ``to_wire()`` returning a tuple of primitives and ``from_wire()`` reversing it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from pykvs._slots import use_slot_setters


class EntryType(enum.IntEnum):
    """What a log entry carries."""

    NORMAL = 0  # an FSM command (opaque bytes, msgpack encoded by the FSM layer)
    NOOP = 1  # the empty entry a new leader appends at the start of its term
    CONFIG = 2  # a membership change; data is an encoded Configuration


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    term: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""

    def to_wire(self) -> tuple[int, int, int, bytes]:
        return (self.index, self.term, int(self.type), self.data)

    @classmethod
    def from_wire(cls, wire: tuple[int, int, int, bytes] | list) -> Entry:
        index, term, etype, data = wire
        return cls(int(index), int(term), EntryType(etype), bytes(data))


use_slot_setters(Entry)  # one per proposal, per replicated entry, per entry read back


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before a node answers a vote or an append."""

    term: int = 0
    vote: str | None = None
    commit: int = 0

    def to_wire(self) -> tuple[int, str | None, int]:
        return (self.term, self.vote, self.commit)

    @classmethod
    def from_wire(cls, wire: tuple | list) -> HardState:
        term, vote, commit = wire
        return cls(int(term), vote, int(commit))


@dataclass(frozen=True, slots=True)
class Configuration:
    """Cluster membership: server id -> address, split into voters and non-voters.

    ``cluster_id`` names the cluster (random, made once by its first leader; "" in logs
    written before cluster ids existed, until a leader adds one): every later membership
    keeps it, so the log and every snapshot carry it to each server (see node.py).
    """

    voters: dict[str, str] = field(default_factory=dict)
    learners: dict[str, str] = field(default_factory=dict)
    cluster_id: str = ""

    def to_wire(self) -> tuple:
        if self.cluster_id:
            return (dict(self.voters), dict(self.learners), self.cluster_id)
        return (dict(self.voters), dict(self.learners))  # as before cluster ids

    @classmethod
    def from_wire(cls, wire: tuple | list) -> Configuration:
        voters, learners, *rest = wire
        cluster_id = rest[0] if rest else ""
        if not isinstance(cluster_id, str) or len(rest) > 1:
            raise ValueError(f"bad configuration {wire!r:.100}")
        return cls(dict(voters), dict(learners), cluster_id)

    def all_servers(self) -> dict[str, str]:
        return {**self.voters, **self.learners}


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Describes a snapshot: the last log entry it covers and the membership at that point."""

    index: int
    term: int
    configuration: Configuration
    size: int = 0
    crc: int = 0

    def to_wire(self) -> tuple:
        return (self.index, self.term, self.configuration.to_wire(), self.size, self.crc)

    @classmethod
    def from_wire(cls, wire: tuple | list) -> SnapshotMeta:
        index, term, conf, size, crc = wire
        return cls(int(index), int(term), Configuration.from_wire(conf), int(size), int(crc))
