"""Builds the tree's C test driver and fuzz target (ASan + UBSan) and runs them.

csrc/tests/radix/: test_radix.c runs named cases and makes every allocation of a
scripted workload fail in turn; fuzz_radix.c runs random transactions on many live
versions against a sorted-array model for a few seconds, then checks that nothing is
left allocated. Any failed check, sanitizer report or leak fails this test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent.parent / "csrc" / "tests" / "radix"
FUZZ_SECONDS = os.environ.get("PYKVS_RADIX_FUZZ_SECONDS", "3")
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


@pytest.mark.skipif(
    shutil.which("make") is None or shutil.which("cc") is None, reason="needs make and a C compiler"
)
def test_c_driver_and_fuzz_target_pass_under_sanitizers(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            "make",
            "-C",
            str(TESTS_DIR),
            "check",
            f"BUILD={tmp_path}",
            f"FUZZ_SECONDS={FUZZ_SECONDS}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert not any(mark in output for mark in SANITIZER_MARKS), output
    assert "test_radix: ok" in result.stdout
    assert "fuzz_radix:" in result.stdout and "rounds, ok" in result.stdout
