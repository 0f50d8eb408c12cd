"""TLS on the server port (RPC and Raft, mutual when verify_incoming), between servers
(verify_outgoing) and for HTTPS. Each test makes its own CAs and certificates (EC keys, IP SAN
127.0.0.1) with the ``cryptography`` package; everything listens on 127.0.0.1, ephemeral ports."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pykvs import http
from pykvs.netaddr import split_address
from pykvs.server.client import AsyncKV, LocalCaller, connect_async
from pykvs.server.rpc import ConnectionLost
from pykvs.server.server import Server, ServerConfig
from pykvs.server.tls import TLSConfig, client_context


class CA:
    """A certificate authority of its own, issuing leaf certificates for 127.0.0.1."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"pykvs test CA {name}")])
        self.cert = (
            self._builder(subject, subject, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.ca_file = str(self._write(f"{name}-ca.pem", self.cert.public_bytes(
            serialization.Encoding.PEM)))

    @staticmethod
    def _builder(subject: x509.Name, issuer: x509.Name, public_key: Any
                 ) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1)))

    def _write(self, name: str, data: bytes) -> Path:
        path = self.root / name
        path.write_bytes(data)
        return path

    def issue(self, name: str) -> tuple[str, str]:
        """(cert_file, key_file) for ``name``, valid for 127.0.0.1, as server and client."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            self._builder(subject, self.cert.subject, key.public_key())
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        cert_file = self._write(f"{self.name}-{name}.pem", cert.public_bytes(
            serialization.Encoding.PEM))
        key_file = self._write(f"{self.name}-{name}-key.pem", key_pem)
        return str(cert_file), str(key_file)

    def tls(self, name: str, *, verify: bool = True) -> TLSConfig:
        cert, key = self.issue(name)
        return TLSConfig(cert_file=cert, key_file=key, ca_file=self.ca_file,
                         verify_incoming=verify, verify_outgoing=verify)

    def client(self, name: str = "client", *, with_cert: bool = True) -> ssl.SSLContext:
        if not with_cert:
            return client_context(self.ca_file)
        cert, key = self.issue(name)
        return client_context(self.ca_file, cert, key)


def run(coro: Awaitable[Any], limit: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(coro, limit))  # type: ignore[arg-type]


def server_config(root: Path, name: str, tls: TLSConfig, **options: Any) -> ServerConfig:
    return ServerConfig(data_dir=str(root / name), node_name=name, port=0, tls=tls,
                        tick_interval=0.02, rpc_hold_timeout=3.0, join_retry_interval=0.1,
                        **options)


@asynccontextmanager
async def started(*configs: ServerConfig) -> AsyncIterator[list[Server]]:
    servers = [Server(c) for c in configs]
    try:
        for server in servers:
            await server.start()
        yield servers
    finally:
        for server in servers:
            await server.close()


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- config
def test_tls_config_refuses_incomplete_settings(tmp_path: Path) -> None:
    ca = CA(tmp_path, "a")
    cert, key = ca.issue("s1")
    with pytest.raises(ValueError, match="cert_file and key_file must be given together"):
        TLSConfig(cert_file=cert)
    with pytest.raises(ValueError, match="need ca_file"):
        TLSConfig(cert_file=cert, key_file=key, verify_incoming=True)
    with pytest.raises(ValueError, match="verify_incoming needs cert_file"):
        TLSConfig(ca_file=ca.ca_file, verify_incoming=True)
    with pytest.raises(ValueError, match="ca_file '/nonexistent' is not a readable file"):
        TLSConfig(ca_file="/nonexistent", verify_outgoing=True)
    plain = TLSConfig()
    assert plain.server_context() is None and plain.client_context() is None
    context = TLSConfig(cert_file=cert, key_file=key, ca_file=ca.ca_file,
                        verify_incoming=True).server_context()
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED


# ------------------------------------------------------------------------------ RPC
def test_rpc_over_mutual_tls_accepts_only_clients_the_ca_signed(tmp_path: Path) -> None:
    ca, other = CA(tmp_path, "a"), CA(tmp_path, "b")

    async def scenario() -> None:
        async with started(server_config(tmp_path, "s1", ca.tls("s1"))) as [server]:
            await server.wait_leader(10)
            good = await connect_async(server.address, timeout=10, tls=ca.client())
            try:
                await good.put("k", b"over tls")
                _, entry = await good.get("k")
                assert entry is not None and entry.value == b"over tls"
            finally:
                await good.close()
            refused: list[tuple[str, Any]] = [
                ("plaintext", None),
                ("no client certificate", ca.client(with_cert=False)),
                ("a certificate of another CA", other.client()),
            ]
            for what, context in refused:
                kv = await connect_async(server.address, timeout=10, tls=context)
                try:
                    with pytest.raises((ConnectionLost, ssl.SSLError, OSError)):
                        await kv.put("k", b"should not land")
                finally:
                    await kv.close()
                _, entry = await AsyncKV(LocalCaller(server, owned=False)).get("k")
                assert entry is not None and entry.value == b"over tls", what
            # A client that checks the server against another CA refuses the server.
            wary = await connect_async(server.address, timeout=10,
                                       tls=client_context(other.ca_file, *ca.issue("c2")))
            try:
                with pytest.raises(ssl.SSLCertVerificationError):
                    await wary.leader()
            finally:
                await wary.close()

    run(scenario())


def test_cluster_over_tls_and_a_server_of_another_ca_cannot_join(tmp_path: Path) -> None:
    ca, other = CA(tmp_path, "a"), CA(tmp_path, "b")

    async def scenario() -> None:
        async with started(server_config(tmp_path, "s1", ca.tls("s1"))) as [s1]:
            await s1.wait_leader(10)
            s2_config = server_config(tmp_path, "s2", ca.tls("s2"), join=[s1.address])
            intruder = server_config(tmp_path, "s3", other.tls("s3"), join=[s1.address])
            async with started(s2_config, intruder) as [s2, s3]:
                members = lambda: s1.require_node().configuration().all_servers()  # noqa: E731

                async def s2_joined() -> bool:
                    return "s2" in members() and s2.node is not None
                await until(s2_joined, "s2 to join over TLS")
                # Raft over TLS carries writes to the new member.
                await AsyncKV(LocalCaller(s1, owned=False)).put("replicated", b"yes")

                async def s2_has_it() -> bool:
                    _, entry = await AsyncKV(LocalCaller(s2, owned=False)).get(
                        "replicated", consistency="stale")
                    return entry is not None and entry.value == b"yes"
                await until(s2_has_it, "the write to reach s2")
                # The intruder's own join call fails at the handshake, and its retries leave
                # the membership as it was.
                with pytest.raises((ConnectionLost, ssl.SSLError, OSError)):
                    await s3.pool.call(split_address(s1.address), "Internal.Join",
                                       {"ID": "s3", "Address": s3.address,
                                        "Datacenter": "dc1", "Add": True}, timeout=5)
                assert set(members()) == {"s1", "s2"}
                assert s3.node is None and s3.leader_address() == ""

    run(scenario())


# ---------------------------------------------------------------------------- HTTPS
def test_https_beside_http_with_client_certificates(tmp_path: Path) -> None:
    ca = CA(tmp_path, "a")

    async def scenario() -> None:
        async with started(server_config(tmp_path, "s1", ca.tls("s1"))) as [server]:
            await server.wait_leader(10)
            api = await http.start(server, "127.0.0.1", 0, https_port=0,
                                   ssl_context=server.tls_server)
            try:
                assert api.https_address and api.https_address != api.address
                async with aiohttp.ClientSession() as session:
                    url = f"https://{api.https_address}/v1/kv/web"
                    async with session.put(url, data=b"secure", ssl=ca.client()) as resp:
                        assert resp.status == 200, await resp.text()
                    async with session.get(url + "?raw", ssl=ca.client()) as resp:
                        assert resp.status == 200 and await resp.read() == b"secure"
                    with pytest.raises(aiohttp.ClientError):
                        async with session.get(url, ssl=ca.client(with_cert=False)) as resp:
                            await resp.read()
                    with pytest.raises(aiohttp.ClientError):  # plain HTTP on the HTTPS port
                        async with session.get(f"http://{api.https_address}/v1/kv/web") as r:
                            await r.read()
            finally:
                await api.close()
            with pytest.raises(ValueError, match="https_port needs an ssl_context"):
                await http.start(server, "127.0.0.1", 0, https_port=0)

    run(scenario())


# ---------------------------------------------------------------------------- agent
def test_agent_flags_serve_rpc_and_https_over_tls(tmp_path: Path) -> None:
    ca = CA(tmp_path, "a")
    cert, key = ca.issue("agent1")
    args = [sys.executable, "-m", "pykvs.cli", "agent", "--node", "agent1", "--data-dir",
            str(tmp_path / "agent1"), "--rpc-port", "0", "--http-port", "0", "--https-port",
            "0", "--tls-cert", cert, "--tls-key", key, "--tls-ca", ca.ca_file,
            "--verify-incoming", "--verify-outgoing"]
    with open(tmp_path / "agent.log", "wb") as log:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log)
    try:
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()),  # type: ignore[union-attr]
                                  daemon=True)
        reader.start()
        reader.join(30)
        assert line and line[0], f"no start-up line: {(tmp_path / 'agent.log').read_text()}"
        fields = dict(part.split("=", 1) for part in line[0].decode().split())
        assert set(fields) == {"http", "https", "rpc"}

        async def scenario() -> None:
            kv = await connect_async(fields["rpc"], timeout=10, tls=ca.client())
            try:
                await until(lambda: _has_leader(kv), "the agent's leader")
                await kv.put("from-rpc", b"1")
            finally:
                await kv.close()
            async with aiohttp.ClientSession() as session:
                url = f"https://{fields['https']}/v1/kv/from-rpc?raw"
                async with session.get(url, ssl=ca.client()) as resp:
                    assert resp.status == 200 and await resp.read() == b"1"

        run(scenario())
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
    bad = subprocess.run([*args[:6], "--https-port", "0"], capture_output=True, timeout=60)
    assert bad.returncode == 2 and b"--https-port needs --tls-cert" in bad.stderr


async def _has_leader(kv: AsyncKV) -> bool:
    try:
        return bool(await kv.leader())
    except Exception:
        return False
