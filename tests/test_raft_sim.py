"""The deterministic Raft simulator: its network, and (below) seeded whole-cluster runs."""

from __future__ import annotations

import random

import pytest
from raftsim.network import RELIABLE, Faults, Network

# --- the simulated network ---------------------------------------------------------------------


def drain(net: Network, until: int) -> list[tuple[int, object, object, object]]:
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
    net.send("a", "b", "same side", now=1)
    net.send("a", "c", "across", now=1)
    net.send("e", "d", "other side", now=1)
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
