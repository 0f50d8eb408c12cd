"""Issue 15, server identity with TLS (Consul's ``verify_server_hostname``), from the attacker's
side: real servers on 127.0.0.1 (ephemeral ports) with certificates made by ``pykvs tls``.

A client certificate of the same CA (``client.dc1.consul``) and a server certificate of another
datacenter (``server.dc2.consul``) pass mutual TLS, but neither may speak Raft or call
``Internal.*``: refused, nothing committed, the same leader in the same term. The client
certificate still uses the KV, Txn, Session and Status RPCs. Servers dial each other checking
the name ``server.dc1.consul``. No fixed sleeps: every wait is on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from test_hostile_raft import ROGUE_JOIN, cluster_of, forged, formed, frame, picture, settled
from test_server_cluster import Cluster, exercise_every_endpoint, run, until

import pykvs
from pykvs.raft.messages import Message
from pykvs.server.rpc import ConnectionPool, RPCError
from pykvs.server.server import Server
from pykvs.server.tls import TLSConfig, client_context


class Certs:
    """A CA and certificates made by ``python -m pykvs.cli tls`` in ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tls("ca", "create")
        self._tls("cert", "create", "-server", "-dc", "dc1")
        self._tls("cert", "create", "-server", "-dc", "dc2")
        self._tls("cert", "create", "-client")
        self.ca = str(root / "consul-agent-ca.pem")

    def _tls(self, *args: str) -> None:
        made = subprocess.run([sys.executable, "-m", "pykvs.cli", "tls", *args], cwd=self.root,
                              capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr

    def pair(self, name: str) -> tuple[str, str]:
        return str(self.root / f"{name}.pem"), str(self.root / f"{name}-key.pem")

    def server_tls(self, dc: str = "dc1") -> TLSConfig:
        cert, key = self.pair(f"{dc}-server-consul-0")
        return TLSConfig(cert_file=cert, key_file=key, ca_file=self.ca, verify_incoming=True,
                         verify_outgoing=True, verify_server_hostname=True)

    def client(self, name: str = "dc1-client-consul-0") -> ssl.SSLContext:
        """A context presenting ``name``'s certificate, checking the server's chain."""
        return client_context(self.ca, *self.pair(name))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("certs"))


async def raw_raft(address: str, context: ssl.SSLContext, cluster_id: str,
                   messages: list[Message]) -> bool:
    """Speak the Raft hello and ``messages`` over TLS; whether the server closed on us."""
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
    try:
        writer.write(frame(["pykvs-raft", 2, "rogue", "control", cluster_id]))
        for message in messages:
            writer.write(frame(message.to_wire()))
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.read(1), 10) == b""
        except TimeoutError:  # (an OSError, so first) still open
            return False
        except (ConnectionError, OSError):
            return True
    finally:
        writer.close()


async def tls_client(cluster: Cluster, server: Server, context: ssl.SSLContext) -> Any:
    client = await pykvs.connect_async(server.address, tls=context)
    cluster.clients.append(client)
    return client


async def unchanged(cluster: Cluster, servers: list[Server], before: tuple[Any, ...],
                    client: Any) -> None:
    """Nothing committed, the same leader and term, and the cluster still takes writes."""
    assert picture(servers) == before
    assert all(s.state.kv_get(b"owned")[1] is None for s in servers)
    assert await client.put("after-attack", b"fine")
    assert (await client.get("after-attack"))[1].value == b"fine"
    leader = cluster.leader()
    assert (leader.config.node_name, leader.require_node().stats()["term"]) == before[0][:2]


def test_verify_server_hostname_needs_mutual_tls(certs: Certs, tmp_path: Path) -> None:
    cert, key = certs.pair("dc1-server-consul-0")
    with pytest.raises(ValueError, match="verify_server_hostname needs verify_incoming"):
        TLSConfig(cert_file=cert, key_file=key, ca_file=certs.ca, verify_outgoing=True,
                  verify_server_hostname=True)
    assert certs.server_tls().server_name("dc2") == "server.dc2.consul"
    refused = subprocess.run(
        [sys.executable, "-m", "pykvs.cli", "agent", "--data-dir", str(tmp_path / "a"),
         "--tls-cert", cert, "--tls-key", key, "--verify-outgoing", "--verify-server-hostname"],
        capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert ("--verify-server-hostname needs --verify-incoming, --tls-ca"
            in refused.stderr), refused.stderr


@pytest.mark.parametrize("n", [1, 3])
def test_a_client_certificate_gets_the_api_but_never_raft_nor_internal(
        certs: Certs, tmp_path: Path, n: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)

    async def scenario() -> None:
        async with cluster_of(tmp_path) as cluster:
            servers = await formed(n, cluster, tls=certs.server_tls())
            cluster_id = servers[0].require_node().cluster_id
            before = picture(servers)
            for target in servers:
                assert await raw_raft(target.address, certs.client(), cluster_id,
                                      forged(target, "rogue"))
            assert any("not server.dc1.consul" in r.getMessage() and "client.dc1.consul"
                       in r.getMessage() for r in caplog.records)
            for target in servers:
                client = await tls_client(cluster, target, certs.client())
                with pytest.raises(RPCError, match=re.escape(
                        "Internal.Join: Permission denied: only a server whose certificate "
                        "names server.dc1.consul")):
                    await client.call("Internal.Join", ROGUE_JOIN)
            assert all(set(s.require_node().configuration().all_servers()) ==
                       {t.config.node_name for t in servers} for s in servers)
            client = await tls_client(cluster, servers[-1], certs.client())
            await unchanged(cluster, servers, before, client)
            # The same certificate does everything a client does (KVS, Txn, Session, Status).
            await exercise_every_endpoint(client)

    run(scenario(), 120)


@pytest.mark.parametrize("n", [1, 3])
def test_a_server_of_another_datacenter_cannot_speak_raft_nor_join(
        certs: Certs, tmp_path: Path, n: int) -> None:
    async def scenario() -> None:
        async with cluster_of(tmp_path) as cluster:
            servers = await formed(n, cluster, tls=certs.server_tls())
            cluster_id = servers[0].require_node().cluster_id
            before = picture(servers)
            dc2 = certs.client("dc2-server-consul-0")
            for target in servers:
                assert await raw_raft(target.address, dc2, cluster_id, forged(target, "rogue"))
                client = await tls_client(cluster, target, dc2)
                with pytest.raises(RPCError, match="Permission denied"):
                    await client.call("Internal.Join", ROGUE_JOIN)
            # A server started in dc1 with dc2's certificate: its joins are refused.
            stranger = await cluster.start("s9", join=[servers[0].address],
                                           tls=certs.server_tls("dc2"), election_tick=25)
            await until(lambda: stranger.formation.rounds >= 3, "three join attempts")
            assert stranger.node is None
            assert "s9" not in servers[0].require_node().configuration().all_servers()
            client = await tls_client(cluster, servers[0], certs.client())
            await unchanged(cluster, servers, before, client)

    run(scenario(), 120)


def test_servers_dial_each_other_checking_the_server_name(certs: Certs, tmp_path: Path) -> None:
    """The outgoing side: a pool made for dc1 refuses a server presenting server.dc2.consul
    (whatever address it dialled), and accepts server.dc1.consul."""

    async def scenario() -> None:
        async with cluster_of(tmp_path) as cluster:
            dc1 = await cluster.start("s1", tls=certs.server_tls())
            impostor = await cluster.start("x1", tls=certs.server_tls("dc2"))
            await dc1.wait_leader(15)
            await impostor.wait_leader(15)
            pool = ConnectionPool(ssl=certs.server_tls().client_context("dc1"))
            try:
                host, port = dc1.address.rsplit(":", 1)
                await pool.call((host, int(port)), "Status.Ping", {}, timeout=10)
                host, port = impostor.address.rsplit(":", 1)
                with pytest.raises(ssl.SSLCertVerificationError, match=r"server\.dc1\.consul"):
                    await pool.call((host, int(port)), "Status.Ping", {}, timeout=10)
            finally:
                await pool.close()

    run(scenario(), 120)


def test_three_servers_with_server_certificates_form_serve_and_elect_after_a_leader_kill(
        certs: Certs, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with cluster_of(tmp_path) as cluster:
            servers = await formed(3, cluster, tls=certs.server_tls())
            leader = cluster.leader()
            survivors = [s for s in servers if s is not leader]
            client = await tls_client(cluster, survivors[0], certs.client())
            assert await client.put("before", b"1")
            await leader.close()
            del cluster.servers[leader.config.node_name]

            def new_leader() -> bool:
                leaders = [s for s in survivors if s.require_node().is_leader()]
                return len(leaders) == 1
            await until(new_leader, "a new leader among the survivors", timeout=30)
            assert await client.put("after", b"2")
            assert (await client.get("before"))[1].value == b"1"
            await settled(survivors)

    run(scenario(), 120)


def test_forwarding_across_datacenters_checks_that_datacenters_name(
        certs: Certs, tmp_path: Path) -> None:
    """WAN: dc1 forwards to a server presenting server.dc2.consul, and dc2's forwarded RPCs
    (a dc2 server certificate on dc1's port) get the API; a server of dc1 named as dc2's is
    refused at the handshake."""

    async def scenario() -> None:
        async with cluster_of(tmp_path) as cluster:
            (dc1,) = await cluster.found(1, tls=certs.server_tls())
            (dc2,) = await cluster.found(1, datacenter="dc2", tls=certs.server_tls("dc2"),
                                         join_wan={"dc1": [dc1.address]})
            dc1.config.join_wan = {"dc2": [dc2.address]}
            via_dc1 = await tls_client(cluster, dc1, certs.client())
            assert await via_dc1.put("where", b"dc2", dc="dc2")
            assert dc2.state.kv_get(b"where")[1] is not None
            via_dc2 = await tls_client(cluster, dc2, certs.client())
            await exercise_every_endpoint(via_dc2, dc="dc1")
            # dc1 is told that a server of its own datacenter is dc2's: the name is wrong.
            (other,) = await cluster.found(1, datacenter="dc3", tls=certs.server_tls())
            dc1.config.join_wan = {"dc2": [other.address]}
            with pytest.raises(RPCError, match=r"No path to datacenter 'dc2'.*server\.dc2"):
                await via_dc1.get("where", dc="dc2")

    run(scenario(), 120)


def test_the_agent_with_verify_server_hostname_serves_clients_and_refuses_them_internal(
        certs: Certs, tmp_path: Path) -> None:
    """``pykvs agent --verify-server-hostname --domain consul``, as a user runs it."""
    cert, key = certs.pair("dc1-server-consul-0")
    args = [sys.executable, "-m", "pykvs.cli", "agent", "--node", "a1", "--data-dir",
            str(tmp_path / "a1"), "--rpc-port", "0", "--http-port", "0", "--tls-cert", cert,
            "--tls-key", key, "--tls-ca", certs.ca, "--verify-incoming", "--verify-outgoing",
            "--verify-server-hostname", "--domain", "consul"]
    with open(tmp_path / "agent.log", "wb") as log:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log)
    try:
        stdout = proc.stdout
        assert stdout is not None
        lines: list[bytes] = []  # the start-up line (b"" if the agent died), within 30 s
        reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(30)
        assert lines and lines[0], (tmp_path / "agent.log").read_text()
        fields = dict(part.split("=", 1) for part in lines[0].decode().split())

        async def scenario() -> None:
            kv = await pykvs.connect_async(fields["rpc"], tls=certs.client())
            try:
                async def leads() -> bool:
                    try:
                        return bool(await kv.leader())
                    except (RPCError, OSError):
                        return False
                deadline = asyncio.get_running_loop().time() + 30
                while not await leads():
                    assert asyncio.get_running_loop().time() < deadline, "no leader"
                    await asyncio.sleep(0.05)
                assert await kv.put("k", b"v")
                with pytest.raises(RPCError, match="Permission denied"):
                    await kv.call("Internal.Join", ROGUE_JOIN)
            finally:
                await kv.close()

        run(scenario(), 60)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
        proc.kill()  # nothing once it has exited
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
