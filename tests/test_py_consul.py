"""The py-consul client, unchanged, against a real ``pykvs agent`` process (HTTP on an ephemeral
port): KV with every option, sessions and locks, blocking reads, txn, status, operator raft,
agent self, snapshot save and restore. One agent serves the whole module."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator

import pytest

consul = pytest.importorskip("consul")
consul_errors = pytest.importorskip("consul.exceptions")

from test_cli_consul import AgentProcess, running_agent  # noqa: E402  (after the skip checks)


def client(agent: AgentProcess) -> consul.Consul:
    return consul.Consul(host=agent.host, port=agent.port)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    yield from running_agent(tmp_path_factory.mktemp("py-consul"), "pc1")


def test_kv_put_get_delete_with_every_option(agent: AgentProcess) -> None:
    c = client(agent)
    assert c.kv.put("pc/a", "1") is True
    assert c.kv.put("pc/b/c", b"\x00\xffbinary", flags=42) is True
    assert c.kv.put("pc/b/d", None) is True  # an empty value reads back as None
    index, entry = c.kv.get("pc/a")
    assert entry["Value"] == b"1" and entry["Key"] == "pc/a" and entry["Flags"] == 0
    assert int(index) == entry["ModifyIndex"] and entry["CreateIndex"] == entry["ModifyIndex"]
    _, entry = c.kv.get("pc/b/c")
    assert entry["Value"] == b"\x00\xffbinary" and entry["Flags"] == 42
    _, entry = c.kv.get("pc/b/d")
    assert entry["Value"] is None
    _, missing = c.kv.get("pc/none")
    assert missing is None

    _, entries = c.kv.get("pc/", recurse=True)
    assert [e["Key"] for e in entries] == ["pc/a", "pc/b/c", "pc/b/d"]
    _, keys = c.kv.get("pc/", keys=True)
    assert keys == ["pc/a", "pc/b/c", "pc/b/d"]
    _, keys = c.kv.get("pc/", keys=True, separator="/")
    assert keys == ["pc/a", "pc/b/"]
    for consistency in ("default", "consistent", "stale"):
        _, entry = c.kv.get("pc/a", consistency=consistency)
        assert entry["Value"] == b"1"
    _, entry = c.kv.get("pc/a", dc="dc1")
    assert entry["Value"] == b"1"

    # cas: 0 means "only if absent"; a stale index is refused; the current one applies
    _, entry = c.kv.get("pc/a")
    assert c.kv.put("pc/a", "x", cas=0) is False
    assert c.kv.put("pc/a", "x", cas=entry["ModifyIndex"] + 1000) is False
    assert c.kv.put("pc/a", "2", cas=entry["ModifyIndex"]) is True
    assert c.kv.put("pc/new", "n", cas=0) is True
    _, entry = c.kv.get("pc/a")
    assert entry["Value"] == b"2"
    assert c.kv.delete("pc/a", cas=entry["ModifyIndex"] + 1000) is False
    assert c.kv.delete("pc/a", cas=entry["ModifyIndex"]) is True
    assert c.kv.get("pc/a")[1] is None
    assert c.kv.delete("pc/new") is True
    assert c.kv.delete("pc/never-was") is True
    assert c.kv.delete("pc/", recurse=True) is True
    assert c.kv.get("pc/", recurse=True)[1] is None


def test_locks_with_sessions(agent: AgentProcess) -> None:
    c = client(agent)
    sid = c.session.create(name="worker", ttl=30, lock_delay=0, behavior="release")
    other = c.session.create(name="rival", lock_delay=0)
    assert c.kv.put("lock/a", "held", acquire=sid) is True
    assert c.kv.put("lock/a", "stolen", acquire=other) is False
    _, entry = c.kv.get("lock/a")
    assert entry["Session"] == sid and entry["LockIndex"] == 1 and entry["Value"] == b"held"
    assert c.kv.put("lock/a", "x", release=other) is False
    assert c.kv.put("lock/a", "released", release=sid) is True
    _, entry = c.kv.get("lock/a")
    assert "Session" not in entry and entry["Value"] == b"released"
    assert c.kv.put("lock/a", "mine", acquire=other) is True
    # destroying the holder releases its locks (behavior "release")
    assert c.session.destroy(other) is True
    _, entry = c.kv.get("lock/a")
    assert "Session" not in entry and entry["Value"] == b"mine"
    # behavior "delete" removes the key with the session
    doomed = c.session.create(behavior="delete", lock_delay=0)
    assert c.kv.put("lock/b", "temp", acquire=doomed) is True
    c.session.destroy(doomed)
    assert c.kv.get("lock/b")[1] is None
    c.session.destroy(sid)


def test_sessions_create_info_list_node_renew_destroy(agent: AgentProcess) -> None:
    c = client(agent)
    sid = c.session.create(name="s1", ttl=20, lock_delay=5)
    _, info = c.session.info(sid)
    assert info["ID"] == sid and info["Name"] == "s1" and info["TTL"] == "20s"
    assert info["LockDelay"] == 5 * 1_000_000_000 and info["Behavior"] == "release"
    assert info["Node"] == agent.name
    index, listed = c.session.list()
    assert sid in [s["ID"] for s in listed] and int(index) >= info["CreateIndex"]
    _, on_node = c.session.node(agent.name)
    assert sid in [s["ID"] for s in on_node]
    _, elsewhere = c.session.node("no-such-node")
    assert elsewhere == []
    renewed = c.session.renew(sid)
    assert renewed["ID"] == sid and renewed["TTL"] == "20s"
    assert c.session.destroy(sid) is True
    assert c.session.info(sid)[1] is None
    with pytest.raises(consul.NotFound):
        c.session.renew(sid)


def test_blocking_get_waits_for_a_change_or_the_wait(agent: AgentProcess) -> None:
    c = client(agent)
    c.kv.put("block/k", "v1")
    index, _ = c.kv.get("block/k")
    started = time.monotonic()
    same_index, entry = c.kv.get("block/k", index=index, wait="300ms")
    assert time.monotonic() - started >= 0.25 and same_index == index
    assert entry["Value"] == b"v1"

    results: list[tuple[str, dict]] = []
    waiter = threading.Thread(target=lambda: results.append(
        client(agent).kv.get("block/k", index=index, wait="20s")))
    waiter.start()
    time.sleep(0.2)  # give the blocking query time to park (the answer does not depend on it)
    c.kv.put("block/k", "v2")
    waiter.join(15)
    assert results, "the blocking get did not return after the write"
    new_index, entry = results[0]
    assert int(new_index) > int(index) and entry["Value"] == b"v2"
    # a prefix blocks too, and wakes on a delete under it
    index, _ = c.kv.get("block/", recurse=True)
    waiter = threading.Thread(target=lambda: results.append(
        client(agent).kv.get("block/", recurse=True, index=index, wait="20s")))
    waiter.start()
    c.kv.delete("block/k")
    waiter.join(15)
    assert results[-1][1] is None and int(results[-1][0]) > int(index)


def test_txn(agent: AgentProcess) -> None:
    c = client(agent)

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    reply = c.txn.put([
        {"KV": {"Verb": "set", "Key": "txn/a", "Value": b64("1")}},
        {"KV": {"Verb": "set", "Key": "txn/b", "Value": b64("2"), "Flags": 9}},
        {"KV": {"Verb": "get", "Key": "txn/a"}},
    ])
    assert reply["Errors"] is None
    results = [r["KV"] for r in reply["Results"]]
    assert [r["Key"] for r in results] == ["txn/a", "txn/b", "txn/a"]
    assert results[0]["Value"] is None and results[2]["Value"] == b64("1")
    assert results[1]["Flags"] == 9
    # read-only transactions go to Txn.Read
    reply = c.txn.put([{"KV": {"Verb": "get-tree", "Key": "txn/"}}])
    assert [r["KV"]["Key"] for r in reply["Results"]] == ["txn/a", "txn/b"]
    assert reply["KnownLeader"] is True
    # a failed check rolls everything back: 409 with the errors
    with pytest.raises(consul.ConsulException) as failed:
        c.txn.put([
            {"KV": {"Verb": "set", "Key": "txn/c", "Value": b64("3")}},
            {"KV": {"Verb": "check-index", "Key": "txn/a", "Index": 999999}},
        ])
    assert "409" in str(failed.value) and "failed index check" in str(failed.value)
    assert c.kv.get("txn/c")[1] is None
    # 128 operations are accepted, 129 are a 413
    many = [{"KV": {"Verb": "set", "Key": f"txn/m/{i:03d}", "Value": b64(str(i))}}
            for i in range(128)]
    assert c.txn.put(many)["Errors"] is None
    with pytest.raises(consul.ConsulException, match="413"):
        c.txn.put([*many, {"KV": {"Verb": "get", "Key": "txn/a"}}])
    c.kv.delete("txn/", recurse=True)


def test_status_operator_agent_self(agent: AgentProcess) -> None:
    c = client(agent)
    assert c.status.leader() == agent.rpc
    assert c.status.peers() == [agent.rpc]
    config = c.operator.raft_config()
    assert [(s["ID"], s["Address"], s["Leader"], s["Voter"]) for s in config["Servers"]] == [
        (agent.name, agent.rpc, True, True)]
    assert config["Index"] > 0
    me = c.agent.self()
    assert me["Config"]["Datacenter"] == "dc1" and me["Config"]["NodeName"] == agent.name
    assert me["Member"]["Name"] == agent.name


def test_snapshot_save_and_restore(agent: AgentProcess) -> None:
    c = client(agent)
    c.kv.put("snap/keep", "original", flags=3)
    c.kv.put("snap/other", "o")
    archive = c.snapshot.save()
    assert archive[:2] == b"\x1f\x8b"  # a gzip-compressed tar, as Consul's
    c.kv.put("snap/keep", "changed")
    c.kv.put("snap/added", "after the snapshot")
    c.kv.delete("snap/other")
    assert c.snapshot.restore(archive) is True
    _, entries = c.kv.get("snap/", recurse=True)
    assert [(e["Key"], e["Value"], e["Flags"]) for e in entries] == [
        ("snap/keep", b"original", 3), ("snap/other", b"o", 0)]
    with pytest.raises(consul_errors.BadRequest):
        c.snapshot.restore(b"not a snapshot")
    _, entries = c.kv.get("snap/", recurse=True)
    assert len(entries) == 2  # a refused restore changes nothing
