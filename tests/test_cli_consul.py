"""``pykvs kv|operator raft|snapshot`` end to end against real ``pykvs agent`` processes over
HTTP: every command, its messages and exit codes (as the consul CLI's), export then import into
a fresh agent, operator commands on a 3-agent cluster. Most commands run through
``pykvs.cli.main`` in this process (the agent is still a separate process); a few run as
``python -m pykvs.cli`` to cover the real entry point, stdin and CONSUL_HTTP_ADDR."""

from __future__ import annotations

import base64
import io
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pykvs import cli


class AgentProcess:
    """One ``pykvs agent`` (a single server that bootstraps itself) on ephemeral ports."""

    def __init__(self, root: Path, name: str, *flags: str) -> None:
        self.name = name
        root.mkdir(parents=True, exist_ok=True)
        self.log = open(root / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pykvs.cli", "agent", "--node", name, "--data-dir",
             str(root / name), "--http-port", "0", "--rpc-port", "0", "--rpc-hold-timeout",
             "5", *flags],
            stdout=subprocess.PIPE, stderr=self.log)
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()),
                                  daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(30)
        if not line or not line[0]:
            self.stop()
            raise AssertionError(f"{name}: no start-up line (exit {self.proc.poll()})")
        fields = dict(part.split("=", 1) for part in line[0].decode().split())
        self.http, self.rpc = fields["http"], fields["rpc"]
        self.host, port = self.http.rsplit(":", 1)
        self.port = int(port)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://{self.http}{path}", timeout=30) as resp:
            return json.loads(resp.read())

    def wait_leader(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            leader = self.get("/v1/status/leader")
            if leader:
                return str(leader)
            assert time.monotonic() < deadline, f"{self.name}: no leader"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[AgentProcess]]:
    """Two independent one-server agents: a source and a fresh target."""
    root = tmp_path_factory.mktemp("cli")
    started: list[AgentProcess] = []
    try:
        for name in ("cli-a", "cli-b"):
            started.append(AgentProcess(root, name))
        for agent in started:
            agent.wait_leader()
        yield started
    finally:
        for agent in started:
            agent.stop()


def pykvs(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``pykvs ARGV`` in this process: (exit code, stdout, stderr)."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:  # usage errors exit from argparse
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def cli_runner(agent: AgentProcess, capsys: pytest.CaptureFixture[str],
               monkeypatch: pytest.MonkeyPatch) -> Any:
    """``run(*argv)``: the CLI in this process against ``agent``, with no address or token
    taken from the environment the tests run in."""
    monkeypatch.setenv("PYKVS_HTTP_ADDR", agent.http)
    monkeypatch.delenv("CONSUL_HTTP_ADDR", raising=False)
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    return lambda *argv: pykvs(capsys, *argv)


def running_agent(root: Path, name: str, *flags: str) -> Iterator[AgentProcess]:
    """Body of a fixture: one agent with a leader for the fixture's scope, always stopped."""
    started = AgentProcess(root, name, *flags)
    try:
        started.wait_leader()
        yield started
    finally:
        started.stop()


@pytest.fixture
def run(agents: list[AgentProcess], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> Any:
    return cli_runner(agents[0], capsys, monkeypatch)


def test_kv_put_get_delete(run: Any, agents: list[AgentProcess], tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("kv", "put", "c/a", "hello") == (0, "Success! Data written to: c/a\n", "")
    assert run("kv", "put", "-flags=42", "c/b/x", "with flags")[0] == 0
    (tmp_path / "value.bin").write_bytes(b"from a file")
    assert run("kv", "put", "c/f", f"@{tmp_path / 'value.bin'}")[0] == 0
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"from stdin")))
    assert run("kv", "put", "c/s", "-")[0] == 0
    assert run("kv", "put", "-base64", "c/64", base64.b64encode(b"decoded").decode())[0] == 0
    assert run("kv", "put", "c/empty") == (0, "Success! Data written to: c/empty\n", "")

    assert run("kv", "get", "c/a") == (0, "hello\n", "")
    assert run("kv", "get", "/c/f")[1] == "from a file\n"  # a leading / is dropped
    assert run("kv", "get", "c/s")[1] == "from stdin\n"
    assert run("kv", "get", "c/64")[1] == "decoded\n"
    # -base64 prints the value as base64 for a single key too, as consul kv get does
    assert run("kv", "get", "-base64", "c/64")[1] == base64.b64encode(b"decoded").decode() + "\n"
    code, out, _ = run("kv", "get", "-detailed", "c/b/x")
    assert code == 0
    fields = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert fields["Flags"] == "42" and fields["Key"] == "c/b/x" and fields["Session"] == "-"
    assert fields["Value"] == "with flags" and int(fields["ModifyIndex"]) > 0
    assert run("kv", "get", "-recurse", "c/b") == (0, "c/b/x:with flags\n", "")
    assert run("kv", "get", "-keys", "c/")[1].split() == [
        "c/64", "c/a", "c/b/", "c/empty", "c/f", "c/s"]
    assert run("kv", "get", "-keys", "-separator=", "c/b")[1] == "c/b/x\n"
    assert run("kv", "get", "c/none") == (1, "", "Error! No key exists at: c/none\n")
    assert run("kv", "get") == (1, "", "Error! Missing KEY argument\n")
    assert run("kv", "get", "a", "b") == (1, "", "Too many arguments (expected 1, got 2)\n")

    # check-and-set
    modify = int(fields["ModifyIndex"])
    assert run("kv", "put", "-cas", "-modify-index", str(modify + 100), "c/b/x", "no") == (
        1, "", "Error! Did not write to c/b/x: CAS failed\n")
    assert run("kv", "put", "-cas", "c/b/x", "no") == (
        1, "", "Must specify -modify-index with -cas!\n")
    assert run("kv", "put", "-cas", "-modify-index", str(modify), "c/b/x", "yes")[0] == 0
    assert run("kv", "get", "c/b/x")[1] == "yes\n"
    assert run("kv", "delete", "-cas", "-modify-index", "1", "c/b/x") == (
        1, "", "Error! Did not delete key c/b/x: CAS failed\n")
    assert run("kv", "delete", "-modify-index", "1", "c/b/x") == (
        1, "", "Cannot specify -modify-index without -cas!\n")

    # locks
    request = urllib.request.Request(f"http://{agents[0].http}/v1/session/create",
                                     data=b'{"LockDelay": "0s"}', method="PUT")
    with urllib.request.urlopen(request) as resp:
        session = json.loads(resp.read())["ID"]
    assert run("kv", "put", "-acquire", "c/lock", "x") == (
        1, "", "Error! Missing -session (required with -acquire and -release)\n")
    assert run("kv", "put", "-acquire", "-session", session, "c/lock", "mine") == (
        0, "Success! Lock acquired on: c/lock\n", "")
    assert f"Session          {session}" in run("kv", "get", "-detailed", "c/lock")[1]
    other = "0b8e9a8c-6b4f-4f1e-9a53-2f2c1d6e7a10"  # a session that does not hold the lock
    assert run("kv", "put", "-release", "-session", other, "c/lock") == (
        1, "", "Error! Did not release lock\n")
    code, _, err = run("kv", "put", "-release", "-session", "other", "c/lock")
    assert code == 1 and "failed session lookup: UUID must be 36 characters" in err
    assert run("kv", "put", "-release", "-session", session, "c/lock", "free") == (
        0, "Success! Lock released on: c/lock\n", "")

    # deletes
    assert run("kv", "delete", "c/a") == (0, "Success! Deleted key: c/a\n", "")
    assert run("kv", "get", "c/a")[0] == 1
    assert run("kv", "delete", "-recurse", "c/") == (
        0, "Success! Deleted keys with prefix: c/\n", "")
    assert run("kv", "get", "-recurse", "c/") == (0, "", "")
    assert run("kv", "delete") == (1, "", "Error! Missing KEY argument\n")


def test_export_then_import_into_a_fresh_agent(run: Any, agents: list[AgentProcess],
                                               tmp_path: Path) -> None:
    source, target = agents
    pairs = {"exp/a": (b"1", 0), "exp/b/c": (b"\x00\xff\x10binary", 7), "exp/empty": (b"", 3),
             "exp/unicode/\u00e9": ("caf\u00e9".encode(), 0)}
    for key, (value, flags) in pairs.items():
        argv = ["kv", "put", f"-flags={flags}", "-base64", key, base64.b64encode(value).decode()]
        assert run(*argv)[0] == 0
    code, exported, _ = run("kv", "export", "exp/")
    assert code == 0 and exported.startswith("[\n\t{\n\t\t\"key\": \"exp/a\",")
    (tmp_path / "export.json").write_text(exported)
    code, out, err = run("kv", "import", "-http-addr", target.http,
                         f"@{tmp_path / 'export.json'}")
    assert (code, err) == (0, "") and out.splitlines() == [f"Imported: {k}" for k in pairs]
    assert run("kv", "export", "-http-addr", target.http, "exp/")[1] == exported

    def listing(agent: AgentProcess) -> list[tuple[str, bytes, int]]:
        entries = agent.get("/v1/kv/exp/?recurse")
        return [(e["Key"], base64.b64decode(e["Value"] or ""), e["Flags"]) for e in entries]

    assert listing(target) == listing(source)
    assert listing(source) == [(k, v, f) for k, (v, f) in pairs.items()]
    assert run("kv", "import", "{not json")[0] == 1
    assert run("kv", "import") == (1, "", "Error! Missing DATA argument\n")


def test_snapshot_save_inspect_restore(run: Any, tmp_path: Path) -> None:
    assert run("kv", "put", "snap/a", "before")[0] == 0
    path = tmp_path / "backup.snap"
    code, out, err = run("snapshot", "save", str(path))
    assert code == 0 and err == "" and out.startswith("Saved and verified snapshot to index ")
    index = int(out.split()[-1])
    code, out, _ = run("snapshot", "inspect", str(path))
    fields = dict(line.split() for line in out.split("\n\n")[0].splitlines())
    assert code == 0 and int(fields["Index"]) == index and fields["Version"] == "1"
    assert int(fields["Size"]) > 0 and fields["ID"].split("-")[1] == str(index)
    assert run("kv", "put", "snap/a", "after")[0] == 0
    assert run("kv", "put", "snap/b", "new")[0] == 0
    assert run("snapshot", "restore", str(path)) == (0, "Restored snapshot\n", "")
    assert run("kv", "get", "-recurse", "snap/")[1] == "snap/a:before\n"
    (tmp_path / "bad.snap").write_bytes(b"garbage")
    code, _, err = run("snapshot", "restore", str(tmp_path / "bad.snap"))
    assert code == 1 and err.startswith("Error restoring snapshot: Unexpected response code: 400")
    code, _, err = run("snapshot", "inspect", str(tmp_path / "bad.snap"))
    assert code == 1 and err.startswith("Error verifying snapshot")
    assert run("snapshot", "restore", str(tmp_path / "missing.snap"))[0] == 1


def test_usage_and_connection_errors(run: Any) -> None:
    code, _, err = run("kv", "get", "-bogus", "x")
    assert code == 1 and "flag provided but not defined: -bogus" in err
    code, _, err = run("kv", "put", "-flags", "abc", "x")
    assert code == 1 and "-flags" in err
    code, _, err = run("kv", "get", "-http-addr", "127.0.0.1:1", "x")
    assert code == 1 and err.startswith('Error querying Consul agent: GET "http://127.0.0.1:1/')
    # flags stop at the first argument: a value may start with "-"
    assert run("kv", "put", "dash", "-value-") == (0, "Success! Data written to: dash\n", "")
    assert run("kv", "get", "dash")[1] == "-value-\n"


def test_real_entry_point_with_consul_http_addr_and_stdin(agents: list[AgentProcess]) -> None:
    env = {"CONSUL_HTTP_ADDR": f"http://{agents[0].http}", "PATH": "/usr/bin:/bin"}
    put = subprocess.run([sys.executable, "-m", "pykvs.cli", "kv", "put", "proc/k", "-"],
                         input=b"piped", capture_output=True, env=env, timeout=60)
    assert (put.returncode, put.stdout) == (0, b"Success! Data written to: proc/k\n")
    get = subprocess.run([sys.executable, "-m", "pykvs.cli", "kv", "get", "proc/k"],
                         capture_output=True, env=env, timeout=60)
    assert (get.returncode, get.stdout) == (0, b"piped\n")
    missing = subprocess.run([sys.executable, "-m", "pykvs.cli", "kv", "get", "proc/none"],
                             capture_output=True, env=env, timeout=60)
    assert (missing.returncode, missing.stderr) == (1, b"Error! No key exists at: proc/none\n")


def test_operator_raft_on_three_agents(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    first = AgentProcess(tmp_path, "op1")
    started = [first]
    try:
        first.wait_leader()
        for name in ("op2", "op3"):
            started.append(AgentProcess(tmp_path, name, "--join", first.rpc))
        deadline = time.monotonic() + 30
        while len(first.get("/v1/status/peers")) < 3:
            assert time.monotonic() < deadline, "3 voters"
            time.sleep(0.05)
        addr = ["-http-addr", started[2].http]  # ask a follower
        code, out, _ = pykvs(capsys, "operator", "raft", "list-peers", *addr)
        lines = out.splitlines()
        assert code == 0 and lines[0].split() == ["Node", "ID", "Address", "State", "Voter",
                                                  "RaftProtocol"]
        rows = {line.split()[0]: line.split() for line in lines[1:]}
        assert sorted(rows) == ["op1", "op2", "op3"]
        assert rows["op1"][3] == "leader" and rows["op2"][2] == started[1].rpc

        code, out, err = pykvs(capsys, "operator", "raft", "transfer-leader", "-id", "op2",
                               *addr)
        assert (code, out, err) == (0, "Success! Leadership transferred\n", "")
        deadline = time.monotonic() + 30
        while first.get("/v1/status/leader") != started[1].rpc:
            assert time.monotonic() < deadline, "leadership moved to op2"
            time.sleep(0.05)

        assert pykvs(capsys, "operator", "raft", "remove-peer", *addr) == (
            1, "", "Error removing peer: an address or id is required for the peer to "
                   "remove\n")
        code, out, err = pykvs(capsys, "operator", "raft", "remove-peer", "-address",
                               "127.0.0.1:1", *addr)
        assert code == 1 and err.startswith("Error removing peer: Unexpected response code: 500")
        code, out, _ = pykvs(capsys, "operator", "raft", "remove-peer", "-address",
                             first.rpc, *addr)
        assert (code, out) == (0, f'Removed peer with address "{first.rpc}"\n')
        code, out, _ = pykvs(capsys, "operator", "raft", "list-peers", *addr)
        assert sorted(line.split()[0] for line in out.splitlines()[1:]) == ["op2", "op3"]
    finally:
        for agent in started:
            agent.stop()


def test_progress_bar_only_on_a_terminal() -> None:
    from pykvs.cli.http_client import progress_bar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    report = progress_bar("Saving snapshot", screen)
    for done in (0, 1 << 20, 2 << 20):
        report(done, 2 << 20)
    frames = screen.getvalue().split("\r")[1:]
    assert frames[0].startswith("Saving snapshot [" + "." * 30 + "] 0.0 MiB")
    assert frames[-1] == "Saving snapshot [" + "#" * 30 + "] 2.0 MiB\n"
    report_unknown = progress_bar("Saving snapshot", screen)
    report_unknown(3 << 20, None)
    assert screen.getvalue().endswith("\rSaving snapshot 3.0 MiB")
    piped = io.StringIO()
    progress_bar("Saving snapshot", piped)(1, 2)
    assert piped.getvalue() == ""
