"""Snapshot.Restore: an FSM snapshot stream uploaded in pieces, then restored through Raft.

A restore is Consul's ``snapshot restore``: the whole state (KV with its indexes, sessions,
tombstones, ACLs) becomes the snapshot's on every server. The leader spools the upload to a
temporary file (so no RPC frame carries more than one piece), verifies the whole stream with
the FSM's reader (a corrupt or truncated stream is refused and nothing changes), then hands it
to ``RaftNode.restore``: installed as a snapshot above the last log index, followers brought to
it by InstallSnapshot. Session TTL timers are then reset to the restored sessions.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from pykvs import fsm
from pykvs.server.args import field_bytes, field_str, field_uint
from pykvs.server.rpc import RPCError

if TYPE_CHECKING:
    from pykvs.server.seam import ServerCore

UPLOAD_HOLD = 60.0  # seconds an upload waits for its next piece
READ_CHUNK = 1 << 20


@dataclass
class _Upload:
    spool: IO[bytes]
    size: int
    expires: float


def _chunks(spool: IO[bytes]) -> Iterator[bytes]:
    spool.seek(0)
    while chunk := spool.read(READ_CHUNK):
        yield chunk


class RestoreUploads:
    """Uploads in progress on this server (the leader), by ID."""

    def __init__(self) -> None:
        self._uploads: dict[str, _Upload] = {}

    def _expire(self) -> None:
        now = time.monotonic()
        for upload_id, upload in list(self._uploads.items()):
            if upload.expires <= now:
                upload.spool.close()
                del self._uploads[upload_id]

    async def receive(self, server: ServerCore, args: dict[str, Any]) -> dict[str, Any]:
        """One piece: ``ID`` ("" starts an upload), ``Offset`` (bytes received so far),
        ``Data``, ``EOF``. Answers ``{"ID"}``, or after the last piece the restore's
        ``{"Index"}`` once a quorum holds it."""
        self._expire()
        upload_id = field_str(args, "ID")
        offset, data, eof = field_uint(args, "Offset"), field_bytes(args, "Data"), args.get("EOF")
        if not isinstance(eof, bool):
            raise ValueError(f"EOF must be a boolean, not {type(eof).__name__}")
        if not upload_id:
            upload_id = uuid.uuid4().hex
            # Open across calls; closed on EOF or expiry.
            self._uploads[upload_id] = _Upload(tempfile.TemporaryFile(), 0, 0.0)  # noqa: SIM115
        upload = self._uploads.get(upload_id)
        if upload is None:
            raise RPCError(f"unknown or expired restore upload ID {upload_id!r}")
        if offset != upload.size:
            raise ValueError(f"Offset {offset} does not follow the {upload.size} bytes received "
                             f"for upload {upload_id}")
        await asyncio.to_thread(upload.spool.write, data)
        upload.size += len(data)
        upload.expires = time.monotonic() + UPLOAD_HOLD
        if not eof:
            return {"ID": upload_id}
        del self._uploads[upload_id]
        try:
            return {"Index": await restore_stream(server, upload.spool)}
        finally:
            upload.spool.close()


async def restore_stream(server: ServerCore, spool: IO[bytes]) -> int:
    """Verify the FSM snapshot stream in ``spool`` and restore it through Raft; returns the
    Raft index it was installed at."""
    node = server.require_node()

    def verify() -> fsm.SnapshotHeader:
        spool.seek(0)
        header, _, _ = fsm.read_snapshot(spool)
        return header

    try:
        header = await asyncio.to_thread(verify)
    except fsm.SnapshotError as exc:
        raise ValueError(f"Error restoring snapshot: {exc}") from None
    meta = await node.restore(_chunks(spool), after_index=header.index)
    if server.sessions.active:  # TTL timers follow the restored sessions
        _, sessions = server.state.session_list()
        server.sessions.deactivate()
        server.sessions.activate([(s.id, s.ttl) for s in sessions])
    return meta.index
