"""What the callers of a ``RaftNode`` wait on: ``Completion`` (the outcome of
``propose_nowait(data, on_done)``, re-exported by ``pykvs.raft.node``), the node's records of
the proposals and reads in flight, and the leadership listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from pykvs._aio import wait_for
from pykvs.raft.errors import RaftTimeoutError

log = logging.getLogger("pykvs.raft.node")  # the node's log, as before this left node.py


class Completion:
    """The outcome of a ``propose_nowait(data, on_done)``: read like a done future, and handed
    to ``on_done`` synchronously, in the Ready loop's pass that applies (or drops) the entry.

    Why not an asyncio future: its done-callbacks each go through ``loop.call_soon`` (a Handle
    made, queued and run a loop iteration later), and at tens of thousands of writes a second
    that bookkeeping is a visible share of the loop. ``on_done`` must not block or raise (what
    it raises is logged and dropped); it may propose again.
    """

    __slots__ = ("_done", "_exception", "_on_done", "_result")

    def __init__(self, on_done: Callable[[Completion], None]) -> None:
        self._on_done = on_done
        self._done = False
        self._result: Any = None
        self._exception: BaseException | None = None

    def done(self) -> bool:
        return self._done

    def result(self) -> Any:
        if not self._done:
            raise asyncio.InvalidStateError("the proposal is not applied yet")
        if self._exception is not None:
            raise self._exception
        return self._result

    def exception(self) -> BaseException | None:
        if not self._done:
            raise asyncio.InvalidStateError("the proposal is not applied yet")
        return self._exception

    def set_result(self, result: Any) -> None:
        self._result = result
        self._finish()

    def set_exception(self, exception: BaseException) -> None:
        self._exception = exception
        self._finish()

    def _finish(self) -> None:
        if self._done:
            raise asyncio.InvalidStateError("the proposal already has an outcome")
        self._done = True
        try:
            self._on_done(self)
        except Exception:  # a caller's bug must not stop the Ready loop
            log.exception("a proposal's on_done callback failed")


@dataclass(slots=True)
class Proposal:
    term: int
    future: asyncio.Future[Any] | Completion


@dataclass
class PendingRead:
    future: asyncio.Future[int]
    index: int | None = None  # set once the ReadIndex round confirmed it



class LeadershipListeners:
    """The callbacks told each time the node gains or loses leadership."""

    def __init__(self, node_id: str) -> None:
        self._id = node_id
        self._callbacks: list[Callable[[bool], None]] = []

    def add(self, callback: Callable[[bool], None]) -> Callable[[], None]:
        """Add ``callback``; returns a function that removes it."""
        self._callbacks.append(callback)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

        return remove

    def tell(self, leading: bool) -> None:
        for callback in list(self._callbacks):
            try:
                callback(leading)
            except Exception:
                log.exception("%s: leadership listener %r failed", self._id, callback)

    async def changes(self, is_leader: Callable[[], bool],
                      closed: asyncio.Event) -> AsyncIterator[bool]:
        """``is_leader()`` now, then at each change, until ``closed`` is set (and False then,
        if it was leading)."""
        changes: asyncio.Queue[bool | None] = asyncio.Queue()
        remove = self.add(changes.put_nowait)
        closed_waiter = asyncio.get_running_loop().create_task(closed.wait())
        closed_waiter.add_done_callback(lambda _: changes.put_nowait(None))
        try:
            current = is_leader()
            yield current
            while (leading := await changes.get()) is not None:
                if leading != current:
                    current = leading
                    yield leading
            if current:
                yield False
        finally:
            remove()
            closed_waiter.cancel()


class Changes:
    """What a node's callers wait on between Readies: an event set, and replaced, each time the
    node's observable state may have changed (after every Ready, and at close)."""

    def __init__(self, node_id: str, check: Callable[[], object]) -> None:
        self._id = node_id
        self._check = check  # raises once waiting is pointless (the node closed or failed)
        self._changed = asyncio.Event()

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        """Until ``pred()``; RaftTimeoutError after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not pred():
            self._check()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RaftTimeoutError(f"{self._id}: timed out after {timeout:.2f}s waiting for "
                                       f"{what}")
            with contextlib.suppress(asyncio.TimeoutError):
                await wait_for(self._changed.wait(), remaining)
