"""``pykvs tls ca create`` / ``pykvs tls cert create``, as a user types them: the files
Consul's ``tls`` command writes, the names a server certificate carries, refusals in words,
and a cluster member and a client that work with what the commands made."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from pykvs.server.client import connect_async
from pykvs.server.server import Server, ServerConfig
from pykvs.server.tls import TLSConfig, client_context


def tls(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pykvs.cli", "tls", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def names(path: Path) -> tuple[list[str], list[str]]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (sans.get_values_for_type(x509.DNSName),
            [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)])


def test_a_ca_then_server_client_and_cli_certificates(tmp_path: Path) -> None:
    made = tls(tmp_path, "ca", "create")
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines() == ["==> Saved consul-agent-ca.pem",
                                        "==> Saved consul-agent-ca-key.pem"]
    ca = x509.load_pem_x509_certificate((tmp_path / "consul-agent-ca.pem").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (tmp_path / "consul-agent-ca-key.pem").stat().st_mode & 0o077 == 0

    server = tls(tmp_path, "cert", "create", "-server", "-dc", "east", "-node", "n1",
                 "-additional-dnsname", "kv.example", "-additional-ipaddress", "10.0.0.7")
    assert server.returncode == 0, server.stderr
    assert "WARNING: Server Certificates grants authority" in server.stdout
    assert server.stdout.splitlines()[-2:] == ["==> Saved east-server-consul-0.pem",
                                               "==> Saved east-server-consul-0-key.pem"]
    assert names(tmp_path / "east-server-consul-0.pem") == (
        ["server.east.consul", "n1.server.east.consul", "localhost", "kv.example"],
        ["127.0.0.1", "10.0.0.7"])
    leaf = x509.load_pem_x509_certificate((tmp_path / "east-server-consul-0.pem").read_bytes())
    leaf.verify_directly_issued_by(ca)
    usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}

    again = tls(tmp_path, "cert", "create", "-server", "-dc", "east")  # the next number
    assert again.stdout.splitlines()[-1] == "==> Saved east-server-consul-1-key.pem"
    client = tls(tmp_path, "cert", "create", "-client")
    assert client.returncode == 0 and "WARNING" not in client.stdout
    assert names(tmp_path / "dc1-client-consul-0.pem") == (
        ["client.dc1.consul", "localhost"], ["127.0.0.1"])
    cli = tls(tmp_path, "cert", "create", "-cli")
    assert cli.returncode == 0
    cli_cert = x509.load_pem_x509_certificate((tmp_path / "dc1-cli-consul-0.pem").read_bytes())
    assert list(cli_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]


@pytest.mark.parametrize(("setup", "args", "message"), [
    (True, ["ca", "create"], "==> CA file consul-agent-ca.pem already exists"),
    (False, ["cert", "create", "-server"], "==> CA file consul-agent-ca.pem not found"),
    (True, ["cert", "create"], "Please provide exactly one of -server, -client or -cli"),
    (True, ["cert", "create", "-server", "-client"], "exactly one of -server, -client"),
    (True, ["cert", "create", "-client", "-node", "n1"], "-node requires -server"),
    (True, ["cert", "create", "-server", "-additional-ipaddress", "10.0.0.x"],
     "'10.0.0.x' is not an IP address"),
    (True, ["cert", "create", "-server", "-days", "0"], "days must be 1..36500"),
    (True, ["cert", "create", "-server", "-ca", "nowhere.pem"], "CA file nowhere.pem not found"),
])
def test_refusals_say_what_is_wrong_and_write_nothing(
        tmp_path: Path, setup: bool, args: list[str], message: str) -> None:
    if setup:
        assert tls(tmp_path, "ca", "create").returncode == 0
    before = sorted(os.listdir(tmp_path))
    refused = tls(tmp_path, *args)
    assert refused.returncode == 1
    assert message in refused.stderr
    assert sorted(os.listdir(tmp_path)) == before


def test_a_key_that_is_not_the_cas_is_refused(tmp_path: Path) -> None:
    assert tls(tmp_path, "ca", "create").returncode == 0
    other = tmp_path / "other"
    other.mkdir()
    assert tls(other, "ca", "create").returncode == 0
    refused = tls(tmp_path, "cert", "create", "-server", "-key",
                  str(other / "consul-agent-ca-key.pem"))
    assert refused.returncode == 1 and "is not the key of consul-agent-ca.pem" in refused.stderr


def test_what_the_commands_make_runs_a_mutual_tls_server(tmp_path: Path) -> None:
    """A server with the server certificate verifies its clients: the client certificate
    is let in, a client without one is not."""
    for args in (["ca", "create"], ["cert", "create", "-server"], ["cert", "create", "-client"]):
        assert tls(tmp_path, *args).returncode == 0
    ca = str(tmp_path / "consul-agent-ca.pem")
    config = TLSConfig(cert_file=str(tmp_path / "dc1-server-consul-0.pem"),
                       key_file=str(tmp_path / "dc1-server-consul-0-key.pem"), ca_file=ca,
                       verify_incoming=True, verify_outgoing=True)

    async def scenario() -> None:
        server = Server(ServerConfig(data_dir=str(tmp_path / "data"), node_name="s1", port=0,
                                     tls=config, tick_interval=0.02))
        await server.start()
        try:
            await server.wait_leader(10)
            client = await connect_async(server.address, timeout=10, tls=client_context(
                ca, str(tmp_path / "dc1-client-consul-0.pem"),
                str(tmp_path / "dc1-client-consul-0-key.pem")))
            try:
                await client.put("k", b"v")
                _, entry = await client.get("k")
                assert entry is not None and entry.value == b"v"
            finally:
                await client.close()
            anonymous = await connect_async(server.address, timeout=10,
                                            tls=client_context(ca))
            try:
                with pytest.raises(OSError):
                    await anonymous.put("k", b"not from a stranger")
            finally:
                await anonymous.close()
        finally:
            await server.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert ipaddress.ip_address("127.0.0.1") in [ipaddress.ip_address(ip) for ip in
                                                 names(tmp_path / "dc1-server-consul-0.pem")[1]]
