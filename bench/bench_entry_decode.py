"""Building DirEntries in Python (issue 7: prefix reads through the Python API).

Run: pytest bench/bench_entry_decode.py --benchmark-only -p no:cacheprovider

A KVS.List reply of 1,000 entries (``[[key, [value, flags, create, modify, lock, session]]]``,
as the client unpacks it) turned into ``DirEntry`` objects three ways, in one run:

- ``generated``: a frozen slotted dataclass with the ``__init__`` dataclasses generates (one
  ``object.__setattr__`` per field): what DirEntry cost before;
- ``dir_entry``: ``DirEntry(...)`` per pair (its ``__init__`` calls the slot setters);
- ``entries_from_pairs``: the client's builder (the setters inlined in one loop).

The speed-up of ``entries_from_pairs`` over ``generated`` is a ratio of medians measured in this
same run (machine noise cancels); it is reported, and checked only to be > 1.
"""

from __future__ import annotations

from dataclasses import MISSING, field, fields, make_dataclass
from typing import Any

import pytest

from pykvs.state.entry import DirEntry, entries_from_pairs

ENTRIES = 1_000
PAIRS = [[b"range/%010d" % i, [bytes(range(100)), 0, i + 1, i + 1, 0, None]]
         for i in range(ENTRIES)]

_medians: dict[str, float] = {}


# DirEntry's fields with the __init__ dataclasses generates for a frozen class (the baseline).
GeneratedEntry = make_dataclass(
    "GeneratedEntry",
    [(f.name, f.type) if f.default is MISSING else (f.name, f.type, field(default=f.default))
     for f in fields(DirEntry)],
    frozen=True, slots=True)


def _generated(pairs: list[Any]) -> list[Any]:
    return [GeneratedEntry(bytes(k), bytes(v or b""), f, c, m, lk, s or None)
            for k, (v, f, c, m, lk, s) in pairs]


def _dir_entry(pairs: list[Any]) -> list[DirEntry]:
    return [DirEntry(bytes(k), bytes(v or b""), f, c, m, lk, s or None)
            for k, (v, f, c, m, lk, s) in pairs]


CASES = {"generated": _generated, "dir_entry": _dir_entry,
         "entries_from_pairs": entries_from_pairs}


@pytest.mark.parametrize("how", list(CASES))
def test_build_entries(benchmark: Any, how: str) -> None:
    build = CASES[how]
    built = benchmark(build, PAIRS)
    assert len(built) == ENTRIES and built[-1].modify_index == ENTRIES
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        _medians[how] = stats.stats.median


def test_speedup_over_generated_init(benchmark: Any) -> None:
    """Ratio of the medians above (needs the three cases to have run first)."""
    if not {"generated", "entries_from_pairs"} <= _medians.keys():
        pytest.skip("run with the build cases (and --benchmark-only)")
    speedup = _medians["generated"] / _medians["entries_from_pairs"]
    benchmark.extra_info["speedup_entries_from_pairs"] = round(speedup, 2)
    benchmark.extra_info["speedup_dir_entry"] = round(
        _medians["generated"] / _medians["dir_entry"], 2)
    print(f"\nentries_from_pairs: {speedup:.2f}x the generated frozen __init__; DirEntry(): "
          f"{benchmark.extra_info['speedup_dir_entry']:.2f}x")
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    assert speedup > 1.0
