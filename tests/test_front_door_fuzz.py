"""Property-based fuzzing (hypothesis) of the front door: the HTTP API and the RPC framing.

One server with its HTTP API runs on a loop thread for the module; each example sends bytes
over a fresh socket. Properties, for every example:

- the answer is a proper one: an HTTP status line (an error has a text body, and is never an
  ``internal error``), or RPC frames ``[id|nil, error, result]`` whose errors are non-empty text;
  a broken byte stream may also just be closed;
- what the server holds (a digest of every key, value, index and session) is unchanged by
  every answer that is not a success;
- the server stays up (``Status.Ping`` and ``/v1/status/leader`` answer after each example), and
  its connection tables and blocking-query counters drain back to empty (bounded memory).

Methods that change the Raft membership (Internal.Join, Operator.*) are left out of the random
method names: a well-formed call to them is allowed to change what the server holds.
``PYKVS_FUZZ_EXAMPLES`` sets the examples per property (default 60); the ``slow`` run uses 2000.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pykvs import http
from pykvs.http import limits as http_limits
from pykvs.netaddr import split_address
from pykvs.server.client import AsyncKV, LocalCaller
from pykvs.server.limits import Limits
from pykvs.server.server import Server, ServerConfig

EXAMPLES = int(os.environ.get("PYKVS_FUZZ_EXAMPLES", "60"))
SOCKET_TIMEOUT = 20.0
RPC_METHODS = ["KVS.Apply", "KVS.Get", "KVS.List", "KVS.ListKeys", "Txn.Apply", "Txn.Read",
               "Session.Apply", "Session.Get", "Session.List", "Session.NodeSessions",
               "Session.Renew", "Status.Leader", "Status.Peers", "Status.Ping",
               "Snapshot.Save", "Snapshot.Read"]


class Served:
    """A server and its HTTP API on a loop thread of their own."""

    def __init__(self, root: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        # Small limits, so the fuzz meets them, and short waits, so blocking reads end.
        config = ServerConfig(data_dir=str(root / "s1"), port=0, tick_interval=0.02,
                              max_query_time=0.5, default_query_time=0.5,
                              max_value_size=4096,
                              limits=Limits(http_max_body=64 << 10, rpc_max_frame=64 << 10))
        self.server = Server(config)
        self.api: http.HTTPServer | None = None
        self.run(self._start())

    async def _start(self) -> None:
        await self.server.start()
        await self.server.wait_leader(10)
        self.api = await http.start(self.server, "127.0.0.1", 0)
        kv = AsyncKV(LocalCaller(self.server, owned=False))
        for i in range(5):
            await kv.put(f"held/{i}", f"value {i}".encode(), flags=i)
        await kv.session_create(name="held", ttl=3600)

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _digest(self) -> str:
        kv = AsyncKV(LocalCaller(self.server, owned=False))
        _, entries = await kv.list("", consistency="stale")
        _, sessions = await kv.session_list(consistency="stale")
        digest = hashlib.sha256()
        for e in entries:
            digest.update(repr((e.key, e.value, e.flags, e.create_index, e.modify_index,
                                e.lock_index, e.session)).encode())
        for s in sessions:
            digest.update(repr((s.id, s.name, s.behavior, s.ttl, s.create_index)).encode())
        return digest.hexdigest()

    def digest(self) -> str:
        return str(self.run(self._digest()))

    def assert_up_and_drained(self) -> None:
        assert self.api is not None
        status, _, _ = http_exchange(self.api.address, b"GET /v1/status/leader HTTP/1.1\r\n"
                                     b"Host: x\r\nConnection: close\r\n\r\n")
        assert status == 200
        answers = rpc_exchange(self.server.address, frame([1, "Status.Ping", {}]))
        assert answers == [[1, None, {}]] or answers[0][:2] == [1, None], answers

        async def drained() -> bool:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            app = self.api.runner.app  # type: ignore[union-attr]
            while loop.time() < deadline:
                if (not self.server.rpc._connections and not self.server.blocking_rpc.counts
                        and not app[http_limits.BLOCKING_KEY].counts
                        and len(app[http_limits.CONNECTIONS_KEY]) == 0):
                    return True
                await asyncio.sleep(0.01)
            return False

        assert self.run(drained()), "connections or blocking queries left behind"

    def close(self) -> None:
        async def stop() -> None:
            if self.api is not None:
                await self.api.close()
            await self.server.close()

        try:
            self.run(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    target = Served(tmp_path_factory.mktemp("fuzz"))
    yield target
    target.close()


def _recv_all(sock: socket.socket) -> bytes:
    parts = []
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionResetError:
            break
        if not chunk:
            break
        parts.append(chunk)
    return b"".join(parts)


def http_exchange(address: str, request: bytes) -> tuple[int, bytes, bytes]:
    """(status, head, body) of the answer to ``request`` sent on a new connection."""
    with socket.create_connection(split_address(address), timeout=SOCKET_TIMEOUT) as sock:
        # No half-close: aiohttp takes it for a lost connection. Connection: close ends it.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        answer = _recv_all(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head[:9] in (b"HTTP/1.1 ", b"HTTP/1.0 "), answer[:200]  # 1.0: aiohttp's 400s
    return int(head[9:12]), head, body


def frame(obj: Any) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


MARKER = 2**40 + 1  # the id of the ping that ends an exchange


def rpc_exchange(address: str, data: bytes, *, cut: bool = False) -> list[Any]:
    """Every frame the server answers to ``data``. The exchange ends with a ping of id
    MARKER (its answer is left out) or, when ``cut`` (the stream ends inside a frame), with
    our side stopping writing; or when the server closes. (The server cancels what a client
    has in flight once it stops writing, so a whole stream must not end with a half-close.)"""
    with socket.create_connection(split_address(address), timeout=SOCKET_TIMEOUT) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if cut:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
            else:
                sock.sendall(data + frame([MARKER, "Status.Ping", {}]))
        frames: list[Any] = []
        buffer = b""
        while True:
            while len(buffer) >= 4 and len(buffer) - 4 >= int.from_bytes(buffer[:4], "big"):
                length = int.from_bytes(buffer[:4], "big")
                assert length > 0, "an empty answer frame"
                frames.append(msgpack.unpackb(buffer[4:4 + length], raw=False,
                                              strict_map_key=False))
                buffer = buffer[4 + length:]
            if frames and frames[-1][0] == MARKER:
                assert frames[-1][1] is None, frames[-1]
                return frames[:-1]
            try:
                chunk = sock.recv(1 << 16)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                assert buffer == b"", "a truncated answer frame"
                return frames
            buffer += chunk


# -------------------------------------------------------------------------------- HTTP
PATHS = ["/v1/kv/", "/v1/kv/held/1", "/v1/kv/fuzz", "/v1/txn", "/v1/session/create",
         "/v1/session/destroy/", "/v1/session/renew/", "/v1/session/info/",
         "/v1/session/node/", "/v1/session/list", "/v1/status/leader", "/v1/status/peers",
         "/v1/operator/raft/configuration", "/v1/snapshot", "/v1/agent/self", "/", "/v1/",
         "/ui/", "/v1/acl/token", "/v1/acl/policy"]
PARAMS = ["index", "wait", "recurse", "keys", "separator", "cas", "flags", "acquire",
          "release", "dc", "stale", "consistent", "raw", "token"]
URL_SAFE = st.text(st.sampled_from("abcXYZ019-_.~%/?&=+ "), max_size=20)
HEADER_VALUE = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@st.composite
def http_requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET", "PUT", "DELETE", "POST", "HEAD", "OPTIONS", "PATCH"])
                  | st.text(st.sampled_from("ABCXYZ"), min_size=1, max_size=8))
    path = draw(st.sampled_from(PATHS)) + draw(URL_SAFE)
    params = draw(st.lists(st.tuples(st.sampled_from(PARAMS) | URL_SAFE,
                                     st.none() | URL_SAFE), max_size=5))
    query = "&".join(k if v is None else f"{k}={v}" for k, v in params)
    target = path + ("?" + query if query else "")
    headers = draw(st.lists(st.tuples(
        st.sampled_from(["Content-Type", "X-Consul-Token", "Authorization", "Accept",
                         "Transfer-Encoding", "Expect", "X-Other"]), HEADER_VALUE),
        max_size=3))
    body = draw(st.binary(max_size=300) | st.sampled_from([
        b"[]", b"{}", b"null", b'[{"KV": {"Verb": "get", "Key": "held/1"}}]',
        b'[{"KV": {"Verb": "set", "Key": "x", "Value": "!!"}}]', b'{"TTL": "1x"}',
        b"[" * 5000, b'{"a":' * 5000]))
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers
              if name not in ("Transfer-Encoding", "Content-Length")]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=http_requests())
def test_http_fuzz_every_answer_is_proper_and_errors_change_nothing(
        served: Served, request: bytes) -> None:
    assert served.api is not None
    before = served.digest()
    status, _, body = http_exchange(served.api.address, request)
    assert 100 <= status <= 599
    assert not body.startswith(b"internal error"), (request[:300], body[:300])
    if status >= 400:
        assert served.digest() == before, (request[:300], status, body[:300])
        # Consul answers a missing key with an empty 404; every other error has a text.
        missing_key = status == 404 and b" /v1/kv/" in request.split(b"\r\n", 1)[0]
        if not request.startswith(b"HEAD ") and not missing_key:
            assert body.strip(), f"error {status} without a message for {request[:200]!r}"


def test_http_garbage_gets_400_and_the_server_stays_up(served: Served) -> None:
    assert served.api is not None
    before = served.digest()
    for garbage in [b"\x00\xff" * 50 + b"\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
                    b"PUT /v1/kv/x HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                    b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n"]:
        status, _, body = http_exchange(served.api.address, garbage)
        assert 400 <= status < 500 and body, (garbage[:60], status)
    assert served.digest() == before
    served.assert_up_and_drained()


# --------------------------------------------------------------------------------- RPC
msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10) | st.integers(0, 10), children, max_size=4),
    max_leaves=20)
FIELDS = ["Datacenter", "Op", "DirEnt", "Key", "Value", "Flags", "Session", "Ops",
          "MinQueryIndex", "MaxQueryTime", "AllowStale", "RequireConsistent", "Node", "ID",
          "SessionID", "Offset", "Prefix", "Seperator", "KV", "Verb", "Index"]


@st.composite
def rpc_streams(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A byte stream for the server port: requests of random shape, broken frames, noise."""
    def arguments() -> Any:
        return draw(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8),
                                    msgpack_values, max_size=5) | msgpack_values)

    parts = []
    cut = False
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["request", "object", "truncated", "oversized", "noise",
                                     "invalid", "deep"]))
        if kind == "request":
            method = draw(st.sampled_from(RPC_METHODS) | st.text(max_size=20))
            req_id = draw(st.integers(0, 2**32) | msgpack_values)
            parts.append(frame([req_id, method, arguments()]))
        elif kind == "object":
            parts.append(frame(draw(msgpack_values)))
        elif kind == "truncated":
            whole = frame([7, draw(st.sampled_from(RPC_METHODS)), arguments()])
            parts.append(whole[:draw(st.integers(0, len(whole) - 1))])
            cut = True
            break  # nothing after a truncated frame can arrive
        elif kind == "oversized":
            parts.append(draw(st.integers(64 << 10 + 1, 2**32 - 1)).to_bytes(4, "big")
                         + draw(st.binary(max_size=64)))
        elif kind == "noise":
            parts.append(draw(st.binary(min_size=1, max_size=64)))
        elif kind == "invalid":
            body = draw(st.sampled_from([b"\xc1", b"\x92\x01", b"\x01\x02", b"\xd9\x10ab"]))
            parts.append(len(body).to_bytes(4, "big") + body)
        else:
            depth = draw(st.integers(100, 60000))
            body = b"\x91" * depth + b"\xc0"
            parts.append(len(body).to_bytes(4, "big") + body)
    return b"".join(parts), cut


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(stream=rpc_streams())
def test_rpc_fuzz_every_answer_is_proper_and_errors_change_nothing(
        served: Served, stream: tuple[bytes, bool]) -> None:
    before = served.digest()
    answers = rpc_exchange(served.server.address, stream[0], cut=stream[1])
    succeeded = False
    for answer in answers:
        assert isinstance(answer, list) and len(answer) == 3, answer
        req_id, error, _ = answer
        assert req_id is None or isinstance(req_id, int)
        if error is None:
            succeeded = succeeded or req_id is not None
        else:
            assert isinstance(error, str) and error.strip(), answer
            assert "internal error" not in error, (stream[:300], error)
        if req_id is None:
            assert error, "a connection error carries its message"
    if not succeeded:
        assert served.digest() == before, (stream[:300], answers)


def test_rpc_front_door_stays_up_and_drains(served: Served) -> None:
    before = served.digest()
    # Deep nesting, a 4 GiB frame header and a frame cut short, each on its own connection.
    for stream in [frame([1, "KVS.Get", {"Key": "held/1"}])[:-1],
                   (2**32 - 1).to_bytes(4, "big") + b"x",
                   len(b"\x91" * 100000 + b"\xc0").to_bytes(4, "big")]:
        answers = rpc_exchange(served.server.address, stream, cut=True)
        assert all(a[0] is None and a[1] for a in answers), answers
    assert served.digest() == before
    served.assert_up_and_drained()


@pytest.mark.slow
def test_front_door_fuzz_soak(served: Served) -> None:
    """The two properties with many more examples (``-m slow``)."""
    soak = settings(max_examples=2000, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
    soak(given(request=http_requests())(
        test_http_fuzz_every_answer_is_proper_and_errors_change_nothing.hypothesis.inner_test)
    )(served)
    soak(given(stream=rpc_streams())(
        test_rpc_fuzz_every_answer_is_proper_and_errors_change_nothing.hypothesis.inner_test)
    )(served)
    served.assert_up_and_drained()
