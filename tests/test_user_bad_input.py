"""Bad input from the user's side of the Python API and in data directories: every case gets a
clear TypeError/ValueError (or a documented pykvs error) naming the bad argument or file, the
store is unchanged and stays usable.  (HTTP and RPC bad input: test_front_door_fuzz.py and
test_server_bad_input.py; the CLI: test_cli_bad_input.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lmdb
import msgpack
import pytest

import pykvs
from pykvs.raft.storage import StorageLockedError

KV = Any


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KV]:
    with pykvs.open(tmp_path_factory.mktemp("api") / "data", wait_leader=10) as store:
        store.put("keep", "me", flags=7)
        yield store


@pytest.fixture(scope="module", params=["embedded", "remote"])
def kv(request: pytest.FixtureRequest, embedded: KV) -> Iterator[KV]:
    """The same store in this process, and through pykvs.connect over msgpack-RPC."""
    if request.param == "embedded":
        yield embedded
        return
    with pykvs.connect(embedded.server.address, timeout=30) as remote:
        yield remote


def _state(store: KV) -> tuple[int, list[Any], list[Any]]:
    index, entries = store.list("")
    return index, entries, store.session_list()[1]


BAD_CALLS: list[tuple[str, Callable[[KV], object], Any, str]] = [
    ("int key", lambda s: s.put(1, "v"), TypeError, "key"),
    ("int value", lambda s: s.put("k", 5), TypeError, "value"),
    ("negative flags", lambda s: s.put("k", "v", flags=-1), ValueError, "flags"),
    ("huge flags", lambda s: s.put("k", "v", flags=1 << 64), ValueError, "flags"),
    ("str flags", lambda s: s.put("k", "v", flags="1"), ValueError, "flags"),
    ("negative cas", lambda s: s.put("k", "v", cas=-1), ValueError, "cas"),
    ("huge cas", lambda s: s.put("k", "v", cas=1 << 70), ValueError, "cas"),
    ("float cas", lambda s: s.put("k", "v", cas=1.5), ValueError, "cas"),
    ("bool cas", lambda s: s.put("k", "v", cas=True), ValueError, "cas"),
    ("cas and acquire", lambda s: s.put("k", "v", cas=0, acquire="x"), ValueError, "cas"),
    ("unknown session", lambda s: s.put("k", "v", acquire="nope"), pykvs.RPCError, "session"),
    ("delete negative cas", lambda s: s.delete("keep", cas=-1), ValueError, "cas"),
    ("delete str cas", lambda s: s.delete("keep", cas="4"), ValueError, "cas"),
    ("delete int key", lambda s: s.delete(5), TypeError, "key"),
    ("get negative index", lambda s: s.get("keep", index=-1), ValueError, "index"),
    ("get huge index", lambda s: s.get("keep", index=1 << 70), ValueError, "index"),
    ("get infinite wait", lambda s: s.get("keep", index=1, wait=float("inf")), ValueError,
     "wait"),
    ("get huge wait", lambda s: s.get("keep", index=1, wait=1e308 * 10), ValueError, "wait"),
    ("get nan wait", lambda s: s.get("keep", index=1, wait=float("nan")), ValueError, "wait"),
    ("get negative wait", lambda s: s.get("keep", index=1, wait=-1), ValueError, "wait"),
    ("bad consistency", lambda s: s.get("keep", consistency="strong"), ValueError,
     "consistency"),
    ("int dc", lambda s: s.get("keep", dc=5), pykvs.RPCError, "Datacenter"),
    ("list int prefix", lambda s: s.list(5), TypeError, "prefix"),
    ("keys int separator", lambda s: s.keys("", separator=5), TypeError, "value"),
    ("txn of an int", lambda s: s.txn(5), TypeError, "ops"),
    ("txn of a str", lambda s: s.txn("set"), TypeError, "ops"),
    ("txn of a mapping", lambda s: s.txn({"Verb": "set", "Key": "k"}), TypeError, "ops"),
    ("txn op not a mapping", lambda s: s.txn([5]), TypeError, "operation 0"),
    ("txn KV not a mapping", lambda s: s.txn([{"KV": 5}]), TypeError, "operation 0"),
    ("txn unknown verb", lambda s: s.txn([{"Verb": "zap", "Key": "k"}]), pykvs.RPCError,
     "verb"),
    ("txn int key", lambda s: s.txn([{"Verb": "set", "Key": 5, "Value": "v"}]),
     pykvs.RPCError, "Key"),
    ("txn negative index", lambda s: s.txn([{"Verb": "cas", "Key": "k", "Index": -1}]),
     pykvs.RPCError, "Index"),
    ("txn huge flags", lambda s: s.txn([{"Verb": "set", "Key": "k", "Flags": 1 << 64}]),
     (pykvs.RPCError, ValueError), "Flags|64 bits"),
    ("txn_read huge index", lambda s: s.txn_read([{"Verb": "check-index", "Key": "keep",
                                                    "Index": 1 << 70}]),
     (pykvs.RPCError, ValueError), "Index|64 bits"),
    ("call huge index", lambda s: s.call("KVS.Get", {"Key": b"keep", "MinQueryIndex": 1 << 64}),
     (pykvs.RPCError, ValueError), "MinQueryIndex|64 bits"),
    ("txn misspelt field", lambda s: s.txn([{"Verb": "set", "Key": "keep", "Valu": "v"}]),
     ValueError, "Valu"),
    ("txn_read of an int", lambda s: s.txn_read(5), TypeError, "ops"),
    ("session negative ttl", lambda s: s.session_create(ttl=-1), ValueError, "ttl"),
    ("session infinite ttl", lambda s: s.session_create(ttl=float("inf")), ValueError, "ttl"),
    ("session ttl text", lambda s: s.session_create(ttl="zz"), pykvs.RPCError, "TTL"),
    ("session behavior", lambda s: s.session_create(behavior="zz"), pykvs.RPCError,
     "Behavior"),
    ("session negative lock_delay", lambda s: s.session_create(lock_delay=-5), ValueError,
     "lock_delay"),
    ("session infinite lock_delay", lambda s: s.session_create(lock_delay=1e308 * 10),
     ValueError, "lock_delay"),
    ("session int name", lambda s: s.session_create(name=5), pykvs.RPCError, "Name"),
    ("session_info int id", lambda s: s.session_info(5), pykvs.RPCError, "SessionID"),
    ("session_destroy int id", lambda s: s.session_destroy(5), pykvs.RPCError, "ID"),
    ("remove peer int id", lambda s: s.raft_remove_peer(id=5), pykvs.RPCError, "ID"),
    ("call unknown method", lambda s: s.call("Nope.X", {}), pykvs.RPCError, "Nope.X"),
    ("call args not a mapping", lambda s: s.call("KVS.Get", 5), TypeError, "args"),
]


@pytest.mark.parametrize(("case", "call", "error", "names"), BAD_CALLS,
                         ids=[c[0] for c in BAD_CALLS])
def test_bad_argument_is_refused_and_changes_nothing(
        kv: KV, case: str, call: Callable[[KV], object], error: Any,
        names: str) -> None:
    before = _state(kv)
    with pytest.raises(error, match=names):
        call(kv)
    assert _state(kv) == before, case
    assert kv.put("usable", case) and kv.get("usable")[1].value == case.encode()
    kv.delete("usable")


def test_durations_go_as_go_text(kv: KV) -> None:
    # "1e+06s" used to go, and came back as Go's "unknown unit" instead of the range
    with pytest.raises(pykvs.RPCError, match="Invalid Session TTL"):
        kv.session_create(ttl=1e6)
    session = kv.session_create(ttl=12.5, lock_delay=0)
    assert kv.session_info(session)[1].ttl == "12.5s"
    kv.session_destroy(session)


def test_open_refuses_bad_paths_and_options(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="path"):
        pykvs.open(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="path"):
        pykvs.open(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bogus"):
        pykvs.open(tmp_path / "a", bogus=1)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        pykvs.open(a_file)
    assert a_file.read_text() == "x"
    with pytest.raises(TypeError, match="port"):
        pykvs.open(tmp_path / "a", port="8300")
    with pytest.raises(TypeError, match="node_name"):
        pykvs.open(tmp_path / "a", node_name=5)
    with pytest.raises(ValueError, match="max_query_time"):
        pykvs.open(tmp_path / "a", max_query_time=float("nan"))
    with pytest.raises(ValueError, match="wait_leader"):
        pykvs.open(tmp_path / "a", wait_leader="soon")
    with pytest.raises(TypeError, match="token"):
        pykvs.open(tmp_path / "a", token=5)
    with pytest.raises(TypeError, match="address"):
        pykvs.connect(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="host:port"):
        pykvs.connect("nope")
    with pytest.raises(ValueError, match="port"):
        pykvs.connect("127.0.0.1:99999")
    with pytest.raises(TypeError, match="token"):
        pykvs.connect("127.0.0.1:8300", token=b"secret")  # type: ignore[arg-type]
    assert not (tmp_path / "a").exists()


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    store = pykvs.open(tmp_path / "data", wait_leader=10)
    store.put("k", "v")
    store.close()
    store.close()
    with pytest.raises(RuntimeError, match="pykvs store is closed"):
        store.get("k")
    with pykvs.open(tmp_path / "data", wait_leader=10) as again:
        assert again.get("k")[1].value == b"v"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_open_without_permission(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0)
    try:
        with pytest.raises(PermissionError):
            pykvs.open(locked / "data")
    finally:
        locked.chmod(0o700)


# ------------------------------------------------------------------- data directories
@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-server data directory with 200 keys, closed."""
    path = tmp_path_factory.mktemp("saved") / "data"
    with pykvs.open(path, node_name="n1", wait_leader=10) as store:
        store.txn([{"Verb": "set", "Key": f"k{i}", "Value": "v" * 500} for i in range(100)])
        store.txn([{"Verb": "set", "Key": f"j{i}", "Value": "w" * 500} for i in range(100)])
    return path


def _copy(saved: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(saved, copy)
    return copy


def test_other_nodes_directory_is_refused_with_any_port(saved_dir: Path,
                                                        tmp_path: Path) -> None:
    data = _copy(saved_dir, tmp_path)
    meta = (data / "server.json").read_bytes()
    with pytest.raises(ValueError, match="belongs to node 'n1'"):
        pykvs.open(data, node_name="n2", port=0)
    # a fixed port used to skip the check and then overwrite server.json
    with pytest.raises(ValueError, match="belongs to node 'n1'"):
        pykvs.open(data, node_name="n2", port=1)
    with pytest.raises(ValueError, match="datacenter"):
        pykvs.open(data, node_name="n1", datacenter="dc9")
    assert (data / "server.json").read_bytes() == meta


def test_same_directory_twice_in_one_process(saved_dir: Path, tmp_path: Path) -> None:
    data = _copy(saved_dir, tmp_path)
    with pykvs.open(data, node_name="n1", wait_leader=10) as store:
        with pytest.raises(StorageLockedError, match="already open"):
            pykvs.open(data, node_name="n1", wait_leader=5)
        assert len(store.list("")[1]) == 200
        assert store.put("after", "x")


def test_same_directory_from_two_processes(saved_dir: Path, tmp_path: Path) -> None:
    data = _copy(saved_dir, tmp_path)
    with pykvs.open(data, node_name="n1", wait_leader=10) as store:
        other = subprocess.run(
            [sys.executable, "-c", "import sys, pykvs; pykvs.open(sys.argv[1], node_name='n1',"
             " wait_leader=5)", str(data)], capture_output=True, text=True, timeout=60)
        assert other.returncode != 0
        assert "already open" in other.stderr
        assert len(store.list("")[1]) == 200


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda d: (d / name).write_bytes(data)


def _truncate(name: str, size: Callable[[int], int]) -> Callable[[Path], None]:
    return lambda d: os.truncate(d / name, size((d / name).stat().st_size))


def _flip(name: str, offset: int) -> Callable[[Path], None]:
    def flip(d: Path) -> None:
        body = bytearray((d / name).read_bytes())
        for i in range(offset, offset + 64):
            body[i] ^= 0xFF
        (d / name).write_bytes(bytes(body))
    return flip


def _flip_values(d: Path) -> None:
    """One bit flipped in every stored copy of a value: LMDB has no checksums, the
    storage's per-record CRC must catch it."""
    path = d / "raft" / "data.mdb"
    body = bytearray(path.read_bytes())
    start = body.find(b"v" * 64)
    assert start >= 0
    while start >= 0:
        body[start + 32] ^= 0x01
        start = body.find(b"v" * 64, start + 64)
    path.write_bytes(bytes(body))


def _newer_storage_format(d: Path) -> None:
    """The Raft store's own format record says 2 (sealed as raft/storage/records.py does)."""
    env = lmdb.open(str(d / "raft"), max_dbs=4, subdir=True)
    try:
        with env.begin(write=True, db=env.open_db(b"stable")) as txn:
            payload = msgpack.packb(2)
            txn.put(b"format", payload + zlib.crc32(payload, zlib.crc32(b"format")).to_bytes(
                4, "big"))
    finally:
        env.close()


NEWER = json.dumps({"format": 99, "node": "n1", "datacenter": "dc1"}).encode()
CORRUPTIONS: list[tuple[str, Callable[[Path], None], str]] = [
    ("server.json garbage", _write("server.json", b"\x00garbage{"), "server.json"),
    ("server.json empty", _write("server.json", b""), "server.json"),
    ("server.json truncated", _truncate("server.json", lambda n: n // 2), "server.json"),
    ("server.json a list", _write("server.json", b"[1, 2]"), "server.json"),
    ("server.json newer format", _write("server.json", NEWER), "newer"),
    ("data.mdb empty", _truncate("raft/data.mdb", lambda n: 0), "data.mdb"),
    ("data.mdb one page", _truncate("raft/data.mdb", lambda n: 4096), "data.mdb"),
    ("data.mdb truncated past the metas", _truncate("raft/data.mdb", lambda n: 3 * 4096),
     "data.mdb"),
    ("data.mdb half", _truncate("raft/data.mdb", lambda n: n // 2), "data.mdb"),
    ("data.mdb header bits", _flip("raft/data.mdb", 0), "data.mdb"),
    ("data.mdb meta bits", _flip("raft/data.mdb", 4096 + 16), "data.mdb"),
    ("data.mdb value bits", _flip_values, "data.mdb"),
    ("raft store of a newer format", _newer_storage_format, "format 2"),
    ("data.mdb missing", lambda d: (d / "raft" / "data.mdb").unlink(), "data.mdb is missing"),
    ("raft directory missing", lambda d: shutil.rmtree(d / "raft"), "data.mdb is missing"),
]


def _open_in_child(data: Path) -> subprocess.CompletedProcess[str]:
    # a child: a truncated LMDB file used to kill the process with SIGBUS
    code = ("import sys, pykvs\nwith pykvs.open(sys.argv[1], node_name='n1', wait_leader=10)"
            " as s:\n    print(len(s.list('')[1]))")
    return subprocess.run([sys.executable, "-c", code, str(data)], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize(("case", "corrupt", "names"), CORRUPTIONS,
                         ids=[c[0] for c in CORRUPTIONS])
def test_corrupt_data_directory_is_refused(saved_dir: Path, tmp_path: Path, case: str,
                                           corrupt: Callable[[Path], None],
                                           names: str) -> None:
    data = _copy(saved_dir, tmp_path)
    corrupt(data)
    files = {p: p.read_bytes() for p in data.rglob("*") if p.is_file() and p.name != "lock.mdb"}
    opened = _open_in_child(data)
    assert opened.returncode == 1, (case, opened.returncode, opened.stdout, opened.stderr)
    last = opened.stderr.strip().splitlines()[-1]
    # ValueError, or the storage's StorageError (a record that fails its CRC, a format)
    assert last.startswith(("ValueError:", "pykvs.raft.storage.")), last
    assert names in last, last
    assert {p: p.read_bytes() for p in files} == files  # refused before writing anything


def test_missing_lock_file_is_recreated(saved_dir: Path, tmp_path: Path) -> None:
    data = _copy(saved_dir, tmp_path)
    (data / "raft" / "lock.mdb").unlink()
    with pykvs.open(data, node_name="n1", wait_leader=10) as store:
        assert len(store.list("")[1]) == 200
