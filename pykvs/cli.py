"""The ``pykvs`` command: ``pykvs agent`` runs a server; ``kv``, ``operator raft`` and
``snapshot`` (pykvs.cli_consul) talk to one over the HTTP API, as the consul CLI does."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from pykvs import cli_consul
from pykvs.server import agent

# name -> (add the subcommand's arguments to its parser, run it with the parsed namespace)
Command = tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535, got {port}")
    return port


def _agent_arguments(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument("--rpc-hold-timeout", type=float, default=defaults.rpc_hold_timeout,
                        metavar="SECONDS",
                        help="how long a request waits for a leader (default: 7)")
    parser.add_argument("--max-value-size", type=int, default=defaults.max_value_size,
                        metavar="BYTES", help="largest value accepted (default: 524288)")


def _run_agent(ns: argparse.Namespace) -> int:
    if ns.bootstrap_expect < 0:
        print("pykvs agent: --bootstrap-expect must be >= 0", file=sys.stderr)
        return 2
    config = agent.AgentConfig(
        node=ns.node, datacenter=ns.datacenter, data_dir=ns.data_dir, bind=ns.bind,
        http_port=ns.http_port, rpc_port=ns.rpc_port, bootstrap_expect=ns.bootstrap_expect,
        join=ns.join, join_wan=ns.join_wan, dev=ns.dev, log_level=ns.log_level,
        rpc_hold_timeout=ns.rpc_hold_timeout, max_value_size=ns.max_value_size,
    )
    try:
        agent.parse_join_wan(config.join_wan)
    except ValueError as exc:
        print(f"pykvs agent: {exc}", file=sys.stderr)
        return 2
    return agent.main(config)


COMMANDS: dict[str, Command] = {"agent": (_agent_arguments, _run_agent)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pykvs", description="A Raft-replicated KV store "
                                     "modelled on Consul's KV store.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=f"pykvs {name}"))
    cli_consul.register(sub)  # kv, operator raft, snapshot: each leaf sets ``run``
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    run = getattr(ns, "run", None)
    return run(ns) if run is not None else COMMANDS[ns.command][1](ns)


if __name__ == "__main__":
    sys.exit(main())
