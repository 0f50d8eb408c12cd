"""Several Python processes embedding one replicated store (README "An embedded cluster"):
examples/embedded_cluster.py run as written, three founders on 127.0.0.1, reads and writes on
any of them, one killed with SIGKILL while the others go on, and a fourth that joins and
catches up from the leader's snapshot."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ports import free_ports

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "embedded_cluster.py"


class Member:
    """One ``examples/embedded_cluster.py`` process, driven over its stdin and stdout."""

    def __init__(self, root: Path, name: str, port: int, *args: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLE), "--name", name, "--data-dir", str(root / name),
             "--port", str(port), "--snapshot-threshold", "32", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=(root / f"{name}.err").open("w"),
            text=True, bufsize=1)

    def line(self, timeout: float = 60) -> Any:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"{self.name}: no answer in {timeout} s"
        text = self.proc.stdout.readline()
        assert text, f"{self.name} exited ({self.proc.poll()})"
        return json.loads(text)

    def ask(self, command: str) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.line()

    def stop(self) -> None:
        """``quit`` (the store closes cleanly), or SIGKILL if it does not end in 30 s."""
        if self.proc.poll() is not None:
            return
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def until(check: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_three_processes_embed_one_store_and_a_fourth_catches_up(tmp_path: Path) -> None:
    ports = free_ports(4)
    addresses = [f"127.0.0.1:{p}" for p in ports]
    members = []
    try:
        for i in range(3):
            joins = [arg for j in range(3) if j != i for arg in ("--join", addresses[j])]
            members.append(Member(tmp_path, f"n{i + 1}", ports[i], "--expect", "3", *joins))
        for member in members:
            assert member.line()["ready"] == member.name
        # Any member writes and reads; a follower forwards to the leader.
        for i, member in enumerate(members):
            assert member.ask(f"put from/{member.name} {i}") is True
        for member in members:
            assert member.ask("keys from/") == ["from/n1", "from/n2", "from/n3"]
        for i in range(100):  # past the snapshot threshold (32 entries)
            assert members[i % 3].ask(f"put bulk/{i:03d} v{i}") is True
        # One dies (the leader, the hardest case); the other two go on.
        leader = next(m for m in members if m.ask("stats")["role"] == "leader")
        leader.proc.kill()
        leader.proc.wait()
        alive = [m for m in members if m is not leader]
        until(lambda: alive[0].ask("put after/kill yes") is True, "a new leader")
        assert alive[1].ask("get after/kill") == "yes"
        # A fourth joins through a survivor and catches up from a snapshot.
        survivors = [addresses[members.index(m)] for m in alive]
        fourth = Member(tmp_path, "n4", ports[3], "--join", survivors[0], "--join", survivors[1])
        members.append(fourth)
        assert fourth.line()["ready"] == "n4"
        until(lambda: fourth.ask("get after/kill stale") == "yes", "n4 to catch up")
        assert fourth.ask("get bulk/099 stale") == "v99"
        assert fourth.ask("stats")["snapshots_installed"] >= 1
        assert fourth.ask("put from/n4 4") is True
        assert alive[0].ask("get from/n4") == "4"
    finally:
        for member in members:
            member.stop()
