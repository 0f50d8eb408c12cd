"""Snapshots taken here: when, the capture, the write off the event loop, the compaction.

When ``applied`` passes the last snapshot by ``snapshot_threshold`` entries (at most once per
``snapshot_interval`` seconds), or the entries applied since it carry
``snapshot_threshold_bytes`` of payload (or on ``RaftNode.snapshot()``), the FSM's O(1)
point-in-time copy is captured between two Readies (the FSM is then exactly at the core's
applied index) and streamed into the SnapshotStore from a worker thread. Then the core is asked
to compact the log up to ``trailing_entries`` behind it: the next Ready carries the request,
the node queues its write (``AsyncLogStore.compact_async``, synced by the writer thread like
the saves) and hands the write's future back here (``compaction_queued``). The snapshot is done
once that write is durable. After a failure the next automatic one waits ten election timeouts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from pykvs.raft.config import NodeConfig
from pykvs.raft.core import Compaction, RaftCore
from pykvs.raft.errors import RaftError
from pykvs.raft.interfaces import AsyncLogStore, SnapshotImage, SnapshotStore, StateMachine
from pykvs.raft.types import SnapshotMeta

log = logging.getLogger("pykvs.raft.node")  # the node's log, as before this left node.py


class Snapshotter:
    """The snapshots of one node's FSM (see the module docstring)."""

    def __init__(
        self,
        config: NodeConfig,
        log_store: AsyncLogStore,
        snapshots: SnapshotStore,
        fsm: StateMachine,
        counters: dict[str, int],
        require_core: Callable[[], RaftCore],
        wake: Callable[[], None],
    ) -> None:
        self._id = config.id
        self._config = config
        self._log = log_store
        self._snapshots = snapshots
        self._fsm = fsm
        self._counters = counters
        self._require_core = require_core  # the node's core, or its NodeClosed/FailedError
        self._wake = wake  # wake the Ready loop
        self.waiters: list[asyncio.Future[SnapshotMeta]] = []  # RaftNode.snapshot() calls
        self.task: asyncio.Task[None] | None = None  # the snapshot being written
        self._retry_at = 0.0  # after a failed automatic snapshot, wait before retrying
        self.last_automatic = -float("inf")  # monotonic start of the last automatic one
        # Payload bytes of the entries applied after the newest snapshot, taken or installed
        # (the node adds them as it applies), and of those a snapshot being written covers
        # (given back if it fails).
        self.bytes_since = 0
        self._bytes_in = 0
        # The snapshot waiting for its compaction to be queued: its index, and the future
        # that the queued write's future is handed to.
        self._compaction: tuple[int, asyncio.Future[asyncio.Future[None]]] | None = None

    def fail_waiters(self, make_error: Callable[[], BaseException]) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(make_error())

    def snapshot_index(self) -> int:
        meta = self._log.snapshot_meta()
        return meta.index if meta is not None else 0

    def maybe_start(self, core: RaftCore) -> None:
        """Between two Readies (the FSM is exactly at the core's applied index), capture a
        snapshot when one was asked for or the log passed the threshold; a task writes it."""
        if self.task is not None:
            return
        applied, base = core.applied_index, self.snapshot_index()
        config, now = self._config, time.monotonic()
        by_count = (applied - base >= config.snapshot_threshold
                    and now >= self.last_automatic + config.snapshot_interval)
        by_bytes = self.bytes_since >= config.snapshot_threshold_bytes
        automatic = (by_count or by_bytes) and now >= self._retry_at
        if not (self.waiters or automatic):
            return
        waiters, self.waiters = self.waiters, []
        if core.snapshot_pending or applied <= base:
            existing = self._log.snapshot_meta()
            for waiter in waiters:
                if core.snapshot_pending or existing is None:
                    waiter.set_exception(RaftError(
                        f"{self._id}: nothing to snapshot (applied {applied}) or a snapshot "
                        f"from the leader is being installed"))
                else:
                    waiter.set_result(existing)  # nothing new since the last snapshot
            return
        meta = core.snapshot_meta(applied)
        image = self._fsm.snapshot(meta.term)  # O(1) point-in-time copy of the state
        if automatic:
            self.last_automatic = now
        self._bytes_in, self.bytes_since = self.bytes_since, 0
        self.task = asyncio.get_running_loop().create_task(
            self._finish(meta, image, waiters), name=f"raft-snapshot {self._id}")

    def compaction_queued(self, compaction: Compaction, written: asyncio.Future[None]) -> None:
        """The Ready carrying ``compaction`` queued its write: the snapshot that asked for it
        (or for an older one it covers) waits for ``written``."""
        waiting = self._compaction
        if waiting is not None and waiting[0] <= compaction.meta.index:
            self._compaction = None
            if not waiting[1].done():
                waiting[1].set_result(written)
                return
        written.add_done_callback(self._unwaited)

    def _unwaited(self, written: asyncio.Future[None]) -> None:
        if not written.cancelled() and written.exception() is not None:
            log.warning("%s: compacting the log failed: %r", self._id, written.exception())

    async def _finish(self, meta: SnapshotMeta, image: SnapshotImage,
                      waiters: list[asyncio.Future[SnapshotMeta]]) -> None:
        try:
            meta = await asyncio.to_thread(self._write, meta, image)
            core = self._require_core()
            if not core.snapshot_pending:
                await self._compact(core, max(0, meta.index - self._config.trailing_entries),
                                    meta)
            self._counters["snapshots_taken"] += 1
            log.info("%s: snapshot at index %d (%d bytes), log compacted", self._id, meta.index,
                     meta.size)
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(meta)
        except Exception as exc:
            log.warning("%s: snapshot at index %d failed: %r", self._id, meta.index, exc)
            self._retry_at = time.monotonic() + 10 * self._config.election_timeout
            self.bytes_since += self._bytes_in
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
        finally:
            self.task = None
            self._wake()

    async def _compact(self, core: RaftCore, upto: int, meta: SnapshotMeta) -> None:
        """Ask the core to compact to ``upto``; returns once the Ready that carries the request
        has queued its write and the write is durable."""
        core.compact(upto, meta)
        queued: asyncio.Future[asyncio.Future[None]] = asyncio.get_running_loop().create_future()
        self._compaction = (meta.index, queued)
        self._wake()
        try:
            written = await queued
        finally:
            self._compaction = None
        await written

    def _write(self, meta: SnapshotMeta, image: SnapshotImage) -> SnapshotMeta:
        """In a worker thread: stream the FSM image into a sink (committed versions of the tree
        may be read from any thread)."""
        sink = self._snapshots.create(meta)
        try:
            for chunk in image.chunks():
                sink.write(chunk)
            return sink.commit()
        except BaseException:
            sink.abort()
            raise
