"""Snapshot.Save, Snapshot.Read, Snapshot.Restore: Consul's agent/consul/snapshot_endpoint.go
in three calls, so that no RPC frame carries a whole snapshot.

Save serialises the state as of now (an O(1) copy of the immutable version, written out in a
worker thread) and keeps the body for Read, which hands it out in chunks; Restore takes an
upload in pieces (pykvs.server.restore) and restores it through Raft.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from pykvs.server.args import field_str, field_uint
from pykvs.server.restore import RestoreUploads
from pykvs.server.rpc import RPCError

if TYPE_CHECKING:
    from pykvs.server.seam import ServerCore

SNAPSHOT_CHUNK = 1 << 20  # bytes per Snapshot.Read reply
SNAPSHOT_HOLD = 60.0  # seconds a saved snapshot waits for its next read


class StateImage(Protocol):
    """A point-in-time copy of the state (pykvs.fsm's snapshot)."""

    index: int

    def to_bytes(self) -> bytes: ...


class SavedSnapshots:
    """Snapshots taken by Snapshot.Save, kept until read to the end or expired."""

    def __init__(self, take: Callable[[], StateImage]) -> None:
        self._take = take
        self._saved: dict[str, tuple[bytes, float]] = {}  # id -> (body, expiry)

    async def save(self) -> tuple[str, int, int]:
        """``(id, size, index)`` of a new snapshot of the state as of now."""
        image = self._take()
        body = await asyncio.to_thread(image.to_bytes)
        now = time.monotonic()
        self._saved = {k: v for k, v in self._saved.items() if v[1] > now}
        snapshot_id = uuid.uuid4().hex
        self._saved[snapshot_id] = (body, now + SNAPSHOT_HOLD)
        return snapshot_id, len(body), image.index

    def read(self, snapshot_id: str, offset: int) -> tuple[bytes, bool]:
        """One chunk of a saved snapshot from ``offset``; the last one drops it."""
        saved = self._saved.get(snapshot_id)
        if saved is None:
            raise RPCError(f"unknown or expired snapshot ID {snapshot_id!r}")
        body = saved[0]
        if offset > len(body):
            raise ValueError(f"Offset {offset} is past the snapshot's {len(body)} bytes")
        chunk = body[offset : offset + SNAPSHOT_CHUNK]
        eof = offset + len(chunk) >= len(body)
        if eof:
            del self._saved[snapshot_id]
        else:
            self._saved[snapshot_id] = (body, time.monotonic() + SNAPSHOT_HOLD)
        return chunk, eof


class Snapshot:
    """The Snapshot.* endpoints of one server."""

    def __init__(self, core: ServerCore, saved: SavedSnapshots) -> None:
        self.core = core
        self.saved = saved
        self.restores = RestoreUploads()

    def table(self) -> dict[str, Any]:
        return {"Snapshot.Save": self.save, "Snapshot.Read": self.read,
                "Snapshot.Restore": self.restore}

    async def save(self, args: dict[str, Any]) -> Any:
        """Take a point-in-time snapshot; the client pulls it with Snapshot.Read (same
        Datacenter and AllowStale, so the same server answers)."""
        forwarded, reply = await self.core.forward("Snapshot.Save", args, read=True)
        if forwarded:
            return reply
        self.core.authorize(args).require_snapshot()
        await self.core.prepare_read(args)
        self.core.require_node()
        snapshot_id, size, index = await self.saved.save()
        return {"ID": snapshot_id, "Size": size, **self.core.query_meta(index)}

    async def read(self, args: dict[str, Any]) -> Any:
        forwarded, reply = await self.core.forward("Snapshot.Read", args, read=True)
        if forwarded:
            return reply
        self.core.authorize(args).require_snapshot()
        data, eof = self.saved.read(field_str(args, "ID"), field_uint(args, "Offset"))
        return {"Data": data, "EOF": eof}

    async def restore(self, args: dict[str, Any]) -> Any:
        """Replace the whole state by an FSM snapshot stream sent in pieces; a follower
        forwards every piece to the leader."""
        forwarded, reply = await self.core.forward("Snapshot.Restore", args, read=False)
        if forwarded:
            return reply
        self.core.authorize(args).require_snapshot()
        return await self.restores.receive(self.core, args)
