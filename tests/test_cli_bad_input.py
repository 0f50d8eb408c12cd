"""Bad input to the ``pykvs`` command: bad flags, missing arguments, unreachable or malformed
``-http-addr``, garbage snapshots, ``kv import`` of bad JSON, corrupt data directories for
``pykvs agent``.  Each gets a clear message on stderr and a non-zero exit (as Consul's CLI),
never a traceback, and changes nothing on the server."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_cli_consul import AgentProcess, cli_runner, running_agent

import pykvs as pykvs_package


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    yield from running_agent(tmp_path_factory.mktemp("cli-bad"), "bad-input")


@pytest.fixture
def run(agent: AgentProcess, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> Any:
    return cli_runner(agent, capsys, monkeypatch)


def _everything(agent: AgentProcess) -> Any:
    """Every key on the agent (one seeded, so "unchanged" compares something)."""
    seed = urllib.request.Request(f"http://{agent.http}/v1/kv/seed", data=b"v", method="PUT")
    with urllib.request.urlopen(seed, timeout=30) as resp:
        assert resp.read() == b"true"
    return agent.get("/v1/kv/?recurse")


def _refused(result: tuple[int, str, str], message: str) -> None:
    code, out, err = result
    assert code != 0, (code, out, err)
    assert message in err, err
    assert "Traceback" not in err


def test_kv_flags_and_arguments(run: Any, agent: AgentProcess) -> None:
    before = _everything(agent)
    _refused(run("kv", "put"), "Missing KEY argument")
    _refused(run("kv", "put", "-bogus", "k", "v"), "flag provided but not defined: -bogus")
    _refused(run("kv", "put", "-cas", "k", "v"), "Must specify -modify-index with -cas")
    _refused(run("kv", "put", "-cas", "-modify-index=abc", "k", "v"), "-modify-index")
    _refused(run("kv", "put", "-flags=-1", "k", "v"), "-flags")
    _refused(run("kv", "put", "-flags=18446744073709551616", "k", "v"), "-flags")
    _refused(run("kv", "put", "-base64", "k", "!!!"), "base 64")
    _refused(run("kv", "get"), "Missing KEY argument")
    _refused(run("kv", "delete"), "Missing KEY argument")
    _refused(run("kv", "export", "a", "b"), "Too many arguments")
    _refused(run("operator", "raft", "list-peers", "-bogus"), "-bogus")
    _refused(run("operator", "raft", "remove-peer"), "an address or id is required")
    _refused(run("operator", "raft", "remove-peer", "-address=1.2.3.4:5"), "not found")
    _refused(run("acl", "policy", "create"), "-name")
    assert agent.get("/v1/kv/?recurse") == before


@pytest.mark.parametrize("address", ["127.0.0.1:1", "http://[::1", "http://127.0.0.1:port",
                                     "ftp://127.0.0.1:1", "http://"])
def test_unreachable_or_malformed_http_addr(run: Any, address: str) -> None:
    for argv in (["kv", "get"], ["kv", "put"], ["snapshot", "save"],
                 ["operator", "raft", "list-peers"], ["acl", "bootstrap"]):
        extra = {"kv": ["k", "v"][: 1 + (argv[1] == "put")], "snapshot": ["/nonexistent/s"]}
        code, _, err = run(*argv, "-http-addr", address, *extra.get(argv[0], []))
        assert code == 1 and err and "Traceback" not in err, (argv, address, err)


BAD_IMPORTS: list[tuple[bytes, str]] = [
    (b"not json", "Cannot unmarshal data"),
    (b"", "Cannot unmarshal data"),
    (b"\xff\xfe", "Cannot unmarshal data"),
    (b"null", "Cannot unmarshal data"),
    (b'{"key": "a"}', "Cannot unmarshal data"),
    (b"[1]", "Cannot unmarshal data"),
    (b'[{"key": 5, "value": "YQ=="}]', "key must be"),
    (b'[{"key": null, "value": "YQ=="}]', "key must be"),
    (b'[{"value": "YQ=="}]', "key must be"),
    (b'[{"key": "x", "value": 5}]', "value must be"),
    (b'[{"key": "x", "value": ["YQ=="]}]', "value must be"),
    (b'[{"key": "x", "value": "YQ==", "flags": "z"}]', "flags must be"),
    (b'[{"key": "x", "value": "YQ==", "flags": -1}]', "flags must be"),
    (b'[{"key": "x", "value": "YQ==", "flags": 1.5}]', "flags must be"),
    (b'[{"key": "x", "value": "YQ==", "flags": 18446744073709551616}]', "flags must be"),
    # a bad entry after good ones: nothing is written, not the good prefix
    (b'[{"key": "good", "value": "YQ=="}, {"key": "bad", "value": "%%"}]', "base 64"),
    (b'[{"key": "good", "value": "YQ=="}, {"key": "bad", "flags": true}]', "flags must be"),
]


@pytest.mark.parametrize(("data", "message"), BAD_IMPORTS, ids=[d[:40].decode("latin-1")
                                                                for d, _ in BAD_IMPORTS])
def test_kv_import_of_bad_data(run: Any, agent: AgentProcess, tmp_path: Path, data: bytes,
                               message: str) -> None:
    before = _everything(agent)
    (tmp_path / "import.json").write_bytes(data)
    _refused(run("kv", "import", f"@{tmp_path / 'import.json'}"), message)
    assert agent.get("/v1/kv/?recurse") == before


def test_kv_import_still_imports(run: Any, agent: AgentProcess) -> None:
    data = json.dumps([{"key": "imp/a", "flags": 3, "value": base64.b64encode(b"1").decode()},
                       {"key": "imp/b", "value": None}])
    assert run("kv", "import", data) == (0, "Imported: imp/a\nImported: imp/b\n", "")
    assert [(e["Key"], e["Flags"]) for e in agent.get("/v1/kv/imp/?recurse")] == [
        ("imp/a", 3), ("imp/b", 0)]


def test_garbage_snapshots(run: Any, agent: AgentProcess, tmp_path: Path) -> None:
    good = tmp_path / "good.snap"
    assert run("snapshot", "save", str(good))[0] == 0
    before = _everything(agent)
    body = good.read_bytes()
    for name, data in [("garbage", b"garbage" * 100), ("empty", b""),
                       ("truncated", body[: len(body) // 2]), ("flipped", body[:40] + bytes(
                           b ^ 0xFF for b in body[40:80]) + body[80:])]:
        snap = tmp_path / name
        snap.write_bytes(data)
        _refused(run("snapshot", "restore", str(snap)), "Error restoring snapshot")
        _refused(run("snapshot", "inspect", str(snap)), "Error")
    _refused(run("snapshot", "restore", str(tmp_path / "missing")), "Error opening snapshot")
    _refused(run("snapshot", "restore", str(tmp_path)), "Error opening snapshot")
    _refused(run("snapshot", "save"), "Missing FILE argument")
    assert agent.get("/v1/kv/?recurse") == before


# ------------------------------------------------------------------ pykvs agent refusals
def _agent(data_dir: Path, node: str = "n1", timeout: float = 30) -> tuple[int, str]:
    """``pykvs agent`` that is expected to refuse: (exit code, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pykvs.cli", "agent", "--node", node, "--data-dir",
         str(data_dir), "--http-port", "0", "--rpc-port", "0"],
        capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stderr


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("agent-saved") / "data"
    with pykvs_package.open(path, node_name="n1", wait_leader=10) as store:
        store.put("k", "v")
    return path


@pytest.mark.parametrize(("case", "file", "data"), [
    ("garbage server.json", "server.json", b"{garbage"),
    ("server.json not an object", "server.json", b"[]"),
    ("newer server.json", "server.json", b'{"format": 2, "node": "n1"}'),
    ("empty data.mdb", "raft/data.mdb", b""),
    ("data.mdb cut short", "raft/data.mdb", None),
])
def test_agent_refuses_a_corrupt_data_dir(saved_dir: Path, tmp_path: Path, case: str,
                                          file: str, data: bytes | None) -> None:
    copy = tmp_path / "data"
    shutil.copytree(saved_dir, copy)
    target = copy / file
    target.write_bytes(target.read_bytes()[:12288] if data is None else data)
    code, err = _agent(copy)
    assert code == 1, (case, code, err)
    assert "agent failed to start" in err and str(target) in err, err
    assert "Traceback" not in err


def test_agent_refuses_a_directory_in_use_or_of_another_node(saved_dir: Path,
                                                             tmp_path: Path) -> None:
    copy = tmp_path / "data"
    shutil.copytree(saved_dir, copy)
    code, err = _agent(copy, node="n2")
    assert code == 1 and "belongs to node 'n1'" in err and "Traceback" not in err, err
    with pykvs_package.open(copy, node_name="n1", wait_leader=10) as store:
        code, err = _agent(copy)
        assert code == 1 and "already open" in err and "Traceback" not in err, err
        assert store.get("k")[1].value == b"v"


def test_arguments_that_are_not_utf8(run: Any, agent: AgentProcess, tmp_path: Path) -> None:
    """What Python makes of bytes the OS could not decode (surrogate escapes)."""
    before = _everything(agent)
    for argv in (["kv", "put", "\udcffkey", "v"], ["kv", "get", "\udcffkey"],
                 ["kv", "delete", "\udcff"], ["kv", "export", "\udcff"],
                 ["kv", "get", "-keys", "-separator", "\udcff", "k"],
                 ["kv", "put", "-acquire", "-session", "\udcff", "k", "v"],
                 ["acl", "policy", "read", "-name", "\udcff"],
                 ["acl", "token", "read", "-id", "\udcff"]):
        _refused(run(*argv), "not valid UTF-8")
    _refused(run("kv", "put", "-token", "\udcff", "k", "v"), "invalid ACL token")
    _refused(run("kv", "import", '[{"key": "\udcff"}]'), "Cannot unmarshal data")
    assert agent.get("/v1/kv/?recurse") == before
    # a value is bytes: the ones the user typed are stored
    assert run("kv", "put", "raw", "\udcff")[0] == 0
    assert agent.get("/v1/kv/raw")[0]["Value"] == base64.b64encode(b"\xff").decode()


def test_files_that_cannot_be_read_or_written(run: Any, tmp_path: Path) -> None:
    binary = tmp_path / "rules.bin"
    binary.write_bytes(b"\xff\xfe\x00")
    _refused(run("acl", "policy", "create", "-name", "p", "-rules", f"@{binary}"),
             "Error loading rules")
    _refused(run("acl", "policy", "create", "-name", "p", "-rules", f"@{tmp_path}"),
             "Error loading rules")
    _refused(run("snapshot", "save", str(tmp_path / "missing" / "s.snap")),
             "Error creating unverified snapshot file")
    assert not (tmp_path / "missing").exists()


def test_agent_refuses_bad_flags(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for flags, message in [
            (["--data-dir", str(a_file)], "is not a directory"),
            (["--rpc-hold-timeout", "nan"], "rpc_hold_timeout"),
            (["--bind", "no-such-host.invalid"], "--bind 'no-such-host.invalid'"),
            (["--http-port", port], "address already in use"),
            (["--rpc-port", port, "--http-port", "0"], "address already in use"),
            (["--http-port", "http"], "not a port number"),
            (["--join-wan", "dc2"], "--join-wan wants DC=HOST:PORT"),
        ]:
            proc = subprocess.run(
                [sys.executable, "-m", "pykvs.cli", "agent", "--data-dir", str(tmp_path / "d"),
                 "--http-port", "0", "--rpc-port", "0", *flags],
                capture_output=True, text=True, timeout=30)
            assert proc.returncode in (1, 2), (flags, proc.stderr)
            assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert a_file.read_text() == "x"
