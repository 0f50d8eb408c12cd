"""msgpack-RPC between servers and from clients.

Wire format: a frame is ``u32_be(length) || msgpack(object)`` with ``0 < length <= max_frame``.
A request is ``[id, method, args]`` (``id`` a non-negative int, ``method`` like ``"KVS.Get"``,
``args`` a map of Consul's request fields); its response is ``[id, error, result]`` with
``error`` None or a string. Many requests may be in flight on one connection; responses come back
in completion order and are matched by id.

A handler may return :class:`RawMsgpack` to put already-encoded bytes in the ``result`` slot
unchanged, so a listing built from the state store's stored encodings is never decoded and
re-encoded in Python ("encoded once").

A request that cannot be understood (not a 3-array, bad id, unknown method, args not a map) gets
an error response when it carries a usable id. A frame that breaks the framing itself (length 0,
over ``max_frame``, not exactly one msgpack object) closes that connection only: after a bad
frame the stream cannot be trusted to resynchronise. The server keeps serving everyone else.
With ``connection_errors`` (the Server turns it on) it first sends a *connection error*,
``[nil, error, nil]``, which fails every request the client has in flight with that message. A
connection over ``max_connections`` always gets one, then is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl as _ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from pykvs._aio import wait_for
from pykvs._pack import packb

# One framing for the shared port: Raft and RPC read frames the same way.
from pykvs.raft.transport import (
    FrameError,
    FrameTooLarge,
    decode_frame,
    frame_length,
    read_frame,
)
from pykvs.server.limits import (
    DEFAULT_RPC_IDLE_TIMEOUT,
    DEFAULT_RPC_MAX_CONNS,
    DEFAULT_RPC_MAX_FRAME,
    DEFAULT_RPC_READ_TIMEOUT,
    LimitExceeded,
    PerClientCounter,
    too_many_connections,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_FRAME = DEFAULT_RPC_MAX_FRAME
_REFUSAL_LINGER = 1.0  # seconds a refused connection is read before it is closed
_HEADER = 4
# Requests larger than SMALL_REQUEST bytes are decoded only for these methods.
SMALL_REQUEST = 128 << 10
LARGE_REQUESTS = frozenset({"KVS.Apply", "Txn.Apply", "Txn.Read", "Snapshot.Restore",
                            "ACL.PolicySet", "ACL.TokenSet"})


class RPCError(Exception):
    """The remote side answered with an error string (kept as ``message``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConnectionLost(ConnectionError):
    """The connection closed before the response arrived."""


@dataclass(frozen=True, slots=True)
class RawMsgpack:
    """A result that is already msgpack-encoded; sent as is."""

    data: bytes


Handler = Callable[[dict[str, Any]], Awaitable[Any]]


def _pack(obj: Any) -> bytes:
    return packb(obj)


def encode_frame(body: bytes) -> bytes:
    return len(body).to_bytes(_HEADER, "big") + body


def encode_response(req_id: int, error: str | None, result: Any) -> bytes:
    """The framed ``[id, error, result]``; a RawMsgpack result is spliced in without decoding."""
    if isinstance(result, RawMsgpack):
        body = b"\x93" + _pack(req_id) + _pack(error) + result.data
    else:
        body = _pack([req_id, error, result])
    return encode_frame(body)


async def refuse_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, error: str
) -> None:
    """Send the connection error ``[nil, error, nil]`` and stop writing; the caller closes."""
    with contextlib.suppress(Exception):
        writer.write(encode_frame(_pack([None, error, None])))
        await wait_for(writer.drain(), _REFUSAL_LINGER)
        if writer.can_write_eof():
            writer.write_eof()

        # Closing with unread input resets the connection, and the client could lose the
        # error before reading it: read (and drop) what it sent, briefly.
        async def discard_input() -> None:
            while await reader.read(1 << 16):
                pass

        await wait_for(discard_input(), _REFUSAL_LINGER)


def _min_query_index(args: dict[str, Any]) -> int:
    value = args.get("MinQueryIndex")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _parse_request(obj: Any) -> tuple[int | None, str | None, Any, str | None]:
    """Split a decoded request into (id, method, args, problem); problem None when well formed."""
    if not isinstance(obj, list) or len(obj) != 3:
        return None, None, None, "request must be a 3-element array [id, method, args]"
    req_id, method, args = obj
    if not isinstance(req_id, int) or isinstance(req_id, bool) or req_id < 0:
        return None, None, None, f"request id must be a non-negative integer, got {req_id!r}"
    if not isinstance(method, str):
        return req_id, None, None, f"method must be a string, got {type(method).__name__}"
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return req_id, method, None, f"{method}: args must be a map, got {type(args).__name__}"
    return req_id, method, args, None


def peek_request(body: bytes) -> tuple[int | None, str | None]:
    """The id and method of a request frame, read from its first bytes without decoding the
    rest; None for what is not there (not a request)."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=512)
    unpacker.feed(body[:512])
    try:
        if unpacker.read_array_header() != 3:
            return None, None
        req_id = unpacker.unpack()
        if not isinstance(req_id, int) or isinstance(req_id, bool) or req_id < 0:
            return None, None
        method = unpacker.unpack()
    except Exception:
        return None, None
    return req_id, method if isinstance(method, str) else None


async def invoke(method: str, handler: Handler, args: dict[str, Any]) -> tuple[str | None, Any]:
    """Run one handler; ``(error string or None, result)`` as the response will carry them.
    Bad arguments (ValueError and kin) become an error naming the method."""
    try:
        return None, await handler(args)
    except RPCError as exc:
        return exc.message, None
    except (ValueError, TypeError, KeyError, LookupError) as exc:
        return f"{method}: {exc}", None
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("rpc: %s failed", method)
        return f"{method}: internal error: {exc}", None


class RPCServer:
    """Serves registered methods over TCP; one task per request, so slow ones (blocking
    queries) never hold up others on the same connection."""

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_in_flight_per_conn: int = 1024,
        max_connections: int = DEFAULT_RPC_MAX_CONNS,
        blocking: PerClientCounter | None = None,
        uncounted: Callable[[str], bool] = lambda host: False,
        connection_errors: bool = False,
        read_timeout: float = DEFAULT_RPC_READ_TIMEOUT,
        idle_timeout: float = DEFAULT_RPC_IDLE_TIMEOUT,
        small_request: int = SMALL_REQUEST,
    ) -> None:
        self.handlers = dict(handlers)
        self.handlers_for: Callable[[asyncio.StreamWriter], Mapping[str, Handler]] | None = None
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self.small_request = small_request
        self.max_frame = max_frame
        self.max_in_flight_per_conn = max_in_flight_per_conn
        self.max_connections = max_connections
        # Blocking queries per client host (None: unlimited); hosts ``uncounted`` says so of
        # (the cluster's other servers, forwarding) are not counted.
        self.blocking = blocking
        self.uncounted = uncounted
        self.connection_errors = connection_errors
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._live: set[_Connection] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False
        self.address: tuple[str, int] | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0, *,
                    ssl: _ssl.SSLContext | None = None) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._serve_connection, host, port, ssl=ssl)
        sockname = self._server.sockets[0].getsockname()
        self.address = (sockname[0], sockname[1])
        return self.address

    async def close(self) -> None:
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sweeper
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self._closing:  # accepted before close(), handed over after (a late TLS handshake)
            writer.close()
            return
        await self.serve_connection(reader, writer)

    async def serve_handoff(
        self, first: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Serve a connection another listener accepted and whose first frame it decoded (the
        Raft transport hands over what is not Raft: one port per server). ``first`` is a
        FrameError when that frame broke the framing: the caller closes the connection, and an
        over-limit frame is answered first (other garbage on the shared port is not)."""
        if isinstance(first, FrameError):
            log.warning("rpc: closing connection from %s: %s",
                        writer.get_extra_info("peername"), first)
            if self.connection_errors and isinstance(first, FrameTooLarge):
                await refuse_connection(reader, writer, f"rpc: {first}")
            return
        await self.serve_connection(reader, writer, [first])

    async def serve_connection(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        already_read: list[Any] | None = None,
    ) -> None:
        """Serve requests on one connection until it closes; ``already_read`` holds decoded
        frames that were read off it before."""
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        if len(self._connections) >= self.max_connections:
            log.warning("rpc: refusing a connection from %s: %d open", peer,
                        len(self._connections))
            await refuse_connection(reader, writer, too_many_connections(
                "RPC", self.max_connections))
            writer.close()
            return
        self._connections.add(task)
        connection = _Connection(self, reader, writer, peer)
        self._live.add(connection)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        try:
            await connection.serve(already_read or [])
        except asyncio.CancelledError:
            # close() cancels us; end normally (asyncio logs a cancelled connection task of
            # a listener, and a handed-off connection belongs to the Raft transport's).
            if not self._closing:
                raise
        finally:
            for child in list(connection.in_flight):
                child.cancel()
            writer.close()
            with contextlib.suppress(Exception):
                await wait_for(writer.wait_closed(), 1.0)
            self._connections.discard(task)
            self._live.discard(connection)

    async def _sweep(self) -> None:
        """Close the connections past a deadline: a frame begun ``read_timeout`` ago and not
        yet whole, or nothing in flight for ``idle_timeout``. One timer for all of them, so a
        request pays two clock reads, no timer of its own."""
        loop = asyncio.get_running_loop()
        period = max(0.01, min(self.read_timeout, self.idle_timeout) / 4)
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for connection in list(self._live):
                started = connection.frame_started
                if started is not None:
                    if now - started > self.read_timeout:
                        connection.expire(f"a frame was not received in full within "
                                          f"{self.read_timeout:g}s (the read deadline)")
                elif (not connection.in_flight
                      and now - connection.last_active > self.idle_timeout):
                    connection.expire(f"idle for {self.idle_timeout:g}s")


class _Connection:
    """One RPC connection: requests read in order, run concurrently (up to the per-connection
    limit), answered as each finishes."""

    def __init__(self, server: RPCServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, peer: Any) -> None:
        self.server = server
        choose = server.handlers_for  # the table for this peer (server/identity.py), once
        self.handlers = server.handlers if choose is None else choose(writer)
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.host = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        self.counted = server.blocking is not None and not server.uncounted(self.host)
        self.write_lock = asyncio.Lock()
        self.loop = asyncio.get_running_loop()  # once: each call makes a getpid() system call
        self.in_flight: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(server.max_in_flight_per_conn)
        self.frame_started: float | None = None  # when the frame being read began to arrive
        self.last_active = self.loop.time()  # the last frame read or response sent
        self.expired = False

    def expire(self, why: str) -> None:
        """Close the connection (the sweeper's deadlines), telling the client why."""
        if self.expired:
            return
        self.expired = True
        log.warning("rpc: closing connection from %s: %s", self.peer, why)
        with contextlib.suppress(Exception):
            if self.server.connection_errors:
                self.writer.write(encode_frame(_pack([None, f"rpc: {why}", None])))
            self.writer.close()

    async def respond(self, req_id: int, error: str | None, result: Any) -> None:
        try:
            frame = encode_response(req_id, error, result)
        except Exception as exc:  # a handler returned something msgpack cannot encode
            log.exception("rpc: cannot encode the result of request %d", req_id)
            frame = encode_response(req_id, f"internal error encoding result: {exc}", None)
        async with self.write_lock:
            self.writer.write(frame)
            await self.writer.drain()
        self.last_active = self.loop.time()

    async def run(self, req_id: int, method: str, handler: Handler, args: dict[str, Any]) -> None:
        blocking = self.server.blocking
        try:
            if self.counted and blocking is not None and _min_query_index(args) > 0:
                try:
                    with blocking.hold(self.host):
                        error, result = await invoke(method, handler, args)
                except LimitExceeded as exc:
                    error, result = f"{method}: {exc}", None
            else:
                error, result = await invoke(method, handler, args)
            await self.respond(req_id, error, result)
        finally:
            self.slots.release()

    async def _read_frame(self) -> Any:
        """One request frame off the connection under the read deadline (the sweeper's): its
        object, or _REFUSED when it was too large for its method (answered here)."""
        reader = self.reader
        first = await reader.readexactly(1)
        self.frame_started = self.loop.time()
        length = frame_length(first + await reader.readexactly(_HEADER - 1),
                              self.server.max_frame)
        body = await reader.readexactly(length)
        self.frame_started = None
        self.last_active = self.loop.time()
        if length > self.server.small_request:
            req_id, method = peek_request(body)
            if method not in LARGE_REQUESTS:
                limit = self.server.small_request
                if req_id is None:
                    raise FrameError(f"frame of {length} bytes is not a request of a method "
                                     f"that may be larger than {limit} bytes")
                await self.respond(req_id, f"{method}: request of {length} bytes is over the "
                                   f"{limit}-byte limit for this method", None)
                return _REFUSED
        return decode_frame(body)

    async def _next_frame(self, already_read: list[Any]) -> Any:
        """The next request frame; _CLOSED when the connection ends or breaks the framing."""
        server = self.server
        try:
            if already_read:
                return already_read.pop(0)
            return await self._read_frame()
        except (asyncio.IncompleteReadError, ConnectionError):
            return _CLOSED
        except FrameError as exc:
            log.warning("rpc: closing connection from %s: %s", self.peer, exc)
            if server.connection_errors:
                await refuse_connection(self.reader, self.writer, f"rpc: {exc}")
            return _CLOSED

    async def serve(self, already_read: list[Any]) -> None:
        handlers = self.handlers
        while True:
            obj = await self._next_frame(already_read)
            if obj is _CLOSED:
                return
            if obj is _REFUSED:
                continue
            req_id, method, args, problem = _parse_request(obj)
            if problem is None and method not in handlers:
                problem = f"rpc: can't find method {method}"
            if problem is not None:
                if req_id is None:
                    log.warning("rpc: closing connection from %s: %s", self.peer, problem)
                    return
                await self.respond(req_id, problem, None)
                continue
            assert req_id is not None and method is not None
            await self.slots.acquire()
            child = self.loop.create_task(self.run(req_id, method, handlers[method], args))
            self.in_flight.add(child)
            child.add_done_callback(self.in_flight.discard)


_CLOSED = object()  # _Connection._next_frame: no more requests on this connection
_REFUSED = object()  # _Connection._read_frame: a request refused unread (it was answered)


class RPCClient:
    """One connection to one server with many requests in flight."""

    def __init__(self, host: str, port: int, *, max_frame: int = DEFAULT_MAX_FRAME,
                 ssl: _ssl.SSLContext | None = None, connect_timeout: float = 10.0,
                 idle_redial: float = DEFAULT_RPC_IDLE_TIMEOUT / 2) -> None:
        self.host = host
        self.port = port
        self.max_frame = max_frame
        self.ssl = ssl
        self.connect_timeout = connect_timeout
        # A connection idle this long is closed here and dialled again before the next call,
        # so the server's idle close (rpc_idle_timeout) never lands under a request.
        self.idle_redial = idle_redial
        self._last_used = 0.0
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop  # the connection's, set as it connects
        self._connect_lock = asyncio.Lock()
        self.closed = False

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def _ensure_connected(self) -> asyncio.StreamWriter:
        async with self._connect_lock:
            if self.closed:
                raise ConnectionLost(f"client for {self.host}:{self.port} is closed")
            if (self.connected and not self._pending
                    and self._loop.time() - self._last_used > self.idle_redial):
                await self._hang_up()
            if not self.connected:
                reader, self._writer = await wait_for(
                    asyncio.open_connection(self.host, self.port, ssl=self.ssl),
                    self.connect_timeout)
                self._reader = reader
                # Kept for call(): asyncio.get_running_loop() makes a getpid() system call.
                self._loop = asyncio.get_running_loop()
                self._last_used = self._loop.time()
                self._read_task = self._loop.create_task(self._read_responses(reader))
            assert self._writer is not None
            return self._writer

    async def _hang_up(self) -> None:
        """End the connection (its reader's clean-up closes the writer); the next call dials."""
        task = self._read_task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _read_responses(self, reader: asyncio.StreamReader) -> None:
        error: BaseException = ConnectionLost(f"connection to {self.host}:{self.port} closed")
        try:
            while True:
                obj = await read_frame(reader, self.max_frame)
                if isinstance(obj, list) and len(obj) == 3 and obj[0] is None and obj[1]:
                    # A connection error: the server refused the connection or a frame, and
                    # closes it (requests in flight are cancelled, their outcome unknown).
                    error = ConnectionLost(f"{self.host}:{self.port} closed the connection: "
                                           f"{obj[1]}")
                    return
                if not isinstance(obj, list) or len(obj) != 3 or not isinstance(obj[0], int):
                    error = ConnectionLost(f"malformed response from {self.host}:{self.port}")
                    return
                future = self._pending.pop(obj[0], None)
                if future is None or future.done():
                    continue
                if obj[1] is not None:
                    future.set_exception(RPCError(str(obj[1])))
                else:
                    future.set_result(obj[2])
        except (asyncio.IncompleteReadError, OSError, FrameError) as exc:  # ssl errors too
            error = ConnectionLost(f"connection to {self.host}:{self.port} lost: {exc}")
        finally:
            if self._writer is not None:
                self._writer.close()
            self._writer = None
            pending, self._pending = self._pending, {}
            for future in pending.values():
                if not future.done():
                    future.set_exception(error)

    async def call(
        self, method: str, args: Mapping[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        """Send one request and wait for its result; raises RPCError for a remote error."""
        writer = await self._ensure_connected()
        req_id = next(self._ids)
        future: asyncio.Future[Any] = self._loop.create_future()
        self._pending[req_id] = future
        body = _pack([req_id, method, dict(args or {})])
        if len(body) > self.max_frame:
            self._pending.pop(req_id, None)
            raise ValueError(f"{method}: request of {len(body)} bytes exceeds {self.max_frame}")
        writer.write(encode_frame(body))
        try:
            await writer.drain()
            return await wait_for(future, timeout)
        finally:
            self._pending.pop(req_id, None)
            self._last_used = self._loop.time()

    async def close(self) -> None:
        self.closed = True
        if self._writer is not None:
            self._writer.close()
        if self._read_task is not None:
            self._read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._read_task


class ConnectionPool:
    """One RPCClient per server address, re-dialled when its connection dropped."""

    def __init__(self, *, max_frame: int = DEFAULT_MAX_FRAME,
                 ssl: _ssl.SSLContext | None = None) -> None:
        self.max_frame = max_frame
        self.ssl = ssl
        self._clients: dict[tuple[str, int], RPCClient] = {}

    def client(self, host: str, port: int) -> RPCClient:
        key = (host, port)
        found = self._clients.get(key)
        if found is None or found.closed:
            found = RPCClient(host, port, max_frame=self.max_frame, ssl=self.ssl)
            self._clients[key] = found
        return found

    async def call(
        self,
        address: tuple[str, int],
        method: str,
        args: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        return await self.client(*address).call(method, args, timeout)

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for found in clients.values():
            await found.close()
