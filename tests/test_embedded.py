"""The embedded store: pykvs.open (sync, its own loop thread) and pykvs.open_async (the
caller's loop), durable across close and reopen, and reachable with pykvs.connect."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

import pykvs


def test_sync_store_is_durable_and_closes_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "db"
    threads_before = threading.active_count()
    with pykvs.open(str(path)) as db:
        assert db.put("a/1", b"one", flags=3)
        assert db.put("a/2", "two")
        sid = db.session_create(ttl="15s")
        assert db.put("a/lock", b"", acquire=sid)
        result = db.txn([{"Verb": "cas", "Key": "a/1", "Value": b"uno", "Index": 0}])
        assert not result.ok  # index 0 means "only if absent"
        with pytest.raises(pykvs.RPCError, match="Must provide key"):
            db.put("", b"x")
        # The same server over RPC, from another client.
        assert db.server is not None
        with pykvs.connect(db.server.address) as remote:
            _, entry = remote.get("a/2")
            assert entry is not None and entry.value == b"two"
    assert threading.active_count() == threads_before  # the loop thread is gone
    with pykvs.open(str(path)) as db:
        index, entries = db.list("a/")
        assert [(e.key, e.value, e.flags) for e in entries] == [
            (b"a/1", b"one", 3), (b"a/2", b"two", 0), (b"a/lock", b"", 0)]
        assert entries[2].session == sid
        _, keys = db.keys("", separator="/")
        assert keys == [b"a/"]
        assert index >= entries[-1].modify_index


def test_async_store_in_the_callers_loop(tmp_path: Path) -> None:
    async def main() -> None:
        async with await pykvs.open_async(str(tmp_path / "db")) as db:
            index, missing = await db.get("job")
            assert missing is None
            waiter = asyncio.ensure_future(db.get("job", index=index, wait=10))
            await asyncio.sleep(0.05)
            assert not waiter.done()
            assert await db.put("job", b"go")
            new_index, entry = await asyncio.wait_for(waiter, 5)
            assert entry is not None and entry.value == b"go" and new_index > index
            assert await db.delete("job", cas=entry.modify_index)
            index, listed = await db.list("")
            assert listed == [] and index > new_index  # the index never goes backwards

    asyncio.run(asyncio.wait_for(main(), 60))


def test_open_refuses_another_nodes_directory(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    with pykvs.open(path, node_name="first"):
        pass
    with pytest.raises(ValueError, match="belongs to node 'first'"):
        pykvs.open(path, node_name="second")
