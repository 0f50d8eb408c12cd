"""The HTTP API's protective limits (pykvs.server.limits.Limits), as one middleware.

- More open connections than ``http_max_conns``: 503 with the limit in the text, and the
  connection is closed after the answer.
- A declared body over ``http_max_body``: 413 before anything is read (a snapshot restore has
  its own archive limit). Bodies sent without a length are cut off by each endpoint's own limit
  (values, transactions) or by aiohttp's ``client_max_size``, which make_app sets to the same.
- A blocking query (a GET with ``?index=`` above 0) while the client address has
  ``max_blocking_per_client`` waiting already: 429 at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from pykvs.http.common import parse_uint, server_of
from pykvs.server.limits import LimitExceeded, PerClientCounter, too_many_connections

if TYPE_CHECKING:
    from pykvs.http.front import FastFront

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class OpenConnections:
    """How many HTTP connections are open: aiohttp's (HTTPS, and those the fast front handed
    it) and the fast front's (``watch`` is called once both exist)."""

    def __init__(self) -> None:
        self.server: web.Server | None = None
        self.front: FastFront | None = None

    def watch(self, server: web.Server, front: FastFront | None) -> None:
        self.server = server
        self.front = front

    def __len__(self) -> int:
        if self.front is not None:
            return self.front.open_connections()
        return len(self.server.connections) if self.server is not None else 0


CONNECTIONS_KEY: web.AppKey[OpenConnections] = web.AppKey("open_connections", OpenConnections)
BLOCKING_KEY: web.AppKey[PerClientCounter] = web.AppKey("blocking_queries", PerClientCounter)


def install(app: web.Application, max_blocking_per_client: int) -> None:
    """Give ``app`` the state the middleware needs (before the app is frozen)."""
    app[CONNECTIONS_KEY] = OpenConnections()
    app[BLOCKING_KEY] = PerClientCounter(max_blocking_per_client, "blocking queries")


def _is_blocking(request: web.Request) -> bool:
    if request.method != "GET":
        return False
    try:
        return parse_uint(request.query.get("index", "")) > 0
    except ValueError:  # the handler answers Consul's "Invalid index"
        return False


@web.middleware
async def enforce(request: web.Request, handler: Handler) -> web.StreamResponse:
    limits = server_of(request).config.limits
    if len(request.app[CONNECTIONS_KEY]) > limits.http_max_conns:
        refused = web.Response(status=503, text=too_many_connections("HTTP",
                                                                     limits.http_max_conns))
        refused.force_close()
        return refused
    length = request.content_length
    restore = request.method == "PUT" and request.path == "/v1/snapshot"
    if length is not None and length > limits.http_max_body and not restore:
        return web.Response(status=413, text=f"Request body({length} bytes) too large, max "
                                             f"size: {limits.http_max_body} bytes")
    if not _is_blocking(request):
        return await handler(request)
    try:
        with request.app[BLOCKING_KEY].hold(request.remote or "?"):
            return await handler(request)
    except LimitExceeded as exc:
        return web.Response(status=429, text=str(exc))
