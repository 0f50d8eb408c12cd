"""Builds the transcoder's C test driver and fuzz target (ASan + UBSan) and runs them.

csrc/tests/transcode/: test_transcode.c checks exact outputs and every error status; the fuzz
target compares random listings against a naive C reference and throws garbage at every entry
point for a few seconds.  Any failed check or sanitizer report fails this test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent.parent / "csrc" / "tests" / "transcode"
FUZZ_SECONDS = os.environ.get("PYKVS_TRANSCODE_FUZZ_SECONDS", "3")
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


@pytest.mark.skipif(
    shutil.which("make") is None or shutil.which("gcc") is None, reason="needs make and gcc"
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
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert not any(mark in output for mark in SANITIZER_MARKS), output
    assert "test_transcode: all checks passed" in result.stdout
    assert "fuzz_transcode:" in result.stdout and "no failure" in result.stdout
