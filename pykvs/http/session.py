"""``/v1/session/*``: Consul's agent/session_endpoint.go over the server's Session endpoints.

``create`` takes an optional JSON body (field names in any case, as Consul's decoder does):
Name, Node (default: this agent's node), LockDelay (a Go duration string or a number of
nanoseconds; values under 1000 are taken as seconds, as Consul does), Behavior, TTL. pykvs has
no health checks, so Checks/NodeChecks/ServiceChecks may name only Consul's default
``serfHealth`` (or be empty).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pykvs.goformat import NS_PER_SECOND
from pykvs.http.common import (
    MAX_INT64,
    HTTPError,
    field,
    json_response,
    meta_headers,
    parse_duration,
    query_args,
    server_of,
    unpack_reply,
    write_args,
)
from pykvs.http.jsonbody import load_json
from pykvs.server.endpoints.session import SessionError, new_session

LOCK_DELAY_MIN_THRESHOLD = 1000  # Consul's lockDelayMinThreshold (ns; below it means seconds)
SERF_CHECK = "serfHealth"


def session_json(wire: dict[str, Any]) -> dict[str, Any]:
    """A session in Consul's JSON field order (structs.Session)."""
    return {
        "ID": wire["ID"],
        "Name": wire.get("Name", ""),
        "Node": wire.get("Node", ""),
        "LockDelay": wire.get("LockDelay", 0),
        "Behavior": wire.get("Behavior", "release"),
        "TTL": wire.get("TTL", ""),
        "NodeChecks": [],
        "ServiceChecks": None,
        "CreateIndex": wire.get("CreateIndex", 0),
        "ModifyIndex": wire.get("ModifyIndex", 0),
    }


def _lock_delay(raw: Any) -> int:
    """FixupLockDelay: a duration string or a number; small values mean seconds."""
    if isinstance(raw, str):
        delay = parse_duration(raw)
    elif isinstance(raw, int | float) and not isinstance(raw, bool) and abs(raw) <= MAX_INT64:
        delay = int(raw)
    else:  # a time.Duration is an int64 of nanoseconds
        raise SessionError(f"LockDelay must be a duration string or a number of nanoseconds "
                           f"within 64 bits, got {raw!r}")
    if delay < LOCK_DELAY_MIN_THRESHOLD:
        delay *= NS_PER_SECOND
    return delay


def _session_body(raw: Any, node: str) -> dict[str, Any]:
    """The create request's body as the Session.Apply ``Session`` map, checked by the
    endpoint's own rules before anything is sent (SessionError, a ValueError, if bad)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SessionError(f"expected a JSON object, got {type(raw).__name__}")
    for name in ("Checks", "NodeChecks", "ServiceChecks"):
        checks = field(raw, name)
        if checks and [c for c in checks if c != SERF_CHECK and c != {"ID": SERF_CHECK}]:
            raise SessionError(f"{name}: pykvs has no health checks, so a session can only "
                               f"use {SERF_CHECK!r}; got {checks!r}")
    body: dict[str, Any] = {}
    for name in ("Name", "Node", "Behavior", "TTL"):
        value = field(raw, name)
        if value is not None and not isinstance(value, str):
            raise SessionError(f"{name} must be a string, got {value!r}")
        body[name] = value or ""
    raw_delay = field(raw, "LockDelay")
    if raw_delay is not None:
        body["LockDelay"] = _lock_delay(raw_delay)
    new_session(body, node)  # Consul's refusals, before anything is sent
    return body


async def session_create(request: web.Request) -> web.StreamResponse:
    server = server_of(request)
    body = await request.read()
    try:
        raw = load_json(body) if body.strip() else None
        session = _session_body(raw, server.config.node_name)
    except (ValueError, UnicodeDecodeError) as exc:  # SessionError is a ValueError
        raise HTTPError(400, f"Request decode failed: {exc}") from None
    args = {**write_args(request), "Op": "create", "Session": session}
    session_id = await server.calls["Session.Apply"](args)
    return json_response({"ID": session_id})


def _path_id(request: web.Request, what: str = "session") -> str:
    value = request.match_info.get("id", "")
    if not value:
        raise HTTPError(400, "Missing node name" if what == "node" else "Missing session")
    return value


async def session_destroy(request: web.Request) -> web.StreamResponse:
    server = server_of(request)
    args = {**write_args(request), "Op": "destroy",
            "Session": {"ID": _path_id(request)}}
    await server.calls["Session.Apply"](args)
    return json_response(True)


async def session_renew(request: web.Request) -> web.StreamResponse:
    server = server_of(request)
    session_id = _path_id(request)
    args = {**query_args(request), "SessionID": session_id}
    reply = unpack_reply(await server.calls["Session.Renew"](args))
    sessions = reply.get("Sessions") or []
    if not sessions:
        raise HTTPError(404, f"Session id '{session_id}' not found")
    return json_response([session_json(s) for s in sessions])


async def _session_read(request: web.Request, method: str, extra: dict[str, Any]
                        ) -> web.StreamResponse:
    server = server_of(request)
    reply = unpack_reply(await server.calls[method]({**query_args(request), **extra}))
    sessions = [session_json(s) for s in reply.get("Sessions") or []]
    return json_response(sessions, headers=meta_headers(reply))


async def session_info(request: web.Request) -> web.StreamResponse:
    return await _session_read(request, "Session.Get", {"SessionID": _path_id(request)})


async def session_list(request: web.Request) -> web.StreamResponse:
    return await _session_read(request, "Session.List", {})


async def session_node(request: web.Request) -> web.StreamResponse:
    return await _session_read(request, "Session.NodeSessions",
                               {"Node": _path_id(request, "node")})
