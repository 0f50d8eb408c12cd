"""``pykvs agent``: its flags (GNU-style, ``--node``, ``--data-dir``, ...), checked and turned
into a pykvs.agent.AgentConfig, then the agent run until a signal stops it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pykvs import agent
from pykvs.goformat import NS_PER_SECOND, parse_go_duration
from pykvs.server.limits import Limits
from pykvs.server.tls import TLSConfig


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535, got {port}")
    return port


def _arguments(parser: argparse.ArgumentParser) -> None:
    defaults = agent.AgentConfig()
    parser.add_argument("--node", default=defaults.node,
                        help="node name, also the Raft server id (default: the host name)")
    parser.add_argument("--datacenter", default=defaults.datacenter,
                        help="datacenter name (default: dc1)")
    parser.add_argument("--data-dir", default=defaults.data_dir,
                        help="data directory (default: ./pykvs-data)")
    parser.add_argument("--bind", default=defaults.bind,
                        help="address to listen on and advertise (default: 127.0.0.1)")
    parser.add_argument("--http-port", type=_port, default=defaults.http_port,
                        help="HTTP API port, 0 picks a free one (default: 8500)")
    parser.add_argument("--rpc-port", type=_port, default=defaults.rpc_port,
                        help="RPC and Raft port, 0 picks a free one (default: 8300)")
    parser.add_argument("--bootstrap-expect", type=int, default=0, metavar="N",
                        help="wait until N servers have joined, then elect a leader")
    parser.add_argument("--join", action="append", default=[], metavar="HOST:PORT",
                        help="a server of the cluster to join (repeatable; retried)")
    parser.add_argument("--join-wan", action="append", default=[], metavar="DC=HOST:PORT",
                        help="a server of another datacenter (repeatable)")
    parser.add_argument("--dev", action="store_true",
                        help="one server with a temporary data directory")
    parser.add_argument("--log-level", default="info", choices=agent.LOG_LEVELS,
                        help="log level (default: info)")
    parser.add_argument("--event-loop", default="auto", choices=agent.EVENT_LOOPS,
                        help="asyncio's loop or uvloop's (default: auto, uvloop when "
                             "installed)")
    parser.add_argument("--rpc-hold-timeout", type=float, default=defaults.rpc_hold_timeout,
                        metavar="SECONDS",
                        help="how long a request waits for a leader (default: 7)")
    parser.add_argument("--max-value-size", type=int, default=defaults.max_value_size,
                        metavar="BYTES", help="largest value accepted (default: 524288)")
    parser.add_argument("--acl-enabled", action="store_true",
                        help="enforce ACLs (bootstrap a management token with "
                             "pykvs acl bootstrap)")
    parser.add_argument("--acl-default-policy", choices=("allow", "deny"),
                        default=defaults.acl_default_policy,
                        help="what ACLs decide where no rule matches (default: allow)")
    parser.add_argument("--acl-agent-token", default="", metavar="TOKEN",
                        help="the token this server presents to join a cluster whose ACLs "
                             "are bootstrapped (needs operator:write)")
    parser.add_argument("--encrypt", default="", metavar="KEY",
                        help="servers prove this key (pykvs keygen) to each other before "
                             "any Raft or Internal.Join traffic")
    _security_arguments(parser)


def _security_arguments(parser: argparse.ArgumentParser) -> None:
    """TLS (Consul's flags) and the protective limits (pykvs.server.limits)."""
    tls = parser.add_argument_group("TLS")
    tls.add_argument("--tls-cert", default="", metavar="FILE",
                     help="this server's certificate (PEM): the server port speaks TLS only")
    tls.add_argument("--tls-key", default="", metavar="FILE", help="its private key (PEM)")
    tls.add_argument("--tls-ca", default="", metavar="FILE",
                     help="the CA certificate (PEM) that signs servers and clients")
    tls.add_argument("--verify-incoming", action="store_true",
                     help="require a client certificate signed by the CA (mutual TLS)")
    tls.add_argument("--verify-outgoing", action="store_true",
                     help="check the certificate of every server this one connects to")
    tls.add_argument("--verify-server-hostname", action="store_true",
                     help="servers prove server.<datacenter>.<domain> in their certificates: "
                          "only they may speak Raft and Internal.* (needs --verify-incoming, "
                          "--verify-outgoing, --tls-ca, --tls-cert, --tls-key)")
    tls.add_argument("--domain", default="consul",
                     help="the domain of server certificates' names (default: consul)")
    tls.add_argument("--https-port", type=_port, default=None,
                     help="also serve the HTTP API over HTTPS on this port (0 picks one)")
    limits = parser.add_argument_group("limits")
    defaults = Limits()
    for flag, name, unit, what in [
        ("--http-max-body", "http_max_body", "BYTES", "largest HTTP request body"),
        ("--http-max-conns", "http_max_conns", "N", "open HTTP connections"),
        ("--rpc-max-conns", "rpc_max_conns", "N", "open RPC client connections"),
        ("--rpc-max-frame", "rpc_max_frame", "BYTES", "largest RPC frame"),
        ("--max-blocking-per-client", "max_blocking_per_client", "N",
         "blocking queries waiting at once per client address"),
    ]:
        default = getattr(defaults, name)
        limits.add_argument(flag, dest=name, type=int, default=default, metavar=unit,
                            help=f"{what} (default: {default})")
    limits.add_argument("--rpc-read-timeout", type=_seconds, default=defaults.rpc_read_timeout,
                        metavar="DURATION", help="time for an RPC frame to arrive in full once "
                        f"begun (default: {defaults.rpc_read_timeout:g}s)")
    limits.add_argument("--rpc-idle-timeout", type=_seconds, default=defaults.rpc_idle_timeout,
                        metavar="DURATION", help="close an RPC connection idle this long "
                        f"(default: {defaults.rpc_idle_timeout:g}s)")
    limits.add_argument("--http-header-timeout", type=_seconds,
                        default=defaults.http_header_timeout, metavar="DURATION",
                        help="time for an HTTP request's head to arrive in full once begun "
                        f"(default: {defaults.http_header_timeout:g}s)")
    limits.add_argument("--http-body-timeout", type=_seconds,
                        default=defaults.http_body_timeout, metavar="DURATION",
                        help="time for an HTTP request's body to arrive in full after its "
                        f"head (default: {defaults.http_body_timeout:g}s)")


def _seconds(text: str) -> float:
    """A duration flag: Go's syntax ("10s", "1m30s") or a number of seconds."""
    try:
        return float(text)
    except ValueError:
        return parse_go_duration(text) / NS_PER_SECOND


def _security_config(ns: argparse.Namespace) -> tuple[TLSConfig, Limits]:
    """The TLS and limit flags, checked (ValueError names the bad one)."""
    if ns.https_port is not None and not ns.tls_cert:
        raise ValueError("--https-port needs --tls-cert and --tls-key")
    if ns.verify_server_hostname:
        missing = [flag for flag, value in [
            ("--verify-incoming", ns.verify_incoming), ("--verify-outgoing", ns.verify_outgoing),
            ("--tls-ca", ns.tls_ca), ("--tls-cert", ns.tls_cert), ("--tls-key", ns.tls_key)]
            if not value]
        if missing:
            raise ValueError("--verify-server-hostname needs " + ", ".join(missing) +
                             " (servers prove their names with certificates of the CA)")
    tls = TLSConfig(cert_file=ns.tls_cert, key_file=ns.tls_key, ca_file=ns.tls_ca,
                    verify_incoming=ns.verify_incoming, verify_outgoing=ns.verify_outgoing,
                    verify_server_hostname=ns.verify_server_hostname, domain=ns.domain)
    limits = Limits(http_max_body=ns.http_max_body, http_max_conns=ns.http_max_conns,
                    rpc_max_conns=ns.rpc_max_conns, rpc_max_frame=ns.rpc_max_frame,
                    max_blocking_per_client=ns.max_blocking_per_client,
                    rpc_read_timeout=ns.rpc_read_timeout, rpc_idle_timeout=ns.rpc_idle_timeout,
                    http_header_timeout=ns.http_header_timeout,
                    http_body_timeout=ns.http_body_timeout)
    return tls, limits


def run_agent(ns: argparse.Namespace) -> int:
    if ns.bootstrap_expect < 0:
        print("pykvs agent: --bootstrap-expect must be >= 0", file=sys.stderr)
        return 2
    try:
        tls, limits = _security_config(ns)
    except ValueError as exc:
        print(f"pykvs agent: {exc}", file=sys.stderr)
        return 2
    config = agent.AgentConfig(
        node=ns.node, datacenter=ns.datacenter, data_dir=ns.data_dir, bind=ns.bind,
        http_port=ns.http_port, rpc_port=ns.rpc_port, bootstrap_expect=ns.bootstrap_expect,
        join=ns.join, join_wan=ns.join_wan, dev=ns.dev, log_level=ns.log_level,
        rpc_hold_timeout=ns.rpc_hold_timeout, max_value_size=ns.max_value_size,
        tls=tls, https_port=ns.https_port, limits=limits,
        acl_enabled=ns.acl_enabled, acl_default_policy=ns.acl_default_policy,
        event_loop=ns.event_loop, acl_agent_token=ns.acl_agent_token, encrypt=ns.encrypt,
    )
    try:
        agent.parse_join_wan(config.join_wan)
        config.server_config(config.data_dir)  # a bad --encrypt key, said before starting
    except ValueError as exc:
        print(f"pykvs agent: {exc}", file=sys.stderr)
        return 2
    return agent.main(config)


def register(subparsers: Any) -> None:
    """Add ``agent`` to the ``pykvs`` command's subparsers."""
    parser = subparsers.add_parser("agent", help="pykvs agent")
    _arguments(parser)
    parser.set_defaults(run=run_agent)
