"""The snapshot stream: the whole state written out, and read back into new tables.

Format 2 (format 1, written before the ACL tables existed, still restores with them empty):
``MAGIC | u32 header length | header | frames | u32 CRC-32``.  The header is msgpack
``{"format", "index", "term"}``; each frame is ``u8 tag | u32 length | payload``: table frames
carry the packed listing layout (docs/ARCHITECTURE.md) of that table, a meta frame the table
indexes and lock-delays, and the end frame the record counts.  The CRC covers every byte before
it.  All integers are little-endian.

Writing (:class:`SnapshotStream`) reads one immutable version, so it may run while the writer
goes on.  Reading (:func:`read_snapshot`) builds new trees aside, one C call per table frame,
and hands them back only once the CRC and the record counts check out; publishing them is the
caller's (``StateStore.replace``).
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, TypeVar

import msgpack

from pykvs import radix
from pykvs.packed import RECORD
from pykvs.state.sessions import LockDelays
from pykvs.state.store import TABLES, StateSnapshot

T = TypeVar("T")

SNAPSHOT_MAGIC = b"PYKVSNAP"
SNAPSHOT_FORMAT = 2
_READABLE_FORMATS = (1, SNAPSHOT_FORMAT)  # 1: no ACL tables
_TAG_END = 0
_TAG_META = 1
_TABLE_TAGS = {name: 10 + i for i, name in enumerate(TABLES)}
_TAG_TABLES = {tag: name for name, tag in _TABLE_TAGS.items()}
_U32 = struct.Struct("<I")
_FRAME = struct.Struct("<BI")
_PAGE_RECORDS = 8192  # records per table frame
_MAX_HEADER = 1 << 20
_MAX_FRAME = 1 << 31  # refuse absurd lengths before allocating


class SnapshotError(ValueError):
    """A snapshot stream that is corrupt, truncated or of an unknown format."""


@dataclass(frozen=True, slots=True)
class SnapshotHeader:
    format: int
    index: int
    term: int


# ------------------------------------------------------------------------------- writing
class SnapshotStream:
    """A point-in-time copy of the state, taken in O(1); stream it while writes continue."""

    def __init__(self, version: StateSnapshot, lock_delays: LockDelays, term: int) -> None:
        self.version = version
        self.index = version.index
        self.term = term
        # The writer replaces entries of the delay dict, so copy it now (it is small).
        self._delays = (lock_delays.items(), lock_delays.prune_at)

    def chunks(self) -> Iterator[bytes]:
        """The snapshot stream, in pieces of at most a few hundred KB."""
        crc = 0
        for piece in self._pieces():
            crc = zlib.crc32(piece, crc)
            yield piece
        yield _U32.pack(crc)

    def write_to(self, out: BinaryIO) -> int:
        """Write the whole stream to ``out``; returns the number of bytes written."""
        written = 0
        for chunk in self.chunks():
            out.write(chunk)
            written += len(chunk)
        return written

    def to_bytes(self) -> bytes:
        return b"".join(self.chunks())

    def _pieces(self) -> Iterator[bytes]:
        header = msgpack.packb({"format": SNAPSHOT_FORMAT, "index": self.index, "term": self.term})
        yield SNAPSHOT_MAGIC + _U32.pack(len(header)) + header
        version = self.version
        meta = {
            "kvs_index": version.kvs_index,
            "tombstones_index": version.tombstones_index,
            "sessions_index": version.sessions_index,
            "lock_delays": [[k, t] for k, t in self._delays[0]],
            "lock_delays_prune_at": self._delays[1],
        }
        yield _frame(_TAG_META, msgpack.packb(meta, use_bin_type=True))
        counts = {}
        for name in TABLES:
            tree = version.table(name)
            counts[name] = len(tree)
            for page in _table_pages(tree):
                yield _frame(_TABLE_TAGS[name], page)
        yield _frame(_TAG_END, msgpack.packb(counts))


def _frame(tag: int, payload: bytes) -> bytes:
    return _FRAME.pack(tag, len(payload)) + payload


def _table_pages(tree: Any) -> Iterator[bytes]:
    """The tree's records in key order, as packed-listing pages of a bounded size."""
    lower = b""
    unpack = RECORD.unpack_from
    header = RECORD.size
    while True:
        page = tree.seek_packed(lower, _PAGE_RECORDS)
        if not page:
            return
        yield page
        # Walk the record headers to the last key: the next page starts just after it.
        offset = last = count = 0
        while offset < len(page):
            klen, vlen, _ = unpack(page, offset)
            last = offset
            offset += header + klen + vlen
            count += 1
        if count < _PAGE_RECORDS:
            return
        (klen, _, _) = unpack(page, last)
        lower = page[last + header : last + header + klen] + b"\x00"


# ------------------------------------------------------------------------------- reading
class _Reader:
    """Reads a snapshot stream, tracking the CRC of what it consumed."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.crc = 0

    def take(self, n: int, what: str) -> bytes:
        data = self.stream.read(n)
        if len(data) != n:
            raise SnapshotError(
                f"snapshot truncated: expected {n} bytes of {what}, got {len(data)}"
            )
        self.crc = zlib.crc32(data, self.crc)
        return data


def _guarded(read: Callable[[IO[bytes]], T], stream: IO[bytes] | bytes) -> T:
    """``read(stream)``, any failure of a corrupt stream reported as SnapshotError."""
    if isinstance(stream, bytes | bytearray | memoryview):
        stream = io.BytesIO(bytes(stream))
    try:
        return read(stream)
    except SnapshotError:
        raise
    except Exception as exc:  # a corrupt frame may fail anywhere while decoding
        raise SnapshotError(f"snapshot is corrupt: {exc!r}") from None


def read_snapshot(stream: IO[bytes] | bytes) -> tuple[SnapshotHeader, StateSnapshot, LockDelays]:
    """Parse and verify a snapshot stream into a new, unpublished state."""
    return _guarded(_read_snapshot, stream)


def read_header(stream: IO[bytes] | bytes) -> SnapshotHeader:
    """The header of a snapshot stream, without reading the rest (its format is not checked)."""
    return _guarded(lambda s: _read_header(_Reader(s)), stream)


def _read_header(reader: _Reader) -> SnapshotHeader:
    if reader.take(len(SNAPSHOT_MAGIC), "magic") != SNAPSHOT_MAGIC:
        raise SnapshotError("not a pykvs snapshot (bad magic)")
    (header_len,) = _U32.unpack(reader.take(4, "header length"))
    if header_len > _MAX_HEADER:
        raise SnapshotError(f"snapshot header length {header_len} is implausible")
    header = msgpack.unpackb(reader.take(header_len, "header"))
    return SnapshotHeader(int(header["format"]), int(header["index"]), int(header["term"]))


def _load_records(txn: radix.Txn, page: bytes, table: str) -> int:
    """Insert a packed-listing page into a tree transaction (one C call); returns the
    record count. A malformed page inserts nothing and raises SnapshotError."""
    try:
        return txn.insert_packed(page)
    except ValueError as exc:
        raise SnapshotError(f"snapshot table {table}: {exc}") from None


def _read_frames(reader: _Reader) -> tuple[dict[str, Any], dict[str, Any]]:
    """The frames, the end frame and the checksum: ``(trees by table name, meta)``."""
    txns = {name: radix.Tree().txn() for name in TABLES}
    loaded = dict.fromkeys(TABLES, 0)
    meta = None
    while True:
        tag, length = _FRAME.unpack(reader.take(_FRAME.size, "frame header"))
        if length > _MAX_FRAME:
            raise SnapshotError(f"snapshot frame length {length} is implausible")
        payload = reader.take(length, "frame")
        if tag == _TAG_END:
            counts = msgpack.unpackb(payload)
            break
        if tag == _TAG_META:
            meta = msgpack.unpackb(payload)
        elif tag in _TAG_TABLES:
            name = _TAG_TABLES[tag]
            loaded[name] += _load_records(txns[name], payload, name)
        else:
            raise SnapshotError(f"snapshot has an unknown frame tag {tag}")
    _check_trailer(reader)
    if meta is None:
        raise SnapshotError("snapshot has no meta frame")
    if {**dict.fromkeys(TABLES, 0), **counts} != loaded:  # format 1 counts no ACL table
        raise SnapshotError(f"snapshot record counts {loaded} differ from its trailer {counts}")
    trees = {name: txn.commit()[0] for name, txn in txns.items()}
    for name, tree in trees.items():
        if len(tree) != loaded[name]:  # a repeated key replaced an earlier record
            raise SnapshotError(f"snapshot table {name} repeats a key: {loaded[name]} records "
                                f"make {len(tree)} entries")
    return trees, meta


def _check_trailer(reader: _Reader) -> None:
    """The CRC-32 of all that was read, and nothing after it."""
    expected_crc = reader.crc
    trailer = reader.stream.read(4)
    if len(trailer) != 4:
        raise SnapshotError("snapshot truncated: the checksum is missing")
    if _U32.unpack(trailer)[0] != expected_crc:
        raise SnapshotError("snapshot checksum mismatch: the stream is corrupt")
    if reader.stream.read(1):
        raise SnapshotError("snapshot has bytes after its checksum")


def _read_snapshot(stream: IO[bytes]) -> tuple[SnapshotHeader, StateSnapshot, LockDelays]:
    reader = _Reader(stream)
    header = _read_header(reader)
    if header.format not in _READABLE_FORMATS:
        raise SnapshotError(f"snapshot format {header.format} is not supported")
    trees, meta = _read_frames(reader)
    version = StateSnapshot.from_tables(
        trees,
        int(meta["kvs_index"]),
        int(meta["tombstones_index"]),
        int(meta["sessions_index"]),
        header.index,
    )
    delays = LockDelays(
        {bytes(k): int(t) for k, t in meta["lock_delays"]}, int(meta["lock_delays_prune_at"])
    )
    return header, version, delays


__all__ = [
    "SNAPSHOT_FORMAT",
    "SNAPSHOT_MAGIC",
    "SnapshotError",
    "SnapshotHeader",
    "SnapshotStream",
    "read_header",
    "read_snapshot",
]
