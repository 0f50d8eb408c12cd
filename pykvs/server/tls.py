"""TLS for the server's port (RPC and Raft), its outgoing connections, and HTTPS.

The options are Consul's: ``cert_file``/``key_file`` (this server's certificate and key),
``ca_file`` (the CA that signs every server and client certificate), ``verify_incoming``
(listeners require a client certificate signed by the CA: mutual TLS) and
``verify_outgoing`` (connections this process opens check the peer's certificate against the
CA). As in Consul, ``verify_outgoing`` checks the chain, not the host name: any certificate the
CA signed is accepted. A server whose certificate comes from another CA therefore cannot join
a cluster whose servers verify incoming connections, and cannot reach one when it verifies
outgoing ones.

With a certificate and key set, the server's port speaks TLS only (no plaintext fallback).
Outgoing connections always present the certificate when there is one, so a peer that
verifies incoming connections accepts them.

``verify_server_hostname`` (Consul's) adds server identity: a server's certificate names
``server.<datacenter>.<domain>`` (``pykvs tls cert create -server -dc DC``). Connections a
server opens to its peers then check that name, not only the chain (``client_context(dc)``),
and the server port admits Raft and ``Internal.*`` only from a peer whose client certificate
names it (pykvs.server.identity). It needs verify_incoming, verify_outgoing and ca_file.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Refuse anything older: every peer is pykvs on a current Python.
MIN_TLS_VERSION = ssl.TLSVersion.TLSv1_2


@dataclass(frozen=True)
class TLSConfig:
    """Where the certificates are and what to verify (see the module docstring)."""

    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    verify_incoming: bool = False
    verify_outgoing: bool = False
    verify_server_hostname: bool = False
    domain: str = "consul"

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("tls: cert_file and key_file must be given together "
                             f"(cert_file={self.cert_file!r}, key_file={self.key_file!r})")
        if (self.verify_incoming or self.verify_outgoing) and not self.ca_file:
            raise ValueError("tls: verify_incoming and verify_outgoing need ca_file")
        if self.verify_incoming and not self.cert_file:
            raise ValueError("tls: verify_incoming needs cert_file and key_file (a server "
                             "without a certificate cannot serve TLS)")
        if self.verify_server_hostname and not (
                self.verify_incoming and self.verify_outgoing and self.cert_file):
            raise ValueError("tls: verify_server_hostname needs verify_incoming, "
                             "verify_outgoing, ca_file, cert_file and key_file (servers prove "
                             "their name to each other with their certificates)")
        if not self.domain.strip("."):
            raise ValueError("tls: domain must not be empty")
        for name in ("cert_file", "key_file", "ca_file"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ValueError(f"tls: {name} {path!r} is not a readable file")

    @property
    def serves_tls(self) -> bool:
        """Whether listeners speak TLS (a certificate and key are configured)."""
        return bool(self.cert_file)

    @property
    def dials_tls(self) -> bool:
        """Whether outgoing connections use TLS: when this process serves TLS (its peers
        do too) or checks its peers' certificates."""
        return self.serves_tls or self.verify_outgoing

    def server_context(self) -> ssl.SSLContext | None:
        """The listeners' context; None when they speak plaintext."""
        if not self.serves_tls:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = MIN_TLS_VERSION
        context.load_cert_chain(self.cert_file, self.key_file)
        if self.ca_file:
            context.load_verify_locations(cafile=self.ca_file)
        context.verify_mode = ssl.CERT_REQUIRED if self.verify_incoming else ssl.CERT_NONE
        return context

    def server_name(self, datacenter: str) -> str:
        """The name a server certificate of ``datacenter`` carries: ``server.dc1.consul``."""
        return f"server.{datacenter}.{self.domain}"

    def client_context(self, datacenter: str = "") -> ssl.SSLContext | None:
        """The context for connections this process opens; None for plaintext. With
        verify_server_hostname and a ``datacenter``, the peer's certificate must name
        ``server.<datacenter>.<domain>`` (whatever address was dialled)."""
        if not self.dials_tls:
            return None
        if self.verify_server_hostname and datacenter:
            return _dial_context(self, self.server_name(datacenter))
        return _dial_context(self)


class _NamedServerContext(ssl.SSLContext):
    """A client context that checks one fixed name in every peer's certificate, whatever
    host was dialled (asyncio passes the dialled host as ``server_hostname``)."""

    expected_name = ""

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO,  # type: ignore[override]
                 server_side: bool = False, server_hostname: str | None = None,
                 session: ssl.SSLSession | None = None) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side=server_side,
                                server_hostname=self.expected_name, session=session)

    def wrap_socket(self, sock: Any, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        kwargs["server_hostname"] = self.expected_name
        return super().wrap_socket(sock, *args, **kwargs)


def _dial_context(config: TLSConfig, server_name: str = "") -> ssl.SSLContext:
    if server_name:
        named = _NamedServerContext(ssl.PROTOCOL_TLS_CLIENT)
        named.expected_name = server_name
        context: ssl.SSLContext = named
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = MIN_TLS_VERSION
    # Consul's verify_outgoing checks the chain, not the name; verify_server_hostname the name.
    context.check_hostname = bool(server_name)
    if config.verify_outgoing:
        context.load_verify_locations(cafile=config.ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    if config.cert_file:
        context.load_cert_chain(config.cert_file, config.key_file)
    return context


def client_context(
    ca_file: str = "", cert_file: str = "", key_file: str = "", *, verify: bool = True
) -> ssl.SSLContext:
    """A context for a client of a TLS server (``pykvs.connect(..., tls=...)``): checks the
    server against ``ca_file`` when ``verify``; presents ``cert_file`` when the server
    verifies incoming connections."""
    return _dial_context(TLSConfig(cert_file=cert_file, key_file=key_file, ca_file=ca_file,
                                   verify_outgoing=verify))
