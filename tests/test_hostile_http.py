"""Issue 15, the HTTP half: what a hostile client sends, and what it must get back.

Each test is written from the attacker's side first: the exact bytes or URL. Where both fronts
serve the request (the fast front, and aiohttp alone: tests/test_http_front.py's two listeners
of one server) both are tried and must answer alike. Every test of a request that could
write checks that nothing was written (the KV store and the sessions are unchanged), and each
that the server still serves.

- Secrets in logs: a 500 and aiohttp's own parse errors once logged ``?token=`` and the
  X-Consul-Token / Authorization headers in clear; now ``<hidden>`` (as Consul).
- 500s and Python's words where Consul answers a 400 in its own: JSON nested 100,000 deep, NaN
  and Infinity, numbers over 64 bits, ``?index=%C2%B2``, a 5,000-digit index, ``?wait=9999999999h``.
- Heads: bare-LF heads, and heads that cannot become a fast one, are answered at once (as
  aiohttp answers them); a PUT without Host (or with two) is aiohttp's 400 on both fronts (the
  fast front wrote it); malformed %-escapes in a key are a 400, and ``bad%ffkey`` and
  ``bad%25ffkey`` are two keys.
- Slow peers: a head or body sent a byte at a time is cut off at the read deadline.
- A hypothesis run of random JSON at every JSON-body endpoint: 2xx/4xx only, memory bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import socket
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_agent import Agent
from test_front_door_fuzz import Served, http_exchange
from test_http_front import Conn, normalized, request, with_server
from test_server_cluster import until

from pykvs import http as pykvs_http
from pykvs.cli.agent_cmd import _arguments, _security_config
from pykvs.http import front as front_module
from pykvs.http.errors import redact
from pykvs.netaddr import split_address
from pykvs.server.limits import Limits
from pykvs.server.server import Server

Fronts = tuple[pykvs_http.HTTPServer, pykvs_http.HTTPServer]


def written(server: Server) -> tuple[bytes, int]:
    """What clients have written: every KV entry (packed) and the number of sessions. (Not
    the Raft index: the leader's own entries, the barrier after winning, come when they do.)"""
    state = server.state.snapshot()
    return state.kv_list_packed(b"")[1], len(state.session_list()[1])


async def exchange(api: pykvs_http.HTTPServer, raw: bytes, timeout: float = 5.0) -> bytes:
    """``raw`` sent on a new connection; everything the server sends until it closes or the
    reply is whole (Content-Length framed), within ``timeout`` seconds."""
    conn = await Conn.open(api.address)
    try:
        await conn.send(raw)
        return await asyncio.wait_for(conn.reply(), timeout)
    finally:
        await conn.close()


async def on_both(fast: pykvs_http.HTTPServer, plain: pykvs_http.HTTPServer,
                  raw: bytes) -> bytes:
    """The normalized answer to ``raw``, the same from both fronts."""
    got_fast = normalized(await exchange(fast, raw))
    got_plain = normalized(await exchange(plain, raw))
    assert got_fast == got_plain, raw[:200]
    return got_fast


async def still_serving(api: pykvs_http.HTTPServer, key: str = "alive") -> None:
    reply = await exchange(api, request("PUT", f"/v1/kv/{key}", b"yes"))
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"true"), reply
    reply = await exchange(api, request("GET", f"/v1/kv/{key}?raw"))
    assert reply.endswith(b"\r\n\r\nyes"), reply


def status_and_body(reply: bytes) -> tuple[int, bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


# ------------------------------------------------------------------- 5. secrets in logs
def test_token_secrets_never_reach_the_logs(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    """A 500 logged the URL with ``?token=``; aiohttp's parse errors quote the header line."""
    caplog.set_level(logging.DEBUG)

    async def scenario(server: Server, fast: pykvs_http.HTTPServer,
                       plain: pykvs_http.HTTPServer) -> None:
        async def broken(args: dict[str, Any]) -> Any:
            raise RuntimeError("an endpoint's bug")

        server.calls["KVS.Get"] = broken  # the 500 path: an exception nobody expected
        for api in (fast, plain):
            reply = await exchange(api, request("GET", "/v1/kv/a?token=S3CRET-Q&stale"))
            assert reply.startswith(b"HTTP/1.1 500")
            for raw in (b"GET /v1/kv/a?token=S3CRET-L HTTP/1.1\nHost: x\n\n",
                        b"GET /v1/kv/a HTTP/1.1\r\nX-Consul-Token: S3CRET-H\n\r\n",
                        b"GET /v1/kv/a HTTP/1.1\r\nAuthorization: Bearer S3CRET-A\n\r\n",
                        b"GET /v1/kv/a HTTP/1.1\r\nAuthorization: Basic S3CRET-B x\x01\r\n\r\n"):
                assert (await exchange(api, raw)).startswith(b"HTTP/1.0 400")

    with_server(tmp_path, scenario)
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert "token=<hidden>" in logged  # the 500 was logged, without its secret
    assert "S3CRET" not in logged


def test_redact_hides_every_form_of_a_token() -> None:
    assert redact("/v1/kv/a?x=1&token=abc&y=2") == "/v1/kv/a?x=1&token=<hidden>&y=2"
    assert redact("b'X-Consul-Token: abc\\r\\n'") == "b'X-Consul-Token: <hidden>\\r\\n'"
    assert redact("{'x-consul-token': 'abc'}") == "{'x-consul-token': '<hidden>'}"
    assert redact("Authorization: Basic abc def\r\n") == "Authorization: <hidden>\r\n"
    assert redact("nothing secret here") == "nothing secret here"


# ------------------------------------------------------------------ 6. 400s, not 500s
DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECTS = b'{"a":' * 80_000 + b"1" + b"}" * 80_000  # within txn's 512 KiB

# (method, path, body, the start of the answer's text); each a 400
BAD_BODIES: list[tuple[str, bytes, bytes]] = [
    ("/v1/txn", DEEP, b"Failed to parse body: exceeded max depth"),
    ("/v1/txn", DEEP_OBJECTS, b"Failed to parse body: exceeded max depth"),
    ("/v1/txn", b"[" * 100_000, b"Failed to parse body: exceeded max depth"),
    ("/v1/session/create", DEEP, b"Request decode failed: exceeded max depth"),
    ("/v1/acl/policy", DEEP, b"Policy decoding failed: exceeded max depth"),
    ("/v1/acl/token", DEEP_OBJECTS, b"Token decoding failed: exceeded max depth"),
    ("/v1/txn", b'[{"KV":{"Verb":"set","Key":"k","Flags":Infinity}}]',
     b"Failed to parse body: invalid character 'I' looking for beginning of value"),
    ("/v1/txn", b'[{"KV":{"Verb":"set","Key":"k","Flags":-Infinity}}]',
     b"Failed to parse body: invalid character 'I' in numeric literal"),
    ("/v1/txn", b'[{"KV":{"Verb":"set","Key":"k","Flags":NaN}}]',
     b"Failed to parse body: invalid character 'N' looking for beginning of value"),
    ("/v1/txn", b'[{"KV":{"Verb":"set","Key":"k","Flags":1e999}}]',
     b"Failed to parse body: json: cannot unmarshal number 1e999 into a 64-bit field"),
    ("/v1/txn", b'[{"KV":{"Verb":"set","Key":"k","Flags":1e300}}]',
     b'Failed to parse body: operation 0: Flags: strconv.ParseUint: parsing "1000000000'),
    ("/v1/txn", b'[{"KV":{"Verb":"set","Key":"k","Flags":' + b"9" * 5000 + b"}}]",
     b"Failed to parse body: json: cannot unmarshal number 99999999999999999999999999999999."),
    ("/v1/txn", b"[", b"Failed to parse body: unexpected end of JSON input"),
    ("/v1/txn", b"[1,]", b"Failed to parse body: invalid character ']' looking for beginning "
                         b"of value"),
    ("/v1/txn", b"\xff\xfe[]", b"Failed to parse body: invalid character '\xef\xbf\xbd' looking"),
    ("/v1/session/create", b'{"LockDelay": 1e300}',
     b"Request decode failed: LockDelay must be a duration string or a number of nanoseconds "
     b"within 64 bits"),
    ("/v1/session/create", b'{"LockDelay": "' + b"9" * 5000 + b's"}',
     b'Request decode failed: time: invalid duration "999'),
    ("/v1/session/create", b'{"TTL": NaN}',
     b"Request decode failed: invalid character 'N' looking for beginning of value"),
    ("/v1/acl/policy", b'{"Name": Infinity}',
     b"Policy decoding failed: invalid character 'I' looking for beginning of value"),
]


@pytest.mark.parametrize("path,body,text", BAD_BODIES,
                         ids=[f"{p}:{b[:24]!r}" for p, b, _ in BAD_BODIES])
def test_hostile_json_bodies_are_400s_in_consuls_words(tmp_path: Path, path: str, body: bytes,
                                                       text: bytes) -> None:
    async def scenario(server: Server, fast: pykvs_http.HTTPServer,
                       plain: pykvs_http.HTTPServer) -> None:
        before = written(server)
        reply = await on_both(fast, plain, request("PUT", path, body))
        status, answer = status_and_body(reply)
        assert status == 400 and answer.startswith(text), answer[:300]
        assert written(server) == before  # nothing proposed
        await still_serving(fast)

    with_server(tmp_path, scenario)


# (target, the answer's text); each a 400, the same from both fronts
BAD_QUERIES: list[tuple[str, bytes]] = [
    ("/v1/kv/a?index=%C2%B2", b"Invalid index"),
    ("/v1/kv/a?index=" + "9" * 5000, b"Invalid index"),
    ("/v1/kv/a?index=1&wait=9999999999h", b"Invalid wait time"),
    ("/v1/kv/a?wait=9999999999h", b"Invalid wait time"),
    ("/v1/kv/a?wait=" + "9" * 5000 + "s", b"Invalid wait time"),
    ("/v1/kv/a?wait=%D9%A3s", b"Invalid wait time"),  # an Arabic-Indic 3: Go reads ASCII
    ("/v1/session/list?index=%C2%B2", b"Invalid index"),
    ("/v1/session/list?wait=9999999999h", b"Invalid wait time"),
    ("/v1/acl/policies?index=" + "1" * 21, b"Invalid index"),
]


@pytest.mark.parametrize("target,text", BAD_QUERIES, ids=[t[:40] for t, _ in BAD_QUERIES])
def test_hostile_query_parameters_are_400s_in_consuls_words(tmp_path: Path, target: str,
                                                            text: bytes) -> None:
    async def scenario(server: Server, fast: pykvs_http.HTTPServer,
                       plain: pykvs_http.HTTPServer) -> None:
        reply = await on_both(fast, plain, request("GET", target))
        assert status_and_body(reply) == (400, text), reply[:300]
        await still_serving(fast)

    with_server(tmp_path, scenario)


def test_a_5000_digit_cas_is_out_of_range_as_go_says(tmp_path: Path) -> None:
    async def scenario(server: Server, fast: pykvs_http.HTTPServer,
                       plain: pykvs_http.HTTPServer) -> None:
        before = written(server)
        for name in ("cas", "flags"):
            reply = await on_both(fast, plain,
                                  request("PUT", f"/v1/kv/k?{name}=" + "9" * 5000, b"v"))
            status, answer = status_and_body(reply)
            assert status == 400, reply[:200]
            assert answer.startswith(f'Invalid {name}: strconv.ParseUint: parsing "999'.encode())
            assert answer.endswith(b'": value out of range')
        assert written(server) == before
        await still_serving(fast)

    with_server(tmp_path, scenario)


# ------------------------------------------------------------------------------ 7. heads
BAD_HEADS = [
    b"GET /v1/kv/a HTTP/1.1\nHost: x\n\n",
    b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\nContent-Length: 1\r\n\r\nv",
    b"GET /v1/kv/a HTTP/1.1\r\nHost: x\n",  # not even whole: answered at once all the same
    b"GEE",  # what cannot become a fast head is aiohttp's at once, as the bare LF
    b"GET /v1/kv/a HTTP/1.1\r\nHost x\r\n",
    b"PUT /v1/kv/a HTTP/1.1\r\nContent-Length: 1\r\n\r\nv",  # no Host: was written
    b"PUT /v1/kv/a HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 1\r\n\r\nv",
]


@pytest.mark.parametrize("raw", BAD_HEADS, ids=range(len(BAD_HEADS)))
def test_bad_heads_are_answered_at_once_as_aiohttp_does(tmp_path: Path, raw: bytes) -> None:
    """The fast front waited for CRLFCRLF up to 8,190 bytes on a head that could never be
    served, and served PUTs without a Host (or with two) that aiohttp refuses; now it hands
    such a head to aiohttp at once, which answers 400 and closes."""

    async def scenario(server: Server, fast: pykvs_http.HTTPServer,
                       plain: pykvs_http.HTTPServer) -> None:
        before = written(server)
        reply = await on_both(fast, plain, raw)
        assert reply.startswith(b"HTTP/1.0 400 Bad Request"), reply
        assert written(server) == before
        await still_serving(fast)

    with_server(tmp_path, scenario)


BAD_ESCAPES = [("/v1/kv/bad%zzkey", '"%zz"'), ("/v1/kv/bad%", '"%"'),
               ("/v1/kv/bad%a", '"%a"'), ("/v1/kv/%g0/x", '"%g0"'), ("/v1/kv/ok%41%", '"%"')]


@pytest.mark.parametrize("method", ["PUT", "GET", "DELETE"])
def test_malformed_escapes_in_a_key_are_400s(tmp_path: Path, method: str) -> None:
    """Go's url.PathUnescape refuses them (``invalid URL escape "%zz"``); they were stored as
    literal keys."""

    async def scenario(server: Server, fast: pykvs_http.HTTPServer,
                       plain: pykvs_http.HTTPServer) -> None:
        before = written(server)
        for target, escape in BAD_ESCAPES:
            reply = await on_both(fast, plain, request(method, target, b"v" * (method == "PUT")))
            assert status_and_body(reply) == (400, f"invalid URL escape {escape}".encode())
        assert written(server) == before
        await still_serving(fast)

    with_server(tmp_path, scenario)


def test_one_url_names_one_key(tmp_path: Path) -> None:
    """``%ff`` is the byte 0xff, as Go reads it (Consul stores that key); ``%25ff`` is the
    three characters ``%ff``. They were one key."""

    async def scenario(server: Server, fast: pykvs_http.HTTPServer,
                       plain: pykvs_http.HTTPServer) -> None:
        for api, space in ((fast, "f"), (plain, "p")):
            for target, value in ((f"/v1/kv/{space}/bad%ffkey", b"byte"),
                                  (f"/v1/kv/{space}/bad%25ffkey", b"text"),
                                  (f"/v1/kv/{space}/caf%C3%A9", b"utf8"),
                                  (f"/v1/kv/{space}/a%2Fb", b"slash")):
                assert (await exchange(api, request("PUT", target, value))).endswith(b"true")
                reply = await exchange(api, request("GET", target + "?raw"))
                assert reply.endswith(b"\r\n\r\n" + value), (target, reply)
            state = server.state.snapshot()
            for key, value in ((b"bad\xffkey", b"byte"), (b"bad%ffkey", b"text"),
                               ("café".encode(), b"utf8"), (b"a/b", b"slash")):
                entry = state.kv_get(space.encode() + b"/" + key, None)[1]
                assert entry is not None and entry.value == value, key
        await still_serving(fast)

    with_server(tmp_path, scenario)


# ---------------------------------------------------------------------- 8. slow peers
SHORT = Limits(http_header_timeout=0.2, http_body_timeout=0.3)


async def closed_while_dripping(api: pykvs_http.HTTPServer, start: bytes, drip: bytes,
                                within: float = 5.0) -> tuple[float, bytes]:
    """Send ``start``, then one byte of ``drip`` (repeated) every 20 ms until the server closes
    the connection: how long that took, and what it sent meanwhile. Fails if it is still open
    after ``within`` s."""
    conn = await Conn.open(api.address)
    began = time.monotonic()
    received = b""
    try:
        await conn.send(start)
        reading = asyncio.ensure_future(conn.reader.read(65536))
        for i in range(int(within / 0.02)):
            done, _ = await asyncio.wait({reading}, timeout=0.02)
            if done:
                try:
                    data = reading.result()
                except ConnectionError:
                    data = b""
                if not data:  # closed
                    return time.monotonic() - began, received
                received += data
                reading = asyncio.ensure_future(conn.reader.read(65536))
            with contextlib.suppress(ConnectionError):  # closed: the read says so next
                await conn.send(drip[i % len(drip):i % len(drip) + 1])
        reading.cancel()
        raise AssertionError(f"still open after {within} s of dripping")
    finally:
        await conn.close()


SLOW_REQUESTS: list[tuple[str, bytes, bytes, int]] = [  # (what, start, drip, answers to start)
    ("a head, a byte at a time", b"PUT /v1/kv/slow HTTP/1.1\r\nHost: x\r\n", b"X-Drip: abc", 0),
    ("a request line, a byte at a time", b"G", b"ET /v1/kv/slowwwwwwwwwwwwwwwwwwwwwwwwwwww", 0),
    ("a body, a byte at a time",
     b"PUT /v1/kv/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", b"v", 0),
    ("an aiohttp head (another path)", b"PUT /v1/txn HTTP/1.1\r\nHost: x\r\n", b"X-Drip: a", 0),
    ("an aiohttp body",
     b"PUT /v1/txn HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n[", b" ", 0),
    ("a chunked body",
     b"PUT /v1/kv/slow HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n",
     b"v", 0),
    ("the second request's head, after a hand-off",
     request("GET", "/v1/status/leader") + b"GET /v1/kv/slow HTTP/1.1\r\n", b"X-Drip: a", 1),
    ("the second request's head, in the packet that ends a body aiohttp reads",
     request("PUT", "/v1/txn", b"[]") + b"GET /v1/kv/slow HTTP/1.1\r\n", b"X-Drip: a", 1),
    ("the second request's body, after a fast one",
     request("GET", "/v1/kv/x") + b"PUT /v1/kv/slow HTTP/1.1\r\nHost: x\r\n"
     b"Content-Length: 99\r\n\r\n", b"v", 1),
]


@pytest.mark.parametrize("start,drip,answered", [case[1:] for case in SLOW_REQUESTS],
                         ids=[case[0] for case in SLOW_REQUESTS])
def test_a_request_dripped_a_byte_at_a_time_is_cut_off(tmp_path: Path, start: bytes,
                                                       drip: bytes, answered: int) -> None:
    """One byte every 20 ms (a slowloris at 3,000 times the speed) no longer holds a request
    open: the head's deadline (0.2 s here) or the body's (0.3 s) closes the connection, on
    both fronts, with nothing written."""

    async def scenario(server: Server, fast: pykvs_http.HTTPServer,
                       plain: pykvs_http.HTTPServer) -> None:
        before = written(server)
        for api in (fast, plain):
            took, received = await closed_while_dripping(api, start, drip)
            assert took < 3.0, took
            assert received.count(b"HTTP/1.1 ") == answered, received  # the slow one: none
        assert server.state.snapshot().kv_get(b"slow", None)[1] is None
        assert written(server) == before
        await still_serving(fast)
        await still_serving(plain)
        front = fast.front
        assert front is not None
        await until(lambda: not front.connections and not front.watches, "connections gone")

    with_server(tmp_path, scenario, limits=SHORT)


def test_requests_in_time_and_idle_keep_alive_are_not_cut_off(tmp_path: Path) -> None:
    """The deadlines are per request: a request sent in parts within them is served, and a
    connection idle between requests is kept (its keep-alive, 75 s, is what closes it)."""

    async def scenario(server: Server, fast: pykvs_http.HTTPServer,
                       plain: pykvs_http.HTTPServer) -> None:
        for api in (fast, plain):
            conn = await Conn.open(api.address)
            try:
                for target in ("/v1/kv/parts", "/v1/txn"):  # fast, then aiohttp's
                    body = b"[]" if target == "/v1/txn" else b"value"
                    raw = request("PUT", target, body)
                    for part in (raw[:10], raw[10:-2], raw[-2:]):
                        await conn.send(part)
                        await asyncio.sleep(0.05)
                    assert status_and_body(await conn.reply())[0] == 200
                    await asyncio.sleep(0.5)  # idle: longer than either deadline
                await conn.send(request("GET", "/v1/kv/parts?raw"))
                assert (await conn.reply()).endswith(b"\r\n\r\nvalue")
            finally:
                await conn.close()

    with_server(tmp_path, scenario, limits=SHORT)


def test_a_connection_that_sends_nothing_is_closed_on_both_fronts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection that never sends a byte (each is counted against --http-max-conns) is
    closed after the keep-alive time (0.2 s here) on both fronts: the fast front's sweeper,
    aiohttp's own keep-alive clock (aiohttp 3.14 arms it when a connection is made), through the
    read-deadline watch that now stands before aiohttp's protocol."""
    monkeypatch.setattr(front_module, "KEEPALIVE_TIMEOUT", 0.2)
    monkeypatch.setattr(pykvs_http, "KEEPALIVE_TIMEOUT", 0.2)

    async def scenario(server: Server, fast: pykvs_http.HTTPServer,
                       plain: pykvs_http.HTTPServer) -> None:
        for api in (fast, plain):
            conn = await Conn.open(api.address)
            try:
                assert await conn.at_eof()  # within 10 s, or the test fails
            finally:
                await conn.close()
            await still_serving(api)

    with_server(tmp_path, scenario)


def test_the_deadlines_are_agent_flags() -> None:
    parser = argparse.ArgumentParser()
    _arguments(parser)
    ns = parser.parse_args([])
    assert (ns.http_header_timeout, ns.http_body_timeout) == (10.0, 60.0)
    ns = parser.parse_args(["--http-header-timeout", "2s", "--http-body-timeout", "1m30s"])
    limits = _security_config(ns)[1]
    assert (limits.http_header_timeout, limits.http_body_timeout) == (2.0, 90.0)
    with pytest.raises(ValueError, match="http_body_timeout must be a positive number"):
        Limits(http_body_timeout=0)


# ------------------------------------------------------------ random JSON, bounded memory
JSON_ENDPOINTS = ["/v1/txn", "/v1/session/create", "/v1/acl/policy", "/v1/acl/token"]
FIELDS = ["KV", "Verb", "Key", "Value", "Flags", "Index", "Session", "Name", "Node",
          "LockDelay", "Behavior", "TTL", "Checks", "NodeChecks", "Rules", "Description",
          "Policies", "ID", "AccessorID", "SecretID", "Datacenters", "Local"]
_SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
            | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
            | st.sampled_from(["set", "get", "cas", "lock", "delete-tree", "dg==", "10s",
                               "delete", "release", "serfHealth", 'key "x" { policy = "read" }']))
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), inner, max_size=5),
    max_leaves=25)


@st.composite
def hostile_json(draw: st.DrawFn) -> bytes:
    """A body for a JSON endpoint: random JSON (NaN and Infinity included), shaped like a
    transaction, nested thousands deep, with a number thousands of digits long, cut short,
    or not JSON at all."""
    value = draw(_JSON)
    text = json.dumps(value)  # NaN, Infinity and -Infinity as Python writes them
    kind = draw(st.integers(0, 5))
    if kind == 1:
        text = json.dumps([{"KV": value}]) if draw(st.booleans()) else json.dumps([value])
    elif kind == 2:
        depth = draw(st.integers(1, 5000))
        text = draw(st.sampled_from(["[", '{"KV":'])) * depth + text + (
            "]" * depth if text.startswith("[") or draw(st.booleans()) else "}" * depth)
    elif kind == 3:
        digits = draw(st.sampled_from(["9", "1", "-1", "1e", "0.", "-0.0e-"]))
        number = digits + "9" * draw(st.integers(0, 6000))
        name = draw(st.sampled_from(["Flags", "Index", "LockDelay", "Local", "Name"]))
        text = json.dumps([{"KV": {"Verb": "set", "Key": "k", name: 0}}]).replace(
            f'"{name}": 0', f'"{name}": {number}')
    elif kind == 4:
        text = text[:draw(st.integers(0, len(text)))]
    elif kind == 5:
        return draw(st.binary(max_size=64))
    return text.encode()


class Memory:
    """tracemalloc around one request: the peak above what was traced before it."""

    def __enter__(self) -> Memory:
        tracemalloc.reset_peak()
        self.before = tracemalloc.get_traced_memory()[0]
        self.peak = 0
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak = tracemalloc.get_traced_memory()[1] - self.before


AMPLIFICATION = 8  # decoded memory per byte of body, at most (and a fixed allowance below)
ALLOWANCE = 1 << 20  # the JSON allowance (1,024 containers, 4,096 values) and the request


@pytest.fixture(scope="module")
def json_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    target = Served(tmp_path_factory.mktemp("hostile-json"))
    tracemalloc.start()
    try:
        yield target
    finally:
        tracemalloc.stop()
        target.close()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(path=st.sampled_from(JSON_ENDPOINTS), body=hostile_json())
def test_random_json_gets_2xx_or_4xx_in_bounded_memory(json_served: Served, path: str,
                                                       body: bytes) -> None:
    assert json_served.api is not None
    with Memory() as memory:
        status, _, text = http_exchange(json_served.api.address,
                                        request("PUT", path, body, "Connection: close\r\n"))
    assert 200 <= status < 500, (status, text[:300])
    assert b"internal error" not in text and b"Traceback" not in text
    assert memory.peak <= AMPLIFICATION * len(body) + ALLOWANCE, (memory.peak, len(body))


# Bodies made to decode into as much as they can: small values, many containers, long keys.
N = 100_000
AMPLIFIERS: list[tuple[str, bytes]] = [
    ("empty arrays", b"[" + b",".join([b"[]"] * N) + b"]"),
    ("empty objects", b"[" + b",".join([b"{}"] * N) + b"]"),
    ("small ints", b"[" + b",".join([b"0"] * N) + b"]"),
    ("two-letter strings", b"[" + b",".join([b'"ab"'] * N) + b"]"),
    ("distinct keys", b"{" + b",".join(b'"%d":0' % i for i in range(N)) + b"}"),
    ("allowed strings", b"[" + b",".join([b'"abcdefghijklmnopqrstuvwxyz01"'] * 30_000) + b"]"),
    ("allowed keys", b"{" + b",".join(b'"%027d":0' % i for i in range(30_000)) + b"}"),
    ("the fixed allowance", b"[" + b",".join([b"{}"] * 1023 + [b'"%d"' % i for i in range(3000)])
     + b"]"),
]


@pytest.mark.parametrize("path", ["/v1/acl/policy", "/v1/session/create"])
def test_decoded_memory_is_a_small_multiple_of_the_body(tmp_path: Path, path: str) -> None:
    """Python's objects cost 22 to 25 times the bytes of ``[[],[],...]``: bodies of small
    values are refused before decoding (too many values for their size), and what may be
    decoded stays under AMPLIFICATION times the body (measured: at most 6.1 for long keys)."""

    async def scenario(server: Server, fast: pykvs_http.HTTPServer,
                       plain: pykvs_http.HTTPServer) -> None:
        tracemalloc.start()
        try:
            for name, body in AMPLIFIERS:
                with Memory() as memory:
                    reply = await exchange(fast, request("PUT", path, body), timeout=30)
                assert status_and_body(reply)[0] < 500, (name, reply[:300])
                assert memory.peak <= AMPLIFICATION * len(body) + ALLOWANCE, (name, memory.peak)
        finally:
            tracemalloc.stop()

    with_server(tmp_path, scenario)


def test_an_agent_started_with_the_flags_cuts_off_a_slow_head(tmp_path: Path) -> None:
    """The flags reach the listener: ``pykvs agent --http-header-timeout 300ms
    --http-body-timeout 300ms``, a partial head and a partial body, each closed in time."""
    agent = Agent(tmp_path, "a1", "--http-header-timeout", "300ms", "--http-body-timeout",
                  "300ms")
    try:
        for partial in (b"PUT /v1/kv/slow HTTP/1.1\r\nHost: x\r\n",
                        b"PUT /v1/kv/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nab"):
            with socket.create_connection(split_address(agent.http), timeout=10) as sock:
                sock.sendall(partial)
                began = time.monotonic()
                assert sock.recv(1024) == b""  # closed, no answer (the 10 s timeout: a failure)
                assert time.monotonic() - began < 5
    finally:
        agent.stop()
