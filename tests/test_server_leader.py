"""Leader-only work: session TTL timers and tombstone GC bookkeeping."""

from __future__ import annotations

import asyncio

import pytest

from pykvs.server.leader import SessionTimers, TombstoneGC


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_tombstone_gc_reaps_only_buckets_older_than_the_ttl() -> None:
    clock = ManualClock()
    gc = TombstoneGC(ttl=60, granularity=10, clock=clock)
    gc.hint(5)
    gc.hint(7)  # same bucket: the highest index wins
    clock.now += 30
    gc.hint(12)
    assert gc.expired() == 0
    clock.now += 45  # first bucket [1000, 1010) is now older than 60 s; the second is not
    assert gc.expired() == 7
    assert gc.expired() == 0  # handed out once
    clock.now += 100
    assert gc.expired() == 12


def test_tombstone_gc_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="positive"):
        TombstoneGC(ttl=0)


def test_session_timer_fires_after_twice_the_ttl_and_rearms_on_renew() -> None:
    async def scenario() -> None:
        expired: list[str] = []
        done = asyncio.Event()

        async def on_expire(session_id: str) -> None:
            expired.append(session_id)
            done.set()

        timers = SessionTimers(on_expire)
        timers.start_timer("ignored-while-follower", "10ms")
        assert len(timers) == 0
        timers.activate([("a", "10ms"), ("no-ttl", "")])
        assert len(timers) == 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(done.wait(), 5)
        assert expired == ["a"]
        assert loop.time() - started >= 0.02 * 0.9  # TTL x 2 (loop timer resolution aside)
        timers.activate([("b", "1h")])
        timers.deactivate()
        assert len(timers) == 0
        await timers.close()

    asyncio.run(scenario())
