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
from collections.abc import Hashable, Sequence
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
    """Porcupine's search over a doubly linked list of call and return events."""
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
    is_call = [kind == 0 for _, kind, _ in events]
    return_pos = [0] * len(ops)
    for pos, (_, kind, i) in enumerate(events):
        if kind == 1:
            return_pos[i] = pos

    memo: set[tuple[int, Hashable]] = set()
    stack: list[tuple[int, Hashable]] = []  # (call position, state before it)
    state = model.init()
    linearized = 0
    best: list[int] = []
    steps = 0
    entry = nxt[head]
    while nxt[head] != tail:
        steps += 1
        if steps > max_steps:
            if len(stack) > len(best):
                best = [op_at[p] for p, _ in stack]
            return _failure(None, ops, model, best, steps)
        if is_call[entry]:
            i = op_at[entry]
            op = ops[i]
            legal, new_state = model.step(state, op.input, op.output)
            if legal:
                new_linearized = linearized | (1 << i)
                key = (new_linearized, new_state)
                if key not in memo:
                    memo.add(key)
                    stack.append((entry, state))
                    state, linearized = new_state, new_linearized
                    # Lift the call and its return out of the list.
                    ret = return_pos[i]
                    for p in (entry, ret):
                        nxt[prv[p]] = nxt[p]
                        prv[nxt[p]] = prv[p]
                    entry = nxt[head]
                    continue
            entry = nxt[entry]
        else:
            # A return reached with its call not linearized: undo the last choice (first noting
            # the deepest linearization tried, for the failure report; a success never needs it).
            if len(stack) > len(best):
                best = [op_at[p] for p, _ in stack]
            if not stack:
                return _failure(False, ops, model, best, steps)
            entry, state = stack.pop()
            i = op_at[entry]
            linearized &= ~(1 << i)
            for p in (return_pos[i], entry):
                nxt[prv[p]] = p
                prv[nxt[p]] = p
            entry = nxt[entry]
    return CheckResult(ok=True, steps=steps, model=model)


def _failure(
    ok: bool | None, ops: list[Operation], model: Model, best: list[int], steps: int
) -> CheckResult:
    chosen = set(best)
    pending = [op for i, op in enumerate(ops) if i not in chosen]
    stuck = min(pending, key=lambda o: o.ret) if pending else None
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
