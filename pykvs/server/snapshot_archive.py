"""The snapshot archive: what ``GET /v1/snapshot`` answers and ``pykvs snapshot`` saves.

The archive mimics Consul's: a gzip-compressed tar holding ``meta.json`` (Version, ID, Index,
Term, Size, Configuration, as Consul's raft SnapshotMeta), ``state.bin`` and ``SHA256SUMS``
(``<hex>  <name>`` lines, checked on restore and by ``pykvs snapshot inspect``). ``state.bin``
is pykvs's own snapshot stream (pykvs.state.snapshot, CRC-checked), so an archive moves between
pykvs clusters, not between pykvs and Consul; ``meta.json`` says ``"Format": "pykvs-fsm-1"``.

The HTTP API and the CLI both use this module; it knows nothing of either. ``read_snapshot``
and ``SnapshotError`` are here too, for them to verify the state stream an archive holds.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import time
from typing import Any

from pykvs.state.snapshot import SnapshotError, read_header, read_snapshot

ARCHIVE_FORMAT = "pykvs-fsm-1"
META_NAME, STATE_NAME, SUMS_NAME = "meta.json", "state.bin", "SHA256SUMS"


class ArchiveError(ValueError):
    """A snapshot archive that is not one, or whose checksums or state do not verify."""


def stream_header(state: bytes) -> tuple[int, int]:
    """``(index, term)`` from the header of a snapshot stream, without reading it all."""
    try:
        header = read_header(state)
    except SnapshotError as exc:
        raise ArchiveError(f"state is not a pykvs FSM snapshot stream: {exc}") from None
    return header.index, header.term


def build_archive(state: bytes, index: int, term: int, servers: dict[str, str]) -> bytes:
    """The archive of a snapshot stream (see the module docstring)."""
    meta = {
        "Version": 1,
        "ID": f"{term}-{index}-{int(time.time() * 1000)}",
        "Index": index,
        "Term": term,
        "Size": len(state),
        "Format": ARCHIVE_FORMAT,
        "Configuration": {"Servers": [
            {"Suffrage": 0, "ID": sid, "Address": address}
            for sid, address in sorted(servers.items())
        ]},
    }
    meta_bytes = json.dumps(meta, indent=1).encode()
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n"
                   for name, data in ((META_NAME, meta_bytes), (STATE_NAME, state)))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as zipped, \
            tarfile.open(fileobj=zipped, mode="w") as tar:
        for name, data in ((META_NAME, meta_bytes), (STATE_NAME, state),
                           (SUMS_NAME, sums.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = int(time.time())
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _members(data: bytes) -> dict[str, bytes]:
    """The archive's regular files by name; ArchiveError if it is no gzip'd tar or lacks one."""
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                extracted = tar.extractfile(info)
                if extracted is not None:
                    members[info.name] = extracted.read()
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ArchiveError(f"not a snapshot archive (a gzip-compressed tar): {exc}") from None
    for name in (META_NAME, STATE_NAME, SUMS_NAME):
        if name not in members:
            raise ArchiveError(f"snapshot archive has no {name}")
    return members


def read_archive(data: bytes) -> tuple[dict[str, Any], bytes]:
    """``(meta, state stream)`` of an archive whose checksums verify; ArchiveError if not."""
    members = _members(data)
    expected = {}
    for line in members[SUMS_NAME].decode("utf-8", errors="replace").splitlines():
        digest, _, name = line.partition("  ")
        if name:
            expected[name] = digest
    for name in (META_NAME, STATE_NAME):
        actual = hashlib.sha256(members[name]).hexdigest()
        if expected.get(name) != actual:
            raise ArchiveError(f"snapshot archive checksum mismatch for {name}: "
                               f"{SUMS_NAME} says {expected.get(name)!r}, it is {actual}")
    try:
        meta = json.loads(members[META_NAME])
    except ValueError as exc:
        raise ArchiveError(f"snapshot archive {META_NAME} is not JSON: {exc}") from None
    found = meta.get("Format") if isinstance(meta, dict) else None
    if found != ARCHIVE_FORMAT:
        raise ArchiveError(f"snapshot archive is not in pykvs's format ({ARCHIVE_FORMAT}); "
                           f"{META_NAME} says Format={found!r}")
    return meta, members[STATE_NAME]


__all__ = [
    "ARCHIVE_FORMAT",
    "META_NAME",
    "STATE_NAME",
    "SUMS_NAME",
    "ArchiveError",
    "SnapshotError",
    "build_archive",
    "read_archive",
    "read_snapshot",
    "stream_header",
]
