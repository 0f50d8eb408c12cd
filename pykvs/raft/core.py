"""Raft as a pure state machine: no I/O, no clock, no threads, no global randomness.

The driver feeds ``tick()``, ``step(message)``, ``propose(data)`` and friends, then loops::

    while core.has_ready():
        rd = core.ready()
        log.save(rd.hard_state, rd.entries, rd.snapshot)   # one durable write
        if rd.compaction:                                   # asked for by compact()
            log.compact(rd.compaction.upto, rd.compaction.meta)
        send(rd.messages)                                   # only after the write
        install(rd.snapshot); apply(rd.committed_entries); answer(rd.read_states)
        core.advance(rd)

At most one Ready is outstanding: ``has_ready()`` is False between ``ready()`` and ``advance()``.
The core may be stepped meanwhile (the write can run off the event loop). The core only reads
the LogStore it is given; every write is the driver's, asked for in a Ready.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

import msgpack

from pykvs.raft.interfaces import CompactedError, LogStore
from pykvs.raft.messages import Message, MessageKind
from pykvs.raft.progress import Progress, ProgressState
from pykvs.raft.raftlog import RaftLog
from pykvs.raft.types import Configuration, Entry, EntryType, HardState, SnapshotMeta


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


@dataclass(frozen=True, slots=True)
class Compaction:
    """Drop the log entries ``<= upto``: the snapshot ``meta`` covers them (``LogStore.compact``).

    Its entries are durable and applied; the driver may write it in any order relative to the
    Ready's other writes, and need not wait for it before ``advance()``.
    """

    upto: int
    meta: SnapshotMeta


@dataclass
class Ready:
    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: SnapshotMeta | None = None
    messages: list[Message] = field(default_factory=list)
    committed_entries: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    compaction: Compaction | None = None  # asked for by compact(): the driver writes it


TRANSFER_CONTEXT = b"transfer"  # VOTE context of an election started by TimeoutNow


def encode_configuration(conf: Configuration) -> bytes:
    """The data of a CONFIG entry: the whole new membership."""
    return msgpack.packb(conf.to_wire())


def decode_configuration(data: bytes) -> Configuration:
    return Configuration.from_wire(msgpack.unpackb(data))


def apply_config_change(conf: Configuration, change: ConfigChange) -> Configuration:
    """The membership after ``change``; raises ConfigChangeError when it makes no sense."""
    sid = change.server_id
    voters, learners = dict(conf.voters), dict(conf.learners)
    if change.kind is ConfigChangeKind.ADD_VOTER:
        if sid in voters:
            raise ConfigChangeError(f"server {sid!r} is already a voter")
        address = change.address or learners.get(sid, "")
        learners.pop(sid, None)
        voters[sid] = address
    elif change.kind is ConfigChangeKind.ADD_LEARNER:
        if sid in voters or sid in learners:
            raise ConfigChangeError(f"server {sid!r} is already a member")
        learners[sid] = change.address
    elif change.kind is ConfigChangeKind.PROMOTE:
        if sid not in learners:
            raise ConfigChangeError(f"server {sid!r} is not a learner, cannot promote it")
        voters[sid] = change.address or learners.pop(sid)
        learners.pop(sid, None)
    elif change.kind is ConfigChangeKind.REMOVE:
        if sid not in voters and sid not in learners:
            raise ConfigChangeError(f"server {sid!r} is not a member")
        if voters.keys() == {sid}:
            raise ConfigChangeError(f"cannot remove {sid!r}, the last voter")
        voters.pop(sid, None)
        learners.pop(sid, None)
    else:
        raise ConfigChangeError(f"unknown change kind {change.kind!r}")
    return Configuration(voters, learners, conf.cluster_id)


@dataclass
class _ReadRequest:
    context: bytes
    index: int
    requester: str
    acks: set[str]


class RaftCore:
    """One Raft server's protocol state. See the module docstring for the driving loop."""

    def __init__(
        self,
        config: CoreConfig,
        log: LogStore,
        rng: random.Random,
        bootstrap: Configuration | None = None,
    ) -> None:
        if config.election_tick <= config.heartbeat_tick:
            raise ValueError(
                f"election_tick ({config.election_tick}) must exceed heartbeat_tick "
                f"({config.heartbeat_tick})"
            )
        if config.heartbeat_tick < 1:
            raise ValueError(f"heartbeat_tick must be at least 1, got {config.heartbeat_tick}")
        self._cfg = config
        self._id = config.id
        self._rng = rng
        self._log = RaftLog(log)
        stored = log.hard_state()
        self._term = stored.term
        self._vote = stored.vote
        self._prev_hard = stored
        self._role = Role.FOLLOWER
        # Membership history: (index, configuration) for the snapshot and every CONFIG entry
        # still in the log. The newest is in force, committed or not (single-server changes).
        snap = log.snapshot_meta()
        self._configs: list[tuple[int, Configuration]] = [
            (snap.index, snap.configuration) if snap else (0, Configuration())
        ]
        self._load_config_entries(self._configs[0][0] + 1)
        if bootstrap is not None and self._log.last_index() == 0 and self._term == 0:
            # Every founding server writes the same entry 1, so it is committed everywhere.
            entry = Entry(1, 1, EntryType.CONFIG, encode_configuration(bootstrap))
            self._term = 1
            self._log.append([entry])
            self._configs.append((1, bootstrap))
            self._log.commit_to(1)

        self._leader_id: str | None = None
        self._prev_soft = SoftState(Role.FOLLOWER, None)
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = config.election_tick
        self._votes: dict[str, bool] = {}
        self._progress: dict[str, Progress] = {}
        self._term_start_index = 0  # the leader's no-op
        self._lead_transferee: str | None = None
        self._reads: list[_ReadRequest] = []  # ReadIndex rounds in flight, oldest first
        self._reads_before_commit: list[tuple[bytes, str]] = []  # waiting for the no-op
        self._msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._append_pending = False  # new entries to send to followers at the next Ready
        self._commit_pending = False  # a new commit index to tell followers
        self._outstanding: Ready | None = None
        self._compaction: Compaction | None = None  # asked for, not yet handed out in a Ready
        self.dropped_from_strangers = 0  # messages from non-members dropped (see _stranger)
        self._since_leader = 0  # ticks since a leader was last heard from (see _stranger)
        self._reset(self._term)
        if self._sole_voter():
            # No other server can vote or lead: waiting an election timeout only delays
            # serving (a restarted single server). Its own vote wins at once.
            self._campaign(pre_vote=self._cfg.pre_vote, transfer=False)

    def _load_config_entries(self, lo: int) -> None:
        last = self._log.last_index()
        while lo <= last:
            batch = self._log.entries(lo, min(last + 1, lo + 1024))
            self._note_config_entries(batch)
            lo = batch[-1].index + 1

    # -- properties -----------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._id

    @property
    def role(self) -> Role:
        return self._role

    @property
    def term(self) -> int:
        return self._term

    @property
    def vote(self) -> str | None:
        return self._vote

    @property
    def leader_id(self) -> str | None:
        return self._leader_id

    @property
    def commit_index(self) -> int:
        return self._log.committed

    @property
    def applied_index(self) -> int:
        return self._log.applied

    @property
    def last_index(self) -> int:
        return self._log.last_index()

    @property
    def configuration(self) -> Configuration:
        """The membership in force: the newest in the log, committed or not."""
        return self._configs[-1][1]

    @property
    def lead_transferee(self) -> str | None:
        return self._lead_transferee

    def progress(self, peer: str) -> Progress | None:
        """The leader's view of ``peer`` (None when not leader or not a member). Read-only."""
        return self._progress.get(peer)

    def configuration_at(self, index: int) -> Configuration:
        """The membership in force at ``index`` (for a snapshot taken there)."""
        if index < self._configs[0][0]:
            raise ValueError(
                f"index {index} is older than the membership history ({self._configs[0][0]})"
            )
        found = self._configs[0][1]
        for at, conf in self._configs:
            if at > index:
                break
            found = conf
        return found

    @property
    def snapshot_pending(self) -> bool:
        """A snapshot from the leader is being installed: the FSM is about to be replaced, so
        this is no time to snapshot it (``snapshot_meta()`` raises CompactedError,
        ``compact()`` does nothing)."""
        return self._log.unstable_snapshot is not None

    @property
    def pending_snapshot(self) -> SnapshotMeta | None:
        """The snapshot the next Ready will install (from the leader, or a user restore)."""
        return self._log.unstable_snapshot

    def restore_meta(self, after_index: int = 0) -> SnapshotMeta:
        """Leader only: where a user's snapshot would go (see ``restore()``): the first index
        above both our last log index and ``after_index`` (the snapshot's own index, so that
        no index the restored state carries is ever reused), in the current term, with the
        membership in force (the cluster's, not the snapshot's)."""
        self._check_can_propose()
        if self._configs[-1][0] > self._log.committed:
            raise ConfigChangeError("a membership change is not committed yet; restore later")
        index = max(self._log.last_index(), after_index) + 1
        return SnapshotMeta(index, self._term, self.configuration)

    def restore(self, meta: SnapshotMeta) -> None:
        """Leader only: replace the whole state by a user's snapshot (hashicorp/raft's Restore).

        ``meta`` comes from ``restore_meta()`` and its body is in the driver's snapshot store
        (or staged to be committed with the next Ready). The log is compacted to it: the next
        Ready carries it as its snapshot (persist, then install into the FSM) and its index is
        committed here at once. Every follower then needs entries below it, so each gets the
        snapshot by InstallSnapshot. As in hashicorp/raft, the leader commits it ahead of its
        followers: until a quorum holds it (the driver waits for an entry after it to commit
        before saying the restore is done), losing this leader loses the restore.
        """
        self._check_can_propose()
        if meta.term != self._term:
            raise ValueError(f"restore: snapshot term {meta.term} is not the current term "
                             f"{self._term}")
        if meta.index <= self._log.last_index():
            raise ValueError(f"restore: snapshot index {meta.index} must be above the last log "
                             f"index {self._log.last_index()}")
        if meta.configuration != self.configuration:
            raise ValueError("restore: the snapshot's membership is not the one in force")
        if self.snapshot_pending:
            raise ValueError("restore: a snapshot is still being installed")
        self._log.restore(meta)
        self._configs = [(meta.index, meta.configuration)]
        for peer, pr in self._progress.items():
            if peer == self._id:
                continue
            # Everything a follower holds is below the snapshot: it needs the snapshot.
            pr.become_probe()
            pr.next = min(pr.next, meta.index)
        self._append_pending = True

    def snapshot_meta(self, index: int) -> SnapshotMeta:
        """Metadata for a snapshot of the FSM at ``index`` (which must be applied already)."""
        if self.snapshot_pending:
            # As for any index below the newest snapshot: the log no longer answers for it.
            raise CompactedError(
                f"cannot snapshot at {index}: a snapshot from the leader is being installed "
                "(check snapshot_pending first)"
            )
        if index > self._log.applied:
            raise ValueError(f"index {index} is not applied yet (applied {self._log.applied})")
        return SnapshotMeta(index, self._log.term(index), self.configuration_at(index))

    # -- inputs ---------------------------------------------------------------------------

    def tick(self) -> None:
        """One unit of logical time (the driver calls it every few milliseconds)."""
        if self._role is Role.LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def step(self, msg: Message) -> None:
        """Handle a message from a peer."""
        if msg.dst != self._id:
            raise ValueError(f"message for {msg.dst!r} stepped into {self._id!r}: {msg!r}")
        src, conf = msg.src, self._configs[-1][1]
        if src == self._id or (src not in conf.voters and src not in conf.learners
                               and self._stranger(msg)):
            self.dropped_from_strangers += 1
            return
        if msg.term > self._term:
            if msg.kind in (MessageKind.VOTE, MessageKind.PRE_VOTE) and self._in_lease(msg):
                # A leader is alive: ignore a disrupting (perhaps removed) server's campaign.
                return
            if msg.kind is MessageKind.PRE_VOTE or (
                msg.kind is MessageKind.PRE_VOTE_RESP and not msg.reject
            ):
                pass  # pre-votes never change anyone's term
            elif msg.kind in (MessageKind.APPEND, MessageKind.HEARTBEAT, MessageKind.SNAPSHOT):
                self._become_follower(msg.term, msg.src)
            elif msg.kind is MessageKind.VOTE and self._role is not Role.LEADER:
                # Only a granted vote resets the election timer (Raft §5.2); otherwise
                # candidates with stale logs could keep an up-to-date server from ever
                # standing (without pre-vote).
                elapsed = self._election_elapsed
                self._become_follower(msg.term, None)
                self._election_elapsed = elapsed
            else:
                self._become_follower(msg.term, None)
        elif msg.term < self._term:
            if msg.kind in (MessageKind.APPEND, MessageKind.HEARTBEAT) and (
                self._cfg.check_quorum or self._cfg.pre_vote
            ):
                # Tell a stale leader about the newer term, else (with check-quorum or
                # pre-vote) it could wait forever for its followers.
                self._send(msg.src, MessageKind.APPEND_RESP)
            elif msg.kind is MessageKind.PRE_VOTE:
                self._send(msg.src, MessageKind.PRE_VOTE_RESP, reject=True)
            return

        if msg.kind in (MessageKind.VOTE, MessageKind.PRE_VOTE):
            self._handle_vote_request(msg)
        elif self._role is Role.LEADER:
            self._step_leader(msg)
        elif self._role is Role.FOLLOWER:
            self._step_follower(msg)
        else:
            self._step_candidate(msg)

    def _stranger(self, msg: Message) -> bool:
        """Whether a message from a server outside the membership in force must be dropped.

        Dropped by a server that leads, or that heard from a leader (other than the sender)
        within two election timeouts: a non-member then never changes a term, deposes a
        leader, wins a vote or feeds the log. After two election timeouts without a leader the
        message is stepped as Raft would (a leader elected by a membership this server has not
        received yet must be able to catch it up; a candidate this server's membership does
        not name may need its vote), so liveness is Raft's, delayed by at most that; a cluster
        that has a leader, or lost it less than two election timeouts ago, is shielded (one
        timeout more than a campaign takes, so a stalled follower alone does not open it).
        A server with no
        membership yet (being added, its log still empty) hears from anyone, as in
        hashicorp/raft: it can only learn, and its leader may change before it knows who the
        members are.
        """
        if self._role is Role.LEADER:
            return True
        if not self._configs[-1][1].voters:
            return False
        return (msg.src != self._leader_id
                and self._since_leader < 2 * self._cfg.election_tick)

    def propose(self, data: bytes) -> int:
        """Append an FSM command; returns its index. Raises NotLeaderError off the leader."""
        self._check_can_propose()
        return self._append_entry(EntryType.NORMAL, bytes(data))

    def propose_config(self, change: ConfigChange) -> int:
        """Append a single-server membership change; returns its index.

        Refused (ConfigChangeError) while another change is uncommitted or before the leader
        has committed its term's first entry (the rule that keeps single-server changes safe).
        """
        self._check_can_change()
        new = apply_config_change(self.configuration, change)
        return self._append_entry(EntryType.CONFIG, encode_configuration(new))

    def propose_cluster_id(self, cluster_id: str) -> int:
        """Append the membership in force, named ``cluster_id`` (a cluster formed before
        cluster ids, or by several founders, gets its id this way); returns its index.

        Refused (ConfigChangeError) when the membership already has an id, and as any
        membership change while another is uncommitted."""
        self._check_can_change()
        conf = self.configuration
        if conf.cluster_id:
            raise ConfigChangeError(f"the cluster already has id {conf.cluster_id}")
        if not cluster_id:
            raise ConfigChangeError("a cluster id must not be empty")
        new = Configuration(dict(conf.voters), dict(conf.learners), cluster_id)
        return self._append_entry(EntryType.CONFIG, encode_configuration(new))

    def _check_can_change(self) -> None:
        self._check_can_propose()
        if self._log.committed < self._term_start_index:
            raise ConfigChangeError("the leader has not committed an entry of its term yet")
        pending_at = self._configs[-1][0]
        if pending_at > self._log.committed:
            raise ConfigChangeError(f"membership change at index {pending_at} is not committed")

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read point; answered as ReadState(ctx, index) in a Ready.

        ``ctx`` must be unique among pending requests. A request that cannot be confirmed
        (leadership lost, message dropped) is never answered: the driver times it out.
        """
        if self._role is Role.LEADER:
            self._leader_read(bytes(ctx), self._id)
        elif self._leader_id is not None and self._role is Role.FOLLOWER:
            self._send(self._leader_id, MessageKind.READ_INDEX, context=bytes(ctx))
        else:
            raise NotLeaderError(self._leader_id, "no leader to confirm a read")

    def transfer_leadership(self, to: str) -> None:
        """Hand leadership to voter ``to`` (TimeoutNow once its log is caught up)."""
        if to not in self.configuration.voters:
            raise ValueError(f"transfer target {to!r} is not a voter")
        if self._role is Role.LEADER:
            self._start_transfer(to)
        elif self._leader_id is not None and self._role is Role.FOLLOWER:
            self._send(self._leader_id, MessageKind.TRANSFER_LEADER, context=to.encode())
        else:
            raise NotLeaderError(self._leader_id, "no leader to transfer from")

    def report_unreachable(self, peer: str) -> None:
        """The transport failed to reach ``peer``: stop streaming to it, probe instead."""
        pr = self._progress.get(peer)
        if self._role is Role.LEADER and pr is not None and pr.state is ProgressState.REPLICATE:
            pr.become_probe()

    def report_snapshot(self, peer: str, ok: bool) -> None:
        """The driver finished sending a snapshot body to ``peer`` (or failed to)."""
        pr = self._progress.get(peer)
        if self._role is not Role.LEADER or pr is None or pr.state is not ProgressState.SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        # Wait for the follower's answer (or a heartbeat's) before sending again.
        pr.probe_sent = True

    def compact(self, index: int, meta: SnapshotMeta) -> None:
        """Ask for the log entries ``<= index`` to be dropped, now covered by the snapshot ``meta``.

        The driver took ``meta`` (see ``snapshot_meta()``) and stored its body; ``index`` may
        trail ``meta.index`` to keep a window of entries for slow followers. The next Ready
        carries the request as its ``compaction`` and the driver writes it
        (``LogStore.compact``): the core does no I/O. Requests not yet handed out add up (the
        higher index, the newer snapshot), as if each had been written in turn. Ignored while
        ``snapshot_pending``: the incoming snapshot replaces the log anyway.
        """
        if self.snapshot_pending:
            return
        if meta.index > self._log.applied:
            raise ValueError(f"snapshot index {meta.index} is not applied ({self._log.applied})")
        if index > meta.index:
            raise ValueError(f"compact index {index} is past the snapshot index {meta.index}")
        if index > self._log.persisted_last_index():
            raise ValueError(f"compact index {index} is not persisted yet")
        asked = self._compaction
        if asked is not None:
            index = max(index, asked.upto)
            if asked.meta.index > meta.index:
                meta = asked.meta
        self._compaction = Compaction(index, meta)

    # -- outputs --------------------------------------------------------------------------

    def has_ready(self) -> bool:
        if self._outstanding is not None:
            return False
        soft, hard = self._prev_soft, self._prev_hard
        return bool(
            self._msgs
            or self._append_pending
            or self._commit_pending
            or self._read_states
            or self._log.has_unstable()
            or self._log.has_next_committed_entries()
            or self._role is not soft.role
            or self._leader_id != soft.leader_id
            or self._term != hard.term
            or self._vote != hard.vote
            or self._log.committed != hard.commit
            or self._compaction is not None
        )

    def ready(self) -> Ready:
        """What to persist, send, install and apply now; hand it back with ``advance()``."""
        if self._outstanding is not None:
            raise RuntimeError("ready() called again before advance() of the previous Ready")
        if self._role is Role.LEADER:
            self._flush_appends()
        rd = Ready()
        soft = self._soft_state()
        if soft != self._prev_soft:
            rd.soft_state = self._prev_soft = soft
        hard = self._hard_state()
        if hard != self._prev_hard:
            rd.hard_state = self._prev_hard = hard
        rd.entries, rd.snapshot = self._log.take_unstable()
        rd.committed_entries = self._log.next_committed_entries(self._cfg.max_committed_bytes)
        rd.messages, self._msgs = self._msgs, []
        rd.read_states, self._read_states = self._read_states, []
        rd.compaction, self._compaction = self._compaction, None
        self._outstanding = rd
        return rd

    def advance(self, ready: Ready) -> None:
        """The driver persisted, sent, installed and applied everything in ``ready``."""
        if ready is not self._outstanding:
            raise RuntimeError("advance() got a Ready that is not the outstanding one")
        self._outstanding = None
        self._log.stable_to(ready.entries, ready.snapshot)
        if ready.snapshot is not None:
            self._log.applied_to(ready.snapshot.index)
        if ready.committed_entries:
            self._log.applied_to(ready.committed_entries[-1].index)
        self._prune_configs()
        if self._role is Role.LEADER:
            own = self._progress.get(self._id)
            if own is not None and own.maybe_update(self._log.persisted_last_index()):
                self._maybe_commit()

    # -- state transitions --------------------------------------------------------------------

    def _soft_state(self) -> SoftState:
        return SoftState(self._role, self._leader_id)

    def _hard_state(self) -> HardState:
        return HardState(self._term, self._vote, self._log.committed)

    def _reset(self, term: int) -> None:
        if term != self._term:
            self._term = term
            self._vote = None
        self._leader_id = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = self._cfg.election_tick + self._rng.randrange(
            self._cfg.election_tick
        )
        self._votes = {}
        self._progress = {}
        self._lead_transferee = None
        self._reads = []
        self._reads_before_commit = []
        self._append_pending = self._commit_pending = False

    def _become_follower(self, term: int, leader: str | None) -> None:
        self._reset(term)
        self._role = Role.FOLLOWER
        self._leader_id = leader

    def _become_pre_candidate(self) -> None:
        # Neither term nor vote changes: a pre-vote that fails leaves no trace.
        self._role = Role.PRE_CANDIDATE
        self._votes = {}
        self._leader_id = None

    def _become_candidate(self) -> None:
        self._reset(self._term + 1)
        self._role = Role.CANDIDATE
        self._vote = self._id

    def _become_leader(self) -> None:
        self._reset(self._term)
        self._role = Role.LEADER
        self._leader_id = self._id
        self._since_leader = 0
        for server in self.configuration.all_servers():
            self._add_progress(server)
        own = self._progress.get(self._id)
        if own is not None:
            own.match = self._log.persisted_last_index()
            own.become_replicate()
            own.recent_active = True
        # The no-op commits everything before it and lets ReadIndex and changes proceed.
        self._term_start_index = self._append_entry(EntryType.NOOP, b"")

    def _add_progress(self, server: str) -> None:
        if server not in self._progress:
            pr = Progress(self._log.last_index() + 1, self._cfg.max_inflight)
            self._progress[server] = pr

    # -- elections ------------------------------------------------------------------------

    def _promotable(self) -> bool:
        return self._id in self.configuration.voters

    def _sole_voter(self) -> bool:
        voters = self.configuration.voters
        return len(voters) == 1 and self._id in voters

    def _in_lease(self, msg: Message) -> bool:
        """Has this server heard from a live leader within the election timeout?"""
        return (
            self._cfg.check_quorum
            and msg.context != TRANSFER_CONTEXT
            and self._leader_id is not None
            and self._election_elapsed < self._cfg.election_tick
        )

    def _tick_election(self) -> None:
        self._election_elapsed += 1
        self._since_leader += 1
        if self._promotable() and (self._election_elapsed >= self._randomized_timeout
                                   or self._sole_voter()):
            self._election_elapsed = 0
            self._campaign(pre_vote=self._cfg.pre_vote, transfer=False)

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self._cfg.election_tick:
            self._election_elapsed = 0
            if self._cfg.check_quorum and not self._quorum_recently_active():
                self._become_follower(self._term, None)
                return
            self._lead_transferee = None  # a transfer must finish within an election timeout
        if self._heartbeat_elapsed >= self._cfg.heartbeat_tick:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _quorum_recently_active(self) -> bool:
        voters = self.configuration.voters
        active = 0
        for server, pr in self._progress.items():
            if server == self._id:
                pr.recent_active = True
            if pr.recent_active and server in voters:
                active += 1
            if server != self._id:
                pr.recent_active = False
        return active >= len(voters) // 2 + 1

    def _campaign(self, pre_vote: bool, transfer: bool) -> None:
        if pre_vote:
            self._become_pre_candidate()
            kind, vote_term = MessageKind.PRE_VOTE, self._term + 1
        else:
            self._become_candidate()
            kind, vote_term = MessageKind.VOTE, self._term
        if self._poll(self._id, True):
            return
        last_index, last_term = self._log.last_index(), self._log.last_term()
        context = TRANSFER_CONTEXT if transfer else b""
        for voter in self.configuration.voters:
            if voter != self._id:
                self._send(
                    voter, kind, term=vote_term, index=last_index, log_term=last_term,
                    context=context,
                )  # fmt: skip

    def _poll(self, voter: str, granted: bool) -> bool:
        """Count a vote; on a decided election act on it and return True."""
        self._votes.setdefault(voter, granted)
        voters = self.configuration.voters
        quorum = len(voters) // 2 + 1
        yes = sum(1 for v, g in self._votes.items() if g and v in voters)
        no = sum(1 for v, g in self._votes.items() if not g and v in voters)
        if yes >= quorum:
            if self._role is Role.PRE_CANDIDATE:
                self._campaign(pre_vote=False, transfer=False)
            else:
                self._become_leader()
            return True
        if len(voters) - no < quorum:
            self._become_follower(self._term, None)
            return True
        return False

    def _handle_vote_request(self, msg: Message) -> None:
        pre = msg.kind is MessageKind.PRE_VOTE
        resp = MessageKind.PRE_VOTE_RESP if pre else MessageKind.VOTE_RESP
        can_vote = (
            self._vote == msg.src
            or (self._vote is None and self._leader_id is None)
            or (pre and msg.term > self._term)
        )
        if can_vote and self._log.is_up_to_date(msg.index, msg.log_term):
            # A pre-vote answer carries the proposed term so the candidate counts it.
            self._send(msg.src, resp, term=msg.term)
            if not pre:
                self._election_elapsed = 0
                self._vote = msg.src
        else:
            self._send(msg.src, resp, reject=True)

    def _step_candidate(self, msg: Message) -> None:
        kind = msg.kind
        if kind in (MessageKind.APPEND, MessageKind.HEARTBEAT, MessageKind.SNAPSHOT):
            # Someone won this term.
            self._become_follower(self._term, msg.src)
            self._step_follower(msg)
        elif (kind is MessageKind.PRE_VOTE_RESP and self._role is Role.PRE_CANDIDATE) or (
            kind is MessageKind.VOTE_RESP and self._role is Role.CANDIDATE
        ):
            self._poll(msg.src, not msg.reject)

    # -- follower -----------------------------------------------------------------------------

    def _step_follower(self, msg: Message) -> None:
        kind = msg.kind
        if kind in (MessageKind.APPEND, MessageKind.HEARTBEAT, MessageKind.SNAPSHOT):
            self._election_elapsed = self._since_leader = 0
            self._leader_id = msg.src
            if kind is MessageKind.APPEND:
                self._handle_append(msg)
            elif kind is MessageKind.HEARTBEAT:
                self._log.commit_to(msg.commit)
                self._send(msg.src, MessageKind.HEARTBEAT_RESP, context=msg.context)
            else:
                self._handle_snapshot(msg)
        elif kind is MessageKind.TIMEOUT_NOW:
            if self._promotable():
                self._campaign(pre_vote=False, transfer=True)
        elif kind is MessageKind.READ_INDEX_RESP and not msg.reject:
            self._read_states.append(ReadState(msg.context, msg.index))

    def _handle_append(self, msg: Message) -> None:
        committed = self._log.committed
        if msg.index < committed:
            self._send(msg.src, MessageKind.APPEND_RESP, index=committed)
            return
        result = self._log.maybe_append(msg.index, msg.log_term, msg.commit, msg.entries)
        if result is not None:
            last_new, written = result
            if written:
                self._drop_configs_from(written[0].index)
                self._note_config_entries(written)
            self._send(msg.src, MessageKind.APPEND_RESP, index=last_new)
            return
        hint_index = min(msg.index, self._log.last_index())
        hint_index, hint_term = self._log.find_conflict_by_term(hint_index, msg.log_term)
        self._send(
            msg.src, MessageKind.APPEND_RESP, index=msg.index, reject=True,
            reject_hint=hint_index, log_term=hint_term,
        )  # fmt: skip

    def _handle_snapshot(self, msg: Message) -> None:
        snap = msg.snapshot
        if snap is None:
            raise ValueError(f"SNAPSHOT message without snapshot metadata: {msg!r}")
        if snap.index <= self._log.committed:
            self._send(msg.src, MessageKind.APPEND_RESP, index=self._log.committed)
            return
        if self._log.match_term(snap.index, snap.term):
            # Our log already holds the snapshot's last entry: just learn it is committed.
            self._log.commit_to(snap.index)
        else:
            self._log.restore(snap)
            self._configs = [(snap.index, snap.configuration)]
        self._send(msg.src, MessageKind.APPEND_RESP, index=self._log.committed)

    # -- leader -------------------------------------------------------------------------------

    def _check_can_propose(self) -> None:
        if self._role is not Role.LEADER:
            raise NotLeaderError(self._leader_id)
        if self._lead_transferee is not None:
            raise NotLeaderError(self._lead_transferee, "leadership transfer in progress")

    def _append_entry(self, etype: EntryType, data: bytes) -> int:
        entry = Entry(self._log.last_index() + 1, self._term, etype, data)
        self._log.append([entry])
        if etype is EntryType.CONFIG:
            self._note_config_entries([entry])
        self._append_pending = True
        return entry.index

    def _step_leader(self, msg: Message) -> None:
        kind = msg.kind
        if kind in (MessageKind.APPEND, MessageKind.HEARTBEAT, MessageKind.SNAPSHOT):
            raise AssertionError(f"raft safety: two leaders in term {self._term}: {msg!r}")
        pr = self._progress.get(msg.src)
        if kind is MessageKind.APPEND_RESP and pr is not None:
            pr.recent_active = True
            self._handle_append_resp(msg, pr)
        elif kind is MessageKind.HEARTBEAT_RESP and pr is not None:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state is ProgressState.REPLICATE and pr.inflights.full():
                pr.inflights.free_first_one()
            if pr.match < self._log.last_index() or pr.state is ProgressState.PROBE:
                # Even an empty append helps: its refusal exposes lost appends.
                self._send_appends(msg.src, send_empty=True)
            if msg.context:
                self._read_acked(msg.src, msg.context)
        elif kind is MessageKind.READ_INDEX:
            self._leader_read(msg.context, msg.src)
        elif kind is MessageKind.TRANSFER_LEADER:
            target = msg.context.decode("utf-8", "replace")
            if target in self.configuration.voters:
                self._start_transfer(target)

    def _handle_append_resp(self, msg: Message, pr: Progress) -> None:
        if msg.reject:
            next_probe = msg.reject_hint
            if msg.log_term > 0:
                next_probe, _ = self._log.find_conflict_by_term(msg.reject_hint, msg.log_term)
            if pr.maybe_decr_to(msg.index, next_probe):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_appends(msg.src)
            return
        # A probe answered at our match point also proves the logs agree: start streaming.
        confirmed_probe = pr.state is ProgressState.PROBE and pr.match == msg.index
        if not pr.maybe_update(msg.index) and not confirmed_probe:
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT:
            if pr.match + 1 >= self._log.first_index():
                pr.become_probe()
                pr.become_replicate()
        else:
            pr.inflights.free_le(msg.index)
        self._maybe_commit()
        if self._role is not Role.LEADER:
            return  # a removed leader stepped down
        self._send_appends(msg.src)
        if msg.src == self._lead_transferee and pr.match == self._log.last_index():
            self._send(msg.src, MessageKind.TIMEOUT_NOW)

    def _maybe_commit(self) -> None:
        voters = self.configuration.voters
        if not voters:
            return
        matches = sorted(
            (self._progress[v].match if v in self._progress else 0 for v in voters),
            reverse=True,
        )
        candidate = matches[len(voters) // 2]
        # Only entries of the current term are committed by counting replicas (Raft §5.4.2).
        if candidate <= self._log.committed or self._log.term(candidate) != self._term:
            return
        self._log.commit_to(candidate)
        self._commit_pending = True
        if self._reads_before_commit and candidate >= self._term_start_index:
            waiting, self._reads_before_commit = self._reads_before_commit, []
            for ctx, requester in waiting:
                self._leader_read(ctx, requester)
        if self._id not in voters and self._configs[-1][0] <= candidate:
            self._step_down_removed()

    def _step_down_removed(self) -> None:
        """Our removal is committed: hand over to the most caught-up voter and step down."""
        last = self._log.last_index()
        best = max(
            (v for v in self.configuration.voters if v in self._progress),
            key=lambda v: self._progress[v].match,
            default=None,
        )
        if best is not None and self._progress[best].match == last:
            self._flush_appends()
            self._send(best, MessageKind.TIMEOUT_NOW)
        self._become_follower(self._term, None)

    def _flush_appends(self) -> None:
        """Send new entries (and a new commit index) to every follower, batched."""
        if not (self._append_pending or self._commit_pending):
            return
        send_empty = self._commit_pending
        self._append_pending = self._commit_pending = False
        for peer in self._progress:
            if peer != self._id:
                self._send_appends(peer, send_empty)

    def _send_appends(self, peer: str, send_empty: bool = False) -> None:
        """Send as much as the window allows: one message in PROBE, up to max_inflight in
        REPLICATE, each of at most max_batch_entries / max_batch_bytes."""
        sent = self._send_append(peer, send_empty)
        while sent and self._progress[peer].state is ProgressState.REPLICATE:
            sent = self._send_append(peer, False)

    def _send_append(self, peer: str, send_empty: bool) -> bool:
        pr = self._progress[peer]
        if pr.is_paused():
            return False
        last = self._log.last_index()
        if pr.next > last and not send_empty:
            return False
        prev = pr.next - 1
        try:
            prev_term = self._log.term(prev)
            entries: list[Entry] = []
            if pr.next <= last:
                entries = self._log.entries(
                    pr.next, last + 1, self._cfg.max_batch_bytes, self._cfg.max_batch_entries
                )
        except CompactedError:
            return self._send_snapshot(peer, pr)
        self._send(
            peer, MessageKind.APPEND, index=prev, log_term=prev_term, entries=tuple(entries),
            commit=self._log.committed,
        )  # fmt: skip
        pr.sent_entries(len(entries), entries[-1].index if entries else prev)
        return True

    def _send_snapshot(self, peer: str, pr: Progress) -> bool:
        if not pr.recent_active:
            return False  # do not ship a snapshot to a server that may be down
        if self._log.unstable_snapshot is not None:
            return False  # ours is still being installed; retry once it is stored
        snap = self._log.storage.snapshot_meta()
        if snap is None:
            raise AssertionError(
                f"log compacted below {self._log.first_index()} without a snapshot"
            )
        pr.become_snapshot(snap.index)
        self._send(peer, MessageKind.SNAPSHOT, snapshot=snap)
        return False

    def _broadcast_heartbeat(self) -> None:
        ctx = self._reads[-1].context if self._reads else b""
        for peer, pr in self._progress.items():
            if peer != self._id:
                commit = min(pr.match, self._log.committed)
                self._send(peer, MessageKind.HEARTBEAT, commit=commit, context=ctx)

    def _start_transfer(self, to: str) -> None:
        if to == self._id:
            self._lead_transferee = None
            return
        if to == self._lead_transferee:
            return
        pr = self._progress.get(to)
        if pr is None:
            return
        self._lead_transferee = to
        self._election_elapsed = 0
        if pr.match == self._log.last_index():
            self._send(to, MessageKind.TIMEOUT_NOW)
        else:
            self._send_appends(to)

    # -- ReadIndex ------------------------------------------------------------------------

    def _leader_read(self, ctx: bytes, requester: str) -> None:
        if self._log.committed < self._term_start_index:
            # Our commit index may lag the cluster's until the no-op commits.
            self._reads_before_commit.append((ctx, requester))
            return
        voters = self.configuration.voters
        if voters.keys() == {self._id}:
            self._answer_read(_ReadRequest(ctx, self._log.committed, requester, set()))
            return
        if any(r.context == ctx for r in self._reads):
            return
        acks = {self._id} if self._id in voters else set()
        self._reads.append(_ReadRequest(ctx, self._log.committed, requester, acks))
        self._broadcast_heartbeat()

    def _read_acked(self, peer: str, ctx: bytes) -> None:
        pos = next((n for n, r in enumerate(self._reads) if r.context == ctx), None)
        if pos is None:
            return
        req = self._reads[pos]
        voters = self.configuration.voters
        req.acks.add(peer)
        if len(req.acks & voters.keys()) < len(voters) // 2 + 1:
            return
        # Leadership is confirmed for this round, hence for every earlier request too.
        done, self._reads = self._reads[: pos + 1], self._reads[pos + 1 :]
        for finished in done:
            self._answer_read(finished)

    def _answer_read(self, req: _ReadRequest) -> None:
        if req.requester == self._id:
            self._read_states.append(ReadState(req.context, req.index))
        else:
            self._send(req.requester, MessageKind.READ_INDEX_RESP, index=req.index,
                       context=req.context)  # fmt: skip

    # -- membership -----------------------------------------------------------------------

    def _note_config_entries(self, entries: list[Entry]) -> None:
        for entry in entries:
            if entry.type is EntryType.CONFIG:
                conf = decode_configuration(entry.data)
                self._configs.append((entry.index, conf))
                if self._role is Role.LEADER:
                    self._apply_membership_to_leader(conf)

    def _apply_membership_to_leader(self, conf: Configuration) -> None:
        members = conf.all_servers()
        for server in members:
            self._add_progress(server)
        for server in list(self._progress):
            if server not in members and server != self._id:
                del self._progress[server]
        if self._lead_transferee is not None and self._lead_transferee not in conf.voters:
            self._lead_transferee = None

    def _drop_configs_from(self, index: int) -> None:
        """Entries from ``index`` on were replaced: forget the memberships they carried."""
        while len(self._configs) > 1 and self._configs[-1][0] >= index:
            self._configs.pop()

    def _prune_configs(self) -> None:
        """Keep only the membership history a snapshot or a truncation may still need."""
        applied = self._log.applied
        keep_from = 0
        for pos, (at, _) in enumerate(self._configs):
            if at <= applied:
                keep_from = pos
        if keep_from:
            del self._configs[:keep_from]

    # -- plumbing -------------------------------------------------------------------------

    def _send(self, to: str, kind: MessageKind, term: int | None = None, **fields: object) -> None:
        self._msgs.append(
            Message(kind, self._term if term is None else term, self._id, to, **fields)  # type: ignore[arg-type]
        )
