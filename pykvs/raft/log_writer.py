"""The node's writes to its ``AsyncLogStore``, queued from the Ready loop and synced off it.

One ``save_async`` per Ready that has something to persist. A Ready that only moves the commit
index is not written at once: nothing depends on that index being durable (a restarted server
re-learns it from the leader; the entries it covers are durable on a quorum already), so the
next Ready's save carries it, or a write of its own one tick later if none comes. The log
compactions the core asks for are queued as they come, in order with the saves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from pykvs.raft.core import Compaction, Ready
from pykvs.raft.interfaces import AsyncLogStore
from pykvs.raft.types import HardState


class LogWriter:
    def __init__(self, log_store: AsyncLogStore, tick_interval: float,
                 counters: dict[str, int], fail: Callable[[BaseException], None]) -> None:
        self._log = log_store
        self._tick_interval = tick_interval
        self._counters = counters
        self._fail = fail  # stops the node: a Raft server must not go on after its disk lied
        self._deferred_hard_state: HardState | None = None  # a commit index not yet written
        self._deferred_flush: asyncio.TimerHandle | None = None
        self._closed = False

    def save(self, rd: Ready) -> asyncio.Future[None]:
        """Start writing ``rd`` durably; returns the future of its sync."""
        self._counters["saves"] += 1
        hard_state = rd.hard_state or self._deferred_hard_state  # a newer one supersedes it
        self._deferred_hard_state = None
        return self._log.save_async(hard_state, rd.entries, rd.snapshot)

    def compact(self, compaction: Compaction) -> asyncio.Future[None]:
        """Queue the compaction a Ready asks for (its entries are durable and applied);
        returns the future of its sync."""
        return self._log.compact_async(compaction.upto, compaction.meta)

    def defer_hard_state(self, hard_state: HardState) -> None:
        """Write ``hard_state`` (only its commit index is new) with the next save, or in one
        tick at the latest."""
        self._deferred_hard_state = hard_state
        if self._deferred_flush is None:
            self._deferred_flush = asyncio.get_running_loop().call_later(
                self._tick_interval, self._flush_hard_state)

    def close(self) -> None:
        """Write no more deferred hard state."""
        self._closed = True
        if self._deferred_flush is not None:
            self._deferred_flush.cancel()

    def _flush_hard_state(self) -> None:
        self._deferred_flush = None
        hard_state, self._deferred_hard_state = self._deferred_hard_state, None
        if hard_state is None or self._closed:
            return
        self._counters["saves"] += 1

        def check(done: asyncio.Future[None]) -> None:
            if not done.cancelled() and done.exception() is not None:
                self._fail(done.exception())  # type: ignore[arg-type]

        self._log.save_async(hard_state, ()).add_done_callback(check)
