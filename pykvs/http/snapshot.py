"""``/v1/snapshot``: GET saves, PUT restores (the archive format: pykvs.server.snapshot_archive).

PUT verifies the archive and its state stream, then sends the stream in pieces to the
server's ``Snapshot.Restore`` (a follower forwards them to the leader), which restores the
whole state through Raft: KV with its original indexes, sessions, tombstones, ACLs.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

from pykvs.http.common import (
    HTTPError,
    meta_headers,
    query_args,
    read_body,
    server_of,
    write_args,
)
from pykvs.server.rpc import RPCError
from pykvs.server.snapshot_archive import (
    ArchiveError,
    SnapshotError,
    build_archive,
    read_archive,
    read_snapshot,
    stream_header,
)

if TYPE_CHECKING:
    from pykvs.server.server import Server

MAX_RESTORE = 1 << 30  # largest archive a PUT accepts
RESTORE_PIECE = 1 << 20  # bytes of state per Snapshot.Restore call


async def _saved_stream(server: Server, args: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """``(QueryMeta, FSM stream)`` through the server's Snapshot.Save and Snapshot.Read
    (they forward to the leader unless the request allows a stale answer)."""
    saved = await server.calls["Snapshot.Save"](args)
    state = bytearray()
    while True:
        read_args = {**args, "ID": saved["ID"], "Offset": len(state)}
        reply = await server.calls["Snapshot.Read"](read_args)
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
        servers = server.raft_servers()
        archive = await asyncio.to_thread(build_archive, state, index, term, servers)
        return web.Response(body=archive, headers=meta_headers(meta),
                            content_type="application/octet-stream")
    body = await read_body(request, MAX_RESTORE)
    if body is None:
        raise HTTPError(413, f"Snapshot archive too large, max size: {MAX_RESTORE} bytes")
    try:
        _, state = await asyncio.to_thread(read_archive, body)
        await asyncio.to_thread(read_snapshot, state)  # verify before sending it
    except ArchiveError as exc:
        raise HTTPError(400, f"Error restoring snapshot: {exc}") from None
    except SnapshotError as exc:
        raise HTTPError(400, f"Error restoring snapshot: {exc}") from None
    restore = server.calls["Snapshot.Restore"]
    upload_id, offset = "", 0
    while True:
        piece = state[offset : offset + RESTORE_PIECE]
        eof = offset + len(piece) >= len(state)
        reply = await restore({**write_args(request), "ID": upload_id, "Offset": offset,
                               "Data": piece, "EOF": eof})
        if eof:
            return web.Response(status=200)
        upload_id, offset = reply["ID"], offset + len(piece)
