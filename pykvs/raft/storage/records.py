"""The records of the LMDB store: keys, the sealed (CRC-checked) encoding, and the log's state.

Record layout
-------------
``seal(key, payload) = payload || u32_be(crc32(key || payload))`` -- the key is inside the CRC,
so a record copied or misdirected to another key is caught as well as a flipped bit.

``logs``       key ``u64_be(index)`` -> ``seal(msgpack([term, type, data]))``
``stable``     key ``b"format"``        -> ``seal(msgpack(1))``
               key ``b"hard_state"``    -> ``seal(msgpack([term, vote, commit]))``
               key ``b"log_base"``      -> ``seal(msgpack([index, term]))``: the last compacted
                                           entry, so ``term(first_index() - 1)`` answers
               key ``b"snapshot_meta"`` -> ``seal(msgpack(SnapshotMeta.to_wire()))``: the snapshot
                                           the log was compacted to or reset from
               key ``b"fact/" + name``  -> ``seal(msgpack(value))``: small durable facts
``snapshots``  key ``b"m" + u64_be(index)`` -> ``seal(msgpack([meta_wire, body_id, n_chunks]))``
               key ``b"b" + u64_be(body_id) + u32_be(chunk_no)`` -> ``seal(chunk)``
               A body is written chunk by chunk under a fresh ``body_id``; it becomes visible only
               when its ``m`` record is written, in the same transaction as its last chunk. The
               newest two snapshots (by index) are kept; chunks no ``m`` record names (a sink that
               crashed or was aborted) are swept at open.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import lmdb
import msgpack

from pykvs._pack import packb
from pykvs.raft.types import Entry, HardState, SnapshotMeta

# Transactions here never use buffers=True: values are bytes copied out of the map.
Txn: TypeAlias = "lmdb.Transaction[bytes]"

FORMAT_VERSION = 1
DEFAULT_MAP_SIZE = 256 << 20
DEFAULT_MAX_MAP_SIZE = 64 << 30
DEFAULT_CHUNK_SIZE = 1 << 20
# Bounds on one coalesced write transaction (group commit).
MAX_BATCH_JOBS = 1024
MAX_BATCH_BYTES = 64 << 20

K_FORMAT = b"format"
K_HARD_STATE = b"hard_state"
K_LOG_BASE = b"log_base"
K_SNAPSHOT_META = b"snapshot_meta"
K_FACT = b"fact/"
K_SNAP_META = b"m"
K_SNAP_BODY = b"b"

def index_key(index: int) -> bytes:
    return index.to_bytes(8, "big")


def seal(key: bytes, payload: bytes) -> bytes:
    return payload + zlib.crc32(payload, zlib.crc32(key)).to_bytes(4, "big")


def unseal(key: bytes, value: bytes) -> bytes | None:
    """The payload of a sealed record, or None when its CRC does not match."""
    if len(value) < 4:
        return None
    payload = value[:-4]
    if zlib.crc32(payload, zlib.crc32(key)).to_bytes(4, "big") != value[-4:]:
        return None
    return payload


def pack(obj: Any) -> bytes:
    return packb(obj)


def unpack(payload: bytes) -> Any:
    return msgpack.unpackb(payload, raw=False, strict_map_key=False)


def encode_entry(entry: Entry) -> bytes:
    return seal(index_key(entry.index), pack((entry.term, int(entry.type), entry.data)))


@dataclass(frozen=True, slots=True)
class LogState:
    """The log's bounds and small durable state, swapped as a whole after each commit."""

    base_index: int  # last compacted index (0 when never compacted)
    base_term: int
    last: int  # last index held (== base_index when the log is empty)
    hard_state: HardState
    snapshot_meta: SnapshotMeta | None

    @property
    def first(self) -> int:
        return self.base_index + 1


def entries_size(entries: Sequence[Entry]) -> int:
    return sum(len(e.data) for e in entries)


def meta_key(index: int) -> bytes:
    return K_SNAP_META + index_key(index)


def body_prefix(body_id: int) -> bytes:
    return K_SNAP_BODY + body_id.to_bytes(8, "big")


def chunk_key(body_id: int, chunk_no: int) -> bytes:
    return body_prefix(body_id) + chunk_no.to_bytes(4, "big")

