"""``/v1/kv/<key>``: Consul's agent/kvs_endpoint.go, a codec over the KVS endpoints.

A request becomes KVS.Get, KVS.List, KVS.ListKeys or KVS.Apply arguments; the endpoint (in
pykvs.server.endpoints.kvs) forwards, authorizes and applies or queries; its result renders
itself as Consul's JSON, in C from the stored bytes (encoded once), whether this server read
its own state or forwarded the request. Nothing of KV's semantics is decided here.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlencode

from aiohttp import web

from pykvs.goformat import go_quote
from pykvs.http.common import (
    JSON,
    HTTPError,
    Reply,
    json_reply,
    meta_headers,
    query_args_of,
    read_body,
    server_of,
    token_of,
    uint_in,
    write_args_of,
)
from pykvs.server.endpoints.results import KeyList, KVEntry, KVListing
from pykvs.server.seam import Retry

if TYPE_CHECKING:
    from pykvs.server.server import Server

BodyReader = Callable[[int], Awaitable[bytes | None]]

KV_PREFIX = "/v1/kv/"
_HEX2 = re.compile("[0-9A-Fa-f]{2}")
KV_MAX_VALUE_SIZE_DOC = (
    "https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size"
)


class KVRequest:
    """A ``/v1/kv/<key>`` request as the endpoint reads it, from aiohttp (``kv_endpoint``)
    or from the fast front (pykvs.http.front), which share everything below."""

    __slots__ = ("content_length", "key", "method", "query", "read", "server", "token")

    def __init__(self, server: Server, method: str, key: str, query: Mapping[str, str],
                 token: str, content_length: int | None, read: BodyReader) -> None:
        self.server = server
        self.method = method
        self.key = key
        self.query = query
        self.token = token
        self.content_length = content_length
        self.read = read  # the body, or None past ``limit`` bytes (read no further)


def _conflicting(query: Mapping[str, str], *names: str) -> None:
    """Consul's conflictingFlags: at most one of ``names`` may be given."""
    if len(query) > 1 and sum(name in query for name in names) > 1:
        encoded = urlencode(sorted(query.items()))
        raise HTTPError(400, f"Conflicting flags: {encoded}\n")


def key_bytes(key: str) -> bytes:
    """The stored key of a request's key (bytes of %-escapes that are not UTF-8 included)."""
    return key.encode("utf-8", "surrogateescape")


def path_key(escaped: str) -> str:
    """The key of ``/v1/kv/<escaped>`` as Go's url.PathUnescape reads it: every ``%XX`` is
    the byte XX (one that is not UTF-8 kept as a surrogate, see key_bytes), and a ``%`` not
    followed by two hex digits is Go's 400 ``invalid URL escape "%zz"``. ``escaped`` is
    aiohttp's ``path_safe`` part: decoded, but for %2F, %25 and escapes that are not UTF-8,
    which aiohttp's own unquoting would leave as text (``bad%ffkey`` and ``bad%25ffkey``
    were one key)."""
    if "%" not in escaped:
        return escaped
    first, *rest = escaped.split("%")
    parts = [first.encode("utf-8", "surrogateescape")]
    for part in rest:
        if not _HEX2.match(part):
            raise HTTPError(400, f"invalid URL escape {go_quote('%' + part[:2])}")
        parts.append(bytes.fromhex(part[:2]))
        parts.append(part[2:].encode("utf-8", "surrogateescape"))
    return b"".join(parts).decode("utf-8", "surrogateescape")


async def kv_endpoint(request: web.Request) -> web.StreamResponse:
    """The aiohttp route of ``/v1/kv/{key}``."""

    async def read(limit: int) -> bytes | None:
        return await read_body(request, limit)

    key = path_key(request.rel_url.path_safe[len(KV_PREFIX):])
    kv_request = KVRequest(server_of(request), request.method, key, request.query,
                           token_of(request), request.content_length, read)
    return (await serve(kv_request)).response()


async def serve(request: KVRequest) -> Reply:
    if request.method == "GET":
        if "keys" in request.query:
            return await _get_keys(request)
        return await _get(request)
    if request.method == "PUT":
        return await _put(request)
    return await _delete(request)


async def _get(request: KVRequest) -> Reply:
    server = request.server
    key = request.key
    recurse = "recurse" in request.query
    if not recurse and not key:
        raise HTTPError(400, "Missing key name")
    raw = "raw" in request.query and not recurse
    args = query_args_of(server, request.query, request.token)
    args["Key"] = key_bytes(key)
    result: KVEntry | KVListing = await server.calls["KVS.List" if recurse else "KVS.Get"](args)
    headers = meta_headers(result.meta)
    if raw:
        assert isinstance(result, KVEntry)
        value = result.raw_value()
        if value is None:
            return Reply(404, headers=headers)
        # As Consul: the value as is, and headers that stop a browser running it.
        headers.update({"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"})
        return Reply(200, value, "text/plain", headers)
    body = result.json()
    if body is None:
        return Reply(404, headers=headers)
    return Reply(200, body, JSON, headers)


async def _get_keys(request: KVRequest) -> Reply:
    server = request.server
    prefix = key_bytes(request.key)
    # Consul's historic spelling "seperator" is accepted too; "separator" wins.
    separator = request.query.get("separator", request.query.get("seperator", "")).encode()
    args = query_args_of(server, request.query, request.token)
    args.update({"Prefix": prefix, "Seperator": separator})
    result: KeyList = await server.calls["KVS.ListKeys"](args)
    headers = meta_headers(result.meta)
    if not result.keys and prefix:
        return Reply(404, headers=headers)
    return Reply(200, result.json(), JSON, headers)


async def read_value(request: KVRequest, limit: int) -> bytes:
    """The request body, refused with Consul's 413 when it is over ``limit``."""
    return _value_or_413(request, await request.read(limit), limit)


def _value_or_413(request: KVRequest, body: bytes | None, limit: int) -> bytes:
    if body is None:
        length = request.content_length
        size = f"{length} bytes" if length is not None else f"over {limit} bytes"
        raise HTTPError(413, f"Request body({size}) too large, max size: {limit} bytes. "
                             f"See {KV_MAX_VALUE_SIZE_DOC}.")
    return body


def _put_entry(request: KVRequest) -> tuple[str, dict[str, Any]]:
    """A PUT's KVS.Apply verb and DirEnt, all but the value (Consul's checks, in its order)."""
    if not request.key:
        raise HTTPError(400, "Missing key name")
    query = request.query
    _conflicting(query, "cas", "acquire", "release")
    op = "set"
    entry: dict[str, Any] = {"Key": key_bytes(request.key), "Flags": 0}
    if "flags" in query:
        entry["Flags"] = uint_in(query, "flags")
    if "cas" in query:
        op, entry["ModifyIndex"] = "cas", uint_in(query, "cas")
    if "acquire" in query:
        op, entry["Session"] = "lock", query["acquire"]
    if "release" in query:
        op, entry["Session"] = "unlock", query["release"]
    if op in ("lock", "unlock") and not entry["Session"]:
        raise HTTPError(400, f"Missing session: ?{'acquire' if op == 'lock' else 'release'}= "
                             f"needs a session ID")
    return op, entry


def _delete_entry(request: KVRequest) -> tuple[str, dict[str, Any]]:
    """A DELETE's KVS.Apply verb and DirEnt."""
    query = request.query
    _conflicting(query, "recurse", "cas")
    op = "delete"
    entry: dict[str, Any] = {"Key": key_bytes(request.key)}
    if "recurse" in query:
        op = "delete-tree"
    elif not request.key:
        raise HTTPError(400, "Missing key name")
    if "cas" in query:
        op, entry["ModifyIndex"] = "delete-cas", uint_in(query, "cas")
    return op, entry


def _apply_args(request: KVRequest, op: str, entry: dict[str, Any]) -> dict[str, Any]:
    args = write_args_of(request.server, request.query, request.token)
    args["Op"] = op
    args["DirEnt"] = entry
    return args


def _write_reply(op: str, result: Any) -> Reply:
    """``true``, or the outcome of a CAS, lock or unlock."""
    return json_reply(bool(result) if op in ("cas", "lock", "unlock", "delete-cas") else True)


async def _put(request: KVRequest) -> Reply:
    op, entry = _put_entry(request)
    entry["Value"] = await read_value(request, request.server.config.max_value_size)
    return _write_reply(op, await request.server.calls["KVS.Apply"](_apply_args(request, op,
                                                                                 entry)))


async def _delete(request: KVRequest) -> Reply:
    op, entry = _delete_entry(request)
    return _write_reply(op, await request.server.calls["KVS.Apply"](_apply_args(request, op,
                                                                                 entry)))


def write_nowait(request: KVRequest, body: bytes,
                 answer: Callable[[Reply | None, Exception | None], None]) -> bool:
    """A PUT or DELETE as ``serve`` answers it, through KVS.Apply's ``apply_nowait`` (no task
    or coroutine: the fast front's writes). False when ``serve`` must run it (the write goes
    to another server). Bad input raises as in ``serve``. ``answer(reply, error)`` gets the
    reply, or the error ``serve`` would raise, or (None, None) when leadership moved before
    anything was applied (run ``serve``: it forwards)."""
    server = request.server
    if request.method == "PUT":
        op, entry = _put_entry(request)
        limit = server.config.max_value_size
        entry["Value"] = _value_or_413(request, body if len(body) <= limit else None, limit)
    else:
        op, entry = _delete_entry(request)

    def applied(result: Any, error: BaseException | None) -> None:
        if error is None:
            answer(_write_reply(op, result), None)
        elif isinstance(error, Retry):
            answer(None, None)
        else:
            answer(None, cast(Exception, error))

    return server.endpoints.kvs.apply_nowait(_apply_args(request, op, entry), applied)
