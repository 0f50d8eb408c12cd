"""Each protective limit (pykvs.server.limits) is enforced with an answer that names it: HTTP
body size (413), HTTP connections (503), blocking queries per client address over HTTP (429)
and RPC (an error), RPC frame size and RPC connections (a connection error, then the
connection closes). The server keeps serving, and a slot freed is usable again."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest

from pykvs import http
from pykvs.http import limits as http_limits
from pykvs.netaddr import split_address
from pykvs.server.client import AsyncKV, LocalCaller, connect_async
from pykvs.server.limits import Limits
from pykvs.server.rpc import ConnectionLost, RPCClient, RPCError, encode_frame
from pykvs.server.server import Server, ServerConfig


def run(coro: Awaitable[Any], limit: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(coro, limit))  # type: ignore[arg-type]


@asynccontextmanager
async def serving(root: Path, **limits: int) -> AsyncIterator[tuple[Server, http.HTTPServer]]:
    server = Server(ServerConfig(data_dir=str(root / "s1"), port=0, tick_interval=0.02,
                                 limits=Limits(**limits)))
    try:
        await server.start()
        await server.wait_leader(10)
        api = await http.start(server, "127.0.0.1", 0)
        try:
            yield server, api
        finally:
            await api.close()
    finally:
        await server.close()


async def until(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def raw_http(address: str, request: bytes) -> tuple[asyncio.StreamReader,
                                                          asyncio.StreamWriter, bytes]:
    """Send one request on a new connection and read its answer's head (keeps it open)."""
    host, port = split_address(address)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    return reader, writer, head


async def shut(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def test_limits_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="http_max_conns must be a positive integer, got 0"):
        Limits(http_max_conns=0)
    with pytest.raises(ValueError, match="rpc_max_frame must be at least 64 bytes"):
        Limits(rpc_max_frame=10)
    with pytest.raises(ValueError, match="max_blocking_per_client must be a positive integer"):
        Limits(max_blocking_per_client=True)


def test_http_body_over_the_limit_is_413(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, http_max_body=1024) as (server, api), \
                aiohttp.ClientSession() as session:
            base = f"http://{api.address}"
            async with session.put(f"{base}/v1/session/create", data=b" " * 2000) as resp:
                assert resp.status == 413
                assert await resp.text() == ("Request body(2000 bytes) too large, max size: "
                                             "1024 bytes")
            async with session.put(f"{base}/v1/kv/small", data=b"x" * 1000) as resp:
                assert resp.status == 200
            async with session.put(f"{base}/v1/kv/big", data=b"x" * 1025) as resp:
                assert resp.status == 413
            _, entry = await AsyncKV(LocalCaller(server, owned=False)).get("big")
            assert entry is None

    run(scenario())


def test_http_connections_over_the_limit_get_503_and_are_closed(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, http_max_conns=2) as (_server, api):
            get = b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n"
            held = [await raw_http(api.address, get) for _ in range(2)]
            assert all(head.startswith(b"HTTP/1.1 200") for _, _, head in held)
            reader, writer, head = await raw_http(api.address, get)
            assert head.startswith(b"HTTP/1.1 503")
            body = await reader.read()  # and then the server closes it
            assert b"Too many HTTP connections: the limit is 2" in body
            await shut(writer)
            # A slot freed is a slot usable again.
            await shut(held[0][1])
            app = api.runner.app
            await until(lambda: len(app[http_limits.CONNECTIONS_KEY]) < 2, "a closed slot")
            reader, writer, head = await raw_http(api.address, get)
            assert head.startswith(b"HTTP/1.1 200")
            for _, w, _ in [*held[1:], (reader, writer, head)]:
                await shut(w)

    run(scenario())


def test_blocking_queries_per_client_address_over_http(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, max_blocking_per_client=2) as (server, api), \
                aiohttp.ClientSession() as session:
            url = f"http://{api.address}/v1/kv/watched"
            async with session.put(url, data=b"0") as resp:
                index = int(resp.headers.get("X-Consul-Index", "0")) or server.state.index
            blocking = f"{url}?index={server.state.index}&wait=30s"

            async def watch() -> int:
                async with session.get(blocking) as resp:
                    return resp.status

            watchers = [asyncio.create_task(watch()) for _ in range(2)]
            counts = api.runner.app[http_limits.BLOCKING_KEY].counts
            await until(lambda: counts.get("127.0.0.1") == 2, "two blocking queries")
            async with session.get(blocking) as resp:
                assert resp.status == 429
                assert await resp.text() == ("Too many concurrent blocking queries from "
                                             "127.0.0.1: the limit is 2 per client address")
            async with session.get(url) as resp:  # a read that does not block is served
                assert resp.status == 200
            async with session.put(url, data=b"1") as resp:
                assert resp.status == 200
            assert await asyncio.gather(*watchers) == [200, 200]
            assert counts == {}
            assert index >= 1

    run(scenario())


def test_blocking_queries_per_client_address_over_rpc(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, max_blocking_per_client=2) as (server, _api):
            kv = await connect_async(server.address, timeout=30)
            try:
                await kv.put("watched", b"0")
                index, _ = await kv.get("watched")
                watchers = [asyncio.create_task(kv.get("watched", index=index, wait=30))
                            for _ in range(2)]
                await until(lambda: server.blocking_rpc.counts.get("127.0.0.1") == 2,
                            "two blocking queries")
                with pytest.raises(RPCError, match=re.escape(
                        "KVS.Get: Too many concurrent blocking queries from 127.0.0.1: the "
                        "limit is 2 per client address")):
                    await kv.get("watched", index=index, wait=30)
                await kv.put("watched", b"1")
                for new_index, entry in await asyncio.gather(*watchers):
                    assert new_index > index and entry is not None and entry.value == b"1"
                assert server.blocking_rpc.counts == {}
            finally:
                await kv.close()

    run(scenario())


def test_rpc_frame_over_the_limit_gets_a_connection_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, rpc_max_frame=4096) as (server, _api):
            host, port = split_address(server.address)
            reader, writer = await asyncio.open_connection(host, port)
            writer.write((5000).to_bytes(4, "big") + b"\x00" * 5000)
            await writer.drain()
            header = await reader.readexactly(4)
            answer = msgpack.unpackb(await reader.readexactly(int.from_bytes(header, "big")))
            assert answer == [None, "rpc: frame length 5000 outside 1..4096 (the frame limit)",
                              None]
            assert await reader.read() == b""  # closed after the error
            await shut(writer)
            # The same after a good request (the first frame is read by the Raft transport).
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(encode_frame(msgpack.packb([1, "Status.Ping", {}])))
            await writer.drain()
            answers = []
            for _ in range(2):
                if answers:
                    writer.write((5000).to_bytes(4, "big") + b"\x00" * 5000)
                    await writer.drain()
                header = await reader.readexactly(4)
                answers.append(msgpack.unpackb(await reader.readexactly(
                    int.from_bytes(header, "big"))))
            assert answers[0][:2] == [1, None]
            assert answers[1][0] is None and "outside 1..4096" in answers[1][1]
            assert await reader.read() == b""
            await shut(writer)
            # Our own client, allowed bigger frames than the server, gets the message.
            client = RPCClient(host, port, max_frame=1 << 20)
            try:
                with pytest.raises(ConnectionLost, match=r"frame length \d+ outside 1\.\.4096"):
                    await client.call("KVS.Apply", {"Op": "set", "DirEnt": {
                        "Key": b"big", "Value": b"v" * 5000}}, timeout=10)
            finally:
                await client.close()
            kv = await connect_async(server.address, timeout=10)
            try:
                await kv.put("small", b"fits")
                _, entry = await kv.get("big")
                assert entry is None
            finally:
                await kv.close()

    run(scenario())


def test_rpc_connections_over_the_limit_get_a_connection_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, rpc_max_conns=2) as (server, _api):
            clients = [await connect_async(server.address, timeout=10) for _ in range(3)]
            try:
                for kv in clients[:2]:
                    assert await kv.leader() == server.address
                with pytest.raises(ConnectionLost, match="Too many RPC connections: the limit "
                                   "is 2; try again later"):
                    await clients[2].leader()
                await clients[0].close()
                await until(lambda: len(server.rpc._connections) < 2, "a freed slot")
                assert await clients[2].leader() == server.address
            finally:
                for kv in clients:
                    await kv.close()

    run(scenario())
