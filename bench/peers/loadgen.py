"""Closed-loop load generator for the peer comparison, run as its own process.

    python bench/peers/loadgen.py TARGET OP --addr HOST:PORT [--in-flight N] [--duration S]

TARGET is how it talks to the store:

- ``pykvs-http``: Consul's KV API (``PUT /v1/kv/K``, ``GET /v1/kv/K``, ``GET /v1/kv/P?recurse``);
- ``etcd-http``: etcd's gRPC-gateway (``POST /v3/kv/put``, ``/v3/kv/range``, base64 keys and
  values in JSON);
- ``pykvs-rpc``: pykvs' msgpack-RPC client (``pykvs.connect_async``), one connection, requests
  pipelined;
- ``etcd-grpc``: etcd's gRPC API with ``grpcio`` (one HTTP/2 channel, calls multiplexed); the
  protobuf messages are encoded by hand below, because the ``etcd3`` package does not import
  with current protobuf releases.

Both HTTP targets share one client: raw HTTP/1.1 over keep-alive connections, one connection
per request in flight (etcd's Go server, like aiohttp, answers a connection's requests one at a
time, so pipelining on one connection would serialize them).

OP is ``put`` (16-byte keys ``write/NNNNNNNNNN`` cycling over 100,000, 100-byte values), ``get``
(random keys of the 1,000 ``point/...`` keys), ``range`` (the 1,000 keys under ``range/``),
``fill`` (writes those 2,000 keys; not timed), or ``watch`` (blocking queries, pykvs-http only:
``--watchers`` waiting on distinct keys, one writer putting random ones of them).

It prints one JSON object: operations per second in the measured window (after ``--warmup``),
latency percentiles and a log-binned histogram, and the CPU the generator itself used in that
window (``resource.getrusage``) next to the servers' (``/proc/PID/stat`` of ``--server-pid``),
so a reader can see the generator did not starve the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

KEY_SIZE = 16
VALUE_SIZE = 100
WRITE_KEYS = 100_000
POINT_KEYS = 1_000
RANGE_KEYS = 1_000
RANGE_PREFIX = b"range/"
VALUE = bytes(range(VALUE_SIZE))  # 100 distinct bytes
HIST_EDGES_US = [10 ** (k / 20) for k in range(0, 141)]  # 1 us .. 10 s, 20 bins a decade


def key(space: bytes, i: int) -> bytes:
    """A 16-byte key: ``space`` (6 bytes, ending in '/') and ten digits."""
    return b"%s%010d" % (space, i)


assert len(key(b"write/", 0)) == KEY_SIZE


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used (any process, from /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------------------ raw HTTP/1.1
_RECEIVE = memoryview(bytearray(64 * 1024))  # one receive buffer for every connection


class HTTPConnection(asyncio.BufferedProtocol):
    """One keep-alive HTTP/1.1 connection with one request outstanding at a time.

    A BufferedProtocol reading into one shared buffer: a plain Protocol gets a fresh
    ``recv(256 KiB)`` per read, which costs the generator more CPU than the read itself."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None

    def get_buffer(self, sizehint: int) -> memoryview:
        return _RECEIVE

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(_RECEIVE[:nbytes])

    @classmethod
    async def open(cls, address: str) -> HTTPConnection:
        host, port = address.rsplit(":", 1)
        _, protocol = await asyncio.get_running_loop().create_connection(cls, host, int(port))
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes | memoryview) -> None:
        self.buffer += data
        if self.waiter is not None and not self.waiter.done():
            parsed = parse_response(self.buffer)
            if parsed is not None:
                status, body, used = parsed
                del self.buffer[:used]
                self.waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection closed: {exc!r}"))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def parse_response(buf: bytearray) -> tuple[int, bytes, int] | None:
    """(status, body, bytes used) of the first complete response in ``buf``, else None.
    Bodies come with Content-Length or chunked (Go chunks replies over 2 KiB)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).lower()
    status = int(head[9:12])
    start = end + 4
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        line_end = head.find(b"\r\n", at + 2)
        length = int(head[at + 17: line_end if line_end >= 0 else len(head)])
        if len(buf) < start + length:
            return None
        return status, bytes(buf[start:start + length]), start + length
    if b"\r\ntransfer-encoding: chunked" not in head:
        return status, b"", start  # no body (204, say)
    body = bytearray()
    pos = start
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
        if size == 0:
            if len(buf) < line_end + 4:
                return None
            return status, bytes(body), line_end + 4  # no trailers
        if len(buf) < line_end + 2 + size + 2:
            return None
        body += buf[line_end + 2: line_end + 2 + size]
        pos = line_end + 2 + size + 2


def http_request(method: str, path: str, host: str, body: bytes = b"",
                 content_type: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    if body or method in ("PUT", "POST"):
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def expect(ok: bool, what: str, reply: Any) -> None:
    if not ok:
        raise RuntimeError(f"{what}: unexpected reply {reply!r:.300}")


# ------------------------------------------------------------------------------ protobuf
def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def pb_bytes(field: int, data: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(data)) + data


def pb_count(message: bytes, field: int) -> int:
    """How many times ``field`` occurs at the top level of a protobuf message."""
    count = pos = 0
    while pos < len(message):
        tag, pos = read_varint(message, pos)
        if tag >> 3 == field:
            count += 1
        wire = tag & 7
        if wire == 0:
            _, pos = read_varint(message, pos)
        elif wire == 2:
            length, pos = read_varint(message, pos)
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"protobuf wire type {wire} not handled")
    return count


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def prefix_end(prefix: bytes) -> bytes:
    """etcd's range_end for "every key starting with prefix"."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


# ------------------------------------------------------------------------------ targets
Op = Callable[[Any, int], Awaitable[None]]


class Target:
    """How to reach one store: ``session()`` gives what one worker uses (its own HTTP
    connection, or the shared pipelined client); ``put``/``get``/``range`` do one request."""

    shared = False

    def __init__(self, address: str) -> None:
        self.address = address
        self.host = address

    async def session(self) -> Any:
        return await HTTPConnection.open(self.address)

    async def close_session(self, session: Any) -> None:
        session.close()

    async def put(self, session: Any, i: int) -> None:
        raise NotImplementedError

    async def get(self, session: Any, i: int) -> None:
        raise NotImplementedError

    async def range(self, session: Any, i: int) -> None:
        raise NotImplementedError

    async def put_key(self, session: Any, k: bytes) -> None:
        raise NotImplementedError


class PykvsHTTP(Target):
    async def put_key(self, session: HTTPConnection, k: bytes) -> None:
        status, body = await session.request(http_request(
            "PUT", f"/v1/kv/{k.decode()}", self.host, VALUE))
        expect(status == 200 and body.strip() == b"true", "pykvs PUT", (status, body))

    async def put(self, session: HTTPConnection, i: int) -> None:
        await self.put_key(session, key(b"write/", i % WRITE_KEYS))

    async def get(self, session: HTTPConnection, i: int) -> None:
        k = key(b"point/", random.randrange(POINT_KEYS)).decode()
        status, body = await session.request(http_request("GET", f"/v1/kv/{k}", self.host))
        expect(status == 200 and b'"Value"' in body, "pykvs GET", (status, body))

    async def range(self, session: HTTPConnection, i: int) -> None:
        status, body = await session.request(http_request(
            "GET", f"/v1/kv/{RANGE_PREFIX.decode()}?recurse", self.host))
        expect(status == 200 and body.count(b'"Key"') == RANGE_KEYS, "pykvs list",
               (status, body[:200]))


class EtcdHTTP(Target):
    def _post(self, path: str, doc: dict[str, str]) -> bytes:
        return http_request("POST", path, self.host, json.dumps(doc).encode(),
                            "application/json")

    async def put_key(self, session: HTTPConnection, k: bytes) -> None:
        status, body = await session.request(self._post("/v3/kv/put", {
            "key": base64.b64encode(k).decode(), "value": base64.b64encode(VALUE).decode()}))
        expect(status == 200 and b'"revision"' in body, "etcd put", (status, body))

    async def put(self, session: HTTPConnection, i: int) -> None:
        await self.put_key(session, key(b"write/", i % WRITE_KEYS))

    async def get(self, session: HTTPConnection, i: int) -> None:
        k = key(b"point/", random.randrange(POINT_KEYS))
        status, body = await session.request(self._post("/v3/kv/range", {
            "key": base64.b64encode(k).decode()}))
        expect(status == 200 and b'"kvs"' in body, "etcd range (point)", (status, body))

    async def range(self, session: HTTPConnection, i: int) -> None:
        status, body = await session.request(self._post("/v3/kv/range", {
            "key": base64.b64encode(RANGE_PREFIX).decode(),
            "range_end": base64.b64encode(prefix_end(RANGE_PREFIX)).decode()}))
        expect(status == 200 and body.count(b'"mod_revision"') == RANGE_KEYS,
               "etcd range (prefix)", (status, body[:200]))


class PykvsRPC(Target):
    shared = True

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self.client: Any = None

    async def session(self) -> Any:
        if self.client is None:
            import pykvs

            self.client = await pykvs.connect_async(self.address, timeout=30)
        return self.client

    async def close_session(self, session: Any) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            await client.close()

    async def put(self, session: Any, i: int) -> None:
        ok = await session.put(key(b"write/", i % WRITE_KEYS), VALUE)
        expect(ok is True, "pykvs KVS.Apply", ok)

    async def put_key(self, session: Any, k: bytes) -> None:
        expect(await session.put(k, VALUE) is True, "pykvs KVS.Apply", k)

    async def get(self, session: Any, i: int) -> None:
        _, entry = await session.get(key(b"point/", random.randrange(POINT_KEYS)))
        expect(entry is not None, "pykvs KVS.Get", entry)

    async def range(self, session: Any, i: int) -> None:
        _, entries = await session.list(RANGE_PREFIX)
        expect(len(entries) == RANGE_KEYS, "pykvs KVS.List", len(entries))


class EtcdGRPC(Target):
    shared = True

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self.channel: Any = None
        self.methods: dict[str, Any] = {}

    async def session(self) -> Any:
        if self.channel is None:
            import grpc  # type: ignore[import-untyped]

            self.channel = grpc.aio.insecure_channel(self.address)
            # No serializers: requests and replies are the bytes encoded/decoded here.
            self.methods = {name: self.channel.unary_unary(f"/etcdserverpb.KV/{name}")
                            for name in ("Put", "Range", "Txn")}
        return self.methods

    async def close_session(self, session: Any) -> None:
        if self.channel is not None:
            channel, self.channel = self.channel, None
            await channel.close()

    async def put_key(self, session: Any, k: bytes) -> None:
        reply = await session["Put"](pb_bytes(1, k) + pb_bytes(2, VALUE), timeout=30)
        expect(pb_count(reply, 1) == 1, "etcd Put", reply)  # the header

    async def put(self, session: Any, i: int) -> None:
        await self.put_key(session, key(b"write/", i % WRITE_KEYS))

    async def get(self, session: Any, i: int) -> None:
        k = key(b"point/", random.randrange(POINT_KEYS))
        reply = await session["Range"](pb_bytes(1, k), timeout=30)
        expect(pb_count(reply, 2) == 1, "etcd Range (point)", reply)

    async def range(self, session: Any, i: int) -> None:
        reply = await session["Range"](pb_bytes(1, RANGE_PREFIX)
                                       + pb_bytes(2, prefix_end(RANGE_PREFIX)), timeout=30)
        expect(pb_count(reply, 2) == RANGE_KEYS, "etcd Range (prefix)", len(reply))


TARGETS: dict[str, type[Target]] = {"pykvs-http": PykvsHTTP, "etcd-http": EtcdHTTP,
                                    "pykvs-rpc": PykvsRPC, "etcd-grpc": EtcdGRPC}


# ------------------------------------------------------------------------------ measuring
class Window:
    """The measured window: latencies of requests that started and ended inside it, CPU of the
    generator and of the servers at its two edges."""

    def __init__(self, warmup: float, duration: float, server_pids: list[int]) -> None:
        now = time.perf_counter()
        self.begin = now + warmup
        self.end = self.begin + duration
        self.server_pids = server_pids
        self.latencies: list[float] = []
        self.completed = 0
        self.errors: list[str] = []
        self.cpu: dict[str, float] = {}

    def record(self, started: float, finished: float) -> None:
        if self.begin <= finished <= self.end:
            self.completed += 1
            if started >= self.begin:
                self.latencies.append(finished - started)

    def _sample(self) -> tuple[float, float, float]:
        servers = sum(cpu_seconds(pid) for pid in self.server_pids)
        return time.perf_counter(), own_cpu_seconds(), servers

    async def sample_edges(self) -> None:
        await asyncio.sleep(max(0.0, self.begin - time.perf_counter()))
        wall0, own0, servers0 = self._sample()
        await asyncio.sleep(max(0.0, self.end - time.perf_counter()))
        wall1, own1, servers1 = self._sample()
        wall = wall1 - wall0
        self.cpu = {"wall_s": wall, "gen_cpu_s": own1 - own0,
                    "gen_cores": (own1 - own0) / wall,
                    "gen_share": (own1 - own0) / wall / (os.cpu_count() or 1),
                    "server_cpu_s": servers1 - servers0,
                    "server_cores": (servers1 - servers0) / wall}

    def report(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        duration = self.end - self.begin

        def pct(q: float) -> float:
            return lat[min(len(lat) - 1, int(q * len(lat)))] * 1e6 if lat else float("nan")

        counts = [0] * (len(HIST_EDGES_US) + 1)
        edge_index = 0
        for value in lat:  # sorted: walk the edges once
            while edge_index < len(HIST_EDGES_US) and value * 1e6 >= HIST_EDGES_US[edge_index]:
                edge_index += 1
            counts[edge_index] += 1
        return {"ops": self.completed, "ops_per_s": self.completed / duration,
                "duration_s": duration, "errors": len(self.errors),
                "first_errors": self.errors[:3],
                "lat_us": {"p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99),
                           "p999": pct(0.999), "max": lat[-1] * 1e6 if lat else float("nan"),
                           "mean": sum(lat) / len(lat) * 1e6 if lat else float("nan")},
                "hist": {"edges_us": HIST_EDGES_US, "counts": counts}, **self.cpu}


async def closed_loop(target: Target, op: str, in_flight: int, window: Window) -> None:
    """``in_flight`` workers, each issuing its next request when the previous one returns."""
    do: Op = getattr(target, op)
    counter = iter(range(sys.maxsize))

    async def worker(session: Any) -> None:
        while True:
            started = time.perf_counter()
            if started >= window.end:
                return
            try:
                await do(session, next(counter))
            except Exception as exc:
                window.errors.append(repr(exc))
                if len(window.errors) > 100:
                    raise
            window.record(started, time.perf_counter())

    sessions = [await target.session() for _ in range(1 if target.shared else in_flight)]
    try:
        await asyncio.gather(window.sample_edges(),
                             *(worker(sessions[i % len(sessions)]) for i in range(in_flight)))
    finally:
        for session in sessions:
            await target.close_session(session)


async def fill(target: Target, keys: list[bytes], in_flight: int = 32) -> int:
    """Write ``keys`` (100-byte values) with ``in_flight`` writers; returns how many."""
    todo = iter(keys)

    async def worker(session: Any) -> None:
        for k in todo:
            await target.put_key(session, k)

    sessions = [await target.session() for _ in range(1 if target.shared else in_flight)]
    try:
        await asyncio.gather(*(worker(sessions[i % len(sessions)]) for i in range(in_flight)))
    finally:
        for session in sessions:
            await target.close_session(session)
    return len(keys)


def bench_keys() -> list[bytes]:
    return ([key(b"point/", i) for i in range(POINT_KEYS)]
            + [key(RANGE_PREFIX, i) for i in range(RANGE_KEYS)])


# ------------------------------------------------------------------------------ blocking queries
async def watch(address: str, watchers: int, write_interval: float, window: Window,
                ) -> dict[str, Any]:
    """``watchers`` blocking GETs on distinct existing keys ``watch/NNNNNNNNNN``; one writer
    puts a random one of them every ``write_interval`` s. Each woken waiter records how long
    after the write was sent and after it was acknowledged its reply came, then waits again."""
    target = PykvsHTTP(address)
    keys = [key(b"watch/", i) for i in range(watchers)]
    sent_at: dict[bytes, float] = {}
    acked_at: dict[bytes, float] = {}
    after_ack: list[float] = []
    stop = asyncio.Event()

    async def first_index(session: HTTPConnection, k: bytes) -> int:
        status, body = await session.request(http_request("GET", f"/v1/kv/{k.decode()}",
                                                          target.host))
        expect(status == 200, "watch GET", (status, body))
        return int(json.loads(body)[0]["ModifyIndex"])

    armed = 0

    async def waiter(k: bytes) -> None:
        nonlocal armed
        session = await HTTPConnection.open(address)
        try:
            index = await first_index(session, k)
            armed += 1
            while not stop.is_set():
                request = http_request("GET", f"/v1/kv/{k.decode()}?index={index}&wait=60s",
                                       target.host)
                status, body = await session.request(request)
                woke = time.perf_counter()
                expect(status == 200, "blocking GET", (status, body))
                new_index = int(json.loads(body)[0]["ModifyIndex"])
                if new_index > index and k in sent_at:
                    window.record(sent_at[k], woke)
                    if k in acked_at:
                        after_ack.append(woke - acked_at[k])
                index = new_index
        except ConnectionError:
            if not stop.is_set():
                raise
        finally:
            session.close()

    writes_in_window = 0

    async def writer() -> None:
        nonlocal writes_in_window
        session = await HTTPConnection.open(address)
        try:
            while time.perf_counter() < window.end:
                k = random.choice(keys)
                if k in sent_at and k not in acked_at:
                    continue
                acked_at.pop(k, None)
                sent = sent_at[k] = time.perf_counter()
                await target.put_key(session, k)
                acked_at[k] = time.perf_counter()
                writes_in_window += window.begin <= sent and acked_at[k] <= window.end
                await asyncio.sleep(write_interval)
        finally:
            session.close()

    # Open the waiters in batches so the server's accept queue is not flooded.
    tasks: list[asyncio.Task[None]] = []
    for start in range(0, watchers, 500):
        tasks += [asyncio.create_task(waiter(k)) for k in keys[start:start + 500]]
        deadline = time.perf_counter() + 60
        while armed < len(tasks) and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
    expect(armed == watchers, "arming the watchers", armed)
    window.__init__(0.5, window.end - window.begin, window.server_pids)  # type: ignore[misc]
    await asyncio.gather(window.sample_edges(), writer())
    stop.set()
    failed = await _end_waiters(tasks, window)
    lat = sorted(after_ack)
    return {"watchers": watchers, "waiters_failed": failed,
            "writes_in_window": writes_in_window,
            "after_ack_us": {q: lat[min(len(lat) - 1, int(f * len(lat)))] * 1e6
                             for q, f in (("p50", 0.5), ("p99", 0.99))} if lat else {}}


async def _end_waiters(tasks: list[asyncio.Task[None]], window: Window) -> int:
    """Cancel the waiters; how many had failed already (a refused or broken blocking query),
    the first few of them recorded as the window's errors."""
    failed = [t.exception() for t in tasks if t.done() and not t.cancelled()
              and t.exception() is not None]
    window.errors += [repr(exc) for exc in failed[:5]]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return len(failed)


# ------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("op", choices=("put", "get", "range", "fill", "watch"))
    parser.add_argument("--addr", required=True, help="host:port of the server to load")
    parser.add_argument("--in-flight", type=int, default=1)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--server-pid", type=int, action="append", default=[])
    parser.add_argument("--watchers", type=int, default=10_000)
    parser.add_argument("--write-interval", type=float, default=0.005)
    args = parser.parse_args(argv)
    if args.in_flight < 1:
        parser.error(f"--in-flight must be >= 1, got {args.in_flight}")
    if args.duration <= 0:
        parser.error(f"--duration must be > 0, got {args.duration}")
    target = TARGETS[args.target](args.addr)
    out: dict[str, Any] = {"target": args.target, "op": args.op, "in_flight": args.in_flight}
    if args.op == "fill":
        began = time.perf_counter()
        out["written"] = asyncio.run(fill(target, bench_keys()))
        out["seconds"] = time.perf_counter() - began
    elif args.op == "watch":
        if args.target != "pykvs-http":
            parser.error("watch runs against pykvs-http only")
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        window = Window(args.warmup, args.duration, args.server_pid)
        extra = asyncio.run(watch(args.addr, args.watchers, args.write_interval, window))
        out.update(window.report(), **extra)
    else:
        window = Window(args.warmup, args.duration, args.server_pid)
        asyncio.run(closed_loop(target, args.op, args.in_flight, window))
        out.update(window.report())
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
