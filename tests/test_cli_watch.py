"""``pykvs watch`` as a user runs it against a real agent: the view dumped once without a
handler, and a handler run with the view's JSON on stdin at the start and on each change."""

from __future__ import annotations

import base64
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
    yield from running_agent(tmp_path_factory.mktemp("watch"), "watch")


def put(agent: AgentProcess, key: str, value: bytes) -> None:
    req = urllib.request.Request(f"http://{agent.http}/v1/kv/{key}", data=value, method="PUT")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.read() == b"true"


def watch(agent: AgentProcess, *args: str, **options: object) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYKVS_HTTP_ADDR": agent.http}
    return subprocess.Popen([sys.executable, "-m", "pykvs.cli", "watch", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **options)


def test_without_a_handler_the_view_is_printed_once(agent: AgentProcess) -> None:
    put(agent, "dump/a", b"one")
    put(agent, "dump/b", b"two")
    done = watch(agent, "-type", "keyprefix", "-prefix", "dump/")
    out, err = done.communicate(timeout=60)
    assert done.returncode == 0, err
    view = json.loads(out)
    assert [(p["Key"], base64.b64decode(p["Value"])) for p in view] == [
        ("dump/a", b"one"), ("dump/b", b"two")]
    assert set(view[0]) == {"Key", "CreateIndex", "ModifyIndex", "LockIndex", "Flags",
                            "Value", "Session"}
    missing = watch(agent, "-type", "key", "-key", "dump/none")
    out, _ = missing.communicate(timeout=60)
    assert missing.returncode == 0 and json.loads(out) is None


def test_a_handler_gets_each_change_on_stdin(agent: AgentProcess, tmp_path: Path) -> None:
    log = tmp_path / "seen"
    handler = f'(echo "$CONSUL_INDEX"; cat; echo) >> {log}'
    put(agent, "cfg/x", b"v1")
    proc = watch(agent, "-type", "key", "-key", "cfg/x", handler)

    def seen() -> list[tuple[int, dict[str, object]]]:
        if not log.exists():
            return []
        blocks = [b for b in log.read_text().split("\n}\n") if b.strip()]
        found = []
        for block in blocks:
            index, _, body = block.partition("\n")
            found.append((int(index), json.loads(body + "}")))
        return found

    def until(count: int) -> list[tuple[int, dict[str, object]]]:
        deadline = time.monotonic() + 30
        while len(seen()) < count:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, f"handler ran {len(seen())} times"
            time.sleep(0.05)
        return seen()

    try:
        first = until(1)
        assert base64.b64decode(str(first[0][1]["Value"])) == b"v1"
        put(agent, "cfg/other", b"not watched")
        put(agent, "cfg/x", b"v2")
        second = until(2)
        assert base64.b64decode(str(second[1][1]["Value"])) == b"v2"
        assert second[1][0] == second[1][1]["ModifyIndex"] > second[0][0]
        assert len(seen()) == 2  # the write to another key ran nothing
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.parametrize(("args", "message"), [
    ((), "Must specify watch type"),
    (("-type", "services"), "Unsupported watch type: 'services'"),
    (("-type", "key"), "Must specify a single key to watch"),
])
def test_bad_flags_are_refused_in_words(agent: AgentProcess, args: tuple[str, ...],
                                        message: str) -> None:
    done = watch(agent, *args)
    _, err = done.communicate(timeout=60)
    assert done.returncode == 1 and message in err.decode()
