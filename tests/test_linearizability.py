"""The linearizability checker against hand-made histories and a brute-force oracle."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from raftsim.linearizability import (
    KV_MODEL,
    UNKNOWN,
    History,
    Operation,
    check,
)


def op(client: int, input: tuple, call: float, ret: float = math.inf, output=UNKNOWN) -> Operation:
    return Operation(client, input, call, ret, output)


def put(client: int, key: str, value: str, call: float, ret: float = math.inf) -> Operation:
    return op(client, ("put", key, value), call, ret, UNKNOWN if ret == math.inf else None)


def get(client: int, key: str, value: str | None, call: float, ret: float) -> Operation:
    return op(client, ("get", key), call, ret, value)


def cas(client: int, key: str, old, new, ok, call: float, ret: float = math.inf) -> Operation:
    return op(client, ("cas", key, old, new), call, ret, ok)


# --- histories that must be accepted ---------------------------------------------------------


def test_empty_history_is_linearizable() -> None:
    assert check([]).ok is True


def test_sequential_put_then_get() -> None:
    history = [put(0, "k", "a", 0, 1), get(1, "k", "a", 2, 3)]
    assert check(history).ok is True


def test_get_of_absent_key_returns_none() -> None:
    assert check([get(0, "k", None, 0, 1)]).ok is True


@pytest.mark.parametrize("seen", ["a", "b"])
def test_read_concurrent_with_write_may_see_either_value(seen: str) -> None:
    history = [put(0, "k", "a", 0, 1), put(1, "k", "b", 2, 10), get(2, "k", seen, 3, 4)]
    assert check(history).ok is True


def test_concurrent_reads_may_disagree_while_a_write_is_in_flight() -> None:
    # r1 sees the new value, then r2 (overlapping r1 but not after it) sees the old one: the
    # write's point can sit between r2's point and r1's point.
    history = [
        put(0, "k", "old", 0, 1),
        put(1, "k", "new", 2, 20),
        get(2, "k", "new", 3, 6),
        get(3, "k", "old", 4, 8),
    ]
    assert check(history).ok is True


def test_unanswered_write_may_take_effect_late() -> None:
    history = [put(0, "k", "a", 0), get(1, "k", None, 1, 2), get(1, "k", "a", 50, 51)]
    assert check(history).ok is True


def test_unanswered_write_may_never_take_effect() -> None:
    history = [put(0, "k", "a", 0), get(1, "k", None, 100, 101)]
    assert check(history).ok is True


def test_delete_then_get_sees_absent() -> None:
    history = [
        put(0, "k", "a", 0, 1),
        op(0, ("delete", "k"), 2, 3, None),
        get(1, "k", None, 4, 5),
    ]
    assert check(history).ok is True


def test_cas_success_and_failure() -> None:
    history = [
        put(0, "k", "a", 0, 1),
        cas(1, "k", "a", "b", True, 2, 3),
        cas(2, "k", "a", "c", False, 4, 5),
        get(0, "k", "b", 6, 7),
    ]
    assert check(history).ok is True


def test_cas_on_absent_key_creates_it() -> None:
    history = [cas(0, "k", None, "a", True, 0, 1), get(1, "k", "a", 2, 3)]
    assert check(history).ok is True


def test_unanswered_cas_may_or_may_not_have_applied() -> None:
    applied = [put(0, "k", "a", 0, 1), cas(1, "k", "a", "b", UNKNOWN, 2), get(2, "k", "b", 9, 10)]
    not_applied = [*applied[:2], get(2, "k", "a", 9, 10)]
    assert check(applied).ok is True
    assert check(not_applied).ok is True


def test_equal_times_count_as_overlapping() -> None:
    history = [put(0, "k", "a", 0, 5), get(1, "k", None, 5, 6)]
    assert check(history).ok is True


def test_unanswered_read_constrains_nothing() -> None:
    history = [put(0, "k", "a", 0, 1), get(1, "k", UNKNOWN, 2, math.inf)]
    assert check(history).ok is True


# --- histories that must be rejected ---------------------------------------------------------


def test_stale_read_is_rejected() -> None:
    history = [put(0, "k", "a", 0, 1), put(0, "k", "b", 2, 3), get(1, "k", "a", 4, 5)]
    result = check(history)
    assert result.ok is False
    assert result.partition == "k"
    assert "get('k') -> 'a'" in result.explain()


def test_lost_write_is_rejected() -> None:
    history = [put(0, "k", "a", 0, 1), get(1, "k", None, 2, 3)]
    assert check(history).ok is False


def test_read_of_a_value_never_written_is_rejected() -> None:
    assert check([put(0, "k", "a", 0, 1), get(1, "k", "z", 2, 3)]).ok is False


def test_read_cannot_see_a_write_invoked_after_it_returned() -> None:
    history = [get(1, "k", "a", 0, 1), put(0, "k", "a", 2)]
    assert check(history).ok is False


def test_value_cannot_flip_back_without_a_write() -> None:
    # The unanswered write was seen, so it happened; a later read cannot unsee it.
    history = [put(0, "k", "a", 0), get(1, "k", "a", 1, 2), get(2, "k", None, 3, 4)]
    assert check(history).ok is False


def test_two_cas_from_the_same_value_cannot_both_succeed() -> None:
    history = [
        put(0, "k", "a", 0, 1),
        cas(1, "k", "a", "b", True, 2, 10),
        cas(2, "k", "a", "c", True, 2, 10),
    ]
    assert check(history).ok is False


def test_failed_cas_must_have_seen_a_different_value() -> None:
    history = [put(0, "k", "a", 0, 1), cas(1, "k", "a", "b", False, 2, 3)]
    assert check(history).ok is False


def test_lost_write_after_a_delete_is_rejected() -> None:
    history = [
        op(0, ("delete", "k"), 0, 1, None),
        put(0, "k", "a", 2, 3),
        get(1, "k", None, 4, 5),
    ]
    assert check(history).ok is False


def test_keys_are_checked_independently() -> None:
    good_a = [put(0, "a", "1", 0, 1), get(1, "a", "1", 2, 3)]
    bad_b = [put(0, "b", "1", 0, 1), get(1, "b", None, 2, 3)]
    assert check(good_a).ok is True
    result = check(good_a + bad_b)
    assert result.ok is False
    assert result.partition == "b"
    assert {o.input[1] for o in result.operations} == {"b"}


def test_failure_explains_the_stuck_operation() -> None:
    stale = get(1, "k", "a", 4, 5)
    history = [put(0, "k", "a", 0, 1), put(0, "k", "b", 2, 3), stale]
    result = check(history)
    assert result.ok is False
    assert result.stuck == stale
    assert [o.input for o in result.best_linearization] == [("put", "k", "a")]
    assert "no legal place" in result.explain()


def test_step_budget_gives_up_with_none() -> None:
    history = [put(c, "k", str(c), 0, 100) for c in range(12)] + [get(99, "k", "zz", 101, 102)]
    result = check(history, max_steps=50)
    assert result.ok is None
    assert "gave up" in result.explain()


# A history from the simulator (seed 1961 of an early run): a deposed leader stalled, so some
# thirty calls on one key overlap, after two whose outcome is unknown. Linearizable, but a plain
# search takes a wrong turn early (an acknowledged delete placed before an unknown put) and only
# learns it after trying every order of the overlapping calls: millions of steps. Pruning reads
# that can no longer be satisfied decides it at once.
STALLED_LEADER_HISTORY = [
    (1, 4, "get", (), None),
    (2, 5, "get", (), None),
    (3, 6, "put", ("v32",), None),
    (7, 10, "put", ("v33",), None),
    (8, None, "delete", (), UNKNOWN),
    (9, None, "put", ("v36",), UNKNOWN),
    (14, 16, "get", (), "v36"),
    (15, 20, "delete", (), None),
    (17, 22, "get", (), None),
    (18, 23, "get", (), None),
    (19, 52, "get", (), "v55"),
    (21, 46, "put", ("v50",), None),
    (24, 47, "get", (), "v50"),
    (25, 48, "cas", (None, "v52"), False),
    (26, 49, "put", ("v53",), None),
    (27, 53, "get", (), "v55"),
    (28, 50, "put", ("v55",), None),
    (29, 54, "get", (), "v55"),
    (30, 59, "cas", (None, "v57"), False),
    (31, 60, "put", ("v58",), None),
    (32, 61, "put", ("v59",), None),
    (33, 62, "put", ("v60",), None),
    (34, 55, "get", (), "v55"),
    (35, 63, "put", ("v62",), None),
    (36, 64, "get", (), "v62"),
    (37, 65, "get", (), "v62"),
    (38, 66, "get", (), "v62"),
    (39, 56, "get", (), "v55"),
    (40, 57, "get", (), "v55"),
    (41, 67, "get", (), "v62"),
    (42, 68, "delete", (), None),
    (43, 69, "put", ("v74",), None),
    (44, 70, "get", (), "v74"),
    (45, 71, "delete", (), None),
    (51, 58, "get", (), "v55"),
]


def test_overlapping_calls_after_unknown_outcomes_are_decided_quickly() -> None:
    ops = []
    for client, (call, ret, kind, args, output) in enumerate(STALLED_LEADER_HISTORY):
        ops.append(op(client, (kind, "k", *args), call, math.inf if ret is None else ret, output))
    result = check(ops, max_steps=10_000)
    assert result.ok is True, result.explain()
    # The same calls with one read made stale are rejected just as quickly.
    stale = ops.index(next(o for o in ops if o.output == "v74"))
    ops[stale] = Operation(ops[stale].client, ("get", "k"), ops[stale].call, ops[stale].ret, "v33")
    assert check(ops, max_steps=10_000).ok is False


# --- inputs the checker refuses --------------------------------------------------------------


def test_operation_with_ret_before_call_is_refused() -> None:
    with pytest.raises(ValueError, match="before its call"):
        Operation(0, ("get", "k"), 5, 4, None)


def test_operation_with_empty_input_is_refused() -> None:
    with pytest.raises(ValueError, match="non-empty tuple"):
        Operation(0, (), 0, 1, None)


def test_unknown_verb_is_refused() -> None:
    with pytest.raises(ValueError, match="get/put/delete/cas"):
        check([op(0, ("append", "k", "x"), 0, 1, None)])


def test_non_positive_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="max_steps"):
        check([], max_steps=0)


# --- the History recorder ----------------------------------------------------------------------


def test_history_records_answered_and_pending_calls() -> None:
    history = History()
    w = history.invoke(0, ("put", "k", "a"), 1)
    r = history.invoke(1, ("get", "k"), 2)
    history.respond(w, None, 3)
    assert history.pending() == [r]
    ops = history.operations()
    assert ops[0] == Operation(0, ("put", "k", "a"), 1, 3, None)
    assert ops[1].ret == math.inf and ops[1].output is UNKNOWN
    assert len(history) == 2


def test_history_refuses_bad_responses() -> None:
    history = History()
    first = history.invoke(0, ("get", "k"), 5)
    with pytest.raises(ValueError, match="never invoked"):
        history.respond(7, None, 6)
    with pytest.raises(ValueError, match="before the call time"):
        history.respond(first, None, 4)
    history.respond(first, None, 6)
    with pytest.raises(ValueError, match="already has a response"):
        history.respond(first, None, 7)


# --- against a brute-force oracle ----------------------------------------------------------------


def brute_force_linearizable(ops: list[Operation]) -> bool:
    """Try every total order that respects real time; unanswered calls may be left out."""
    optional = [i for i, o in enumerate(ops) if o.output is UNKNOWN]
    for drop in itertools.chain.from_iterable(
        itertools.combinations(optional, k) for k in range(len(optional) + 1)
    ):
        kept = [o for i, o in enumerate(ops) if i not in drop]
        for order in itertools.permutations(kept):
            if any(b.ret < a.call for ai, a in enumerate(order) for b in order[ai + 1 :]):
                continue
            state = KV_MODEL.init()
            for o in order:
                legal, state = KV_MODEL.step(state, o.input, o.output)
                if not legal:
                    break
            else:
                return True
    return False


def random_history(rng: random.Random, n_ops: int) -> list[Operation]:
    """Random calls with random answers (so both verdicts occur), on one key."""
    values = [None, "a", "b"]
    ops = []
    for client in range(n_ops):
        call = rng.randrange(20)
        answered = rng.random() < 0.8
        ret = call + rng.randrange(1, 8) if answered else math.inf
        kind = rng.choice(["get", "put", "cas", "delete"])
        if kind == "get":
            ops.append(op(client, ("get", "k"), call, ret, rng.choice(values)))
        elif kind == "put":
            ops.append(op(client, ("put", "k", rng.choice("ab")), call, ret, None))
        elif kind == "delete":
            ops.append(op(client, ("delete", "k"), call, ret, None))
        else:
            outcome = rng.choice([True, False])
            ops.append(
                op(client, ("cas", "k", rng.choice(values), rng.choice("ab")), call, ret, outcome)
            )
        if not answered:
            ops[-1] = Operation(client, ops[-1].input, call)
    return ops


def test_agrees_with_brute_force_on_random_small_histories() -> None:
    rng = random.Random(20240611)
    verdicts = {True: 0, False: 0}
    for _ in range(400):
        history = random_history(rng, rng.randrange(1, 6))
        expected = brute_force_linearizable(history)
        assert check(history).ok is expected, history
        verdicts[expected] += 1
    # Both verdicts must actually have been exercised.
    assert verdicts[True] > 50 and verdicts[False] > 50


def test_accepts_histories_generated_from_a_real_sequential_run() -> None:
    """Give each call a secret point inside its interval, run them in that order: linearizable."""
    rng = random.Random(7)
    for _ in range(30):
        points = []
        for client in range(60):
            call = rng.uniform(0, 100)
            ret = call + rng.uniform(0.1, 15)
            points.append((rng.uniform(call, ret), call, ret, client))
        points.sort()
        state: dict[str, str] = {}
        ops = []
        for _, call, ret, client in points:
            key = rng.choice("xyz")
            kind = rng.choice(["get", "put", "cas"])
            if kind == "get":
                ops.append(op(client, ("get", key), call, ret, state.get(key)))
            elif kind == "put":
                value = str(rng.randrange(5))
                state[key] = value
                ops.append(op(client, ("put", key, value), call, ret, None))
            else:
                old, new = rng.choice([None, *map(str, range(5))]), str(rng.randrange(5))
                swapped = state.get(key) == old
                if swapped:
                    state[key] = new
                ops.append(op(client, ("cas", key, old, new), call, ret, swapped))
        result = check(ops)
        assert result.ok is True, result.explain()
