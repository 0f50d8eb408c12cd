"""Watch sets, the notifier that wakes blocked readers, and Consul's blocking-query loop.

A read fills a :class:`WatchSet` with the watch ids the tree reported for what it looked at.
After the single writer publishes a new version it calls :meth:`Notifier.fire` with the ids its
commit fired; every waiter registered on one of them wakes.  A write to one key therefore wakes
only the readers that watch that key or a prefix above it.

No lost wake-up: a reader notes :attr:`Notifier.fire_seq` *before* it takes its version.  Fires
numbered up to that value belong to versions published before the read, so the read saw them.
When it registers, the notifier checks the fires recorded since that number (a bounded history)
and wakes the waiter at once if one of them touched its ids, or if the history no longer
reaches back that far.  Registration and firing hold one lock, so a fire is either in that
history or happens after the registration and wakes the waiter.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

DEFAULT_QUERY_TIME = 300.0  # seconds; Consul's default wait
MAX_QUERY_TIME = 600.0  # seconds; Consul caps wait at 10 minutes
JITTER_FRACTION = 16  # Consul adds up to wait/16 of random extra wait

T = TypeVar("T")

_EVERYTHING = None  # marks a fire_all() (or a very large fire) in the history
_HISTORY_IDS = 4096  # fires larger than this are not kept id by id


class WatchSet:
    """The watch ids one read depends on."""

    __slots__ = ("ids",)

    def __init__(self, ids: Iterable[int] = ()) -> None:
        self.ids: set[int] = set(ids)

    def add(self, watch_id: int) -> None:
        self.ids.add(watch_id)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, watch_id: object) -> bool:
        return watch_id in self.ids

    def __iter__(self) -> Iterator[int]:
        return iter(self.ids)


class _Waiter:
    __slots__ = ("future", "ids", "loop")

    def __init__(self, ids: frozenset[int], loop: asyncio.AbstractEventLoop) -> None:
        self.ids = ids
        self.loop = loop
        self.future: asyncio.Future[bool] = loop.create_future()

    def wake(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            _resolve(self.future)
        else:  # fired from another thread (or outside any loop)
            self.loop.call_soon_threadsafe(_resolve, self.future)


def _resolve(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(True)


class Notifier:
    """Maps watch ids to waiting readers; thread-safe, waiters are asyncio futures."""

    def __init__(self, history: int = 1024) -> None:
        if history < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        self._lock = threading.Lock()
        self._waiters: dict[int, set[_Waiter]] = {}
        self._seq = 0
        self._restored_seq = 0  # fire_seq of the last fire_all (a restore)
        self._recent: deque[tuple[int, set[int] | frozenset[int] | None]] = deque(maxlen=history)

    @property
    def fire_seq(self) -> int:
        """How many fires have happened; note it before taking the version a read uses."""
        return self._seq

    def restored_since(self, since_seq: int) -> bool:
        """Whether the whole state was replaced (``fire_all``) after ``since_seq``."""
        return self._restored_seq > since_seq

    def waiting(self) -> int:
        """Number of distinct waiters currently registered."""
        with self._lock:
            return len({w for ws in self._waiters.values() for w in ws})

    def fire(self, ids: set[int] | frozenset[int]) -> int:
        """Wake every waiter registered on one of ``ids``; returns how many woke."""
        with self._lock:
            self._seq += 1
            # A huge fire (a delete-tree) is remembered as "everything": waking a late
            # registrant spuriously is harmless, holding a million ids in the history is not.
            self._recent.append((self._seq, ids if len(ids) <= _HISTORY_IDS else _EVERYTHING))
            if not self._waiters or not ids:
                return 0
            woken: set[_Waiter] = set()
            if len(ids) < len(self._waiters):
                for watch_id in ids:
                    hit = self._waiters.pop(watch_id, None)
                    if hit:
                        woken |= hit
            else:
                for watch_id in [w for w in self._waiters if w in ids]:
                    woken |= self._waiters.pop(watch_id)
            for waiter in woken:
                self._unregister_locked(waiter)
        for waiter in woken:
            waiter.wake()
        return len(woken)

    def fire_all(self) -> int:
        """Wake everyone: the whole state was replaced (a snapshot restore)."""
        with self._lock:
            self._seq += 1
            self._restored_seq = self._seq
            self._recent.append((self._seq, _EVERYTHING))
            woken = {w for ws in self._waiters.values() for w in ws}
            self._waiters.clear()
        for waiter in woken:
            waiter.wake()
        return len(woken)

    def _missed_locked(self, ids: frozenset[int], since_seq: int) -> bool:
        if since_seq >= self._seq:
            return False
        oldest = self._recent[0][0] if self._recent else self._seq + 1
        if oldest > since_seq + 1:
            return True  # the history no longer covers the gap: assume we missed one
        for seq, fired in reversed(self._recent):
            if seq <= since_seq:
                break
            if fired is _EVERYTHING or not ids.isdisjoint(fired):
                return True
        return False

    def fired_since(self, ids: Iterable[int], since_seq: int) -> bool:
        """Whether a fire after ``since_seq`` touched ``ids`` (True if history is too short)."""
        with self._lock:
            return self._missed_locked(frozenset(ids), since_seq)

    def _unregister_locked(self, waiter: _Waiter) -> None:
        for watch_id in waiter.ids:
            bucket = self._waiters.get(watch_id)
            if bucket is not None:
                bucket.discard(waiter)
                if not bucket:
                    del self._waiters[watch_id]

    def register(self, ws: WatchSet, since_seq: int) -> _Waiter:
        """Register a waiter on ``ws``; its future is already done if a fire was missed."""
        waiter = _Waiter(frozenset(ws.ids), asyncio.get_running_loop())
        with self._lock:
            if self._missed_locked(waiter.ids, since_seq):
                waiter.future.set_result(True)
                return waiter
            for watch_id in waiter.ids:
                self._waiters.setdefault(watch_id, set()).add(waiter)
        return waiter

    def cancel(self, waiter: _Waiter) -> None:
        with self._lock:
            self._unregister_locked(waiter)

    async def wait(self, ws: WatchSet, since_seq: int, timeout: float) -> bool:
        """Wait until one of ``ws``'s ids fires (True) or ``timeout`` seconds pass (False)."""
        waiter = self.register(ws, since_seq)
        try:
            if waiter.future.done():
                return True
            done, _ = await asyncio.wait({waiter.future}, timeout=max(timeout, 0.0))
            return bool(done)
        finally:
            self.cancel(waiter)
            waiter.future.cancel()


def query_timeout(
    max_wait: float | None,
    *,
    rng: random.Random | None = None,
    default_query_time: float = DEFAULT_QUERY_TIME,
    max_query_time: float = MAX_QUERY_TIME,
) -> float:
    """Consul's wait: capped at the max, the default when unset, plus up to wait/16 jitter."""
    wait = default_query_time if max_wait is None or max_wait <= 0 else max_wait
    wait = min(wait, max_query_time)
    return wait + (rng or random).uniform(0.0, wait / JITTER_FRACTION)


async def blocking_query(
    notifier: Notifier,
    run_read: Callable[[WatchSet], tuple[int, T]],
    min_index: int,
    max_wait: float | None = None,
    *,
    rng: random.Random | None = None,
    default_query_time: float = DEFAULT_QUERY_TIME,
    max_query_time: float = MAX_QUERY_TIME,
) -> tuple[int, T]:
    """Run ``run_read`` (it returns ``(index, result)`` and fills the watch set it is given).

    With ``min_index`` 0 the read runs once.  Otherwise, as Consul's blockingQuery: while the
    index is at or below ``min_index`` the query waits for one of the read's watch ids to fire
    and reads again, until the wait (plus Consul's jitter) ends; then it answers with its last
    read.  An index above ``min_index`` answers at once.  A restore (the whole state replaced)
    also answers at once, with a read of the restored state: its index may have gone
    backwards, and the client must reset.  The index reported is never below 1.
    """
    if min_index < 0:
        raise ValueError(f"min_index must be >= 0, got {min_index}")
    if min_index == 0:
        index, result = run_read(WatchSet())
        return max(index, 1), result
    loop = asyncio.get_running_loop()
    timeout = query_timeout(
        max_wait, rng=rng, default_query_time=default_query_time, max_query_time=max_query_time
    )
    deadline = loop.time() + timeout
    while True:
        since = notifier.fire_seq
        ws = WatchSet()
        index, result = run_read(ws)
        index = max(index, 1)
        if index > min_index:
            return index, result
        remaining = deadline - loop.time()
        if remaining <= 0 or not await notifier.wait(ws, since, remaining):
            return index, result
        if notifier.restored_since(since):
            index, result = run_read(WatchSet())
            return max(index, 1), result
