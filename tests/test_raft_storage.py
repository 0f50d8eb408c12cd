"""LMDB Raft storage: log semantics, durability under kill -9, corruption refusal, map growth,
group commit and the snapshot store."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import lmdb
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pykvs.raft.interfaces import CompactedError, UnavailableError
from pykvs.raft.memstore import MemLogStore
from pykvs.raft.storage import (
    CorruptLogError,
    CorruptSnapshotError,
    LMDBStorage,
    SnapshotNotFoundError,
    StorageClosedError,
    StorageFullError,
    StorageLockedError,
)
from pykvs.raft.types import Configuration, Entry, EntryType, HardState, SnapshotMeta

CONF = Configuration({"a": "127.0.0.1:1", "b": "127.0.0.1:2"}, {"c": "127.0.0.1:3"})


def payload(index: int, size: int = 100) -> bytes:
    """Deterministic, recognisable entry data."""
    stamp = f"<entry {index:08d}>".encode()
    return (stamp * (size // len(stamp) + 1))[:size]


def make_entries(lo: int, hi: int, term: int = 1, size: int = 100) -> list[Entry]:
    return [Entry(i, term, EntryType.NORMAL, payload(i, size)) for i in range(lo, hi + 1)]


def meta_at(index: int, term: int) -> SnapshotMeta:
    return SnapshotMeta(index, term, CONF)


def raw_env(path: Path) -> lmdb.Environment:
    return lmdb.open(str(path), max_dbs=4, map_size=1 << 30)


def raw_record(key: bytes, obj: object) -> bytes:
    """A record built from the documented layout (msgpack payload + CRC32 of key||payload)."""
    body = msgpack.packb(obj, use_bin_type=True)
    return body + zlib.crc32(key + body).to_bytes(4, "big")


@pytest.fixture
def store(tmp_path: Path):
    s = LMDBStorage(tmp_path / "db")
    yield s
    s.close()


# -- the log ---------------------------------------------------------------------------------


def test_an_empty_store_starts_at_index_one(store: LMDBStorage) -> None:
    log = store.log
    assert (log.first_index(), log.last_index(), log.term(0)) == (1, 0, 0)
    assert log.hard_state() == HardState() and log.snapshot_meta() is None
    assert log.entries(1, 1) == []
    with pytest.raises(UnavailableError):
        log.term(1)
    with pytest.raises(UnavailableError):
        log.entries(1, 2)
    assert store.snapshots.latest() is None


def test_entries_and_hard_state_survive_reopen(tmp_path: Path) -> None:
    written = [*make_entries(1, 3), Entry(4, 2, EntryType.NOOP), Entry(5, 2, EntryType.CONFIG,
                                                                          b"conf")]
    with LMDBStorage(tmp_path / "db") as s:
        s.log.save(HardState(2, "b", 3), written)
        s.log.save(HardState(3, None, 4), [])
    with LMDBStorage(tmp_path / "db", verify="full") as s:
        assert s.log.entries(1, 6) == written
        assert s.log.hard_state() == HardState(3, None, 4)
        assert [s.log.term(i) for i in range(0, 6)] == [0, 1, 1, 1, 2, 2]


def test_records_follow_the_documented_layout(tmp_path: Path) -> None:
    with LMDBStorage(tmp_path / "db") as s:
        s.log.save(HardState(7, "a", 1), [Entry(1, 7, EntryType.NOOP, b"")])
    env = raw_env(tmp_path / "db")
    with env.begin() as txn:
        key = (1).to_bytes(8, "big")
        assert txn.get(key, db=env.open_db(b"logs", txn=txn)) == raw_record(key, [7, 1, b""])
        assert txn.get(b"hard_state", db=env.open_db(b"stable", txn=txn)) == raw_record(
            b"hard_state", [7, "a", 1])
    env.close()


def test_entries_honours_max_bytes_but_returns_at_least_one(store: LMDBStorage) -> None:
    store.log.save(None, make_entries(1, 10, size=100))
    assert len(store.log.entries(1, 11, max_bytes=250)) == 2
    assert len(store.log.entries(1, 11, max_bytes=10)) == 1
    assert len(store.log.entries(3, 11)) == 8


def test_entries_at_or_after_the_first_new_index_are_replaced(store: LMDBStorage) -> None:
    store.log.save(None, make_entries(1, 10, term=1))
    store.log.save(None, make_entries(6, 8, term=2, size=7))
    assert store.log.last_index() == 8
    assert store.log.entries(1, 9) == make_entries(1, 5) + make_entries(6, 8, term=2, size=7)
    with pytest.raises(UnavailableError):
        store.log.term(9)
    store.log.save(None, make_entries(9, 9, term=2))  # appending again after the cut works
    assert store.log.term(9) == 2


@pytest.mark.parametrize(
    ("batch", "why"),
    [
        ([Entry(5, 1), Entry(7, 1)], "not contiguous"),
        ([Entry(12, 1)], "hole"),
        ([Entry(6, 2), Entry(7, 1)], "backwards"),
        ([Entry(6, 0)], "below the term"),
    ],
)
def test_invalid_appends_are_refused_and_change_nothing(
    store: LMDBStorage, batch: list[Entry], why: str
) -> None:
    store.log.save(HardState(1, "a", 0), make_entries(1, 10))
    with pytest.raises(ValueError, match=why):
        store.log.save(HardState(9, "b", 0), batch)
    assert store.log.last_index() == 10 and store.log.entries(1, 11) == make_entries(1, 10)
    assert store.log.hard_state() == HardState(1, "a", 0)


def test_compaction_keeps_a_trailing_window_and_survives_reopen(tmp_path: Path) -> None:
    with LMDBStorage(tmp_path / "db") as s:
        s.log.save(None, make_entries(1, 5, term=1) + make_entries(6, 20, term=3))
        s.log.compact(8, meta_at(12, 3))
        assert (s.log.first_index(), s.log.term(8), s.log.snapshot_meta()) == (9, 3, meta_at(12, 3))
        with pytest.raises(CompactedError):
            s.log.term(7)
        with pytest.raises(CompactedError):
            s.log.entries(8, 10)
        with pytest.raises(ValueError, match="past the snapshot"):
            s.log.compact(13, meta_at(12, 3))
        s.log.compact(4, meta_at(12, 3))  # already compacted past 4: no change
        # entries that overlap the compacted head are trimmed to what is new
        s.log.save(None, make_entries(5, 21, term=3))
    with LMDBStorage(tmp_path / "db", verify="full") as s:
        assert (s.log.first_index(), s.log.last_index(), s.log.term(8)) == (9, 21, 3)
        assert s.log.entries(9, 22) == make_entries(9, 21, term=3)


def test_a_snapshot_in_save_keeps_the_log_only_when_it_matches(store: LMDBStorage) -> None:
    log = store.log
    log.save(None, make_entries(1, 10, term=2))
    log.save(None, [], snapshot=meta_at(6, 2))  # log holds (6, 2): keep 7..10
    assert (log.first_index(), log.last_index(), log.term(6)) == (7, 10, 2)
    assert log.entries(7, 11) == make_entries(7, 10, term=2)
    log.save(HardState(4, None, 15), make_entries(16, 17, term=4), snapshot=meta_at(15, 4))
    assert (log.first_index(), log.last_index(), log.term(15)) == (16, 17, 4)
    assert log.entries(16, 18) == make_entries(16, 17, term=4)
    assert log.snapshot_meta() == meta_at(15, 4)
    with pytest.raises(ValueError, match="older than"):
        log.save(None, [], snapshot=meta_at(10, 2))


def test_small_facts_are_durable(tmp_path: Path) -> None:
    with LMDBStorage(tmp_path / "db") as s:
        s.log.put_fact("cluster_id", "abc")
        s.log.put_fact("joined", [1, 2])
    with LMDBStorage(tmp_path / "db") as s:
        assert (s.log.fact("cluster_id"), s.log.fact("joined"), s.log.fact("nope")) == (
            "abc", [1, 2], None)


def test_a_second_open_of_the_same_directory_is_refused(store: LMDBStorage) -> None:
    with pytest.raises(StorageLockedError, match="already open"):
        LMDBStorage(store.path)


# -- the same observable behaviour as the in-memory store the core is tested with -------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 6), st.integers(1, 5), st.integers(0, 1)),
        st.tuples(st.just("snapshot"), st.integers(-3, 4), st.booleans()),
        st.tuples(st.just("compact"), st.integers(0, 6)),
        st.tuples(st.just("reopen")),
    ),
    max_size=8,
)


def observe(log: MemLogStore | LMDBStorage) -> tuple:
    s = log.log if isinstance(log, LMDBStorage) else log
    first, last = s.first_index(), s.last_index()
    return (first, last, [s.term(i) for i in range(first - 1, last + 1)],
            s.entries(first, last + 1), s.hard_state(), s.snapshot_meta())


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_lmdb_and_memory_stores_agree(tmp_path_factory: pytest.TempPathFactory,
                                      ops: list[tuple]) -> None:
    """Random valid sequences of saves (appends with conflicts, snapshots), compactions and
    reopens leave both stores looking the same."""
    path = tmp_path_factory.mktemp("model") / "db"
    model, store = MemLogStore(), LMDBStorage(path)
    try:
        for op in ops:
            first, last = model.first_index(), model.last_index()
            commit = first - 1  # never truncate below it, as Raft never truncates committed
            top = max(1, model.term(last))  # entries have terms from 1
            if op[0] == "append":
                _, back, count, bump = op
                start = max(first, last + 1 - back)
                batch = make_entries(start, start + count - 1, term=top + bump, size=start % 7)
                hs = HardState(top + bump, "a", commit)
                model.save(hs, batch)
                store.log.save(hs, batch)
            elif op[0] == "snapshot":
                _, offset, matching = op
                index = max(first - 1, last + offset)
                term = model.term(index) if matching and index <= last else top + 1
                meta = meta_at(index, term)
                hs = HardState(max(top, term), None, index)
                model.save(hs, [], snapshot=meta)
                store.log.save(hs, [], snapshot=meta)
            elif op[0] == "compact":
                upto = min(last, first - 1 + op[1])
                meta = meta_at(upto, model.term(upto))
                model.compact(upto, meta)
                store.log.compact(upto, meta)
            else:
                store.close()
                store = LMDBStorage(path, verify="full")
            assert observe(store) == observe(model), op
    finally:
        store.close()


# -- writes off the event loop, coalesced ----------------------------------------------------


def test_save_async_keeps_order_coalesces_and_leaves_the_loop_free(store: LMDBStorage) -> None:
    async def scenario() -> int:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        first = store.log.save_async(HardState(1, "a", 0), make_entries(1, 64, size=20_000))
        # the future comes back before the write is done: the loop is not blocked on it
        assert not first.done()
        before = ticks
        await first
        ticks_during_one_save = ticks - before
        saves = [store.log.save_async(HardState(1, "a", i), make_entries(i, i))
                 for i in range(65, 265)]
        await asyncio.gather(*saves)
        stop.set()
        await ticking
        return ticks_during_one_save

    commits_before = store.stats()["commits"]
    assert asyncio.run(scenario()) > 0
    assert store.log.last_index() == 264
    assert store.log.entries(65, 265) == make_entries(65, 264)
    assert store.log.hard_state() == HardState(1, "a", 264)
    commits = store.stats()["commits"] - commits_before
    assert commits < 201, "200 queued saves should share transactions (group commit)"


def test_a_bad_save_in_a_coalesced_batch_fails_alone(store: LMDBStorage) -> None:
    async def scenario() -> list[object]:
        futs = [
            store.log.save_async(None, make_entries(1, 5)),
            store.log.save_async(None, [Entry(9, 1)]),  # a hole: refused
            store.log.save_async(None, make_entries(6, 8)),
        ]
        return await asyncio.gather(*futs, return_exceptions=True)

    results = asyncio.run(scenario())
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], ValueError)
    assert store.log.entries(1, 9) == make_entries(1, 8)


# -- a full map ------------------------------------------------------------------------------


def test_a_full_map_grows_and_nothing_is_lost(tmp_path: Path) -> None:
    with LMDBStorage(tmp_path / "db", map_size=64 << 10, max_map_size=64 << 20) as s:
        for lo in range(1, 2001, 100):
            s.log.save(None, make_entries(lo, lo + 99, size=1000))
        assert s.stats()["map_grows"] > 0
        assert s.log.entries(1, 2001) == make_entries(1, 2000, size=1000)


def test_a_map_that_may_not_grow_fails_the_write_cleanly(tmp_path: Path) -> None:
    s = LMDBStorage(tmp_path / "db", map_size=64 << 10, max_map_size=256 << 10)
    acked = 0
    with pytest.raises(StorageFullError, match=r"data\.mdb.*max_map_size.*rolled back"):
        for lo in range(1, 10_000, 20):
            s.log.save(HardState(1, "a", acked), make_entries(lo, lo + 19, size=1000))
            acked = lo + 19
    assert acked > 0
    assert s.log.last_index() == acked and s.log.hard_state() == HardState(1, "a", acked - 20)
    s.close()
    with LMDBStorage(tmp_path / "db", verify="full", max_map_size=256 << 10) as s:
        assert s.log.last_index() == acked
        assert s.log.entries(1, acked + 1) == make_entries(1, acked, size=1000)


# -- corruption ------------------------------------------------------------------------------


def flip_all(path: Path, marker: bytes) -> int:
    """Flip one byte inside every copy of ``marker`` in the file (old page copies included)."""
    data = bytearray(path.read_bytes())
    count, at = 0, data.find(marker)
    while at >= 0:
        data[at + len(marker) // 2] ^= 0x20
        count += 1
        at = data.find(marker, at + 1)
    path.write_bytes(bytes(data))
    return count


def test_a_flipped_byte_in_the_file_refuses_to_open_naming_file_and_index(tmp_path: Path) -> None:
    with LMDBStorage(tmp_path / "db") as s:
        s.log.save(HardState(1, "a", 40), make_entries(1, 50))
    assert flip_all(tmp_path / "db" / "data.mdb", b"<entry 00000047>") > 0
    with pytest.raises(CorruptLogError) as err:
        LMDBStorage(tmp_path / "db")
    assert err.value.index == 47
    assert str(tmp_path / "db" / "data.mdb") in str(err.value) and "index 47" in str(err.value)
    assert "CRC mismatch" in str(err.value)


def test_damage_outside_the_verified_tail_is_never_served(tmp_path: Path) -> None:
    with LMDBStorage(tmp_path / "db") as s:
        s.log.save(None, make_entries(1, 50))
    flip_all(tmp_path / "db" / "data.mdb", b"<entry 00000003>")
    with LMDBStorage(tmp_path / "db", verify="tail", verify_tail=10) as s:
        assert s.log.entries(10, 51) == make_entries(10, 50)
        with pytest.raises(CorruptLogError, match="index 3"):
            s.log.entries(1, 51)
        with pytest.raises(CorruptLogError, match="index 3"):
            s.log.term(3)
    with pytest.raises(CorruptLogError, match="index 3"):
        LMDBStorage(tmp_path / "db", verify="full")


def test_a_corrupt_record_met_by_a_write_fails_that_write_only(tmp_path: Path) -> None:
    with LMDBStorage(tmp_path / "db") as s:
        s.log.save(None, make_entries(1, 50))
    flip_all(tmp_path / "db" / "data.mdb", b"<entry 00000003>")
    with LMDBStorage(tmp_path / "db", verify_tail=10) as s:
        with pytest.raises(CorruptLogError, match="index 3"):
            s.log.compact(3, meta_at(20, 1))  # needs term(3)
        s.log.save(None, make_entries(51, 51))  # the writer carries on
        assert s.log.last_index() == 51


def test_queued_writes_finish_before_close_and_later_ones_are_refused(tmp_path: Path) -> None:
    s = LMDBStorage(tmp_path / "db")

    async def scenario() -> None:
        futs = [s.log.save_async(None, make_entries(i, i)) for i in range(1, 21)]
        s.close()  # drains the queue first
        await asyncio.gather(*futs)
        with pytest.raises(StorageClosedError):
            s.log.save_async(None, make_entries(21, 21))

    asyncio.run(scenario())
    with pytest.raises(StorageClosedError):
        s.log.save(None, make_entries(21, 21))
    with pytest.raises(StorageClosedError):
        s.log.entries(1, 2)
    with LMDBStorage(tmp_path / "db") as s:
        assert s.log.entries(1, 21) == make_entries(1, 20)


def _rewrite_record(txn: lmdb.Transaction, db: lmdb._Database, index: int, term: int) -> None:
    key = index.to_bytes(8, "big")
    txn.put(key, raw_record(key, [term, 0, payload(index)]), db=db)


@pytest.mark.parametrize(
    ("damage", "index", "why"),
    [
        ("garbage", 30, "CRC mismatch"),
        ("hole", 30, "hole"),
        ("term_backwards", 31, "term 1 is below the term 2"),
        ("tail_lost", 41, "commit index 45 is past the last record 40"),
        ("hard_state", None, "stable record 'hard_state'"),
    ],
)
def test_structural_damage_refuses_to_open(
    tmp_path: Path, damage: str, index: int | None, why: str
) -> None:
    with LMDBStorage(tmp_path / "db") as s:
        s.log.save(HardState(2, "a", 45), make_entries(1, 30, term=1) + make_entries(31, 50, 2))
    env = raw_env(tmp_path / "db")
    with env.begin(write=True) as txn:
        logs, stable = env.open_db(b"logs", txn=txn), env.open_db(b"stable", txn=txn)
        if damage == "garbage":
            txn.put((30).to_bytes(8, "big"), b"\x93\x01\x00\xc4\x01x" + b"\0\0\0\0", db=logs)
        elif damage == "hole":
            txn.delete((30).to_bytes(8, "big"), db=logs)
        elif damage == "term_backwards":
            _rewrite_record(txn, logs, 31, term=1)
            _rewrite_record(txn, logs, 30, term=2)
        elif damage == "tail_lost":
            for i in range(41, 51):
                txn.delete(i.to_bytes(8, "big"), db=logs)
        else:
            txn.put(b"hard_state", raw_record(b"hard_state", [2, "a", 45])[:-1] + b"?",
                    db=stable)
    env.close()
    with pytest.raises(CorruptLogError, match=why) as err:
        LMDBStorage(tmp_path / "db", verify="full")
    assert err.value.index == index
    assert err.value.path == str(tmp_path / "db" / "data.mdb")


# -- durability under kill -9 ----------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pykvs.raft.storage import LMDBStorage
    from pykvs.raft.types import Entry, HardState

    path, mode = sys.argv[1], sys.argv[2]
    store = LMDBStorage(path)
    start = store.log.last_index() + 1

    def batch(lo, n):
        return [Entry(i, 1, data=(b"<entry %08d>" % i) * 8) for i in range(lo, lo + n)]

    def ack(last):
        sys.stdout.write("%d\\n" % last)
        sys.stdout.flush()

    if mode == "sync":
        lo = start
        while True:
            n = 1 + lo % 64
            store.log.save(HardState(lo, "a", 0), batch(lo, n))
            ack(lo + n - 1)
            lo += n
    else:
        async def main():
            lo, window = start, []
            while True:
                n = 1 + lo % 64
                window.append((lo + n - 1, store.log.save_async(HardState(lo, "a", 0),
                                                                batch(lo, n))))
                lo += n
                if len(window) >= 8:
                    last, fut = window.pop(0)
                    await fut
                    ack(last)
        asyncio.run(main())
    """
)


def run_until_killed(path: Path, mode: str, acks_wanted: int) -> int:
    """Run a writer child, SIGKILL it after ``acks_wanted`` acknowledged saves; the last ack."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out, err = proc.stdout, proc.stderr
    assert out is not None and err is not None
    buf = b""
    deadline = time.monotonic() + 60
    try:
        while buf.count(b"\n") < acks_wanted:
            left = deadline - time.monotonic()
            assert left > 0, "the writer child made no progress"
            if select.select([out.fileno()], [], [], left)[0]:
                chunk = os.read(out.fileno(), 65536)
                assert chunk, f"child exited early: {err.read().decode()}"
                buf += chunk
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        out.close()
        err.close()
    return int(buf[: buf.rindex(b"\n")].rsplit(b"\n", 1)[-1])


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_every_acknowledged_save_survives_kill_9(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "db"
    for round_ in range(2):  # the second round appends to what the first left
        acked = run_until_killed(path, mode, acks_wanted=25)
        with LMDBStorage(path, verify="full") as s:
            last = s.log.last_index()
            assert last >= acked, f"round {round_}: save() returned for {acked}, log ends at {last}"
            entries = s.log.entries(1, last + 1)
            assert [e.index for e in entries] == list(range(1, last + 1))
            assert all(e.data == (b"<entry %08d>" % e.index) * 8 for e in entries)
            assert s.log.hard_state().term >= acked - 64


# -- snapshots -------------------------------------------------------------------------------


def write_snapshot(s: LMDBStorage, index: int, body: bytes, piece: int = 777) -> SnapshotMeta:
    sink = s.snapshots.create(meta_at(index, 1))
    for at in range(0, len(body), piece):
        sink.write(body[at:at + piece])
    return sink.commit()


def body_of(index: int, size: int = 10_000) -> bytes:
    return bytes((index * 7 + i) % 251 for i in range(size))


def snapshot_keys(path: Path) -> list[bytes]:
    env = raw_env(path)
    with env.begin() as txn:
        keys = [k for k, _ in txn.cursor(db=env.open_db(b"snapshots", txn=txn))]
    env.close()
    return keys


def test_a_snapshot_streams_back_in_chunks_with_size_and_crc(tmp_path: Path) -> None:
    with LMDBStorage(tmp_path / "db", chunk_size=4096) as s:
        meta = write_snapshot(s, 10, body_of(10))
        assert (meta.size, meta.crc, meta.configuration) == (10_000, zlib.crc32(body_of(10)), CONF)
        chunks = list(s.snapshots.open(10))
        assert [len(c) for c in chunks] == [4096, 4096, 1808]
        assert b"".join(chunks) == body_of(10) and s.snapshots.latest() == meta
        with pytest.raises(SnapshotNotFoundError):
            s.snapshots.open(11)
        empty = s.snapshots.create(meta_at(11, 1)).commit()
        assert (empty.size, list(s.snapshots.open(11))) == (0, [])


def test_only_the_newest_two_snapshots_are_kept(tmp_path: Path) -> None:
    with LMDBStorage(tmp_path / "db", chunk_size=4096) as s:
        for index in (10, 20, 30):
            write_snapshot(s, index, body_of(index))
        write_snapshot(s, 30, body_of(31))  # the same index again replaces it
        assert [m.index for m in s.snapshots.list()] == [30, 20]
        with pytest.raises(SnapshotNotFoundError):
            s.snapshots.open(10)
        assert b"".join(s.snapshots.open(30)) == body_of(31)
    # two metas plus the chunks of two bodies (3 each): the others' chunks are gone
    assert len(snapshot_keys(tmp_path / "db")) == 2 + 6


def test_an_unfinished_snapshot_is_invisible_and_swept(tmp_path: Path) -> None:
    with LMDBStorage(tmp_path / "db", chunk_size=4096) as s:
        kept = write_snapshot(s, 5, body_of(5))
        aborted = s.snapshots.create(meta_at(8, 1))
        aborted.write(body_of(8))
        aborted.abort()
        crashed = s.snapshots.create(meta_at(9, 1))
        crashed.write(body_of(9, 20_000))  # chunks hit the disk, but no commit
        assert s.snapshots.latest() == kept
    assert len(snapshot_keys(tmp_path / "db")) > 1 + 3  # the crashed sink's chunks remain...
    with LMDBStorage(tmp_path / "db", chunk_size=4096) as s:
        assert s.snapshots.list() == [kept]
        assert b"".join(s.snapshots.open(5)) == body_of(5)
    assert len(snapshot_keys(tmp_path / "db")) == 1 + 3  # ...until the next open sweeps them


def test_a_corrupt_snapshot_chunk_is_detected(tmp_path: Path) -> None:
    body = b"".join(b"<chunk-byte %06d>" % i for i in range(1000))
    with LMDBStorage(tmp_path / "db", chunk_size=4096) as s:
        write_snapshot(s, 7, body)
    flip_all(tmp_path / "db" / "data.mdb", b"<chunk-byte 000500>")
    with LMDBStorage(tmp_path / "db", chunk_size=4096) as s:
        stream = s.snapshots.open(7)
        with pytest.raises(CorruptSnapshotError, match="chunk 2 CRC mismatch") as err:
            list(stream)
        assert err.value.index == 7
