"""Bad input on every endpoint of a running server: a clear error naming what is wrong, the
server keeps serving, and nothing in the state changes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgpack

from pykvs.server.rpc import RPCClient
from pykvs.server.server import Server, ServerConfig
from pykvs.state.store import StateSnapshot

BIG = b"x" * (512 * 1024 + 1)
SESSION = "11111111-2222-3333-4444-555555555555"

BAD_REQUESTS: list[tuple[str, Any, str]] = [
    ("KVS.Nope", {}, "can't find method KVS.Nope"),
    ("KVS.Get", 5, "args must be a map"),
    ("KVS.Apply", {"DirEnt": {"Key": "k"}}, "unknown KVS operation ''"),
    ("KVS.Apply", {"Op": "frob", "DirEnt": {"Key": "k"}}, "unknown KVS operation 'frob'"),
    ("KVS.Apply", {"Op": "set"}, "missing DirEnt"),
    ("KVS.Apply", {"Op": "set", "DirEnt": [1]}, "DirEnt must be a map"),
    ("KVS.Apply", {"Op": "set", "DirEnt": {"Key": 5}}, "Key must be bytes"),
    ("KVS.Apply", {"Op": "set", "DirEnt": {"Key": ""}}, "Must provide key"),
    ("KVS.Apply", {"Op": "set", "DirEnt": {"Key": "k", "Flags": -1}}, "Flags must be an unsigned"),
    ("KVS.Apply", {"Op": "set", "DirEnt": {"Key": "k", "Flags": "1"}}, "Flags must be an unsigned"),
    ("KVS.Apply", {"Op": "set", "DirEnt": {"Key": "k", "Value": BIG}}, "Value too large"),
    ("KVS.Apply", {"Op": "lock", "DirEnt": {"Key": "k"}}, "lock needs DirEnt.Session"),
    ("KVS.Apply", {"Op": "lock", "DirEnt": {"Key": "k", "Session": SESSION}}, "invalid session"),
    ("KVS.Apply", {"Op": "set", "DirEnt": {"Key": "k"}, "Datacenter": "dc9"},
     "No path to datacenter 'dc9'"),
    ("KVS.Get", {"Key": 5}, "Key must be bytes"),
    ("KVS.Get", {"Key": "k", "MinQueryIndex": -1}, "MinQueryIndex must be an unsigned"),
    ("KVS.Get", {"Key": "k", "MaxQueryTime": "5s"}, "MaxQueryTime must be an unsigned"),
    ("KVS.Get", {"Key": "k", "AllowStale": "yes"}, "AllowStale must be a boolean"),
    ("KVS.Get", {"Key": "k", "AllowStale": True, "RequireConsistent": True},
     "cannot both be set"),
    ("KVS.Get", {"Key": "k", "Datacenter": 7}, "Datacenter must be a string"),
    ("KVS.List", {"Key": ["a"]}, "Key must be bytes"),
    ("KVS.ListKeys", {"Prefix": 1}, "Prefix must be bytes"),
    ("KVS.ListKeys", {"Prefix": "a", "Seperator": 1}, "Seperator must be bytes"),
    ("Txn.Apply", {}, "Ops must be a non-empty list"),
    ("Txn.Apply", {"Ops": "set"}, "Ops must be a non-empty list"),
    ("Txn.Apply", {"Ops": [{"KV": {"Verb": "set", "Key": "k"}}] * 129}, "too many operations"),
    ("Txn.Apply", {"Ops": [7]}, "operation 0: must be a map"),
    ("Txn.Apply", {"Ops": [{"KV": {"Verb": "set", "Key": "k"}}, {"KV": {"Verb": "zap"}}]},
     "operation 1: unknown KV verb 'zap'"),
    ("Txn.Apply", {"Ops": [{"KV": {"Verb": "set", "Key": "k", "Value": BIG}}]},
     "operation 0: Value too large"),
    ("Txn.Apply", {"Ops": [{"KV": {"Verb": "set", "Key": "k", "Flags": "x"}}]},
     "operation 0: Flags must be"),
    ("Txn.Read", {"Ops": [{"KV": {"Verb": "set", "Key": "k"}}]}, "is not a read-only verb"),
    ("Session.Apply", {"Op": "create"}, "missing Session"),
    ("Session.Apply", {"Op": "renew", "Session": {}}, "unknown session operation 'renew'"),
    ("Session.Apply", {"Op": "create", "Session": {"TTL": "abc"}}, "TTL"),
    ("Session.Apply", {"Op": "create", "Session": {"TTL": "1s"}}, "TTL"),
    ("Session.Apply", {"Op": "create", "Session": {"Behavior": "explode"}}, "Behavior"),
    ("Session.Apply", {"Op": "create", "Session": {"LockDelay": "15s"}}, "LockDelay must be"),
    ("Session.Apply", {"Op": "destroy", "Session": {}}, "Must provide ID"),
    ("Session.Get", {"SessionID": 5}, "SessionID must be a string"),
    ("Session.List", {"MinQueryIndex": "0"}, "MinQueryIndex must be"),
    ("Session.NodeSessions", {"Node": 5}, "Node must be a string"),
    ("Session.Renew", {"SessionID": []}, "SessionID must be a string"),
    ("Status.Leader", {"Datacenter": 5}, "Datacenter must be a string"),
    ("Status.Peers", {"Datacenter": "dc9"}, "No path to datacenter 'dc9'"),
    ("Operator.RaftGetConfiguration", {"AllowStale": 1}, "AllowStale must be a boolean"),
    ("Operator.RaftRemovePeer", {}, "Must specify either ID or Address"),
    ("Operator.RaftRemovePeer", {"Address": "127.0.0.1:1"}, "was not found"),
    ("Operator.RaftRemovePeer", {"ID": "ghost"}, "was not found"),
    ("Operator.TransferLeader", {"ID": "ghost"}, "not a voter"),
    ("Operator.TransferLeader", {"ID": 5}, "ID must be a string"),
    ("Snapshot.Save", {"RequireConsistent": "yes"}, "RequireConsistent must be a boolean"),
    ("Snapshot.Read", {"ID": "nope"}, "unknown or expired snapshot ID 'nope'"),
    ("Snapshot.Read", {"ID": "nope", "Offset": -1}, "Offset must be an unsigned"),
]


def _tables(state: StateSnapshot) -> tuple[Any, ...]:
    return (
        state.kvs_index, state.tombstones_index, state.sessions_index,
        list(state.kvs.list_prefix(b"")), list(state.sessions.list_prefix(b"")),
        list(state.locks.list_prefix(b"")), list(state.tombstones.list_prefix(b"")),
    )


def test_bad_input_on_every_endpoint(tmp_path: Path) -> None:
    async def main() -> None:
        server = Server(ServerConfig(data_dir=str(tmp_path / "s1"), node_name="s1", port=0,
                                     tick_interval=0.02, rpc_hold_timeout=1.0))
        await server.start()
        client = RPCClient(*_split(server.address))
        try:
            await server.wait_leader(15)
            assert await client.call("KVS.Apply", {"Op": "set",
                                                   "DirEnt": {"Key": "keep", "Value": b"v"}})
            before = _tables(server.state.snapshot())
            reader, writer = await asyncio.open_connection(*_split(server.address))
            wrong = []
            for req_id, (method, args, expected) in enumerate(BAD_REQUESTS):
                writer.write(_frame([req_id, method, args]))
                header = await reader.readexactly(4)
                reply = msgpack.unpackb(await reader.readexactly(int.from_bytes(header, "big")))
                assert reply[0] == req_id and reply[2] is None
                if expected not in (reply[1] or ""):
                    wrong.append((method, str(args)[:80], reply[1]))
            writer.close()
            assert not wrong
            assert _tables(server.state.snapshot()) == before
            # Bytes that are not one request: that connection closes, the server carries on.
            for garbage in (b"\x00\x00\x00\x03\xc1\xc1\xc1", b"\x00\x00\x00\x00",
                            b"\x00\x00\x00\x02\x91\x01",
                            _frame(["pykvs-raft", 99, "x", "control"])):
                reader, writer = await asyncio.open_connection(*_split(server.address))
                writer.write(garbage)
                assert await asyncio.wait_for(reader.read(), 5) == b""
                writer.close()
            assert await client.call("KVS.Apply", {"Op": "set", "DirEnt": {"Key": "after"}})
            reply = await client.call("KVS.Get", {"Key": "keep"})
            assert reply["Entries"][0][1][0] == b"v"
        finally:
            await client.close()
            await server.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def _split(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


def _frame(obj: Any) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body
