"""``pykvs kv|operator raft|snapshot ...``: the consul CLI's commands, over the HTTP API.

Flags, messages and exit codes follow the consul CLI: Go-style flags (``-recurse``,
``--recurse``, ``-separator=/``, ``-flags 5``), parsing stops at the first argument that is not
a flag, success prints ``Success! ...`` on stdout and exits 0, any failure prints ``Error! ...``
(or Consul's other texts) on stderr and exits 1. The agent is chosen by ``-http-addr``, else
``PYKVS_HTTP_ADDR``, else ``CONSUL_HTTP_ADDR``, else 127.0.0.1:8500.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, NoReturn, TextIO

DEFAULT_HTTP_ADDR = "127.0.0.1:8500"
ENV_ADDRESSES = ("PYKVS_HTTP_ADDR", "CONSUL_HTTP_ADDR")
CHUNK = 256 * 1024


class CommandError(Exception):
    """A failure to report on stderr (exit 1); the message is the consul CLI's."""


class _GoFlagParser(argparse.ArgumentParser):
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


# ------------------------------------------------------------------------------- HTTP client
class HTTPClient:
    """The few calls the commands make, with the consul api client's error texts."""

    def __init__(self, address: str, token: str = "", datacenter: str = "",
                 stale: bool = False) -> None:
        if "://" not in address:
            address = "http://" + address
        try:
            parsed = urllib.parse.urlsplit(address)
            parsed.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise CommandError(f"Error connecting to Consul agent: invalid address "
                               f"{address!r}") from None
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise CommandError(f"Error connecting to Consul agent: invalid address {address!r}")
        self.base = f"{parsed.scheme}://{parsed.netloc}"
        self.token = token
        self.datacenter = datacenter
        self.stale = stale

    def request(self, method: str, path: str, params: Sequence[tuple[str, str]] = (),
                body: bytes | None = None, *, read: bool = False,
                progress: Callable[[int, int | None], None] | None = None
                ) -> tuple[int, dict[str, str], bytes]:
        query = list(params)
        if self.datacenter:
            query.append(("dc", self.datacenter))
        if read and self.stale:
            query.append(("stale", ""))
        try:  # an argument the OS could not decode holds surrogates: the HTTP API takes UTF-8
            url = self.base + urllib.parse.quote(path, safe="/")
            if query:
                url += "?" + urllib.parse.urlencode(query)
        except UnicodeEncodeError:
            raise CommandError(f"{method} {path!r}: an argument is not valid UTF-8") from None
        if not self.token.isascii() or not self.token.isprintable():
            raise CommandError(f"invalid ACL token {self.token!r}: not printable ASCII")
        headers = {"X-Consul-Token": self.token} if self.token else {}
        data: Any = body
        if body is not None and progress is not None:
            data = _ProgressReader(body, progress)
            headers["Content-Length"] = str(len(body))
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req) as resp:
                return resp.status, dict(resp.headers), _read_all(resp, progress)
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", errors="replace")
            if exc.code == 404 and method == "GET" and not text:
                return 404, dict(exc.headers), b""
            raise CommandError(f"Unexpected response code: {exc.code} ({text.strip()})") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CommandError(f'{method} "{url}": {reason}') from None

    def json(self, method: str, path: str, params: Sequence[tuple[str, str]] = (),
             body: bytes | None = None, *, read: bool = False) -> Any:
        status, _, data = self.request(method, path, params, body, read=read)
        return None if status == 404 else json.loads(data or b"null")


def _read_all(resp: Any, progress: Callable[[int, int | None], None] | None) -> bytes:
    total = resp.headers.get("Content-Length")
    size = int(total) if total and total.isdigit() else None
    parts: list[bytes] = []
    done = 0
    while True:
        chunk = resp.read(CHUNK)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        done += len(chunk)
        if progress is not None:
            progress(done, size)


class _ProgressReader:
    """A request body that reports how much of it was sent."""

    def __init__(self, body: bytes, progress: Callable[[int, int | None], None]) -> None:
        self.body = body
        self.offset = 0
        self.progress = progress

    def read(self, size: int = -1) -> bytes:
        end = len(self.body) if size < 0 else self.offset + size
        chunk = self.body[self.offset:end]
        self.offset += len(chunk)
        if chunk:
            self.progress(self.offset, len(self.body))
        return chunk

    def __len__(self) -> int:
        return len(self.body)


def progress_bar(label: str, stream: TextIO | None = None) -> Callable[[int, int | None], None]:
    """A one-line progress report on a terminal; nothing when stderr is not one."""
    out = stream or sys.stderr
    if not out.isatty():
        return lambda done, total: None

    def report(done: int, total: int | None) -> None:
        mib = done / (1 << 20)
        if total:
            filled = int(30 * done / total)
            line = f"\r{label} [{'#' * filled}{'.' * (30 - filled)}] {mib:.1f} MiB"
        else:
            line = f"\r{label} {mib:.1f} MiB"
        out.write(line + ("\n" if total and done >= total else ""))
        out.flush()

    return report


# -------------------------------------------------------------------------------- arguments
def _flag(parser: argparse.ArgumentParser, name: str, **kwargs: Any) -> None:
    """A Go-style flag: ``-name`` and ``--name``."""
    parser.add_argument(f"-{name}", f"--{name}", dest=name.replace("-", "_"), **kwargs)


def _uint(text: str) -> int:
    if not text.isdigit() or int(text) >= 1 << 64:
        raise argparse.ArgumentTypeError(f'invalid value "{text}": parse error')
    return int(text)


def _http_flags(parser: argparse.ArgumentParser) -> None:
    _flag(parser, "http-addr", default=None, metavar="ADDR",
          help="the agent's HTTP address (default: $PYKVS_HTTP_ADDR, $CONSUL_HTTP_ADDR, "
               f"{DEFAULT_HTTP_ADDR})")
    _flag(parser, "token", default=os.environ.get("CONSUL_HTTP_TOKEN", ""),
          help="ACL token sent as X-Consul-Token")
    _flag(parser, "datacenter", default="", help="datacenter to query (default: the agent's)")
    _flag(parser, "stale", action="store_true",
          help="let any server answer, even without a leader")
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def client_from(ns: argparse.Namespace) -> HTTPClient:
    address = ns.http_addr or next(
        (os.environ[name] for name in ENV_ADDRESSES if os.environ.get(name)), DEFAULT_HTTP_ADDR)
    return HTTPClient(address, ns.token, ns.datacenter, ns.stale)


def _positional(ns: argparse.Namespace, most: int, least: int = 0) -> list[str]:
    args = list(ns.args)
    if args and args[0] == "--":
        args = args[1:]
    if len(args) > most:
        expected = f"{most}" if least == most or least == 0 else f"{least} or {most}"
        raise CommandError(f"Too many arguments (expected {expected}, got {len(args)})")
    return args


def _key_argument(ns: argparse.Namespace) -> str:
    args = _positional(ns, 1)
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
def _pretty_pair(pair: dict[str, Any], as_base64: bool) -> str:
    value = base64.b64decode(pair["Value"]) if pair.get("Value") else b""
    shown = base64.b64encode(value).decode() if as_base64 else value.decode(errors="replace")
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
                value = base64.b64decode(pair["Value"]) if pair.get("Value") else b""
                shown = base64.b64encode(value).decode() if ns.base64 else \
                    value.decode(errors="replace")
                out.write(f"{pair['Key']}:{shown}\n")
            return 0
        pairs = client.json("GET", f"/v1/kv/{key}", read=True)
    except CommandError as exc:
        raise CommandError(f"Error querying Consul agent: {exc}") from None
    if not pairs:
        raise CommandError(f"Error! No key exists at: {key}")
    if ns.detailed:
        out.write(_pretty_pair(pairs[0], ns.base64) + "\n")
        return 0
    value = base64.b64decode(pairs[0]["Value"]) if pairs[0].get("Value") else b""
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
    args = _positional(ns, 2, 1)
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
    args = _positional(ns, 1)
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


# ---------------------------------------------------------------------------- operator raft
def _columns(rows: list[list[str]]) -> str:
    """ryanuber/columnize's layout: columns left-aligned, two spaces between them."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)
                               ).rstrip() for row in rows)


def raft_list_peers(ns: argparse.Namespace, out: TextIO) -> int:
    _positional(ns, 0)
    try:
        reply = client_from(ns).json("GET", "/v1/operator/raft/configuration", read=True)
    except CommandError as exc:
        raise CommandError(f"Error getting peers: Failed to retrieve raft configuration: "
                           f"{exc}") from None
    rows = [["Node", "ID", "Address", "State", "Voter", "RaftProtocol"]]
    for server in reply["Servers"]:
        rows.append([server["Node"], server["ID"], server["Address"],
                     "leader" if server["Leader"] else "follower",
                     str(server["Voter"]).lower(), server.get("ProtocolVersion") or "<=1"])
    out.write(_columns(rows) + "\n")
    return 0


def raft_remove_peer(ns: argparse.Namespace, out: TextIO) -> int:
    _positional(ns, 0)
    if not ns.address and not ns.id:
        raise CommandError("Error removing peer: an address or id is required for the peer "
                           "to remove")
    if ns.address and ns.id:
        raise CommandError("Error removing peer: cannot give both an address and id")
    params = [("address", ns.address)] if ns.address else [("id", ns.id)]
    try:
        client_from(ns).request("DELETE", "/v1/operator/raft/peer", params)
    except CommandError as exc:
        raise CommandError(f"Error removing peer: {exc}") from None
    if ns.address:
        out.write(f'Removed peer with address "{ns.address}"\n')
    else:
        out.write(f'Removed peer with id "{ns.id}"\n')
    return 0


def raft_transfer_leader(ns: argparse.Namespace, out: TextIO) -> int:
    _positional(ns, 0)
    params = [("id", ns.id)] if ns.id else []
    try:
        reply = client_from(ns).json("POST", "/v1/operator/raft/transfer-leader", params)
    except CommandError as exc:
        raise CommandError(f"Error transferring leadership: {exc}") from None
    if not reply or not reply.get("Success"):
        raise CommandError("Error transferring leadership: the server did not confirm it")
    out.write("Success! Leadership transferred\n")
    return 0


# --------------------------------------------------------------------------------- snapshot
def _snapshot_file(ns: argparse.Namespace) -> str:
    args = _positional(ns, 1)
    if not args:
        raise CommandError("Missing FILE argument")
    return args[0]


def snapshot_save(ns: argparse.Namespace, out: TextIO) -> int:
    from pykvs.http.snapshot import read_archive

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
    from pykvs import fsm
    from pykvs.http.snapshot import read_archive

    archive = _read_snapshot_file(ns)
    try:
        meta, state = read_archive(archive)
        _, version, _ = fsm.read_snapshot(state)
    except ValueError as exc:
        raise CommandError(f"Error verifying snapshot: {exc}") from None
    rows = [[" ID", str(meta.get("ID", ""))], [" Size", str(meta.get("Size", len(state)))],
            [" Index", str(meta.get("Index", ""))], [" Term", str(meta.get("Term", ""))],
            [" Version", str(meta.get("Version", ""))]]
    tables = [[" Type", "Count"], [" ----", "----"],
              [" KVS", str(len(version.kvs))], [" Tombstone", str(len(version.tombstones))],
              [" Session", str(len(version.sessions))]]
    out.write(_columns(rows) + "\n\n" + _columns(tables) + "\n")
    return 0


# ------------------------------------------------------------------------------ registration
Runner = Callable[[argparse.Namespace, TextIO], int]


def _command(sub: Any, name: str, run: Runner, help_text: str,
             flags: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    parser = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
    if flags is not None:
        flags(parser)
    _http_flags(parser)
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


def _kv_get_flags(p: argparse.ArgumentParser) -> None:
    _flag(p, "recurse", action="store_true", help="list every key under the prefix")
    _flag(p, "keys", action="store_true", help="list keys only")
    _flag(p, "separator", default="/", help="with -keys: list keys up to this (default: /)")
    _flag(p, "detailed", action="store_true", help="show the entry's metadata too")
    _flag(p, "base64", action="store_true", help="show values base64-encoded")


def _cas_flags(p: argparse.ArgumentParser) -> None:
    _flag(p, "cas", action="store_true", help="check-and-set against -modify-index")
    _flag(p, "modify-index", type=_uint, default=0, help="ModifyIndex for -cas")


def _kv_put_flags(p: argparse.ArgumentParser) -> None:
    _cas_flags(p)
    _flag(p, "flags", type=_uint, default=0, help="unsigned integer stored with the key")
    _flag(p, "base64", action="store_true", help="DATA is base64-encoded")
    _flag(p, "session", default="", help="session for -acquire / -release")
    _flag(p, "acquire", action="store_true", help="take the lock with -session")
    _flag(p, "release", action="store_true", help="release the lock held by -session")


def _kv_delete_flags(p: argparse.ArgumentParser) -> None:
    _cas_flags(p)
    _flag(p, "recurse", action="store_true", help="delete every key under the prefix")


def _remove_peer_flags(p: argparse.ArgumentParser) -> None:
    _flag(p, "address", default="", help="IP:port of the server to remove")
    _flag(p, "id", default="", help="ID of the server to remove")


def _transfer_flags(p: argparse.ArgumentParser) -> None:
    _flag(p, "id", default="", help="ID of the voter to hand leadership to (default: any)")


def _group(subparsers: Any, name: str, help: str, *, go_flags: bool = True) -> Any:
    """``pykvs ... NAME SUBCOMMAND``: the parser of NAME's subcommands (one is required; their
    flags are Go-style unless ``go_flags`` is False)."""
    parser = subparsers.add_parser(name, help=help)
    options: dict[str, Any] = {"parser_class": _GoFlagParser} if go_flags else {}
    group = parser.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND", **options)
    group.required = True
    return group


def register(subparsers: Any) -> None:
    """Add ``kv``, ``operator`` and ``snapshot`` to the ``pykvs`` command's subparsers; each
    leaf sets ``run(namespace) -> exit code`` as its default."""
    kv_sub = _group(subparsers, "kv", "pykvs kv get|put|delete|export|import")
    _command(kv_sub, "get", kv_get, "Retrieves or lists data from the KV store", _kv_get_flags)
    _command(kv_sub, "put", kv_put, "Sets or updates data in the KV store", _kv_put_flags)
    _command(kv_sub, "delete", kv_delete, "Removes data from the KV store", _kv_delete_flags)
    _command(kv_sub, "export", kv_export, "Exports a tree from the KV store as JSON")
    _command(kv_sub, "import", kv_import, "Imports a tree stored as JSON to the KV store")

    operator_sub = _group(subparsers, "operator", "pykvs operator raft ...", go_flags=False)
    raft_sub = _group(operator_sub, "raft", "list-peers|remove-peer|transfer-leader")
    _command(raft_sub, "list-peers", raft_list_peers, "Display the current Raft peer "
             "configuration")
    _command(raft_sub, "remove-peer", raft_remove_peer, "Remove a server from the Raft "
             "configuration", _remove_peer_flags)
    _command(raft_sub, "transfer-leader", raft_transfer_leader, "Transfer Raft leadership to "
             "another server", _transfer_flags)

    snapshot_sub = _group(subparsers, "snapshot", "pykvs snapshot save|restore|inspect")
    _command(snapshot_sub, "save", snapshot_save, "Saves snapshot of the servers' state")
    _command(snapshot_sub, "restore", snapshot_restore, "Restores snapshot of the servers' "
             "state")
    _command(snapshot_sub, "inspect", snapshot_inspect, "Displays information about a "
             "snapshot file")
