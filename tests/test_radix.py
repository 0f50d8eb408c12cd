"""pykvs.radix: the C tree through its Python surface, case by case."""

from __future__ import annotations

import gc
import struct
import threading

import pytest

from pykvs import radix
from pykvs.radix import TransactionClosed, Tree


def build(entries: dict[bytes, tuple[bytes, int]], base: Tree | None = None) -> Tree:
    txn = (base or Tree()).txn()
    for key, (value, index) in entries.items():
        txn.insert(key, value, index)
    tree, _ = txn.commit()
    return tree


def unpack_packed(buf: bytes) -> list[tuple[bytes, bytes, int]]:
    """The packed layout of docs/ARCHITECTURE.md, decoded the slow, obvious way."""
    out, off = [], 0
    while off < len(buf):
        klen, vlen, index = struct.unpack_from("<IIQ", buf, off)
        off += 16
        out.append((buf[off : off + klen], buf[off + klen : off + klen + vlen], index))
        off += klen + vlen
    assert off == len(buf)
    return out


def test_empty_tree() -> None:
    t = Tree()
    assert len(t) == 0 and t.get(b"") is None and t.get(b"x") is None
    assert t.list_prefix() == [] and t.list_prefix_packed() == b"" and t.list_keys() == []
    assert t.count() == 0 and t.max_index() == 0 and t.seek() == [] and list(t) == []
    value, watch = t.get_watch(b"x")
    assert value is None and watch == t.prefix_watch() > 0


def test_insert_get_replace_delete() -> None:
    txn = Tree().txn()
    assert txn.insert(b"a", b"1", 1) is True
    assert txn.insert(b"a", b"2", 2) is False
    assert txn.insert(b"", b"empty key", 3) is True
    assert txn.insert(b"nul\x00inside", b"\x00\xff", 4) is True
    assert txn.delete(b"missing") is False
    t, _ = txn.commit()
    assert len(t) == 3 and t.get(b"a") == b"2" and t.get_with_index(b"a") == (b"2", 2)
    assert t.get(b"") == b"empty key" and t.get(b"nul\x00inside") == b"\x00\xff"
    assert t.get(b"nul") is None and b"a" in t and b"b" not in t
    txn = t.txn()
    assert txn.delete(b"a") is True and txn.delete(b"a") is False
    t2, _ = txn.commit()
    assert t2.get(b"a") is None and t.get(b"a") == b"2"


def test_large_keys_values_and_indexes() -> None:
    big_key, big_value = b"k" * 70_000, bytes(range(256)) * 1000
    entries = {big_key: (big_value, 2**64 - 1), b"k": (b"", 0), b"k2": (b"v", 2**31)}
    t = build(entries)
    assert t.get(big_key) == big_value and t.get_with_index(b"k") == (b"", 0)
    listed = t.list_prefix(b"k")
    assert listed == sorted((k, v, i) for k, (v, i) in entries.items())
    assert unpack_packed(t.list_prefix_packed(b"k")) == listed
    assert t.max_index() == 2**64 - 1


def test_versions_are_independent_and_snapshots_are_cheap() -> None:
    t1 = build({b"x/%d" % i: (b"v%d" % i, i) for i in range(100)})
    snap = t1.snapshot()
    txn = t1.txn()
    txn.delete_prefix(b"x/1")
    txn.insert(b"x/new", b"n", 500)
    t2, _ = txn.commit()
    assert len(t1) == len(snap) == 100 and t1.get(b"x/15") == b"v15"
    assert len(t2) == 100 - 11 + 1 and t2.get(b"x/15") is None and t2.get(b"x/new") == b"n"
    del t1
    gc.collect()
    assert snap.get(b"x/15") == b"v15" and snap.list_prefix() == sorted(snap.items())


def test_txn_reads_its_own_writes() -> None:
    base = build({b"a": (b"1", 1), b"b/c": (b"2", 2)})
    with base.txn() as txn:
        txn.insert(b"b/d", b"3", 3)
        txn.delete(b"a")
        assert txn.get(b"b/d") == b"3" and txn.get(b"a") is None and len(txn) == 2
        assert txn.get_with_index(b"b/d") == (b"3", 3) and txn.count(b"b/") == 2
        assert txn.list_prefix(b"b/") == [(b"b/c", b"2", 2), (b"b/d", b"3", 3)]
        assert txn.max_index() == 3 and txn.list_keys(b"", b"/") == [b"b/"]
    assert txn.closed and base.get(b"a") == b"1" and base.get(b"b/d") is None


def test_transaction_misuse_raises() -> None:
    txn = Tree().txn()
    txn.insert(b"a", b"1", 1)
    txn.commit()
    for use in (
        lambda: txn.insert(b"b", b"2", 2),
        lambda: txn.delete(b"a"),
        lambda: txn.delete_prefix(b""),
        lambda: txn.get(b"a"),
        txn.commit,
        txn.abort,
    ):
        with pytest.raises(TransactionClosed):
            use()
    aborted = Tree().txn()
    aborted.abort()
    with pytest.raises(TransactionClosed):
        aborted.commit()

    other = Tree().txn()
    errors: list[BaseException] = []

    def use_elsewhere() -> None:
        try:
            other.insert(b"k", b"v", 1)
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=use_elsewhere)
    thread.start()
    thread.join()
    assert errors and "thread" in str(errors[0])
    with pytest.raises(TypeError, match="base"):
        radix.Txn("not a tree")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "error", "name"),
    [
        (lambda t, x: t.get("str"), TypeError, "key"),
        (lambda t, x: t.get(5), TypeError, "key"),
        (lambda t, x: t.get_watch("s"), TypeError, "key"),
        (lambda t, x: x.insert("k", b"v", 1), TypeError, "key"),
        (lambda t, x: x.insert(b"k", "v", 1), TypeError, "value"),
        (lambda t, x: x.insert(b"k", b"v", -1), ValueError, "index"),
        (lambda t, x: x.insert(b"k", b"v", 2**64), ValueError, "index"),
        (lambda t, x: x.insert(b"k", b"v", 1.0), TypeError, "index"),
        (lambda t, x: x.insert(b"k", b"v", "1"), TypeError, "index"),
        (lambda t, x: x.delete("k"), TypeError, "key"),
        (lambda t, x: x.delete_prefix("k"), TypeError, "prefix"),
        (lambda t, x: t.list_prefix("k"), TypeError, "prefix"),
        (lambda t, x: t.list_keys(b"", "/"), TypeError, "separator"),
        (lambda t, x: t.seek("a"), TypeError, "lower_bound"),
        (lambda t, x: t.seek(b"a", -1), ValueError, "limit"),
        (lambda t, x: t.seek(b"a", "3"), TypeError, "limit"),
        (lambda t, x: t.count(1), TypeError, "prefix"),
        (lambda t, x: t.max_index("p"), TypeError, "prefix"),
        (lambda t, x: t.prefix_watch("p"), TypeError, "prefix"),
    ],
)
def test_wrong_types_name_the_argument(call, error, name) -> None:
    t = Tree()
    with t.txn() as x, pytest.raises(error, match=name):
        call(t, x)


def test_bytes_like_arguments_are_accepted() -> None:
    txn = Tree().txn()
    txn.insert(bytearray(b"k"), memoryview(b"v"), 1)
    t, _ = txn.commit()
    assert t.get(bytearray(b"k")) == b"v" and t.get_watch(memoryview(b"k"))[0] == b"v"


def test_listings_packed_layout_and_order() -> None:
    entries = {b"app/%03d" % i: (b"value-%d" % i, 1000 + i) for i in range(300)}
    entries[b"app"] = (b"root", 7)
    entries[b"apple"] = (b"fruit", 8)
    t = build(entries)
    want = sorted((k, v, i) for k, (v, i) in entries.items() if k.startswith(b"app/"))
    assert t.list_prefix(b"app/") == want
    assert unpack_packed(t.list_prefix_packed(b"app/")) == want
    assert t.count(b"app") == 302 and t.count(b"app/") == 300 and t.count(b"app/0") == 100
    assert t.max_index(b"app/") == 1299 and t.max_index(b"apple") == 8
    assert t.max_index(b"nothing") == 0 and t.count(b"app/1234") == 0


def test_list_keys_consul_semantics() -> None:
    keys = [b"web", b"web/a", b"web/b/c", b"web/b/d", b"web/e/", b"web//x", b"webx/y", b"x/y"]
    t = build({k: (b"v", 1) for k in keys})
    assert t.list_keys(b"web/", b"/") == [b"web//", b"web/a", b"web/b/", b"web/e/"]
    assert t.list_keys(b"web", b"/") == [b"web", b"web/", b"webx/"]
    assert t.list_keys(b"", b"/") == [b"web", b"web/", b"webx/", b"x/"]
    assert t.list_keys(b"", b"") == sorted(keys)
    assert t.list_keys(b"web/b", b"/") == [b"web/b/"]
    assert t.list_keys(b"web/", b"b/") == [b"web//x", b"web/a", b"web/b/", b"web/e/"]
    assert t.list_keys(b"zzz", b"/") == []


def test_seek_pagination_and_iteration() -> None:
    keys = sorted(b"k/%05d" % i for i in range(2500))
    t = build({k: (k[::-1], i) for i, k in enumerate(keys)})
    page: list[radix.Entry] = []
    got: list[bytes] = []
    lower = b""
    while True:
        page = t.seek(lower, 100)
        got.extend(k for k, _, _ in page)
        if len(page) < 100:
            break
        lower = page[-1][0] + b"\x00"
    assert got == keys
    assert [k for k, _, _ in t.seek(b"k/00010", 3)] == keys[10:13]
    assert [k for k, _, _ in t.seek(b"k/00010x", 2)] == keys[11:13]
    assert t.seek(b"a", 1) == t.seek(b"", 1) and t.seek(b"z") == []
    assert unpack_packed(t.seek_packed(b"k/02498")) == t.seek(b"k/02498")
    assert [k for k, _, _ in t.seek(b"k/00099", 0, prefix=b"k/001")] == keys[100:200]
    assert list(t) == keys and [k for k, _, _ in t.items(b"k/01")] == keys[1000:2000]
    assert list(t.keys(b"k/024")) == keys[2400:2500]


def test_watch_ids_fire_as_documented() -> None:
    t1 = build({b"app/a": (b"1", 1), b"app/b": (b"2", 2), b"other": (b"3", 3)})
    _, wa = t1.get_watch(b"app/a")
    _, wb = t1.get_watch(b"app/b")
    _, wo = t1.get_watch(b"other")
    absent, wc = t1.get_watch(b"app/c")
    wapp = t1.prefix_watch(b"app/")
    assert absent is None and len({wa, wb, wo, wc}) == 4
    assert t1.key_watch(b"app/a") == wa and t1.key_watch(b"app/c") == wc

    txn = t1.txn()
    txn.insert(b"app/c", b"4", 4)
    t2, fired = txn.commit()
    assert wc in fired and wapp in fired and not {wa, wb, wo} & fired

    txn = t2.txn()
    txn.insert(b"app/a", b"1", 5)  # same value, new index: still a write of app/a
    t3, fired = txn.commit()
    assert wa in fired and not {wb, wo} & fired
    assert t3.get_watch(b"app/b")[1] == wb  # untouched entries keep their ids

    txn = t3.txn()
    assert txn.delete_prefix(b"app/") == 3
    _, fired = txn.commit()
    assert {t3.get_watch(k)[1] for k in (b"app/a", b"app/b", b"app/c")} <= fired
    assert wo not in fired

    txn = t3.txn()
    txn.abort()
    nothing, fired = t3.txn().commit()
    assert fired == set() and len(nothing) == 4


def test_memory_is_released_with_the_last_version() -> None:
    gc.collect()
    before = radix.bytes_allocated()
    t = build({b"m/%d" % i: (b"x" * 50, i) for i in range(2000)})
    versions = [t]
    for round_ in range(5):
        txn = versions[-1].txn()
        txn.delete_prefix(b"m/%d" % round_)
        txn.insert(b"n/%d" % round_, b"y", 1)
        versions.append(txn.commit()[0])
    abandoned = versions[-1].txn()
    abandoned.insert(b"never", b"committed", 1)
    assert radix.bytes_allocated() > before
    del t, versions, abandoned
    gc.collect()
    assert radix.bytes_allocated() == before


def test_versions_shared_between_threads() -> None:
    """Readers on many threads (the C calls run without the GIL) while one thread keeps
    committing new versions and dropping old ones: every read sees a whole version."""
    tree = build({b"t/%03d" % i: (b"v", 0) for i in range(200)})
    versions = [tree]
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                t = versions[-1]
                listing = t.list_prefix(b"t/")
                assert len(listing) == 200 and len({i for _, _, i in listing}) == 1
                assert t.count(b"t/") == 200 and t.get(b"t/007") == listing[7][1]
                assert t.list_keys(b"", b"/") == [b"t/"]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for th in threads:
        th.start()
    try:
        for round_ in range(1, 300):
            txn = versions[-1].txn()
            for i in range(200):
                txn.insert(b"t/%03d" % i, b"v%d" % round_, round_)
            versions.append(txn.commit()[0])
            if len(versions) > 3:
                versions.pop(0)
    finally:
        stop.set()
        for th in threads:
            th.join()
    assert not errors, errors[0]


def test_point_gets_agree_with_the_checked_path() -> None:
    """Tree.get / get_with_index take a CPython fast path for bytes keys; every other
    key goes the checked way. Both must answer alike, for any key."""

    class Key(bytes):
        pass

    tree = build({b"": (b"root", 1), b"a\x00b": (b"", 0), b"k" * 300: (b"v" * 5000, 2**64 - 1)})
    for key in (b"", b"a\x00b", b"a", b"a\x00", b"k" * 300, b"k" * 299, Key(b"a\x00b")):
        found = tree.list_prefix(bytes(key))[:1]
        expected = found[0][1:] if found and found[0][0] == key else None
        assert tree.get_with_index(key) == expected
        assert tree.get(key) == (expected[0] if expected else None)
        assert tree.get(bytearray(key)) == tree.get(memoryview(bytes(key))) == tree.get(key)
    with pytest.raises(TypeError, match="key"):
        tree.get_with_index("")
