"""The deterministic Raft simulator: its network, and (below) seeded whole-cluster runs."""

from __future__ import annotations

import os
import random
import traceback
from typing import Any

import pytest
from raftsim.cluster import (
    Cluster,
    KVStateMachine,
    SimConfig,
    SimStats,
    Violation,
    encode_command,
    simulate,
)
from raftsim.network import RELIABLE, Faults, Network

from pykvs.raft.core import Ready
from pykvs.raft.types import Entry, EntryType

# --- the simulated network ---------------------------------------------------------------------


def drain(net: Network, until: int) -> list[tuple[int, Any, Any, Any]]:
    """Deliver everything due up to ``until``, stamped with the time it arrived."""
    out = []
    for now in range(until + 1):
        out += [(now, *d) for d in net.deliver(now)]
    return out


def test_reliable_network_delivers_everything_once_after_the_delay() -> None:
    net = Network(random.Random(1), "abc", Faults(min_delay=2, max_delay=2))
    for i in range(10):
        net.send("a", "b", i, now=i)
    got = drain(net, 30)
    assert [(t, m) for t, _, _, m in got] == [(i + 2, i) for i in range(10)]
    assert net.in_flight() == 0 and net.next_due() is None
    assert net.stats.sent == net.stats.delivered == 10


def test_same_seed_same_fate() -> None:
    faults = Faults(drop_rate=0.3, duplicate_rate=0.2, min_delay=1, max_delay=9)

    def run(seed: int) -> list:
        net = Network(random.Random(seed), range(3), faults)
        for i in range(200):
            net.send(i % 3, (i + 1) % 3, i, now=i // 4)
        return drain(net, 100)

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_faults_drop_duplicate_and_reorder() -> None:
    faults = Faults(drop_rate=0.2, duplicate_rate=0.1, min_delay=1, max_delay=20)
    net = Network(random.Random(3), "ab", faults)
    for i in range(2000):
        net.send("a", "b", i, now=0)
    got = [m for _, _, _, m in drain(net, 25)]
    assert 300 < net.stats.dropped < 500
    assert 100 < net.stats.duplicated < 220
    assert len(got) == 2000 - net.stats.dropped + net.stats.duplicated
    assert len(set(got)) < len(got)  # duplicates arrived
    assert got != sorted(got)  # and the order was shuffled


def test_partition_cuts_new_and_in_flight_messages() -> None:
    net = Network(random.Random(0), "abcde", Faults(min_delay=5, max_delay=5))
    net.send("a", "d", "in flight", now=0)
    net.partition("ab", "cde")
    assert net.send("a", "b", "same side", now=1)
    assert not net.send("a", "c", "across", now=1)  # the sender can tell
    assert net.send("e", "d", "other side", now=1)
    assert [m for *_, m in drain(net, 10)] == ["same side", "other side"]
    assert net.stats.cut == 2
    net.heal()
    net.send("a", "c", "healed", now=11)
    assert [m for *_, m in net.deliver(16)] == ["healed"]


def test_nodes_left_out_of_a_partition_form_their_own_group() -> None:
    net = Network(random.Random(0), "abcd")
    net.partition("a")
    assert not net.connected("a", "b")
    assert net.connected("b", "c") and net.connected("c", "d")


def test_isolate_and_one_way_block() -> None:
    net = Network(random.Random(0), "abc")
    net.isolate("c")
    assert not net.connected("a", "c") and not net.connected("c", "b")
    assert net.connected("a", "b")
    net.heal()
    net.block("a", "b")
    assert not net.connected("a", "b") and net.connected("b", "a")


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="drop_rate"):
        Faults(drop_rate=1.0)
    with pytest.raises(ValueError, match="min_delay"):
        Faults(min_delay=3, max_delay=2)
    with pytest.raises(ValueError, match="distinct"):
        Network(random.Random(0), "aa")
    net = Network(random.Random(0), "ab", RELIABLE)
    with pytest.raises(ValueError, match="not a node"):
        net.send("a", "z", "x", now=0)
    with pytest.raises(ValueError, match="overlap"):
        net.partition("ab", "b")


# --- the state machine the simulated servers replicate ------------------------------------------


def test_kv_state_machine_applies_commands_and_round_trips_a_snapshot() -> None:
    fsm = KVStateMachine()
    commands = [
        (("put", "a", "1"), None),
        (("cas", "a", "1", "2"), True),
        (("cas", "a", "1", "3"), False),
        (("get", "a"), "2"),
        (("delete", "a"), None),
        (("get", "a"), None),
        (("cas", "a", None, "4"), True),
    ]
    for index, (command, expected) in enumerate(commands, start=1):
        entry = Entry(index, 1, EntryType.NORMAL, encode_command(index, command))
        assert fsm.apply(entry) == expected
    assert fsm.apply(Entry(8, 2, EntryType.NOOP)) is None
    assert (fsm.applied, fsm.data) == (8, {"a": "4"})
    copy = KVStateMachine()
    copy.restore(fsm.snapshot(), 8)
    assert (copy.applied, copy.data, copy.digest()) == (8, {"a": "4"}, fsm.digest())


# --- seeded whole-cluster runs --------------------------------------------------------------------

SIM_SEEDS = int(os.environ.get("PYKVS_SIM_SEEDS", "1000"))
SIM_SEED_BASE = int(os.environ.get("PYKVS_SIM_SEED_BASE", "0"))
# Longer chaos per seed, for soaks (the default keeps 1,000 seeds around a minute).
SIM_TICKS = os.environ.get("PYKVS_SIM_TICKS")
MAX_REPORTED_FAILURES = 5


def replay_command(seed: int) -> str:
    ticks = f"PYKVS_SIM_TICKS={SIM_TICKS} " if SIM_TICKS else ""
    return f"{ticks}PYKVS_SIM_SEEDS=1 PYKVS_SIM_SEED_BASE={seed} pytest tests/test_raft_sim.py"


def test_simulated_seeds(capsys: pytest.CaptureFixture[str]) -> None:
    """3- and 5-server clusters under drops, duplicates, delays, partitions and crashes.

    Every seed checks election safety, log matching, leader completeness and state-machine
    safety at every step, liveness after healing, and the linearizability of its clients' history.
    """
    total = SimStats()
    failures: list[tuple[int, str]] = []
    for seed in range(SIM_SEED_BASE, SIM_SEED_BASE + SIM_SEEDS):
        try:
            total.add(simulate(seed, int(SIM_TICKS) if SIM_TICKS else None))
        except Exception as exc:  # a crash of the core is as much a finding as a violation
            detail = str(exc) if isinstance(exc, AssertionError) else traceback.format_exc()
            failures.append((seed, detail))
    with capsys.disabled():
        print(f"\nsimulated {SIM_SEEDS} seeds, {len(failures)} violations")
        print(f"  totals: {total}")
        for seed, detail in failures[:MAX_REPORTED_FAILURES]:
            print(f"\n--- seed {seed} failed; replay with: {replay_command(seed)}\n{detail}")
        if failures:
            seeds = [seed for seed, _ in failures]
            print(f"\nfailing seeds: {seeds}")
    assert not failures, f"{len(failures)} seeds failed, first {failures[0][0]}: " + replay_command(
        failures[0][0]
    )
    # The runs must have exercised what they claim to (checked over enough seeds to be certain).
    if SIM_SEEDS >= 50:
        assert total.crashes and total.partitions and total.lost_unpersisted_readies
        assert total.snapshots_taken and total.snapshots_installed
        assert total.reads_by_index and total.ops_ok > 10 * SIM_SEEDS


# --- the simulator's checks can fail -------------------------------------------------------------


def running_cluster(seed: int = 2, **overrides: object) -> Cluster:
    """A healthy cluster with a leader that has committed some client writes."""
    config = SimConfig(seed=seed, **overrides)  # type: ignore[arg-type]
    cluster = Cluster(config)
    elected = cluster.run_until(
        lambda: cluster.leader() is not None and cluster.max_committed > 5,
        60,
        client_traffic=True,
        faults=False,
    )
    assert elected, "no leader committed anything in 60 fault-free ticks"
    return cluster


def test_election_safety_violation_is_caught() -> None:
    cluster = running_cluster()
    leader = cluster.leader()
    assert leader is not None and leader.core is not None
    cluster.leader_of_term[leader.core.term] = "someone else"
    with pytest.raises(Violation, match="election safety"):
        cluster.observe(leader)


def test_log_matching_violation_is_caught() -> None:
    cluster = running_cluster()
    node = cluster.nodes["n1"]
    index = node.log.last_index()
    good = node.log.entries(index, index + 1)[0]
    forged = Entry(good.index, good.term, EntryType.NORMAL, b"forged")
    with pytest.raises(Violation, match="log matching"):
        cluster.check_persisted(node, Ready(entries=[forged]))


def test_leader_completeness_violation_is_caught() -> None:
    cluster = running_cluster()
    leader = cluster.leader()
    assert leader is not None and leader.core is not None
    beyond = leader.log.last_index() + 1
    cluster.commit_term[beyond] = leader.core.term - 1
    with pytest.raises(Violation, match="leader completeness"):
        cluster.check_leader_complete(leader, leader.core.term)


def test_state_machine_safety_violation_is_caught() -> None:
    cluster = running_cluster()
    node = cluster.nodes["n1"]
    index = max(cluster.applied)
    term = cluster.applied[index][0]
    with pytest.raises(Violation, match="state-machine safety"):
        cluster.check_applied(node, Entry(index, term, EntryType.NORMAL, b"another command"))


def test_lost_write_in_the_history_is_caught() -> None:
    cluster = running_cluster()
    cluster.run_until(lambda: False, 20, client_traffic=False, faults=False)
    written = [op for op in cluster.history.operations() if op.input[0] == "put" and op.ret < 1e18]
    assert written, "no write was acknowledged"
    key = written[-1].input[1]
    # A read after everything, claiming the key was never written: a lost write.
    op_id = cluster.history.invoke(99, ("get", key), cluster.stamp())
    cluster.history.respond(op_id, "never written", cluster.stamp())
    with pytest.raises(Violation, match="not linearizable"):
        cluster.check_history()


def test_no_progress_after_healing_is_caught() -> None:
    cluster = running_cluster(liveness_ticks=30)
    for node_id in cluster.ids:
        cluster.network.isolate(node_id)  # "healing" that heals nothing
    with pytest.raises(Violation, match="liveness"):
        cluster.commit_probe()


def test_stale_reads_are_caught_end_to_end() -> None:
    """Serving reads from a server's own state is not linearizable, and the runs show it."""
    caught = 0
    for seed in range(6):
        config = SimConfig(seed=seed, local_reads=True, check_quorum=False, keys=1, clients=4)
        config.fault_profile = "partitions"
        try:
            Cluster(config).run()
        except Violation as exc:
            assert "not linearizable" in str(exc)
            caught += 1
    assert caught >= 3, f"stale reads caught in only {caught} of 6 runs"
