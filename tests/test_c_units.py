"""Builds each C unit's test driver and fuzz target (ASan + UBSan) and runs them.

csrc/tests/radix/: test_radix.c runs named cases and makes every allocation of a scripted
workload fail in turn; fuzz_radix.c runs random transactions on many live versions against a
sorted-array model, then checks that nothing is left allocated.
csrc/tests/transcode/: test_transcode.c checks exact outputs and every error status;
fuzz_transcode.c compares random listings against a naive C reference and throws garbage at every
entry point.
csrc/tests/httphead/: test_httphead.c checks exact decisions, then fuzzes mutated request heads,
each in a buffer of exactly its length, checking that every answer points inside the head.

Each fuzz target runs for PYKVS_<UNIT>_FUZZ_SECONDS (default 3). Any failed check, sanitizer
report or leak fails the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CSRC_TESTS = Path(__file__).resolve().parent.parent / "csrc" / "tests"
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")
# unit -> (what the driver prints when it passes, what the fuzz target prints)
UNITS = {
    "radix": (("test_radix: ok",), ("fuzz_radix:", "rounds, ok")),
    "transcode": (("test_transcode: all checks passed",), ("fuzz_transcode:", "no failure")),
    "httphead": (("test_httphead: exact cases ok",), ("test_httphead: fuzz", "no failure")),
}


@pytest.mark.skipif(
    shutil.which("make") is None or shutil.which("gcc") is None, reason="needs make and gcc"
)
@pytest.mark.parametrize("unit", sorted(UNITS))
def test_c_driver_and_fuzz_target_pass_under_sanitizers(unit: str, tmp_path: Path) -> None:
    fuzz_seconds = os.environ.get(f"PYKVS_{unit.upper()}_FUZZ_SECONDS", "3")
    result = subprocess.run(
        ["make", "-C", str(CSRC_TESTS / unit), "check", f"BUILD={tmp_path}",
         f"FUZZ_SECONDS={fuzz_seconds}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert not any(mark in output for mark in SANITIZER_MARKS), output
    driver_marks, fuzz_marks = UNITS[unit]
    assert all(mark in result.stdout for mark in driver_marks + fuzz_marks), result.stdout
