"""``pykvs lock`` as two shells would use it against a real agent: one holder at a time (or N
with ``-n``), the lock given back when the child exits, the child stopped when the lock is
lost, and a holder killed with SIGKILL releasing the lock once its session ends."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli_consul import AgentProcess, running_agent


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    yield from running_agent(tmp_path_factory.mktemp("lock"), "lock")


def lock(agent: AgentProcess, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYKVS_HTTP_ADDR": agent.http}
    return subprocess.Popen([sys.executable, "-m", "pykvs.cli", "lock", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def worker(log: Path, name: str, seconds: float = 0.4) -> str:
    """A child that logs its start and end around a sleep (appends are atomic lines)."""
    return f"echo start {name} >> {log}; sleep {seconds}; echo end {name} >> {log}"


def most_at_once(log: Path) -> int:
    running = most = 0
    for line in log.read_text().splitlines():
        running += 1 if line.startswith("start") else -1
        most = max(most, running)
    return most


def keys(agent: AgentProcess, prefix: str) -> list[str]:
    try:
        return list(agent.get(f"/v1/kv/{prefix}?keys"))
    except urllib.error.HTTPError as exc:
        assert exc.code == 404
        return []


def wait_for(check: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_two_shells_take_turns(agent: AgentProcess, tmp_path: Path) -> None:
    log = tmp_path / "log"
    shells = [lock(agent, "turns", worker(log, name)) for name in "ab"]
    for shell in shells:
        _, err = shell.communicate(timeout=60)
        assert shell.returncode == 0, err
    assert most_at_once(log) == 1
    assert sorted(log.read_text().split()) == sorted(["start", "a", "end", "a", "start", "b",
                                                      "end", "b"])
    assert keys(agent, "turns/") == []  # the lock key is cleaned up when unused


def test_a_semaphore_lets_n_run_at_once(agent: AgentProcess, tmp_path: Path) -> None:
    log = tmp_path / "log"
    shells = [lock(agent, "-n", "2", "pool", worker(log, name, 0.8)) for name in "abc"]
    for shell in shells:
        _, err = shell.communicate(timeout=60)
        assert shell.returncode == 0, err
    assert len(log.read_text().splitlines()) == 6
    assert 1 <= most_at_once(log) <= 2
    assert keys(agent, "pool/") == []
    holder = lock(agent, "-n", "2", "pool2", "sleep 30")
    try:
        wait_for(lambda: "pool2/.lock" in keys(agent, "pool2/"), "the first holder")
        other = lock(agent, "-n", "3", "pool2", "true")
        _, err = other.communicate(timeout=60)
        assert other.returncode == 1 and "Semaphore limit conflict (lock: 2, local: 3)" in err
    finally:
        holder.send_signal(signal.SIGTERM)
        holder.wait(timeout=30)


def test_a_lost_lock_stops_the_child(agent: AgentProcess, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    holder = lock(agent, "lost", f"echo $$ > {pid_file}; exec sleep 600")
    try:
        wait_for(pid_file.exists, "the child")
        sessions = agent.get("/v1/session/list")
        assert len([s for s in sessions if "lost" in s["Name"]]) == 1
        session = next(s["ID"] for s in sessions if "lost" in s["Name"])
        req = urllib.request.Request(f"http://{agent.http}/v1/session/destroy/{session}",
                                     method="PUT")
        urllib.request.urlopen(req, timeout=30).close()
        _, err = holder.communicate(timeout=60)
        assert "Lock lost, killing child" in err
        child = int(pid_file.read_text())
        wait_for(lambda: not _alive(child), "the child to stop")
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie of a process we did not start is reaped by init; a live one answers.
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split()[2] != "Z"


def test_a_holder_killed_with_sigkill_frees_the_lock_when_its_session_ends(
        agent: AgentProcess, tmp_path: Path) -> None:
    pid_file, log = tmp_path / "pid", tmp_path / "log"
    holder = lock(agent, "-session-ttl", "10s", "-lock-delay", "0s", "crash",
                  f"echo $$ > {pid_file}; exec sleep 600")
    waiting = None
    try:
        wait_for(pid_file.exists, "the holder's child")
        waiting = lock(agent, "crash", f"echo second >> {log}")
        holder.kill()  # SIGKILL: no release, no session destroy
        holder.wait()
        _, err = waiting.communicate(timeout=90)  # TTL 10 s x 2 on the server, then lock
        assert waiting.returncode == 0, err
        assert log.read_text() == "second\n"
    finally:
        for proc in (holder, waiting):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        if pid_file.exists():  # the orphaned child of the killed holder
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_exit_codes_and_refusals(agent: AgentProcess) -> None:
    failing = lock(agent, "codes", "exit 3")
    failing.communicate(timeout=60)
    assert failing.returncode == 0  # as consul lock: the child's failure is not ours
    reported = lock(agent, "-child-exit-code", "codes", "exit 3")
    reported.communicate(timeout=60)
    assert reported.returncode == 2
    for args, message in ((("codes",), "Key prefix and child command must be specified"),
                          (("-n", "0", "codes", "true"), "must be at least 1")):
        refused = lock(agent, *args)
        _, err = refused.communicate(timeout=60)
        assert refused.returncode == 1 and message in err, err
    assert json.dumps(keys(agent, "codes/")) == "[]"
