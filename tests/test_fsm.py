"""The FSM: Consul's KV, txn and session semantics through log entries; snapshot / restore."""

from __future__ import annotations

import io
import json

import msgpack
import pytest

from pykvs.fsm import (
    FSM,
    SNAPSHOT_FORMAT,
    ApplyError,
    SnapshotError,
    kv_command,
    reap_command,
    session_create_command,
    session_destroy_command,
    txn_command,
)
from pykvs.state.entry import DirEntry
from pykvs.state.errors import StateError
from pykvs.state.sessions import NS_PER_SECOND, Session, SessionError
from pykvs.state.txn import TxnOp

SECOND = NS_PER_SECOND


class Log:
    """Feeds an FSM entries at consecutive indexes."""

    def __init__(self) -> None:
        self.fsm = FSM()
        self.index = 0

    def __call__(self, data: bytes):
        self.index += 1
        return self.fsm.apply(self.index, data)

    def get(self, key: bytes) -> DirEntry | None:
        return self.fsm.store.kv_get(key)[1]


@pytest.fixture
def log() -> Log:
    return Log()


def new_session(log: Log, sid: str, behavior: str = "release", delay: int = 15 * SECOND):
    assert log(session_create_command(Session(sid, "node-1", "", delay, behavior))) == sid


# ------------------------------------------------------------------------------- KV verbs
def test_set_keeps_create_index_and_skips_unchanged_writes(log: Log) -> None:
    assert log(kv_command("set", b"k", b"v1", 5)) is True
    assert log(kv_command("set", b"k", b"v2", 5)) is True
    assert log.get(b"k") == DirEntry(b"k", b"v2", 5, 1, 2, 0, None)
    assert log(kv_command("set", b"k", b"v2", 5)) is True  # identical: no write
    assert log.get(b"k").modify_index == 2
    assert log.fsm.store.kv_list(b"")[0] == 2
    assert log.fsm.last_applied == 3


def test_cas_index_zero_means_only_if_absent(log: Log) -> None:
    assert log(kv_command("cas", b"k", b"a", index=0)) is True
    assert log(kv_command("cas", b"k", b"b", index=0)) is False
    assert log(kv_command("cas", b"k", b"b", index=7)) is False
    assert log(kv_command("cas", b"k", b"b", index=1)) is True
    assert log(kv_command("cas", b"gone", b"b", index=1)) is False
    assert log.get(b"k").value == b"b"


def test_lock_index_rules(log: Log) -> None:
    new_session(log, "s1")  # 1
    new_session(log, "s2")  # 2
    assert log(kv_command("lock", b"k", b"a", session="s1")) is True  # 3
    assert log.get(b"k") == DirEntry(b"k", b"a", 0, 3, 3, 1, "s1")
    # Re-acquire by the holder: same LockIndex, new value.
    assert log(kv_command("lock", b"k", b"b", flags=9, session="s1")) is True  # 4
    assert log.get(b"k") == DirEntry(b"k", b"b", 9, 3, 4, 1, "s1")
    assert log(kv_command("lock", b"k", b"c", session="s2")) is False  # held by another
    assert log(kv_command("unlock", b"k", b"c", session="s2")) is False  # not the holder
    assert log(kv_command("unlock", b"k", b"c", session="s1")) is True  # 7
    assert log.get(b"k") == DirEntry(b"k", b"c", 0, 3, 7, 1, None)
    # The lock changes hands: LockIndex goes up.
    assert log(kv_command("lock", b"k", b"d", session="s2")) is True
    assert log.get(b"k").lock_index == 2
    # A plain set keeps the holder (Consul sets the LockIndex it was given: 0).
    assert log(kv_command("set", b"k", b"e")) is True
    assert log.get(b"k").session == "s2"


def test_lock_needs_a_valid_session(log: Log) -> None:
    assert str(log(kv_command("lock", b"k", session=None))) == "missing session"
    result = log(kv_command("lock", b"k", session="nope"))
    assert isinstance(result, StateError) and str(result) == 'invalid session "nope"'
    assert str(log(kv_command("unlock", b"k", session=""))) == "missing session"
    assert str(log(kv_command("set", b"", b"v"))) == "Must provide key"


def test_delete_verbs_and_tombstones_keep_the_prefix_index_monotonic(log: Log) -> None:
    for key in (b"a/1", b"a/2", b"b/1"):
        log(kv_command("set", key, b"v"))  # 1..3
    assert log.fsm.store.kv_list(b"a/")[0] == 2
    assert log(kv_command("delete", b"a/2")) is True  # 4
    index, entries = log.fsm.store.kv_list(b"a/")
    assert index == 4 and [e.key for e in entries] == [b"a/1"]  # not back to 1
    assert log(kv_command("delete-cas", b"a/1", index=99)) is False
    assert log(kv_command("delete-cas", b"missing", index=99)) is True  # Consul: absent is ok
    assert log(kv_command("delete-cas", b"a/1", index=1)) is True  # 7
    assert log.fsm.store.kv_list(b"a/")[0] == 7
    assert log(kv_command("delete-tree", b"b/")) is True  # 8
    assert log.fsm.store.kv_list(b"b/") == (8, [])
    assert log.fsm.store.kv_get(b"b/1") == (8, None)  # missing key: the table index
    # Reaping tombstones up to 7 lets the a/ index fall back to the table index (8).
    assert log(reap_command(7)) is True
    assert log.fsm.store.kv_list(b"a/")[0] == 8
    assert log.fsm.store.kv_list(b"zzz")[0] == 8


def test_empty_store_reports_index_one(log: Log) -> None:
    store = log.fsm.store
    assert store.kv_get(b"x") == (1, None)
    assert store.kv_list(b"") == (1, [])
    assert store.kv_list_keys(b"", b"/") == (1, [])
    assert store.session_list() == (1, [])


def test_list_keys_with_separator(log: Log) -> None:
    for key in (b"a/b/c", b"a/b/d", b"a/c", b"a/d/e", b"b"):
        log(kv_command("set", key, b"v"))
    assert log.fsm.store.kv_list_keys(b"a/", b"/") == (4, [b"a/b/", b"a/c", b"a/d/"])
    assert log.fsm.store.kv_list_keys(b"", b"/")[1] == [b"a/", b"b"]


# ---------------------------------------------------------------------------- transactions
def test_txn_applies_all_or_nothing_and_names_failing_ops(log: Log) -> None:
    log(kv_command("set", b"k", b"old"))
    ops = [
        TxnOp("set", b"x", b"1"),
        TxnOp("cas", b"k", b"new", index=99),
        TxnOp("check-not-exists", b"k"),
        TxnOp("get", b"x"),
    ]
    result = log(txn_command(ops))
    assert result.results is None
    assert [(e.op_index, e.what) for e in result.errors] == [
        (1, 'failed to set key "k", index is stale'),
        (2, 'key "k" exists'),
    ]
    assert log.get(b"x") is None and log.get(b"k").value == b"old"
    ok = log(
        txn_command(
            [
                TxnOp("set", b"x", b"1"),
                TxnOp("get", b"x"),
                TxnOp("check-index", b"k", index=1),
                TxnOp("delete", b"k"),
                TxnOp("get-tree", b"x"),
            ]
        )
    )
    assert ok.ok
    assert [(e.key, e.value) for e in ok.results] == [
        (b"x", b""),  # write verbs return the entry without its value
        (b"x", b"1"),  # get keeps it
        (b"k", b""),
        (b"x", b"1"),
    ]
    assert log.get(b"k") is None


def test_txn_lock_delay_and_missing_key_are_pre_checked(log: Log) -> None:
    new_session(log, "s1", delay=10 * SECOND)
    log(kv_command("lock", b"k", b"v", session="s1", ts=1 * SECOND))
    new_session(log, "s2")
    log(session_destroy_command("s1", ts=100 * SECOND))
    result = log(txn_command([TxnOp("lock", b"k", session="s2"), TxnOp("get", b"")], 105 * SECOND))
    assert [(e.op_index, e.what) for e in result.errors] == [
        (0, 'failed to lock key "k" due to lock delay'),
        (1, "Must provide key"),
    ]
    ok = log(txn_command([TxnOp("lock", b"k", session="s2")], ts=110 * SECOND))
    assert ok.ok and ok.results[0].session == "s2"


# -------------------------------------------------------------------------------- sessions
def test_destroy_releases_keys_and_starts_lock_delay(log: Log) -> None:
    new_session(log, "s1", delay=20 * SECOND)  # 1
    new_session(log, "s2")  # 2
    log(kv_command("lock", b"a", b"1", session="s1", ts=1))  # 3
    log(kv_command("lock", b"b", b"2", session="s1", ts=1))  # 4
    assert log.fsm.store.snapshot().session_keys("s1") == [b"a", b"b"]
    assert log(session_destroy_command("s1", ts=50 * SECOND)) is True  # 5
    assert log.get(b"a") == DirEntry(b"a", b"1", 0, 3, 5, 1, None)
    assert log.fsm.store.session_get("s1") == (5, None)
    assert log.fsm.store.kv_lock_delay(b"a") == 70 * SECOND
    # During the delay (judged by the command's timestamp) the lock is refused...
    assert log(kv_command("lock", b"a", session="s2", ts=69 * SECOND)) is False
    # ...and afterwards it is granted, LockIndex moving on.
    assert log(kv_command("lock", b"a", session="s2", ts=70 * SECOND)) is True
    assert log.get(b"a").lock_index == 2


def test_destroy_with_delete_behavior_deletes_keys(log: Log) -> None:
    new_session(log, "s1", behavior="delete", delay=0)
    log(kv_command("lock", b"a/x", b"1", session="s1"))
    log(kv_command("set", b"a/y", b"2"))
    log(session_destroy_command("s1"))
    assert log.get(b"a/x") is None and log.get(b"a/y") is not None
    assert log.fsm.store.kv_list(b"a/")[0] == 4  # the delete's tombstone
    assert log.fsm.store.kv_lock_delay(b"a/x") == 0


def test_session_create_errors_and_reads(log: Log) -> None:
    bad = log(session_create_command(Session("s1", "n", ttl="1s")))
    assert isinstance(bad, SessionError) and "must be between" in str(bad)
    new_session(log, "s1")
    dup = log(session_create_command(Session("s1", "n")))
    assert isinstance(dup, SessionError)
    index, found = log.fsm.store.session_get("s1")
    assert index == 2 and found.behavior == "release" and found.create_index == 2
    assert log.fsm.store.session_renew("s1")[1] == found
    assert log(session_destroy_command("unknown")) is True
    assert log.fsm.store.session_list()[0] == 2  # destroying an unknown session is a no-op


# --------------------------------------------------------------------------- log entries
def test_unknown_malformed_and_versioned_commands(log: Log) -> None:
    unknown = msgpack.packb({"v": 1, "t": "catalog"})
    assert isinstance(log(unknown), ApplyError)
    assert log(msgpack.packb({"v": 1, "t": "catalog", "ignore": True})) is None
    assert "version" in str(log(msgpack.packb({"v": 9, "t": "kv", "op": "set", "key": b"k"})))
    assert isinstance(log(b"\xc1garbage"), ApplyError)
    assert isinstance(log(msgpack.packb({"v": 1, "t": "kv", "op": "set"})), ApplyError)
    assert isinstance(log(msgpack.packb({"v": 1, "t": "kv", "op": "x", "key": b"k"})), ApplyError)
    assert log.fsm.last_applied == 6  # every committed entry advances the applied index
    with pytest.raises(ValueError, match="above the last applied"):
        log.fsm.apply(6, kv_command("set", b"k"))


def test_apply_batch_equals_one_at_a_time() -> None:
    commands = [
        kv_command("set", b"a", b"1"),
        txn_command([TxnOp("set", b"b", b"2"), TxnOp("cas", b"a", b"x", index=5)]),
        kv_command("cas", b"a", b"3", index=1),
        kv_command("delete-tree", b""),
        kv_command("set", b"c", b"4"),
    ]
    one, many = Log(), FSM()
    singles = [one(c) for c in commands]
    batched = many.apply_batch(list(enumerate(commands, start=1)))
    assert [str(r) if not isinstance(r, bool) else r for r in singles] == [
        str(r) if not isinstance(r, bool) else r for r in batched
    ]
    assert one.fsm.store.kv_list(b"") == many.store.kv_list(b"")
    assert many.last_applied == 5


def test_apply_batch_builds_results_only_for_the_indexes_asked_for() -> None:
    """``results_for`` (the proposals someone waits on): the others are applied the same,
    a failing txn among them too leaves no trace, and their result is None."""
    commands = [
        txn_command([TxnOp("set", b"a", b"1"), TxnOp("set", b"b", b"2")]),
        txn_command([TxnOp("set", b"c", b"3"), TxnOp("cas", b"a", b"x", index=99)]),
        txn_command([TxnOp("set", b"a", b"4"), TxnOp("get", b"b")]),
        kv_command("set", b"d", b"5"),
    ]
    live, replayed = FSM(), FSM()
    entries = list(enumerate(commands, start=1))
    results = live.apply_batch(entries)
    assert replayed.apply_batch(entries, results_for={3}) == [None, None, results[2], None]
    assert results[2].results == [DirEntry(b"a", b"", 0, 1, 3, 0, None),
                                   DirEntry(b"b", b"2", 0, 1, 1, 0, None)]
    assert replayed.store.kv_get(b"c")[1] is None  # the failed txn wrote nothing
    assert replayed.snapshot().to_bytes() == live.snapshot().to_bytes()


# ------------------------------------------------------------------------ encoded reads
def test_json_listing_is_consuls_body(log: Log) -> None:
    new_session(log, "s1")
    log(kv_command("set", b"web/a", b"hello", 3))
    log(kv_command("lock", b"web/b", b"", session="s1"))
    index, body = log.fsm.store.kv_list_json(b"web/")
    assert index == 3
    assert json.loads(body) == [
        {"LockIndex": 0, "Key": "web/a", "Flags": 3, "Value": "aGVsbG8=",
         "CreateIndex": 2, "ModifyIndex": 2},
        {"LockIndex": 1, "Key": "web/b", "Flags": 0, "Value": None, "Session": "s1",
         "CreateIndex": 3, "ModifyIndex": 3},
    ]  # fmt: skip
    index, one = log.fsm.store.kv_get_json(b"web/a")
    assert index == 2 and json.loads(one)[0]["Value"] == "aGVsbG8="
    assert log.fsm.store.kv_get_json(b"nope") == (3, None)


# ------------------------------------------------------------------------------ snapshots
def populated() -> Log:
    log = Log()
    new_session(log, "s1", delay=30 * SECOND)
    new_session(log, "s2", behavior="delete")
    for i in range(300):
        log(kv_command("set", f"svc/{i % 7}/k{i}".encode(), bytes([i % 256]) * (i % 40), i))
    log(kv_command("lock", b"svc/0/k0", b"L", session="s1"))
    log(kv_command("lock", b"locks/x", b"", session="s2"))
    log(kv_command("delete-tree", b"svc/3/"))
    log(kv_command("delete", b"svc/1/k1"))
    log(kv_command("lock", b"locks/y", b"", session="s1"))
    log(session_destroy_command("s1", ts=5 * SECOND))
    return log


def test_snapshot_round_trip_restores_equal_state() -> None:
    log = populated()
    snap = log.fsm.snapshot(term=7)
    out = io.BytesIO()
    size = snap.write_to(out)
    assert size == len(out.getvalue())
    fresh = FSM()
    header = fresh.restore(io.BytesIO(out.getvalue()))
    assert (header.index, header.term, header.format) == (log.index, 7, SNAPSHOT_FORMAT)
    a, b = log.fsm.store, fresh.store
    assert a.kv_list(b"") == b.kv_list(b"")
    for prefix in (b"svc/", b"svc/3/", b"svc/1/", b"locks/", b"zz"):
        assert a.kv_list(prefix)[0] == b.kv_list(prefix)[0]
    assert a.session_list() == b.session_list()
    assert a.snapshot().session_keys("s2") == b.snapshot().session_keys("s2") == [b"locks/x"]
    assert b.kv_lock_delay(b"locks/y") == a.kv_lock_delay(b"locks/y") == 35 * SECOND
    assert fresh.last_applied == log.index
    # Both continue identically.
    cmd = kv_command("lock", b"locks/y", session="s2", ts=6 * SECOND)
    assert log.fsm.apply(log.index + 1, cmd) == fresh.apply(log.index + 1, cmd) is False
    assert fresh.snapshot(7).to_bytes() == log.fsm.snapshot(7).to_bytes()


def test_snapshot_is_a_point_in_time_while_writes_continue() -> None:
    log = populated()
    snap = log.fsm.snapshot(term=1)
    chunks = snap.chunks()
    first = next(chunks)
    log(kv_command("set", b"svc/0/k0", b"changed"))
    log(kv_command("delete-tree", b""))
    data = first + b"".join(chunks)
    fresh = FSM()
    fresh.restore(data)
    assert fresh.last_applied == snap.index == log.index - 2
    assert fresh.store.kv_get(b"svc/0/k0")[1].value == b"L"
    assert len(fresh.store.kv_list(b"")[1]) > 200


def test_corrupt_or_truncated_snapshot_is_refused_and_state_untouched() -> None:
    data = populated().fsm.snapshot(term=2).to_bytes()
    target = Log()
    target(kv_command("set", b"mine", b"keep"))
    before = target.fsm.store.snapshot()

    def refused(stream: bytes, match: str | None) -> None:
        with pytest.raises(SnapshotError, match=match):
            target.fsm.restore(stream)
        assert target.fsm.store.snapshot() is before
        assert target.get(b"mine").value == b"keep"

    refused(b"", "truncated")
    refused(b"NOTASNAP" + data[8:], "bad magic")
    for cut in (10, 40, len(data) // 2, len(data) - 5, len(data) - 1):
        refused(data[:cut], "truncated|checksum|record")
    for pos in (30, len(data) // 3, len(data) - 10):
        flipped = bytearray(data)
        flipped[pos] ^= 0x40
        refused(bytes(flipped), None)
    refused(data + b"x", "after its checksum")
    target.fsm.restore(data)  # the intact stream still restores
    assert target.get(b"mine") is None
