"""The fast HTTP front's request-head check, in C (csrc/httphead.c; the grammar is in
csrc/httphead.h).

:func:`parse_head` looks at the first request in a connection's buffer and says whether it is
still incomplete, of a shape the front does not serve, or a fast shape, and then where its
parts are. With 64 writes in flight the Python version (two regular expressions and a loop
over the headers) was about a tenth of the event loop's samples; this one takes 0.36 us.

This is the only module that touches the head checker's part of ``pykvs._cradix``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from pykvs._cradix import ffi, lib

__all__ = ["Head", "json_depth", "parse_head"]

# (method, key, query or None, content_length, token or None, authorization or None, close,
#  body_offset): see csrc/httphead_py.h.
Head = tuple[str, str, str | None, int, str | None, str | None, bool, int]

if lib.httphead_py_install() != 0:
    raise ImportError("pykvs._cradix: could not install the HTTP head checker")

# The C function itself (no Python frame in between: it runs once per request).
parse_head: Callable[[bytearray | bytes, int], Head | bool | None] = \
    sys.modules["pykvs._cradix_fast"].parse_head
"""``parse_head(buffer, max_head)``: the first request in ``buffer``: None while its head is
incomplete (and within ``max_head`` bytes), False when it is not of a fast shape, else its
:data:`Head`."""


def json_depth(data: bytes, limit: int) -> int:
    """The deepest nesting of JSON arrays and objects in ``data`` (brackets inside strings
    are text; counting stops at ``limit + 1``), before a decoder that recurses sees it."""
    return int(lib.httphead_json_depth(ffi.from_buffer(data), len(data), limit))
