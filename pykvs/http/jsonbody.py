"""JSON request bodies, decoded within bounds, refused in Go's words.

Python's decoder recurses once per nested array or object (100,000 of them were a
RecursionError, a 500), reads ``NaN`` and ``Infinity``, which Go's encoding/json refuses, turns
``1e999`` into an infinite float, and answers a 5,000-digit integer with the interpreter's own
complaint; and a body of empty arrays (``[[],[],...]``) became 22 times its size in objects.
``load_json`` looks at the body in C before decoding (csrc/httphead.c, ``httphead_json_scan``):
nesting deeper than 64, more than 1,024 + 1 per 64 bytes arrays and objects, or more than
4,096 + 1 per 32 bytes values, is refused, so what is decoded stays a small multiple of the
bytes received (tests/test_hostile_http.py measures it); numbers are decoded as Go would into a
64-bit field. Every refusal is a ``JSONBodyError`` (a ValueError, so an endpoint's 400) whose
text is Go's where Go has one.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pykvs.httphead import json_shape

__all__ = ["MAX_JSON_DEPTH", "JSONBodyError", "load_json"]

MAX_JSON_DEPTH = 64  # arrays and objects inside each other; no Consul body needs more than 4
# Arrays and objects, and values (commas), in a body of n bytes: a fixed allowance that every
# real body stays within (a 128-operation transaction has 257 and 512), plus one per 64 / 32
# bytes, so that a body made only of small values cannot decode into many times its size.
CONTAINERS_FIXED, BYTES_PER_CONTAINER = 1024, 64
VALUES_FIXED, BYTES_PER_VALUE = 4096, 32
_MAX_INT_DIGITS = 20  # a uint64 has at most 20 digits (an int64 19)

# Python's decoder messages, as Go's scanner words the same place (encoding/json/scanner.go).
_CONTEXTS = {
    "Expecting value": "looking for beginning of value",
    "Expecting property name enclosed in double quotes": "looking for beginning of object "
                                                         "key string",
    "Expecting ':' delimiter": "after object key",
    "Expecting ',' delimiter": "after value",
    "Extra data": "after top-level value",
    "Invalid control character at": "in string literal",
    "Invalid \\escape": "in string escape code",
    "Invalid \\uXXXX escape": "in \\u hexadecimal character escape",
}


class JSONBodyError(ValueError):
    """A request body that is not JSON pykvs accepts (the text is Go's decoder's)."""


def _constant(name: str) -> Any:
    if name.startswith("-"):
        raise JSONBodyError("invalid character 'I' in numeric literal")
    raise JSONBodyError(f"invalid character '{name[0]}' looking for beginning of value")


def _number(text: str) -> JSONBodyError:
    shown = text if len(text) <= 32 else f"{text[:32]}..."
    return JSONBodyError(f"json: cannot unmarshal number {shown} into a 64-bit field")


def _int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise _number(text)
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _number(text)
    return value


def _syntax_error(exc: json.JSONDecodeError) -> JSONBodyError:
    if exc.pos >= len(exc.doc):
        return JSONBodyError("unexpected end of JSON input")
    context = next((words for start, words in _CONTEXTS.items() if exc.msg.startswith(start)),
                   "in JSON input")
    char = exc.doc[exc.pos]
    shown = "'\\''" if char == "'" else f"'{char}'" if char.isprintable() else repr(char)
    return JSONBodyError(f"invalid character {shown} {context}")


def load_json(data: bytes) -> Any:
    """``data`` decoded as Go's encoding/json would (invalid UTF-8 is U+FFFD); refused with
    JSONBodyError when nested deeper than MAX_JSON_DEPTH, when it holds too many arrays,
    objects or values for its size, when a number does not fit 64 bits or is NaN/Infinity, or
    when it is not JSON."""
    depth, containers, commas = json_shape(data, MAX_JSON_DEPTH)
    if depth > MAX_JSON_DEPTH:
        raise JSONBodyError(f"exceeded max depth: JSON nested deeper than {MAX_JSON_DEPTH} "
                            f"levels")
    most_containers = CONTAINERS_FIXED + len(data) // BYTES_PER_CONTAINER
    most_values = VALUES_FIXED + len(data) // BYTES_PER_VALUE
    if containers > most_containers or commas > most_values:
        raise JSONBodyError(f"too many values: {containers} arrays and objects and {commas + 1} "
                            f"values in {len(data)} bytes, at most {most_containers} and "
                            f"{most_values}")
    try:
        return json.loads(data.decode("utf-8", errors="replace"), parse_constant=_constant,
                          parse_int=_int, parse_float=_float)
    except json.JSONDecodeError as exc:
        raise _syntax_error(exc) from None
