"""Random sequences of every KV verb, every txn verb and the session/reap commands, applied
through the FSM (one at a time and in batches, with snapshot round trips in between) and to the
plain-Python model in tests/kv_model.py; every result, every read and every index must agree,
and every read whose answer changed must have had one of its watch ids fired.

A replica applies the same entries the way a replayed log is (``apply_batch`` with no result
wanted): its whole state (tables, table indexes, lock-delays, as the snapshot stream has them)
must equal the live store's, and its watches must fire the same way."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from kv_model import KVModel, ModelError

from pykvs.fsm import (
    FSM,
    kv_command,
    reap_command,
    session_create_command,
    session_destroy_command,
    txn_command,
)
from pykvs.state.sessions import NS_PER_SECOND, Session
from pykvs.state.txn import TXN_VERBS, TxnOp, TxnResult
from pykvs.state.watch import WatchSet

KEYS = [b"", b"a", b"a/", b"a/b", b"a/b/c", b"a/c", b"ab", b"b", b"b/a/x", b"\x00k", b"a/\xff"]
PREFIXES = [*KEYS, b"a/b/"]
SEPARATORS = [b"", b"/", b"b"]
SESSIONS = ["s-1", "s-2", "s-3", ""]
NAMED_KEYS = [k for k in KEYS if k]
KV_OPS = ["set", "cas", "lock", "unlock", "delete", "delete-cas", "delete-tree"]

keys = st.sampled_from(KEYS)
# Mostly valid choices, so that sequences get far (locks held, CAS that matches, ...).
txn_keys = st.sampled_from([*NAMED_KEYS, *NAMED_KEYS, b""])
txn_verbs = st.sampled_from([*TXN_VERBS, *TXN_VERBS, "bogus"])
cas_choices = st.sampled_from(["current", "current", "zero", "stale"])
values = st.sampled_from([b"", b"v", b"w", b"\x00\xff"])
flags = st.sampled_from([0, 0, 7])
sessions = st.sampled_from(["s-1", "s-1", "s-2", "s-3", ""])
delays = st.sampled_from([0, NS_PER_SECOND, 15 * NS_PER_SECOND, 120 * NS_PER_SECOND])


def as_tuple(entry):
    if entry is None:
        return None
    return (
        entry.key,
        entry.value,
        entry.flags,
        entry.create_index,
        entry.modify_index,
        entry.lock_index,
        entry.session,
    )


def session_view(s):
    if s is None:
        return None
    if isinstance(s, dict):
        return (s["id"], s["node"], s["name"], s["lock_delay"], s["behavior"], s["ttl"],
                s["create_index"], s["modify_index"])  # fmt: skip
    return (s.id, s.node, s.name, s.lock_delay, s.behavior, s.ttl, s.create_index,
            s.modify_index)  # fmt: skip


class StoreVsModel(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.fsm = FSM()
        self.replica = FSM()  # the same entries applied as a replay: no results wanted
        self.model = KVModel()
        self.index = 0
        self.now = 10**15
        # Start with live sessions so that locks, conflicts and releases happen early.
        for sid, behavior in (("s-1", "release"), ("s-2", "release"), ("s-3", "delete")):
            self.session_create(sid, "n1", 15 * NS_PER_SECOND, behavior, "")

    # ------------------------------------------------------------------------ plumbing
    def watched_reads(self, fsm: FSM):
        version = fsm.store.snapshot()
        reads = []
        for key in (b"a", b"a/b", b"zz"):
            ws = WatchSet()
            reads.append((version.kv_get(key, ws), ws))
        for prefix in (b"", b"a/", b"b"):
            ws = WatchSet()
            reads.append((version.kv_list(prefix, ws), ws))
        ws = WatchSet()
        reads.append((version.session_list(ws), ws))
        return reads

    def run(self, command: bytes, model_step) -> None:
        """Apply one command to both sides (or queue it for a batch) and compare."""
        self.index += 1
        self.now += 1
        before = {fsm: self.watched_reads(fsm) for fsm in (self.fsm, self.replica)}
        since = {fsm: fsm.store.notifier.fire_seq for fsm in before}
        got = self.fsm.apply(self.index, command)
        self.compare(got, model_step)
        assert self.replica.apply_batch([(self.index, command)], results_for=()) == [None]
        for fsm, reads in before.items():
            after = self.watched_reads(fsm)
            for (old, ws), (new, _) in zip(reads, after, strict=True):
                # Consul's contract: when a read's *result* changes, one of its ids fires (an
                # index that moved with the same result, e.g. a missing key, need not).
                if old[1] != new[1]:
                    assert fsm.store.notifier.fired_since(ws.ids, since[fsm]), (old, new)

    def compare(self, got, model_step) -> None:
        try:
            want = model_step()
        except ModelError as exc:
            assert isinstance(got, Exception), (got, exc)
            assert str(got) == str(exc)
            return
        if isinstance(got, TxnResult):
            results, errors = want
            assert [(e.op_index, e.what) for e in got.errors] == errors
            if results is None:
                assert got.results is None
            else:
                assert [as_tuple(e) for e in got.results] == results
            return
        assert got == want, (got, want)

    # ---------------------------------------------------------------------- the verbs
    def cas_index(self, key: bytes, choice: str) -> int:
        """A CAS index for ``key``: its current ModifyIndex, 0, or a stale one."""
        entry = self.model.s.kvs.get(key)
        current = entry[4] if entry else 0
        return {"current": current, "zero": 0, "stale": max(current - 1, 1) + 50}[choice]

    @rule(op=st.sampled_from(KV_OPS), key=keys, value=values, flags=flags, cas=cas_choices,
          session=sessions)  # fmt: skip
    def kv(self, op, key, value, flags, cas, session) -> None:
        cas_index = self.cas_index(key, cas)
        command = kv_command(op, key, value, flags, cas_index, session or None, ts=self.now + 1)
        idx, now = self.index + 1, self.now + 1
        self.run(
            command,
            lambda: self.model.apply_kv(idx, op, key, value, flags, cas_index, session, now),
        )

    @rule(pick=st.integers(0, 99), op=st.sampled_from(["unlock", "lock", "txn-lock"]),
          by_holder=st.booleans(), value=values)  # fmt: skip
    def contend_for_held_key(self, pick, op, by_holder, value) -> None:
        """Lock or unlock a key that some session holds, as its holder or as another."""
        held = sorted((k, e[6]) for k, e in self.model.s.kvs.items() if e[6])
        if not held:
            return
        key, holder = held[pick % len(held)]
        session = holder if by_holder else next(s for s in ("s-1", "s-2") if s != holder)
        if op == "txn-lock":
            self.txn([("lock", key, value, 0, "current", session)])
        else:
            self.kv(op, key, value, 0, "current", session)

    @rule(
        ops=st.lists(
            st.tuples(txn_verbs, txn_keys, values, flags, cas_choices, sessions),
            min_size=1,
            max_size=4,
        )
    )
    def txn(self, ops) -> None:
        ops = [(v, k, val, f, self.cas_index(k, c), s) for v, k, val, f, c, s in ops]
        txn_ops = [TxnOp(v, k, val, f, i, s or None) for v, k, val, f, i, s in ops]
        model_ops = [
            {"verb": v, "key": k, "value": val, "flags": f, "index": i, "session": s or None}
            for v, k, val, f, i, s in ops
        ]
        idx, now = self.index + 1, self.now + 1
        self.run(txn_command(txn_ops, ts=now), lambda: self.model.txn(idx, model_ops, now))

    @rule(sid=sessions, node=st.sampled_from(["n1", "n2", "n1", ""]), delay=delays,
          behavior=st.sampled_from(["release", "delete", ""]),
          ttl=st.sampled_from(["", "15s", "0s"]))  # fmt: skip
    def session_create(self, sid, node, delay, behavior, ttl) -> None:
        session = Session(sid, node, "nm", delay, behavior, ttl)
        idx = self.index + 1

        def model_step():
            if not sid:
                raise ModelError("Missing session ID")
            if not node:
                raise ModelError("Must provide Node")
            return self.model.session_create(idx, sid, node, "nm", delay, behavior, ttl)

        self.run(session_create_command(session, ts=self.now + 1), model_step)

    @rule(sid=sessions)
    def session_destroy(self, sid) -> None:
        idx, now = self.index + 1, self.now + 1

        def model_step():
            if not sid:
                raise ModelError("Must provide ID")
            self.model.session_destroy(idx, sid, now)
            return True

        self.run(session_destroy_command(sid, ts=now), model_step)

    @rule(back=st.integers(0, 10))
    def reap(self, back) -> None:
        upto = max(self.index - back, 0)

        def model_step():
            self.model.reap(upto)
            return True

        self.run(reap_command(upto), model_step)

    @rule(seconds=st.sampled_from([1, 10, 61]))
    def time_passes(self, seconds) -> None:
        self.now += seconds * NS_PER_SECOND

    @rule(
        batch=st.lists(
            st.tuples(st.sampled_from(["set", "delete-tree", "lock", "txn"]), keys, sessions),
            min_size=2,
            max_size=6,
        )
    )
    def batch(self, batch) -> None:
        """Several entries in one apply_batch: results must equal one-at-a-time."""
        entries, steps = [], []
        for verb, key, sid in batch:
            self.index += 1
            self.now += 1
            idx, now = self.index, self.now
            if verb == "txn":
                ops = [TxnOp("set", key + b"/t", b"x"), TxnOp("cas", key, b"y", 0, 0)]
                entries.append((idx, txn_command(ops, ts=now)))
                mops = [
                    {"verb": "set", "key": key + b"/t", "value": b"x"},
                    {"verb": "cas", "key": key, "value": b"y", "index": 0},
                ]
                steps.append(lambda idx=idx, mops=mops, now=now: self.model.txn(idx, mops, now))
            else:
                entries.append((idx, kv_command(verb, key, b"b", 0, 0, sid or None, ts=now)))
                steps.append(
                    lambda idx=idx, verb=verb, key=key, sid=sid, now=now: self.model.apply_kv(
                        idx, verb, key, b"b", 0, 0, sid or None, now
                    )
                )
        results = self.fsm.apply_batch(entries)
        for got, step in zip(results, steps, strict=True):
            self.compare(got, step)
        # Results only for the first entry: the others are applied as a replay would.
        first = entries[0][0]
        replayed = self.replica.apply_batch(entries, results_for={first})
        assert (type(replayed[0]), repr(replayed[0])) == (type(results[0]), repr(results[0]))
        assert replayed[1:] == [None] * (len(entries) - 1)

    @rule()
    def snapshot_round_trip(self) -> None:
        data = self.fsm.snapshot(term=3).to_bytes()
        restored = FSM()
        header = restored.restore(data)
        assert header.index == self.fsm.last_applied and header.term == 3
        assert restored.snapshot(term=3).to_bytes() == data
        self.fsm = restored

    # --------------------------------------------------------------------------- reads
    @rule(key=keys)
    def read_key(self, key) -> None:
        index, entry = self.fsm.store.kv_get(key)
        assert (index, as_tuple(entry)) == self.model.get(key)

    @rule(prefix=st.sampled_from(PREFIXES), separator=st.sampled_from(SEPARATORS))
    def read_prefix(self, prefix, separator) -> None:
        index, entries = self.fsm.store.kv_list(prefix)
        want_index, want_entries = self.model.list(prefix)
        assert index == want_index
        assert [as_tuple(e) for e in entries] == want_entries
        assert self.fsm.store.kv_list_keys(prefix, separator) == self.model.keys(prefix, separator)

    @rule(sid=sessions)
    def read_session(self, sid) -> None:
        if not sid:
            return
        index, found = self.fsm.store.session_get(sid)
        want_index, want = self.model.session_get(sid)
        assert (index, session_view(found)) == (want_index, session_view(want))

    @invariant()
    def replayed_state_equals_the_live_one(self) -> None:
        if not hasattr(self, "fsm"):
            return
        assert self.replica.last_applied == self.fsm.last_applied
        assert self.replica.snapshot(term=1).to_bytes() == self.fsm.snapshot(term=1).to_bytes()

    @invariant()
    def whole_state_agrees(self) -> None:
        if not hasattr(self, "fsm"):
            return
        index, entries = self.fsm.store.kv_list(b"")
        assert (index, [as_tuple(e) for e in entries]) == self.model.list(b"")
        index, found = self.fsm.store.session_list()
        want_index, want = self.model.session_list()
        assert (index, [session_view(s) for s in found]) == (
            want_index,
            [session_view(s) for s in want],
        )
        version = self.fsm.store.snapshot()
        held = {k: e[6] for k, e in self.model.s.kvs.items() if e[6]}
        for sid in SESSIONS[:3]:
            assert version.session_keys(sid) == sorted(k for k, s in held.items() if s == sid)


StoreVsModel.TestCase.settings = settings(
    max_examples=int(os.environ.get("PYKVS_MODEL_EXAMPLES", "40")),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_store_matches_model = StoreVsModel.TestCase
