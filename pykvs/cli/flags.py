"""Go-style flags for the consul-like commands, as Go's ``flag`` package parses them.

``-recurse`` and ``--recurse`` are the same flag, ``-separator=/`` and ``-flags 5`` both give a
value, parsing stops at the first argument that is not a flag (the rest are the command's
arguments, in ``args``), and a usage error exits 1, not argparse's 2.
Every command that talks to an agent takes the HTTP flags (:func:`http_flags`): ``-http-addr``,
``-token``, ``-datacenter`` and ``-stale``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NoReturn

from pykvs.goformat import NS_PER_SECOND, DurationError, go_quote, parse_go_duration

DEFAULT_HTTP_ADDR = "127.0.0.1:8500"
ENV_ADDRESSES = ("PYKVS_HTTP_ADDR", "CONSUL_HTTP_ADDR")


class GoFlagParser(argparse.ArgumentParser):
    """argparse with Go's flag package manners: usage errors exit 1, not 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: {message}\n")

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        # An unknown flag is this command's usage error (Go: "flag provided but not
        # defined"), not one the top-level parser reports with exit code 2.
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"flag provided but not defined: {extras[0]}")
        return parsed, extras


def flag(parser: argparse.ArgumentParser, name: str, **kwargs: Any) -> None:
    """A Go-style flag: ``-name`` and ``--name``."""
    parser.add_argument(f"-{name}", f"--{name}", dest=name.replace("-", "_"), **kwargs)


def uint(text: str) -> int:
    """The value of a ``uint64`` flag (Go's message when it is not one)."""
    if not text.isdigit() or int(text) >= 1 << 64:
        raise argparse.ArgumentTypeError(f"invalid value {go_quote(text)}: parse error")
    return int(text)


def boolean(text: str) -> bool:
    """The value of a ``bool`` flag given as ``-flag=VALUE`` (``1``, ``t``, ``true`` are true)."""
    return text.lower() in ("1", "t", "true")


def duration(text: str) -> float:
    """The value of a ``time.Duration`` flag, in seconds (Go's syntax, not negative)."""
    try:
        ns = parse_go_duration(text)
    except DurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if ns < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return ns / NS_PER_SECOND


def http_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that choose the agent and how to ask it, then the command's arguments."""
    flag(parser, "http-addr", default=None, metavar="ADDR",
         help="the agent's HTTP address (default: $PYKVS_HTTP_ADDR, $CONSUL_HTTP_ADDR, "
              f"{DEFAULT_HTTP_ADDR})")
    flag(parser, "token", default=os.environ.get("CONSUL_HTTP_TOKEN", ""),
         help="ACL token sent as X-Consul-Token")
    flag(parser, "datacenter", default="", help="datacenter to query (default: the agent's)")
    flag(parser, "stale", action="store_true",
         help="let any server answer, even without a leader")
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def http_address(ns: argparse.Namespace) -> str:
    """``-http-addr``, else ``$PYKVS_HTTP_ADDR``, else ``$CONSUL_HTTP_ADDR``, else the default."""
    return str(ns.http_addr or next(
        (os.environ[name] for name in ENV_ADDRESSES if os.environ.get(name)), DEFAULT_HTTP_ADDR))
