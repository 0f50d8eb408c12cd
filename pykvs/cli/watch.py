"""``pykvs watch``: Consul's ``consul watch`` for the KV views (``-type key`` and
``-type keyprefix``).

Without a handler the current view is printed as JSON once and the command exits. With one,
the handler runs with the view's JSON on its standard input at the start and again each time
the view changes (a blocking query on its index), with ``CONSUL_INDEX`` set to the index, until
the command is interrupted. The JSON is what Consul's api package gives a handler: a KV pair
(``Key``, ``CreateIndex``, ``ModifyIndex``, ``LockIndex``, ``Flags``, ``Value`` base64,
``Session``) or a list of them; ``null`` for an absent key or an empty prefix.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import time
from typing import Any, TextIO

from pykvs.cli.command import CommandError, positional, top_command
from pykvs.cli.flags import boolean, flag
from pykvs.cli.http_client import HTTPClient, client_from

TYPES = ("key", "keyprefix")
WAIT = "5m"  # each blocking query's wait, Consul's watch default
RETRY_SECONDS = (0.5, 30.0)  # first and longest pause after a failed query, doubling


def _pair(entry: dict[str, Any]) -> dict[str, Any]:
    """Consul's api.KVPair as encoding/json writes it, from the HTTP API's entry."""
    return {"Key": entry["Key"], "CreateIndex": entry["CreateIndex"],
            "ModifyIndex": entry["ModifyIndex"], "LockIndex": entry["LockIndex"],
            "Flags": entry["Flags"], "Value": entry["Value"],
            "Session": entry.get("Session", "")}


def _view(client: HTTPClient, ns: argparse.Namespace, index: int) -> tuple[int, Any]:
    """``(index, the view's JSON data)``, blocking while the index is ``index``."""
    params = [("recurse", "")] if ns.type == "keyprefix" else []
    if index:
        params += [("index", str(index)), ("wait", WAIT)]
    path = ns.prefix if ns.type == "keyprefix" else ns.key
    status, headers, body = client.request("GET", f"/v1/kv/{path}", params, read=True)
    new_index = int(headers.get("X-Consul-Index", "0") or 0)
    if status == 404:
        return new_index, None
    entries = json.loads(body)
    if ns.type == "key":
        return new_index, _pair(entries[0])
    return new_index, [_pair(e) for e in entries]


def _encode(data: Any) -> str:
    return json.dumps(data, indent=4)


def _run_handler(ns: argparse.Namespace, handler: list[str], index: int, data: Any) -> None:
    env = {**os.environ, "CONSUL_INDEX": str(index)}
    argv = ["/bin/sh", "-c", " ".join(handler)] if ns.shell else handler
    try:
        done = subprocess.run(argv, input=_encode(data).encode(), env=env, check=False)
    except OSError as exc:
        print(f"Error executing handler: {exc}", flush=True)
        return
    if done.returncode != 0:
        print(f"Error executing handler: exit status {done.returncode}", flush=True)


def watch(ns: argparse.Namespace, out: TextIO) -> int:
    handler = positional(ns, 1 << 16)
    if ns.type not in TYPES:
        raise CommandError(f"Unsupported watch type: {ns.type!r} (pykvs watches "
                           f"{' and '.join(TYPES)})" if ns.type else "Must specify watch type")
    if ns.type == "key" and not ns.key:
        raise CommandError("Must specify a single key to watch (-key)")
    client = client_from(ns)
    if not handler:  # dump the current view once, as consul watch does without a child
        _, data = _view(client, ns, 0)
        out.write(_encode(data) + "\n")
        return 0
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop)
    with contextlib.suppress(_Stopped):
        _follow(client, ns, handler)
    return 0


class _Stopped(Exception):
    """SIGINT or SIGTERM: raised from the handler, so a blocking query stops waiting."""


def _stop(signum: int, frame: Any) -> None:
    raise _Stopped()


def _follow(client: HTTPClient, ns: argparse.Namespace, handler: list[str]) -> None:
    """Run the handler at the start and on every change, until a signal arrives."""
    index, last, pause = 0, object(), RETRY_SECONDS[0]
    while True:
        try:
            new_index, data = _view(client, ns, index)
        except CommandError as exc:
            print(f"Error querying Consul agent: {exc} (retrying in {pause:g}s)", flush=True)
            time.sleep(pause)
            pause = min(2 * pause, RETRY_SECONDS[1])
            continue
        pause = RETRY_SECONDS[0]
        if new_index < index:  # the index went back (a restore): start over, as Consul
            new_index = 0
        if data != last:
            _run_handler(ns, handler, new_index, data)
            last = data
        index = new_index


def _watch_flags(p: argparse.ArgumentParser) -> None:
    flag(p, "type", default="", help="the view to watch: key or keyprefix")
    flag(p, "key", default="", help="the key (-type key)")
    flag(p, "prefix", default="", help="the prefix (-type keyprefix)")
    flag(p, "shell", type=boolean, default=True,
         metavar="BOOL", help="run the handler through /bin/sh -c (default true)")


def register(subparsers: Any) -> None:
    """Add ``watch`` to the ``pykvs`` command."""
    top_command(subparsers, "watch", watch,
                "Watch a KV view and run a handler with it on every change", _watch_flags)
