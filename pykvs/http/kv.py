"""``/v1/kv/<key>``: Consul's agent/kvs_endpoint.go over the server's KVS endpoints.

Reads this server may answer (``forward()`` says so, the consistency check passed) are served
from the state store's JSON, rendered in C from the stored bytes and sent as they are
(encoded once). A read that must go to the leader or another datacenter goes through the
server's RPC forwarding, and the reply's entries are rendered by the same C transcoder, so a
follower answers byte for byte what the leader does. Writes go through ``KVS.Apply``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

from pykvs import transcode
from pykvs.acl import filter_packed
from pykvs.http.common import (
    HTTPError,
    json_response,
    meta_headers,
    query_args,
    read_body,
    server_of,
    uint_param,
    write_args,
)
from pykvs.server.endpoints import list_keys
from pykvs.state.entry import encode_entry

if TYPE_CHECKING:
    from pykvs.acl import Authorizer
    from pykvs.server.server import Server
    from pykvs.state.store import StateSnapshot
    from pykvs.state.watch import WatchSet

KV_MAX_VALUE_SIZE_DOC = (
    "https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size"
)


def _key(request: web.Request) -> str:
    return request.match_info.get("key", "")


def _conflicting(request: web.Request, *names: str) -> None:
    """Consul's conflictingFlags: at most one of ``names`` may be given."""
    query = request.query
    if len(query) > 1 and sum(name in query for name in names) > 1:
        encoded = urlencode(sorted(query.items()))
        raise HTTPError(400, f"Conflicting flags: {encoded}\n")


async def kv_endpoint(request: web.Request) -> web.StreamResponse:
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


async def _get(request: web.Request) -> web.StreamResponse:
    server = server_of(request)
    key = _key(request)
    recurse = "recurse" in request.query
    if not recurse and not key:
        raise HTTPError(400, "Missing key name")
    raw = "raw" in request.query and not recurse
    args = query_args(request)
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
        return web.Response(status=404, headers=headers)
    if raw:
        # As Consul: the value as is, and headers that stop a browser running it.
        headers.update({"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"})
        return web.Response(body=body, headers=headers, content_type="text/plain")
    return json_response(body, headers=headers)


async def _get_keys(request: web.Request) -> web.StreamResponse:
    server = server_of(request)
    prefix = _key(request).encode()
    # Consul's historic spelling "seperator" is accepted too; "separator" wins.
    separator = request.query.get("separator", request.query.get("seperator", "")).encode()
    args = query_args(request)
    args.update({"Prefix": prefix, "Seperator": separator})

    def read(authz: Authorizer, ws: WatchSet, state: StateSnapshot) -> tuple[int, Any]:
        index, keys, filtered = list_keys(authz, state, prefix, separator, ws)
        return index, (keys, filtered)

    def from_reply(reply: Any) -> list[bytes]:
        return [bytes(k) for k in reply.get("Keys") or []]

    meta, keys = await _run_read(server, "KVS.ListKeys", args, read, from_reply)
    headers = meta_headers(meta)
    if not keys and prefix:
        return web.Response(status=404, headers=headers)
    return json_response(transcode.render_keys_json(keys), headers=headers)


async def read_value(request: web.Request, limit: int) -> bytes:
    """The request body, refused with Consul's 413 when it is over ``limit``."""
    body = await read_body(request, limit)
    if body is None:
        length = request.content_length
        size = f"{length} bytes" if length is not None else f"over {limit} bytes"
        raise HTTPError(413, f"Request body({size}) too large, max size: {limit} bytes. "
                             f"See {KV_MAX_VALUE_SIZE_DOC}.")
    return body


async def _apply(server: Server, args: dict[str, Any]) -> Any:
    return await server.handlers["KVS.Apply"](args)


async def _put(request: web.Request) -> web.StreamResponse:
    server = server_of(request)
    key = _key(request)
    if not key:
        raise HTTPError(400, "Missing key name")
    _conflicting(request, "cas", "acquire", "release")
    query = request.query
    op = "set"
    entry: dict[str, Any] = {"Key": key.encode(), "Flags": 0}
    if "flags" in query:
        entry["Flags"] = uint_param(request, "flags")
    if "cas" in query:
        op, entry["ModifyIndex"] = "cas", uint_param(request, "cas")
    if "acquire" in query:
        op, entry["Session"] = "lock", query["acquire"]
    if "release" in query:
        op, entry["Session"] = "unlock", query["release"]
    if op in ("lock", "unlock") and not entry["Session"]:
        raise HTTPError(400, f"Missing session: ?{'acquire' if op == 'lock' else 'release'}= "
                             f"needs a session ID")
    entry["Value"] = await read_value(request, server.config.max_value_size)
    args = {**write_args(request), "Op": op, "DirEnt": entry}
    result = await _apply(server, args)
    return json_response(True if op == "set" else bool(result))


async def _delete(request: web.Request) -> web.StreamResponse:
    server = server_of(request)
    key = _key(request)
    _conflicting(request, "recurse", "cas")
    query = request.query
    op = "delete"
    entry: dict[str, Any] = {"Key": key.encode()}
    if "recurse" in query:
        op = "delete-tree"
    elif not key:
        raise HTTPError(400, "Missing key name")
    if "cas" in query:
        op, entry["ModifyIndex"] = "delete-cas", uint_param(request, "cas")
    args = {**write_args(request), "Op": op, "DirEnt": entry}
    result = await _apply(server, args)
    return json_response(bool(result) if op == "delete-cas" else True)
