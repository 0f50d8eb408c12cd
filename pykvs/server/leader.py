"""Work only the leader does: session TTL timers and tombstone reaping, set up when
leadership is won and torn down when it is lost (Consul's monitorLeadership).

As in Consul, TTL timers are not replicated. The leader arms one timer per session with a TTL
(at TTL x 2, Consul's SessionTTLMultiplier, to absorb clock and network slack); when one runs
out the leader replicates a destroy. On gaining leadership every session's timer is armed again
from scratch; on losing it all timers stop.

Tombstones are reaped the way Consul's TombstoneGC does it: the leader remembers, per time
bucket, the highest index at which a delete may have happened, and once a bucket is older than
the tombstone TTL it replicates a reap up to that index.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pykvs import fsm
from pykvs.goformat import NS_PER_SECOND, parse_go_duration
from pykvs.raft.node import NotLeaderError, RaftError
from pykvs.server.rpc import RPCError
from pykvs.server.seam import Retry

if TYPE_CHECKING:
    from pykvs.raft.node import RaftNode
    from pykvs.server.config import ServerConfig
    from pykvs.state.store import StateStore

log = logging.getLogger(__name__)

SESSION_TTL_MULTIPLIER = 2


class SessionTimers:
    """One asyncio timer per session with a TTL; expiry calls ``on_expire(session_id)``."""

    def __init__(self, on_expire: Callable[[str], Awaitable[None]],
                 ttl_multiplier: float = SESSION_TTL_MULTIPLIER) -> None:
        if ttl_multiplier <= 0:
            raise ValueError(f"ttl_multiplier must be positive, got {ttl_multiplier}")
        self.on_expire = on_expire
        self.ttl_multiplier = ttl_multiplier
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.active = False

    def __len__(self) -> int:
        return len(self._timers)

    def start_timer(self, session_id: str, ttl: str) -> None:
        """(Re)arm ``session_id``'s timer; a no-op without a TTL or when not leader."""
        if not self.active or not ttl:
            return
        seconds = parse_go_duration(ttl) / NS_PER_SECOND * self.ttl_multiplier
        self.stop_timer(session_id)
        loop = asyncio.get_running_loop()
        self._timers[session_id] = loop.call_later(seconds, self._expired, session_id)

    def stop_timer(self, session_id: str) -> None:
        handle = self._timers.pop(session_id, None)
        if handle is not None:
            handle.cancel()

    def _expired(self, session_id: str) -> None:
        self._timers.pop(session_id, None)
        task = asyncio.get_running_loop().create_task(self._invalidate(session_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _invalidate(self, session_id: str) -> None:
        try:
            await self.on_expire(session_id)
        except Exception:
            # Leadership may have moved meanwhile; the next leader arms its own timers.
            log.warning("session %s: TTL expired but the destroy failed", session_id,
                        exc_info=True)

    def activate(self, sessions: list[tuple[str, str]]) -> None:
        """Leadership gained: arm a fresh timer for every (id, ttl)."""
        self.active = True
        for session_id, ttl in sessions:
            self.start_timer(session_id, ttl)

    def deactivate(self) -> None:
        """Leadership lost (or shutdown): stop every timer."""
        self.active = False
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    async def close(self) -> None:
        self.deactivate()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class TombstoneGC:
    """Remembers (time bucket, index) pairs and says up to which index tombstones may go."""

    def __init__(self, ttl: float = 15 * 60.0, granularity: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ttl <= 0 or granularity <= 0:
            raise ValueError("tombstone ttl and granularity must be positive")
        self.ttl = ttl
        self.granularity = granularity
        self.clock = clock
        self._buckets: deque[tuple[float, int]] = deque()

    def hint(self, index: int) -> None:
        """A delete may have left tombstones at ``index`` or below."""
        now = self.clock()
        bucket = now - (now % self.granularity)
        if self._buckets and self._buckets[-1][0] == bucket:
            self._buckets[-1] = (bucket, max(index, self._buckets[-1][1]))
        else:
            self._buckets.append((bucket, index))

    def expired(self) -> int:
        """The highest index whose tombstones are now older than the TTL (0 if none)."""
        cutoff = self.clock() - self.ttl
        upto = 0
        while self._buckets and self._buckets[0][0] + self.granularity <= cutoff:
            upto = max(upto, self._buckets.popleft()[1])
        return upto

    def reset(self) -> None:
        self._buckets.clear()


class LeaderDuties:
    """The leader's timers and loops for one server: ``watch(node)`` runs for the node's
    life; ``raft_apply`` proposes the destroys and reaps they decide."""

    def __init__(self, config: ServerConfig, state: StateStore,
                 raft_apply: Callable[..., Awaitable[Any]]) -> None:
        self.config = config
        self.state = state
        self.raft_apply = raft_apply
        self.sessions = SessionTimers(self._expire_session, config.session_ttl_multiplier)
        self.tombstones = TombstoneGC(config.tombstone_ttl, config.tombstone_granularity)
        self.leading = False
        self._tasks: list[asyncio.Task[None]] = []

    async def watch(self, node: RaftNode) -> None:
        """Set up the leader's duties when leadership is gained (after a barrier, so the
        state is current), tear them down when it is lost."""
        async for leading in node.leadership_changes():
            while leading and not self.leading and node.is_leader():
                try:
                    await node.barrier(timeout=max(1.0, self.config.rpc_hold_timeout))
                except (RaftError, NotLeaderError) as exc:
                    log.info("%s: barrier after winning the election failed: %r",
                             self.config.node_name, exc)
                    await asyncio.sleep(self.config.tick_interval)
                else:
                    self._establish()
            if not leading and self.leading:
                self._revoke()

    def restart_session_timers(self) -> None:
        """Arm the timers of the sessions in the state as it is now (after a restore)."""
        _, sessions = self.state.session_list()
        self.sessions.deactivate()
        self.sessions.activate([(s.id, s.ttl) for s in sessions])

    def _establish(self) -> None:
        self.leading = True
        self.restart_session_timers()
        self.tombstones.reset()
        self._tasks.append(asyncio.get_running_loop().create_task(self._reap_tombstones()))
        log.info("%s: leader duties started (%d session timers)", self.config.node_name,
                 len(self.sessions))

    def _revoke(self) -> None:
        self.leading = False
        self.sessions.deactivate()
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        log.info("%s: leader duties stopped", self.config.node_name)

    async def _reap_tombstones(self) -> None:
        while True:
            await asyncio.sleep(self.tombstones.granularity)
            upto = self.tombstones.expired()
            if upto:
                try:
                    await self.raft_apply(fsm.reap_command(upto))
                except (RPCError, Retry) as exc:
                    log.info("%s: tombstone reap up to %d failed: %r", self.config.node_name,
                             upto, exc)

    async def _expire_session(self, session_id: str) -> None:
        log.info("%s: session %s TTL expired", self.config.node_name, session_id)
        command = fsm.session_destroy_command(session_id, ts=time.time_ns())
        await self.raft_apply(command, may_delete=True)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.sessions.close()
