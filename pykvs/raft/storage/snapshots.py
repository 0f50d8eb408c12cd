"""Snapshot bodies on LMDB (``interfaces.SnapshotStore``), in the ``snapshots`` database.

A body is written in chunks under a fresh body id and becomes visible only when its metadata
record is written, in the same transaction as its last chunk; the newest ``retain`` snapshots
are kept, and chunks no metadata names (a crashed or aborted sink) are swept at open.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from pykvs.raft.storage.errors import (
    CorruptSnapshotError,
    SnapshotNotFoundError,
    StorageClosedError,
    StorageError,
)
from pykvs.raft.storage.records import (
    K_SNAP_BODY,
    K_SNAP_META,
    LogState,
    Txn,
    body_prefix,
    chunk_key,
    meta_key,
    pack,
    seal,
    unpack,
    unseal,
)
from pykvs.raft.storage.writer import Env
from pykvs.raft.types import SnapshotMeta

log = logging.getLogger(__name__)


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
            key = chunk_key(self._body_id, self._chunks)
            items.append((key, seal(key, bytes(self._buffer[start:start + size]))))
            self._chunks += 1
        del self._buffer[:cut]
        return items

    def _flush(self, final: bool,
               finish: Callable[[Txn], Any] | None) -> Any:
        items = self._take_chunks(final)
        db = self._store._env.snapshots

        def apply(txn: Txn, state: LogState) -> tuple[LogState, Any]:
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

    def __init__(self, env: Env, chunk_size: int, retain: int) -> None:
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
        payload = unseal(key, raw)
        if payload is None:
            raise self._corrupt("snapshot metadata", "CRC mismatch", index)
        try:
            wire, body_id, n_chunks = unpack(payload)
            return _StoredSnapshot(SnapshotMeta.from_wire(wire), int(body_id), int(n_chunks))
        except Exception as exc:
            raise self._corrupt("snapshot metadata", f"undecodable: {exc}", index) from None

    def _stored(self, txn: Txn) -> list[_StoredSnapshot]:
        """All committed snapshots, oldest first."""
        out = []
        cur = txn.cursor(db=self._env.snapshots)
        if cur.set_range(K_SNAP_META):
            for key, raw in cur.iternext():
                if not key.startswith(K_SNAP_META):
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
            more = cur.set_range(K_SNAP_BODY)
            swept = 0
            while more:
                key = cur.key()
                if not key.startswith(K_SNAP_BODY):
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

    def _delete_body(self, txn: Txn, body_id: int) -> None:
        prefix = body_prefix(body_id)
        cur = txn.cursor(db=self._env.snapshots)
        more = cur.set_range(prefix)
        while more and cur.key().startswith(prefix):
            more = cur.delete()

    def _delete_body_job(
        self, body_id: int,
    ) -> Callable[[Txn, LogState], tuple[LogState, None]]:
        def apply(txn: Txn, state: LogState) -> tuple[LogState, None]:
            self._delete_body(txn, body_id)
            return state, None

        return apply

    def _publish(self, txn: Txn, record: _StoredSnapshot) -> None:
        """Make ``record`` visible and keep only the newest ``retain`` snapshots (by index)."""
        db = self._env.snapshots
        key = meta_key(record.meta.index)
        old = txn.get(key, db=db)
        if old is not None:  # a snapshot at the same index is replaced
            self._delete_body(txn, self._decode_meta(key, old).body_id)
        txn.put(key, seal(key, pack((record.meta.to_wire(), record.body_id, record.n_chunks))),
                db=db)
        stored = self._stored(txn)
        for gone in stored[:-self.retain]:
            txn.delete(meta_key(gone.meta.index), db=db)
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
            if not cur.set_range(K_SNAP_META + b"\xff" * 9):
                if not cur.last():
                    return None
            elif not cur.prev():
                return None
            key = cur.key()
            if not key.startswith(K_SNAP_META):
                return None
            return self._decode_meta(key, cur.value()).meta

    def open(self, index: int) -> Iterator[bytes]:
        """The body of the snapshot at ``index``, chunk by chunk, each chunk's CRC checked as it
        is read and the whole body's size and CRC checked after the last one. Raises
        SnapshotNotFoundError at once if there is no such snapshot."""
        key = meta_key(index)
        with self._env.read() as txn:
            raw = txn.get(key, db=self._env.snapshots)
        if raw is None:
            raise SnapshotNotFoundError(f"no snapshot at index {index} in {self._env.data_file}")
        return self._stream(self._decode_meta(key, raw))

    def _stream(self, stored: _StoredSnapshot) -> Iterator[bytes]:
        index = stored.meta.index
        size = crc = 0
        for chunk_no in range(stored.n_chunks):
            key = chunk_key(stored.body_id, chunk_no)
            # one short read per chunk: a long-lived reader would pin old pages (and the gate)
            with self._env.read() as txn:
                raw = txn.get(key, db=self._env.snapshots)
                still_there = raw is not None or txn.get(meta_key(index),
                                                         db=self._env.snapshots) is not None
            if raw is None:
                if not still_there:
                    raise SnapshotNotFoundError(
                        f"snapshot at index {index} was removed while it was being read")
                raise self._corrupt("snapshot body", f"chunk {chunk_no} is missing", index)
            chunk = unseal(key, raw)
            if chunk is None:
                raise self._corrupt("snapshot body", f"chunk {chunk_no} CRC mismatch", index)
            size += len(chunk)
            crc = zlib.crc32(chunk, crc)
            yield chunk
        if size != stored.meta.size or crc != stored.meta.crc:
            raise self._corrupt("snapshot body", f"size/CRC {size}/{crc:#010x} do not match the "
                                f"metadata's {stored.meta.size}/{stored.meta.crc:#010x}", index)
