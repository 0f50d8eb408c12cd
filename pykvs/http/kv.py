"""``/v1/kv/<key>``: Consul's agent/kvs_endpoint.go over the server's KVS endpoints.

Reads this server may answer (``forward()`` says so, the consistency check passed) are served
from the state store's JSON, rendered in C from the stored bytes and sent as they are
(encoded once). A read that must go to the leader or another datacenter goes through the
server's RPC forwarding, and the reply's entries are rendered by the same C transcoder, so a
follower answers byte for byte what the leader does. Writes go through ``KVS.Apply``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

from pykvs import transcode
from pykvs.acl import filter_packed
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
from pykvs.server.endpoints import list_keys
from pykvs.server.server import RETRY
from pykvs.state.entry import encode_entry

if TYPE_CHECKING:
    from pykvs.acl import Authorizer
    from pykvs.raft.node import Completion
    from pykvs.server.server import Server
    from pykvs.state.store import StateSnapshot
    from pykvs.state.watch import WatchSet

BodyReader = Callable[[int], Awaitable[bytes | None]]

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


async def kv_endpoint(request: web.Request) -> web.StreamResponse:
    """The aiohttp route of ``/v1/kv/{key}``."""

    async def read(limit: int) -> bytes | None:
        return await read_body(request, limit)

    kv_request = KVRequest(server_of(request), request.method,
                           request.match_info.get("key", ""), request.query,
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


def _render_entries(entries: list[Any] | None) -> bytes:
    """A forwarded reply's ``[[key, [value, flags, create, modify, lock, session]], ...]``
    as Consul's JSON, by the same C transcoder the local path uses."""
    records = []
    for key, (value, flags, create_index, modify_index, lock_index, session) in entries or []:
        stored = encode_entry(value, flags, create_index, modify_index, lock_index, session)
        records.append((key, stored, modify_index))
    return transcode.render_kv_json(transcode.pack_listing(records))


async def _run_read(server: Server, method: str, args: dict[str, Any], read: Any,
                    from_reply: Any) -> tuple[dict[str, Any], Any]:
    """Forward when another server must answer, else answer here; ``(meta, body)``.

    ``read(authz, ws, state)`` answers ``(index, (body, filtered))`` with the request's
    rights (the forwarded request is judged by the server that answers it)."""

    async def attempt(args: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        forwarded, reply = await server.forward(method, args, read=True)
        if forwarded:
            return reply, from_reply(reply)
        authz = server.acl.authorize(args)

        def authorized_read(ws: WatchSet, state: StateSnapshot) -> tuple[int, Any]:
            return read(authz, ws, state)

        index, (body, filtered) = await server.local_query(args, authorized_read)
        meta = server.query_meta(index)
        if filtered and args.get("Token"):  # as Consul: the anonymous caller is not told
            meta["ResultsFilteredByACLs"] = True
        return meta, body

    return await server.retrying(attempt)(args)


async def _get(request: KVRequest) -> Reply:
    server = request.server
    key = request.key
    recurse = "recurse" in request.query
    if not recurse and not key:
        raise HTTPError(400, "Missing key name")
    raw = "raw" in request.query and not recurse
    args = query_args_of(server, request.query, request.token)
    args["Key"] = encoded = key.encode()

    if recurse:
        method = "KVS.List"

        def read(authz: Authorizer, ws: WatchSet, state: StateSnapshot) -> tuple[int, Any]:
            index, packed = state.kv_list_packed(encoded, ws)
            packed, filtered = filter_packed(authz, packed, encoded)
            body = transcode.render_kv_json(packed)
            return index, (None if body == b"[]" else body, filtered)

        def from_reply(reply: Any) -> bytes | None:
            return _render_entries(reply.get("Entries")) if reply.get("Entries") else None

    elif raw:
        method = "KVS.Get"

        def read(authz: Authorizer, ws: WatchSet, state: StateSnapshot) -> tuple[int, Any]:
            authz.require_key_read(encoded)
            index, entry = state.kv_get(encoded, ws)
            return index, (None if entry is None else entry.value, False)

        def from_reply(reply: Any) -> bytes | None:
            entries = reply.get("Entries")
            return bytes(entries[0][1][0]) if entries else None

    else:
        method = "KVS.Get"

        def read(authz: Authorizer, ws: WatchSet, state: StateSnapshot) -> tuple[int, Any]:
            authz.require_key_read(encoded)
            index, body = state.kv_get_json(encoded, ws)
            return index, (body, False)

        def from_reply(reply: Any) -> bytes | None:
            return _render_entries(reply.get("Entries")) if reply.get("Entries") else None

    meta, body = await _run_read(server, method, args, read, from_reply)
    headers = meta_headers(meta)
    if body is None:
        return Reply(404, headers=headers)
    if raw:
        # As Consul: the value as is, and headers that stop a browser running it.
        headers.update({"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"})
        return Reply(200, body, "text/plain", headers)
    return Reply(200, body, JSON, headers)


async def _get_keys(request: KVRequest) -> Reply:
    server = request.server
    prefix = request.key.encode()
    # Consul's historic spelling "seperator" is accepted too; "separator" wins.
    separator = request.query.get("separator", request.query.get("seperator", "")).encode()
    args = query_args_of(server, request.query, request.token)
    args.update({"Prefix": prefix, "Seperator": separator})

    def read(authz: Authorizer, ws: WatchSet, state: StateSnapshot) -> tuple[int, Any]:
        index, keys, filtered = list_keys(authz, state, prefix, separator, ws)
        return index, (keys, filtered)

    def from_reply(reply: Any) -> list[bytes]:
        return [bytes(k) for k in reply.get("Keys") or []]

    meta, keys = await _run_read(server, "KVS.ListKeys", args, read, from_reply)
    headers = meta_headers(meta)
    if not keys and prefix:
        return Reply(404, headers=headers)
    return Reply(200, transcode.render_keys_json(keys), JSON, headers)


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


async def _apply(server: Server, args: dict[str, Any]) -> Any:
    return await server.handlers["KVS.Apply"](args)


def _put_entry(request: KVRequest) -> tuple[str, dict[str, Any]]:
    """A PUT's KVS.Apply verb and DirEnt, all but the value (Consul's checks, in its order)."""
    if not request.key:
        raise HTTPError(400, "Missing key name")
    query = request.query
    _conflicting(query, "cas", "acquire", "release")
    op = "set"
    entry: dict[str, Any] = {"Key": request.key.encode(), "Flags": 0}
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
    entry: dict[str, Any] = {"Key": request.key.encode()}
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
    return _write_reply(op, await _apply(request.server, _apply_args(request, op, entry)))


async def _delete(request: KVRequest) -> Reply:
    op, entry = _delete_entry(request)
    return _write_reply(op, await _apply(request.server, _apply_args(request, op, entry)))


def write_nowait(request: KVRequest, body: bytes,
                 answer: Callable[[Reply | None, Exception | None], None]) -> bool:
    """A PUT or DELETE as ``serve`` answers it, proposed at once and answered from the
    proposal's done-callback, with no task or coroutine (the fast front's writes). False when
    ``serve`` must run it: another datacenter, not the leader, a restore holding new entries.
    Bad input raises as in ``serve``. ``answer(reply, error)`` gets the reply, or the error
    ``serve`` would raise, or (None, None) when leadership moved before anything was applied
    (run ``serve``: it forwards)."""
    server = request.server
    if request.method == "PUT":
        op, entry = _put_entry(request)
        limit = server.config.max_value_size
        entry["Value"] = _value_or_413(request, body if len(body) <= limit else None, limit)
    else:
        op, entry = _delete_entry(request)
    args = _apply_args(request, op, entry)
    if not server.writes_here(args):
        return False
    command, may_delete = server.endpoints.kvs_apply_command(args)

    def applied(done: Completion) -> None:
        try:
            result = server.write_outcome(done, may_delete=may_delete)
            reply = None if result is RETRY else \
                _write_reply(op, server.endpoints.kvs_apply_result(result))
        except Exception as exc:  # answered by the caller's error mapping
            answer(None, exc)
            return
        answer(reply, None)

    return server.propose_nowait(command, applied) is not None
