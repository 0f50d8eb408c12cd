"""The ``pykvs`` command. ``pykvs agent`` runs a server (agent_cmd, over pykvs.agent); ``kv``,
``operator raft``, ``snapshot`` and ``acl`` talk to one over the HTTP API, as the consul CLI
does (each a command group, Go-style flags from flags, the HTTP client from http_client, what
every command shares from command); ``tls`` makes a CA and certificates, as ``consul tls``;
``watch`` runs a handler on every change of a key or prefix; ``lock`` runs a command
holding a lock or a semaphore slot; ``keygen`` prints a key for ``agent --encrypt``."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from pykvs.cli import acl, agent_cmd, keygen, kv, lock, operator, snapshot, tls, watch


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pykvs", description="A Raft-replicated KV store "
                                     "modelled on Consul's KV store.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for group in (agent_cmd, kv, operator, snapshot, acl, tls, watch, lock, keygen):
        group.register(sub)  # each leaf sets ``run(namespace) -> exit code``
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = ns.run
    return run(ns)
