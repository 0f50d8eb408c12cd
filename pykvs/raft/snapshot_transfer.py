"""Snapshot bodies between servers, and the bodies waiting for the Ready that installs them.

A follower that needs entries its leader has compacted away gets a snapshot. The leader's core
hands ``RaftNode`` a SNAPSHOT message; ``SnapshotSender`` streams the body from the
SnapshotStore on the transport's bulk lane (``["snap", "begin"|"chunk"|"end", ...]`` frames;
heartbeats never wait behind them), the SNAPSHOT message itself riding in the "end" frame, and
reports to the core once the follower has answered (or the stream failed). On the follower,
``SnapshotReceiver`` writes the stream into a SnapshotSink and steps the message into the core
only once the whole body is written and checked. The body is then staged (``StagedSnapshots``):
committed to the store by the Ready that installs it, so a body is never stored unless the log
points to it (else two such could push the snapshot the log is compacted to out of the
keep-two store). A user restore (``RaftNode.restore``) stages its body the same way.

Every sink call does synchronous disk I/O, so each runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import zlib
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from pykvs._aio import wait_for
from pykvs.raft.errors import RaftError
from pykvs.raft.interfaces import SnapshotSink, SnapshotStore, Transport
from pykvs.raft.messages import Message
from pykvs.raft.types import SnapshotMeta

log = logging.getLogger("pykvs.raft.node")  # the node's log, as before this left node.py

SNAP = "snap"  # first item of every bulk-lane frame (control frames start with an int)


class ChunkStream:
    """A read-only binary stream over an iterator of byte chunks (for ``FSM.restore``)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        parts = []
        want = n
        while want != 0:
            if self._pos >= len(self._buffer):
                nxt = next(self._chunks, None)
                if nxt is None:
                    break
                self._buffer, self._pos = nxt, 0
                continue
            end = len(self._buffer) if want < 0 else min(len(self._buffer), self._pos + want)
            parts.append(self._buffer[self._pos : end])
            if want > 0:
                want -= end - self._pos
            self._pos = end
        return b"".join(parts)


def _write_body(sink: SnapshotSink, body: Iterable[bytes]) -> tuple[int, int]:
    """In a worker thread: write ``body`` into ``sink``; returns its size and CRC."""
    size = crc = 0
    for chunk in body:
        sink.write(chunk)
        size += len(chunk)
        crc = zlib.crc32(chunk, crc)
    return size, crc


class StagedSnapshots:
    """Snapshot bodies written but not committed to the store, by snapshot index: committed by
    the Ready that installs them (see the module docstring)."""

    def __init__(self, node_id: str, snapshots: SnapshotStore,
                 spawn: Callable[[Coroutine[Any, Any, Any]], None]) -> None:
        self._id = node_id
        self._snapshots = snapshots
        self._spawn = spawn  # runs a side task the node cancels when it closes
        self._staged: dict[int, SnapshotSink] = {}

    async def write(self, meta: SnapshotMeta, body: Iterable[bytes],
                    accept: Callable[[SnapshotMeta], None]) -> SnapshotMeta:
        """Write a user's snapshot ``body`` (a restore) into a new sink, off the loop, then
        ``accept`` its meta (with its size and CRC) and stage it; returns that meta. If writing
        or ``accept`` fails, the sink is aborted."""
        sink = self._snapshots.create(meta)
        try:
            size, crc = await asyncio.to_thread(_write_body, sink, body)
            meta = replace(meta, size=size, crc=crc)
            accept(meta)
        except BaseException:
            await asyncio.to_thread(sink.abort)
            raise
        self.stage(meta.index, sink)
        return meta

    def stage(self, index: int, sink: SnapshotSink) -> None:
        """Keep ``sink`` for the Ready that installs snapshot ``index``; a staged body the
        core replaced before that Ready is dropped."""
        for old_index, old in list(self._staged.items()):
            if old_index != index:
                del self._staged[old_index]
                self._spawn(asyncio.to_thread(old.abort))
        previous = self._staged.get(index)
        if previous is not None and previous is not sink:
            self._spawn(asyncio.to_thread(previous.abort))
        self._staged[index] = sink

    async def commit(self, meta: SnapshotMeta) -> None:
        """Commit the body of the snapshot this Ready installs (before its meta is saved)."""
        sink = self._staged.pop(meta.index, None)
        if sink is None:
            return  # already stored (a restarted install, or a test's store)
        stored = await asyncio.to_thread(sink.commit)
        if (stored.size, stored.crc) != (meta.size, meta.crc):
            raise RaftError(f"{self._id}: stored snapshot {stored} does not match {meta}")

    def take_all(self) -> list[SnapshotSink]:
        """Every staged sink, forgotten here (the node aborts them as it closes)."""
        sinks = list(self._staged.values())
        self._staged.clear()
        return sinks


class SnapshotSender:
    """The leader's side: one stream at a time per follower, on the bulk lane."""

    def __init__(
        self,
        node_id: str,
        snapshots: SnapshotStore,
        send_timeout: float,
        counters: dict[str, int],
        landed: Callable[[str, SnapshotMeta], Awaitable[None]],
        report: Callable[[str, bool], None],
    ) -> None:
        self._id = node_id
        self._snapshots = snapshots
        self._send_timeout = send_timeout  # seconds a bulk frame may wait for queue room
        self._counters = counters
        self._landed = landed  # until the follower answered the SNAPSHOT (RaftError: gave up)
        self._report = report  # tell the core how the stream ended
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._transfer_ids = itertools.count(1)

    def send(self, transport: Transport, message: Message) -> None:
        """Start streaming the snapshot of SNAPSHOT ``message`` to its destination, unless a
        stream to it is already running (that one reports to the core when it ends)."""
        running = self._tasks.get(message.dst)
        if running is not None and not running.done():
            return
        task = asyncio.get_running_loop().create_task(
            self._stream(transport, message), name=f"raft-snapshot {self._id}->{message.dst}")
        self._tasks[message.dst] = task

    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._tasks.values())

    async def _stream(self, transport: Transport, message: Message) -> None:
        meta, peer = message.snapshot, message.dst
        assert meta is not None
        limit = self._send_timeout
        transfer = next(self._transfer_ids)
        ok = False
        try:
            await wait_for(
                transport.send_bulk(peer, [SNAP, "begin", transfer, meta.to_wire()]), limit)
            chunks = iter(self._snapshots.open(meta.index))
            seq = 0
            while True:
                chunk = await asyncio.to_thread(next, chunks, None)
                if chunk is None:
                    break
                await wait_for(
                    transport.send_bulk(peer, [SNAP, "chunk", transfer, seq, chunk]), limit)
                seq += 1
            await wait_for(
                transport.send_bulk(peer, [SNAP, "end", transfer, seq, message.to_wire()]),
                limit)
            ok = True
            self._counters["snapshots_sent"] += 1
            log.info("%s: sent snapshot at index %d to %s (%d chunks)", self._id, meta.index,
                     peer, seq)
            # Let the follower's answer move its progress on; reporting at once would let a
            # heartbeat answer that overtakes it start a second transfer of the same snapshot.
            with contextlib.suppress(RaftError):
                await self._landed(peer, meta)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s: sending snapshot %d to %s failed: %r", self._id, meta.index, peer,
                        exc)
        finally:
            self._report(peer, ok)


@dataclass
class _Incoming:
    """A snapshot body being received from one peer."""

    transfer: int
    meta: SnapshotMeta
    sink: SnapshotSink
    next_chunk: int = 0
    size: int = 0
    crc: int = 0


class SnapshotReceiver:
    """The follower's side: bulk-lane frames into a sink, one stream per sender.

    ``deliver(message)`` steps the SNAPSHOT message that ends a complete stream into the core
    and says whether the core will install it: the body is then staged, else dropped.
    """

    def __init__(self, node_id: str, snapshots: SnapshotStore, staged: StagedSnapshots,
                 deliver: Callable[[Message], bool]) -> None:
        self._id = node_id
        self._snapshots = snapshots
        self._staged = staged
        self._deliver = deliver
        self._incoming: dict[str, _Incoming] = {}

    async def on_frame(self, sender: str, frame: list[Any]) -> None:
        """Take one ``["snap", ...]`` frame from ``sender``; a bad one drops its stream."""
        try:
            await self._frame(sender, frame)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s: snapshot stream from %s dropped: %r", self._id, sender, exc)
            await self._drop(sender)

    def take_sinks(self) -> list[SnapshotSink]:
        """The sinks of every stream in progress, forgotten here (the node aborts them)."""
        sinks = [incoming.sink for incoming in self._incoming.values()]
        self._incoming.clear()
        return sinks

    async def _drop(self, sender: str) -> None:
        incoming = self._incoming.pop(sender, None)
        if incoming is not None:
            await asyncio.to_thread(incoming.sink.abort)

    async def _frame(self, sender: str, frame: list[Any]) -> None:
        step = frame[1]
        if step == "begin":
            _, _, transfer, meta_wire = frame
            await self._drop(sender)
            meta = SnapshotMeta.from_wire(meta_wire)
            sink = self._snapshots.create(meta)
            self._incoming[sender] = _Incoming(int(transfer), meta, sink)
            return
        incoming = self._incoming.get(sender)
        if incoming is None or incoming.transfer != frame[2]:
            return  # the rest of a stream whose start we did not see: ignore it
        if step == "chunk":
            _, _, _, seq, chunk = frame
            if seq != incoming.next_chunk or not isinstance(chunk, bytes):
                raise ValueError(f"snapshot chunk {seq!r} out of order (expected "
                                 f"{incoming.next_chunk})")
            await asyncio.to_thread(incoming.sink.write, chunk)
            incoming.next_chunk += 1
            incoming.size += len(chunk)
            incoming.crc = zlib.crc32(chunk, incoming.crc)
        elif step == "end":
            _, _, _, count, wire = frame
            await self._end(sender, incoming, count, wire)
        else:
            raise ValueError(f"unknown snapshot frame {step!r}")

    async def _end(self, sender: str, incoming: _Incoming, count: Any, wire: Any) -> None:
        if count != incoming.next_chunk:
            raise ValueError(f"snapshot stream ended after {incoming.next_chunk} chunks, "
                             f"sender says {count}")
        message = Message.from_wire(wire)
        sent = message.snapshot
        if sent is None or message.src != sender or message.dst != self._id:
            raise ValueError(f"bad snapshot message at the end of a stream: {message!r}")
        received = (incoming.meta.index, incoming.meta.term, incoming.size, incoming.crc)
        if received != (sent.index, sent.term, sent.size, sent.crc):
            raise ValueError(f"received snapshot (index, term, size, crc) {received} does "
                             f"not match its message {sent}")
        del self._incoming[sender]
        if self._deliver(message):
            self._staged.stage(sent.index, incoming.sink)  # committed by the installing Ready
        else:
            # Closing, or caught up meanwhile: never store a body the log will not point to.
            await asyncio.to_thread(incoming.sink.abort)
