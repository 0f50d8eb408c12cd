"""The LMDB environment of one server and its single writer thread.

Writes: one writer thread
-------------------------
Every write (``save``, ``compact``, snapshot chunks) runs in one dedicated writer thread, which
takes whatever is queued (up to a bound) and applies it in **one** write transaction with **one**
sync (group commit). ``save()`` blocks its caller until the commit; ``save_async()`` returns an
awaitable future at once, so the event loop keeps serving while the disk syncs (py-lmdb releases
the GIL during the commit). Calls are applied in the order they are made. If one request in a
coalesced batch is invalid, the batch is rolled back and its requests are retried one by one, so
only the bad one fails.

A full map (``lmdb.MapFullError``) rolls the transaction back, doubles the map (up to
``max_map_size``) and retries; past the cap the write fails with ``StorageFullError`` and nothing
earlier is lost. Any other LMDB error during a write (EIO on fsync, say) leaves the page cache in
an unknown state, so the store refuses every later write (``StorageFailedError``) until reopened.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import lmdb

from pykvs.raft.storage.errors import (
    StorageClosedError,
    StorageFailedError,
    StorageFullError,
    StorageLockedError,
)
from pykvs.raft.storage.records import MAX_BATCH_BYTES, MAX_BATCH_JOBS, LogState, Txn

log = logging.getLogger(__name__)


class _Job:
    """One write request: ``apply(txn, state) -> (state, result)`` plus how to report back."""

    __slots__ = ("apply", "finish", "size")

    def __init__(
        self,
        apply: Callable[[Txn, LogState], tuple[LogState, Any]],
        finish: Callable[[Any, BaseException | None], None],
        size: int,
    ) -> None:
        self.apply = apply
        self.finish = finish
        self.size = size


class _JobFailed(Exception):
    """A job raised (bad arguments); the batch is rolled back and retried job by job."""


class Env:
    """The LMDB environment, its databases, the read gate and the single writer thread."""

    def __init__(self, path: str, map_size: int, max_map_size: int) -> None:
        self.path = path
        self.data_file = os.path.join(path, "data.mdb")
        self.max_map_size = max(max_map_size, map_size)
        os.makedirs(path, exist_ok=True)
        self._lock_fd = os.open(os.path.join(path, "pykvs.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StorageLockedError(f"{path} is already open (another server uses it)") from None
        try:
            self.env = lmdb.open(path, map_size=map_size, max_dbs=4, subdir=True, sync=True,
                                 metasync=True, readahead=False)
        except BaseException:
            os.close(self._lock_fd)
            raise
        try:
            # LMDB syncs its files but not the directory entries it may just have created:
            # without this, a power cut could lose a new data.mdb after saves had returned.
            dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            self.logs = self.env.open_db(b"logs")
            self.stable = self.env.open_db(b"stable")
            self.snapshots = self.env.open_db(b"snapshots")
        except BaseException:
            self.env.close()
            os.close(self._lock_fd)
            raise
        # set_mapsize() needs no transaction open in the process: readers hold the gate for the
        # few microseconds of their transaction, the writer takes it to grow the map.
        self.gate = threading.Lock()
        self.state: LogState | None = None  # set by LMDBLogStore once loaded
        self.closed = False
        self._closing = False  # no more submissions: the writer's stop marker is queued
        self.failed: BaseException | None = None
        self.stats = {"saves": 0, "entries_saved": 0, "commits": 0, "map_grows": 0}
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._submit_lock = threading.Lock()

    # -- reads -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def read(self) -> Iterator[Txn]:
        with self.gate:
            if self.closed:
                raise StorageClosedError(f"{self.path}: the store is closed")
            with self.env.begin() as txn:
                yield txn

    # -- writes ------------------------------------------------------------------------------

    def count_save(self, n_entries: int) -> None:
        self.stats["saves"] += 1
        self.stats["entries_saved"] += n_entries

    def submit(self, job: _Job) -> None:
        if threading.current_thread() is self._thread:
            raise RuntimeError("a storage write was requested from inside the writer thread")
        with self._submit_lock:  # so that no job lands behind the stop marker
            if self._closing:
                raise StorageClosedError(f"{self.path}: the store is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._writer_loop, name=f"pykvs-lmdb-writer:{self.path}",
                    daemon=True)
                self._thread.start()
            self._queue.put(job)

    def run_sync(self, apply: Callable[[Txn, LogState], tuple[LogState, Any]],
                 size: int = 0) -> Any:
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def finish(result: Any, exc: BaseException | None) -> None:
            if exc is None:
                done.set_result(result)
            else:
                done.set_exception(exc)

        self.submit(_Job(apply, finish, size))
        return done.result()

    def run_async(self, apply: Callable[[Txn, LogState], tuple[LogState, Any]],
                  size: int = 0) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()

        def resolve(result: Any, exc: BaseException | None) -> None:
            if fut.cancelled():
                return
            if exc is None:
                fut.set_result(result)
            else:
                fut.set_exception(exc)

        def finish(result: Any, exc: BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
                loop.call_soon_threadsafe(resolve, result, exc)

        self.submit(_Job(apply, finish, size))
        return fut

    def _writer_loop(self) -> None:
        stop = False
        while not stop:
            job = self._queue.get()
            if job is None:
                break
            batch, size = [job], job.size
            while len(batch) < MAX_BATCH_JOBS and size < MAX_BATCH_BYTES:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
                size += nxt.size
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Job]) -> None:
        if self.failed is not None:
            err = StorageFailedError(f"{self.path}: an earlier write failed ({self.failed}); "
                                     f"reopen the store")
            for job in batch:
                job.finish(None, err)
            return
        try:
            results = self._commit(batch)
        except _JobFailed as failed:
            if len(batch) == 1:
                batch[0].finish(None, failed.__cause__)
            else:
                for job in batch:
                    self._run_batch([job])
            return
        except StorageFullError as exc:
            for job in batch:
                job.finish(None, exc)
            return
        except BaseException as exc:  # lmdb.Error (EIO on sync, say), or a bug of ours
            log.error("%s: write failed, refusing further writes: %r", self.data_file, exc)
            self.failed = exc
            for job in batch:
                job.finish(None, StorageFailedError(f"{self.path}: write failed: {exc!r}"))
            return
        for job, result in zip(batch, results, strict=True):
            job.finish(result, None)

    def _commit(self, batch: list[_Job]) -> list[Any]:
        while True:
            assert self.state is not None
            txn = self.env.begin(write=True)
            try:
                state, results = self.state, []
                for job in batch:
                    try:
                        state, result = job.apply(txn, state)
                    except lmdb.Error:
                        raise
                    except Exception as exc:  # bad arguments, or a corrupt record it read
                        raise _JobFailed() from exc
                    results.append(result)
                txn.commit()
            except lmdb.MapFullError:
                txn.abort()
                self._grow()
                continue
            except BaseException:
                txn.abort()
                raise
            self.state = state
            self.stats["commits"] += 1
            return results

    def _grow(self) -> None:
        current = self.env.info()["map_size"]
        if current >= self.max_map_size:
            raise StorageFullError(
                f"{self.data_file}: the LMDB map is full at {current} bytes and may not grow "
                f"past max_map_size={self.max_map_size}; the write was rolled back (nothing "
                f"was stored, nothing earlier was lost). Compact the log or raise max_map_size.")
        new_size = min(current * 2, self.max_map_size)
        with self.gate:
            self.env.set_mapsize(new_size)
        self.stats["map_grows"] += 1
        log.info("%s: LMDB map grown from %d to %d bytes", self.data_file, current, new_size)

    def close(self) -> None:
        with self._submit_lock:
            if self._closing:
                return
            self._closing = True
            if self._thread is not None:
                self._queue.put(None)
        if self._thread is not None:
            self._thread.join()
        with self.gate:
            self.closed = True
            self.env.close()
        os.close(self._lock_fd)
