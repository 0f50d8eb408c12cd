"""``pykvs tls ca create`` and ``pykvs tls cert create``: a CA and the certificates of servers,
clients and CLIs, as ``consul tls`` makes them (the ``cryptography`` package; ECDSA P-256 keys).

A server certificate names ``server.<dc>.<domain>`` (with ``-node N`` also
``N.server.<dc>.<domain>``), the name a server with ``--verify-server-hostname`` requires of
its peers; a client certificate names ``client.<dc>.<domain>``, a CLI one
``cli.<dc>.<domain>``. Every certificate also names ``localhost`` and ``127.0.0.1``, as
Consul's do. Files are written in the current directory under Consul's names
(``consul-agent-ca.pem``, ``dc1-server-consul-0.pem``, ...), never over an existing file.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
from pathlib import Path
from typing import Any, TextIO

from pykvs.cli.command import CommandError, command, group, positional
from pykvs.cli.flags import flag

KINDS = ("server", "client", "cli")
SERVER_WARNING = (
    "==> WARNING: Server Certificates grants authority to become a\n"
    "    server and access all state in the cluster including root keys\n"
    "    and all ACL tokens. Do not distribute them to production hosts\n"
    "    that are not server nodes. Store them as securely as CA keys.")


def _crypto() -> Any:
    """The ``cryptography`` modules this command needs, or a clear error without them."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise CommandError("pykvs tls needs the cryptography package: "
                           "pip install 'pykvs[tls]'") from None
    return argparse.Namespace(x509=x509, hashes=hashes, serialization=serialization, ec=ec,
                              EKU=ExtendedKeyUsageOID, NameOID=NameOID)


def _days(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 36500:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: days must be 1..36500")
    return int(text)


def _save(path: Path, data: bytes, out: TextIO, *, private: bool = False) -> None:
    """Write a new file (never over an existing one); a private key is readable by its owner
    only."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(path, flags, 0o600 if private else 0o644)
    except FileExistsError:
        raise CommandError(f"==> {path} already exists: remove it or choose another "
                           f"directory") from None
    except OSError as exc:
        raise CommandError(f"==> cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    print(f"==> Saved {path}", file=out)


def _key_pem(c: Any, key: Any) -> bytes:
    return bytes(key.private_bytes(c.serialization.Encoding.PEM,
                                   c.serialization.PrivateFormat.PKCS8,
                                   c.serialization.NoEncryption()))


def _validity(c: Any, days: int) -> Any:
    now = datetime.datetime.now(datetime.UTC)
    return (c.x509.CertificateBuilder().serial_number(c.x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=days)))


def ca_create(ns: argparse.Namespace, out: TextIO) -> int:
    positional(ns, 0)
    c = _crypto()
    cert_path, key_path = Path(f"{ns.domain}-agent-ca.pem"), Path(f"{ns.domain}-agent-ca-key.pem")
    for path in (cert_path, key_path):
        if path.exists():
            raise CommandError(f"==> CA file {path} already exists")
    key = c.ec.generate_private_key(c.ec.SECP256R1())
    name = c.x509.Name([c.x509.NameAttribute(c.NameOID.COMMON_NAME, ns.common_name)])
    cert = (_validity(c, ns.days).subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .add_extension(c.x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(c.x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(c.x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, c.hashes.SHA256()))
    _save(cert_path, cert.public_bytes(c.serialization.Encoding.PEM), out)
    _save(key_path, _key_pem(c, key), out, private=True)
    return 0


def _load_ca(c: Any, ns: argparse.Namespace) -> tuple[Any, Any, Path, Path]:
    cert_path = Path(ns.ca or f"{ns.domain}-agent-ca.pem")
    key_path = Path(ns.key or f"{ns.domain}-agent-ca-key.pem")
    try:
        cert = c.x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = c.serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise CommandError(f"==> CA file {exc.filename} not found: create one with "
                           f"'pykvs tls ca create' or name it with -ca and -key") from None
    except (ValueError, TypeError) as exc:
        raise CommandError(f"==> {cert_path} / {key_path} is not a PEM CA certificate and "
                           f"unencrypted key: {exc}") from None
    if cert.public_key().public_numbers() != key.public_key().public_numbers():
        raise CommandError(f"==> {key_path} is not the key of {cert_path}")
    return cert, key, cert_path, key_path


def _names(ns: argparse.Namespace, kind: str) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) of a ``kind`` certificate."""
    dns = [f"{kind}.{ns.dc}.{ns.domain}"]
    if kind == "server" and ns.node:
        dns.append(f"{ns.node}.server.{ns.dc}.{ns.domain}")
    dns += ["localhost", *ns.additional_dnsname]
    ips = ["127.0.0.1", *ns.additional_ipaddress]
    for ip in ips:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise CommandError(f"==> {ip!r} is not an IP address (-additional-ipaddress)") \
                from None
    return list(dict.fromkeys(dns)), list(dict.fromkeys(ips))


def _kind(ns: argparse.Namespace) -> str:
    chosen = [kind for kind in KINDS if getattr(ns, kind)]
    if len(chosen) != 1:
        raise CommandError("==> Please provide exactly one of -server, -client or -cli")
    if ns.node and chosen[0] != "server":
        raise CommandError("==> -node requires -server")
    return chosen[0]


def _free_names(ns: argparse.Namespace, kind: str) -> tuple[Path, Path]:
    """The first ``<dc>-<kind>-<domain>-N.pem`` (and its key) not taken yet."""
    for number in range(10_000):
        stem = f"{ns.dc}-{kind}-{ns.domain}-{number}"
        cert, key = Path(f"{stem}.pem"), Path(f"{stem}-key.pem")
        if not cert.exists() and not key.exists():
            return cert, key
    raise CommandError(f"==> 10,000 {ns.dc}-{kind}-{ns.domain}-N certificates exist already")


def cert_create(ns: argparse.Namespace, out: TextIO) -> int:
    positional(ns, 0)
    kind = _kind(ns)
    c = _crypto()
    ca_cert, ca_key, ca_path, ca_key_path = _load_ca(c, ns)
    dns, ips = _names(ns, kind)
    if kind == "server":
        print(SERVER_WARNING, file=out)
    print(f"==> Using {ca_path} and {ca_key_path}", file=out)
    key = c.ec.generate_private_key(c.ec.SECP256R1())
    usages = [c.EKU.CLIENT_AUTH] if kind == "cli" else [c.EKU.SERVER_AUTH, c.EKU.CLIENT_AUTH]
    sans = [c.x509.DNSName(n) for n in dns] + [
        c.x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (_validity(c, ns.days)
            .subject_name(c.x509.Name([c.x509.NameAttribute(c.NameOID.COMMON_NAME, dns[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .add_extension(c.x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(c.x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(c.x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(c.x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, c.hashes.SHA256()))
    cert_path, key_path = _free_names(ns, kind)
    _save(cert_path, cert.public_bytes(c.serialization.Encoding.PEM), out)
    _save(key_path, _key_pem(c, key), out, private=True)
    return 0


def _ca_flags(p: argparse.ArgumentParser) -> None:
    flag(p, "days", type=_days, default=1825, help="days the CA is valid (default 1825)")
    flag(p, "domain", default="consul", help="the cluster's DNS domain (default consul)")
    flag(p, "common-name", default="pykvs Agent CA", help="the CA's Common Name")


def _cert_flags(p: argparse.ArgumentParser) -> None:
    for kind in KINDS:
        flag(p, kind, action="store_true", help=f"a {kind} certificate")
    flag(p, "dc", default="dc1", help="the datacenter (default dc1)")
    flag(p, "domain", default="consul", help="the cluster's DNS domain (default consul)")
    flag(p, "node", default="", help="a server's node name, also named in its certificate")
    flag(p, "ca", default="", help="the CA certificate (default <domain>-agent-ca.pem)")
    flag(p, "key", default="", help="the CA key (default <domain>-agent-ca-key.pem)")
    flag(p, "days", type=_days, default=365, help="days the certificate is valid (default 365)")
    flag(p, "additional-dnsname", action="append", default=[], metavar="NAME",
         help="another DNS name (repeatable)")
    flag(p, "additional-ipaddress", action="append", default=[], metavar="IP",
         help="another IP address (repeatable)")


def register(subparsers: Any) -> None:
    """Add ``tls`` (``tls ca create``, ``tls cert create``) to the ``pykvs`` command."""
    tls_sub = group(subparsers, "tls", "pykvs tls ca|cert create", go_flags=False)
    ca_sub = group(tls_sub, "ca", "create a CA")
    command(ca_sub, "create", ca_create, "Create a certificate authority for the cluster",
            _ca_flags, http=False)
    cert_sub = group(tls_sub, "cert", "create a certificate")
    command(cert_sub, "create", cert_create, "Create a server, client or CLI certificate "
            "signed by the CA", _cert_flags, http=False)
