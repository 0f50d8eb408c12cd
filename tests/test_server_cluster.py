"""The server (pykvs/server/server.py) in-process: 1 and 3 servers and two datacenters in one
event loop, real TCP on 127.0.0.1 (ephemeral ports), LMDB in temp dirs, every endpoint through
``pykvs.connect_async``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

import pykvs
from pykvs import fsm
from pykvs.server.client import AsyncKV
from pykvs.server.rpc import RPCError
from pykvs.server.server import Server, ServerConfig

FAST = {"tick_interval": 0.02, "rpc_hold_timeout": 3.0, "join_retry_interval": 0.05}


def run(coro: Coroutine[Any, Any, Any], limit: float = 60.0) -> Any:
    """Run a scenario in a fresh loop, cancelled after ``limit`` seconds so a hang fails."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, limit)

    return asyncio.run(bounded())


async def until(pred: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


class Cluster:
    """Servers of one or more datacenters, and clients of them, closed together."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.servers: dict[str, Server] = {}
        self.clients: list[AsyncKV] = []

    async def start(self, name: str, **options: Any) -> Server:
        config = ServerConfig(data_dir=str(self.root / name), node_name=name, port=0,
                              **{**FAST, **options})
        server = self.servers[name] = Server(config)
        await server.start()
        return server

    async def found(self, n: int, datacenter: str = "dc1", **options: Any) -> list[Server]:
        """s1 bootstraps, the others --join it."""
        prefix = f"{datacenter}-" if datacenter != "dc1" else ""
        first = await self.start(f"{prefix}s1", datacenter=datacenter, **options)
        await first.wait_leader(15)
        for k in range(2, n + 1):
            await self.start(f"{prefix}s{k}", datacenter=datacenter, join=[first.address],
                             **options)
        servers = [self.servers[f"{prefix}s{k}"] for k in range(1, n + 1)]
        await until(lambda: all(s.node is not None and len(s.node.configuration().voters) == n
                                and s.leader_address() for s in servers), f"{n} voters")
        return servers

    def leader(self) -> Server:
        leaders = [s for s in self.servers.values() if s.node is not None and s.node.is_leader()]
        assert len(leaders) == 1, leaders
        return leaders[0]

    async def client(self, server: Server) -> AsyncKV:
        client = await pykvs.connect_async(server.address)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        for server in self.servers.values():
            await server.close()


def scenario(tmp_path: Path, body: Callable[[Cluster], Coroutine[Any, Any, None]],
             limit: float = 60.0) -> None:
    async def main() -> None:
        cluster = Cluster(tmp_path)
        try:
            await body(cluster)
        finally:
            await cluster.close()

    run(main(), limit)


async def exercise_every_endpoint(db: AsyncKV, dc: str | None = None) -> None:
    """KVS, Txn, Session, Status and Operator through one client, checking each answer."""
    assert await db.put("app/a", b"1", flags=7, dc=dc)
    assert await db.put("app/b/c", "2", dc=dc)
    index, entry = await db.get("app/a", dc=dc)
    assert entry is not None and entry.value == b"1" and entry.flags == 7
    assert index == entry.modify_index
    _, missing = await db.get("app/zzz", dc=dc)
    assert missing is None
    _, listed = await db.list("app/", dc=dc)
    assert [e.key for e in listed] == [b"app/a", b"app/b/c"]
    _, keys = await db.keys("app/", "/", dc=dc)
    assert keys == [b"app/a", b"app/b/"]
    # cas: stale index refused, current accepted; 0 means "only if absent"
    assert not await db.put("app/a", b"x", cas=entry.modify_index + 100, dc=dc)
    assert await db.put("app/a", b"3", cas=entry.modify_index, dc=dc)
    assert not await db.put("app/a", b"x", cas=0, dc=dc)
    _, entry = await db.get("app/a", consistency="consistent", dc=dc)
    assert entry is not None and entry.value == b"3"
    # sessions and locks
    sid = await db.session_create(name="worker", ttl=30, lock_delay=0, dc=dc)
    _, info = await db.session_info(sid, dc=dc)
    assert info is not None and info.name == "worker" and info.ttl == "30s"
    _, sessions = await db.session_list(dc=dc)
    assert sid in [s.id for s in sessions]
    _, node_sessions = await db.session_node(info.node, dc=dc)
    assert sid in [s.id for s in node_sessions]
    renewed = await db.session_renew(sid, dc=dc)
    assert renewed is not None and renewed.id == sid
    assert await db.put("lock", b"held", acquire=sid, dc=dc)
    _, lock = await db.get("lock", dc=dc)
    assert lock is not None and lock.session == sid and lock.lock_index == 1
    assert await db.put("lock", b"free", release=sid, dc=dc)
    _, lock = await db.get("lock", dc=dc)
    assert lock is not None and lock.session is None
    # transactions
    result = await db.txn([{"Verb": "set", "Key": "t/1", "Value": b"v"},
                           {"KV": {"Verb": "get", "Key": "app/a"}}], dc=dc)
    assert result.ok and result.results is not None and result.results[1].value == b"3"
    failed = await db.txn([{"Verb": "set", "Key": "t/2", "Value": b"v"},
                           {"Verb": "check-not-exists", "Key": "t/1"}], dc=dc)
    assert not failed.ok and failed.errors[0].op_index == 1
    _, absent = await db.get("t/2", dc=dc)
    assert absent is None  # the failed txn left nothing
    read = await db.txn_read([{"Verb": "get-tree", "Key": "t/"}], dc=dc)
    assert read.ok and read.results is not None and [e.key for e in read.results] == [b"t/1"]
    # deletes
    assert await db.delete("app/b", recurse=True, dc=dc)
    _, entry = await db.get("app/a", dc=dc)
    assert entry is not None
    assert not await db.delete("app/a", cas=entry.modify_index + 100, dc=dc)
    assert await db.delete("app/a", cas=entry.modify_index, dc=dc)
    assert await db.delete("t/1", dc=dc)
    _, listed = await db.list("app/", dc=dc)
    assert listed == []
    assert await db.session_destroy(sid, dc=dc)
    _, info = await db.session_info(sid, dc=dc)
    assert info is None
    # status and operator
    leader = await db.leader(dc=dc)
    peers = await db.peers(dc=dc)
    assert leader in peers
    conf = await db.raft_configuration(dc=dc)
    assert sorted(s["Address"] for s in conf["Servers"]) == sorted(peers)
    assert [s["Address"] for s in conf["Servers"] if s["Leader"]] == [leader]
    # snapshot save: the whole state, in pykvs.fsm's stream format
    assert await db.put("snap/k", b"v" * 1000, dc=dc)
    header, state, _ = fsm.read_snapshot(await db.snapshot_save(dc=dc))
    assert state.kv_get(b"snap/k")[1] is not None and header.index == state.index


def test_one_server_every_endpoint(tmp_path: Path) -> None:
    async def body(cluster: Cluster) -> None:
        (server,) = await cluster.found(1)
        await exercise_every_endpoint(await cluster.client(server))
        db = await cluster.client(server)
        with pytest.raises(RPCError, match="no other voter"):
            await db.transfer_leader()
        with pytest.raises(RPCError, match="not found in the Raft configuration"):
            await db.raft_remove_peer(address="127.0.0.1:1")

    scenario(tmp_path, body)


def test_three_servers_forwarding_reads_and_blocking(tmp_path: Path) -> None:
    async def body(cluster: Cluster) -> None:
        servers = await cluster.found(3)
        leader = cluster.leader()
        follower = next(s for s in servers if s is not leader)
        other = next(s for s in servers if s is not leader and s is not follower)
        via_follower = await cluster.client(follower)
        # Every endpoint works through a follower (writes and default reads forwarded).
        await exercise_every_endpoint(via_follower)
        # A write to a follower is applied by the leader.
        assert await via_follower.put("fwd", b"1")
        assert leader.state.kv_get(b"fwd")[1] is not None
        # Default and consistent reads on a follower see the write at once (the leader answers).
        _, entry = await via_follower.get("fwd")
        assert entry is not None and entry.value == b"1"
        _, entry = await via_follower.get("fwd", consistency="consistent")
        assert entry is not None
        # A stale read is answered by the follower itself: its own state, its LastContact.
        await until(lambda: follower.state.kv_get(b"fwd")[1] is not None, "replication")
        reply = await via_follower.call("KVS.Get", {"Key": b"fwd", "AllowStale": True})
        assert reply["Entries"] and reply["KnownLeader"] is True
        assert reply["LastContact"] >= 0 and reply["Index"] == entry.modify_index
        reply = await via_follower.call("KVS.Get", {"Key": b"fwd"})
        assert reply["LastContact"] == 0  # answered by the leader
        # A blocking read on one server wakes on a write sent to another.
        index, _ = await via_follower.get("watched")
        waiter = asyncio.ensure_future(via_follower.get("watched", index=index, wait=20))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        writer = await cluster.client(other)
        assert await writer.put("watched", b"now")
        new_index, woken = await asyncio.wait_for(waiter, 10)
        assert woken is not None and woken.value == b"now" and new_index > index
        # A stale blocking read on a follower wakes from its own replica too. (It may also
        # wake for an earlier write the follower applies meanwhile: clients loop, as here.)
        index, listed = await via_follower.list("w2/", consistency="stale")
        write = asyncio.ensure_future(writer.put("w2/x", b"1"))
        for _ in range(10):
            if listed:
                break
            index, listed = await asyncio.wait_for(
                via_follower.list("w2/", index=index, wait=20, consistency="stale"), 10)
        assert await write
        assert [e.key for e in listed] == [b"w2/x"]
        # A blocking read that nothing wakes answers after its wait with the same index.
        quiet_index, _ = await via_follower.get("quiet")
        started = time.monotonic()
        same, _ = await via_follower.get("quiet", index=quiet_index, wait=0.3)
        assert time.monotonic() - started >= 0.3 and same == quiet_index

    scenario(tmp_path, body)


def test_session_ttl_expiry_releases_lock_and_survives_leader_change(tmp_path: Path) -> None:
    async def body(cluster: Cluster) -> None:
        # Consul's minimum TTL is 10s; the multiplier (2 in Consul) is shortened for the test.
        servers = await cluster.found(3, session_ttl_multiplier=0.08)
        leader = cluster.leader()
        follower = next(s for s in servers if s is not leader)
        db = await cluster.client(follower)
        sid = await db.session_create(ttl="10s", lock_delay=0)
        assert await db.put("lock", b"me", acquire=sid)
        # Renewing resets the timer (0.8s): keep it alive across more than one period.
        for _ in range(3):
            await asyncio.sleep(0.4)
            assert await db.session_renew(sid) is not None
        _, lock = await db.get("lock")
        assert lock is not None and lock.session == sid
        # Move leadership: the new leader arms its own timers and expires the session.
        await db.transfer_leader()
        await until(lambda: any(s.node is not None and s.node.is_leader() and s is not leader
                                for s in servers), "a new leader")
        lock_session = lambda: follower.state.kv_get(b"lock")[1]  # noqa: E731
        await until(lambda: lock_session() is not None and lock_session().session is None,
                    "the lock to be released", timeout=10)
        _, info = await db.session_info(sid)
        assert info is None
        _, lock = await db.get("lock")
        assert lock is not None and lock.value == b"me" and lock.session is None

    scenario(tmp_path, body)


def test_two_datacenters_answer_each_other(tmp_path: Path) -> None:
    async def body(cluster: Cluster) -> None:
        (dc1,) = await cluster.found(1)
        (dc2,) = await cluster.found(1, datacenter="dc2",
                                     join_wan={"dc1": ["127.0.0.1:1", dc1.address]})
        # dc1 learns dc2's address after the fact (ports are ephemeral).
        dc1.config.join_wan = {"dc2": [dc2.address]}
        via_dc1 = await cluster.client(dc1)
        assert await via_dc1.put("where", b"dc2", dc="dc2")
        assert dc2.state.kv_get(b"where")[1] is not None
        assert dc1.state.kv_get(b"where")[1] is None
        _, entry = await via_dc1.get("where", dc="dc2")
        assert entry is not None and entry.value == b"dc2"
        assert await via_dc1.leader(dc="dc2") == dc2.address
        via_dc2 = await cluster.client(dc2)
        # dc2 knows a dead dc1 address first: the next one answers.
        await exercise_every_endpoint(via_dc2, dc="dc1")
        with pytest.raises(RPCError, match="No path to datacenter 'dc9'"):
            await via_dc2.get("x", dc="dc9")

    scenario(tmp_path, body)


def test_no_leader_waits_the_hold_time_then_fails(tmp_path: Path) -> None:
    async def body(cluster: Cluster) -> None:
        servers = await cluster.found(3, rpc_hold_timeout=0.5)
        leader = cluster.leader()
        survivor = next(s for s in servers if s is not leader)
        for server in servers:
            if server is not survivor:
                await server.close()
        db = await cluster.client(survivor)
        await until(lambda: not survivor.leader_address(), "the survivor to lose its leader")
        started = time.monotonic()
        with pytest.raises(RPCError, match="No cluster leader"):
            await db.put("k", b"v")
        assert time.monotonic() - started >= 0.5
        # A stale read still answers from the survivor's own state.
        reply = await db.call("KVS.Get", {"Key": b"k", "AllowStale": True})
        assert reply["KnownLeader"] is False and reply["Entries"] is None

    scenario(tmp_path, body)


def test_a_founder_whose_node_has_no_membership_yet_answers_as_still_forming(
        tmp_path: Path) -> None:
    """Regression: a founder of a bootstrap_expect cluster whose node had started but not yet
    applied its first membership answered Internal.Join with ``Cluster: True`` and no
    servers; the server that asked then joined "the cluster of []", knew no peer's address,
    and never heard of a leader (seen in tests/test_embedded_cluster.py)."""
    from types import SimpleNamespace

    from pykvs.raft.types import Configuration
    from pykvs.server.formation import Formation

    config = ServerConfig(data_dir=str(tmp_path), node_name="n2", bootstrap_expect=3,
                          join=["127.0.0.1:1"])
    node = SimpleNamespace(configuration=lambda: Configuration(), cluster_id="")
    server = SimpleNamespace(config=config, node=node, address="127.0.0.1:2")
    formation = Formation(server)  # type: ignore[arg-type]
    reply = asyncio.run(formation.internal_join(
        {"ID": "n3", "Address": "127.0.0.1:1", "Datacenter": "dc1", "BootstrapExpect": 3}))
    assert reply["Cluster"] is False and reply["Servers"]["n2"] == "127.0.0.1:2"
