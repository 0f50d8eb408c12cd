"""Raft as a pure state machine: no I/O, no clock, no threads, no global randomness.

The driver feeds ``tick()``, ``step(message)``, ``propose(data)`` and friends, then loops::

    while core.has_ready():
        rd = core.ready()
        log.save(rd.hard_state, rd.entries, rd.snapshot)   # one durable write
        send(rd.messages)                                   # only after the write
        install(rd.snapshot); apply(rd.committed_entries); answer(rd.read_states)
        core.advance(rd)

At most one Ready is outstanding: ``has_ready()`` is False between ``ready()`` and ``advance()``.
The core may be stepped meanwhile (the write can run off the event loop).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from pykvs.raft.interfaces import LogStore
from pykvs.raft.messages import Message
from pykvs.raft.types import Configuration, Entry, HardState, SnapshotMeta


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class NotLeaderError(RuntimeError):
    """The request needs the leader; ``leader_hint`` names it when known (else None)."""

    def __init__(self, leader_hint: str | None, reason: str = "not the leader") -> None:
        super().__init__(f"{reason} (leader: {leader_hint or 'unknown'})")
        self.leader_hint = leader_hint


class ConfigChangeError(ValueError):
    """A membership change was refused (another is pending, or it makes no sense)."""


class ConfigChangeKind(enum.Enum):
    ADD_VOTER = "add_voter"
    ADD_LEARNER = "add_learner"
    PROMOTE = "promote"  # learner -> voter
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class ConfigChange:
    kind: ConfigChangeKind
    server_id: str
    address: str = ""


@dataclass
class CoreConfig:
    id: str
    election_tick: int = 10
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_inflight: int = 64  # AppendEntries in flight per follower (pipelining window)
    max_batch_entries: int = 256  # entries per AppendEntries
    max_batch_bytes: int = 1 << 20  # payload bytes per AppendEntries (at least one entry)
    max_committed_bytes: int = 8 << 20  # payload bytes of committed entries per Ready


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state the driver may want to observe (not persisted)."""

    role: Role
    leader_id: str | None


@dataclass(frozen=True, slots=True)
class ReadState:
    """A confirmed ReadIndex: once applied >= index, a read for ``context`` is linearizable."""

    context: bytes
    index: int


@dataclass
class Ready:
    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: SnapshotMeta | None = None
    messages: list[Message] = field(default_factory=list)
    committed_entries: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)


class RaftCore:
    """One Raft server's protocol state. See the module docstring for the driving loop."""

    def __init__(
        self,
        config: CoreConfig,
        log: LogStore,
        rng: random.Random,
        bootstrap: Configuration | None = None,
    ) -> None:
        raise NotImplementedError

    # -- properties -----------------------------------------------------------------------

    @property
    def id(self) -> str:
        raise NotImplementedError

    @property
    def role(self) -> Role:
        raise NotImplementedError

    @property
    def term(self) -> int:
        raise NotImplementedError

    @property
    def leader_id(self) -> str | None:
        raise NotImplementedError

    @property
    def commit_index(self) -> int:
        raise NotImplementedError

    @property
    def applied_index(self) -> int:
        raise NotImplementedError

    @property
    def configuration(self) -> Configuration:
        raise NotImplementedError

    # -- inputs ---------------------------------------------------------------------------

    def tick(self) -> None:
        raise NotImplementedError

    def step(self, msg: Message) -> None:
        raise NotImplementedError

    def propose(self, data: bytes) -> int:
        raise NotImplementedError

    def propose_config(self, change: ConfigChange) -> int:
        raise NotImplementedError

    def read_index(self, ctx: bytes) -> None:
        raise NotImplementedError

    def transfer_leadership(self, to: str) -> None:
        raise NotImplementedError

    def report_unreachable(self, peer: str) -> None:
        raise NotImplementedError

    def report_snapshot(self, peer: str, ok: bool) -> None:
        raise NotImplementedError

    def compact(self, index: int, meta: SnapshotMeta) -> None:
        raise NotImplementedError

    # -- outputs --------------------------------------------------------------------------

    def has_ready(self) -> bool:
        raise NotImplementedError

    def ready(self) -> Ready:
        raise NotImplementedError

    def advance(self, ready: Ready) -> None:
        raise NotImplementedError
