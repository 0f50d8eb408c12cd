"""The fast front of the HTTP API: every plain-HTTP connection starts here.

With 64 KV writes in flight, aiohttp's own request parsing and reply writing took about half
of the event loop's time (bench/PEERS.md), and the loop is what limits the agent. This protocol
parses HTTP/1.1 itself and serves the requests a KV client sends most -- ``GET``, ``PUT`` and
``DELETE`` of ``/v1/kv/<key>`` with a plain key and query, a ``Content-Length`` body -- through
the same endpoint code as the aiohttp route (``pykvs.http.kv.serve``), writing the same status
line, headers and body. The first request of any other shape (another path, a blocking query,
``%``-escapes, a chunked body, ``Expect``, HTTP/1.0, no Host, a repeated header or parameter,
oversized headers or body, too many connections) hands the connection, with every byte read so
far (at once when a head not yet whole cannot become a fast one), to aiohttp's protocol for the
rest of its life, so every behaviour outside the fast shapes is aiohttp's. One request is
served at a time per connection, in order (a pipelining client gets its replies in order).
tests/test_http_front.py checks that both fronts answer alike.
"""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast

from pykvs.http import kv
from pykvs.http.common import Reply, token_in
from pykvs.http.deadlines import BODY, HEAD, AiohttpWatch, Deadline, close_late
from pykvs.http.errors import error_reply
from pykvs.httphead import parse_head

if TYPE_CHECKING:
    from aiohttp import web

    from pykvs.server.server import Server

__all__ = ["SERVER_SOFTWARE", "FastFront"]

SERVER_SOFTWARE = "pykvs"
KEEPALIVE_TIMEOUT = 75.0  # seconds an idle connection is kept (both fronts)
MAX_HEAD = 8190  # request line plus headers; past this aiohttp answers (431/400)
RECEIVE_BUFFER = 64 * 1024  # bytes one read takes from a socket


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}\r\n".encode()


_STATUS_LINES = {status.value: _status_line(status.value) for status in HTTPStatus}


class _Date:
    """The Date header, formatted once a second."""

    def __init__(self) -> None:
        self.second = -1
        self.header = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.header = f"Date: {formatdate(now, usegmt=True)}\r\n".encode()
        return self.header


_DATE = _Date()
_SERVER_HEADER = f"Server: {SERVER_SOFTWARE}\r\n".encode()


def render(reply: Reply, close: bool) -> bytes:
    """``reply`` as aiohttp writes it: its headers, Content-Type, Content-Length, Date, Server."""
    parts = [_STATUS_LINES.get(reply.status) or _status_line(reply.status)]
    if reply.headers:
        parts.extend(f"{name}: {value}\r\n".encode() for name, value in reply.headers.items())
    if reply.content_type:
        parts.append(f"Content-Type: {reply.content_type}\r\n".encode())
    parts.append(b"Content-Length: %d\r\n" % len(reply.body))
    parts.append(_DATE.get())
    parts.append(_SERVER_HEADER)
    if close:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    parts.append(reply.body)
    return b"".join(parts)


class _Request:
    """One parsed fast-shape request."""

    __slots__ = ("body", "close", "headers", "key", "method", "query", "target")

    def __init__(self, method: str, target: str, key: str, query: dict[str, str],
                 headers: dict[str, str], body: bytes, close: bool) -> None:
        self.method = method
        self.target = target
        self.key = key
        self.query = query
        self.headers = headers
        self.body = body
        self.close = close


_HAND_OFF = object()  # the buffered request is not of a fast shape
PROPOSED = object()  # FrontProtocol.busy while a fast write waits for its proposal


class FastFront:
    """The listening side: makes a FrontProtocol per connection and knows them all."""

    def __init__(self, server: Server, aiohttp_protocol: web.Server,
                 watches: dict[asyncio.BaseTransport, AiohttpWatch] | None = None) -> None:
        self.server = server
        self.aiohttp_protocol = aiohttp_protocol  # aiohttp's web.Server: a protocol factory
        self.watches = {} if watches is None else watches  # read deadlines once handed off
        self.connections: set[FrontProtocol] = set()
        self.handed_off = 0  # connections (still open) now served by aiohttp
        self.served = 0  # requests answered here (tests and stats read it)
        # One receive buffer for every connection: the loop fills it and calls buffer_updated
        # before it reads any other socket.
        self.receive_buffer = memoryview(bytearray(RECEIVE_BUFFER))
        self.proposed = 0  # fast writes waiting for their proposal
        self.no_writes = asyncio.Event()  # set while proposed == 0 (close waits on it)
        self.no_writes.set()
        self.listener: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def __call__(self) -> FrontProtocol:
        return FrontProtocol(self)

    def open_connections(self) -> int:
        """Every open HTTP connection: the fast front's and aiohttp's (HTTPS, and those
        handed off, which are in both). aiohttp's ``connections`` property copies them
        into a list: read the dict behind it when it is there."""
        table = getattr(self.aiohttp_protocol, "_connections", None)
        aiohttp = len(table) if table is not None else len(self.aiohttp_protocol.connections)
        return len(self.connections) + aiohttp - self.handed_off

    async def listen(self, host: str, port: int) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        self.listener = await loop.create_server(self, host, port, reuse_address=True)
        self._sweeper = loop.create_task(self._sweep_idle())
        return self.listener

    async def _sweep_idle(self) -> None:
        """Close fast connections idle for KEEPALIVE_TIMEOUT (aiohttp times out its own)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(KEEPALIVE_TIMEOUT / 8)
            cutoff = loop.time() - KEEPALIVE_TIMEOUT
            for connection in list(self.connections):
                connection.close_if_idle_since(cutoff)

    def stop_listening(self) -> None:
        if self.listener is not None:
            self.listener.close()
        if self._sweeper is not None:
            self._sweeper.cancel()

    async def close(self, grace: float = 0.5) -> None:
        """Stop the fast connections: requests being served get ``grace`` seconds to
        answer (as aiohttp's shutdown_timeout), then are cancelled (aiohttp's runner
        closes the handed-off connections)."""
        self.stop_listening()
        waits: set[asyncio.Future[Any]] = {
            c.busy for c in self.connections
            if c.inner is None and isinstance(c.busy, asyncio.Task)}
        if self.proposed:
            waits.add(asyncio.ensure_future(self.no_writes.wait()))
        if waits:
            await asyncio.wait(waits, timeout=grace)
        tasks = [task for c in list(self.connections) for task in c.close_now()]
        for task in waits | set(tasks):
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.listener is not None:
            await self.listener.wait_closed()


class FrontProtocol(asyncio.BufferedProtocol):
    """One HTTP connection: fast-shape requests served here until one is not.

    A BufferedProtocol: the loop reads into the front's one receive buffer (``get_buffer``),
    where a plain Protocol gets a fresh ``sock.recv(256 KiB)`` per read, an allocation that
    costs more than the read itself (26.6 us against 4.7 us per small message here).
    """

    def __init__(self, front: FastFront) -> None:
        self.front = front
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.inner: asyncio.Protocol | None = None  # aiohttp's, once handed off
        self.watch: AiohttpWatch | None = None  # the read deadlines, once handed off
        self.deadline = Deadline(self.loop, self._too_slow)  # of the request being buffered
        self.waiting = HEAD  # what _parse waits for when it answers None: HEAD or BODY
        self.buffer = bytearray()
        self.busy: asyncio.Task[None] | object | None = None  # a task, PROPOSED or None
        self.eof = False
        self.write_paused = False
        self.read_paused = False
        self.in_next = False  # _next's loop is running
        self.last_active = self.loop.time()

    # ------------------------------------------------------------ asyncio callbacks
    def get_buffer(self, sizehint: int) -> memoryview:
        return self.front.receive_buffer  # shared: copied out in buffer_updated at once

    def buffer_updated(self, nbytes: int) -> None:
        received = self.front.receive_buffer[:nbytes]
        if self.inner is not None:
            self.watch.data()  # type: ignore[union-attr]
            self.inner.data_received(bytes(received))
            return
        self.buffer += received  # the one copy out of the shared buffer
        self.last_active = self.loop.time()
        if self.busy is None:
            self._next()
        elif len(self.buffer) > 2 * MAX_HEAD + self.front.server.config.limits.http_max_body:
            self.transport.pause_reading()  # type: ignore[union-attr]
            self.read_paused = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.front.connections.add(self)

    def eof_received(self) -> bool | None:
        if self.inner is not None:
            return self.inner.eof_received()
        self.eof = True
        if self.busy is None:
            self._next()
        return True  # keep the transport: a reply may still be owed

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.connections.discard(self)
        self.deadline.stop()
        if self.watch is not None:
            self.watch.lost()
        if self.inner is not None:
            self.front.handed_off -= 1
            self.inner.connection_lost(exc)
        # A request being served finishes (a write may be committed); its reply is dropped.

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()
        self.write_paused = True

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()
            return
        self.write_paused = False
        if self.busy is None:
            self._next()

    # ------------------------------------------------------------ serving
    def close_if_idle_since(self, cutoff: float) -> None:
        if self.inner is None and self.busy is None and self.last_active < cutoff:
            assert self.transport is not None
            self.transport.close()

    def _timeout(self, waiting: int) -> float:
        limits = self.front.server.config.limits
        return limits.http_header_timeout if waiting == HEAD else limits.http_body_timeout

    def _too_slow(self, waiting: int) -> None:
        """The request being buffered missed its deadline: the connection is closed."""
        if self.inner is None and self.busy is None:
            close_late(self.transport)

    def close_now(self) -> list[asyncio.Future[Any]]:
        """Close a fast connection (what is written still goes out); the task still
        serving it, if any."""
        if self.inner is not None:
            return []
        assert self.transport is not None
        self.transport.close()
        return [self.busy] if isinstance(self.busy, asyncio.Task) else []

    def _next(self) -> None:
        """Serve the buffered requests while each is answered at once (a bad one, say), up
        to one that waits; or hand the connection off. A loop, not recursion: a pipelined
        buffer of many small requests must not grow the stack."""
        if self.in_next:
            return  # called back from _finish inside the loop below, which goes on
        self.in_next = True
        try:
            while self.busy is None and self.inner is None:
                transport = self.transport
                assert transport is not None
                if transport.is_closing() or self.write_paused:
                    return
                if self.read_paused:
                    transport.resume_reading()
                    self.read_paused = False
                request = self._parse()
                if request is None:
                    if self.eof:
                        if self.buffer:  # a partial request, then EOF: aiohttp's answer
                            self._hand_off()
                        else:
                            transport.close()
                    elif self.buffer:  # the head or body's clock, from its first byte
                        self.deadline.start(self.waiting, self._timeout(self.waiting))
                    return
                if request is _HAND_OFF:
                    self._hand_off()
                    return
                assert isinstance(request, _Request)
                if self.deadline.kind:  # it was read in parts: its clock ran
                    self.deadline.stop()
                self._start(request)
        finally:
            self.in_next = False

    def _parse(self) -> _Request | object | None:
        """The first buffered request if it is of a fast shape (its bytes consumed),
        ``_HAND_OFF`` if it is not, None while it is incomplete. The head's grammar is
        checked in C (csrc/httphead.h); the server's limits and the query here."""
        buffer = self.buffer
        head = parse_head(buffer, MAX_HEAD)
        if head is None:
            self.waiting = HEAD
            return None
        if head is False:
            return _HAND_OFF
        assert not isinstance(head, bool)
        method, key, raw_query, length, token, authorization, close, start = head
        front = self.front
        limits = front.server.config.limits
        if length > limits.http_max_body or front.open_connections() > limits.http_max_conns:
            return _HAND_OFF  # aiohttp's limits middleware answers 413 / 503
        query: dict[str, str] = {}
        if raw_query:
            for part in raw_query.split("&"):
                if not part:
                    continue
                param, _, text = part.partition("=")
                if param in query or param == "index":  # blocking queries have their limits
                    return _HAND_OFF
                query[param] = text
        if len(buffer) < start + length:
            self.waiting = BODY
            return None
        body = bytes(buffer[start:start + length])
        del buffer[:start + length]
        headers: dict[str, str] = {}
        if token is not None:
            headers["x-consul-token"] = token
        if authorization is not None:
            headers["authorization"] = authorization
        return _Request(method, f"/v1/kv/{key}?{raw_query}" if raw_query is not None
                        else f"/v1/kv/{key}", key, query, headers, body, close)

    def _start(self, request: _Request) -> None:
        """Serve ``request``: a write on the leader is proposed at once and answered from its
        proposal's callback; anything else (and a write whose leader moved) runs
        ``kv.serve`` in a task."""
        kv_request = self._kv_request(request)
        if request.method != "GET":
            self.busy = PROPOSED
            try:
                proposed = kv.write_nowait(
                    kv_request, request.body,
                    lambda reply, exc: self._answered(request, kv_request, reply, exc))
            except Exception as exc:  # bad input: the same answers as aiohttp's consul_errors
                self._finish(request, error_reply(exc, request.method, request.target))
                return
            if proposed:
                front = self.front
                front.proposed += 1
                front.no_writes.clear()
                return
        self.busy = self.loop.create_task(self._serve(request, kv_request))

    def _answered(self, request: _Request, kv_request: kv.KVRequest, reply: Reply | None,
                  exc: Exception | None) -> None:
        front = self.front
        front.proposed -= 1
        if not front.proposed:
            front.no_writes.set()
        if exc is not None:
            self._finish(request, error_reply(exc, request.method, request.target))
        elif reply is None:  # leadership moved before anything was applied: forward it
            self.busy = self.loop.create_task(self._serve(request, kv_request))
        else:
            self._finish(request, reply)

    def _kv_request(self, request: _Request) -> kv.KVRequest:
        body = request.body

        async def read(limit: int) -> bytes | None:
            return None if len(body) > limit else body

        return kv.KVRequest(self.front.server, request.method, request.key, request.query,
                            token_in(request.query, request.headers), len(body), read)

    async def _serve(self, request: _Request, kv_request: kv.KVRequest) -> None:
        try:
            reply = await kv.serve(kv_request)
        except Exception as exc:  # the same answers as aiohttp's consul_errors
            reply = error_reply(exc, request.method, request.target)
        self._finish(request, reply)

    def _finish(self, request: _Request, reply: Reply) -> None:
        """Write the reply, then go on to the next buffered request."""
        transport = self.transport
        assert transport is not None
        self.busy = None
        self.front.served += 1
        if transport.is_closing():
            return
        self.last_active = self.loop.time()
        close = request.close
        transport.write(render(reply, close))
        if close:
            transport.close()
        else:
            self._next()

    def _hand_off(self) -> None:
        """From now on aiohttp's protocol serves this connection, from the buffered bytes."""
        transport = self.transport
        assert transport is not None
        if self.read_paused:
            transport.resume_reading()
            self.read_paused = False
        self.deadline.stop()
        inner = self.inner = self.front.aiohttp_protocol()
        self.front.handed_off += 1
        self.watch = AiohttpWatch(transport, self.front.server.config.limits,
                                  self.front.watches)
        inner.connection_made(transport)
        data, self.buffer = bytes(self.buffer), bytearray()
        if data:
            self.watch.data()
            inner.data_received(data)
        if self.eof:
            keep_open = inner.eof_received()  # type: ignore[func-returns-value]
            if not keep_open:
                transport.close()
        if self.write_paused:
            inner.pause_writing()
