"""Notifier, watch sets and blocking queries (Consul's rules), through the real state store."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

from pykvs.state.store import StateSnapshot, StateStore
from pykvs.state.watch import (
    JITTER_FRACTION,
    MAX_QUERY_TIME,
    Notifier,
    WatchSet,
    blocking_query,
    query_timeout,
)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


def put(store: StateStore, index: int, key: bytes, value: bytes = b"v") -> None:
    with store.write(index) as txn:
        txn.kv_set(index, key, value)


def read_key(key: bytes):
    def read(ws: WatchSet, version: StateSnapshot):
        return version.kv_get(key, ws)

    return read


async def until(predicate, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.001)


# ------------------------------------------------------------------------------- notifier
def test_fire_wakes_only_waiters_on_fired_ids() -> None:
    async def scenario():
        notifier = Notifier()
        since = notifier.fire_seq
        a = asyncio.ensure_future(notifier.wait(WatchSet({1, 2}), since, 10))
        b = asyncio.ensure_future(notifier.wait(WatchSet({3}), since, 10))
        await until(lambda: notifier.waiting() == 2)
        assert notifier.fire({2, 9}) == 1
        assert await a is True
        assert not b.done()
        assert notifier.waiting() == 1  # a's other registration (id 1) is gone too
        notifier.fire({3})
        assert await b is True
        assert notifier.waiting() == 0

    run(scenario())


def test_wait_times_out_and_unregisters() -> None:
    async def scenario():
        notifier = Notifier()
        assert await notifier.wait(WatchSet({5}), notifier.fire_seq, 0.01) is False
        assert notifier.waiting() == 0

    run(scenario())


def test_fire_between_read_and_wait_is_not_lost() -> None:
    async def scenario():
        notifier = Notifier()
        since = notifier.fire_seq  # noted before "the read"
        notifier.fire({7})  # a write lands after the read, before the wait registers
        assert await notifier.wait(WatchSet({7}), since, 10) is True
        # An unrelated fire in the gap does not wake it.
        since = notifier.fire_seq
        notifier.fire({8})
        assert await notifier.wait(WatchSet({7}), since, 0.01) is False

    run(scenario())


def test_gap_longer_than_history_wakes_conservatively() -> None:
    async def scenario():
        notifier = Notifier(history=4)
        since = notifier.fire_seq
        for i in range(10):
            notifier.fire({100 + i})
        assert await notifier.wait(WatchSet({7}), since, 10) is True

    run(scenario())


def test_a_huge_fire_is_remembered_conservatively() -> None:
    async def scenario():
        notifier = Notifier()
        since = notifier.fire_seq
        notifier.fire(set(range(1000, 100_000)))  # e.g. a delete-tree of a large prefix
        assert notifier.fired_since({7}, since)  # not kept id by id: assume it touched 7
        assert await notifier.wait(WatchSet({7}), since, 10) is True

    run(scenario())


def test_fire_from_another_thread_wakes_the_loop() -> None:
    async def scenario():
        notifier = Notifier()
        waiting = asyncio.ensure_future(notifier.wait(WatchSet({1}), notifier.fire_seq, 10))
        await until(lambda: notifier.waiting() == 1)
        thread = threading.Thread(target=notifier.fire, args=({1},))
        thread.start()
        assert await waiting is True
        thread.join()

    run(scenario())


def test_fire_all_wakes_everyone() -> None:
    async def scenario():
        notifier = Notifier()
        waits = [
            asyncio.ensure_future(notifier.wait(WatchSet({i}), notifier.fire_seq, 10))
            for i in range(5)
        ]
        await until(lambda: notifier.waiting() == 5)
        assert notifier.fire_all() == 5
        assert all(await asyncio.gather(*waits))

    run(scenario())


def test_query_timeout_follows_consul() -> None:
    rng = random.Random(1)
    for _ in range(200):
        t = query_timeout(16.0, rng=rng)
        assert 16.0 <= t <= 16.0 + 16.0 / JITTER_FRACTION
    assert MAX_QUERY_TIME <= query_timeout(10_000, rng=rng) <= MAX_QUERY_TIME * 17 / 16
    assert 300 <= query_timeout(None, rng=rng) <= 300 * 17 / 16


# -------------------------------------------------------------------------- blocking query
def test_index_zero_returns_at_once_and_never_reports_zero() -> None:
    async def scenario():
        store = StateStore()
        index, entry = await store.blocking_query(read_key(b"k"), 0, 10)
        assert (index, entry) == (1, None)

    run(scenario())


def test_blocking_query_wakes_on_write() -> None:
    async def scenario():
        store = StateStore()
        put(store, 5, b"k", b"one")
        query = asyncio.ensure_future(store.blocking_query(read_key(b"k"), 5, 20))
        await until(lambda: store.notifier.waiting() == 1)
        put(store, 6, b"other")  # another key: no wake-up
        await asyncio.sleep(0)
        assert not query.done()
        put(store, 7, b"k", b"two")
        index, entry = await query
        assert index == 7 and entry.value == b"two"

    run(scenario())


def test_blocking_query_times_out_with_the_last_result() -> None:
    async def scenario():
        store = StateStore()
        put(store, 3, b"k")
        loop = asyncio.get_running_loop()
        started = loop.time()
        index, entry = await store.blocking_query(read_key(b"k"), 3, 0.05, rng=random.Random(0))
        assert index == 3 and entry.value == b"v"
        assert loop.time() - started >= 0.05

    run(scenario())


def test_unchanged_rewrite_keeps_waiting_until_a_real_change() -> None:
    async def scenario():
        store = StateStore()
        put(store, 2, b"a/x")
        put(store, 3, b"b/y")

        def read(ws, version):
            return version.kv_list(b"a/", ws)

        query = asyncio.ensure_future(store.blocking_query(read, 2, 20))
        await until(lambda: store.notifier.waiting() == 1)
        put(store, 4, b"a/x")  # same value: Consul does not rewrite it, index stays 2
        put(store, 5, b"a/z")
        index, entries = await query
        assert index == 5 and [e.key for e in entries] == [b"a/x", b"a/z"]

    run(scenario())


def test_an_index_above_the_current_one_blocks_until_the_index_passes_it() -> None:
    """Consul's blockingQuery waits while the index is at or below MinQueryIndex, so an index
    from the future (another cluster's, a typo) blocks rather than spinning the client."""
    async def scenario():
        store = StateStore()
        put(store, 9, b"k")
        query = asyncio.ensure_future(store.blocking_query(read_key(b"k"), 50, 20))
        await until(lambda: store.notifier.waiting() == 1)
        since = store.notifier.fire_seq
        put(store, 10, b"k", b"v10")  # fires the watch: read again, 10 <= 50, wait again
        await until(lambda: store.notifier.fire_seq > since and store.notifier.waiting() == 1)
        assert not query.done()
        put(store, 51, b"k", b"v51")
        index, entry = await query
        assert index == 51 and entry is not None and entry.value == b"v51"

    run(scenario())


def test_an_index_above_the_current_one_answers_at_the_wait_s_end() -> None:
    async def scenario():
        store = StateStore()
        put(store, 9, b"k")
        index, entry = await store.blocking_query(read_key(b"k"), 50, 0.05)
        assert index == 9 and entry is not None

    run(scenario())


def test_restore_wakes_blocked_queries() -> None:
    async def scenario():
        store = StateStore()
        put(store, 9, b"k")
        query = asyncio.ensure_future(store.blocking_query(read_key(b"k"), 9, 20))
        await until(lambda: store.notifier.waiting() == 1)
        empty = StateStore()
        store.replace(empty.snapshot(), empty.lock_delays)
        index, entry = await query  # the index went backwards: answer at once
        assert (index, entry) == (1, None)
        # The same when the restored index is at or above the one waited for.
        big = StateStore()
        put(big, 40, b"k", b"restored")
        query = asyncio.ensure_future(store.blocking_query(read_key(b"k"), 60, 20))
        await until(lambda: store.notifier.waiting() == 1)
        store.replace(big.snapshot(), big.lock_delays)
        index, entry = await asyncio.wait_for(query, 5)  # not the 20 s wait: at once
        assert index == 40 and entry is not None and entry.value == b"restored"

    run(scenario())


def test_ten_thousand_waiters_one_write_exactly_one_wakes() -> None:
    async def scenario():
        store = StateStore()
        keys = [f"service/web-{i}/config".encode() for i in range(10_000)]
        with store.write(1) as txn:
            for key in keys:
                txn.kv_set(1, key, b"v")
        queries = [
            asyncio.ensure_future(store.blocking_query(read_key(key), 1, 60)) for key in keys
        ]
        await until(lambda: store.notifier.waiting() == len(keys), timeout=20)
        put(store, 2, keys[4321], b"changed")
        # The commit fired synchronously: exactly one waiter left the notifier.
        assert store.notifier.waiting() == len(keys) - 1
        index, entry = await asyncio.wait_for(queries[4321], 10)
        assert index == 2 and entry.key == keys[4321]
        for _ in range(3):
            await asyncio.sleep(0)  # let any wrongly resolved future run to completion
        assert [i for i, q in enumerate(queries) if q.done()] == [4321]
        for q in queries:
            q.cancel()
        await asyncio.gather(*queries, return_exceptions=True)
        assert store.notifier.waiting() == 0

    run(scenario())


def test_blocking_query_rejects_negative_index() -> None:
    async def scenario():
        with pytest.raises(ValueError, match="min_index"):
            await blocking_query(Notifier(), lambda ws: (1, None), -1)

    run(scenario())
