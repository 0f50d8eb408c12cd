"""A full snapshot restore through Raft on 3 servers (PUT /v1/snapshot, Snapshot.Restore):
every table comes back on every server, a follower that was down catches up by
InstallSnapshot, writes carry on after it, and a corrupt or truncated stream changes nothing."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest
from test_http_api import Cluster, scenario
from test_server_cluster import until

from pykvs.server.server import Server
from pykvs.server.snapshot_archive import STATE_NAME
from pykvs.state.store import TABLES


def tables(server: Server) -> dict[str, bytes]:
    """Every table of the server's state, records with their indexes, as packed bytes."""
    version = server.fsm.snapshot().version
    return {name: version.table(name).seek_packed(b"", 1 << 30) for name in TABLES}


def state_of(archive: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive))) as tar:
        member = tar.extractfile(STATE_NAME)
        assert member is not None
        return member.read()


def test_restore_brings_back_every_table_on_every_server(tmp_path: Path) -> None:
    async def body(cluster: Cluster) -> None:
        leader, (s2, s3) = await cluster.start_three()

        assert await s2.json("PUT", "/v1/kv/app/a", b"alpha", flags=7) is True
        assert await s2.json("PUT", "/v1/kv/app/gone", b"x") is True
        assert await s2.json("DELETE", "/v1/kv/app/gone") is True  # a tombstone
        sid = (await s2.json("PUT", "/v1/session/create", '{"Name": "n", "TTL": "60s"}'))["ID"]
        assert await s2.json("PUT", "/v1/kv/app/lock", b"held", acquire=sid) is True
        status, _, archive = await s2.call("GET", "/v1/snapshot")
        assert status == 200
        expected = tables(leader.server)
        assert expected["tombstones"] and expected["sessions"]

        # The state moves on, then one follower goes down.
        assert await s2.json("PUT", "/v1/kv/app/a", b"changed") is True
        assert await s2.json("PUT", "/v1/kv/other", b"new") is True
        assert await s2.json("PUT", f"/v1/session/destroy/{sid}") is True
        await s3.api.close()
        await s3.server.close()
        cluster.nodes.remove(s3)

        status, _, _ = await s2.call("PUT", "/v1/snapshot", archive)
        assert status == 200
        for node in (leader, s2):
            await until(lambda n=node: tables(n.server) == expected, f"{node.base} restored")
        # Writes carry on after it, with indexes above everything restored.
        assert await s2.json("PUT", "/v1/kv/after", b"1") is True
        after = (await leader.json("GET", "/v1/kv/after"))[0]
        assert after["ModifyIndex"] > leader.server.node.stats()["snapshot_index"] - 1
        [lock] = await leader.json("GET", "/v1/kv/app/lock")
        assert lock["Session"] == sid

        # The follower that was down comes back and is brought to it by InstallSnapshot.
        back = await cluster.start(s3.server.config.node_name)
        want = tables(leader.server)
        await until(lambda: tables(back.server) == want, "the returning follower restored")
        assert back.server.node.stats()["snapshots_installed"] >= 1

        # A truncated stream, straight to the RPC, is refused and changes nothing.
        state = state_of(archive)
        restore = leader.server.handlers["Snapshot.Restore"]
        with pytest.raises(ValueError, match="Error restoring snapshot"):
            await restore({"ID": "", "Offset": 0, "Data": state[:-9], "EOF": True})
        # A corrupt archive through HTTP: refused, nothing changes.
        broken = bytearray(archive)
        broken[len(broken) // 2] ^= 0xFF
        status, _, text = await s2.call("PUT", "/v1/snapshot", bytes(broken))
        assert status == 400 and b"Error restoring snapshot" in text
        for node in cluster.nodes:
            assert tables(node.server) == want

    scenario(tmp_path, body, limit=120)
