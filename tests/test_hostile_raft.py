"""Issue 15, items 1 and 2, from the attacker's side: raw sockets speaking the Raft hello and
frames (msgpack, as pykvs.raft.transport) against real servers on 127.0.0.1 (ephemeral ports),
1 and 3 servers, and a rogue Raft node that speaks the protocol correctly but is no member.

Each attack asserts: refused, nothing committed (last index and state unchanged), the same
leader in the same term, and the cluster still serving. No fixed sleeps: every wait is on a
condition with a deadline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
from test_server_cluster import FAST, Cluster, run, until

import pykvs
from pykvs import fsm, http
from pykvs.fsm import FSM
from pykvs.raft import auth
from pykvs.raft.core import encode_configuration
from pykvs.raft.messages import Message, MessageKind
from pykvs.raft.node import NodeConfig, RaftNode
from pykvs.raft.storage import LMDBStorage
from pykvs.raft.transport import read_frame
from pykvs.raft.types import Configuration, Entry, EntryType, HardState
from pykvs.server.rpc import RPCError
from pykvs.server.server import Server

K = MessageKind
ACL_ON = {"acl_enabled": True, "acl_default_policy": "deny"}
ROGUE_JOIN = {"ID": "rogue", "Address": "127.0.0.1:1", "Datacenter": "dc1", "Add": True}


# ------------------------------------------------------------------------ the attacker's tools
def frame(obj: Any) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


class RawRaft:
    """A TCP connection to a server's port that speaks the Raft hello and frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, address: str, sender: str, cluster_id: str | None) -> RawRaft:
        host, port = address.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        hello: list[Any] = ["pykvs-raft", 1, sender, "control"]
        if cluster_id is not None:
            hello = ["pykvs-raft", 2, sender, "control", cluster_id]
        writer.write(frame(hello))
        await writer.drain()
        return cls(reader, writer)

    async def send(self, *messages: Message) -> None:
        for message in messages:
            self.writer.write(frame(message.to_wire()))
        await self.writer.drain()

    async def closed_by_server(self, timeout: float = 10.0) -> bool:
        """Whether the server closes the connection (it never writes on a Raft connection)."""
        try:
            return await asyncio.wait_for(self.reader.read(1), timeout) == b""
        except TimeoutError:  # an OSError too: the server kept the connection open
            return False
        except (ConnectionError, OSError):
            return True

    def close(self) -> None:
        self.writer.close()


def forged(server: Server, sender: str, term_boost: int = 100) -> list[Message]:
    """A heartbeat at term+100, then an append carrying a KV set, then votes."""
    node = server.require_node()
    stats = node.stats()
    term, last, dst = stats["term"], stats["last_log_index"], node.id
    high = term + term_boost
    entry = Entry(last + 1, high, EntryType.NORMAL, fsm.kv_command("set", b"owned", b"pwned"))
    return [
        Message(K.HEARTBEAT, high, sender, dst, commit=last + 1),
        Message(K.APPEND, high, sender, dst, index=last, log_term=term, commit=last + 1,
                entries=(entry,)),
        Message(K.PRE_VOTE, high, sender, dst, index=last + 10, log_term=high),
        Message(K.VOTE, high, sender, dst, index=last + 10, log_term=high),
    ]


def picture(servers: list[Server]) -> tuple[Any, ...]:
    """Leader, term and last index of every server: what no attack may change."""
    stats = [s.require_node().stats() for s in servers]
    return tuple((st["leader"], st["term"], st["last_log_index"], st["commit_index"])
                 for st in stats)


async def formed(n: int, cluster: Cluster, **options: Any) -> list[Server]:
    # Elections slower than FAST's: a follower shields the cluster from non-members until it
    # has heard no leader for two election timeouts, and the attacks assert that no election
    # happens at all, which a loaded machine must not fake by stalling the loop for 0.4 s.
    servers = await cluster.found(n, **{"election_tick": 25, **options})
    # Settled: every server holds the cluster id, and all hold the same log.
    await until(lambda: len({s.require_node().cluster_id for s in servers} - {""}) == 1
                and all(s.require_node().cluster_id for s in servers), "the cluster id")
    await settled(servers)
    return servers


async def settled(servers: list[Server]) -> None:
    def same() -> bool:
        stats = [s.require_node().stats() for s in servers]
        return (len({(st["last_log_index"], st["commit_index"], st["applied_index"])
                     for st in stats}) == 1 and all(st["leader"] for st in stats))
    await until(same, "every server holding and applying the same log")


async def still_serving(cluster: Cluster, servers: list[Server], before: tuple[Any, ...]) -> None:
    assert picture(servers) == before
    for server in servers:
        assert server.state.kv_get(b"owned")[1] is None
    client = await cluster.client(servers[-1])
    assert await client.put("after-attack", b"fine")
    assert (await client.get("after-attack"))[1].value == b"fine"
    leader = cluster.leader()
    assert (leader.config.node_name, leader.require_node().stats()["term"]) == (
        before[0][0], before[0][1])


@asynccontextmanager
async def cluster_of(tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = Cluster(tmp_path)
    try:
        yield cluster
    finally:
        await cluster.close()


# --------------------------------------------------------------- 1. Raft from anyone
@pytest.mark.parametrize("n", [1, 3])
def test_raft_from_a_client_without_the_cluster_id_is_refused_at_the_hello(
        tmp_path: Path, n: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pykvs.raft.transport")

    async def scenario() -> None:
        async with cluster_of(tmp_path) as cluster:
            servers = await formed(n, cluster)
            cluster_id = servers[0].require_node().cluster_id
            before = picture(servers)
            member = servers[-1].config.node_name
            attempts = [("attacker", None), ("attacker", "made-up-cluster"),
                        (member, None), (member, "")]
            for target in servers:
                for sender, cid in attempts:
                    if sender == target.config.node_name:
                        continue
                    raw = await RawRaft.open(target.address, sender, cid)
                    await raw.send(*forged(target, sender))
                    assert await raw.closed_by_server(), (sender, cid)
                    raw.close()
                # A hello naming the server itself, even with the right cluster id.
                me = target.config.node_name
                raw = await RawRaft.open(target.address, me, cluster_id)
                await raw.send(*forged(target, me))
                assert await raw.closed_by_server()
                raw.close()
            await still_serving(cluster, servers, before)
            refusals = [r.getMessage() for r in caplog.records if "belongs to cluster" in
                        r.getMessage()]
            assert any("made-up-cluster" in m and cluster_id in m for m in refusals)
            assert any("(none named)" in m and cluster_id in m for m in refusals)

    run(scenario())


@pytest.mark.parametrize("n", [1, 3])
def test_a_non_member_that_knows_the_cluster_id_deposes_no_one_and_commits_nothing(
        tmp_path: Path, n: int) -> None:
    async def scenario() -> None:
        async with cluster_of(tmp_path) as cluster:
            servers = await formed(n, cluster)
            cluster_id = servers[0].require_node().cluster_id
            before = picture(servers)
            for target in servers:
                raw = await RawRaft.open(target.address, "rogue", cluster_id)
                await raw.send(*forged(target, "rogue"))
                core = target.require_node()._core
                assert core is not None
                await until(lambda c=core: c.dropped_from_strangers >= 4,
                            "the rogue's messages to be dropped")
                raw.close()
            await still_serving(cluster, servers, before)

    run(scenario())


@pytest.mark.parametrize("n", [1, 3])
def test_a_rogue_raft_leader_at_a_higher_term_is_ignored(tmp_path: Path, n: int) -> None:
    """A real RaftNode (correct Raft) that leads its own cluster at term+100 with every victim
    as a learner, so it sends them heartbeats and appends; with the stolen cluster id, and
    without it."""

    async def scenario() -> None:
        async with cluster_of(tmp_path) as cluster:
            servers = await formed(n, cluster)
            stolen = servers[0].require_node().cluster_id
            before = picture(servers)
            for cluster_id in (stolen, "another-cluster"):
                storage = LMDBStorage(tmp_path / f"rogue-{cluster_id}")
                storage.log.put_fact("cluster_id", cluster_id)
                founding = Entry(1, 1, EntryType.CONFIG,
                                 encode_configuration(Configuration({"rogue": "127.0.0.1:1"})))
                storage.log.save(HardState(before[0][1] + 100, None, 1), [founding])
                rogue = RaftNode(NodeConfig("rogue", tick_interval=0.02), storage.log,
                                 storage.snapshots, FSM())
                await rogue.start()
                try:
                    await until(rogue.is_leader, "the rogue to lead its own cluster")
                    for s in servers:
                        await rogue.add_learner(s.config.node_name, s.address, timeout=10)
                    await rogue.apply(fsm.kv_command("set", b"owned", b"pwned"), timeout=10)
                    transport = rogue._messenger.transport
                    assert transport is not None

                    def heard_of(t: Any = transport) -> bool:
                        sent = t.stats()["peers"]
                        return all(sent.get(s.config.node_name, {}).get("control", {})
                                   .get("sent", 0) >= 3 for s in servers)
                    await until(heard_of, "the rogue to reach every victim")
                    if cluster_id == stolen:
                        await until(lambda: all(s.require_node()._core.dropped_from_strangers
                                                for s in servers), "its messages dropped")
                    else:
                        await until(lambda: all(
                            s.require_node()._messenger.transport.stats()["inbound"]["foreign"]
                            for s in servers), "its hellos refused")
                finally:
                    await rogue.close()
                    storage.close()
            await still_serving(cluster, servers, before)

    run(scenario())


# --------------------------------------------------------------- 2. Internal.Join
@pytest.mark.parametrize("n", [1, 3])
def test_an_anonymous_internal_join_cannot_add_a_voter_once_acls_are_bootstrapped(
        tmp_path: Path, n: int) -> None:
    async def scenario() -> None:
        async with cluster_of(tmp_path) as cluster:
            servers = await formed(n, cluster, **ACL_ON)
            anon = await cluster.client(servers[0])
            root = await anon.call("ACL.BootstrapTokens", {})
            await settled(servers)
            before = picture(servers)
            members = set(servers[0].require_node().configuration().voters)
            for target in servers:  # followers forward Add to the leader, which refuses it
                caller = await cluster.client(target)
                with pytest.raises(RPCError, match="Permission denied"):
                    await caller.call("Internal.Join", ROGUE_JOIN)
                # Without Add it learns the members (as /v1/status/peers), not the cluster id.
                reply = await caller.call("Internal.Join", {**ROGUE_JOIN, "Add": False})
                assert reply["Cluster"] and "ClusterID" not in reply
            assert all(set(s.require_node().configuration().voters) == members for s in servers)
            await still_serving_acl(cluster, servers, before, root["SecretID"])
            # A server given a token with operator:write joins (and learns the cluster id).
            name = f"s{n + 1}"
            new = await cluster.start(name, join=[servers[-1].address],
                                      acl_agent_token=root["SecretID"], **ACL_ON)
            leader_node = servers[0].require_node()
            await until(lambda: new.node is not None and new.node.cluster_id
                        == leader_node.cluster_id and
                        set(leader_node.configuration().voters) == members | {name},
                        f"{name} to join with its token")

    run(scenario())


async def still_serving_acl(cluster: Cluster, servers: list[Server], before: tuple[Any, ...],
                            token: str) -> None:
    assert picture(servers) == before
    admin = await pykvs.connect_async(servers[-1].address, token=token)
    cluster.clients.append(admin)
    assert await admin.put("after-attack", b"fine")


def test_bootstrap_expect_is_not_founded_by_an_anonymous_call(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with cluster_of(tmp_path) as cluster:
            s1 = await cluster.start("s1", bootstrap_expect=2)
            anon = await pykvs.connect_async(s1.address)
            try:
                with pytest.raises(RPCError, match="not in this server's join list"):
                    await anon.call("Internal.Join", ROGUE_JOIN)
                # Claiming to form a cluster of 2 makes it a candidate, never a founder: it
                # does not answer at its address.
                await anon.call("Internal.Join", {**ROGUE_JOIN, "BootstrapExpect": 2})
            finally:
                await anon.close()
            assert "rogue" in s1.formation.candidates
            rounds = s1.formation.rounds
            await until(lambda: s1.formation.rounds >= rounds + 3, "three calls to the rogue")
            assert s1.node is None and set(s1.formation.known) == {"s1"}
            s2 = await cluster.start("s2", bootstrap_expect=2, join=[s1.address])
            both = [s1, s2]
            await until(lambda: all(s.node is not None and s.leader_address() for s in both),
                        "s1 and s2 to found the cluster")
            for s in both:
                assert set(s.require_node().configuration().all_servers()) == {"s1", "s2"}

    run(scenario())


# --------------------------------------------------------------- /v1/agent/self
def test_agent_self_needs_agent_read_when_acls_are_on(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with cluster_of(tmp_path) as cluster:
            [s1] = await formed(1, cluster, **ACL_ON)
            anon = await cluster.client(s1)
            root = await anon.call("ACL.BootstrapTokens", {})
            api = await http.start(s1, "127.0.0.1", 0)
            try:
                async with aiohttp.ClientSession() as session:
                    url = f"http://{api.address}/v1/agent/self"
                    async with session.get(url) as resp:
                        assert resp.status == 403
                        assert "agent:read" in await resp.text()
                    headers = {"X-Consul-Token": root["SecretID"]}
                    async with session.get(url, headers=headers) as resp:
                        assert resp.status == 200
                        assert (await resp.json())["Stats"]["raft"]["term"]
            finally:
                await api.close()

    run(scenario())


# --------------------------------------------------------------- the cluster id
def test_the_cluster_id_survives_restarts_and_old_data_directories_get_one(
        tmp_path: Path) -> None:
    """Servers of a cluster formed before cluster ids (none in their stores or their log)
    restart with this version: the first leader makes one, and every server adopts it."""

    async def scenario() -> None:
        legacy = {"raft_options": {"make_cluster_id": False}}
        cluster = Cluster(tmp_path)
        try:
            servers = await cluster.found(3, **legacy)
            await settled(servers)
            assert all(s.require_node().cluster_id == "" for s in servers)
            client = await cluster.client(servers[0])
            assert await client.put("before-upgrade", b"1")
        finally:
            await cluster.close()
        cluster = Cluster(tmp_path)
        try:
            servers = [await cluster.start(f"s{k}") for k in (1, 2, 3)]
            await until(lambda: all(s.node is not None and s.node.cluster_id for s in servers),
                        "every server to adopt the new cluster id")
            ids = {s.require_node().cluster_id for s in servers}
            assert len(ids) == 1
            await settled(servers)
            client = await cluster.client(servers[1])
            assert (await client.get("before-upgrade"))[1].value == b"1"
        finally:
            await cluster.close()
        cluster = Cluster(tmp_path)
        try:
            servers = [await cluster.start(f"s{k}") for k in (1, 2, 3)]
            assert {s.require_node().cluster_id for s in servers} == ids  # from the stores
            await until(lambda: cluster_has_leader(servers), "a leader after the restart")
        finally:
            await cluster.close()

    run(scenario(), limit=90)


def test_a_server_down_while_the_cluster_id_was_made_catches_up_and_adopts_it(
        tmp_path: Path) -> None:
    """Its hellos name no id, which the others refuse once they have one: it names the id its
    leader's hello names until its log proves it, so it is heard, catches up, and adopts it."""

    async def scenario() -> None:
        cluster = Cluster(tmp_path)
        try:
            servers = await cluster.found(3, raft_options={"make_cluster_id": False})
            await settled(servers)
        finally:
            await cluster.close()
        cluster = Cluster(tmp_path)
        try:
            s1, s2 = await cluster.start("s1"), await cluster.start("s2")
            await until(lambda: s1.node and s1.node.cluster_id and s2.node and
                        s2.node.cluster_id, "s1 and s2 to make and adopt a cluster id")
            client = await cluster.client(s1)
            for i in range(5):
                assert await client.put(f"while-s3-was-down/{i}", b"v")
            s3 = await cluster.start("s3")
            await until(lambda: s3.node and s3.node.cluster_id == s1.require_node().cluster_id,
                        "s3 to adopt the cluster id")
            await settled([s1, s2, s3])
            assert s3.state.kv_get(b"while-s3-was-down/4")[1] is not None
        finally:
            await cluster.close()

    run(scenario(), limit=90)


def cluster_has_leader(servers: list[Server]) -> bool:
    return all(s.leader_address() for s in servers)


def test_a_server_of_another_cluster_cannot_join_by_raft(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    caplog.set_level(logging.WARNING, logger="pykvs.raft.transport")

    async def scenario() -> None:
        async with cluster_of(tmp_path / "a") as a, cluster_of(tmp_path / "b") as b:
            [a1] = await formed(1, a)
            [b1] = await formed(1, b, **{**FAST})
            ida, idb = a1.require_node().cluster_id, b1.require_node().cluster_id
            assert ida != idb
            raw = await RawRaft.open(a1.address, "s1-of-b", idb)
            assert await raw.closed_by_server()
            raw.close()
            assert any(ida in r.getMessage() and idb in r.getMessage() for r in caplog.records)

    run(scenario())


# --------------------------------------------------------------- --encrypt
def test_keygen_prints_a_key_encrypt_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    from pykvs.cli import main

    assert main(["keygen"]) == 0
    key = capsys.readouterr().out.strip()
    assert len(auth.parse_key(key)) == 32
    for bad in ("not base64!", "c2hvcnQ=", ""):
        with pytest.raises(ValueError, match="encrypt key"):
            auth.parse_key(bad)


@pytest.mark.parametrize("n", [1, 3])
def test_with_encrypt_only_servers_holding_the_key_speak_raft_or_join(
        tmp_path: Path, n: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pykvs.raft.transport")
    key, other = auth.parse_key(auth.new_key()), auth.parse_key(auth.new_key())

    async def scenario() -> None:
        async with cluster_of(tmp_path) as cluster:
            servers = await formed(n, cluster, encrypt_key=key)
            cluster_id = servers[0].require_node().cluster_id
            before = picture(servers)
            for target in servers:
                # The stolen cluster id is not enough: the hello comes before any proof.
                raw = await RawRaft.open(target.address, "rogue", cluster_id)
                await raw.send(*forged(target, "rogue"))
                assert await raw.closed_by_server()
                raw.close()
                # Nor is a proof made with another key.
                reader, writer = await asyncio.open_connection(*split(target.address))
                with pytest.raises(auth.AuthError, match="did not prove"):
                    await auth.prove(lambda size, r=reader: read_frame(r, size), writer, other,
                                     5.0)
                writer.close()
            assert any("without proving the encrypt key" in r.getMessage()
                       for r in caplog.records)
            # Internal.Join without the key's proof: refused, even with ACLs off.
            anon = await cluster.client(servers[0])
            with pytest.raises(RPCError, match="did not prove the encrypt key"):
                await anon.call("Internal.Join", ROGUE_JOIN)
            await still_serving(cluster, servers, before)
            # Servers that hold the key authenticated their Raft links.
            assert all(s.require_node()._messenger.transport.stats()["inbound"]["authenticated"]
                       for s in servers if n > 1)
            # A server with another key cannot join.
            stranger = await cluster.start("s9", join=[servers[0].address], encrypt_key=other)
            first = servers[0].require_node()
            await until(lambda: stranger.formation.rounds >= 3, "three join attempts")
            assert "s9" not in first.configuration().all_servers()

    run(scenario())


def split(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


def test_agent_refuses_a_bad_encrypt_key_before_starting(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pykvs.cli import main

    code = main(["agent", "--data-dir", str(tmp_path / "d"), "--encrypt", "c2hvcnQ="])
    assert code == 2
    assert "encrypt key must be 32 bytes" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
