"""N Raft cores on a simulated network, driven deterministically from one seed.

Each simulated server has a durable part (its in-memory ``LogStore`` and ``SnapshotStore``, kept
across a crash) and a volatile part (the ``RaftCore``, the KV state machine, the Ready being
written, waiting clients), which a crash throws away. A Ready is persisted after a simulated disk
delay, so a crash can lose entries a Ready carried but never wrote, and the core keeps being
stepped meanwhile, as the real driver allows.

Time is an integer clock; a Raft tick is ``TICK`` units and each server ticks at its own phase.
At every step the harness checks the Raft safety properties (see ``Invariants``); clients record
every call and answer into a ``History`` that the linearizability checker must accept; after the
chaos the network is healed, every server restarted, and a leader must be elected and a proposal
commit within a bound.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from pykvs.raft.core import (
    ConfigChange,
    ConfigChangeError,
    ConfigChangeKind,
    CoreConfig,
    NotLeaderError,
    RaftCore,
    Ready,
    Role,
)
from pykvs.raft.interfaces import CompactedError, UnavailableError
from pykvs.raft.memstore import MemLogStore, MemSnapshotStore
from pykvs.raft.messages import Message, MessageKind
from pykvs.raft.types import Configuration, Entry, EntryType, SnapshotMeta

from .linearizability import UNKNOWN, History, check
from .network import Faults, Network

TICK = 10  # time units per Raft tick; message delays and disk delays are a few units


# Fault events, and per profile the chance per tick of one and how often each is drawn.
# "partitions" isolates leaders and leaves them be, so a deposed leader lingers next to a new one
# (stale reads, lost writes); "crashes" kills leaders often (the "figure 8" histories).
# "membership" removes, adds back and promotes servers (one single-server change at a time).
# "pause" freezes a server (a GC or VM pause): no ticks, no disk, its messages held until it wakes.
FAULT_ACTIONS = [
    *("partition", "isolate", "block", "heal", "crash", "restart", "transfer", "membership"),
    "pause",
]
FAULT_PROFILES: dict[str, tuple[float, list[int]]] = {
    "mixed": (0.08, [3, 4, 1, 2, 2, 2, 1, 1, 1]),
    "partitions": (0.04, [3, 6, 1, 1, 0, 0, 1, 0, 2]),
    "crashes": (0.1, [1, 1, 0, 1, 5, 5, 1, 0, 1]),
    "membership": (0.1, [1, 2, 0, 2, 2, 2, 1, 6, 0]),
}


class Violation(AssertionError):
    """A safety or liveness property failed; the message carries the recent trace."""


# --- the replicated state machine ------------------------------------------------------------


def encode_command(op_id: int, input: tuple) -> bytes:
    return json.dumps([op_id, *input]).encode()


class KVStateMachine:
    """A dict of str -> str, applied from committed entries; its snapshot is JSON."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.applied = 0

    def apply(self, entry: Entry) -> Any:
        self.applied = entry.index
        if entry.type != EntryType.NORMAL or not entry.data:
            return None
        _, kind, key, *args = json.loads(entry.data)
        data = self.data
        if kind == "get":
            return data.get(key)
        if kind == "put":
            data[key] = args[0]
            return None
        if kind == "delete":
            data.pop(key, None)
            return None
        if kind == "cas":
            expected, new = args
            if data.get(key) != expected:
                return False
            data[key] = new
            return True
        raise Violation(f"state machine got an unknown command {entry.data!r} at {entry.index}")

    def digest(self) -> int:
        return hash(tuple(sorted(self.data.items())))

    def snapshot(self) -> bytes:
        return json.dumps([self.applied, self.data], sort_keys=True).encode()

    def restore(self, body: bytes, index: int) -> None:
        applied, data = json.loads(body)
        if applied != index:
            raise Violation(f"snapshot body is for index {applied}, its meta says {index}")
        self.applied, self.data = applied, data


# --- configuration ---------------------------------------------------------------------------


@dataclass
class SimConfig:
    """One seed's scenario. ``for_seed`` varies it by seed so the seeds cover different shapes."""

    seed: int
    nodes: int = 3
    chaos_ticks: int = 150
    clients: int = 3
    keys: int = 3
    fault_profile: str = "mixed"  # a key of FAULT_PROFILES
    client_rate: float = 0.6  # chance per tick an idle client starts an operation
    client_timeout_ticks: int = 15
    snapshot_every: int = 16  # applied entries beyond the log's first index before compacting
    trailing_entries: int = 2  # entries kept behind a snapshot
    liveness_ticks: int = 100  # after healing: elect a leader and commit within this
    catch_up_ticks: int = 100  # then every server applies that proposal within this
    election_tick: int = 10
    pre_vote: bool = True
    check_quorum: bool = True
    max_batch_entries: int = 256
    max_inflight: int = 64
    # A deliberately wrong read path (answer from the server's own state, no ReadIndex, as
    # Consul's "stale" mode does), for the tests that show the checker catches stale reads.
    local_reads: bool = False
    initial_faults: Faults = field(
        default_factory=lambda: Faults(drop_rate=0.05, duplicate_rate=0.02, max_delay=12)
    )

    @classmethod
    def for_seed(cls, seed: int) -> SimConfig:
        rng = random.Random(f"config-{seed}")
        return cls(
            seed=seed,
            nodes=3 if seed % 2 == 0 else 5,
            fault_profile=rng.choice(sorted(FAULT_PROFILES)),
            clients=rng.randint(2, 5),
            keys=rng.randint(1, 4),
            snapshot_every=rng.choice([8, 16, 32]),
            # Safety must not depend on these; without check-quorum a deposed leader lingers.
            pre_vote=rng.random() < 0.75,
            check_quorum=rng.random() < 0.75,
            # Small batches and windows split a new leader's catch-up over many messages.
            max_batch_entries=rng.choice([1, 3, 256]),
            max_inflight=rng.choice([1, 4, 64]),
            trailing_entries=rng.choice([0, 2, 5]),
            initial_faults=Faults(
                drop_rate=rng.choice([0.0, 0.02, 0.1]),
                duplicate_rate=rng.choice([0.0, 0.02, 0.05]),
                min_delay=1,
                max_delay=rng.choice([4, 12, 30]),
            ),
        )


@dataclass
class SimStats:
    ticks: int = 0
    leaders: int = 0  # distinct (term, leader) pairs seen
    crashes: int = 0
    partitions: int = 0
    transfers: int = 0
    pauses: int = 0
    membership_changes: int = 0
    snapshots_taken: int = 0
    snapshots_installed: int = 0
    lost_unpersisted_readies: int = 0
    ops_ok: int = 0
    ops_unknown: int = 0
    reads_by_index: int = 0
    messages: int = 0

    def add(self, other: SimStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


# --- one simulated server --------------------------------------------------------------------


class SimNode:
    def __init__(self, node_id: str) -> None:
        self.id = node_id
        # Durable: survives crash().
        self.log = MemLogStore()
        self.snapshots = MemSnapshotStore()
        # Volatile.
        self.core: RaftCore | None = None
        self.fsm = KVStateMachine()
        self.ready: Ready | None = None  # taken from the core, not yet written
        self.persist_at = 0
        self.proposals: dict[int, tuple[int, bytes]] = {}  # index -> (op id, data)
        self.read_requests: dict[bytes, tuple[int, str]] = {}  # ctx -> (op id, key)
        self.reads_waiting: list[tuple[int, int, str]] = []  # (read index, op id, key)
        self.incoming_snapshots: dict[tuple[int, int], bytes] = {}
        self.last_role: Role | None = None
        self.paused_until = 0
        self.held: list[tuple[Message, bytes | None]] = []  # delivered while paused
        self.last_term = 0
        self.last_commit = 0
        self.checked_leader_term = 0

    @property
    def alive(self) -> bool:
        return self.core is not None

    def crash(self) -> bool:
        """Drop everything volatile; True if a Ready was lost before it was written."""
        lost = self.ready is not None
        self.core = None
        self.fsm = KVStateMachine()
        self.ready = None
        self.proposals.clear()
        self.read_requests.clear()
        self.reads_waiting.clear()
        self.incoming_snapshots.clear()
        self.paused_until = 0
        self.held.clear()
        self.last_role = None
        self.last_commit = 0
        return lost


# --- the cluster -----------------------------------------------------------------------------


class Cluster:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.ids = [f"n{i}" for i in range(1, config.nodes + 1)]
        self.nodes = {i: SimNode(i) for i in self.ids}
        self.bootstrap = Configuration(voters={i: f"sim://{i}" for i in self.ids})
        self.network = Network(random.Random(self.rng.getrandbits(64)), self.ids)
        self.network.faults = config.initial_faults
        self.phase = {i: self.rng.randrange(TICK) for i in self.ids}
        self.fault_rate, self.fault_weights = FAULT_PROFILES[config.fault_profile]
        self.now = 0
        self.history = History()
        self._stamp = 0
        self.stats = SimStats()
        self.trace: deque[tuple[int, str, Any]] = deque(maxlen=300)
        # Global knowledge for the invariants.
        self.leader_of_term: dict[int, str] = {}
        self.entries_seen: dict[tuple[int, int], tuple[bytes, int | None]] = {}
        self.applied: dict[int, tuple[int, bytes, int]] = {}  # index -> (term, data, digest)
        self.commit_term: dict[int, int] = {}  # index -> term of the leader that first committed it
        self.max_committed = 0
        self.applied_commands: set[bytes] = set()
        self.op_command: dict[int, bytes] = {}  # op id -> its log command (not for ReadIndex)
        # Clients: op in flight (op id) or None, and when they give up on it.
        self.client_op: list[int | None] = [None] * config.clients
        self.client_deadline = [0] * config.clients
        self.client_server: list[str | None] = [None] * config.clients
        self.op_client: dict[int, int] = {}
        self.values_written = 0
        for node_id in self.ids:
            self.start(node_id)

    # --- tracing and failing -----------------------------------------------------------------

    def note(self, what: str, detail: Any = None) -> None:
        self.trace.append((self.now, what, detail))

    def fail(self, message: str) -> Violation:
        lines = [f"seed {self.config.seed}, time {self.now} (tick {self.now // TICK}): {message}"]
        lines.append("last events:")
        lines += [f"  {t:>6} {what} {'' if d is None else d}" for t, what, d in self.trace]
        return Violation("\n".join(lines))

    def stamp(self) -> int:
        """History time: a counter, so no two events tie."""
        self._stamp += 1
        return self._stamp

    # --- servers -----------------------------------------------------------------------------

    def start(self, node_id: str) -> None:
        node = self.nodes[node_id]
        config = CoreConfig(
            id=node_id,
            election_tick=self.config.election_tick,
            pre_vote=self.config.pre_vote,
            check_quorum=self.config.check_quorum,
            max_batch_entries=self.config.max_batch_entries,
            max_inflight=self.config.max_inflight,
        )
        rng = random.Random(self.rng.getrandbits(64))
        node.core = RaftCore(config, node.log, rng, bootstrap=self.bootstrap)
        meta = node.log.snapshot_meta()
        node.fsm = KVStateMachine()
        if meta is not None and meta.index > 0:
            node.fsm.restore(b"".join(node.snapshots.open(meta.index)), meta.index)
            self.check_state(node, meta.index)
        node.last_term = node.core.term
        self.note("start", node_id)
        self.observe(node)

    def crash(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if node.crash():
            self.stats.lost_unpersisted_readies += 1
        self.stats.crashes += 1
        self.note("crash", node_id)

    def deliver(self, dst: Hashable, payload: tuple[Message, bytes | None]) -> None:
        node = self.nodes[str(dst)]
        if node.core is None:
            return
        if node.paused_until > self.now:
            node.held.append(payload)
            return
        message, body = payload
        if body is not None and message.snapshot is not None:
            node.incoming_snapshots[(message.snapshot.index, message.snapshot.term)] = body
        self.note("recv", message)
        node.core.step(message)
        self.observe(node)

    def send(self, node: SimNode, message: Message) -> None:
        body = None
        if message.kind == MessageKind.SNAPSHOT:
            meta = message.snapshot
            if meta is None:
                raise self.fail(f"{node.id} sent a SNAPSHOT message without meta: {message!r}")
            body = b"".join(node.snapshots.open(meta.index))
        self.stats.messages += 1
        link_up = self.network.send(node.id, message.dst, (message, body), self.now)
        if node.core is None:
            return
        if not link_up:
            node.core.report_unreachable(message.dst)
        if body is not None:
            # The stream is modelled as one message; the transport reports once it is handed
            # off, or that it could not connect.
            node.core.report_snapshot(message.dst, link_up)

    def take_ready(self, node: SimNode) -> None:
        """If the core has output and no Ready is being written, start writing one."""
        core = node.core
        if core is None or node.ready is not None or not core.has_ready():
            return
        node.ready = rd = core.ready()
        if rd.compaction is not None:
            # Queued at once and not waited for, as the node does (a crash after this keeps it).
            node.log.compact(rd.compaction.upto, rd.compaction.meta)
        node.persist_at = self.now + self.rng.randrange(3)
        if node.persist_at == self.now:
            self.finish_ready(node)

    def finish_ready(self, node: SimNode) -> None:
        """The write completes: persist, check, send, install, apply, answer, advance."""
        rd, core = node.ready, node.core
        assert rd is not None and core is not None
        if rd.snapshot is not None:
            self.install_snapshot_body(node, rd.snapshot)
        node.log.save(rd.hard_state, rd.entries, rd.snapshot)
        self.check_persisted(node, rd)
        for message in rd.messages:
            self.send(node, message)
        if rd.snapshot is not None:
            node.fsm.restore(b"".join(node.snapshots.open(rd.snapshot.index)), rd.snapshot.index)
            self.check_state(node, rd.snapshot.index)
            node.proposals = {i: p for i, p in node.proposals.items() if i > rd.snapshot.index}
            self.stats.snapshots_installed += 1
            self.note("installed snapshot", (node.id, rd.snapshot.index))
        for entry in rd.committed_entries:
            self.apply(node, entry)
        for read_state in rd.read_states:
            request = node.read_requests.pop(read_state.context, None)
            if request is not None:
                node.reads_waiting.append((read_state.index, *request))
        self.serve_reads(node)
        node.ready = None
        core.advance(rd)
        self.maybe_compact(node)
        self.observe(node)

    def install_snapshot_body(self, node: SimNode, meta: SnapshotMeta) -> None:
        body = node.incoming_snapshots.pop((meta.index, meta.term), None)
        if body is None:
            raise self.fail(f"{node.id}: Ready asks to install snapshot {meta} never received")
        sink = node.snapshots.create(meta)
        sink.write(body)
        sink.commit()

    def apply(self, node: SimNode, entry: Entry) -> None:
        if entry.index != node.fsm.applied + 1:
            raise self.fail(
                f"{node.id} applies index {entry.index} after {node.fsm.applied} (gap or repeat)"
            )
        result = node.fsm.apply(entry)
        self.check_applied(node, entry)
        proposal = node.proposals.pop(entry.index, None)
        if proposal is not None:
            op_id, data = proposal
            if data == entry.data:
                self.respond(op_id, result)
            # else: another leader's entry took the index; our proposal's fate stays unknown.

    def serve_reads(self, node: SimNode) -> None:
        if not node.reads_waiting:
            return
        still = []
        for index, op_id, key in node.reads_waiting:
            if index <= node.fsm.applied:
                self.stats.reads_by_index += 1
                self.respond(op_id, node.fsm.data.get(key))
            else:
                still.append((index, op_id, key))
        node.reads_waiting = still

    def maybe_compact(self, node: SimNode) -> None:
        core, fsm = node.core, node.fsm
        if core is None or node.ready is not None:
            return
        if fsm.applied - node.log.first_index() < self.config.snapshot_every:
            return
        try:
            meta = core.snapshot_meta(fsm.applied)
        except CompactedError:
            return  # a snapshot from the leader is arriving and will supersede this one
        sink = node.snapshots.create(meta)
        sink.write(fsm.snapshot())
        meta = sink.commit()
        upto = min(fsm.applied - self.config.trailing_entries, node.log.last_index())
        core.compact(max(upto, 1), meta)
        self.stats.snapshots_taken += 1
        self.note("compact", (node.id, fsm.applied))

    # --- invariants --------------------------------------------------------------------------

    def observe(self, node: SimNode) -> None:
        """After any input: check what can be seen from outside, then collect its output."""
        core = node.core
        if core is None:
            return
        term, role = core.term, core.role
        if term < node.last_term:
            raise self.fail(f"{node.id}: term went back from {node.last_term} to {term}")
        node.last_term = term
        if role == Role.LEADER:
            holder = self.leader_of_term.setdefault(term, node.id)
            if holder != node.id:
                raise self.fail(f"election safety: {holder} and {node.id} both lead term {term}")
            if node.last_role != Role.LEADER:
                self.stats.leaders += 1
                self.note("leader", (node.id, term))
            commit = core.commit_index
            if commit > self.max_committed:
                for index in range(self.max_committed + 1, commit + 1):
                    self.commit_term[index] = term
                self.max_committed = commit
        node.last_role = role
        commit = core.commit_index
        if commit < node.last_commit:
            raise self.fail(f"{node.id}: commit went back from {node.last_commit} to {commit}")
        node.last_commit = commit
        self.take_ready(node)

    def check_persisted(self, node: SimNode, rd: Ready) -> None:
        """Log matching, checked on every write: an (index, term) names one entry and one prefix.

        Every entry any log ever holds passes through here, so by induction two logs that agree
        on an (index, term) agree on everything before it.
        """
        log = node.log
        for entry in rd.entries:
            try:
                prev_term: int | None = log.term(entry.index - 1) if entry.index > 1 else 0
            except (CompactedError, UnavailableError):
                prev_term = None
            key = (entry.index, entry.term)
            seen = self.entries_seen.get(key)
            if seen is None:
                self.entries_seen[key] = (entry.data, prev_term)
                continue
            data, seen_prev = seen
            if data != entry.data or (
                prev_term is not None and seen_prev is not None and prev_term != seen_prev
            ):
                raise self.fail(
                    f"log matching: {node.id} holds a different entry or prefix at {key}: "
                    f"data {entry.data!r} vs {data!r}, previous term {prev_term} vs {seen_prev}"
                )
        core = node.core
        if (
            core is not None
            and core.role == Role.LEADER
            and node.checked_leader_term != core.term
            and any(e.term == core.term for e in rd.entries)
        ):
            node.checked_leader_term = core.term
            self.check_leader_complete(node, core.term)

    def check_leader_complete(self, node: SimNode, term: int) -> None:
        """Leader completeness: a leader of ``term`` holds every entry committed in earlier terms.

        Checked when its first entry of its own term is written (everything before it is then in
        the durable log).
        """
        log = node.log
        first, last = log.first_index(), log.last_index()
        for index, commit_term in self.commit_term.items():
            if commit_term >= term or index < first:
                continue
            entry_term = self.applied[index][0] if index in self.applied else None
            if index > last:
                raise self.fail(
                    f"leader completeness: {node.id} leads term {term} with log ending at {last} "
                    f"but index {index} was committed in term {commit_term}"
                )
            if entry_term is not None and log.term(index) != entry_term:
                raise self.fail(
                    f"leader completeness: {node.id} (term {term}) has term {log.term(index)} at "
                    f"{index}, committed with term {entry_term}"
                )

    def check_applied(self, node: SimNode, entry: Entry) -> None:
        """State-machine safety: every server applies the same entry at an index."""
        digest = node.fsm.digest()
        known = self.applied.get(entry.index)
        if known is None:
            self.applied[entry.index] = (entry.term, entry.data, digest)
            self.applied_commands.add(entry.data)
            return
        if known[0] != entry.term or known[1] != entry.data or known[2] != digest:
            raise self.fail(
                f"state-machine safety: {node.id} applied ({entry.term}, {entry.data!r}) at "
                f"{entry.index}; another server applied ({known[0]}, {known[1]!r})"
            )

    def check_state(self, node: SimNode, index: int) -> None:
        known = self.applied.get(index)
        if known is not None and known[2] != node.fsm.digest():
            raise self.fail(f"{node.id}: state restored at {index} differs from the applied state")

    # --- clients -----------------------------------------------------------------------------

    def respond(self, op_id: int, output: Any) -> None:
        try:
            self.history.respond(op_id, output, self.stamp())
        except ValueError:
            return  # answered already (a duplicate read state)
        self.stats.ops_ok += 1
        client = self.op_client.get(op_id)
        if client is not None and self.client_op[client] == op_id:
            self.client_op[client] = None

    def pick_server(self) -> SimNode | None:
        """The server a client talks to: whoever a random live server says leads, else it."""
        alive = [n for n in self.nodes.values() if n.alive]
        if not alive:
            return None
        asked = self.rng.choice(alive)
        hint = asked.core.leader_id if asked.core is not None else None
        if hint is not None and self.nodes[hint].alive and self.rng.random() < 0.9:
            return self.nodes[hint]
        return asked

    def start_op(self, client: int) -> None:
        # Clients mostly stick to the server they last used (as real ones cache the leader), so
        # a deposed leader that has not noticed yet keeps getting asked, while other calls go
        # to whoever a random server names as leader.
        sticky = self.client_server[client]
        if sticky is not None and self.rng.random() < 0.7:
            node: SimNode | None = self.nodes[sticky]
        else:
            node = self.pick_server()
        if node is None or node.core is None:
            self.client_server[client] = None
            return
        self.client_server[client] = node.id
        if node.paused_until > self.now:
            return  # it does not answer; the client tries again later
        key = f"k{self.rng.randrange(self.config.keys)}"
        roll = self.rng.random()
        self.values_written += 1
        value = f"v{self.values_written}"
        input: tuple
        if self.config.local_reads and roll < 0.45:
            op_id = self.history.invoke(client, ("get", key), self.stamp())
            self.op_client[op_id] = client
            self.respond(op_id, node.fsm.data.get(key))
            return
        if roll < 0.25:
            input = ("get", key)
            ctx = f"r{len(self.history)}".encode()
            try:
                node.core.read_index(ctx)
            except NotLeaderError as exc:
                self.client_server[client] = exc.leader_hint
                return
            op_id = self.history.invoke(client, input, self.stamp())
            node.read_requests[ctx] = (op_id, key)
        else:
            if roll < 0.45:
                input = ("get", key)
            elif roll < 0.8:
                input = ("put", key, value)
            elif roll < 0.9:
                input = ("delete", key)
            else:
                current = node.fsm.data.get(key)  # a guess: often right, sometimes stale
                input = ("cas", key, current, value)
            data = encode_command(len(self.history), input)
            try:
                index = node.core.propose(data)
            except NotLeaderError as exc:
                self.client_server[client] = exc.leader_hint
                return
            op_id = self.history.invoke(client, input, self.stamp())
            node.proposals[index] = (op_id, data)
            self.op_command[op_id] = data
        self.op_client[op_id] = client
        self.client_op[client] = op_id
        self.client_deadline[client] = self.now + self.config.client_timeout_ticks * TICK
        self.note("op", (node.id, op_id, input))
        self.observe(node)

    def run_clients(self) -> None:
        for client in range(self.config.clients):
            op = self.client_op[client]
            if op is not None and self.now >= self.client_deadline[client]:
                self.client_op[client] = None  # gives up; the answer stays unknown
                self.client_server[client] = None
                op = None
            if op is None and self.rng.random() < self.config.client_rate:
                self.start_op(client)

    # --- faults ------------------------------------------------------------------------------

    def leader(self) -> SimNode | None:
        """The live, awake leader of the highest term, if any."""
        best, best_term = None, -1
        for node in self.nodes.values():
            core = node.core
            if node.paused_until > self.now:
                continue
            if core is not None and core.role == Role.LEADER and core.term > best_term:
                best, best_term = node, core.term
        return best

    def inject_fault(self) -> None:
        rng, net = self.rng, self.network
        alive = [i for i in self.ids if self.nodes[i].alive]
        dead = [i for i in self.ids if not self.nodes[i].alive]
        action = rng.choices(FAULT_ACTIONS, self.fault_weights)[0]
        if action == "partition":
            order = self.ids[:]
            rng.shuffle(order)
            cut = rng.randrange(1, len(order))
            net.partition(order[:cut], order[cut:])
            self.stats.partitions += 1
        elif action == "isolate":
            leader = self.leader()
            net.isolate(leader.id if leader is not None else rng.choice(self.ids))
            self.stats.partitions += 1
        elif action == "block":
            src, dst = rng.sample(self.ids, 2)
            net.block(src, dst)
        elif action == "heal":
            net.heal()
        elif action == "crash" and len(dead) <= len(self.ids) // 2 and alive:
            leader = self.leader()  # half the time the leader, to force elections
            self.crash(leader.id if leader and rng.random() < 0.5 else rng.choice(alive))
        elif action == "restart" and dead:
            self.start(rng.choice(dead))
        elif action == "pause" and alive:
            leader = self.leader()  # half the time the leader: it wakes up deposed
            paused = leader.id if leader and rng.random() < 0.5 else rng.choice(alive)
            self.nodes[paused].paused_until = self.now + rng.randint(5, 40) * TICK
            self.stats.pauses += 1
        elif action == "membership":
            self.change_membership()
        elif action == "transfer":
            leader = self.leader()
            if leader is not None and leader.core is not None:
                voters = [i for i in sorted(leader.core.configuration.voters) if i != leader.id]
                if not voters:
                    return
                leader.core.transfer_leadership(rng.choice(voters))
                self.stats.transfers += 1
                self.observe(leader)
        self.note("fault", action)

    def change_membership(self) -> None:
        """One single-server change at the leader: bring back a missing server (as a learner
        or straight as a voter), promote a learner, or remove a member (the leader too)."""
        leader = self.leader()
        if (
            leader is None
            or leader.core is None
            or not (self.config.pre_vote or self.config.check_quorum)
        ):
            # Without either, a removed server that missed its removal keeps calling
            # elections and deposes leader after leader (as in etcd): no liveness to check.
            return
        rng, conf = self.rng, leader.core.configuration
        missing = [i for i in self.ids if i not in conf.voters and i not in conf.learners]
        if missing and rng.random() < 0.6:
            kind = rng.choice([ConfigChangeKind.ADD_LEARNER, ConfigChangeKind.ADD_VOTER])
            change = ConfigChange(kind, rng.choice(missing), "sim://")
        elif conf.learners and rng.random() < 0.7:
            change = ConfigChange(ConfigChangeKind.PROMOTE, rng.choice(sorted(conf.learners)))
        elif len(conf.voters) > 2:
            members = sorted([*conf.voters, *conf.learners])
            change = ConfigChange(ConfigChangeKind.REMOVE, rng.choice(members))
        else:
            return
        try:
            leader.core.propose_config(change)
        except (ConfigChangeError, NotLeaderError):
            return  # another change is still pending, or the leader's first entry is not in
        self.stats.membership_changes += 1
        self.note("membership", change)
        self.observe(leader)

    # --- the main loop -----------------------------------------------------------------------

    def step_time(self, client_traffic: bool, faults: bool) -> None:
        """Advance the clock by one unit and do everything due in it."""
        now = self.now
        for node in self.nodes.values():
            if node.held and node.paused_until <= now:
                held, node.held = node.held, []
                for payload in held:
                    self.deliver(node.id, payload)
        for _, dst, payload in self.network.deliver(now):
            self.deliver(dst, payload)
        for node in self.nodes.values():
            if (
                node.ready is not None
                and node.persist_at <= now
                and node.core is not None
                and node.paused_until <= now
            ):
                self.finish_ready(node)
        phase = now % TICK
        for node_id in self.ids:
            node = self.nodes[node_id]
            if node.core is not None and self.phase[node_id] == phase and node.paused_until <= now:
                node.core.tick()
                self.observe(node)
        if phase == 0:
            self.stats.ticks += 1
            if faults and self.rng.random() < self.fault_rate:
                self.inject_fault()
            if client_traffic:
                self.run_clients()
        self.now += 1

    def run_until(self, done: Callable[[], bool], ticks: int, **kw: bool) -> bool:
        end = self.now + ticks * TICK
        while self.now < end:
            if done():
                return True
            self.step_time(**kw)
        return done()

    def run(self) -> SimStats:
        """Chaos, then heal and demand progress, then check the history. Raises Violation."""
        config = self.config
        self.run_until(lambda: False, config.chaos_ticks, client_traffic=True, faults=True)
        self.heal_all()
        probe_node, probe_index = self.commit_probe()
        self.catch_up(probe_node, probe_index)
        self.check_history()
        return self.stats

    def heal_all(self) -> None:
        self.network.heal()
        self.network.faults = Faults(min_delay=1, max_delay=5)
        for node_id in self.ids:
            self.nodes[node_id].paused_until = min(self.nodes[node_id].paused_until, self.now)
            if not self.nodes[node_id].alive:
                self.start(node_id)
        self.note("healed")

    def commit_probe(self) -> tuple[SimNode, int]:
        """After healing: a leader is elected and a proposal commits within the bound."""
        end = self.now + self.config.liveness_ticks * TICK
        data = encode_command(-1, ("put", "probe", "probe"))
        probe: tuple[SimNode, int, int] | None = None  # node, index, term
        while self.now < end:
            if probe is not None:
                node, index, term = probe
                if node.fsm.applied >= index and self.applied[index][1] == data:
                    return node, index
                leader = self.leader()
                if (
                    node.fsm.applied >= index
                    or node.core is None
                    or node.core.term != term
                    or (leader is not None and leader is not node)
                ):
                    probe = None  # lost, or a newer leader is up: propose again
            leader = self.leader()
            if probe is None and leader is not None and leader.core is not None:
                with contextlib.suppress(NotLeaderError):
                    probe = (leader, leader.core.propose(data), leader.core.term)
                self.observe(leader)
            self.step_time(client_traffic=False, faults=False)
        leader = self.leader()
        raise self.fail(
            f"liveness: no proposal committed within {self.config.liveness_ticks} ticks of "
            f"healing (leader now: {leader.id if leader else None})"
        )

    def catch_up(self, probe_node: SimNode, index: int) -> None:
        """Every member then applies the probe (a removed server is not expected to)."""
        assert probe_node.core is not None
        conf = probe_node.core.configuration
        nodes = [n for n in self.nodes.values() if n.id in conf.voters or n.id in conf.learners]
        if not self.run_until(
            lambda: all(n.fsm.applied >= index for n in nodes),
            self.config.catch_up_ticks,
            client_traffic=False,
            faults=False,
        ):
            behind = {n.id: n.fsm.applied for n in nodes if n.fsm.applied < index}
            raise self.fail(f"liveness: servers {behind} did not apply index {index} in time")
        digests = {n.fsm.digest() for n in nodes if n.fsm.applied == index}
        if len(digests) > 1:
            raise self.fail(f"servers at index {index} disagree on the state")

    def check_history(self) -> None:
        """The clients' history must be linearizable.

        An unanswered command that no server ever applied had no effect and nobody saw it, so
        it is left out (exactly equivalent, and it spares the checker most unknown outcomes);
        one that was applied stays in with an unknown outcome.
        """
        ops = [
            op
            for op_id, op in enumerate(self.history.operations())
            if op.output is not UNKNOWN or self.op_command.get(op_id, b"") in self.applied_commands
        ]
        self.stats.ops_unknown += sum(1 for op in ops if op.output is UNKNOWN)
        result = check(ops)
        if result.ok is not True:
            raise self.fail("history is not linearizable:\n" + result.explain())


def simulate(seed: int, chaos_ticks: int | None = None) -> SimStats:
    """Run one seed's scenario; raises Violation with a trace when a property fails."""
    config = SimConfig.for_seed(seed)
    if chaos_ticks is not None:
        config.chaos_ticks = chaos_ticks
    return Cluster(config).run()
