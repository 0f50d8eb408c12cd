"""``PUT /v1/txn``: Consul's agent/txn_endpoint.go for KV operations.

The body is a JSON array of ``{"KV": {"Verb", "Key", "Value" (base64), "Flags", "Index",
"Session"}}``. Consul's code accepts 128 operations (its documentation still says 64); more is
a 413, as is a body over the request limit or a value over the value limit. A transaction of
read verbs only goes to ``Txn.Read`` (it honours ``?stale``/``?consistent`` and answers with
QueryMeta); anything else to ``Txn.Apply`` through Raft. A transaction that rolled back is a
409 whose body carries ``Errors`` (``OpIndex``, ``What``).
"""

from __future__ import annotations

import binascii
from typing import Any

from aiohttp import web

from pykvs.goformat import go_quote
from pykvs.http.common import (
    HTTPError,
    dir_entry_json,
    field,
    json_response,
    meta_headers,
    parse_uint,
    query_args,
    read_body,
    server_of,
    write_args,
)
from pykvs.http.jsonbody import JSONBodyError, load_json
from pykvs.server.endpoints.txn import MAX_TXN_OPS, TXN_READ_VERBS, TXN_VERBS

TXN_MAX_REQUEST = 512 * 1024  # Consul's txn_max_req_len default (raft's suggested entry size)


def _bad_body(problem: str) -> HTTPError:
    return HTTPError(400, f"Failed to parse body: {problem}")


def _decode_value(raw: Any, position: int) -> bytes:
    if raw is None:
        return b""
    if not isinstance(raw, str):
        raise _bad_body(f"operation {position}: unexpected value type: {type(raw).__name__}")
    try:
        return binascii.a2b_base64(raw.encode("ascii", errors="replace"), strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise _bad_body(f"operation {position}: failed to decode value: {exc}") from None


def _uint_field(kv: dict[str, Any], name: str, position: int) -> int:
    value = field(kv, name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise _bad_body(f"operation {position}: {name} must be an unsigned integer, "
                        f"got {value!r}")
    try:
        return parse_uint(str(int(value)))
    except ValueError as exc:
        raise _bad_body(f"operation {position}: {name}: {exc}") from None


def _str_field(kv: dict[str, Any], name: str, position: int) -> str:
    value = field(kv, name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad_body(f"operation {position}: {name} must be a string, got {value!r}")
    return value


def parse_ops(body: bytes, max_value_size: int) -> list[dict[str, Any]]:
    """The request body as RPC ``Ops``; HTTPError with Consul's code and text when bad."""
    try:
        raw_ops = load_json(body)
    except JSONBodyError as exc:
        raise _bad_body(str(exc)) from None
    if raw_ops is None:
        raw_ops = []
    if not isinstance(raw_ops, list):
        raise _bad_body(f"expected a JSON array of operations, got {type(raw_ops).__name__}")
    if len(raw_ops) > MAX_TXN_OPS:
        raise HTTPError(413, f"Transaction contains too many operations "
                             f"({len(raw_ops)} > {MAX_TXN_OPS})")
    ops = []
    for position, raw in enumerate(raw_ops):
        kv = field(raw, "KV") if isinstance(raw, dict) else None
        if not isinstance(kv, dict):
            raise _bad_body(f"operation {position}: only KV operations are supported "
                            f"(an object with a KV member)")
        key = _str_field(kv, "Key", position)
        value = _decode_value(field(kv, "Value"), position)
        if len(value) > max_value_size:
            raise HTTPError(413, f"Value for key {go_quote(key)} is too large "
                                 f"({len(value)} > {max_value_size} bytes)")
        ops.append({"KV": {
            "Verb": _str_field(kv, "Verb", position),
            "Key": key.encode(),
            "Value": value,
            "Flags": _uint_field(kv, "Flags", position),
            "Index": _uint_field(kv, "Index", position),
            "Session": _str_field(kv, "Session", position),
        }})
    return ops


def _results_json(reply: dict[str, Any]) -> dict[str, Any]:
    results = reply.get("Results")
    errors = reply.get("Errors")
    return {
        "Results": None if results is None else [
            {"KV": dir_entry_json(r["KV"])} for r in results
        ],
        "Errors": None if not errors else [
            {"OpIndex": e["OpIndex"], "What": e["What"]} for e in errors
        ],
    }


async def txn_endpoint(request: web.Request) -> web.StreamResponse:
    server = server_of(request)
    limit = max(TXN_MAX_REQUEST, server.config.max_value_size)
    body = await read_body(request, limit)
    if body is None:
        raise HTTPError(413, f"Request body too large, max size: {limit} bytes")
    ops = parse_ops(body, server.config.max_value_size)
    unknown = [
        {"OpIndex": i, "What": f"unknown KV verb {go_quote(op['KV']['Verb'])}"}
        for i, op in enumerate(ops) if op["KV"]["Verb"] not in TXN_VERBS
    ]
    if unknown:
        return json_response({"Results": None, "Errors": unknown}, status=409)
    if not ops:
        return json_response({"Results": None, "Errors": None})
    headers: dict[str, str] = {}
    if all(op["KV"]["Verb"] in TXN_READ_VERBS for op in ops):
        args = {**query_args(request), "Ops": ops}
        reply = await server.calls["Txn.Read"](args)
        out = _results_json(reply)
        meta = {name: reply.get(name, 0) for name in ("Index", "LastContact", "KnownLeader")}
        out.update(meta)
        known_and_contact = meta_headers(meta)
        del known_and_contact["X-Consul-Index"]  # Consul sets only these two here
        headers.update(known_and_contact)
    else:
        reply = await server.calls["Txn.Apply"]({**write_args(request), "Ops": ops})
        out = _results_json(reply)
    return json_response(out, status=409 if out["Errors"] else 200, headers=headers)
