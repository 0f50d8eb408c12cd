"""Stored KV entries rendered in C, without decoding them in Python (csrc/transcode.c).

The state store keeps each entry encoded once, as msgpack ``[Value, Flags, CreateIndex,
ModifyIndex, LockIndex, Session]``; the tree hands a prefix listing over as one packed buffer
(layouts in docs/ARCHITECTURE.md).  This module turns those bytes straight into what leaves
the process:

- :func:`render_kv_json` / :func:`render_kv_entry_json`: the body of Consul's
  ``GET /v1/kv/<key>[?recurse]`` response, byte for byte what Consul (Go's ``json.Marshal``)
  sends;
- :func:`render_keys_json`: the body of a ``?keys`` response;
- :func:`pack_kv_listing_msgpack`: an RPC reply, a msgpack array of ``[key, entry]`` pairs with
  the stored entries embedded as they are.

This is the only module that touches the transcoder's part of ``pykvs._cradix``.  Each call
crosses into C twice: once to validate and measure the exact output size, once to write it
(given exactly that much room) into a per-thread scratch buffer, which is then copied into
the returned ``bytes``.  Malformed input raises :class:`ValueError` naming the record and what
is wrong.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterable
from typing import Any

from pykvs._cradix import ffi, lib
from pykvs.packed import RECORD

__all__ = [
    "pack_key_list",
    "pack_kv_listing_msgpack",
    "pack_listing",
    "render_keys_json",
    "render_kv_entry_json",
    "render_kv_json",
    "render_packed_keys_json",
]

BytesLike = bytes | bytearray | memoryview

_KEY_HEADER = struct.Struct("<I")  # key_len

# Items of a stored entry in stored order (enum transcode_field), and what each must be.
_FIELDS = (
    ("Value", "msgpack bin"),
    ("Flags", "a non-negative msgpack integer"),
    ("CreateIndex", "a non-negative msgpack integer"),
    ("ModifyIndex", "a non-negative msgpack integer"),
    ("LockIndex", "a non-negative msgpack integer"),
    ("Session", "msgpack str or nil"),
)

# The output is written completely before it is read, so skip cffi's zero-filling.
_new_output = ffi.new_allocator(should_clear_after_alloc=False)

# Outputs up to this size are written into a per-thread scratch buffer and copied into the
# returned bytes from there.  A fresh buffer per call costs more than the rendering itself:
# two large blocks per call make malloc hand memory back to the system and fault it in again.
_SCRATCH_LIMIT = 1 << 20
_scratch = threading.local()


def _output_buffer(size: int) -> Any:
    if size > _SCRATCH_LIMIT:
        return _new_output("uint8_t[]", size)
    buffer = getattr(_scratch, "buffer", None)
    if buffer is None or len(buffer) < size:
        buffer = _scratch.buffer = _new_output("uint8_t[]", max(4096, 1 << (size - 1).bit_length()))
    return buffer


def _buffer(data: object, name: str) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"{name} must be bytes, not {type(data).__name__}")
    return ffi.from_buffer("uint8_t[]", data)


def _entry_problem(status: int, field: int) -> str:
    if status == lib.TRANSCODE_ERR_NOT_ENTRY:
        return "the stored entry is not a msgpack array of 6 items"
    if status == lib.TRANSCODE_ERR_FIELD_TYPE:
        name, wanted = _FIELDS[field]
        return f"{name} (entry item {field}) is not {wanted}"
    if status == lib.TRANSCODE_ERR_FIELD_TRUNCATED:
        name, _ = _FIELDS[field]
        return f"{name} (entry item {field}) runs past the end of the stored entry"
    if status == lib.TRANSCODE_ERR_TRAILING_BYTES:
        return "bytes follow the 6-item array in the stored entry"
    return f"transcoder status {status}"


def _record_problem(data: bytes, err: Any, header: struct.Struct, what: str) -> str:
    """Says which record of a packed listing (or key list) is bad, and how."""
    offset = err.offset
    left = len(data) - offset
    where = f"{what} {err.record} at byte {offset}"
    if err.status == lib.TRANSCODE_ERR_RECORD_HEADER:
        return f"{where}: truncated header ({left} bytes left, a header is {header.size})"
    lengths = header.unpack_from(data, offset)
    if err.status == lib.TRANSCODE_ERR_RECORD_BODY:
        sizes = [f"key_len {lengths[0]}"]
        if header is RECORD:
            sizes.append(f"value_len {lengths[1]}")
        verb = "runs" if len(sizes) == 1 else "run"
        return (
            f"{where}: {' + '.join(sizes)} {verb} past the end"
            f" ({left - header.size} bytes left after the header)"
        )
    key_start = offset + header.size
    key = bytes(data[key_start : key_start + lengths[0]])
    return f"{where} (key {key[:64]!r}): {_entry_problem(err.status, err.field)}"


def _check(status: int, err: Any, describe: Callable[[Any], str]) -> None:
    if status == lib.TRANSCODE_OK:
        return
    if status == lib.TRANSCODE_ERR_TOO_LARGE:
        raise ValueError("the rendered output would be too large for its format")
    if status == lib.TRANSCODE_ERR_OUTPUT_SPACE:
        # The write pass got the size the measuring pass reported: this is a bug in C.
        raise RuntimeError("the transcoder's output outgrew the size it measured")
    raise ValueError(describe(err))


def _render(
    call: Callable[..., int], args: tuple[Any, ...], describe: Callable[[Any], str]
) -> bytes:
    """Measures, then writes into exactly that much room; ``describe(err)`` words an input error."""
    out_len = ffi.new("size_t *")
    err = ffi.new("transcode_error *")
    _check(call(*args, ffi.NULL, 0, out_len, err), err, describe)
    size = out_len[0]
    out = _output_buffer(size)
    _check(call(*args, out, size, out_len, err), err, describe)
    return ffi.buffer(out, out_len[0])[:]


def _render_packed(
    call: Callable[..., int], packed: BytesLike, name: str, header: struct.Struct, what: str
) -> bytes:
    source = _buffer(packed, name)

    def describe(err: Any) -> str:
        data = ffi.buffer(source)[:]
        return f"{name}: {_record_problem(data, err, header, what)}"

    return _render(call, (source, len(source)), describe)


def render_kv_json(packed: BytesLike) -> bytes:
    """Consul's ``GET /v1/kv/<prefix>?recurse`` body for a packed listing of stored entries.

    ``[{"LockIndex":..,"Key":..,"Flags":..,"Value":..,"CreateIndex":..,"ModifyIndex":..},..]``
    with Session only when set and Value base64 (``null`` when empty).  An empty listing gives
    ``[]``; Consul answers 404 there instead, which is the HTTP layer's decision.
    """
    return _render_packed(lib.transcode_kv_json, packed, "packed", RECORD, "record")


def pack_kv_listing_msgpack(packed: BytesLike) -> bytes:
    """An RPC reply for a packed listing: msgpack ``[[key (bin), entry], ...]``.

    Each entry is the stored msgpack array embedded as is (validated, not re-encoded), so
    ``msgpack.unpackb(reply)`` gives
    ``[[key, [value, flags, create, modify, lock, session]], ...]``.
    """
    return _render_packed(lib.transcode_kv_msgpack, packed, "packed", RECORD, "record")


def render_kv_entry_json(key: BytesLike, entry: BytesLike) -> bytes:
    """Consul's ``GET /v1/kv/<key>`` body for one key and its stored entry: a one-element array."""
    key_buffer = _buffer(key, "key")
    entry_buffer = _buffer(entry, "entry")
    return _render(
        lib.transcode_kv_entry_json,
        (key_buffer, len(key_buffer), entry_buffer, len(entry_buffer)),
        lambda err: f"entry for key {bytes(key)[:64]!r}: {_entry_problem(err.status, err.field)}",
    )


def render_packed_keys_json(packed_keys: BytesLike) -> bytes:
    """Consul's ``?keys`` body (a JSON array of strings) for keys packed by pack_key_list."""
    return _render_packed(lib.transcode_keys_json, packed_keys, "packed_keys", _KEY_HEADER, "key")


def render_keys_json(keys: Iterable[BytesLike]) -> bytes:
    """Consul's ``?keys`` body (a JSON array of strings) for a list of keys."""
    return render_packed_keys_json(pack_key_list(keys))


def pack_key_list(keys: Iterable[BytesLike]) -> bytes:
    """Keys in the packed key layout: ``key_len u32 LE | key``, back to back."""
    parts: list[BytesLike] = []
    pack_header = _KEY_HEADER.pack
    for number, key in enumerate(keys):
        if not isinstance(key, bytes | bytearray | memoryview):
            raise TypeError(f"keys[{number}] must be bytes, not {type(key).__name__}")
        parts.append(pack_header(len(key)))
        parts.append(key)
    return b"".join(parts)


def pack_listing(records: Iterable[tuple[BytesLike, BytesLike, int]]) -> bytes:
    """Records ``(key, value, index)`` in the packed listing layout that the tree returns.

    For tests, benchmarks and callers that hold records in Python; the tree builds the same
    bytes in C (``Tree.list_prefix_packed``).
    """
    parts: list[BytesLike] = []
    pack_header = RECORD.pack
    for number, (key, value, index) in enumerate(records):
        for name, item in (("key", key), ("value", value)):
            if not isinstance(item, bytes | bytearray | memoryview):
                raise TypeError(
                    f"records[{number}] {name} must be bytes, not {type(item).__name__}"
                )
        if not isinstance(index, int) or not 0 <= index < 1 << 64:
            raise ValueError(f"records[{number}] index must be an int in [0, 2**64), got {index!r}")
        parts.append(pack_header(len(key), len(value), index))
        parts.append(key)
        parts.append(value)
    return b"".join(parts)
