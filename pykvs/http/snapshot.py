"""``/v1/snapshot``: GET saves, PUT restores; and the snapshot archive format.

The archive mimics Consul's: a gzip-compressed tar holding ``meta.json`` (Version, ID, Index,
Term, Size, Configuration, as Consul's raft SnapshotMeta), ``state.bin`` and ``SHA256SUMS``
(``<hex>  <name>`` lines, checked on restore and by ``pykvs snapshot inspect``). ``state.bin``
is pykvs's own FSM snapshot stream (pykvs.fsm, CRC-checked), so an archive moves between pykvs
clusters, not between pykvs and Consul; ``meta.json`` says ``"Format": "pykvs-fsm-1"``.

PUT verifies the archive and its state stream, then sends the stream in pieces to the
server's ``Snapshot.Restore`` (a follower forwards them to the leader), which restores the
whole state through Raft: KV with its original indexes, sessions, tombstones, ACLs.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import tarfile
import time
from typing import TYPE_CHECKING, Any

import msgpack
from aiohttp import web

from pykvs import fsm
from pykvs.http.common import (
    HTTPError,
    meta_headers,
    query_args,
    read_body,
    server_of,
    write_args,
)
from pykvs.server.rpc import RPCError

if TYPE_CHECKING:
    from pykvs.server.server import Server

ARCHIVE_FORMAT = "pykvs-fsm-1"
META_NAME, STATE_NAME, SUMS_NAME = "meta.json", "state.bin", "SHA256SUMS"
MAX_RESTORE = 1 << 30  # largest archive a PUT accepts
RESTORE_PIECE = 1 << 20  # bytes of state per Snapshot.Restore call


class ArchiveError(ValueError):
    """A snapshot archive that is not one, or whose checksums or state do not verify."""


def stream_header(state: bytes) -> tuple[int, int]:
    """``(index, term)`` from the header of an FSM snapshot stream, without reading it all."""
    magic = fsm.SNAPSHOT_MAGIC
    if state[: len(magic)] != magic or len(state) < len(magic) + 4:
        raise ArchiveError("state is not a pykvs FSM snapshot stream (bad magic)")
    length = int.from_bytes(state[len(magic) : len(magic) + 4], "little")
    try:
        header = msgpack.unpackb(state[len(magic) + 4 : len(magic) + 4 + length])
        return int(header["index"]), int(header["term"])
    except Exception as exc:  # msgpack raises several unrelated types
        raise ArchiveError(f"state stream header is corrupt: {exc!r}") from None


def build_archive(state: bytes, index: int, term: int, servers: dict[str, str]) -> bytes:
    """The archive of an FSM snapshot stream (see the module docstring)."""
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


def read_archive(data: bytes) -> tuple[dict[str, Any], bytes]:
    """``(meta, state stream)`` of an archive whose checksums verify; ArchiveError if not."""
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


async def _saved_stream(server: Server, args: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """``(QueryMeta, FSM stream)`` through the server's Snapshot.Save and Snapshot.Read
    (they forward to the leader unless the request allows a stale answer)."""
    saved = await server.handlers["Snapshot.Save"](args)
    state = bytearray()
    while True:
        read_args = {**args, "ID": saved["ID"], "Offset": len(state)}
        reply = await server.handlers["Snapshot.Read"](read_args)
        state += reply["Data"]
        if reply["EOF"]:
            break
    if len(state) != saved["Size"]:
        raise RPCError(f"snapshot arrived with {len(state)} bytes, expected {saved['Size']}")
    return saved, bytes(state)


async def snapshot_endpoint(request: web.Request) -> web.StreamResponse:
    server = server_of(request)
    if request.method == "GET":
        args = query_args(request)
        meta, state = await _saved_stream(server, args)
        index, term = stream_header(state)
        servers = server.node.configuration().all_servers() if server.node else {}
        archive = await asyncio.to_thread(build_archive, state, index, term, servers)
        return web.Response(body=archive, headers=meta_headers(meta),
                            content_type="application/octet-stream")
    body = await read_body(request, MAX_RESTORE)
    if body is None:
        raise HTTPError(413, f"Snapshot archive too large, max size: {MAX_RESTORE} bytes")
    try:
        _, state = await asyncio.to_thread(read_archive, body)
        await asyncio.to_thread(fsm.read_snapshot, state)  # verify before sending it
    except ArchiveError as exc:
        raise HTTPError(400, f"Error restoring snapshot: {exc}") from None
    except fsm.SnapshotError as exc:
        raise HTTPError(400, f"Error restoring snapshot: {exc}") from None
    restore = server.handlers["Snapshot.Restore"]
    upload_id, offset = "", 0
    while True:
        piece = state[offset : offset + RESTORE_PIECE]
        eof = offset + len(piece) >= len(state)
        reply = await restore({**write_args(request), "ID": upload_id, "Offset": offset,
                               "Data": piece, "EOF": eof})
        if eof:
            return web.Response(status=200)
        upload_id, offset = reply["ID"], offset + len(piece)
