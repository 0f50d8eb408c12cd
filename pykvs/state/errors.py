"""Errors the state store hands back to writers, worded as Consul words them."""

from __future__ import annotations


class StateError(Exception):
    """A write that Consul refuses with an error (not a plain False)."""


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
