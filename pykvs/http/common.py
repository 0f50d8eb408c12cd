"""What every HTTP endpoint shares: Consul's error replies, query parameters, response meta.

Consul's agent/http.go parses ``?dc``, ``?index``/``?wait`` (parseWait) and ``?stale``/
``?consistent`` (parseConsistency) the same way for every read, and answers bad values with a
400 and a fixed text ("Invalid wait time", "Invalid index", "Cannot specify ?stale with
?consistent, conflicting semantics."). Reads carry QueryMeta as the ``X-Consul-Index``,
``X-Consul-KnownLeader`` and ``X-Consul-LastContact`` headers (setMeta; an index of 0 is sent
as 1, LastContact in milliseconds).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgpack
from aiohttp import web

from pykvs.goformat import DurationError, go_quote, parse_go_duration
from pykvs.server.rpc import RawMsgpack

if TYPE_CHECKING:
    from pykvs.server.server import Server

SERVER_KEY: web.AppKey[Server] = web.AppKey("server")
MAX_UINT64 = (1 << 64) - 1
MAX_INT64 = (1 << 63) - 1
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_NOT_GO_DURATION = re.compile("[^\x00-\x7f\u00b5\u03bc]")  # Go reads ASCII digits only


class HTTPError(Exception):
    """An answer other than 200, with Consul's status code and plain-text reason."""

    def __init__(self, status: int, reason: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = dict(headers or {})


def server_of(request: web.Request) -> Server:
    return request.app[SERVER_KEY]


def parse_uint(text: str) -> int:
    """Go's ``strconv.ParseUint(text, 10, 64)``; ValueError with Go's message (ASCII digits
    only: Python's int() also reads other scripts' digits, and refuses 4,301 digits in its
    own words)."""
    if not _DIGITS.fullmatch(text):
        raise ValueError(f'strconv.ParseUint: parsing {go_quote(text)}: invalid syntax')
    if len(text.lstrip("0")) > 20 or int(text) > MAX_UINT64:
        raise ValueError(f'strconv.ParseUint: parsing {go_quote(text)}: value out of range')
    return int(text)


def parse_duration(text: str) -> int:
    """Go's ``time.ParseDuration`` into ns; DurationError when Go's refuses it, a value over
    an int64 of nanoseconds included (Go's "invalid duration")."""
    try:
        plain = len(text) <= 64 and not _NOT_GO_DURATION.search(text)
        value = parse_go_duration(text) if plain else None
    except ValueError:  # DurationError, and int()'s own refusals of odd digits
        value = None
    if value is None or not -MAX_INT64 - 1 <= value <= MAX_INT64:
        raise DurationError(f"time: invalid duration {go_quote(text)}")
    return value


def uint_param(request: web.Request, name: str) -> int:
    """An unsigned integer query parameter; a bad one is a 400 naming the parameter."""
    return uint_in(request.query, name)


def uint_in(query: Mapping[str, str], name: str) -> int:
    """``uint_param`` of a parsed query string."""
    try:
        return parse_uint(query.get(name, ""))
    except ValueError as exc:
        raise HTTPError(400, f"Invalid {name}: {exc}") from None


def token_of(request: web.Request) -> str:
    return token_in(request.query, request.headers)


def token_in(query: Mapping[str, str], headers: Mapping[str, str]) -> str:
    """Consul's parseToken: ``?token=``, else ``X-Consul-Token``, else ``Authorization:
    Bearer``; "" when the request names none (the anonymous token). ``headers`` is
    looked up by lower-case name (aiohttp's headers ignore case; the fast front's are
    lower-cased)."""
    token = query.get("token", "")
    if token:
        return token
    token = headers.get("x-consul-token", "")
    if token:
        return token
    parts = headers.get("authorization", "").split(" ")
    if len(parts) == 2 and parts[0].lower() == "bearer":
        return parts[1].strip()
    return ""


def write_args(request: web.Request) -> dict[str, Any]:
    """Datacenter and the request's token (``Token``, the secret), in RPC argument form."""
    return write_args_of(server_of(request), request.query, token_of(request))


def write_args_of(server: Server, query: Mapping[str, str], token: str) -> dict[str, Any]:
    """``write_args`` of a parsed request."""
    args: dict[str, Any] = {"Datacenter": query.get("dc") or server.config.datacenter}
    if token:
        args["Token"] = token
    return args


def query_args(request: web.Request) -> dict[str, Any]:
    """Consul's parse(): Datacenter, the token and QueryOptions, in RPC argument form."""
    return query_args_of(server_of(request), request.query, token_of(request))


def query_args_of(server: Server, query: Mapping[str, str], token: str) -> dict[str, Any]:
    """``query_args`` of a parsed request."""
    args = write_args_of(server, query, token)
    wait = query.get("wait", "")
    if wait:
        try:
            wait_ns = parse_duration(wait)
        except DurationError:
            raise HTTPError(400, "Invalid wait time") from None
        args["MaxQueryTime"] = max(0, wait_ns)
    index = query.get("index", "")
    if index:
        try:
            args["MinQueryIndex"] = parse_uint(index)
        except ValueError:
            raise HTTPError(400, "Invalid index") from None
    stale = "stale" in query
    consistent = "consistent" in query
    if stale and consistent:
        raise HTTPError(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
    args["AllowStale"] = stale
    args["RequireConsistent"] = consistent
    return args


def meta_headers(meta: Mapping[str, Any]) -> dict[str, str]:
    """setMeta: QueryMeta as response headers."""
    headers = {
        "X-Consul-Index": str(max(int(meta.get("Index") or 0), 1)),
        "X-Consul-KnownLeader": "true" if meta.get("KnownLeader") else "false",
        "X-Consul-LastContact": str(max(int(meta.get("LastContact") or 0), 0) // 1_000_000),
    }
    if meta.get("ResultsFilteredByACLs"):
        headers["X-Consul-Results-Filtered-By-ACLs"] = "true"
    return headers


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None
                  ) -> web.Response:
    """``body`` as JSON (bytes are sent as they are: already rendered)."""
    return json_reply(body, status, headers).response()


def json_reply(body: Any, status: int = 200, headers: Mapping[str, str] | None = None
               ) -> Reply:
    """``json_response`` as a Reply."""
    if body is True or body is False:  # the answer of every write verb: skip the encoder
        data = b"true" if body else b"false"
    else:
        data = body if isinstance(body, bytes) else dump_json(body)
    return Reply(status, data, JSON, headers)


JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


class Reply:
    """An answer, whichever front sends it: aiohttp (``response()``) or the fast KV front
    (pykvs.http.front renders the same status line and headers itself)."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(self, status: int, body: bytes = b"", content_type: str = "",
                 headers: Mapping[str, str] | None = None) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type  # "" sends no Content-Type (an empty 404)
        self.headers = headers

    def response(self) -> web.Response:
        response = web.Response(status=self.status, body=self.body or None,
                                headers=self.headers)
        if self.content_type:
            response.headers["Content-Type"] = self.content_type
        return response


def text_reply(status: int, reason: str, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(status, reason.encode(), TEXT, headers)


def dump_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def unpack_reply(reply: Any) -> Any:
    """An RPC handler's reply as Python: a local one may be pre-encoded msgpack."""
    if isinstance(reply, RawMsgpack):
        return msgpack.unpackb(reply.data, raw=False, strict_map_key=False)
    return reply


def text(value: Any) -> str:
    """A key or other name that travels as bytes, as Go's JSON shows it."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    return "" if value is None else str(value)


def b64(value: bytes | None) -> str | None:
    """A value as Consul's JSON carries []byte: base64, or null when empty."""
    return base64.b64encode(value).decode("ascii") if value else None


def dir_entry_json(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A DirEntry (RPC wire form) in Consul's JSON field order; Session only when set."""
    out: dict[str, Any] = {
        "LockIndex": entry.get("LockIndex", 0),
        "Key": text(entry.get("Key")),
        "Flags": entry.get("Flags", 0),
        "Value": b64(entry.get("Value")),
    }
    if entry.get("Session"):
        out["Session"] = entry["Session"]
    out["CreateIndex"] = entry.get("CreateIndex", 0)
    out["ModifyIndex"] = entry.get("ModifyIndex", 0)
    return out


def field(mapping: Mapping[str, Any], name: str) -> Any:
    """A JSON field looked up without regard to case, as Go's decoders do."""
    if name in mapping:
        return mapping[name]
    lowered = name.lower()
    for key, value in mapping.items():
        if isinstance(key, str) and key.lower() == lowered:
            return value
    return None


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The request body, or None when it is longer than ``limit`` bytes (read no further)."""
    length = request.content_length
    if length is not None:
        if length > limit:
            return None
        try:  # one read for the usual body of known length (a KV value)
            return await request.content.readexactly(length) if length else b""
        except asyncio.IncompleteReadError as exc:  # the client closed early: what came
            return exc.partial
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(min(1 << 20, limit + 1 - size))
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            return None
