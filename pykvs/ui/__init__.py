"""The web UI served at ``/ui/``: static files (index.html, app.js, style.css) in this package.

The page is plain JS and CSS with no build step and loads nothing from the network except the
agent's own public HTTP API (/v1/kv, /v1/status, /v1/operator/raft, /v1/agent/self,
/v1/session/info). ``ui_endpoint`` serves it; the HTTP API registers it for ``/``, ``/ui``
and ``/ui/<file>``.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

__all__ = ["STATIC_DIR", "UI_ROUTE", "ui_endpoint"]

STATIC_DIR = Path(__file__).resolve().parent

# The route the HTTP API registers: "/", "/ui" and "/ui/<anything>" (nothing else, so every
# other path keeps the API's own 404 and 405 answers).
UI_ROUTE = r"/{path:(ui(/.*)?)?}"

_CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
# Served files only (no directory walk, so no path can reach outside this package).
_FILES = {name: STATIC_DIR / name for name in ("index.html", "app.js", "style.css")}
_HEADERS = {
    # The page may talk to its own origin only: no CDN, no third-party fetch, no inline code.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


async def ui_endpoint(request: web.Request) -> web.StreamResponse:
    """``/`` and ``/ui`` redirect to ``/ui/`` (as Consul's agent does); ``/ui/`` is the page."""
    path = request.match_info.get("path", "")
    if path in ("", "ui"):
        raise web.HTTPMovedPermanently("/ui/")
    name = path.removeprefix("ui/") or "index.html"
    file = _FILES.get(name)
    if file is None:
        raise web.HTTPNotFound()
    return web.Response(body=file.read_bytes(), headers=_HEADERS,
                        content_type=_CONTENT_TYPES[file.suffix], charset="utf-8")
