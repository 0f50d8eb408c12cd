"""``pykvs kv get|put|delete|export|import``: the consul CLI's ``kv`` commands, over the HTTP
API (the flags, messages and exit codes of ``consul kv``)."""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from typing import Any, BinaryIO, TextIO

from pykvs.cli.command import CommandError, command, group, positional
from pykvs.cli.flags import flag, uint
from pykvs.cli.http_client import client_from


def _key_argument(ns: argparse.Namespace) -> str:
    args = positional(ns, 1)
    key = args[0] if args else ""
    return key[1:] if key.startswith("/") else key  # as consul: pairs cannot start with /


def _read_data(data: str, stdin: BinaryIO) -> bytes:
    """Consul's dataFromArgs: @file, - (stdin), or the text itself."""
    if data.startswith("@"):
        try:
            with open(data[1:], "rb") as handle:
                return handle.read()
        except OSError as exc:
            raise CommandError(f"Error! Failed to read file: {exc}") from None
    if data == "-":
        return stdin.read()
    return data.encode(errors="surrogateescape")


# --------------------------------------------------------------------------------- kv get
def _value(pair: dict[str, Any]) -> bytes:
    return base64.b64decode(pair["Value"]) if pair.get("Value") else b""


def _shown(pair: dict[str, Any], as_base64: bool) -> str:
    """The value as ``kv get -recurse`` and ``-detailed`` show it: text, or base64."""
    value = _value(pair)
    return base64.b64encode(value).decode() if as_base64 else value.decode(errors="replace")


def _pretty_pair(pair: dict[str, Any], as_base64: bool) -> str:
    shown = _shown(pair, as_base64)
    rows = [("CreateIndex", pair["CreateIndex"]), ("Flags", pair["Flags"]),
            ("Key", pair["Key"]), ("LockIndex", pair["LockIndex"]),
            ("ModifyIndex", pair["ModifyIndex"]), ("Session", pair.get("Session") or "-"),
            ("Value", shown)]
    width = max(len(name) for name, _ in rows) + 6
    return "\n".join(f"{name:<{width}}{value}" for name, value in rows)


def kv_get(ns: argparse.Namespace, out: TextIO) -> int:
    key = _key_argument(ns)
    if not key and not (ns.recurse or ns.keys):
        raise CommandError("Error! Missing KEY argument")
    client = client_from(ns)
    try:
        if ns.keys:
            keys = client.json("GET", f"/v1/kv/{key}",
                               [("keys", ""), ("separator", ns.separator)], read=True) or []
            for name in keys:
                out.write(f"{name}\n")
            return 0
        if ns.recurse:
            pairs = client.json("GET", f"/v1/kv/{key}", [("recurse", "")], read=True) or []
            for position, pair in enumerate(pairs):
                if ns.detailed:
                    out.write(_pretty_pair(pair, ns.base64) + "\n")
                    if position < len(pairs) - 1:
                        out.write("\n")
                    continue
                out.write(f"{pair['Key']}:{_shown(pair, ns.base64)}\n")
            return 0
        pairs = client.json("GET", f"/v1/kv/{key}", read=True)
    except CommandError as exc:
        raise CommandError(f"Error querying Consul agent: {exc}") from None
    if not pairs:
        raise CommandError(f"Error! No key exists at: {key}")
    if ns.detailed:
        out.write(_pretty_pair(pairs[0], ns.base64) + "\n")
        return 0
    value = _value(pairs[0])
    if ns.base64:  # as consul kv get -base64: the value as base64 text
        value = base64.b64encode(value)
    out.flush()
    buffer = getattr(out, "buffer", None)
    if buffer is not None:
        buffer.write(value + b"\n")
        buffer.flush()
    else:
        out.write(value.decode(errors="replace") + "\n")
    return 0


# -------------------------------------------------------------------------- kv put, delete
def kv_put(ns: argparse.Namespace, out: TextIO) -> int:
    args = positional(ns, 2, 1)
    if not args:
        raise CommandError("Error! Missing KEY argument")
    key = args[0]
    data = _read_data(args[1], sys.stdin.buffer) if len(args) > 1 and args[1] else b""
    if ns.base64:
        try:
            data = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CommandError(f"Error! Cannot base 64 decode data: {exc}") from None
    if (ns.release or ns.acquire) and not ns.session:
        raise CommandError("Error! Missing -session (required with -acquire and -release)")
    if ns.cas and ns.modify_index == 0:
        raise CommandError("Must specify -modify-index with -cas!")
    params = [("flags", str(ns.flags))] if ns.flags else []
    if ns.cas:
        params.append(("cas", str(ns.modify_index)))
    elif ns.acquire:
        params.append(("acquire", ns.session))
    elif ns.release:
        params.append(("release", ns.session))
    client = client_from(ns)
    try:
        ok = client.json("PUT", f"/v1/kv/{key}", params, data)
    except CommandError as exc:
        if ns.cas:
            raise CommandError(f"Error! Did not write to {key}: {exc}") from None
        raise CommandError(f"Error! Failed writing data: {exc}") from None
    if ns.cas and not ok:
        raise CommandError(f"Error! Did not write to {key}: CAS failed")
    if ns.acquire:
        if not ok:
            raise CommandError("Error! Did not acquire lock")
        out.write(f"Success! Lock acquired on: {key}\n")
    elif ns.release:
        if not ok:
            raise CommandError("Error! Did not release lock")
        out.write(f"Success! Lock released on: {key}\n")
    else:
        out.write(f"Success! Data written to: {key}\n")
    return 0


def kv_delete(ns: argparse.Namespace, out: TextIO) -> int:
    key = _key_argument(ns)
    if not key and not ns.recurse:
        raise CommandError("Error! Missing KEY argument")
    if ns.cas and ns.modify_index == 0:
        raise CommandError("Cannot delete a key that does not exist. Provide a -modify-index "
                           "greater than than 0.")
    if ns.modify_index and not ns.cas:
        raise CommandError("Cannot specify -modify-index without -cas!")
    if ns.recurse and ns.cas:
        raise CommandError("Cannot specify both -cas and -recurse!")
    client = client_from(ns)
    if ns.recurse:
        try:
            client.json("DELETE", f"/v1/kv/{key}", [("recurse", "")])
        except CommandError as exc:
            raise CommandError(f"Error! Did not delete prefix {key}: {exc}") from None
        out.write(f"Success! Deleted keys with prefix: {key}\n")
        return 0
    if ns.cas:
        try:
            ok = client.json("DELETE", f"/v1/kv/{key}", [("cas", str(ns.modify_index))])
        except CommandError as exc:
            raise CommandError(f"Error! Did not delete key {key}: {exc}") from None
        if not ok:
            raise CommandError(f"Error! Did not delete key {key}: CAS failed")
    else:
        try:
            client.json("DELETE", f"/v1/kv/{key}")
        except CommandError as exc:
            raise CommandError(f"Error deleting key {key}: {exc}") from None
    out.write(f"Success! Deleted key: {key}\n")
    return 0


# ------------------------------------------------------------------------ kv export, import
def kv_export(ns: argparse.Namespace, out: TextIO) -> int:
    prefix = _key_argument(ns)
    try:
        pairs = client_from(ns).json("GET", f"/v1/kv/{prefix}", [("recurse", "")],
                                     read=True) or []
    except CommandError as exc:
        raise CommandError(f"Error querying Consul agent: {exc}") from None
    exported = [{"key": p["Key"], "flags": p["Flags"], "value": p.get("Value") or ""}
                for p in pairs]
    # Go's json.MarshalIndent(v, "", "\t"): tab indents, "[]" for an empty list.
    out.write((json.dumps(exported, indent="\t") if exported else "[]") + "\n")
    return 0


def kv_import(ns: argparse.Namespace, out: TextIO) -> int:
    args = positional(ns, 1)
    if not args:
        raise CommandError("Error! Missing DATA argument")
    if not args[0]:
        raise CommandError("Error! Empty DATA argument")
    data = _read_data(args[0], sys.stdin.buffer)
    try:
        entries = json.loads(data)
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ValueError("expected a JSON array of {key, flags, value} objects")
    except ValueError as exc:
        raise CommandError(f"Cannot unmarshal data: {exc}") from None
    # Every entry is checked and decoded before the first write, so bad data changes nothing.
    decoded = [_import_entry(position, entry) for position, entry in enumerate(entries)]
    client = client_from(ns)
    for key, flags, value in decoded:
        params = [("flags", str(flags))]
        try:
            client.json("PUT", f"/v1/kv/{key}", params, value)
        except CommandError as exc:
            raise CommandError(f"Error! Failed writing data for key {key}: {exc}") from None
        out.write(f"Imported: {key}\n")
    return 0


def _import_entry(position: int, entry: dict[str, Any]) -> tuple[str, int, bytes]:
    """(key, flags, value) of one ``kv import`` entry, or the CommandError saying what is
    wrong with it (Consul's kvExportEntry: key string, flags uint64, value base64 string)."""
    key, flags, value = entry.get("key"), entry.get("flags") or 0, entry.get("value") or ""
    if not isinstance(key, str) or not key:
        raise CommandError(f"Cannot unmarshal data: entry {position}: key must be a "
                           f"non-empty string, got {key!r}")
    if isinstance(flags, bool) or not isinstance(flags, int) or not 0 <= flags < 1 << 64:
        raise CommandError(f"Cannot unmarshal data: entry {position} (key {key}): flags must "
                           f"be an unsigned 64-bit integer, got {flags!r}")
    if not isinstance(value, str):
        raise CommandError(f"Cannot unmarshal data: entry {position} (key {key}): value must "
                           f"be a base64 string, got {type(value).__name__}")
    try:
        return key, flags, base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CommandError(f"Error base 64 decoding value for key {key}: {exc}") from None




def _kv_get_flags(p: argparse.ArgumentParser) -> None:
    flag(p, "recurse", action="store_true", help="list every key under the prefix")
    flag(p, "keys", action="store_true", help="list keys only")
    flag(p, "separator", default="/", help="with -keys: list keys up to this (default: /)")
    flag(p, "detailed", action="store_true", help="show the entry's metadata too")
    flag(p, "base64", action="store_true", help="show values base64-encoded")


def _cas_flags(p: argparse.ArgumentParser) -> None:
    flag(p, "cas", action="store_true", help="check-and-set against -modify-index")
    flag(p, "modify-index", type=uint, default=0, help="ModifyIndex for -cas")


def _kv_put_flags(p: argparse.ArgumentParser) -> None:
    _cas_flags(p)
    flag(p, "flags", type=uint, default=0, help="unsigned integer stored with the key")
    flag(p, "base64", action="store_true", help="DATA is base64-encoded")
    flag(p, "session", default="", help="session for -acquire / -release")
    flag(p, "acquire", action="store_true", help="take the lock with -session")
    flag(p, "release", action="store_true", help="release the lock held by -session")


def _kv_delete_flags(p: argparse.ArgumentParser) -> None:
    _cas_flags(p)
    flag(p, "recurse", action="store_true", help="delete every key under the prefix")


def register(subparsers: Any) -> None:
    """Add ``kv`` to the ``pykvs`` command's subparsers."""
    kv_sub = group(subparsers, "kv", "pykvs kv get|put|delete|export|import")
    command(kv_sub, "get", kv_get, "Retrieves or lists data from the KV store", _kv_get_flags)
    command(kv_sub, "put", kv_put, "Sets or updates data in the KV store", _kv_put_flags)
    command(kv_sub, "delete", kv_delete, "Removes data from the KV store", _kv_delete_flags)
    command(kv_sub, "export", kv_export, "Exports a tree from the KV store as JSON")
    command(kv_sub, "import", kv_import, "Imports a tree stored as JSON to the KV store")
