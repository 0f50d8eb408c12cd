"""Raft storage on LMDB: the log, the stable store and the snapshot store of one server.

One LMDB environment per server directory (``<dir>/data.mdb``, ``<dir>/lock.mdb``) holds three
named databases. Every record carries a CRC32 so that damage is found before it is served.

Record layout
-------------
``seal(key, payload) = payload || u32_be(crc32(key || payload))`` -- the key is inside the CRC,
so a record copied or misdirected to another key is caught as well as a flipped bit.

``logs``       key ``u64_be(index)`` -> ``seal(msgpack([term, type, data]))``
``stable``     key ``b"format"``        -> ``seal(msgpack(1))``
               key ``b"hard_state"``    -> ``seal(msgpack([term, vote, commit]))``
               key ``b"log_base"``      -> ``seal(msgpack([index, term]))``: the last compacted
                                           entry, so ``term(first_index() - 1)`` answers
               key ``b"snapshot_meta"`` -> ``seal(msgpack(SnapshotMeta.to_wire()))``: the snapshot
                                           the log was compacted to or reset from
               key ``b"fact/" + name``  -> ``seal(msgpack(value))``: small durable facts
``snapshots``  key ``b"m" + u64_be(index)`` -> ``seal(msgpack([meta_wire, body_id, n_chunks]))``
               key ``b"b" + u64_be(body_id) + u32_be(chunk_no)`` -> ``seal(chunk)``
               A body is written chunk by chunk under a fresh ``body_id``; it becomes visible only
               when its ``m`` record is written, in the same transaction as its last chunk. The
               newest two snapshots (by index) are kept; chunks no ``m`` record names (a sink that
               crashed or was aborted) are swept at open.

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

Corruption: refuse, never truncate
----------------------------------
LMDB commits are atomic: data pages are written and synced before the meta page that makes them
reachable. A crash therefore loses only transactions whose commit had not returned, and LMDB
already discards those; it cannot leave half a record reachable. So a reachable record with a bad
CRC, a hole in the index sequence, a term that goes backwards or a commit index past the end of the
log is damage after the fact (media, a bug, a hand edit, a disk that ignored fsync), not a torn
write. Each such record was committed, hence ``save()`` returned for it, hence the driver may have
acknowledged it and the leader may have counted this server in a quorum. This layer cannot know
whether it did, so dropping any reachable record is never provably safe here: opening fails with
``CorruptLogError`` naming the file and the index. Start-up checks the tail (the last
``verify_tail`` records, or all with ``verify="full"``) and the structure (contiguity, base,
commit); every later read checks the CRC of what it returns, so a record outside the verified tail
is never served either. Recovery is an operator's decision: restore the directory, or wipe it and
re-join the cluster as a new server, which then receives a snapshot.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import itertools
import logging
import os
import queue
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeAlias

import lmdb
import msgpack

from pykvs._pack import packb
from pykvs.raft.interfaces import CompactedError, UnavailableError
from pykvs.raft.types import Entry, EntryType, HardState, SnapshotMeta

log = logging.getLogger(__name__)

# Transactions here never use buffers=True: values are bytes copied out of the map.
_Txn: TypeAlias = "lmdb.Transaction[bytes]"

FORMAT_VERSION = 1
DEFAULT_MAP_SIZE = 256 << 20
DEFAULT_MAX_MAP_SIZE = 64 << 30
DEFAULT_CHUNK_SIZE = 1 << 20
# Bounds on one coalesced write transaction (group commit).
_MAX_BATCH_JOBS = 1024
_MAX_BATCH_BYTES = 64 << 20

_K_FORMAT = b"format"
_K_HARD_STATE = b"hard_state"
_K_LOG_BASE = b"log_base"
_K_SNAPSHOT_META = b"snapshot_meta"
_K_FACT = b"fact/"
_K_SNAP_META = b"m"
_K_SNAP_BODY = b"b"


class StorageError(Exception):
    """Base class of the errors this module raises."""


class CorruptionError(StorageError):
    """A stored record failed its check; the store refuses to serve it."""

    def __init__(self, path: str, what: str, reason: str, index: int | None = None) -> None:
        self.path = path
        self.what = what
        self.index = index
        self.reason = reason
        at = f" at index {index}" if index is not None else ""
        super().__init__(
            f"{path}: {what}{at} is corrupt ({reason}); refusing to serve it. Restore the data "
            f"directory, or wipe it and re-join the cluster as a new server."
        )


class CorruptLogError(CorruptionError):
    """A log record (or the log's structure) is damaged; ``index`` names the first bad one."""


class CorruptSnapshotError(CorruptionError):
    """A snapshot's metadata or body failed its CRC or size check."""


class SnapshotNotFoundError(StorageError, LookupError):
    """No snapshot at that index (never written, or removed by the keep-two rotation)."""


class StorageFullError(StorageError):
    """The LMDB map may not grow further; the write was rolled back, nothing was lost."""


class StorageFailedError(StorageError):
    """An earlier write failed inside LMDB; the store takes no more writes until reopened."""


class StorageClosedError(StorageError):
    """The store was closed."""


class StorageLockedError(StorageError):
    """Another process (or another store in this one) has the directory open."""


def _index_key(index: int) -> bytes:
    return index.to_bytes(8, "big")


def _seal(key: bytes, payload: bytes) -> bytes:
    return payload + zlib.crc32(payload, zlib.crc32(key)).to_bytes(4, "big")


def _unseal(key: bytes, value: bytes) -> bytes | None:
    """The payload of a sealed record, or None when its CRC does not match."""
    if len(value) < 4:
        return None
    payload = value[:-4]
    if zlib.crc32(payload, zlib.crc32(key)).to_bytes(4, "big") != value[-4:]:
        return None
    return payload


def _pack(obj: Any) -> bytes:
    return packb(obj)


def _unpack(payload: bytes) -> Any:
    return msgpack.unpackb(payload, raw=False, strict_map_key=False)


def _encode_entry(entry: Entry) -> bytes:
    return _seal(_index_key(entry.index), _pack((entry.term, int(entry.type), entry.data)))


@dataclass(frozen=True, slots=True)
class _LogState:
    """The log's bounds and small durable state, swapped as a whole after each commit."""

    base_index: int  # last compacted index (0 when never compacted)
    base_term: int
    last: int  # last index held (== base_index when the log is empty)
    hard_state: HardState
    snapshot_meta: SnapshotMeta | None

    @property
    def first(self) -> int:
        return self.base_index + 1


class _Job:
    """One write request: ``apply(txn, state) -> (state, result)`` plus how to report back."""

    __slots__ = ("apply", "finish", "size")

    def __init__(
        self,
        apply: Callable[[_Txn, _LogState], tuple[_LogState, Any]],
        finish: Callable[[Any, BaseException | None], None],
        size: int,
    ) -> None:
        self.apply = apply
        self.finish = finish
        self.size = size


class _JobFailed(Exception):
    """A job raised (bad arguments); the batch is rolled back and retried job by job."""


class _Env:
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
        self.state: _LogState | None = None  # set by LMDBLogStore once loaded
        self.closed = False
        self._closing = False  # no more submissions: the writer's stop marker is queued
        self.failed: BaseException | None = None
        self.stats = {"saves": 0, "entries_saved": 0, "commits": 0, "map_grows": 0}
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._submit_lock = threading.Lock()

    # -- reads -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def read(self) -> Iterator[_Txn]:
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

    def run_sync(self, apply: Callable[[_Txn, _LogState], tuple[_LogState, Any]],
                 size: int = 0) -> Any:
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def finish(result: Any, exc: BaseException | None) -> None:
            if exc is None:
                done.set_result(result)
            else:
                done.set_exception(exc)

        self.submit(_Job(apply, finish, size))
        return done.result()

    def run_async(self, apply: Callable[[_Txn, _LogState], tuple[_LogState, Any]],
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
            while len(batch) < _MAX_BATCH_JOBS and size < _MAX_BATCH_BYTES:
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


class LMDBLogStore:
    """The Raft log and hard state (``interfaces.LogStore``) on LMDB. Made by ``LMDBStorage``.

    Reads (``term``, ``entries``, ...) may be called from any thread and never block on a write
    in progress: they see the last committed state.
    """

    def __init__(self, env: _Env, verify: Literal["tail", "full"], verify_tail: int) -> None:
        self._env = env
        self._path = env.data_file
        env.state = self._load(verify, verify_tail)

    # -- loading and checking ----------------------------------------------------------------

    def _corrupt(self, what: str, reason: str, index: int | None = None) -> CorruptLogError:
        return CorruptLogError(self._path, what, reason, index)

    def _stable_get(self, txn: _Txn, key: bytes) -> Any:
        raw = txn.get(key, db=self._env.stable)
        if raw is None:
            return None
        payload = _unseal(key, raw)
        if payload is None:
            raise self._corrupt(f"stable record {key.decode()!r}", "CRC mismatch")
        try:
            return _unpack(payload)
        except Exception as exc:
            raise self._corrupt(f"stable record {key.decode()!r}", f"undecodable: {exc}") from None

    def _stable_put(self, txn: _Txn, key: bytes, value: Any) -> None:
        txn.put(key, _seal(key, _pack(value)), db=self._env.stable)

    def _decode(self, index: int, raw: bytes) -> Entry:
        payload = _unseal(_index_key(index), raw)
        if payload is None:
            raise self._corrupt("log record", "CRC mismatch", index)
        try:
            term, etype, data = _unpack(payload)
            if not isinstance(term, int) or not isinstance(data, bytes):
                raise ValueError("wrong field types")
            return Entry(index, term, EntryType(etype), data)
        except Exception as exc:
            raise self._corrupt("log record", f"undecodable: {exc}", index) from None

    def _load(self, verify: Literal["tail", "full"], verify_tail: int) -> _LogState:
        env = self._env
        with env.env.begin(write=True) as txn:
            fmt = self._stable_get(txn, _K_FORMAT)
            if fmt is None:
                if txn.stat(env.logs)["entries"] or txn.stat(env.stable)["entries"]:
                    raise self._corrupt("stable record 'format'", "missing in a non-empty store")
                self._stable_put(txn, _K_FORMAT, FORMAT_VERSION)
            elif fmt != FORMAT_VERSION:
                raise StorageError(f"{self._path}: storage format {fmt!r} is not supported "
                                   f"(this build reads format {FORMAT_VERSION})")
        with env.read() as txn:
            hs = self._stable_get(txn, _K_HARD_STATE)
            base = self._stable_get(txn, _K_LOG_BASE)
            meta = self._stable_get(txn, _K_SNAPSHOT_META)
            try:
                hard_state = HardState() if hs is None else HardState.from_wire(hs)
                base_index, base_term = (0, 0) if base is None else (int(base[0]), int(base[1]))
                snapshot_meta = None if meta is None else SnapshotMeta.from_wire(meta)
            except Exception as exc:
                raise self._corrupt("stable records", f"undecodable: {exc}") from None
            count = txn.stat(env.logs)["entries"]
            last = base_index
            if count:
                cur = txn.cursor(db=env.logs)
                cur.first()
                first_key = int.from_bytes(cur.key(), "big")
                cur.last()
                last = int.from_bytes(cur.key(), "big")
                if first_key != base_index + 1:
                    raise self._corrupt(
                        "log", f"first record is {first_key} but the log was compacted up to "
                        f"{base_index}", first_key)
                if last - first_key + 1 != count:
                    raise self._corrupt("log", "records are missing (a hole in the log)",
                                        self._first_hole(txn, first_key))
                lo = first_key if verify == "full" else max(first_key, last - verify_tail + 1)
                self._verify_range(txn, lo, last, first_key, base_term)
            if hard_state.commit > last:
                raise self._corrupt(
                    "log", f"the hard state's commit index {hard_state.commit} is past the last "
                    f"record {last}: committed entries are gone", last + 1)
        return _LogState(base_index, base_term, last, hard_state, snapshot_meta)

    def _first_hole(self, txn: _Txn, first: int) -> int:
        expect = first
        for key in txn.cursor(db=self._env.logs).iternext(values=False):
            if int.from_bytes(key, "big") != expect:
                return expect
            expect += 1
        return expect

    def _verify_range(self, txn: _Txn, lo: int, hi: int, first: int,
                      base_term: int) -> None:
        """Check CRC, decoding and non-decreasing terms of records ``lo..hi``."""
        # the term check needs the record before `lo`: verify it too (or the base term)
        prev_term = base_term if lo == first else 0
        lo = max(first, lo - 1)
        cur = txn.cursor(db=self._env.logs)
        cur.set_key(_index_key(lo))
        expect = lo
        for key, raw in cur.iternext():
            index = int.from_bytes(key, "big")
            if index != expect:
                raise self._corrupt("log", "records are missing (a hole in the log)", expect)
            entry = self._decode(index, raw)
            if entry.term < prev_term:
                raise self._corrupt("log record", f"term {entry.term} is below the term "
                                    f"{prev_term} of the record before it", index)
            prev_term = entry.term
            expect += 1
        if expect != hi + 1:
            raise self._corrupt("log", "records are missing (a hole in the log)", expect)

    # -- reads (interfaces.LogStore) ---------------------------------------------------------

    @property
    def _state(self) -> _LogState:
        state = self._env.state
        assert state is not None
        return state

    def first_index(self) -> int:
        return self._state.first

    def last_index(self) -> int:
        return self._state.last

    def hard_state(self) -> HardState:
        return self._state.hard_state

    def snapshot_meta(self) -> SnapshotMeta | None:
        return self._state.snapshot_meta

    def _check_range(self, state: _LogState, lo: int, hi: int) -> None:
        if lo < state.first:
            raise CompactedError(f"index {lo} is compacted (the log starts at {state.first})")
        if hi > state.last:
            raise UnavailableError(f"index {hi} is past the last index {state.last}")

    def term(self, index: int) -> int:
        state = self._state
        if index == state.base_index:
            return state.base_term
        self._check_range(state, index, index)
        with self._env.read() as txn:
            raw = txn.get(_index_key(index), db=self._env.logs)
        if raw is None:  # replaced or compacted by a commit that landed since `state` was read
            self._check_range(self._state, index, index)
            raise self._corrupt("log", "record missing", index)
        return self._decode(index, raw).term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries in ``[lo, hi)``; at least one if any is in range, then while the sum of their
        ``data`` sizes stays within ``max_bytes``."""
        state = self._state
        if lo >= hi:
            return []
        self._check_range(state, lo, hi - 1)
        out: list[Entry] = []
        size = 0
        with self._env.read() as txn:
            cur = txn.cursor(db=self._env.logs)
            if cur.set_key(_index_key(lo)):
                for key, raw in cur.iternext():
                    index = int.from_bytes(key, "big")
                    if index >= hi:
                        break
                    entry = self._decode(index, raw)
                    size += len(entry.data)
                    if out and max_bytes is not None and size > max_bytes:
                        break
                    out.append(entry)
        if not out or out[-1].index != lo + len(out) - 1:
            self._check_range(self._state, lo, hi - 1)
            raise self._corrupt("log", "records missing in a range the log claims",
                                lo + len(out))
        return out

    def fact(self, name: str) -> Any:
        """A small durable fact stored with ``put_fact`` (None when absent)."""
        with self._env.read() as txn:
            return self._stable_get(txn, _K_FACT + name.encode())

    # -- writes ------------------------------------------------------------------------------

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: SnapshotMeta | None = None,
    ) -> None:
        """Persist one Ready durably (see ``interfaces.LogStore.save``); blocks until synced.

        Raises ValueError for entries that are not contiguous, leave a hole after the last
        index, or whose terms go backwards, and for a snapshot older than the log's base.
        """
        entries = tuple(entries)
        self._env.count_save(len(entries))
        self._env.run_sync(self._save_job(hard_state, entries, snapshot), _entries_size(entries))

    def save_async(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: SnapshotMeta | None = None,
    ) -> asyncio.Future[None]:
        """As ``save``, from the event loop: queues the write now (calls are applied in the
        order they are made) and returns a future that resolves once it is synced. Concurrent
        calls are coalesced into one transaction and one sync."""
        entries = tuple(entries)
        self._env.count_save(len(entries))
        return self._env.run_async(self._save_job(hard_state, entries, snapshot),
                                   _entries_size(entries))

    def compact(self, upto: int, meta: SnapshotMeta) -> None:
        """Drop entries ``<= upto`` (covered by the snapshot ``meta``), durably."""
        self._env.run_sync(self._compact_job(upto, meta))

    def put_fact(self, name: str, value: Any) -> None:
        """Durably store a small msgpack-able ``value`` under ``name`` in the stable store."""
        key = _K_FACT + name.encode()
        _pack(value)  # fail here, not in the writer thread, if it cannot be encoded

        def apply(txn: _Txn, state: _LogState) -> tuple[_LogState, None]:
            self._stable_put(txn, key, value)
            return state, None

        self._env.run_sync(apply)

    def _save_job(
        self, hard_state: HardState | None, entries: tuple[Entry, ...],
        snapshot: SnapshotMeta | None,
    ) -> Callable[[_Txn, _LogState], tuple[_LogState, None]]:
        def apply(txn: _Txn, state: _LogState) -> tuple[_LogState, None]:
            if snapshot is not None:
                state = self._apply_snapshot(txn, state, snapshot)
            if entries:
                state = self._append(txn, state, entries)
            if hard_state is not None and hard_state != state.hard_state:
                self._stable_put(txn, _K_HARD_STATE, hard_state.to_wire())
                state = replace(state, hard_state=hard_state)
            return state, None

        return apply

    def _compact_job(
        self, upto: int, meta: SnapshotMeta,
    ) -> Callable[[_Txn, _LogState], tuple[_LogState, None]]:
        def apply(txn: _Txn, state: _LogState) -> tuple[_LogState, None]:
            if upto > meta.index:
                raise ValueError(f"compact upto={upto} is past the snapshot's index {meta.index}")
            if upto > state.last:
                raise ValueError(f"compact upto={upto} is past the last index {state.last}")
            if upto > state.base_index:
                term = meta.term if upto == meta.index else self._term_in(txn, state, upto)
                self._delete_range(txn, state.first, upto)
                self._stable_put(txn, _K_LOG_BASE, (upto, term))
                state = replace(state, base_index=upto, base_term=term)
            if state.snapshot_meta is None or meta.index >= state.snapshot_meta.index:
                self._stable_put(txn, _K_SNAPSHOT_META, meta.to_wire())
                state = replace(state, snapshot_meta=meta)
            return state, None

        return apply

    def _term_in(self, txn: _Txn, state: _LogState, index: int) -> int:
        if index == state.base_index:
            return state.base_term
        raw = txn.get(_index_key(index), db=self._env.logs)
        if raw is None:
            raise self._corrupt("log", "record missing", index)
        return self._decode(index, raw).term

    def _delete_range(self, txn: _Txn, lo: int, hi: int) -> None:
        hi_key = _index_key(hi)
        cur = txn.cursor(db=self._env.logs)
        more = cur.set_range(_index_key(lo))
        while more:
            key = cur.key()
            if not key or key > hi_key:
                break
            more = cur.delete()

    def _apply_snapshot(
        self, txn: _Txn, state: _LogState, meta: SnapshotMeta,
    ) -> _LogState:
        if meta.index < state.base_index:
            raise ValueError(f"snapshot at index {meta.index} is older than the log's "
                             f"compaction point {state.base_index}")
        # As memstore: the log is kept only if it holds (index, term) as an entry; a snapshot
        # at the compaction point itself resets the log.
        keeps_log = (state.first <= meta.index <= state.last
                     and self._term_in(txn, state, meta.index) == meta.term)
        if keeps_log:
            self._delete_range(txn, state.first, meta.index)
            last = state.last
        else:
            txn.drop(self._env.logs, delete=False)
            last = meta.index
        self._stable_put(txn, _K_LOG_BASE, (meta.index, meta.term))
        self._stable_put(txn, _K_SNAPSHOT_META, meta.to_wire())
        return replace(state, base_index=meta.index, base_term=meta.term, last=last,
                       snapshot_meta=meta)

    def _append(
        self, txn: _Txn, state: _LogState, entries: tuple[Entry, ...],
    ) -> _LogState:
        start = entries[0].index
        for offset, entry in enumerate(entries):
            if entry.index != start + offset:
                raise ValueError(f"entries are not contiguous: index {entry.index} at position "
                                 f"{offset} after index {start}")
            if offset and entry.term < entries[offset - 1].term:
                raise ValueError(f"entry terms go backwards at index {entry.index}")
        if entries[-1].index <= state.base_index:
            return state  # all covered by the snapshot already
        if start <= state.base_index:  # the head is covered by the snapshot: keep the rest
            entries = entries[state.base_index + 1 - start:]
            start = entries[0].index
        if start > state.last + 1:
            raise ValueError(f"entries start at index {start} but the log ends at {state.last}: "
                             f"that would leave a hole")
        prev_term = self._term_in(txn, state, start - 1)
        if entries[0].term < prev_term:
            raise ValueError(f"entry term {entries[0].term} at index {start} is below the term "
                             f"{prev_term} of the entry before it")
        if start <= state.last:  # a conflict: everything from `start` on is replaced
            self._delete_range(txn, start, state.last)
        txn.cursor(db=self._env.logs).putmulti(
            [(_index_key(e.index), _encode_entry(e)) for e in entries], append=True)
        return replace(state, last=entries[-1].index)


def _entries_size(entries: Sequence[Entry]) -> int:
    return sum(len(e.data) for e in entries)


def _meta_key(index: int) -> bytes:
    return _K_SNAP_META + _index_key(index)


def _body_prefix(body_id: int) -> bytes:
    return _K_SNAP_BODY + body_id.to_bytes(8, "big")


def _chunk_key(body_id: int, chunk_no: int) -> bytes:
    return _body_prefix(body_id) + chunk_no.to_bytes(4, "big")


@dataclass(frozen=True, slots=True)
class _StoredSnapshot:
    meta: SnapshotMeta
    body_id: int
    n_chunks: int


class LMDBSnapshotSink:
    """Writes one snapshot body in chunks of ``chunk_size`` bytes, each chunk in its own
    transaction (so a large body never holds up log writes for long). Nothing is visible until
    ``commit()``. Each call does synchronous disk I/O: call from a worker thread, not the loop."""

    def __init__(self, store: LMDBSnapshotStore, meta: SnapshotMeta, body_id: int) -> None:
        self._store = store
        self._meta = meta
        self._body_id = body_id
        self._buffer = bytearray()
        self._chunks = 0
        self._size = 0
        self._crc = 0
        self._done = False

    def _check_open(self) -> None:
        if self._done:
            raise StorageError(f"snapshot sink for index {self._meta.index} is already "
                               f"committed or aborted")

    def write(self, chunk: bytes) -> None:
        self._check_open()
        self._buffer += chunk
        self._size += len(chunk)
        self._crc = zlib.crc32(chunk, self._crc)
        if len(self._buffer) >= self._store.chunk_size:
            self._flush(final=False, finish=None)

    def _take_chunks(self, final: bool) -> list[tuple[bytes, bytes]]:
        size = self._store.chunk_size
        cut = len(self._buffer) if final else len(self._buffer) - len(self._buffer) % size
        items = []
        for start in range(0, cut, size):
            key = _chunk_key(self._body_id, self._chunks)
            items.append((key, _seal(key, bytes(self._buffer[start:start + size]))))
            self._chunks += 1
        del self._buffer[:cut]
        return items

    def _flush(self, final: bool,
               finish: Callable[[_Txn], Any] | None) -> Any:
        items = self._take_chunks(final)
        db = self._store._env.snapshots

        def apply(txn: _Txn, state: _LogState) -> tuple[_LogState, Any]:
            for key, value in items:
                txn.put(key, value, db=db)
            return state, None if finish is None else finish(txn)

        try:
            return self._store._env.run_sync(apply, sum(len(v) for _, v in items))
        except BaseException:
            self.abort()
            raise

    def commit(self) -> SnapshotMeta:
        """Write the last chunk and the metadata in one transaction; returns the meta with its
        size and CRC filled in. Older snapshots past the newest ``retain`` are removed."""
        self._check_open()
        meta = replace(self._meta, size=self._size, crc=self._crc)
        n_chunks = self._chunks + (1 if self._buffer else 0)
        record = _StoredSnapshot(meta, self._body_id, n_chunks)
        self._flush(final=True, finish=lambda txn: self._store._publish(txn, record))
        self._done = True
        return meta

    def abort(self) -> None:
        """Drop what was written; the snapshot never becomes visible."""
        if self._done:
            return
        self._done = True
        self._buffer.clear()
        # Best effort: chunks left behind are swept at the next open.
        with contextlib.suppress(StorageError):
            self._store._env.run_sync(self._store._delete_body_job(self._body_id))


class LMDBSnapshotStore:
    """Snapshot bodies (``interfaces.SnapshotStore``) in the ``snapshots`` database."""

    def __init__(self, env: _Env, chunk_size: int, retain: int) -> None:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        if retain < 1:
            raise ValueError(f"retain must be at least 1, got {retain}")
        self._env = env
        self.chunk_size = chunk_size
        self.retain = retain
        self._body_ids = itertools.count(self._sweep_orphans() + 1)

    def _corrupt(self, what: str, reason: str, index: int | None = None) -> CorruptSnapshotError:
        return CorruptSnapshotError(self._env.data_file, what, reason, index)

    def _decode_meta(self, key: bytes, raw: bytes) -> _StoredSnapshot:
        index = int.from_bytes(key[1:], "big")
        payload = _unseal(key, raw)
        if payload is None:
            raise self._corrupt("snapshot metadata", "CRC mismatch", index)
        try:
            wire, body_id, n_chunks = _unpack(payload)
            return _StoredSnapshot(SnapshotMeta.from_wire(wire), int(body_id), int(n_chunks))
        except Exception as exc:
            raise self._corrupt("snapshot metadata", f"undecodable: {exc}", index) from None

    def _stored(self, txn: _Txn) -> list[_StoredSnapshot]:
        """All committed snapshots, oldest first."""
        out = []
        cur = txn.cursor(db=self._env.snapshots)
        if cur.set_range(_K_SNAP_META):
            for key, raw in cur.iternext():
                if not key.startswith(_K_SNAP_META):
                    break
                out.append(self._decode_meta(key, raw))
        return out

    def _sweep_orphans(self) -> int:
        """Delete chunks no committed snapshot names (a crashed or aborted sink); returns the
        highest body id in use, so new bodies never reuse one."""
        env = self._env
        with env.env.begin(write=True) as txn:
            live = {s.body_id for s in self._stored(txn)}
            highest = max(live, default=0)
            cur = txn.cursor(db=env.snapshots)
            more = cur.set_range(_K_SNAP_BODY)
            swept = 0
            while more:
                key = cur.key()
                if not key.startswith(_K_SNAP_BODY):
                    break
                body_id = int.from_bytes(key[1:9], "big")
                highest = max(highest, body_id)
                if body_id in live:
                    more = cur.next()
                else:
                    more = cur.delete()
                    swept += 1
        if swept:
            log.info("%s: removed %d chunks of unfinished snapshots", env.data_file, swept)
        return highest

    def _delete_body(self, txn: _Txn, body_id: int) -> None:
        prefix = _body_prefix(body_id)
        cur = txn.cursor(db=self._env.snapshots)
        more = cur.set_range(prefix)
        while more and cur.key().startswith(prefix):
            more = cur.delete()

    def _delete_body_job(
        self, body_id: int,
    ) -> Callable[[_Txn, _LogState], tuple[_LogState, None]]:
        def apply(txn: _Txn, state: _LogState) -> tuple[_LogState, None]:
            self._delete_body(txn, body_id)
            return state, None

        return apply

    def _publish(self, txn: _Txn, record: _StoredSnapshot) -> None:
        """Make ``record`` visible and keep only the newest ``retain`` snapshots (by index)."""
        db = self._env.snapshots
        key = _meta_key(record.meta.index)
        old = txn.get(key, db=db)
        if old is not None:  # a snapshot at the same index is replaced
            self._delete_body(txn, self._decode_meta(key, old).body_id)
        txn.put(key, _seal(key, _pack((record.meta.to_wire(), record.body_id, record.n_chunks))),
                db=db)
        stored = self._stored(txn)
        for gone in stored[:-self.retain]:
            txn.delete(_meta_key(gone.meta.index), db=db)
            self._delete_body(txn, gone.body_id)

    # -- interfaces.SnapshotStore ------------------------------------------------------------

    def create(self, meta: SnapshotMeta) -> LMDBSnapshotSink:
        if self._env.closed:
            raise StorageClosedError(f"{self._env.path}: the store is closed")
        return LMDBSnapshotSink(self, meta, next(self._body_ids))

    def list(self) -> list[SnapshotMeta]:
        """Metadata of the kept snapshots, newest first."""
        with self._env.read() as txn:
            return [s.meta for s in reversed(self._stored(txn))]

    def latest(self) -> SnapshotMeta | None:
        with self._env.read() as txn:
            cur = txn.cursor(db=self._env.snapshots)
            # the last "m" key is the newest: seek past the prefix and step back
            if not cur.set_range(_K_SNAP_META + b"\xff" * 9):
                if not cur.last():
                    return None
            elif not cur.prev():
                return None
            key = cur.key()
            if not key.startswith(_K_SNAP_META):
                return None
            return self._decode_meta(key, cur.value()).meta

    def open(self, index: int) -> Iterator[bytes]:
        """The body of the snapshot at ``index``, chunk by chunk, each chunk's CRC checked as it
        is read and the whole body's size and CRC checked after the last one. Raises
        SnapshotNotFoundError at once if there is no such snapshot."""
        key = _meta_key(index)
        with self._env.read() as txn:
            raw = txn.get(key, db=self._env.snapshots)
        if raw is None:
            raise SnapshotNotFoundError(f"no snapshot at index {index} in {self._env.data_file}")
        return self._stream(self._decode_meta(key, raw))

    def _stream(self, stored: _StoredSnapshot) -> Iterator[bytes]:
        index = stored.meta.index
        size = crc = 0
        for chunk_no in range(stored.n_chunks):
            key = _chunk_key(stored.body_id, chunk_no)
            # one short read per chunk: a long-lived reader would pin old pages (and the gate)
            with self._env.read() as txn:
                raw = txn.get(key, db=self._env.snapshots)
                still_there = raw is not None or txn.get(_meta_key(index),
                                                         db=self._env.snapshots) is not None
            if raw is None:
                if not still_there:
                    raise SnapshotNotFoundError(
                        f"snapshot at index {index} was removed while it was being read")
                raise self._corrupt("snapshot body", f"chunk {chunk_no} is missing", index)
            chunk = _unseal(key, raw)
            if chunk is None:
                raise self._corrupt("snapshot body", f"chunk {chunk_no} CRC mismatch", index)
            size += len(chunk)
            crc = zlib.crc32(chunk, crc)
            yield chunk
        if size != stored.meta.size or crc != stored.meta.crc:
            raise self._corrupt("snapshot body", f"size/CRC {size}/{crc:#010x} do not match the "
                                f"metadata's {stored.meta.size}/{stored.meta.crc:#010x}", index)


class LMDBStorage:
    """The storage of one Raft server: ``log`` (LogStore) and ``snapshots`` (SnapshotStore),
    sharing one LMDB environment under ``path`` and one writer thread.

    Opening checks the log (see the module docstring) and raises ``CorruptLogError`` rather than
    serve a damaged record. ``map_size`` is where the map starts; it doubles on demand up to
    ``max_map_size`` (address space only: the file grows with the data).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        max_map_size: int = DEFAULT_MAX_MAP_SIZE,
        verify: Literal["tail", "full"] = "tail",
        verify_tail: int = 1024,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        retain: int = 2,
    ) -> None:
        if verify not in ("tail", "full"):
            raise ValueError(f"verify must be 'tail' or 'full', got {verify!r}")
        if verify_tail < 1:
            raise ValueError(f"verify_tail must be at least 1, got {verify_tail}")
        self.path = os.fspath(path)
        self._env = _Env(self.path, map_size, max_map_size)
        try:
            self.log = LMDBLogStore(self._env, verify, verify_tail)
            self.snapshots = LMDBSnapshotStore(self._env, chunk_size, retain)
        except BaseException:
            self._env.close()
            raise

    @property
    def data_file(self) -> str:
        return self._env.data_file

    def stats(self) -> dict[str, int]:
        """Counters: saves, entries_saved, commits (fewer than saves when coalesced),
        map_grows, and the current map_size."""
        map_size = 0 if self._env.closed else self._env.env.info()["map_size"]
        return {**self._env.stats, "map_size": map_size}

    def close(self) -> None:
        """Finish queued writes, stop the writer thread and close the environment."""
        self._env.close()

    def __enter__(self) -> LMDBStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
