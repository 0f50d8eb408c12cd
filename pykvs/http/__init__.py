"""pykvs's Consul-compatible HTTP API (aiohttp), served next to a Server in the same process.

``await start(server, host, port)`` listens (port 0 picks one) and returns a handle with
``address`` ("host:port") and ``close()``; ``pykvs agent`` calls it. Handlers call the server
in-process, as Consul's agent calls its local server: the RPC endpoints (which forward to the
leader or another datacenter) for writes and most reads, and the state store's C-rendered JSON
for KV reads this server may answer. docs/HTTP.md lists the endpoints and how they differ from
Consul's.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from pykvs import ui
from pykvs.http import acl, kv, operator, session, snapshot, txn
from pykvs.http import limits as http_limits
from pykvs.http.common import SERVER_KEY, text_reply
from pykvs.http.deadlines import WATCHES_KEY, track, watched
from pykvs.http.errors import error_reply, hide_secrets_in_logs
from pykvs.http.front import KEEPALIVE_TIMEOUT, SERVER_SOFTWARE, FastFront

if TYPE_CHECKING:
    from pykvs.server.server import Server

__all__ = ["HTTPServer", "make_app", "start"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ROUTES: list[tuple[str, tuple[str, ...], Handler]] = [
    ("/v1/kv/{key:.*}", ("GET", "PUT", "DELETE"), kv.kv_endpoint),
    ("/v1/txn", ("PUT",), txn.txn_endpoint),
    ("/v1/session/create", ("PUT",), session.session_create),
    ("/v1/session/destroy/{id:.*}", ("PUT",), session.session_destroy),
    ("/v1/session/renew/{id:.*}", ("PUT",), session.session_renew),
    ("/v1/session/info/{id:.*}", ("GET",), session.session_info),
    ("/v1/session/node/{id:.*}", ("GET",), session.session_node),
    ("/v1/session/list", ("GET",), session.session_list),
    ("/v1/status/leader", ("GET",), operator.status_leader),
    ("/v1/status/peers", ("GET",), operator.status_peers),
    ("/v1/operator/raft/configuration", ("GET",), operator.raft_configuration),
    ("/v1/operator/raft/peer", ("DELETE",), operator.raft_remove_peer),
    ("/v1/operator/raft/transfer-leader", ("POST",), operator.raft_transfer_leader),
    ("/v1/snapshot", ("GET", "PUT"), snapshot.snapshot_endpoint),
    ("/v1/agent/self", ("GET",), operator.agent_self_endpoint),
    (ui.UI_ROUTE, ("GET",), ui.ui_endpoint),  # the web UI; / redirects to /ui/
    *acl.ROUTES,
]


@web.middleware
async def consul_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as Consul's agent/http.go writes them (http/errors.py), and aiohttp's own
    routing refusals in Consul's words."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        allow = ",".join(["OPTIONS", *sorted(exc.allowed_methods)])
        return text_reply(405, f"method {request.method} not allowed",
                          {"Allow": allow}).response()
    except web.HTTPNotFound:
        return text_reply(404, f"Invalid URL path: no endpoint at {request.path!r}").response()
    except web.HTTPException:
        raise
    except Exception as exc:
        return error_reply(exc, request.method, request.path_qs).response()


def make_app(server: Server) -> web.Application:
    limits = server.config.limits
    app = web.Application(middlewares=[track, consul_errors, http_limits.enforce],
                          client_max_size=limits.http_max_body)
    app[SERVER_KEY] = server
    app[WATCHES_KEY] = {}
    http_limits.install(app, limits.max_blocking_per_client)
    for path, methods, handler in ROUTES:
        for method in methods:
            app.router.add_route(method, path, handler)
    return app


class HTTPServer:
    """A running HTTP API: ``address`` is "host:port" (``https_address`` too when HTTPS is
    served); ``await close()`` stops it. ``front`` is the fast KV front, if one is used."""

    def __init__(self, runner: web.AppRunner, front: FastFront | None, address: str,
                 https_address: str = "", listeners: list[asyncio.Server] | None = None
                 ) -> None:
        self.runner = runner
        self.front = front
        self.address = address
        self.https_address = https_address
        self.listeners = listeners or []  # aiohttp's own (HTTPS, or without the front)

    async def close(self) -> None:
        for listener in self.listeners:
            listener.close()
        if self.front is not None:
            await self.front.close()
        await self.runner.cleanup()


async def _server_header(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_SOFTWARE  # as the fast front's replies


async def start(server: Server, host: str = "127.0.0.1", port: int = 8500, *,
                https_port: int | None = None, ssl_context: ssl.SSLContext | None = None,
                fast_front: bool = True) -> HTTPServer:
    """Serve the HTTP API of ``server`` on ``host:port`` (0 picks a free port), and over
    HTTPS with ``ssl_context`` on ``host:https_port`` when that is given.

    Plain HTTP connections go through the fast front (pykvs.http.front), which serves the
    common KV requests itself and hands every other connection to aiohttp; with
    ``fast_front=False`` (and for HTTPS) aiohttp serves everything."""
    if https_port is not None and ssl_context is None:
        raise ValueError("https_port needs an ssl_context (a TLS certificate and key)")
    hide_secrets_in_logs()
    app = make_app(server)
    app.on_response_prepare.append(_server_header)
    # Blocking queries may be waiting: do not let them hold the agent's shutdown.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5,
                           keepalive_timeout=KEEPALIVE_TIMEOUT)
    await runner.setup()
    assert runner.server is not None
    watches = app[WATCHES_KEY]
    front = FastFront(server, runner.server, watches) if fast_front else None
    runner.app[http_limits.CONNECTIONS_KEY].watch(runner.server, front)
    sites: list[tuple[int, ssl.SSLContext | None]] = [] if front is not None else [(port, None)]
    if https_port is not None:
        sites.append((https_port, ssl_context))
    # aiohttp's protocols behind the read deadlines (pykvs.http.deadlines), not a TCPSite.
    factory = watched(runner.server, server.config.limits, watches)
    loop = asyncio.get_running_loop()
    listeners: list[asyncio.Server] = []
    try:
        address = ""
        if front is not None:
            address = _bound(await front.listen(host, port))
        for site_port, context in sites:
            listeners.append(await loop.create_server(factory, host, site_port, ssl=context,
                                                      reuse_address=True))
    except BaseException:
        await HTTPServer(runner, front, "", "", listeners).close()
        raise
    bound_sites = [_bound(listener) for listener in listeners]
    if front is None:
        address = bound_sites.pop(0)
    return HTTPServer(runner, front, address, bound_sites[0] if https_port is not None else "",
                      listeners)


def _bound(listener: asyncio.Server) -> str:
    host, port = listener.sockets[0].getsockname()[:2]
    return f"{host}:{port}"
