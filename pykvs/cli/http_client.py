"""The commands' HTTP client: the few calls they make to an agent's HTTP API, with the consul
api client's error texts, and a progress bar for the large bodies of ``snapshot``."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from pykvs.cli.command import CommandError
from pykvs.cli.flags import http_address

CHUNK = 256 * 1024

Progress = Callable[[int, int | None], None]  # (bytes done, total bytes if known)


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
                progress: Progress | None = None,
                answers: tuple[int, ...] = ()) -> tuple[int, dict[str, str], bytes]:
        """``(status, headers, body)``; a status other than 2xx raises CommandError, except a
        GET's empty 404 and the statuses in ``answers``."""
        url = self._url(method, path, params, read)
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
            data = exc.read()
            if exc.code in answers:
                return exc.code, dict(exc.headers), data
            text = data.decode("utf-8", errors="replace")
            if exc.code == 404 and method == "GET" and not text:
                return 404, dict(exc.headers), b""
            raise CommandError(f"Unexpected response code: {exc.code} ({text.strip()})") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CommandError(f'{method} "{url}": {reason}') from None

    def _url(self, method: str, path: str, params: Sequence[tuple[str, str]],
             read: bool) -> str:
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
        return url

    def json(self, method: str, path: str, params: Sequence[tuple[str, str]] = (),
             body: bytes | None = None, *, read: bool = False) -> Any:
        status, _, data = self.request(method, path, params, body, read=read)
        return None if status == 404 else json.loads(data or b"null")


def client_from(ns: argparse.Namespace) -> HTTPClient:
    """The client the HTTP flags of a command (pykvs.cli.flags.http_flags) describe."""
    return HTTPClient(http_address(ns), ns.token, ns.datacenter, ns.stale)


def _read_all(resp: Any, progress: Progress | None) -> bytes:
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

    def __init__(self, body: bytes, progress: Progress) -> None:
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


def progress_bar(label: str, stream: TextIO | None = None) -> Progress:
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
