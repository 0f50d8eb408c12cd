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
    """Cluster membership: server id -> address, split into voters and non-voters."""

    voters: dict[str, str] = field(default_factory=dict)
    learners: dict[str, str] = field(default_factory=dict)

    def to_wire(self) -> tuple[dict[str, str], dict[str, str]]:
        return (dict(self.voters), dict(self.learners))

    @classmethod
    def from_wire(cls, wire: tuple | list) -> Configuration:
        voters, learners = wire
        return cls(dict(voters), dict(learners))

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
