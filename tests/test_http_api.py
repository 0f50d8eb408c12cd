"""The HTTP API (pykvs/http) in-process: servers and their HTTP apps in one event loop, real TCP
on 127.0.0.1 (ephemeral ports), LMDB in temp dirs, requests with aiohttp's client.

Covers what py-consul does not reach: response headers, raw reads, Consul's status codes and
texts for bad input (and that bad input changes nothing), the 413 limits, and a 3-server
cluster where the same calls against a follower answer what the leader answers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
from test_server_cluster import FAST, run, until

from pykvs import http as pykvs_http
from pykvs.server.server import Server, ServerConfig


class Node:
    def __init__(self, server: Server, api: pykvs_http.HTTPServer,
                 session: aiohttp.ClientSession) -> None:
        self.server = server
        self.api = api
        self.base = f"http://{api.address}"
        self.session = session

    async def call(self, method: str, path: str, data: bytes | str | None = None,
                   **params: Any) -> tuple[int, dict[str, str], bytes]:
        query = [(k, "" if v is True else str(v)) for k, v in params.items()]
        async with self.session.request(method, self.base + path, params=query,
                                        data=data) as resp:
            return resp.status, dict(resp.headers), await resp.read()

    async def json(self, method: str, path: str, data: bytes | str | None = None,
                   **params: Any) -> Any:
        status, _, body = await self.call(method, path, data, **params)
        assert status == 200, (method, path, status, body)
        return json.loads(body)


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: list[Node] = []
        self.session = aiohttp.ClientSession()

    async def start(self, name: str, **options: Any) -> Node:
        server = Server(ServerConfig(data_dir=str(self.root / name), node_name=name, port=0,
                                     **{**FAST, **options}))
        await server.start()
        api = await pykvs_http.start(server, "127.0.0.1", 0)
        node = Node(server, api, self.session)
        self.nodes.append(node)
        return node

    async def start_three(self) -> tuple[Node, list[Node]]:
        """s1 bootstraps, s2 and s3 join it; once all three see 3 voters and a leader, returns
        (leader, followers)."""
        first = await self.start("s1")
        await first.server.wait_leader(15)
        for name in ("s2", "s3"):
            await self.start(name, join=[first.server.address])
        servers = [n.server for n in self.nodes]
        await until(lambda: all(s.node is not None and len(s.node.configuration().voters) == 3
                                and s.leader_address() for s in servers), "3 voters")
        leader = next(n for n in self.nodes if n.server.node.is_leader())
        return leader, [n for n in self.nodes if n is not leader]

    async def close(self) -> None:
        await self.session.close()
        for node in self.nodes:
            await node.api.close()
            await node.server.close()


def scenario(tmp_path: Path, body: Callable[[Cluster], Coroutine[Any, Any, None]],
             limit: float = 60.0) -> None:
    """Run ``body`` with a fresh Cluster in a fresh loop, bounded by ``limit`` seconds."""

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            cluster = Cluster(tmp_path)
            stack.push_async_callback(cluster.close)
            await body(cluster)

    run(main(), limit)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# ------------------------------------------------------------------------ one server
def test_kv_reads_carry_query_meta_and_raw_values(tmp_path: Path) -> None:
    async def body(cluster: Cluster) -> None:
        node = await cluster.start("s1")
        await node.server.wait_leader(15)
        assert await node.json("PUT", "/v1/kv/app/x", b"\x00bin\xff", flags=3) is True
        status, headers, data = await node.call("GET", "/v1/kv/app/x")
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        [entry] = json.loads(data)
        assert list(entry) == ["LockIndex", "Key", "Flags", "Value", "CreateIndex",
                               "ModifyIndex"]
        assert headers["X-Consul-Index"] == str(entry["ModifyIndex"])
        assert headers["X-Consul-KnownLeader"] == "true"
        assert headers["X-Consul-LastContact"] == "0"
        assert base64.b64decode(entry["Value"]) == b"\x00bin\xff" and entry["Flags"] == 3
        status, headers, data = await node.call("GET", "/v1/kv/app/x", raw=True)
        assert status == 200 and data == b"\x00bin\xff"
        assert headers["X-Content-Type-Options"] == "nosniff"
        # a missing key or an empty prefix is a 404 that still carries the meta
        for path, params in (("/v1/kv/app/none", {}), ("/v1/kv/zz/", {"recurse": True}),
                             ("/v1/kv/zz/", {"keys": True})):
            status, headers, data = await node.call("GET", path, **params)
            assert status == 404 and data == b"" and "X-Consul-Index" in headers
        # the root key list of an empty store is [], not a 404
        assert await node.json("GET", "/v1/kv/", keys=True, separator="/") == ["app/"]
        assert await node.json("DELETE", "/v1/kv/", recurse=True) is True
        assert await node.json("GET", "/v1/kv/", keys=True) == []

    scenario(tmp_path, body)


def test_blocking_get_returns_on_a_write(tmp_path: Path) -> None:
    async def body(cluster: Cluster) -> None:
        node = await cluster.start("s1")
        await node.server.wait_leader(15)
        await node.json("PUT", "/v1/kv/w", b"1")
        _, headers, _ = await node.call("GET", "/v1/kv/w")
        index = headers["X-Consul-Index"]
        waiting = asyncio.ensure_future(node.call("GET", "/v1/kv/w", index=index, wait="30s"))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        await node.json("PUT", "/v1/kv/w", b"2")
        status, headers, data = await asyncio.wait_for(waiting, 10)
        assert status == 200 and int(headers["X-Consul-Index"]) > int(index)
        assert base64.b64decode(json.loads(data)[0]["Value"]) == b"2"

    scenario(tmp_path, body)


def test_bad_input_gets_consuls_code_and_text_and_changes_nothing(tmp_path: Path) -> None:
    async def body(cluster: Cluster) -> None:
        node = await cluster.start("s1", max_value_size=1024)
        await node.server.wait_leader(15)
        await node.json("PUT", "/v1/kv/keep", b"v")
        sid = (await node.json("PUT", "/v1/session/create", "{}"))["ID"]
        before = node.server.state.index
        too_many = json.dumps([{"KV": {"Verb": "set", "Key": f"k{i}"}} for i in range(129)])
        cases: list[tuple[str, str, Any, dict[str, Any], int, str]] = [
            ("GET", "/v1/kv/", None, {}, 400, "Missing key name"),
            ("PUT", "/v1/kv/", b"x", {}, 400, "Missing key name"),
            ("DELETE", "/v1/kv/", None, {}, 400, "Missing key name"),
            ("GET", "/v1/kv/keep", None, {"wait": "soon", "index": 1}, 400, "Invalid wait time"),
            ("GET", "/v1/kv/keep", None, {"index": "-1"}, 400, "Invalid index"),
            ("GET", "/v1/kv/keep", None, {"stale": True, "consistent": True}, 400,
             "Cannot specify ?stale with ?consistent, conflicting semantics."),
            ("PUT", "/v1/kv/keep", b"x", {"flags": "abc"}, 400, "Invalid flags"),
            ("PUT", "/v1/kv/keep", b"x", {"cas": "1.5"}, 400, "Invalid cas"),
            ("PUT", "/v1/kv/keep", b"x", {"cas": 1, "acquire": sid}, 400, "Conflicting flags"),
            ("DELETE", "/v1/kv/keep", None, {"cas": 1, "recurse": True}, 400,
             "Conflicting flags"),
            ("PUT", "/v1/kv/keep", b"x" * 1025, {}, 413,
             "Request body(1025 bytes) too large, max size: 1024 bytes"),
            ("PUT", "/v1/txn", "{not json", {}, 400, "Failed to parse body"),
            ("PUT", "/v1/txn", '{"KV": {}}', {}, 400, "Failed to parse body"),
            ("PUT", "/v1/txn", '[{"Node": {}}]', {}, 400, "only KV operations"),
            ("PUT", "/v1/txn", '[{"KV": {"Verb": "set", "Key": "a", "Value": "@@"}}]', {},
             400, "failed to decode value"),
            ("PUT", "/v1/txn", json.dumps([{"KV": {"Verb": "set", "Key": "big",
                                                   "Value": b64("x" * 1025)}}]), {},
             413, 'Value for key "big" is too large (1025 > 1024 bytes)'),
            ("PUT", "/v1/txn", too_many, {}, 413,
             "Transaction contains too many operations (129 > 128)"),
            ("PUT", "/v1/txn", '[{"KV": {"Verb": "frob", "Key": "a"}}]', {}, 409,
             'unknown KV verb \\"frob\\"'),
            ("PUT", "/v1/session/create", "{bad", {}, 400, "Request decode failed"),
            ("PUT", "/v1/session/create", '{"TTL": "5s"}', {}, 400, "Invalid Session TTL"),
            ("PUT", "/v1/session/create", '{"Behavior": "explode"}', {}, 400,
             "Invalid Behavior setting"),
            ("PUT", "/v1/session/create", '{"Checks": ["web"]}', {}, 400, "no health checks"),
            ("PUT", "/v1/session/destroy/", None, {}, 400, "Missing session"),
            ("PUT", "/v1/session/renew/not-a-session", None, {}, 404,
             "Session id 'not-a-session' not found"),
            ("GET", "/v1/session/node/", None, {}, 400, "Missing node name"),
            ("DELETE", "/v1/operator/raft/peer", None, {}, 400, "Must specify either ?id"),
            ("DELETE", "/v1/operator/raft/peer", None, {"id": "a", "address": "b"}, 400,
             "Must specify only one of ?id or ?address"),
            ("DELETE", "/v1/operator/raft/peer", None, {"address": "10.0.0.1:1"}, 500,
             "was not found in the Raft configuration"),
            ("PUT", "/v1/snapshot", b"not an archive", {}, 400, "Error restoring snapshot"),
            ("POST", "/v1/kv/keep", None, {}, 405, "method POST not allowed"),
            ("GET", "/v1/no/such/endpoint", None, {}, 404, "no endpoint"),
        ]
        for method, path, data, params, want_status, want_text in cases:
            status, headers, reply = await node.call(method, path, data, **params)
            assert (status, want_text in reply.decode()) == (want_status, True), (
                method, path, params, status, reply)
            if status == 405:
                assert headers["Allow"] == "OPTIONS,DELETE,GET,PUT"
        assert node.server.state.index == before, "bad input changed the state"
        assert await node.json("GET", "/v1/kv/keep")  # still serving

    scenario(tmp_path, body)


def test_txn_shapes_and_codes(tmp_path: Path) -> None:
    async def body(cluster: Cluster) -> None:
        node = await cluster.start("s1")
        await node.server.wait_leader(15)
        sid = (await node.json("PUT", "/v1/session/create", '{"lockdelay": "0s"}'))["ID"]
        ops = [{"KV": {"Verb": "set", "Key": "t/a", "Value": b64("A"), "Flags": 1}},
               {"KV": {"Verb": "lock", "Key": "t/l", "Value": b64("L"), "Session": sid}},
               {"KV": {"Verb": "get", "Key": "t/a"}}]
        reply = await node.json("PUT", "/v1/txn", json.dumps(ops))
        assert reply["Errors"] is None
        a, lock, got = (r["KV"] for r in reply["Results"])
        assert a["Value"] is None and got["Value"] == b64("A") and lock["Session"] == sid
        assert lock["LockIndex"] == 1
        # read-only: Txn.Read, with the meta in body and headers
        status, headers, data = await node.call(
            "PUT", "/v1/txn", json.dumps([{"KV": {"Verb": "get-tree", "Key": "t/"}}]))
        reply = json.loads(data)
        assert status == 200 and reply["KnownLeader"] is True
        assert headers["X-Consul-KnownLeader"] == "true"
        assert [r["KV"]["Key"] for r in reply["Results"]] == ["t/a", "t/l"]
        # rolled back: 409 with every error, nothing applied
        before = node.server.state.index
        status, _, data = await node.call("PUT", "/v1/txn", json.dumps([
            {"KV": {"Verb": "set", "Key": "t/new", "Value": b64("n")}},
            {"KV": {"Verb": "check-not-exists", "Key": "t/a"}},
            {"KV": {"Verb": "delete-cas", "Key": "t/a", "Index": 1}},
        ]))
        reply = json.loads(data)
        assert status == 409 and reply["Results"] is None
        assert [e["OpIndex"] for e in reply["Errors"]] == [1, 2]
        assert node.server.state.index == before + 1  # the failed txn is one no-op entry
        status, _, _ = await node.call("GET", "/v1/kv/t/new")
        assert status == 404

    scenario(tmp_path, body)


# ------------------------------------------------------------------- a 3-server cluster
READS: list[tuple[str, dict[str, Any]]] = [
    ("/v1/kv/c/a", {}),
    ("/v1/kv/c/a", {"raw": True}),
    ("/v1/kv/c/a", {"consistent": True}),
    ("/v1/kv/c/", {"recurse": True}),
    ("/v1/kv/c/", {"keys": True, "separator": "/"}),
    ("/v1/kv/c/", {"keys": True}),
    ("/v1/kv/c/none", {}),
    ("/v1/session/list", {}),
    ("/v1/status/leader", {}),
    ("/v1/status/peers", {}),
    ("/v1/operator/raft/configuration", {}),
]


def test_follower_answers_what_the_leader_answers(tmp_path: Path) -> None:
    async def body(cluster: Cluster) -> None:
        leader, followers = await cluster.start_three()

        # writes through a follower are forwarded to the leader
        writer = followers[0]
        assert await writer.json("PUT", "/v1/kv/c/a", b"alpha", flags=5) is True
        assert await writer.json("PUT", "/v1/kv/c/b/d", b"delta") is True
        sid = (await writer.json("PUT", "/v1/session/create", '{"Name": "f"}'))["ID"]
        assert await writer.json("PUT", "/v1/kv/c/lock", b"", acquire=sid) is True
        txn = [{"KV": {"Verb": "set", "Key": "c/t", "Value": b64("tx")}}]
        assert (await writer.json("PUT", "/v1/txn", json.dumps(txn)))["Errors"] is None

        async def answers(node: Node, params_extra: dict[str, Any]) -> list[Any]:
            out = []
            for path, params in READS:
                status, headers, data = await node.call("GET", path, **params, **params_extra)
                out.append((path, params, status, data, headers.get("X-Consul-Index")))
            info = await node.json("GET", f"/v1/session/info/{sid}", **params_extra)
            out.append(("info", info))
            get_tree = json.dumps([{"KV": {"Verb": "get-tree", "Key": "c/"}}])
            out.append(("txn", (await node.json("PUT", "/v1/txn", get_tree))["Results"]))
            return out

        expected = await answers(leader, {})
        assert expected[0][2] == 200 and expected[6][2] == 404
        for follower in followers:
            assert await answers(follower, {}) == expected
        # stale reads are answered by the follower itself: the same once it caught up
        target = leader.server.state.index
        await until(lambda: all(f.server.state.index >= target for f in followers),
                    "followers caught up")
        stale_paths = {"/v1/kv/c/a", "/v1/kv/c/"}
        for follower in followers:
            stale = await answers(follower, {"stale": True})
            for got, want in zip(stale, expected, strict=True):
                if got[0] in stale_paths and "consistent" not in got[1]:
                    assert got == want, (got, want)
            _, headers, _ = await follower.call("GET", "/v1/kv/c/a", stale=True)
            assert headers["X-Consul-KnownLeader"] == "true"

        # a snapshot saved through a follower restores through the other one
        status, _, archive = await followers[0].call("GET", "/v1/snapshot")
        assert status == 200
        assert await followers[1].json("DELETE", "/v1/kv/c/", recurse=True) is True
        status, _, _ = await followers[1].call("PUT", "/v1/snapshot", archive)
        assert status == 200
        restored = await leader.json("GET", "/v1/kv/c/", keys=True)
        assert restored == ["c/a", "c/b/d", "c/lock", "c/t"]

    scenario(tmp_path, body, limit=90)
