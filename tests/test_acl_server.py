"""ACLs through the server's RPC endpoints: real servers in one event loop, TCP on 127.0.0.1,
clients over msgpack-RPC (``pykvs.connect_async(..., token=)``).

Every endpoint with an allowed token, a denied token, no token and a made-up token; bootstrap
once; ACL state that survives a restart and replicates; a request forwarded by a follower keeps
its token's rights and no more.
"""

from __future__ import annotations

from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from test_server_cluster import FAST, run, until

import pykvs
from pykvs.server.client import AsyncKV
from pykvs.server.rpc import RPCError
from pykvs.server.server import Server, ServerConfig

ACL_ON = {**FAST, "acl_enabled": True, "acl_default_policy": "deny"}
READER_RULES = 'key_prefix "pub/" { policy = "read" }\nkey_prefix "pub/secret/" { policy = "deny" }'
WRITER_RULES = ('key_prefix "app/" { policy = "write" }\nsession_prefix "" { policy = "write" }\n'
                'operator = "read"')
DENIED = "Permission denied"
GLOBAL_MANAGEMENT = "00000000-0000-0000-0000-000000000001"


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.servers: list[Server] = []
        self.clients: list[AsyncKV] = []

    async def start(self, name: str, **options: Any) -> Server:
        config = ServerConfig(data_dir=str(self.root / name), node_name=name, port=0,
                              **{**ACL_ON, **options})
        server = Server(config)
        self.servers.append(server)
        await server.start()
        return server

    async def client(self, server: Server, token: str = "") -> AsyncKV:
        client = await pykvs.connect_async(server.address, token=token)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        for server in self.servers:
            await server.close()


async def setup_tokens(admin: AsyncKV) -> dict[str, str]:
    """Policies and tokens: reader (pub/ but not pub/secret/), writer (app/, sessions,
    operator read); returns the secrets by role."""
    secrets = {"admin": str(admin.token)}
    for name, rules in (("reader", READER_RULES), ("writer", WRITER_RULES)):
        policy = await admin.call("ACL.PolicySet", {"Policy": {"Name": name, "Rules": rules}})
        token = await admin.call("ACL.TokenSet", {"ACLToken": {
            "Description": name, "Policies": [{"Name": name}]}, "Create": True})
        assert token["Policies"] == [{"ID": policy["ID"], "Name": name}]
        secrets[name] = token["SecretID"]
    return secrets


async def bootstrap(server: Server) -> AsyncKV:
    anon = await pykvs.connect_async(server.address)
    try:
        root = await anon.call("ACL.BootstrapTokens", {})
    finally:
        await anon.close()
    assert root["Policies"] == [{"ID": GLOBAL_MANAGEMENT, "Name": "global-management"}]
    return await pykvs.connect_async(server.address, token=root["SecretID"])


async def refused(call: Coroutine[Any, Any, Any], text: str = DENIED) -> str:
    with pytest.raises(RPCError) as info:
        await call
    assert text in info.value.message, info.value.message
    return info.value.message


def test_endpoints_with_allowed_denied_missing_and_made_up_tokens(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = Cluster(tmp_path)
        try:
            server = await cluster.start("s1")
            await server.wait_leader(15)
            admin = await bootstrap(server)
            cluster.clients.append(admin)
            # Bootstrap only once, with Consul's text.
            await refused(admin.call("ACL.BootstrapTokens", {}),
                          "ACL bootstrap no longer allowed (reset index:")
            secrets = await setup_tokens(admin)
            reader = await cluster.client(server, secrets["reader"])
            writer = await cluster.client(server, secrets["writer"])
            anon = await cluster.client(server)
            bogus = await cluster.client(server, "00000000-made-up-0000-000000000000")
            for key in ("pub/a", "pub/b", "pub/secret/x", "app/1", "other"):
                assert await admin.put(key, key.encode())

            # Made-up token: "ACL not found" everywhere, even for reads.
            for call in (bogus.get("pub/a"), bogus.put("app/1", b"x"), bogus.list("pub/"),
                         bogus.session_list(), bogus.raft_configuration()):
                await refused(call, "ACL not found")

            # Single reads: allowed, denied by a deny rule, default deny, anonymous.
            assert (await reader.get("pub/a"))[1].value == b"pub/a"
            await refused(reader.get("pub/secret/x"))
            await refused(reader.get("app/1"))
            message = await refused(anon.get("pub/a"))
            assert "anonymous token" in message
            # Listings are filtered, not refused; the filtered flag only for a token.
            _, entries = await reader.list("pub/")
            assert [e.key for e in entries] == [b"pub/a", b"pub/b"]
            raw = await reader.call("KVS.List", {"Key": b""})
            assert raw["ResultsFilteredByACLs"] is True
            raw = await reader.call("KVS.List", {"Key": b"pub/a"})
            assert "ResultsFilteredByACLs" not in raw
            raw = await anon.call("KVS.List", {"Key": b""})
            assert raw["Entries"] is None and "ResultsFilteredByACLs" not in raw
            _, keys = await reader.keys("", "/")
            assert keys == [b"pub/"]
            _, keys = await reader.keys("pub/", "/")
            assert keys == [b"pub/a", b"pub/b"]  # pub/secret/ folds away: nothing readable
            _, keys = await admin.keys("pub/", "/")
            assert keys == [b"pub/a", b"pub/b", b"pub/secret/"]

            # Writes: allowed prefix, outside it, delete-tree needs the whole prefix.
            assert await writer.put("app/2", b"v")
            await refused(writer.put("pub/a", b"v"))
            await refused(reader.put("pub/a", b"v"))
            await refused(anon.put("app/1", b"v"))
            assert await writer.delete("app/", recurse=True)
            await refused(writer.delete("", recurse=True))
            await refused(reader.delete("pub/", recurse=True))
            assert (await admin.get("pub/a"))[1] is not None

            # Transactions: each op checked before proposing; denied -> nothing applies.
            result = await writer.txn([{"Verb": "set", "Key": "app/t", "Value": b"1"},
                                       {"Verb": "set", "Key": "pub/t", "Value": b"1"},
                                       {"Verb": "get", "Key": "pub/a"}])
            assert [e.op_index for e in result.errors] == [1]
            assert DENIED in result.errors[0].what
            assert (await admin.get("app/t"))[1] is None
            read = await reader.txn_read([{"Verb": "get-tree", "Key": "pub/"}])
            assert [e.key for e in read.results] == [b"pub/a", b"pub/b"]
            read = await reader.txn_read([{"Verb": "check-index", "Key": "app/1", "Index": 1}])
            assert DENIED in read.errors[0].what

            # Sessions: write on the node for create/destroy/renew; reads filtered by node.
            sid = await writer.session_create(node="n1")
            await refused(reader.session_create(node="n1"))
            await refused(reader.session_destroy(sid))
            await refused(reader.session_renew(sid))
            assert await writer.session_renew(sid) is not None
            assert [s.id for s in (await writer.session_list())[1]] == [sid]
            assert (await reader.session_list())[1] == []
            assert (await anon.session_info(sid))[1] is None
            assert await writer.session_destroy(sid)

            # Operator and snapshots.
            assert (await writer.raft_configuration())["Servers"]
            await refused(reader.raft_configuration())
            await refused(writer.transfer_leader())
            await refused(writer.call("Snapshot.Save", {}))
            saved = await admin.call("Snapshot.Save", {})
            assert saved["Size"] > 0
            # Status answers anyone, as Consul's.
            assert await anon.leader() == server.address

            # ACL API itself: acl read/write.
            await refused(writer.call("ACL.PolicyList", {}))
            await refused(anon.call("ACL.TokenSet", {"ACLToken": {}, "Create": True}))
            tokens = (await admin.call("ACL.TokenList", {}))["Tokens"]
            assert {t["Description"] for t in tokens} >= {"reader", "writer", "Anonymous Token"}
            own = await reader.call("ACL.TokenRead", {"TokenID": secrets["reader"],
                                                      "TokenIDType": "secret"})
            assert own["Token"]["Description"] == "reader"
            await refused(admin.call("ACL.PolicyDelete", {"PolicyID": GLOBAL_MANAGEMENT}),
                          "builtin")
            own_accessor = next(t["AccessorID"] for t in tokens
                                if t["SecretID"] == secrets["admin"])
            await refused(admin.call("ACL.TokenDelete", {"TokenID": own_accessor}),
                          "request's authorization token")
        finally:
            await cluster.close()

    run(scenario())


def test_acl_off_changes_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        db = await pykvs.open_async(str(tmp_path / "db"))
        try:
            assert await db.put("k", b"v")
            assert (await db.get("k"))[1].value == b"v"
            assert (await db.call("Snapshot.Save", {}))["Size"] > 0
            await refused(db.call("ACL.BootstrapTokens", {}), "ACL support disabled")
        finally:
            await db.close()

    run(scenario())


def test_state_replicates_survives_restart_and_forwarding_keeps_rights(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = Cluster(tmp_path)
        try:
            s1 = await cluster.start("s1")
            await s1.wait_leader(15)
            s2 = await cluster.start("s2", join=[s1.address])
            s3 = await cluster.start("s3", join=[s1.address])
            servers = [s1, s2, s3]
            await until(lambda: all(s.node is not None and len(s.node.configuration().voters)
                                    == 3 and s.leader_address() for s in servers), "3 voters")
            admin = await bootstrap(s1)
            cluster.clients.append(admin)
            secrets = await setup_tokens(admin)
            assert await admin.put("pub/a", b"1")
            await until(lambda: all(s.state.snapshot().acl.token_by_secret(secrets["reader"])
                                    for s in servers), "tokens on every server")
            follower = next(s for s in servers if not s.node.is_leader())
            via_follower = await cluster.client(follower, secrets["reader"])
            # A forwarded write carries the secret; the leader refuses it with its message.
            await refused(via_follower.put("pub/a", b"2"))
            denied = await via_follower.call("Txn.Apply", {"Ops": [{"KV": {
                "Verb": "delete-tree", "Key": b"pub/"}}]})
            assert denied["Results"] is None and DENIED in denied["Errors"][0]["What"]
            assert (await via_follower.get("pub/a"))[1].value == b"1"  # forwarded read: allowed
            await refused(via_follower.get("app/x"))
            # A stale read answered by the follower itself, with its replicated tables (once
            # the follower has applied the write: a stale read may lag, that is its contract).
            await until(lambda: follower.state.kv_get(b"pub/a")[1] is not None, "pub/a applied")
            stale = await via_follower.get("pub/a", consistency="stale")
            assert stale[1].value == b"1"
            await refused(via_follower.get("app/x", consistency="stale"))
            writer = await cluster.client(follower, secrets["writer"])
            assert await writer.put("app/x", b"w")  # forwarded, allowed
        finally:
            await cluster.close()

        # Restart the first server alone from its data directory: the ACL tables come back
        # from its log (and snapshots) and still decide.
        cluster = Cluster(tmp_path)
        try:
            s1 = await cluster.start("s1")
            await until(lambda: s1.state.snapshot().acl.token_by_secret(secrets["reader"]),
                        "ACL state after restart")
            acl = s1.state.snapshot().acl
            assert acl.bootstrap_index > 0
            authz = s1.acl.resolver.resolve(secrets["reader"])
            assert authz.key_read(b"pub/a") and not authz.key_write(b"pub/a")
        finally:
            await cluster.close()

    run(scenario(), limit=90)
