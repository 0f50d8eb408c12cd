"""What every consul-like command shares: its error, its arguments, its place in the ``pykvs``
command tree, how it runs, and the table layout of its output.

A command is a function ``run(namespace, stdout) -> exit code``; :func:`command` registers it
under a group made by :func:`group`, with its own flags and the HTTP flags. Success writes to
stdout and exits 0; a :class:`CommandError` is printed on stderr and exits 1, as the consul CLI.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, TextIO

from pykvs.cli.flags import GoFlagParser, http_flags

Runner = Callable[[argparse.Namespace, TextIO], int]


class CommandError(Exception):
    """A failure to report on stderr (exit 1); the message is the consul CLI's."""


def positional(ns: argparse.Namespace, most: int, least: int = 0) -> list[str]:
    """The arguments after the flags (a leading ``--`` dropped), at most ``most`` of them."""
    args = list(ns.args)
    if args and args[0] == "--":
        args = args[1:]
    if len(args) > most:
        expected = f"{most}" if least == most or least == 0 else f"{least} or {most}"
        raise CommandError(f"Too many arguments (expected {expected}, got {len(args)})")
    return args


def columns(rows: list[list[str]]) -> str:
    """ryanuber/columnize's layout: columns left-aligned, two spaces between them."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)
                               ).rstrip() for row in rows)


def group(subparsers: Any, name: str, help: str, *, go_flags: bool = True) -> Any:
    """``pykvs ... NAME SUBCOMMAND``: the parser of NAME's subcommands (one is required; their
    flags are Go-style unless ``go_flags`` is False)."""
    parser = subparsers.add_parser(name, help=help)
    options: dict[str, Any] = {"parser_class": GoFlagParser} if go_flags else {}
    subcommands = parser.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND", **options)
    subcommands.required = True
    return subcommands


def command(sub: Any, name: str, run: Runner, help_text: str,
            flags: Callable[[argparse.ArgumentParser], None] | None = None, *,
            http: bool = True) -> None:
    """Register ``run`` as subcommand ``name`` of a :func:`group`, with ``flags`` (its own)
    and the HTTP flags (unless ``http`` is False: a command that asks no agent); the parsed
    namespace's ``run`` runs it."""
    parser = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
    _configure(parser, run, flags, http)


def top_command(subparsers: Any, name: str, run: Runner, help_text: str,
                flags: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    """Register ``run`` as ``pykvs NAME`` itself (``pykvs watch``, ``pykvs lock``), with
    ``flags``, the HTTP flags and Go's flag manners (a usage error exits 1)."""
    parser = subparsers.add_parser(name, help=help_text, description=help_text,
                                   allow_abbrev=False)
    parser.__class__ = GoFlagParser  # argparse makes the top level's subparsers itself
    _configure(parser, run, flags, True)


def _configure(parser: argparse.ArgumentParser, run: Runner,
               flags: Callable[[argparse.ArgumentParser], None] | None, http: bool) -> None:
    if flags is not None:
        flags(parser)
    if http:
        http_flags(parser)
    else:
        parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.set_defaults(run=lambda ns: _run(run, ns))


def _run(run: Runner, ns: argparse.Namespace) -> int:
    try:
        return run(ns, sys.stdout)
    except CommandError as exc:
        sys.stdout.flush()
        # an argument that was not UTF-8 may be in the message (as surrogates)
        print(str(exc).encode(errors="backslashreplace").decode(), file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 1
