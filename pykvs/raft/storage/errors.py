"""The errors of the LMDB store (all are ``StorageError``s)."""

from __future__ import annotations


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


# Raised to callers of ``pykvs.raft.storage`` (and named in tracebacks and logs) under that name,
# as before the store was split into modules.
for _error in (StorageError, CorruptionError, CorruptLogError, CorruptSnapshotError,
               SnapshotNotFoundError, StorageFullError, StorageFailedError, StorageClosedError,
               StorageLockedError):
    _error.__module__ = "pykvs.raft.storage"
del _error
