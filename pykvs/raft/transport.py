"""Raft transport: length-prefixed msgpack frames over asyncio TCP between servers.

Wire format
-----------
A frame is ``u32_be(length) || msgpack(object)``, ``0 < length <= max_frame``. The first frame on
every connection is the hello ``["pykvs-raft", 2, from_id, lane, cluster_id]`` (or
``["pykvs-raft", 1, from_id, lane]`` from a server that knows no cluster id yet, as servers
before cluster ids sent); every later frame is one payload, handed to
``on_message(from_id, payload)``. The transport does not know Raft message types: a payload is
any msgpack-able object (``Message.to_wire()``). Bytes stay bytes, str stays str, tuples come
back as lists. Connections are one-way: the dialling side only writes and the listening side
only reads, so a frame's sender is always the connection's hello.

Lanes
-----
Each peer gets two outbound connections, opened lazily on first use:

- ``control`` (``send()``): votes, appends, heartbeats. Never blocks the caller: a bounded queue
  that, when full (a peer that is down or slow), drops its *oldest* message and counts it. Raft
  retransmits, and newer messages supersede older ones.
- ``bulk`` (``await send_bulk()``): snapshot chunks. A small bounded queue; the caller waits for
  room, and the peer applies back-pressure by reading slowly (an async handler is awaited before
  the next frame of that connection is read).

Heartbeats therefore never queue behind a snapshot: not in our queue, not in the TCP buffers and
not in the receiver, which reads each connection in its own task.

Failures
--------
A connection that fails is re-dialled with exponential back-off (``backoff_min`` doubling to
``backoff_max``, with jitter); frames in flight on it are lost (Raft retransmits). A write that
cannot drain for ``write_timeout`` seconds (a peer that vanished without closing) drops the
connection. On the listening side a bad hello, a frame of length 0 or above ``max_frame``, or a
frame that is not exactly one msgpack object is logged and closes that connection only. An
exception raised by ``on_message`` is logged and the connection keeps going.

Sharing the port
----------------
With ``on_other_connection`` set, a connection whose first frame is not a Raft hello is handed,
with that decoded first frame, to ``on_other_connection(first, reader, writer)`` instead of being
closed: the server layer serves its msgpack-RPC on the same port (one address per server, as
Consul's port 8300). The transport still owns the connection's task, so ``close()`` ends it.
A first frame that breaks the framing (over ``max_first_frame``, which the server sets to its
RPC frame limit, or not one msgpack object) is handed over as the FrameError instead, so the
RPC side can answer it.

Cluster ids
-----------
A transport with a ``cluster_id`` accepts only hellos naming that id: a server of another
cluster, or one naming none, is refused with a log line naming both ids (a transport without
one, a server whose cluster has no id yet, accepts any, keeps the ids they name in
``ids_heard``, and names in its own hellos the one a known peer named last, so that servers
which have an id hear it while it catches up). ``set_cluster_id`` adopts one: links
re-dial with the new hello, and inbound connections whose hello named another id are closed. A
hello naming this server itself is always refused.

TLS
---
With ``ssl_server`` the listener speaks TLS (mutual TLS when that context requires a client
certificate), and with ``ssl_client`` links dial with it (verifying the peer when the context
says so); pykvs.server.tls builds both. A peer that fails the handshake never gets past it:
no hello, no frame. Without them there is no authentication: run it on a network you trust
(as Consul's raft port without TLS).

``max_inbound`` bounds the connections accepted at once (Raft and handed-off ones together); one
more is closed at once, unread.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgpack

from pykvs._aio import wait_for
from pykvs._pack import packb
from pykvs.netaddr import split_address
from pykvs.raft.auth import authenticate, prove
from pykvs.raft.hello import (
    BULK,
    CONTROL,
    LANES,
    PROTOCOL_VERSION,  # noqa: F401  (re-exported: the wire format is documented here)
    FrameError,
    is_hello,
    make_hello,
    read_hello,
)

log = logging.getLogger(__name__)

Handler = Callable[[str, Any], Awaitable[None] | None]
OtherConnectionHandler = Callable[[Any, asyncio.StreamReader, asyncio.StreamWriter],
                                  Awaitable[None]]

_LANES = LANES
# Frames written to the socket per drain, so one drain's worth of memory stays bounded.
_MAX_WRITE_BATCH_BYTES = 1 << 20


class FrameTooLarge(FrameError):
    """A frame's length is over the limit (a limit the sender can be told about)."""


def _pack(obj: Any) -> bytes:
    return packb(obj)


# Bounded decoding. A msgpack byte can become a 64-byte Python object (an empty map), so a frame
# is decoded under a limit derived from its size: a frame of at most FREE_DECODE bytes is decoded
# as is (~2 MiB of objects at worst; a Raft append of a few hundred small entries pays nothing);
# a larger one may hold at most 1,024 + length / 32 maps and arrays, counted by hooks as they
# decode (~0.15 us each), stopped at the first over. Valid traffic stays below: the densest
# large frames are listings (a KV entry's map is ~60 bytes), a Raft append carries at most 256
# entries, a transaction 128 operations. (msgpack itself bounds each length by the frame's.)
FREE_DECODE = 32 << 10
_FREE_CONTAINERS = 1 << 10


class _Budget:
    """The hooks that count a large frame's maps and arrays as they decode."""

    __slots__ = ("left", "length")

    def __init__(self, length: int) -> None:
        self.length = length
        self.left = _FREE_CONTAINERS + length // 32

    def spend(self, container: Any) -> Any:
        self.left -= 1
        if self.left < 0:
            raise FrameTooLarge(f"frame of {self.length} bytes holds more than "
                                f"{_FREE_CONTAINERS + self.length // 32} maps and arrays (the "
                                f"decoding limit)")
        return container


def decode_frame(body: bytes) -> Any:
    """One frame's msgpack object, decoded under the limit above; FrameError when it is not
    exactly one msgpack object or goes over it."""
    length = len(body)
    try:
        if length <= FREE_DECODE:
            return msgpack.unpackb(body, raw=False, strict_map_key=False)
        spend = _Budget(length).spend
        return msgpack.unpackb(body, raw=False, strict_map_key=False, list_hook=spend,
                               object_hook=spend)
    except FrameError:
        raise
    except ValueError as exc:  # msgpack's own: "N exceeds max_array_len(M)"
        kind = FrameTooLarge if "exceeds max_" in str(exc) else FrameError
        raise kind(f"frame of {length} bytes is not one msgpack object: {exc}") from None
    except Exception as exc:
        raise FrameError(f"frame of {length} bytes is not one msgpack object: {exc}") from None


def frame_length(header: bytes, max_frame: int) -> int:
    """The length a frame's 4-byte header gives; FrameError when it is outside 1..max_frame."""
    length = int.from_bytes(header, "big")
    if length == 0 or length > max_frame:
        kind = FrameTooLarge if length else FrameError
        raise kind(f"frame length {length} outside 1..{max_frame} (the frame limit)")
    return length


async def read_frame(reader: asyncio.StreamReader, max_frame: int) -> Any:
    length = frame_length(await reader.readexactly(4), max_frame)
    return decode_frame(await reader.readexactly(length))


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await wait_for(writer.wait_closed(), 1.0)


class _Link:
    """One outbound connection (one lane) to one peer, with its queue and dial loop."""

    def __init__(self, transport: TCPTransport, peer: str, lane: str, limit: int) -> None:
        self.transport = transport
        self.peer = peer
        self.lane = lane
        self.limit = limit
        self.queue: deque[bytes] = deque()
        self.wakeup = asyncio.Event()  # something to write, or the connection hit EOF
        self.room = asyncio.Event()  # the bulk queue has room
        self.room.set()
        self.eof = False
        self.connected = False
        self.closed = False  # the link was retired (peer removed, transport closed)
        self.stats = {"sent": 0, "dropped": 0, "connects": 0, "dial_failures": 0}
        self.task = asyncio.get_running_loop().create_task(
            self._run(), name=f"raft-link {transport.local_id}->{peer} {lane}")

    def put_nowait(self, body: bytes) -> bool:
        dropped = len(self.queue) >= self.limit
        if dropped:
            self.queue.popleft()
            self.stats["dropped"] += 1
        self.queue.append(body)
        self.wakeup.set()
        return not dropped

    async def put(self, body: bytes) -> None:
        while len(self.queue) >= self.limit and not self.closed:
            self.room.clear()
            await self.room.wait()
        if self.closed:
            raise ConnectionAbortedError(f"the {self.lane} link to {self.peer} was closed")
        self.queue.append(body)
        self.wakeup.set()

    def stop(self) -> None:
        """Retire the link: its task ends and queued messages are dropped."""
        self.task.cancel()

    async def _run(self) -> None:
        try:
            await self._dial_loop()
        finally:
            self.closed = True
            self.room.set()  # wake bulk senders waiting for room: they get an error

    async def _dial_loop(self) -> None:
        t = self.transport
        loop = asyncio.get_running_loop()
        backoff = t.backoff_min
        while True:
            address = t.peers.get(self.peer)
            up_since: float | None = None
            if address is not None:
                host, port = split_address(address)
                try:
                    reader, writer = await wait_for(
                        asyncio.open_connection(host, port, ssl=t.ssl_client),
                        t.connect_timeout)
                except (TimeoutError, OSError) as exc:
                    self.stats["dial_failures"] += 1
                    log.debug("%s: dial %s (%s) failed: %s", t.local_id, self.peer, address, exc)
                else:
                    up_since = loop.time()
                    self.stats["connects"] += 1
                    try:
                        await self._pump(reader, writer)
                    except (TimeoutError, OSError, ConnectionError, FrameError) as exc:
                        log.info("%s: %s connection to %s lost: %r", t.local_id, self.lane,
                                 self.peer, exc)
                    finally:
                        self.connected = False
                        await _close_writer(writer)
            if up_since is not None and loop.time() - up_since >= t.backoff_max:
                backoff = t.backoff_min  # it was up for a while: start the back-off over
            await asyncio.sleep(backoff * (0.5 + t.rng.random() / 2))
            backoff = min(backoff * 2, t.backoff_max)

    async def _watch_eof(self, reader: asyncio.StreamReader) -> None:
        # The peer never writes on this connection: any read completing means it closed.
        with contextlib.suppress(OSError, ConnectionError):
            await reader.read(1)
        self.eof = True
        self.wakeup.set()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        t = self.transport
        if t.auth_key:
            await prove(lambda n: read_frame(reader, n), writer, t.auth_key, t.hello_timeout)
        hello = _pack(make_hello(t.local_id, self.lane, t.cluster_id or t.tentative_id))
        writer.writelines((len(hello).to_bytes(4, "big"), hello))
        await wait_for(writer.drain(), t.write_timeout)
        self.eof = False
        watcher = asyncio.get_running_loop().create_task(self._watch_eof(reader))
        self.connected = True
        try:
            while True:
                if self.eof:
                    raise ConnectionResetError(f"{self.peer} closed the connection")
                if not self.queue:
                    self.wakeup.clear()
                    await self.wakeup.wait()
                    continue
                parts: list[bytes] = []
                size = 0
                while self.queue and size < _MAX_WRITE_BATCH_BYTES:
                    body = self.queue.popleft()
                    parts += (len(body).to_bytes(4, "big"), body)
                    size += len(body)
                self.room.set()
                writer.writelines(parts)
                self.stats["sent"] += len(parts) // 2
                await wait_for(writer.drain(), t.write_timeout)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


class TCPTransport:
    """Frames between one Raft server and its peers (see the module docstring).

    ``on_message(from_id, payload)`` is called in the event loop for every frame received; if
    it returns an awaitable, that is awaited before the next frame of the same connection is
    read. All methods must be called from the loop the transport was started in.
    """

    def __init__(
        self,
        local_id: str,
        on_message: Handler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        peers: Mapping[str, str] | None = None,
        max_frame: int = 16 << 20,
        queue_limit: int = 1024,
        bulk_queue_limit: int = 4,
        backoff_min: float = 0.05,
        backoff_max: float = 2.0,
        connect_timeout: float = 2.0,
        write_timeout: float = 10.0,
        hello_timeout: float = 5.0,
        rng: random.Random | None = None,
        on_other_connection: OtherConnectionHandler | None = None,
        ssl_server: ssl.SSLContext | None = None,
        ssl_client: ssl.SSLContext | None = None,
        max_inbound: int = 0,
        max_first_frame: int = 0,
        cluster_id: str = "",
        auth_key: bytes = b"",
        peer_check: Callable[[asyncio.StreamWriter], str] | None = None,
    ) -> None:
        if not local_id:
            raise ValueError("local_id must be a non-empty server id")
        if max_frame < 64:
            raise ValueError(f"max_frame must be at least 64 bytes, got {max_frame}")
        if queue_limit < 1 or bulk_queue_limit < 1:
            raise ValueError(f"queue limits must be at least 1, got {queue_limit} and "
                             f"{bulk_queue_limit}")
        if not 0 < backoff_min <= backoff_max:
            raise ValueError(f"need 0 < backoff_min <= backoff_max, got {backoff_min} and "
                             f"{backoff_max}")
        self.local_id = local_id
        self.on_message = on_message
        self.host = host
        self.port = port
        self.peers: dict[str, str] = {}
        self.max_frame = max_frame
        self.queue_limit = queue_limit
        self.bulk_queue_limit = bulk_queue_limit
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.connect_timeout = connect_timeout
        self.write_timeout = write_timeout
        self.hello_timeout = hello_timeout
        self.rng = rng or random.Random()
        self.on_other_connection = on_other_connection
        self.ssl_server = ssl_server
        self.ssl_client = ssl_client
        self.max_inbound = max_inbound  # 0: unbounded
        self.max_first_frame = max_first_frame  # 0: max_frame
        self._links: dict[tuple[str, str], _Link] = {}
        self._retired: set[asyncio.Task[None]] = set()
        self._inbound: set[asyncio.Task[Any]] = set()
        self.cluster_id = cluster_id
        self.auth_key = auth_key  # --encrypt: peers prove it before their hello (auth.py)
        self.peer_check = peer_check  # per connection: "" or why its peer may not speak Raft
        # Cluster ids named by hellos accepted while this server had none (a few).
        self.ids_heard: set[str] = set()
        # ... the one our own hellos name meanwhile (the last a known peer named): a server
        # that has none yet must still be heard by servers that have one, to catch up.
        self.tentative_id = ""
        # Raft connections accepted: the hello's cluster id and the writer (to close them).
        self._hellos: dict[asyncio.Task[Any], tuple[str, asyncio.StreamWriter]] = {}
        self._server: asyncio.Server | None = None
        self._closed = False
        self.stats_in = {"frames": 0, "connections": 0, "bad_frames": 0, "handler_errors": 0,
                         "refused": 0, "foreign": 0, "authenticated": 0}
        if peers:
            self.set_peers(peers)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on ``host:port`` (port 0 picks a free one; see ``address``)."""
        if self._server is not None:
            raise RuntimeError("transport already started")
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, ssl=self.ssl_server,
            ssl_handshake_timeout=self.hello_timeout if self.ssl_server else None)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def address(self) -> str:
        """``host:port`` this transport listens on (after ``start()``)."""
        return f"{self.host}:{self.port}"

    async def close(self) -> None:
        """Stop dialling and listening, close every connection, and wait for every task."""
        if self._closed:
            return
        self._closed = True
        for link in self._links.values():
            link.stop()
        tasks = [link.task for link in self._links.values()] + list(self._retired)
        self._links.clear()
        if self._server is not None:
            self._server.close()
        tasks += list(self._inbound)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # -- peers -------------------------------------------------------------------------------

    def set_peers(self, peers: Mapping[str, str]) -> None:
        """Replace the peer map (server id -> "host:port"). Links to removed peers, or to peers
        whose address changed, are closed (their queued messages dropped)."""
        for address in peers.values():
            split_address(address)  # reject a bad address here, not in the dial loop
        for key, link in list(self._links.items()):
            if peers.get(link.peer) != self.peers.get(link.peer):
                self._retire(key, link)
        self.peers = {p: a for p, a in peers.items() if p != self.local_id}

    def _redial(self) -> None:
        """Every link starts over (with a new hello)."""
        for key, link in list(self._links.items()):
            self._retire(key, link)

    def _retire(self, key: tuple[str, str], link: _Link) -> None:
        del self._links[key]
        link.stop()
        self._retired.add(link.task)
        link.task.add_done_callback(self._retired.discard)

    def _link(self, peer: str, lane: str) -> _Link:
        if self._closed:
            raise RuntimeError("transport is closed")
        if peer not in self.peers:
            raise KeyError(f"unknown peer {peer!r} (known: {sorted(self.peers)})")
        link = self._links.get((peer, lane))
        if link is None:
            limit = self.queue_limit if lane == CONTROL else self.bulk_queue_limit
            link = self._links[(peer, lane)] = _Link(self, peer, lane, limit)
        return link

    def _encode(self, payload: Any) -> bytes:
        body = _pack(payload)
        if len(body) > self.max_frame:
            raise ValueError(f"payload encodes to {len(body)} bytes, above max_frame "
                             f"{self.max_frame}")
        return body

    # -- sending -----------------------------------------------------------------------------

    def send(self, peer: str, payload: Any) -> bool:
        """Queue ``payload`` on the control lane to ``peer``; never blocks. False when the queue
        was full and its oldest message was dropped to make room."""
        body = self._encode(payload)
        return self._link(peer, CONTROL).put_nowait(body)

    async def send_bulk(self, peer: str, payload: Any) -> None:
        """Queue ``payload`` on the bulk lane to ``peer``, waiting while its queue is full.
        Raises ConnectionAbortedError if the peer is removed or the transport closes meanwhile."""
        body = self._encode(payload)
        await self._link(peer, BULK).put(body)

    def is_connected(self, peer: str, lane: str = CONTROL) -> bool:
        link = self._links.get((peer, lane))
        return link is not None and link.connected

    def stats(self) -> dict[str, Any]:
        """Inbound counters and, per peer and lane, sent / dropped / connects / dial_failures,
        whether connected and how many frames are queued."""
        out: dict[str, Any] = {"inbound": dict(self.stats_in), "peers": {}}
        for (peer, lane), link in self._links.items():
            out["peers"].setdefault(peer, {})[lane] = {
                **link.stats, "connected": link.connected, "queued": len(link.queue)}
        return out

    # -- receiving ---------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._closed or (self.max_inbound and len(self._inbound) >= self.max_inbound):
            if not self._closed:
                self.stats_in["refused"] += 1
                log.warning("%s: refusing a connection from %s: %d open (the limit)",
                            self.local_id, writer.get_extra_info("peername"), len(self._inbound))
            await _close_writer(writer)
            return
        self._inbound.add(task)
        self.stats_in["connections"] += 1
        remote = writer.get_extra_info("peername")
        sender = "?"
        first_limit = self.max_first_frame or self.max_frame
        try:
            try:
                hello = await wait_for(read_frame(reader, first_limit), self.hello_timeout)
            except FrameError as exc:
                if self.on_other_connection is None:
                    raise
                self.stats_in["bad_frames"] += 1
                await self.on_other_connection(exc, reader, writer)  # it answers the error
                return
            if self.auth_key:  # --encrypt: auth.py
                hello = await authenticate(hello, lambda n: read_frame(reader, n), writer,
                                           self.auth_key, self.hello_timeout, first_limit)
                self.stats_in["authenticated"] += 1
            if self.on_other_connection is not None and not is_hello(hello):
                await self.on_other_connection(hello, reader, writer)
                return
            if self.peer_check is not None and (refused := self.peer_check(writer)):
                raise FrameError(refused)  # e.g. not a server certificate (server/identity.py)
            sender, theirs = self._check_hello(hello, remote)
            self._hellos[task] = (theirs, writer)
            while True:
                payload = await read_frame(reader, self.max_frame)
                self.stats_in["frames"] += 1
                try:
                    result = self.on_message(sender, payload)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    self.stats_in["handler_errors"] += 1
                    log.exception("%s: on_message failed for a frame from %s", self.local_id,
                                  sender)
        except FrameError as exc:
            self.stats_in["bad_frames"] += 1
            log.warning("%s: closing connection from %s (server %s): %s", self.local_id, remote,
                        sender, exc)
        except TimeoutError:
            self.stats_in["bad_frames"] += 1
            log.warning("%s: closing connection from %s: no hello within %.1fs", self.local_id,
                        remote, self.hello_timeout)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                log.info("%s: connection from %s (server %s) ended inside a frame",
                         self.local_id, remote, sender)
        except (OSError, ConnectionError) as exc:
            log.info("%s: connection from %s (server %s) failed: %r", self.local_id, remote,
                     sender, exc)
        except asyncio.CancelledError:
            # close() cancels us. End normally: asyncio's stream callback would log a
            # cancelled connection task as an error.
            if not self._closed:
                raise
        finally:
            try:
                await _close_writer(writer)
            except asyncio.CancelledError:
                # Cancelled again while closing (the loop shutting down): same as above.
                if not self._closed:
                    raise
            finally:
                self._inbound.discard(task)
                self._hellos.pop(task, None)

    def _check_hello(self, hello: Any, remote: Any) -> tuple[str, str]:
        sender, theirs = read_hello(hello)
        if sender == self.local_id:
            raise FrameError(f"a hello naming this server ({sender}) itself")
        if not self.cluster_id and theirs:
            if len(self.ids_heard) < 16:
                self.ids_heard.add(theirs)
            if theirs != self.tentative_id and sender in self.peers:
                self.tentative_id = theirs
                self._redial()
        if self.cluster_id and theirs != self.cluster_id:
            self.stats_in["foreign"] += 1
            raise FrameError(
                f"refused: server {sender!r} at {remote} belongs to cluster "
                f"{theirs or '(none named)'}, this server to cluster {self.cluster_id}")
        return sender, theirs

    def set_cluster_id(self, cluster_id: str) -> None:
        """Adopt ``cluster_id``: links re-dial with it in their hello, and Raft connections
        whose hello named another are closed (see the module docstring)."""
        if cluster_id == self.cluster_id:
            return
        self.cluster_id = cluster_id
        if cluster_id != self.tentative_id:
            self._redial()
        for theirs, writer in list(self._hellos.values()):
            if theirs != cluster_id:
                writer.close()

