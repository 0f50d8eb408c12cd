"""Read deadlines of HTTP connections: Go's ``ReadHeaderTimeout`` and ``ReadTimeout``.

A client that sends one byte a minute must not keep a request half-received for ever. Once
the first byte of a request's head has arrived, the head must arrive in full within the
limits' ``http_header_timeout``; once the head has, the body within ``http_body_timeout``.
Either, when it passes, closes the connection without an answer (Go closes it too). The clock
of a request read while the one before it is served starts once that one is answered, as Go
reads the next request only then; idle keep-alive connections are aiohttp's (75 s).

The fast front (front.py) keeps the clocks of the requests it buffers itself. For a connection
aiohttp serves (handed off by the front, or HTTPS), ``AiohttpWatch`` stands between the
transport and aiohttp's protocol: it sees the bytes arrive, and the ``track`` middleware tells
it when aiohttp has a whole head (a request reaches the handlers) and when the answer is made;
the body is whole when the request's payload is at EOF.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from pykvs.server.limits import Limits

__all__ = ["BODY", "HEAD", "AiohttpWatch", "Deadline", "WatchedProtocol", "track"]

HEAD = 1  # the clock of a request's head
BODY = 2  # the clock of a request's body


class Deadline:
    """One connection's clock: ``expired()`` is called when it passes, unless stopped or
    started for the other part of the request first."""

    __slots__ = ("expired", "handle", "kind", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, expired: Callable[[int], None]) -> None:
        self.loop = loop
        self.expired = expired
        self.handle: asyncio.TimerHandle | None = None
        self.kind = 0  # HEAD, BODY, or 0 while stopped

    def start(self, kind: int, seconds: float) -> None:
        """Start the clock of ``kind`` unless it runs already."""
        if self.kind == kind:
            return
        if self.handle is not None:
            self.handle.cancel()
        self.kind = kind
        self.handle = self.loop.call_later(seconds, self._fire)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.kind = 0

    def _fire(self) -> None:
        kind, self.kind, self.handle = self.kind, 0, None
        self.expired(kind)


def close_late(transport: asyncio.BaseTransport | None) -> None:
    """Close a connection whose client was too slow: at once, written bytes or not (a client
    that does not read must not hold it either)."""
    if transport is not None and not transport.is_closing():
        abort = getattr(transport, "abort", None)
        (abort or transport.close)()


class AiohttpWatch:
    """The clocks of a connection served by aiohttp's protocol (see the module docstring).
    ``data()`` is called before each read is handed to aiohttp."""

    __slots__ = ("deadline", "limits", "next_begun", "request", "transport", "watches")

    def __init__(self, transport: asyncio.BaseTransport, limits: Limits,
                 watches: dict[asyncio.BaseTransport, AiohttpWatch]) -> None:
        self.transport = transport
        self.limits = limits
        self.watches = watches
        self.request: web.BaseRequest | None = None  # the request being served
        self.next_begun = False  # bytes of the next request came while one was served
        self.deadline = Deadline(asyncio.get_running_loop(), self._expired)
        watches[transport] = self

    def data(self) -> None:
        request = self.request
        if request is None:
            self.deadline.start(HEAD, self.limits.http_header_timeout)
        elif request.content.is_eof():
            self.next_begun = True

    def enter(self, request: web.BaseRequest) -> None:
        """aiohttp has the head of ``request``: its body's clock, if it has one to come."""
        self.request = request
        self.next_begun = False
        self.deadline.stop()
        if not request.content.is_eof():
            self.deadline.start(BODY, self.limits.http_body_timeout)

    def leave(self) -> None:
        """The answer is made: the next request's clock starts if it has begun."""
        self.request = None
        self.deadline.stop()
        if self.next_begun:
            self.next_begun = False
            self.deadline.start(HEAD, self.limits.http_header_timeout)

    def lost(self) -> None:
        self.deadline.stop()
        self.watches.pop(self.transport, None)

    def _expired(self, kind: int) -> None:
        request = self.request
        if kind == BODY and (request is None or request.content.is_eof()):
            return  # the body came in time
        close_late(self.transport)


WATCHES_KEY: web.AppKey[dict[asyncio.BaseTransport, AiohttpWatch]] = web.AppKey(
    "read_deadlines", dict)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def track(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tells the connection's watch that aiohttp has a whole head, and when it is answered."""
    watch = request.app[WATCHES_KEY].get(request.transport)  # type: ignore[arg-type]
    if watch is None:
        return await handler(request)
    watch.enter(request)
    try:
        return await handler(request)
    finally:
        watch.leave()


class WatchedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection of a listener without the fast front (HTTPS, or
    ``fast_front=False``), behind an AiohttpWatch."""

    def __init__(self, inner: asyncio.Protocol, limits: Limits,
                 watches: dict[asyncio.BaseTransport, AiohttpWatch]) -> None:
        self.inner = inner
        self.limits = limits
        self.watches = watches
        self.watch: AiohttpWatch | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.watch = AiohttpWatch(transport, self.limits, self.watches)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        assert self.watch is not None
        self.watch.data()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.watch is not None:
            self.watch.lost()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


def watched(protocol_factory: Callable[[], Any], limits: Limits,
            watches: dict[asyncio.BaseTransport, AiohttpWatch]) -> Callable[[], WatchedProtocol]:
    """A protocol factory for ``loop.create_server``: aiohttp's protocols, watched."""
    return lambda: WatchedProtocol(protocol_factory(), limits, watches)
