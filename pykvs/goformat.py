"""Go's text formats, as Consul's messages and APIs use them: durations ("1m30s"), ``%q``
quoting, RFC 3339 times. Pure functions, imported by every layer that speaks to Consul clients
(acl, state, server, http, cli), so they live below all of them."""

from __future__ import annotations

import re
from datetime import UTC, datetime

NS_PER_SECOND = 1_000_000_000


class DurationError(ValueError):
    """Text that Go's ``time.ParseDuration`` refuses; the message is Go's."""


_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek mu
    "ms": 1_000_000,
    "s": NS_PER_SECOND,
    "m": 60 * NS_PER_SECOND,
    "h": 3600 * NS_PER_SECOND,
}
_DURATION_PART = re.compile(r"(\d*)(?:\.(\d*))?([a-zA-Z\u00b5\u03bc]+)")


def parse_go_duration(text: str) -> int:
    """Parse Go's ``time.ParseDuration`` syntax ("90s", "1m30s", "1.5h", "-2ms") into ns."""
    if not isinstance(text, str):
        raise TypeError(f"duration must be str, not {type(text).__name__}")
    invalid = DurationError(f'time: invalid duration "{text}"')
    body = text
    sign = 1
    if body[:1] in "+-" and body:
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return 0
    if not body:
        raise invalid
    total = 0
    pos = 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None or (not match.group(1) and not match.group(2)):
            raise invalid
        whole, frac, unit = match.groups()
        if unit not in _UNIT_NS:
            raise DurationError(f'time: unknown unit "{unit}" in duration "{text}"')
        scale = _UNIT_NS[unit]
        total += int(whole or "0") * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
        pos = match.end()
    return sign * total


def go_quote(text: bytes | str) -> str:
    """Go's ``%q`` of a string: double-quoted, escapes for quotes, backslashes, controls."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif not ch.isprintable() and code > 0x7F:
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def format_rfc3339(ns: int) -> str:
    """Go's RFC3339Nano for a Unix time in nanoseconds, in UTC (trailing zeros trimmed)."""
    seconds, frac = divmod(ns, NS_PER_SECOND)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{frac:09d}".rstrip("0")
    return f"{stamp}.{digits}Z" if digits else f"{stamp}Z"


def parse_rfc3339(text: str) -> int:
    """Nanoseconds since the epoch from RFC 3339 text (``Z`` or an offset, up to 9 decimals)."""
    match = re.fullmatch(
        r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})", text
    )
    if match is None:
        raise ValueError(f"invalid RFC 3339 time {text!r}")
    base, frac, zone = match.groups()
    stamp = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone))
    return int(stamp.timestamp()) * NS_PER_SECOND + int((frac or "").ljust(9, "0"))
