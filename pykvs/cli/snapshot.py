"""``pykvs snapshot save|restore|inspect``: the consul CLI's ``snapshot`` commands, over the HTTP
API (``consul snapshot``'s messages and exit codes); ``save`` verifies the archive before it
keeps the file, ``inspect`` reads one offline."""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import Any, TextIO

from pykvs.cli.command import CommandError, columns, command, group, positional
from pykvs.cli.http_client import client_from, progress_bar
from pykvs.server.snapshot_archive import read_archive, read_snapshot


def _snapshot_file(ns: argparse.Namespace) -> str:
    args = positional(ns, 1)
    if not args:
        raise CommandError("Missing FILE argument")
    return args[0]


def snapshot_save(ns: argparse.Namespace, out: TextIO) -> int:
    path = _snapshot_file(ns)
    try:
        _, headers, archive = client_from(ns).request(
            "GET", "/v1/snapshot", read=True, progress=progress_bar("Saving snapshot"))
    except CommandError as exc:
        raise CommandError(f"Error saving snapshot: {exc}") from None
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, unverified = tempfile.mkstemp(prefix=os.path.basename(path) + ".unverified",
                                          dir=directory)
    except OSError as exc:
        raise CommandError(f"Error creating unverified snapshot file: {exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            try:
                handle.write(archive)
            except OSError as exc:
                raise CommandError(f"Error writing unverified snapshot file: {exc}") from None
        with open(unverified, "rb") as handle:
            try:
                read_archive(handle.read())
            except ValueError as exc:
                raise CommandError(f"Error verifying snapshot file: {exc}") from None
        os.replace(unverified, path)
    finally:
        if os.path.exists(unverified):
            os.unlink(unverified)
    index = next((v for k, v in headers.items() if k.lower() == "x-consul-index"), "0")
    out.write(f"Saved and verified snapshot to index {index}\n")
    return 0


def _read_snapshot_file(ns: argparse.Namespace) -> bytes:
    path = _snapshot_file(ns)
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise CommandError(f"Error opening snapshot file: {exc}") from None


def snapshot_restore(ns: argparse.Namespace, out: TextIO) -> int:
    archive = _read_snapshot_file(ns)
    try:
        client_from(ns).request("PUT", "/v1/snapshot", body=archive,
                                progress=progress_bar("Restoring snapshot"))
    except CommandError as exc:
        raise CommandError(f"Error restoring snapshot: {exc}") from None
    out.write("Restored snapshot\n")
    return 0


def snapshot_inspect(ns: argparse.Namespace, out: TextIO) -> int:
    archive = _read_snapshot_file(ns)
    try:
        meta, state = read_archive(archive)
        _, version, _ = read_snapshot(state)
    except ValueError as exc:
        raise CommandError(f"Error verifying snapshot: {exc}") from None
    rows = [[" ID", str(meta.get("ID", ""))], [" Size", str(meta.get("Size", len(state)))],
            [" Index", str(meta.get("Index", ""))], [" Term", str(meta.get("Term", ""))],
            [" Version", str(meta.get("Version", ""))]]
    tables = [[" Type", "Count"], [" ----", "----"],
              [" KVS", str(len(version.kvs))], [" Tombstone", str(len(version.tombstones))],
              [" Session", str(len(version.sessions))]]
    out.write(columns(rows) + "\n\n" + columns(tables) + "\n")
    return 0


def register(subparsers: Any) -> None:
    """Add ``snapshot`` to the ``pykvs`` command's subparsers."""
    snapshot_sub = group(subparsers, "snapshot", "pykvs snapshot save|restore|inspect")
    command(snapshot_sub, "save", snapshot_save, "Saves snapshot of the servers' state")
    command(snapshot_sub, "restore", snapshot_restore, "Restores snapshot of the servers' "
            "state")
    command(snapshot_sub, "inspect", snapshot_inspect, "Displays information about a "
            "snapshot file")
