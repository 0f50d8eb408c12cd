"""Raft storage on LMDB: the log, the stable store and the snapshot store of one server.

One LMDB environment per server directory (``<dir>/data.mdb``, ``<dir>/lock.mdb``) holds three
named databases. Every record carries a CRC32 so that damage is found before it is served.

- ``records.py``: the record layout (keys, the sealed encoding) and the log's state;
- ``writer.py``: the environment and its one writer thread (group commit, map growth, a failed
  write refusing every later one);
- ``logstore.py``: the log and hard state (``LMDBLogStore``); a damaged record makes opening
  fail, it is never truncated;
- ``snapshots.py``: snapshot bodies in chunks (``LMDBSnapshotStore``, ``LMDBSnapshotSink``);
- ``errors.py``: the ``StorageError`` family.

``LMDBStorage`` below opens the three over one environment; import everything from here.
"""

from __future__ import annotations

import os
from typing import Literal

from pykvs.raft.storage.errors import (
    CorruptionError,
    CorruptLogError,
    CorruptSnapshotError,
    SnapshotNotFoundError,
    StorageClosedError,
    StorageError,
    StorageFailedError,
    StorageFullError,
    StorageLockedError,
)
from pykvs.raft.storage.logstore import LMDBLogStore
from pykvs.raft.storage.records import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAP_SIZE,
    DEFAULT_MAX_MAP_SIZE,
    FORMAT_VERSION,
)
from pykvs.raft.storage.snapshots import LMDBSnapshotSink, LMDBSnapshotStore
from pykvs.raft.storage.writer import Env

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAP_SIZE",
    "DEFAULT_MAX_MAP_SIZE",
    "FORMAT_VERSION",
    "CorruptLogError",
    "CorruptSnapshotError",
    "CorruptionError",
    "LMDBLogStore",
    "LMDBSnapshotSink",
    "LMDBSnapshotStore",
    "LMDBStorage",
    "SnapshotNotFoundError",
    "StorageClosedError",
    "StorageError",
    "StorageFailedError",
    "StorageFullError",
    "StorageLockedError",
]


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
        self._env = Env(self.path, map_size, max_map_size)
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
