"""Table-driven unit tests of the sans-I/O Raft core (pykvs/raft/core.py).

Cores are wired through ``Cluster``, an in-memory network in the spirit of etcd's raft tests:
every Ready is saved to a MemLogStore before its messages are delivered, committed entries are
applied to a list (the "FSM"), and links can be cut or messages filtered by kind.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import msgpack
import pytest

from pykvs.raft.core import (
    Compaction,
    ConfigChange,
    ConfigChangeError,
    ConfigChangeKind,
    CoreConfig,
    NotLeaderError,
    RaftCore,
    ReadState,
    Ready,
    Role,
    decode_configuration,
    encode_configuration,
)
from pykvs.raft.interfaces import CompactedError, UnavailableError
from pykvs.raft.memstore import MemLogStore, MemSnapshotStore
from pykvs.raft.messages import Message, MessageKind
from pykvs.raft.progress import ProgressState
from pykvs.raft.raftlog import RaftLog
from pykvs.raft.types import Configuration, Entry, EntryType, HardState, SnapshotMeta

K = MessageKind


class Node:
    """A core plus what its driver would own: durable store, snapshot store, FSM."""

    def __init__(self, cfg: CoreConfig, bootstrap: Configuration | None, seed: int) -> None:
        self.cfg = cfg
        self.store = MemLogStore()
        self.snapshots = MemSnapshotStore()
        self.seed = seed
        self.applied: list[Entry] = []  # the FSM: every applied entry, in order
        self.read_states: list[ReadState] = []
        self.core = RaftCore(cfg, self.store, random.Random(seed), bootstrap)

    def restart(self) -> None:
        """Crash: keep the durable store, lose everything volatile, rebuild the FSM."""
        self.applied = self._restore_fsm()
        self.read_states = []
        self.seed += 1000
        self.core = RaftCore(self.cfg, self.store, random.Random(self.seed))

    def _restore_fsm(self) -> list[Entry]:
        meta = self.snapshots.latest()
        if meta is None:
            return []
        body = b"".join(self.snapshots.open(meta.index))
        return [Entry.from_wire(w) for w in msgpack.unpackb(body)]

    def take_snapshot(self, trailing: int = 0) -> SnapshotMeta:
        index = self.core.applied_index
        meta = self.core.snapshot_meta(index)
        sink = self.snapshots.create(meta)
        sink.write(msgpack.packb([e.to_wire() for e in self.applied if e.index <= index]))
        meta = sink.commit()
        self.core.compact(max(0, index - trailing), meta)
        assert not self.process()  # the Ready that writes the compaction, and nothing else
        return meta

    def process(self) -> list[Message]:
        """One driver turn: persist, then hand back the messages, install and apply."""
        out: list[Message] = []
        while self.core.has_ready():
            rd = self.core.ready()
            self.store.save(rd.hard_state, rd.entries, rd.snapshot)
            if rd.compaction is not None:
                self.store.compact(rd.compaction.upto, rd.compaction.meta)
            out.extend(rd.messages)
            if rd.snapshot is not None:
                self.applied = self._restore_fsm()
                assert self.snapshots.latest() == rd.snapshot
            self.applied.extend(rd.committed_entries)
            self.read_states.extend(rd.read_states)
            self.core.advance(rd)
        return out


def config_of(ids: str) -> Configuration:
    return Configuration({i: f"addr-{i}" for i in ids})


def preset(store: MemLogStore, ids: str, terms: list[int], term: int, commit: int = 1) -> None:
    """Give ``store`` a log: the bootstrap configuration at 1, then one entry per term given."""
    entries = [Entry(1, 1, EntryType.CONFIG, encode_configuration(config_of(ids)))]
    entries += [Entry(i, t, EntryType.NORMAL, b"e%d" % i) for i, t in enumerate(terms, start=2)]
    store.save(HardState(term, None, commit), entries)


class Cluster:
    def __init__(
        self,
        ids: str,
        seed: int = 1,
        logs: dict[str, tuple[list[int], int]] | None = None,
        **cfg: object,
    ) -> None:
        """Servers named by the letters of ``ids``; ``logs`` presets some logs: id -> (entry
        terms after the bootstrap entry, current term). Others are bootstrapped normally."""
        self.nodes: dict[str, Node] = {}
        for n, sid in enumerate(ids):
            node = self.add_node(sid, None, seed * 100 + n, **cfg)
            terms, term = (logs or {}).get(sid, ([], 1))
            preset(node.store, ids, terms, term)
            node.restart()
        self.cut: set[tuple[str, str]] = set()
        self.drop: Callable[[Message], bool] = lambda m: False
        self.sent: list[Message] = []  # every message delivered, for assertions

    def add_node(self, sid: str, bootstrap: Configuration | None, seed: int, **cfg: object) -> Node:
        node = Node(CoreConfig(id=sid, **cfg), bootstrap, seed)  # type: ignore[arg-type]
        self.nodes[sid] = node
        return node

    def __getitem__(self, sid: str) -> RaftCore:
        return self.nodes[sid].core

    def isolate(self, sid: str) -> None:
        for other in self.nodes:
            if other != sid:
                self.cut |= {(sid, other), (other, sid)}

    def heal(self) -> None:
        self.cut.clear()

    def stabilize(self, max_rounds: int = 200) -> None:
        """Deliver messages until no node has anything more to say."""
        for _ in range(max_rounds):
            pending = [m for node in self.nodes.values() for m in node.process()]
            if not pending:
                return
            self.deliver(pending)
        raise AssertionError("cluster did not quiesce")

    def deliver(self, msgs: list[Message]) -> None:
        for m in msgs:
            if (m.src, m.dst) in self.cut or m.dst not in self.nodes or self.drop(m):
                continue
            self.sent.append(m)
            if m.kind is K.SNAPSHOT:
                self._ship_snapshot(m)
            self.nodes[m.dst].core.step(m)

    def _ship_snapshot(self, m: Message) -> None:
        """What the drivers do around a SNAPSHOT message: stream the body before stepping it."""
        assert m.snapshot is not None
        src, dst = self.nodes[m.src], self.nodes[m.dst]
        sink = dst.snapshots.create(m.snapshot)
        for chunk in src.snapshots.open(m.snapshot.index):
            sink.write(chunk)
        assert sink.commit() == m.snapshot
        src.core.report_snapshot(m.dst, True)

    def tick(self, sid: str, n: int = 1) -> None:
        for _ in range(n):
            self[sid].tick()

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for node in self.nodes.values():
                node.core.tick()
            self.stabilize()

    def campaign(self, sid: str) -> None:
        """Make ``sid`` time out (all others stay quiet) and run the election to the end."""
        core = self[sid]
        for _ in range(3 * core._cfg.election_tick):
            core.tick()
            if core.role is not Role.FOLLOWER:
                break
        self.stabilize()

    def leader(self) -> RaftCore:
        leaders = [n.core for n in self.nodes.values() if n.core.role is Role.LEADER]
        assert len(leaders) == 1, [
            (n.core.id, n.core.role, n.core.term) for n in self.nodes.values()
        ]
        return leaders[0]

    def applied_data(self, sid: str) -> list[bytes]:
        return [e.data for e in self.nodes[sid].applied if e.type is EntryType.NORMAL]


def values(n: int) -> list[bytes]:
    return [b"v%d" % i for i in range(n)]


def elected(ids: str = "abc", writes: int = 0, **cfg: object) -> Cluster:
    """A cluster where "a" won an election and committed ``values(writes)``."""
    c = Cluster(ids, **cfg)
    c.campaign("a")
    for data in values(writes):
        c["a"].propose(data)
    c.stabilize()
    return c


def voters(core: RaftCore) -> set[str]:
    return set(core.configuration.voters)


# -- elections ---------------------------------------------------------------------------------


def test_bootstrap_commits_the_configuration_everywhere() -> None:
    nodes = [Node(CoreConfig(id=sid), config_of("abc"), seed=n) for n, sid in enumerate("abc")]
    for node in nodes:
        node.process()
        assert node.store.hard_state() == HardState(term=1, vote=None, commit=1)
        assert [e.type for e in node.applied] == [EntryType.CONFIG]
        assert decode_configuration(node.applied[0].data) == config_of("abc")
        assert voters(node.core) == {"a", "b", "c"}


def test_a_server_without_configuration_never_campaigns() -> None:
    node = Node(CoreConfig(id="z"), None, seed=1)
    for _ in range(100):
        node.core.tick()
    assert node.core.role is Role.FOLLOWER and node.core.term == 0 and not node.process()


def test_single_node_elects_itself_and_commits() -> None:
    c = elected("a")
    a = c["a"]
    assert a.role is Role.LEADER and a.term == 2
    idx = a.propose(b"x")
    c.stabilize()
    assert a.commit_index == idx
    assert c.applied_data("a") == [b"x"]


@pytest.mark.parametrize("pre_vote", [True, False])
def test_a_restarted_single_voter_leads_at_once_without_an_election_timeout(
        pre_vote: bool) -> None:
    c = elected("a", writes=3, pre_vote=pre_vote)
    node = c.nodes["a"]
    term = node.core.term
    node.restart()
    a = node.core
    # No tick yet: nobody else can vote or lead, so there is no timeout to wait for.
    assert a.role is Role.LEADER and a.term == term + 1 and a.leader_id == "a"
    c.stabilize()
    assert c.applied_data("a") == values(3)  # its no-op committed everything before it
    assert not c.sent  # no messages: it asked no one
    idx = a.propose(b"after")
    c.stabilize()
    assert a.commit_index == idx and c.applied_data("a")[-1] == b"after"


def test_a_single_server_bootstrapping_leads_at_once() -> None:
    node = Node(CoreConfig(id="a"), Configuration({"a": "addr-a"}), seed=1)
    assert node.core.role is Role.LEADER
    node.process()
    assert node.core.commit_index == node.core.last_index == 2  # configuration, no-op


@pytest.mark.parametrize("pre_vote", [True, False])
def test_a_restarted_member_of_several_voters_still_waits_its_election_timeout(
        pre_vote: bool) -> None:
    c = elected("abc", writes=2, pre_vote=pre_vote)
    for sid in "abc":
        c.nodes[sid].restart()
    a = c["a"]
    assert a.role is Role.FOLLOWER and not c.nodes["a"].process()
    c.tick("a", a._cfg.election_tick - 1)  # below the shortest randomized timeout
    assert a.role is Role.FOLLOWER and not c.nodes["a"].process()
    c.campaign("a")
    assert c.leader() is a
    assert any(m.kind is (K.PRE_VOTE if pre_vote else K.VOTE) for m in c.sent)


def test_a_follower_left_as_the_sole_voter_campaigns_at_its_next_tick() -> None:
    c = elected("ab")
    c.drop = lambda m: m.kind is K.TIMEOUT_NOW  # no handover: b must notice on its own
    index = c["a"].propose_config(ConfigChange(ConfigChangeKind.REMOVE, "a"))
    c.stabilize()
    b = c["b"]
    assert c["a"].commit_index >= index and c["a"].role is Role.FOLLOWER
    assert voters(b) == {"b"} and b.role is Role.FOLLOWER
    c.tick("b")
    assert b.role is Role.LEADER
    b.propose(b"after")
    c.stabilize()
    assert c.applied_data("b")[-1] == b"after"


@pytest.mark.parametrize("pre_vote", [True, False])
def test_election_makes_one_leader_and_commits_a_noop_of_its_term(pre_vote: bool) -> None:
    c = elected(pre_vote=pre_vote)
    a = c.leader()
    assert a.id == "a" and a.term == 2
    for sid in "bc":
        assert c[sid].role is Role.FOLLOWER and c[sid].leader_id == "a" and c[sid].term == 2
    # The no-op of term 2 is the first entry of the term, and it commits everywhere.
    for node in c.nodes.values():
        last = node.applied[-1]
        assert (last.index, last.term, last.type) == (2, 2, EntryType.NOOP)
    kinds = {m.kind for m in c.sent}
    assert (K.PRE_VOTE in kinds) is pre_vote and K.VOTE in kinds


def test_election_timeouts_are_randomized_within_one_to_two_timeouts() -> None:
    seen = set()
    for seed in range(40):
        node = Node(CoreConfig(id="a", election_tick=10, pre_vote=False), None, seed)
        preset(node.store, "abc", [], term=1)
        node.restart()
        ticks = 0
        while node.core.role is Role.FOLLOWER:
            node.core.tick()
            ticks += 1
            assert ticks < 20
        seen.add(ticks)
    assert min(seen) >= 10 and len(seen) > 3


# (voter's last log term, last index, vote, leader) x (request) -> granted
# voter's log and vote (term 3), the request's last index/term, granted (vote, pre-vote)
VOTE_TABLE = [
    # candidate log more up to date by term
    (dict(last_terms=[1, 1], vote=None), dict(index=2, log_term=2), (True, True)),
    # same last term, longer or equal log
    (dict(last_terms=[1, 1], vote=None), dict(index=3, log_term=1), (True, True)),
    (dict(last_terms=[1, 1], vote=None), dict(index=4, log_term=1), (True, True)),
    # same last term, shorter log
    (dict(last_terms=[1, 1], vote=None), dict(index=2, log_term=1), (False, False)),
    # older last term, however long
    (dict(last_terms=[1, 3], vote=None), dict(index=9, log_term=2), (False, False)),
    # already voted for someone else in this term (a pre-vote is for the next term: granted)
    (dict(last_terms=[], vote="c"), dict(index=5, log_term=1), (False, True)),
    # already voted for this candidate
    (dict(last_terms=[], vote="b"), dict(index=5, log_term=1), (True, True)),
]


@pytest.mark.parametrize("kind", [K.VOTE, K.PRE_VOTE])
@pytest.mark.parametrize(("voter", "request_", "grants"), VOTE_TABLE)
def test_vote_granting(kind: MessageKind, voter: dict, request_: dict, grants: tuple) -> None:
    granted = grants[0] if kind is K.VOTE else grants[1]
    node = Node(CoreConfig(id="a"), None, seed=1)
    preset(node.store, "abc", voter["last_terms"], term=3)
    node.store.save(HardState(3, voter["vote"], 1), [])
    node.restart()
    term = 3 if kind is K.VOTE else 4  # a pre-vote proposes the next term
    node.core.step(Message(kind, term, "b", "a", **request_))
    (resp,) = node.process()
    assert resp.kind is (K.VOTE_RESP if kind is K.VOTE else K.PRE_VOTE_RESP)
    assert resp.reject is not granted
    # A pre-vote never changes the voter's term or vote.
    if kind is K.PRE_VOTE:
        assert node.core.term == 3 and node.core.vote == voter["vote"]
    elif granted:
        assert node.store.hard_state().vote == "b"


def test_pre_vote_keeps_an_isolated_server_from_inflating_its_term() -> None:
    c = elected()
    c.isolate("c")
    for _ in range(60):
        c.tick_all()
    assert c["c"].term == 2 and c["c"].role is Role.PRE_CANDIDATE
    c.heal()
    c.tick_all(3)
    assert c.leader().id == "a" and c["a"].term == 2  # the returning server disrupted nothing


def test_without_pre_vote_a_returning_server_forces_a_new_term() -> None:
    c = elected(pre_vote=False, check_quorum=False)
    c.isolate("c")
    for _ in range(60):
        c.tick_all()
    isolated_term = c["c"].term
    assert isolated_term >= 4
    c.heal()
    c.tick_all(30)
    assert c.leader().term >= isolated_term


def test_check_quorum_leader_steps_down_when_it_cannot_reach_a_quorum() -> None:
    c = elected()
    c.isolate("a")
    c.tick("a", c["a"]._cfg.election_tick)
    assert c["a"].role is Role.LEADER  # one timeout: the first check resets activity
    c.tick("a", c["a"]._cfg.election_tick)
    assert c["a"].role is Role.FOLLOWER and c["a"].leader_id is None


def test_without_check_quorum_an_isolated_leader_stays_leader() -> None:
    c = elected(check_quorum=False)
    c.isolate("a")
    c.tick("a", 100)
    assert c["a"].role is Role.LEADER


def test_followers_in_a_leader_lease_ignore_vote_requests() -> None:
    c = elected()
    b = c["b"]
    b.step(Message(K.VOTE, 9, "c", "b", index=99, log_term=9))
    assert b.term == 2 and not c.nodes["b"].process()  # ignored: no answer, no new term
    # A vote caused by a leadership transfer overrides the lease.
    b.step(Message(K.VOTE, 9, "c", "b", index=99, log_term=9, context=b"transfer"))
    (resp,) = c.nodes["b"].process()
    assert b.term == 9 and not resp.reject


def test_a_stale_leader_learns_the_new_term_from_an_append_answer() -> None:
    c = Cluster("abc", check_quorum=False)  # so "a" stays leader while cut off
    c.campaign("a")
    c.isolate("a")
    c.campaign("b")
    assert c["b"].role is Role.LEADER and c["b"].term == 3
    c.heal()
    c.tick("a")  # a heartbeat of term 2, answered with term 3
    c.stabilize()
    assert c.leader().id == "b" and c["a"].role is Role.FOLLOWER and c["a"].term == 3


def test_candidate_that_loses_returns_to_follower() -> None:
    c = Cluster("abc", pre_vote=False, logs={"b": ([2, 2], 2), "c": ([2, 2], 2)})
    c.campaign("a")  # a's log is behind: both refuse
    assert c["a"].role is Role.FOLLOWER and c["a"].term == 2 and c["a"].vote == "a"


# -- replication and commit --------------------------------------------------------------------


def test_proposals_replicate_and_apply_in_order_on_every_server() -> None:
    c = elected(writes=20)
    expected = values(20)
    for sid in "abc":
        assert c.applied_data(sid) == expected
    with pytest.raises(NotLeaderError) as err:
        c["b"].propose(b"nope")
    assert err.value.leader_hint == "a"


@pytest.mark.parametrize(
    ("acked", "expected_commit"),
    [
        (2, 1),  # entry 2 is from term 2: replicas of an old term's entry are not counted
        (3, 3),  # the leader's no-op (term 4) on a majority commits it and everything before
    ],
)
def test_commit_counts_only_current_term_entries(acked: int, expected_commit: int) -> None:
    node = Node(CoreConfig(id="a", pre_vote=False), None, seed=1)
    preset(node.store, "abc", [2], term=3)
    node.restart()
    node.core.tick()
    while node.core.role is not Role.CANDIDATE:
        node.core.tick()
    node.core.step(Message(K.VOTE_RESP, 4, "b", "a"))
    assert node.core.role is Role.LEADER and node.core.last_index == 3
    node.process()
    node.core.step(Message(K.APPEND_RESP, 4, "b", "a", index=acked))
    node.process()
    assert node.core.commit_index == expected_commit


@pytest.mark.parametrize(
    ("follower_terms", "max_rejects"),
    [
        ([2] * 40, 2),  # a longer divergent tail of an older term
        ([2] * 5, 2),  # a shorter divergent tail
        ([], 1),  # simply behind
        ([3] * 10 + [2] * 30, 2),  # agrees for a while, then diverges
        ([3] * 30 + [5] * 3, 2),  # ahead with entries of a later, failed term
    ],
)
def test_fast_backtracking_needs_one_round_trip_per_term(
    follower_terms: list[int], max_rejects: int
) -> None:
    leader_terms = [3] * 30 + [4] * 5
    c = Cluster(
        "abc", pre_vote=False, logs={"a": (leader_terms, 6), "c": (leader_terms, 6),
                                     "b": (follower_terms, 6)},
    )  # fmt: skip
    c.cut |= {("a", "b"), ("b", "a")}
    c.campaign("a")
    c.heal()
    c.tick_all(2)
    rejects = [m for m in c.sent if m.kind is K.APPEND_RESP and m.src == "b" and m.reject]
    assert len(rejects) <= max_rejects
    a_log = c.nodes["a"].store.entries(1, c["a"].last_index + 1)
    assert c.nodes["b"].store.entries(1, c["b"].last_index + 1) == a_log


@pytest.mark.parametrize(
    ("ours", "index", "term", "expected"),
    [
        ([1, 3, 3, 5, 5], 6, 4, (4, 3)),
        ([1, 3, 3, 5, 5], 6, 5, (6, 5)),
        ([1, 3, 3, 5, 5], 6, 2, (2, 1)),
        ([1, 3, 3, 5, 5], 6, 0, (0, 0)),
        ([1, 3, 3, 5, 5], 3, 9, (3, 3)),
    ],
)
def test_find_conflict_by_term(ours: list[int], index: int, term: int, expected: tuple) -> None:
    store = MemLogStore()
    preset(store, "a", ours, term=5)
    assert RaftLog(store).find_conflict_by_term(index, term) == expected


def leader_with_replicating_follower(**cfg: object) -> Cluster:
    c = elected("ab", writes=1, **cfg)
    pr = c["a"].progress("b")
    assert pr is not None and pr.state is ProgressState.REPLICATE
    return c


def appends_to(msgs: list[Message], dst: str) -> list[Message]:
    return [m for m in msgs if m.kind is K.APPEND and m.dst == dst]


def test_pipelining_keeps_at_most_max_inflight_appends_unacknowledged() -> None:
    c = leader_with_replicating_follower(max_inflight=4, max_batch_entries=1)
    a = c["a"]
    for i in range(10):
        a.propose(b"p%d" % i)
    first = appends_to(c.nodes["a"].process(), "b")
    assert [len(m.entries) for m in first] == [1, 1, 1, 1]  # sent without waiting: a pipeline
    assert a.progress("b").inflights.full()  # type: ignore[union-attr]
    a.propose(b"one more")
    assert appends_to(c.nodes["a"].process(), "b") == []  # the window is full
    c.deliver(first)
    c.stabilize()
    assert c.applied_data("b")[-11:] == [b"p%d" % i for i in range(10)] + [b"one more"]


def test_an_ack_frees_the_window_and_more_is_sent() -> None:
    c = leader_with_replicating_follower(max_inflight=2, max_batch_entries=1)
    a = c["a"]
    for i in range(5):
        a.propose(b"p%d" % i)
    first = appends_to(c.nodes["a"].process(), "b")
    assert len(first) == 2
    c.deliver(first)
    answers = c.nodes["b"].process()
    c.deliver(answers[:1])  # one ack frees one slot
    second = appends_to(c.nodes["a"].process(), "b")
    assert len(second) == 1 and second[0].entries[0].index == first[-1].entries[0].index + 1


def test_probe_state_sends_one_append_at_a_time() -> None:
    c = leader_with_replicating_follower()
    a = c["a"]
    a.report_unreachable("b")
    assert a.progress("b").state is ProgressState.PROBE  # type: ignore[union-attr]
    for i in range(3):
        a.propose(b"p%d" % i)
        assert len(appends_to(c.nodes["a"].process(), "b")) == (1 if i == 0 else 0)


@pytest.mark.parametrize(
    ("max_entries", "max_bytes", "sizes", "batches"),
    [
        (3, 1 << 20, [10] * 10, [3, 3, 3, 1]),  # by count
        (256, 100, [40] * 5, [2, 2, 1]),  # by bytes
        (256, 100, [500, 10, 10], [1, 2]),  # an entry bigger than the limit goes alone
        (2, 100, [10, 10, 10], [2, 1]),  # whichever limit is reached first
    ],
)
def test_appends_are_batched_by_count_and_bytes(
    max_entries: int, max_bytes: int, sizes: list[int], batches: list[int]
) -> None:
    c = leader_with_replicating_follower(max_batch_entries=max_entries, max_batch_bytes=max_bytes)
    for n, size in enumerate(sizes):
        c["a"].propose(bytes([n]) * size)
    msgs = appends_to(c.nodes["a"].process(), "b")
    assert [len(m.entries) for m in msgs] == batches


def test_proposals_between_readies_go_out_in_one_batch() -> None:
    c = leader_with_replicating_follower()
    for i in range(50):
        c["a"].propose(b"p%d" % i)
    msgs = appends_to(c.nodes["a"].process(), "b")
    assert [len(m.entries) for m in msgs] == [50]
    rd_saves = c.nodes["a"].store.save_count
    c.stabilize()
    assert c.nodes["a"].store.save_count - rd_saves <= 3


# -- snapshots ---------------------------------------------------------------------------------


def lagging_follower_cluster(trailing: int) -> Cluster:
    c = elected()
    c.isolate("c")
    for data in values(20):
        c["a"].propose(data)
    c.stabilize()
    c.nodes["a"].take_snapshot(trailing=trailing)
    c.heal()
    return c


def test_a_follower_behind_the_compacted_log_gets_a_snapshot() -> None:
    c = lagging_follower_cluster(trailing=0)
    c.tick_all(2)
    snaps = [m for m in c.sent if m.kind is K.SNAPSHOT]
    assert [m.dst for m in snaps] == ["c"]
    assert c.nodes["c"].store.snapshot_meta() == snaps[0].snapshot
    assert c.applied_data("c") == values(20)
    c["a"].propose(b"after")
    c.stabilize()
    assert c.applied_data("c")[-1] == b"after"
    assert c["a"].progress("c").state is ProgressState.REPLICATE  # type: ignore[union-attr]


def test_a_trailing_window_spares_a_slightly_lagging_follower_the_snapshot() -> None:
    c = lagging_follower_cluster(trailing=30)
    c.tick_all(2)
    assert not [m for m in c.sent if m.kind is K.SNAPSHOT]
    assert c.applied_data("c") == values(20)


def test_a_failed_snapshot_is_retried() -> None:
    c = lagging_follower_cluster(trailing=0)
    c.drop = lambda m: m.kind is K.SNAPSHOT
    c.tick_all(2)
    a = c["a"]
    assert a.progress("c").state is ProgressState.SNAPSHOT  # type: ignore[union-attr]
    a.report_snapshot("c", False)
    assert a.progress("c").state is ProgressState.PROBE  # type: ignore[union-attr]
    c.drop = lambda m: False
    c.tick_all(3)
    assert c.applied_data("c") == values(20)


def test_compact_writes_nothing_and_asks_the_driver_in_the_next_ready() -> None:
    c = elected(writes=10)
    node = c.nodes["a"]
    core, store = node.core, node.store
    applied = core.applied_index
    older, newer = core.snapshot_meta(applied - 2), core.snapshot_meta(applied)
    before = (store.first_index(), store.snapshot_meta(), store.save_count)
    core.compact(applied - 4, newer)
    core.compact(applied - 6, older)  # requests add up: the higher index, the newer snapshot
    assert (store.first_index(), store.snapshot_meta(), store.save_count) == before
    assert core.has_ready()
    rd = core.ready()
    assert rd.compaction == Compaction(applied - 4, newer)
    assert not (rd.entries or rd.messages or rd.committed_entries or rd.hard_state)
    core.advance(rd)
    assert not core.has_ready()
    store.compact(rd.compaction.upto, rd.compaction.meta)  # what the driver does with it
    assert store.first_index() == applied - 3 and store.snapshot_meta() == newer


def test_restart_after_snapshot_restores_from_it_and_replays_the_rest() -> None:
    c = elected(writes=10)
    c.nodes["b"].take_snapshot(trailing=2)
    for i in range(10, 15):
        c["a"].propose(b"v%d" % i)
    c.stabilize()
    c.nodes["b"].restart()
    c.stabilize()
    b = c["b"]
    assert b.term == 2 and b.commit_index == c["a"].commit_index
    assert c.applied_data("b") == values(15)


# -- membership --------------------------------------------------------------------------------


def add(sid: str) -> ConfigChange:
    return ConfigChange(ConfigChangeKind.ADD_VOTER, sid, f"addr-{sid}")


def test_a_new_server_joins_as_learner_catches_up_and_is_promoted() -> None:
    c = elected(writes=5)
    c.add_node("d", None, seed=99)  # a fresh server: empty log, no configuration
    a = c["a"]
    a.propose_config(ConfigChange(ConfigChangeKind.ADD_LEARNER, "d", "addr-d"))
    c.stabilize()
    c.tick_all(2)
    assert c["d"].configuration.learners == {"d": "addr-d"}
    assert c.applied_data("d") == values(5)
    assert c["d"].role is Role.FOLLOWER and "d" not in voters(a)
    c.tick("d", 100)  # a learner never campaigns
    assert c["d"].role is Role.FOLLOWER
    a.propose_config(ConfigChange(ConfigChangeKind.PROMOTE, "d"))
    c.stabilize()
    assert all(voters(c[sid]) == {"a", "b", "c", "d"} for sid in "abcd")
    assert c["d"].configuration.voters["d"] == "addr-d"


def test_membership_changes_go_one_at_a_time() -> None:
    c = elected()
    a = c["a"]
    c.add_node("d", None, seed=99)
    c.add_node("e", None, seed=98)
    c.cut |= {("a", "d"), ("a", "b"), ("a", "c")}  # keep the first change from committing
    index = a.propose_config(add("d"))
    assert voters(a) == {"a", "b", "c", "d"}  # in force as soon as it is in the log
    with pytest.raises(ConfigChangeError, match=f"index {index} is not committed"):
        a.propose_config(add("e"))
    c.heal()
    c.stabilize()
    assert a.commit_index >= index
    a.propose_config(add("e"))
    c.stabilize()
    assert voters(c["e"]) == set("abcde")


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (ConfigChange(ConfigChangeKind.ADD_VOTER, "b"), "already a voter"),
        (ConfigChange(ConfigChangeKind.ADD_LEARNER, "c"), "already a member"),
        (ConfigChange(ConfigChangeKind.PROMOTE, "b"), "not a learner"),
        (ConfigChange(ConfigChangeKind.REMOVE, "x"), "not a member"),
    ],
)
def test_nonsense_membership_changes_are_refused(change: ConfigChange, error: str) -> None:
    c = elected()
    with pytest.raises(ConfigChangeError, match=error):
        c["a"].propose_config(change)


def test_no_membership_change_before_the_leader_commits_its_noop() -> None:
    c = Cluster("abc", pre_vote=False)
    c.isolate("a")
    c.campaign("a")
    c.heal()
    for sid in "bc":  # a got the votes, but its no-op is not out yet
        c["a"].step(Message(K.VOTE_RESP, c["a"].term, sid, "a"))
    assert c["a"].role is Role.LEADER
    with pytest.raises(ConfigChangeError, match="not committed an entry of its term"):
        c["a"].propose_config(add("d"))


def test_a_removed_follower_stops_counting_and_the_rest_carry_on() -> None:
    c = elected()
    c["a"].propose_config(ConfigChange(ConfigChangeKind.REMOVE, "c"))
    c.stabilize()
    assert voters(c["a"]) == voters(c["b"]) == {"a", "b"}
    c.isolate("c")
    c["a"].propose(b"after")
    c.stabilize()
    assert c.applied_data("b")[-1] == b"after"
    assert c["a"].progress("c") is None


def test_a_removed_leader_steps_down_once_its_removal_commits() -> None:
    c = elected()
    a = c["a"]
    index = a.propose_config(ConfigChange(ConfigChangeKind.REMOVE, "a"))
    assert a.role is Role.LEADER  # still leads (without counting itself) until committed
    c.stabilize()
    assert a.commit_index >= index and a.role is Role.FOLLOWER
    # It handed over with TimeoutNow, so a new leader follows at once.
    assert any(m.kind is K.TIMEOUT_NOW and m.src == "a" for m in c.sent)
    new = c.leader()
    assert new.id in "bc" and voters(new) == {"b", "c"}
    new.propose(b"after")
    c.stabilize()
    assert c.applied_data("b")[-1] == c.applied_data("c")[-1] == b"after"
    c.tick("a", 100)  # no longer a voter: never campaigns
    assert a.role is Role.FOLLOWER


def test_a_truncated_configuration_entry_is_forgotten() -> None:
    c = elected()
    c.isolate("a")
    index = c["a"].propose_config(add("d"))  # reaches no one: it can never commit
    c.stabilize()
    assert voters(c["a"]) == set("abcd")
    for _ in range(100):
        c.tick_all()
        if any(c[sid].role is Role.LEADER for sid in "bc"):
            break
    leader = next(c[sid] for sid in "bc" if c[sid].role is Role.LEADER)
    leader.propose(b"x")
    c.stabilize()
    c.heal()
    c.tick_all(3)
    assert c["a"].role is Role.FOLLOWER and c["a"].leader_id == leader.id
    replaced = c.nodes["a"].store.entries(index, index + 1)[0]
    assert replaced.type is not EntryType.CONFIG
    assert voters(c["a"]) == set("abc")
    assert c.applied_data("a")[-1] == b"x"


# -- leadership transfer -----------------------------------------------------------------------


def test_leadership_transfer_to_an_up_to_date_follower() -> None:
    c = elected()
    a = c["a"]
    a.transfer_leadership("b")
    assert a.lead_transferee == "b"
    with pytest.raises(NotLeaderError, match="transfer in progress") as err:
        a.propose(b"during")
    assert err.value.leader_hint == "b"
    c.stabilize()
    assert [m.dst for m in c.sent if m.kind is K.TIMEOUT_NOW] == ["b"]
    assert c.leader().id == "b" and c["b"].term == 3
    assert not [m for m in c.sent if m.kind is K.PRE_VOTE and m.term == 3]  # no pre-vote


def test_leadership_transfer_to_a_lagging_follower_catches_it_up_first() -> None:
    c = elected()
    c.isolate("c")
    for i in range(10):
        c["a"].propose(b"v%d" % i)
    c.stabilize()
    c.heal()
    c["a"].transfer_leadership("c")
    c.stabilize()
    c.tick_all(2)
    assert c.leader().id == "c"
    assert c.applied_data("c") == values(10)


def test_a_transfer_asked_of_a_follower_is_forwarded() -> None:
    c = elected()
    c["c"].transfer_leadership("b")
    c.stabilize()
    assert c.leader().id == "b"


def test_a_transfer_that_does_not_finish_in_an_election_timeout_is_abandoned() -> None:
    c = elected()
    c.drop = lambda m: m.kind is K.TIMEOUT_NOW
    a = c["a"]
    a.transfer_leadership("b")
    c.tick_all(a._cfg.election_tick)
    assert a.role is Role.LEADER and a.lead_transferee is None
    a.propose(b"accepted again")


def test_transfer_to_a_non_voter_is_refused() -> None:
    c = elected()
    with pytest.raises(ValueError, match="not a voter"):
        c["a"].transfer_leadership("zz")


# -- ReadIndex ---------------------------------------------------------------------------------


def test_read_index_on_the_leader_needs_a_quorum_round() -> None:
    c = elected()
    a = c["a"]
    a.propose(b"x")
    c.stabilize()
    a.read_index(b"r1")
    out = c.nodes["a"].process()
    assert c.nodes["a"].read_states == []  # not before the heartbeat round
    assert {m.dst for m in out if m.kind is K.HEARTBEAT and m.context == b"r1"} == {"b", "c"}
    c.deliver(out)
    c.stabilize()
    assert c.nodes["a"].read_states == [ReadState(b"r1", a.commit_index)]


def test_read_index_on_a_leader_cut_off_from_the_quorum_is_never_answered() -> None:
    c = elected(check_quorum=False)
    c.isolate("a")
    c["a"].read_index(b"r1")
    c.tick_all(5)
    assert c.nodes["a"].read_states == []


def test_read_index_waits_for_the_leader_to_commit_its_noop() -> None:
    c = Cluster("abc", pre_vote=False)
    c.isolate("a")
    c.campaign("a")
    for sid in "bc":
        c["a"].step(Message(K.VOTE_RESP, c["a"].term, sid, "a"))
    a = c["a"]
    a.read_index(b"early")
    c.heal()
    c.stabilize()
    assert c.nodes["a"].read_states == [ReadState(b"early", a.commit_index)]
    assert a.commit_index >= 2  # the no-op


def test_read_index_on_a_follower_is_forwarded_to_the_leader() -> None:
    c = elected()
    c["a"].propose(b"x")
    c.stabilize()
    c["b"].read_index(b"rb")
    c.stabilize()
    assert c.nodes["b"].read_states == [ReadState(b"rb", c["a"].commit_index)]
    assert c.nodes["a"].read_states == []


def test_read_index_on_a_single_server_is_immediate() -> None:
    c = elected("a")
    c["a"].read_index(b"solo")
    c.stabilize()
    assert c.nodes["a"].read_states == [ReadState(b"solo", c["a"].commit_index)]


def test_read_index_without_a_leader_fails_fast() -> None:
    c = Cluster("abc")
    with pytest.raises(NotLeaderError):
        c["b"].read_index(b"r")


# -- the Ready handshake and crashes -----------------------------------------------------------


def test_ready_must_be_advanced_before_the_next() -> None:
    c = elected()
    a = c["a"]
    a.propose(b"x")
    rd = a.ready()
    assert not a.has_ready()
    with pytest.raises(RuntimeError, match="before advance"):
        a.ready()
    with pytest.raises(RuntimeError, match="not the outstanding"):
        a.advance(Ready())
    a.advance(rd)


def test_a_vote_is_durable_before_it_is_sent() -> None:
    c = Cluster("abc", pre_vote=False)
    b = c.nodes["b"]
    b.core.step(Message(K.VOTE, 2, "a", "b", index=1, log_term=1))
    rd = b.core.ready()
    assert rd.hard_state == HardState(2, "a", 1)
    assert [m.kind for m in rd.messages] == [K.VOTE_RESP]
    b.store.save(rd.hard_state, rd.entries, rd.snapshot)
    b.restart()  # crash after the write, before sending and advance()
    b.core.step(Message(K.VOTE, 2, "c", "b", index=1, log_term=1))
    (resp,) = b.process()
    assert resp.reject  # the vote for "a" survived the crash


def test_a_crash_before_the_write_loses_nothing_that_was_acknowledged() -> None:
    c = elected()
    b = c.nodes["b"]
    c["a"].propose(b"x")
    c.deliver(c.nodes["a"].process())
    rd = b.core.ready()  # b accepted the entry and would acknowledge it after the write
    assert rd.entries and any(m.kind is K.APPEND_RESP for m in rd.messages)
    b.restart()  # crash before the write: the acknowledgement was never sent
    assert b.core.last_index == 2 and c["a"].commit_index == 2
    c.stabilize()
    c.tick_all(2)
    assert c.applied_data("b") == [b"x"]


def test_entries_replaced_while_a_ready_is_being_written_are_persisted_again() -> None:
    store = MemLogStore()
    preset(store, "ab", [], term=2)
    log = RaftLog(store)
    log.append([Entry(2, 2, data=b"old2"), Entry(3, 2, data=b"old3")])
    entries, _ = log.take_unstable()
    # While that write is in flight, a new leader overwrites index 3.
    log.append([Entry(3, 3, data=b"new3")])
    store.save(None, entries)
    log.stable_to(entries, None)
    assert log.offset == 3 and log.has_unstable()
    again, _ = log.take_unstable()
    assert again == [Entry(3, 3, data=b"new3")]
    store.save(None, again)
    log.stable_to(again, None)
    assert store.entries(2, 4) == [Entry(2, 2, data=b"old2"), Entry(3, 3, data=b"new3")]


def test_restart_restores_term_vote_commit_and_membership() -> None:
    c = elected()
    c.add_node("d", None, seed=5)
    c["a"].propose_config(add("d"))
    c.stabilize()
    before = c["b"]
    c.nodes["b"].restart()
    after = c["b"]
    assert (after.term, after.vote, after.commit_index) == (before.term, "a", before.commit_index)
    assert after.configuration == before.configuration
    assert after.role is Role.FOLLOWER and after.applied_index == 0
    c.stabilize()
    assert c.nodes["b"].applied[-1].index == after.commit_index


# -- wire format and stores --------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(MessageKind))
def test_every_message_kind_round_trips_through_msgpack(kind: MessageKind) -> None:
    snap = SnapshotMeta(7, 2, config_of("ab"), size=10, crc=99)
    msg = Message(
        kind, 3, "a", "b", index=5, log_term=2, commit=4, reject=True, reject_hint=1,
        entries=(Entry(6, 3, EntryType.NORMAL, b"\x00x"), Entry(7, 3, EntryType.NOOP)),
        context=b"ctx", snapshot=snap,
    )  # fmt: skip
    wire = msgpack.unpackb(msgpack.packb(msg.to_wire()))
    assert Message.from_wire(wire) == msg
    with pytest.raises(ValueError, match="12-item"):
        Message.from_wire(wire[:5])


def test_memstore_semantics() -> None:
    store = MemLogStore()
    preset(store, "a", [1, 2, 2, 3], term=3)
    assert (store.first_index(), store.last_index(), store.term(4)) == (1, 5, 2)
    store.save(None, [Entry(4, 4)])  # replaces 4 and drops 5
    assert store.last_index() == 4 and store.term(4) == 4
    meta = SnapshotMeta(3, 2, config_of("a"))
    store.compact(2, meta)
    assert store.first_index() == 3 and store.term(2) == 1 and store.snapshot_meta() == meta
    with pytest.raises(CompactedError):
        store.term(1)
    with pytest.raises(UnavailableError):
        store.entries(3, 9)
    # A snapshot the log does not contain resets the log.
    store.save(None, [], snapshot=SnapshotMeta(10, 5, config_of("a")))
    assert (store.first_index(), store.last_index(), store.term(10)) == (11, 10, 5)
    snaps = MemSnapshotStore()
    for i in (1, 2, 3):
        sink = snaps.create(SnapshotMeta(i, 1, config_of("a")))
        sink.write(b"body%d" % i)
        sink.commit()
    assert snaps.latest().index == 3  # type: ignore[union-attr]
    assert b"".join(snaps.open(2)) == b"body2"
    with pytest.raises(KeyError):
        list(snaps.open(1))  # only the newest two are kept


def snapshot_for_c() -> tuple[Cluster, SnapshotMeta, Message]:
    """A lagging "c", and a's snapshot message to it with the body already shipped."""
    c = lagging_follower_cluster(trailing=0)
    meta = c.nodes["a"].store.snapshot_meta()
    assert meta is not None
    msg = Message(K.SNAPSHOT, c["a"].term, "a", "c", snapshot=meta)
    c._ship_snapshot(msg)
    return c, meta, msg


def test_no_local_snapshot_while_a_leaders_snapshot_is_installing() -> None:
    c, meta, msg = snapshot_for_c()
    follower = c["c"]
    follower.step(msg)
    assert follower.snapshot_pending
    with pytest.raises(CompactedError, match="being installed"):
        follower.snapshot_meta(follower.applied_index)
    c.nodes["c"].process()
    assert not follower.snapshot_pending and follower.applied_index == meta.index


def test_a_leader_whose_own_snapshot_is_still_installing_waits_to_send_one() -> None:
    c, meta, msg = snapshot_for_c()
    node_c = c.nodes["c"]
    node_c.core = RaftCore(CoreConfig(id="c", pre_vote=False), node_c.store, random.Random(3))
    core = node_c.core
    core.step(msg)  # accepted, not yet stored
    while core.role is not Role.CANDIDATE:
        core.tick()
    core.step(Message(K.VOTE_RESP, core.term, "b", "c"))
    assert core.role is Role.LEADER and core.snapshot_pending
    # b says its log diverges far back: it needs entries below c's incoming snapshot.
    core.step(Message(K.APPEND_RESP, core.term, "b", "c", index=meta.index, reject=True,
                      reject_hint=3))  # fmt: skip
    rd = core.ready()
    assert rd.snapshot == meta
    assert not [m for m in rd.messages if m.dst == "b" and m.kind in (K.APPEND, K.SNAPSHOT)]
    node_c.store.save(rd.hard_state, rd.entries, rd.snapshot)
    core.advance(rd)
    core.step(Message(K.HEARTBEAT_RESP, core.term, "b", "c"))
    assert [m.snapshot for m in core.ready().messages if m.dst == "b"] == [meta]


def test_a_probe_answered_at_the_match_point_resumes_streaming() -> None:
    c = leader_with_replicating_follower()
    a = c["a"]
    a.report_unreachable("b")
    c.tick("a")  # heartbeat; its answer triggers an (empty) probe, accepted at match
    c.stabilize()
    assert a.progress("b").state is ProgressState.REPLICATE  # type: ignore[union-attr]
    a.propose(b"streamed at once")
    c.stabilize()
    assert c.applied_data("b")[-1] == b"streamed at once"


def test_refusing_stale_candidates_does_not_hold_back_an_up_to_date_server() -> None:
    node = Node(CoreConfig(id="a", pre_vote=False, election_tick=10), None, seed=4)
    preset(node.store, "abcde", [2, 2, 2], term=2)
    node.restart()
    core = node.core
    for step in range(1, 30):  # a stale candidate stands every 9 ticks, with a new term
        if step % 9 == 0:
            core.step(Message(K.VOTE, core.term + 1, "e", "a", index=1, log_term=1))
            assert node.process()[0].reject
        core.tick()
        if core.role is Role.CANDIDATE:
            break
    assert core.role is Role.CANDIDATE and step < 20


# -- user restore (hashicorp/raft's Restore) ---------------------------------------------------


def user_restore(node: Node, state: list[Entry], after_index: int = 0) -> SnapshotMeta:
    """What the driver does: store the user's body at restore_meta(), then core.restore()."""
    meta = node.core.restore_meta(after_index)
    sink = node.snapshots.create(meta)
    sink.write(msgpack.packb([e.to_wire() for e in state]))
    meta = sink.commit()
    node.core.restore(meta)
    return meta


RESTORED = [Entry(1, 1, EntryType.NORMAL, b"restored-1"), Entry(2, 1, EntryType.NORMAL, b"r2")]


@pytest.mark.parametrize("after_index", [0, 500])
def test_a_user_restore_replaces_the_state_everywhere_and_writes_carry_on(
    after_index: int,
) -> None:
    c = elected(writes=5)
    c.isolate("c")  # down during the restore
    c["a"].propose(b"lost-in-flight")  # appended, never committed: the restore replaces it
    last = c["a"].last_index
    meta = user_restore(c.nodes["a"], RESTORED, after_index)
    assert meta.index == max(last, after_index) + 1 and meta.term == c["a"].term
    assert c["a"].commit_index == meta.index
    c.stabilize()
    c.tick_all(2)
    assert c.applied_data("a") == c.applied_data("b") == [b"restored-1", b"r2"]
    assert c.nodes["b"].store.snapshot_meta() == meta
    assert c["a"].progress("b").match >= meta.index  # type: ignore[union-attr]
    c["a"].propose(b"after")
    c.stabilize()
    c.heal()
    c["a"].report_snapshot("c", False)  # as a driver does when the cut link failed the send
    c.tick_all(3)
    for sid in "abc":
        assert c.applied_data(sid) == [b"restored-1", b"r2", b"after"], sid
        assert c[sid].commit_index == meta.index + 1
    c.nodes["a"].restart()  # the restored snapshot is what a restart starts from
    c.tick_all(3)
    assert c.applied_data("a") == [b"restored-1", b"r2", b"after"]


def test_a_user_restore_is_refused_off_the_leader_or_at_a_stale_place() -> None:
    c = elected(writes=2)
    with pytest.raises(NotLeaderError):
        c["b"].restore_meta()
    a = c.nodes["a"]
    meta = a.core.restore_meta()
    a.core.propose(b"meanwhile")  # the log grew past the chosen index
    with pytest.raises(ValueError, match="above the last log index"):
        a.core.restore(meta)
    with pytest.raises(ValueError, match="current term"):
        a.core.restore(SnapshotMeta(a.core.last_index + 1, a.core.term - 1, meta.configuration))
    with pytest.raises(ValueError, match="membership"):
        a.core.restore(SnapshotMeta(a.core.last_index + 1, a.core.term, config_of("ab")))
    c.stabilize()
    assert c.applied_data("b") == [*values(2), b"meanwhile"]


def test_no_user_restore_while_a_membership_change_is_uncommitted() -> None:
    c = elected(writes=1)
    c["a"].propose_config(add("d"))
    with pytest.raises(ConfigChangeError, match="membership change"):
        c["a"].restore_meta()


# -- commit rules the simulator rarely reaches -------------------------------------------------


@pytest.mark.parametrize("noop_reaches_majority", [False, True])
def test_figure_8_an_old_term_entry_on_a_majority_is_not_committed_by_counting(
    noop_reaches_majority: bool,
) -> None:
    """Raft paper, Figure 8: a (term 5) carries b's term-2 entry at index 2 to a majority.
    Counted alone it must not commit: e (term-3 entry at 2) may still win and overwrite it.
    Once a's own term-5 entry is on a majority, both commit and e can no longer win."""
    c = Cluster(
        "abcde", pre_vote=False, check_quorum=False, max_batch_entries=1,
        logs={"a": ([2], 4), "b": ([2], 4), "c": ([], 4), "d": ([], 4), "e": ([3], 4)},
    )  # fmt: skip
    c.isolate("e")  # down while a leads
    c.cut |= {("a", "d"), ("d", "a")}  # a's majority is a, b, c

    def withhold_the_noop(m: Message) -> bool:
        """Deliver appends without a's term-5 entry (index 3): b and c get only index 2."""
        if m.kind is not K.APPEND or not any(e.index >= 3 for e in m.entries):
            return False
        kept = tuple(e for e in m.entries if e.index < 3)
        c.nodes[m.dst].core.step(dataclasses.replace(m, entries=kept))
        return True

    c.drop = withhold_the_noop
    c.campaign("a")
    assert c["a"].role is Role.LEADER and c["a"].term == 5
    c.tick_all(3)
    assert [c.nodes[s].store.term(2) for s in "abc"] == [2, 2, 2]
    assert c["a"].commit_index == 1  # three replicas of a term-2 entry commit nothing
    c.drop = lambda m: False
    if noop_reaches_majority:
        c.tick_all(2)
        assert c["a"].commit_index == 3
    c.heal()
    c.isolate("a")  # a goes down, e comes back
    for _ in range(60):  # its first term may be one whose votes went to a already
        if c["e"].role is Role.LEADER or c["e"].term > 7:
            break
        c["e"].tick()
        c.stabilize()
    if noop_reaches_majority:
        assert c["e"].role is not Role.LEADER  # b and c hold a newer log than e
        assert all(e.term == 2 for s in "abc" for e in c.nodes[s].applied if e.index == 2)
    else:
        assert c["e"].role is Role.LEADER
        c.tick_all(3)
        for sid in "bcde":
            assert c.nodes[sid].store.term(2) == 3, sid
        c.heal()
        c.tick_all(3)
        assert c.nodes["a"].store.term(2) == 3
        # Nobody ever applied the term-2 entry that once sat on a majority.
        assert not [e for n in c.nodes.values() for e in n.applied if e.index == 2 and e.term == 2]


@pytest.mark.parametrize(
    ("message", "expected_commit"),
    [
        # The leader's commit is 9, but only the prefix up to prev (3) is known to match.
        ({"kind": K.APPEND, "index": 3, "log_term": 1, "commit": 9}, 3),
        # One entry after prev: entry 4 now matches; our stale entry 5 is not the leader's.
        ({"kind": K.APPEND, "index": 3, "log_term": 1, "commit": 9,
          "entries": (Entry(4, 3, EntryType.NORMAL, b"x"),)}, 4),
        # Entries that agree with ours: still no further than the last one sent.
        ({"kind": K.APPEND, "index": 2, "log_term": 1, "commit": 9,
          "entries": (Entry(3, 1, EntryType.NORMAL, b"e3"),)}, 3),
        ({"kind": K.APPEND, "index": 5, "log_term": 2, "commit": 9}, 5),
        ({"kind": K.APPEND, "index": 5, "log_term": 2, "commit": 4}, 4),
        # A refused append (our entry 4 is of term 2) moves nothing.
        ({"kind": K.APPEND, "index": 4, "log_term": 3, "commit": 9}, 1),
        # Heartbeats carry min(match, commit) for this follower.
        ({"kind": K.HEARTBEAT, "commit": 3}, 3),
    ],
)
def test_a_follower_never_commits_past_what_the_leader_confirmed(
    message: dict, expected_commit: int
) -> None:
    node = Node(CoreConfig(id="b"), None, seed=1)
    preset(node.store, "abc", [1, 1, 2, 2], term=3)  # indexes 2..5, commit 1
    node.restart()
    node.core.step(Message(src="a", dst="b", term=3, **message))
    node.process()
    assert node.core.commit_index == expected_commit
    assert [e.index for e in node.applied][-1:] == ([expected_commit] if expected_commit > 1
                                                    else [1])


# -- messages from servers outside the membership ----------------------------------------------


def _forged(src: str, dst: str, kind: MessageKind, term: int, **fields: object) -> Message:
    return Message(kind=kind, src=src, dst=dst, term=term, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("target", ["a", "b"])
def test_a_non_members_higher_term_never_deposes_a_leader_or_feeds_the_log(target: str) -> None:
    c = elected(writes=2)
    leader, term, last = c["a"], c["a"].term, c["a"].last_index
    core = c[target]
    entry = Entry(last + 1, term + 100, EntryType.NORMAL, b"forged")
    for kind, extra in ((K.HEARTBEAT, {"commit": last + 1}),
                        (K.APPEND, {"index": last, "log_term": term, "commit": last + 1,
                                    "entries": [entry]}),
                        (K.VOTE, {"index": last + 5, "log_term": term + 100}),
                        (K.PRE_VOTE, {"index": last + 5, "log_term": term + 100})):
        core.step(_forged("rogue", target, kind, term + 100, **extra))
    # A member's name claimed for this server itself is refused too.
    core.step(_forged(target, target, K.HEARTBEAT, term + 100, commit=last + 1))
    assert core.dropped_from_strangers == 5
    c.stabilize()
    assert leader.role is Role.LEADER and leader.term == term and c.leader() is leader
    assert all(c[s].last_index == last and c[s].term == term for s in "abc")
    leader.propose(b"after")
    c.stabilize()
    assert c.applied_data("b")[-1] == b"after" and b"forged" not in c.applied_data(target)


def test_a_removed_server_cannot_disrupt_the_cluster() -> None:
    c = elected(writes=1)
    c["a"].propose_config(ConfigChange(ConfigChangeKind.REMOVE, "c"))
    c.stabilize()
    removed = c["c"]
    # "c" never heard of its removal's commit? It still campaigns at higher terms:
    # the members, following a live leader, drop what it says.
    for _ in range(5):
        c["b"].step(_forged("c", "b", K.VOTE, c["b"].term + 7, index=99, log_term=99))
        c["a"].step(_forged("c", "a", K.APPEND_RESP, c["a"].term + 7, index=1))
    c.stabilize()
    assert c.leader() is c["a"] and c["a"].term == c["b"].term
    assert removed.id not in c["a"].configuration.all_servers()


def test_a_server_being_added_hears_from_a_leader_its_log_does_not_know() -> None:
    c = elected(writes=3)
    c.add_node("d", None, 99)  # a new server: no configuration at all
    c["a"].propose_config(add("d"))
    c.stabilize()
    c.tick_all(2)
    assert voters(c["d"]) == set("abcd") and c["d"].leader_id == "a"
    assert c.applied_data("d") == values(3) and c["d"].dropped_from_strangers == 0


def test_a_follower_behind_a_membership_change_catches_up_from_a_leader_it_never_heard_of(
        ) -> None:
    # "d" is added while "c" is cut off; then "d" leads. "c"'s membership does not name "d",
    # and once no leader has been heard for two election timeouts, it follows "d" anyway.
    c = elected(writes=1)
    c.cut |= {("a", "c"), ("c", "a"), ("b", "c"), ("c", "b")}
    c.add_node("d", None, 99)
    c["a"].propose_config(add("d"))
    c.stabilize()
    c.tick_all(2)
    assert voters(c["d"]) == set("abcd") and "d" not in c["c"].configuration.voters
    c["a"].transfer_leadership("d")
    c.stabilize()
    assert c["d"].role is Role.LEADER
    c.heal()
    c.cut |= {("a", "c"), ("c", "a")}  # "c" never hears the old leader again
    for _ in range(4 * c["c"]._cfg.election_tick):
        c.tick_all()
        if "d" in c["c"].configuration.voters:
            break
    assert voters(c["c"]) == set("abcd") and c["c"].leader_id == "d"


def test_a_follower_shields_the_cluster_until_no_leader_was_heard_for_two_timeouts() -> None:
    c = elected(writes=1)
    b, term = c["b"], c["b"].term
    c.isolate("b")  # its leader falls silent (a stall, a partition)
    stranger = _forged("rogue", "b", K.HEARTBEAT, term + 100)
    for _ in range(2 * b._cfg.election_tick - 1):
        b.tick()
        b.step(stranger)
    assert b.term == term and b.dropped_from_strangers == 2 * b._cfg.election_tick - 1
    b.tick()
    b.step(stranger)  # two timeouts without a leader: Raft's rules again
    assert b.term == term + 100 and b.leader_id == "rogue"
