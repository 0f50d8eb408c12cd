"""Speed ratios measured interleaved, for targets checked on a shared VM.

pytest-benchmark times a baseline and a candidate one after the other; on the 2-vCPU bench VM
the machine's speed moved by up to 2x between two such tests seconds apart (a plain-Python
baseline took 3.1 ms in one run and 6.1 ms in the next), so a ratio of their separate
statistics can miss a target the code meets. ``interleaved_speedup`` alternates short blocks
of calls of the two, so both see the same machine, and compares their fastest calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest


def interleaved_speedup(baseline: Callable[[], Any], candidate: Callable[[], Any],
                        rounds: int = 20, block: int = 5) -> float:
    """min(baseline call time) / min(candidate call time), over ``rounds`` alternations of
    ``block`` calls of each (a block, not one call, so that each side's fastest call runs
    with its own data in the caches rather than the other side's)."""
    best_baseline = best_candidate = float("inf")
    clock = time.perf_counter
    for _ in range(rounds):
        for _ in range(block):
            began = clock()
            baseline()
            best_baseline = min(best_baseline, clock() - began)
        for _ in range(block):
            began = clock()
            candidate()
            best_candidate = min(best_candidate, clock() - began)
    return best_baseline / best_candidate


def median_seconds(benchmark: Any) -> float:
    """The median round time of a finished ``benchmark.pedantic``; under
    ``--benchmark-disable`` the body ran once untimed, so the test skips its figures."""
    if benchmark.stats is None:
        pytest.skip("benchmarks disabled: the body ran once, untimed; no figures to check")
    return float(benchmark.stats.stats.median)
