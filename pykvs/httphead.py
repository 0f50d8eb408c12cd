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

__all__ = ["Head", "json_shape", "parse_head"]

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


def json_shape(data: bytes, max_depth: int) -> tuple[int, int, int]:
    """``(depth, containers, commas)`` of the JSON text ``data``: how deep its arrays and
    objects nest (counting stops at ``max_depth + 1``), how many there are, and how many
    commas separate values (brackets and commas inside strings are text). One C pass, before
    a decoder that recurses and allocates sees the bytes."""
    shape = ffi.new("httphead_json *")
    lib.httphead_json_scan(ffi.from_buffer(data), len(data), max_depth, shape)
    return int(shape.depth), int(shape.containers), int(shape.commas)
