"""An embedded store's reads in the caller's thread: ``get``, ``list`` and ``keys`` that its
server may answer at once (default on the leader, stale anywhere) read the current immutable
state version without a hop to the loop thread, and answer exactly what the loop's path does;
consistent and blocking reads still take the loop; concurrent writes never show a reader a
version going backwards."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import pykvs
from pykvs.server.sync_client import KV


@contextmanager
def loop_hops(db: KV) -> Iterator[list[int]]:
    """Counts the calls that go to the store's loop thread while the block runs."""
    hops = [0]
    run = db._thread.run

    def counted(coro: Any) -> Any:
        hops[0] += 1
        return run(coro)

    db._thread.run = counted  # type: ignore[method-assign]
    try:
        yield hops
    finally:
        db._thread.run = run  # type: ignore[method-assign]


def fill(db: KV) -> None:
    for i in range(20):
        assert db.put(f"app/{i:02d}", f"v{i}".encode(), flags=i)
    sid = db.session_create(ttl="30s")
    assert db.put("app/lock", b"held", acquire=sid)
    assert db.delete("app/05")


def test_default_and_stale_reads_run_in_the_callers_thread_and_match_the_loop(
        tmp_path: Path) -> None:
    with pykvs.open(str(tmp_path / "db")) as db:
        fill(db)
        with loop_hops(db) as hops:
            direct = [db.get("app/01"), db.get("missing"), db.list("app/"), db.list("zzz"),
                      db.keys("", separator="/"), db.keys("app/0"),
                      db.get("app/lock", consistency="stale")]
        assert hops[0] == 0
        with loop_hops(db) as hops:
            through_loop = [db.get("app/01", consistency="consistent"),
                            db.get("missing", consistency="consistent"),
                            db.list("app/", consistency="consistent"),
                            db.list("zzz", consistency="consistent"),
                            db.keys("", separator="/", consistency="consistent"),
                            db.keys("app/0", consistency="consistent"),
                            db.get("app/lock", consistency="consistent")]
        assert hops[0] == len(through_loop)
        assert direct == through_loop
        _, entry = direct[0]
        assert entry is not None and entry.value == b"v1" and entry.flags == 1
        assert direct[6][1] is not None and direct[6][1].session  # the lock's session
        assert [e.key for e in direct[2][1]][:5] == [b"app/00", b"app/01", b"app/02",
                                                     b"app/03", b"app/04"]


def test_a_blocking_read_waits_on_the_loop_for_the_next_write(tmp_path: Path) -> None:
    with pykvs.open(str(tmp_path / "db")) as db:
        assert db.put("k", b"1")
        index, _ = db.get("k")
        writer = threading.Timer(0.05, lambda: db.put("k", b"2"))
        with loop_hops(db) as hops:
            writer.start()
            new_index, entry = db.get("k", index=index, wait=10)
        writer.join()
        assert hops[0] >= 1  # the blocking read itself
        assert new_index > index and entry is not None and entry.value == b"2"
        # An index already passed answers at once, in this thread.
        with loop_hops(db) as hops:
            assert db.get("k", index=index)[0] == new_index
        assert hops[0] == 0


def test_acl_refusals_are_the_loops_words(tmp_path: Path) -> None:
    with pykvs.open(str(tmp_path / "db"), acl_enabled=True, acl_default_policy="deny") as db:
        with pytest.raises(pykvs.RPCError, match="Permission denied"):
            db.get("k")
        token = db.call("ACL.BootstrapTokens", {})["SecretID"]
    with pykvs.open(str(tmp_path / "db"), acl_enabled=True, acl_default_policy="deny",
                    token=token) as db:
        assert db.put("k", b"v")
        with loop_hops(db) as hops:
            _, entry = db.get("k")
        assert hops[0] == 0 and entry is not None and entry.value == b"v"


def test_readers_in_threads_never_see_a_version_go_back(tmp_path: Path) -> None:
    """Threads read while the loop commits: each reader sees indexes and values that only
    move forward, and listings that only grow (keys are only added)."""
    writes = 300
    with pykvs.open(str(tmp_path / "db")) as db:
        assert db.put("counter", b"0")
        problems: list[str] = []
        done = threading.Event()

        def reader() -> None:
            last_index, last_value, last_count = 0, -1, 0
            for _ in range(20_000):  # bounded; stops early once the writer is done
                index, entry = db.get("counter")
                _, entries = db.list("grow/")
                assert entry is not None
                value = int(entry.value)
                if index < last_index or value < last_value or len(entries) < last_count:
                    problems.append(f"went back: {(last_index, last_value, last_count)} -> "
                                    f"{(index, value, len(entries))}")
                    return
                last_index, last_value, last_count = index, value, len(entries)
                if done.is_set():
                    return

        readers = [threading.Thread(target=reader) for _ in range(3)]
        for thread in readers:
            thread.start()
        for i in range(1, writes + 1):
            assert db.put("counter", str(i).encode())
            assert db.put(f"grow/{i:04d}", b"x")
        done.set()
        for thread in readers:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in readers)
        assert problems == []
        _, entry = db.get("counter")
        assert entry is not None and entry.value == str(writes).encode()


def test_the_async_api_reads_without_awaiting_the_server(tmp_path: Path) -> None:
    async def scenario() -> None:
        db = await pykvs.open_async(str(tmp_path / "db"))
        try:
            assert await db.put("k", b"v")
            server = db.server
            assert server is not None
            calls = []
            handler = server.handlers["KVS.Get"]

            async def counted(args: dict[str, Any]) -> Any:
                calls.append(args)
                return await handler(args)

            server.handlers["KVS.Get"] = counted
            _, entry = await db.get("k")
            assert entry is not None and entry.value == b"v" and calls == []
            _, entry = await db.get("k", consistency="consistent")
            assert entry is not None and len(calls) == 1
        finally:
            await db.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))
