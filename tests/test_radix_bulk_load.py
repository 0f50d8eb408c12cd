"""Txn.insert_packed, the bulk loader, and the FSM restore that stands on it."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pykvs import radix
from pykvs.fsm import FSM, SNAPSHOT_MAGIC, SnapshotError, kv_command
from pykvs.radix import TransactionClosed, Tree

_RECORD = struct.Struct("<IIQ")


def pack(records: list[tuple[bytes, bytes, int]]) -> bytes:
    return b"".join(_RECORD.pack(len(k), len(v), i) + k + v for k, v, i in records)


def built(records: list[tuple[bytes, bytes, int]]) -> Tree:
    txn = Tree().txn()
    for key, value, index in records:
        txn.insert(key, value, index)
    return txn.commit()[0]


records = st.lists(
    st.tuples(
        st.lists(st.sampled_from(b"ab/\x00"), max_size=6).map(bytes),
        st.binary(max_size=40),
        st.integers(0, 2**64 - 1),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(base=records, page=records)
def test_bulk_load_equals_inserting_one_by_one(base, page) -> None:
    """Same tree, same fired ids, as the records inserted in page order (duplicates too)."""
    start = built(base)
    one_by_one, bulk = start.txn(), start.txn()
    for key, value, index in page:
        one_by_one.insert(key, value, index)
    assert bulk.insert_packed(pack(page)) == len(page)
    expected, expected_fired = one_by_one.commit()
    got, fired = bulk.commit()
    assert got.list_prefix_packed() == expected.list_prefix_packed()
    assert len(got) == len(expected) and got.max_index() == expected.max_index()
    assert fired == expected_fired
    model = {key: (value, index) for key, value, index in base + page}  # later ones win
    assert got.list_prefix() == [(k, *model[k]) for k in sorted(model)]


def test_a_listing_loads_back_byte_for_byte() -> None:
    tree = built([(b"svc/%d/k\x00%d" % (i % 13, i), bytes(i % 300), i * 3) for i in range(3000)])
    page = tree.list_prefix_packed()
    txn = Tree().txn()
    assert txn.insert_packed(bytearray(page)) == 3000  # bytes-likes are accepted
    assert txn.insert_packed(b"") == 0
    copy, _ = txn.commit()
    assert copy.list_prefix_packed() == page and copy.count(b"svc/1/") == tree.count(b"svc/1/")


def test_malformed_page_names_the_record_and_inserts_nothing() -> None:
    page = pack([(b"a", b"1", 1), (b"bb", b"22", 2)])
    second = 16 + 2
    txn = Tree().txn()
    with pytest.raises(ValueError, match=f"header cut short at byte {second}"):
        txn.insert_packed(page[: second + 7])
    with pytest.raises(ValueError, match=f"record at byte {second} runs past"):
        txn.insert_packed(page[:-1])
    assert len(txn) == 0
    with pytest.raises(TypeError, match="page"):
        txn.insert_packed("not bytes")  # type: ignore[arg-type]
    txn.commit()
    with pytest.raises(TransactionClosed):
        txn.insert_packed(page)
    assert radix.Tree().txn().insert_packed(page) == 2


def _frames(data: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
    """A snapshot stream cut into (everything before the frames, [(tag, payload)])."""
    (header_len,) = struct.unpack_from("<I", data, len(SNAPSHOT_MAGIC))
    off = len(SNAPSHOT_MAGIC) + 4 + header_len
    head, frames = data[:off], []
    while off < len(data) - 4:
        tag, length = struct.unpack_from("<BI", data, off)
        frames.append((tag, data[off + 5 : off + 5 + length]))
        off += 5 + length
    return head, frames


def _stream(head: bytes, frames: list[tuple[int, bytes]]) -> bytes:
    body = head + b"".join(struct.pack("<BI", tag, len(p)) + p for tag, p in frames)
    return body + struct.pack("<I", zlib.crc32(body))


def test_restore_refuses_a_malformed_table_page_behind_a_valid_checksum() -> None:
    """The checksum is right, so only the page check stands between the stream and the
    state: the restore must be refused and the current state left as it was."""
    source = FSM()
    for i in range(1, 50):
        source.apply(i, kv_command("set", b"k/%d" % i, b"v" * i))
    head, frames = _frames(source.snapshot(term=3).to_bytes())
    assert _stream(head, frames) == source.snapshot(term=3).to_bytes()
    table = next(i for i, (tag, _) in enumerate(frames) if tag >= 10 and frames[i][1])

    target = FSM()
    target.apply(1, kv_command("set", b"mine", b"keep"))
    before = target.store.snapshot()
    for cut in (1, 9, 20):
        broken = list(frames)
        broken[table] = (frames[table][0], frames[table][1][:-cut])
        with pytest.raises(SnapshotError, match="snapshot table kvs: page: "):
            target.restore(_stream(head, broken))
        assert target.store.snapshot() is before
    doubled = list(frames)
    doubled.insert(table, frames[table])  # well formed, but the counts no longer agree
    with pytest.raises(SnapshotError, match="record counts"):
        target.restore(_stream(head, doubled))
    assert target.store.snapshot() is before
    target.restore(_stream(head, frames))
    assert target.store.kv_get(b"k/7")[1].value == b"v" * 7
