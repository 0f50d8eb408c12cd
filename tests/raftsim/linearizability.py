"""A linearizability checker for key/value histories (Wing & Gong, with Porcupine's refinements).

A history is a list of :class:`Operation`: what a client asked (``input``), what it got back
(``output``), and when it called and when the answer arrived, in one clock shared by all clients.
The history is linearizable if every operation can be given a single point between its call and its
return such that, taken in that order, the operations are a legal run of the sequential model.

The search is Wing & Gong's, with the two refinements Lowe and Porcupine added:

- P-compositionality: a KV history is linearizable iff each key's sub-history is, so the model
  splits the history by key and each part is searched on its own (the search is exponential in the
  number of concurrent operations, so small parts matter more than anything else);
- memoization: a (set of linearized operations, model state) pair already explored is never
  explored again; the set is a Python int used as a bitmask.

An operation whose answer was never seen (the client timed out, or the simulation ended first) has
``ret = math.inf`` and ``output = UNKNOWN``: it may take effect at any point after its call, or,
by being placed after everything observed, in effect never. The model accepts any output for it.

Times that tie count as overlapping (calls sort before returns at the same instant), which can only
make the checker more permissive; the simulator stamps events with a strictly increasing counter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class _Unknown:
    """The output of an operation whose response was never observed."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"

    def __reduce__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()


@dataclass(frozen=True, slots=True)
class Operation:
    """One client call: ``input`` is e.g. ``("put", key, value)``; ``output`` what came back."""

    client: int
    input: tuple
    call: float
    ret: float = math.inf
    output: Any = UNKNOWN

    def __post_init__(self) -> None:
        if not isinstance(self.input, tuple) or not self.input:
            raise ValueError(f"Operation input must be a non-empty tuple, got {self.input!r}")
        if not self.call <= self.ret:
            raise ValueError(
                f"Operation ret ({self.ret!r}) is before its call ({self.call!r}): {self.input!r}"
            )


class Model(Protocol):
    """A sequential specification: states must be hashable (they key the memo table)."""

    def init(self) -> Hashable: ...

    def step(self, state: Hashable, input: tuple, output: Any) -> tuple[bool, Hashable]:
        """Whether ``input`` answered with ``output`` is legal in ``state``, and the next state."""
        ...

    def partition(self, ops: Sequence[Operation]) -> list[tuple[Hashable, list[Operation]]]:
        """Independent sub-histories, each labelled (e.g. by key)."""
        ...

    def describe(self, op: Operation) -> str: ...

    def requires(self, op: Operation) -> tuple[Hashable, ...]:
        """The state ``op`` can only take effect in, as ``(state,)``; ``()`` when any will do.

        With ``produces`` this lets the search drop a branch as soon as a read can no longer be
        satisfied (its state is gone and nothing left to linearize can bring it back), instead
        of finding out after exploring every order of the calls in between.
        """
        ...

    def produces(self, op: Operation) -> tuple[Hashable, ...]:
        """Every state other than the one before that ``op`` may leave behind."""
        ...


class KVModel:
    """A map of independent registers; each key's state is its value, or None when absent.

    Inputs and the outputs they answer with:

    - ``("get", key)`` -> the value, or None when the key is absent;
    - ``("put", key, value)`` -> None;
    - ``("delete", key)`` -> None;
    - ``("cas", key, expected, new)`` -> True if the value was ``expected`` (None: absent) and is
      now ``new``, False if it was something else and is unchanged.
    """

    def init(self) -> Hashable:
        return None

    def step(self, state: Hashable, input: tuple, output: Any) -> tuple[bool, Hashable]:
        kind = input[0]
        unknown = output is UNKNOWN
        if kind == "get":
            return (unknown or output == state), state
        if kind == "put":
            return (unknown or output is None), input[2]
        if kind == "delete":
            return (unknown or output is None), None
        if kind == "cas":
            matched = state == input[2]
            if unknown:
                # Both outcomes are possible; the search tries the one that changes the state
                # here, and "had no effect" is covered by linearizing the call after everything.
                return True, (input[3] if matched else state)
            if output is True:
                return matched, input[3]
            if output is False:
                return not matched, state
            return False, state
        raise ValueError(f"KVModel input kind must be get/put/delete/cas, got {input!r}")

    def partition(self, ops: Sequence[Operation]) -> list[tuple[Hashable, list[Operation]]]:
        by_key: dict[Hashable, list[Operation]] = {}
        for op in ops:
            if len(op.input) < 2:
                raise ValueError(f"KVModel input must name a key, got {op.input!r}")
            if op.input[0] == "get" and op.output is UNKNOWN:
                continue  # an unanswered read has no effect and constrains nothing
            by_key.setdefault(op.input[1], []).append(op)
        return list(by_key.items())

    def requires(self, op: Operation) -> tuple[Hashable, ...]:
        kind, output = op.input[0], op.output
        if kind == "get" and output is not UNKNOWN:
            return (output,)
        if kind == "cas" and output is True:
            return (op.input[2],)
        return ()

    def produces(self, op: Operation) -> tuple[Hashable, ...]:
        kind = op.input[0]
        if kind == "put":
            return (op.input[2],)
        if kind == "delete":
            return (None,)
        if kind == "cas" and op.output is not False:
            return (op.input[3],)
        return ()

    def describe(self, op: Operation) -> str:
        ret = "..." if op.ret == math.inf else f"{op.ret:g}"
        args = ", ".join(repr(a) for a in op.input[1:])
        return f"client {op.client}: {op.input[0]}({args}) -> {op.output!r}  [{op.call:g}, {ret}]"


KV_MODEL = KVModel()


@dataclass
class CheckResult:
    """The verdict: ``ok`` is True, False, or None when the search gave up (step budget spent)."""

    ok: bool | None
    partition: Hashable = None
    operations: list[Operation] = field(default_factory=list)
    best_linearization: list[Operation] = field(default_factory=list)
    stuck: Operation | None = None
    steps: int = 0
    model: Model = KV_MODEL

    def explain(self) -> str:
        """A human-readable account of a failed (or abandoned) partition."""
        if self.ok:
            return "linearizable"
        head = "not linearizable" if self.ok is False else "gave up (step budget spent)"
        lines = [f"{head}: partition {self.partition!r}, {len(self.operations)} operations"]
        lines.append("longest linearizable prefix found:")
        lines += [
            f"  {i}. {self.model.describe(op)}" for i, op in enumerate(self.best_linearization)
        ]
        if self.stuck is not None:
            lines.append("no legal place for (the next operation that must take effect):")
            lines.append(f"  {self.model.describe(self.stuck)}")
        lines.append("all operations on this partition, by call time:")
        lines += [
            f"  {self.model.describe(op)}" for op in sorted(self.operations, key=lambda o: o.call)
        ]
        return "\n".join(lines)


def check(
    ops: Sequence[Operation], model: Model = KV_MODEL, max_steps: int = 2_000_000
) -> CheckResult:
    """Check a whole history; the first non-linearizable (or abandoned) partition is returned."""
    if max_steps <= 0:
        raise ValueError(f"max_steps must be positive, got {max_steps!r}")
    total_steps = 0
    for label, part in model.partition(ops):
        result = _check_partition(part, model, max_steps)
        total_steps += result.steps
        if not result.ok:
            result.partition = label
            return result
    return CheckResult(ok=True, steps=total_steps, model=model)


def _check_partition(ops: list[Operation], model: Model, max_steps: int) -> CheckResult:
    """Wing & Gong's search over a doubly linked list of call and return events."""
    # Events: position p in [0, 2n) after sorting; calls sort before returns at equal times.
    if not ops:
        return CheckResult(ok=True, model=model)
    events = sorted(
        [(op.call, 0, i) for i, op in enumerate(ops)] + [(op.ret, 1, i) for i, op in enumerate(ops)]
    )
    # Positions 0..size-1 are events; head and tail are sentinels (no None checks in the loop).
    size = len(events)
    head, tail = size, size + 1
    nxt = [*range(1, size), tail, 0, 0]
    prv = [head, *range(0, size - 1), 0, size - 1]
    nxt[head] = 0
    op_at = [i for _, _, i in events]
    is_call = [kind == 0 for _, kind, _ in events] + [False, False]  # sentinels are not calls
    return_pos = [0] * len(ops)
    for pos, (_, kind, i) in enumerate(events):
        if kind == 1:
            return_pos[i] = pos

    def candidates() -> list[int]:
        """The calls that may take effect next: those before the first pending return.

        Porcupine tries them in call order; trying the one that must return soonest first
        finds a correct system's linearization with little or no backtracking, even when a
        stalled leader leaves dozens of calls overlapping (the order changes nothing else:
        every candidate is still tried before backing up).
        """
        found = []
        pos = nxt[head]
        while is_call[pos]:
            found.append(pos)
            pos = nxt[pos]
        found.sort(key=lambda p: return_pos[op_at[p]])
        return found

    dead_if_left = _dead_read_check(ops, model)
    memo: set[tuple[int, Hashable]] = set()
    # One frame per linearized call: its position, the candidates at that depth and how many
    # were tried, and the state and set before it.
    stack: list[tuple[int, list[int], int, Hashable, int]] = []
    state = model.init()
    linearized = 0
    best: list[int] = []
    deepest_prune = (0, -1)  # (depth, the read a choice there would have stranded)
    steps = 0
    cands, tried = candidates(), 0
    while nxt[head] != tail:
        steps += 1
        if steps > max_steps:
            if len(stack) > len(best):
                best = [op_at[frame[0]] for frame in stack]
            return _failure(None, ops, model, best, deepest_prune, steps)
        chosen = -1
        while tried < len(cands):
            pos = cands[tried]
            tried += 1
            i = op_at[pos]
            op = ops[i]
            legal, new_state = model.step(state, op.input, op.output)
            if legal:
                key = (linearized | (1 << i), new_state)
                if key not in memo:
                    memo.add(key)
                    if new_state != state:
                        stranded = dead_if_left(state, key[0])
                        if stranded >= 0:
                            if len(stack) >= deepest_prune[0]:
                                deepest_prune = (len(stack), stranded)
                            continue
                    chosen = pos
                    break
        if chosen >= 0:
            stack.append((chosen, cands, tried, state, linearized))
            state, linearized = new_state, linearized | (1 << op_at[chosen])
            # Lift the call and its return out of the list.
            for p in (chosen, return_pos[op_at[chosen]]):
                nxt[prv[p]] = nxt[p]
                prv[nxt[p]] = prv[p]
            cands, tried = candidates(), 0
            continue
        # No candidate works here: undo the last choice (first noting the deepest
        # linearization tried, for the failure report; a success never needs it).
        if len(stack) > len(best):
            best = [op_at[frame[0]] for frame in stack]
        if not stack:
            return _failure(False, ops, model, best, deepest_prune, steps)
        chosen, cands, tried, state, linearized = stack.pop()
        for p in (return_pos[op_at[chosen]], chosen):
            nxt[prv[p]] = p
            prv[nxt[p]] = p
    return CheckResult(ok=True, steps=steps, model=model)


def _dead_read_check(ops: list[Operation], model: Model) -> Callable[[Hashable, int], int]:
    """Build ``dead(old_state, linearized)``: the index of a pending read that leaving
    ``old_state`` strands, or -1.

    A call that requires state S (a read of S) and is not yet linearized needs S back before its
    return; only a not-yet-linearized call that may produce S and is called by then can do it.
    """
    requires = getattr(model, "requires", None)
    produces = getattr(model, "produces", None)
    if requires is None or produces is None:
        return lambda old_state, linearized: -1
    writers: dict[Hashable, list[int]] = {}
    for i, op in enumerate(ops):
        for state in produces(op):
            writers.setdefault(state, []).append(i)
    # state -> [(reader index, reader bit, bits of the writers that could still serve it)]
    readers: dict[Hashable, list[tuple[int, int, int]]] = {}
    for i, op in enumerate(ops):
        for state in requires(op):
            mask = 0
            for w in writers.get(state, ()):
                if w != i and ops[w].call <= op.ret:
                    mask |= 1 << w
            readers.setdefault(state, []).append((i, 1 << i, mask))

    def dead(old_state: Hashable, linearized: int) -> int:
        for i, reader, serving in readers.get(old_state, ()):
            if not linearized & reader and not serving & ~linearized:
                return i
        return -1

    return dead


def _failure(
    ok: bool | None,
    ops: list[Operation],
    model: Model,
    best: list[int],
    deepest_prune: tuple[int, int],
    steps: int,
) -> CheckResult:
    chosen = set(best)
    pending = [op for i, op in enumerate(ops) if i not in chosen]
    stuck = min(pending, key=lambda o: o.ret) if pending else None
    depth, stranded = deepest_prune
    if stranded >= 0 and depth >= len(best):
        stuck = ops[stranded]  # every way on from the longest prefix strands this read
    return CheckResult(
        ok=ok,
        operations=list(ops),
        best_linearization=[ops[i] for i in best],
        stuck=stuck,
        steps=steps,
        model=model,
    )


class History:
    """Records calls and responses as they happen; ``operations()`` gives the checker's input."""

    def __init__(self) -> None:
        self._calls: list[tuple[int, tuple, float]] = []
        self._responses: dict[int, tuple[Any, float]] = {}

    def invoke(self, client: int, input: tuple, time: float) -> int:
        """Record a call; returns its id for :meth:`respond`."""
        self._calls.append((client, input, time))
        return len(self._calls) - 1

    def respond(self, op_id: int, output: Any, time: float) -> None:
        if not 0 <= op_id < len(self._calls):
            raise ValueError(f"op_id {op_id!r} was never invoked")
        if op_id in self._responses:
            raise ValueError(f"op_id {op_id!r} already has a response")
        call_time = self._calls[op_id][2]
        if time < call_time:
            raise ValueError(f"response time {time!r} is before the call time {call_time!r}")
        self._responses[op_id] = (output, time)

    def pending(self) -> list[int]:
        return [i for i in range(len(self._calls)) if i not in self._responses]

    def operations(self) -> list[Operation]:
        ops = []
        for i, (client, input, call) in enumerate(self._calls):
            output, ret = self._responses.get(i, (UNKNOWN, math.inf))
            ops.append(Operation(client, input, call, ret, output))
        return ops

    def __len__(self) -> int:
        return len(self._calls)
