"""Embedded stores under the same closed-loop load, in one process: ``pykvs.open`` against
PySyncObj's replicated dict (``ReplDict``), run as its own process by bench_peers.py.

    python bench/peers/embedded.py STORE OP [--in-flight N] [--duration S] [--peer HOST:PORT]

STORE is ``pykvs`` or ``pysyncobj``; OP is ``put`` (async API, N in flight), ``put-sync`` (the
blocking call, one at a time from the main thread), ``get`` or ``range``. With ``--peer`` (given
twice) the store is one member of a three-server cluster whose other two members are other
processes: pykvs agents started with ``--bootstrap-expect 3``, or ``embedded.py pysyncobj node``.

Durability. pykvs syncs each Raft Ready (LMDB, ``sync=True``). PySyncObj cannot be made to sync a
write before acknowledging it: its ``journalFile`` is an mmap that is never msync'ed while
running (only on close), so ``pysyncobj`` here is its durable-as-it-can-be configuration
(``journalFile`` and ``fullDumpFile`` set) that still loses acknowledged writes on power loss;
``pysyncobj-msync`` adds an ``mmap.flush()`` (msync) after every journal append, by wrapping
``FileJournal.add`` in this process, which is what a durable journal would have to do.
PySyncObj has no ordered index: ``range`` scans the dict for the prefix, as a user would have to.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import (
    POINT_KEYS,
    RANGE_KEYS,
    RANGE_PREFIX,
    VALUE,
    WRITE_KEYS,
    Target,
    Window,
    bench_keys,
    closed_loop,
    expect,
    key,
)

STORES = ("pykvs", "pysyncobj", "pysyncobj-msync")


class PykvsEmbedded(Target):
    """``pykvs.open_async`` in this loop: calls run the endpoints in-process, no socket."""

    shared = True

    def __init__(self, db: Any) -> None:
        super().__init__("embedded")
        self.db = db

    async def session(self) -> Any:
        return self.db

    async def close_session(self, session: Any) -> None:
        pass

    async def put_key(self, session: Any, k: bytes) -> None:
        expect(await session.put(k, VALUE) is True, "pykvs put", k)

    async def put(self, session: Any, i: int) -> None:
        await self.put_key(session, key(b"write/", i % WRITE_KEYS))

    async def get(self, session: Any, i: int) -> None:
        _, entry = await session.get(key(b"point/", i % POINT_KEYS))
        expect(entry is not None, "pykvs get", entry)

    async def range(self, session: Any, i: int) -> None:
        _, entries = await session.list(RANGE_PREFIX)
        expect(len(entries) == RANGE_KEYS, "pykvs list", len(entries))


class SyncObjDict(Target):
    """A PySyncObj ``ReplDict``: writes through its Raft with a completion callback bridged
    into asyncio; reads from the local replica (PySyncObj has no other read)."""

    shared = True

    def __init__(self, store: Any) -> None:
        super().__init__("embedded")
        self.store = store

    async def session(self) -> Any:
        return self.store

    async def close_session(self, session: Any) -> None:
        pass

    async def put_key(self, session: Any, k: bytes) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()

        def callback(result: Any, error: Any) -> None:
            loop.call_soon_threadsafe(_settle, done, error)

        session.set(k, VALUE, callback=callback)
        await done

    async def put(self, session: Any, i: int) -> None:
        await self.put_key(session, key(b"write/", i % WRITE_KEYS))

    async def get(self, session: Any, i: int) -> None:
        expect(session.get(key(b"point/", i % POINT_KEYS)) is not None, "pysyncobj get", i)

    async def range(self, session: Any, i: int) -> None:
        found = [(k, v) for k, v in session.items() if k.startswith(RANGE_PREFIX)]
        expect(len(found) == RANGE_KEYS, "pysyncobj prefix scan", len(found))


def _settle(done: asyncio.Future[Any], error: Any) -> None:
    if done.done():
        return
    if error:  # FAIL_REASON.SUCCESS is 0
        done.set_exception(RuntimeError(f"pysyncobj set failed: reason {error}"))
    else:
        done.set_result(None)


def syncobj_conf(store: str, data_dir: str) -> Any:
    from pysyncobj import SyncObjConf  # type: ignore[import-untyped]

    if store == "pysyncobj-msync":
        from pysyncobj import journal  # type: ignore[import-untyped]

        add = journal.FileJournal.add

        def add_and_msync(self: Any, command: Any, idx: int, term: int) -> None:
            add(self, command, idx, term)
            self.flush()  # mmap.flush(): msync of the journal

        journal.FileJournal.add = add_and_msync
    return SyncObjConf(journalFile=os.path.join(data_dir, "journal"),
                       fullDumpFile=os.path.join(data_dir, "dump"),
                       dynamicMembershipChange=False)


def start_syncobj(store: str, address: str, peers: list[str], data_dir: str) -> Any:
    from pysyncobj import SyncObj  # type: ignore[import-untyped]
    from pysyncobj.batteries import ReplDict  # type: ignore[import-untyped]

    replicated = ReplDict()
    node = SyncObj(address, peers, syncobj_conf(store, data_dir), consumers=[replicated])
    deadline = time.monotonic() + 60
    while not (node.isReady() and node._getLeader() is not None):
        if time.monotonic() > deadline:
            raise TimeoutError(f"pysyncobj {address}: no leader after 60 s")
        time.sleep(0.01)
    return node, replicated


def sync_loop(put: Any, window: Window) -> None:
    """One blocking write at a time from this thread, inside ``window``."""
    loop = asyncio.new_event_loop()
    sampler = threading.Thread(target=lambda: loop.run_until_complete(window.sample_edges()))
    sampler.start()
    i = 0
    while True:
        started = time.perf_counter()
        if started >= window.end:
            break
        put(key(b"write/", i % WRITE_KEYS))
        i += 1
        window.record(started, time.perf_counter())
    sampler.join()
    loop.close()


async def run_pykvs(args: argparse.Namespace, data_dir: str) -> dict[str, Any]:
    import pykvs

    options: dict[str, Any] = {"port": args.port}
    if args.peer:
        options.update(bootstrap=False, bootstrap_expect=3, join=list(args.peer),
                       node_name="embedded")
    db = await pykvs.open_async(os.path.join(data_dir, "db"), wait_leader=60, **options)
    try:
        target = PykvsEmbedded(db)
        if args.op in ("get", "range"):
            await fill_keys(target)
        window = Window(args.warmup, args.duration, [])
        if args.op == "put-sync":
            def put(k: bytes) -> None:
                future = asyncio.run_coroutine_threadsafe(db.put(k, VALUE), loop)
                expect(future.result() is True, "pykvs put", k)

            loop = asyncio.get_running_loop()
            # The blocking API (pykvs.open) is this: the caller's thread waits on a call run on
            # the server's loop thread; here the loop is this one, the caller another thread.
            await asyncio.to_thread(sync_loop, put, window)
        else:
            await closed_loop(target, args.op, args.in_flight, window)
        return window.report()
    finally:
        await db.close()


async def fill_keys(target: Target) -> None:
    session = await target.session()
    keys = bench_keys()
    for start in range(0, len(keys), 64):
        await asyncio.gather(*(target.put_key(session, k) for k in keys[start:start + 64]))


async def run_syncobj(args: argparse.Namespace, data_dir: str) -> dict[str, Any]:
    address = f"127.0.0.1:{args.port}"
    node, replicated = await asyncio.to_thread(start_syncobj, args.store, address,
                                               list(args.peer), data_dir)
    try:
        target = SyncObjDict(replicated)
        if args.op in ("get", "range"):
            await fill_keys(target)
        window = Window(args.warmup, args.duration, [])
        if args.op == "put-sync":
            def put(k: bytes) -> None:
                replicated.set(k, VALUE, sync=True, timeout=30)

            await asyncio.to_thread(sync_loop, put, window)
        else:
            await closed_loop(target, args.op, args.in_flight, window)
        return window.report()
    finally:
        node.destroy()


def serve_syncobj_node(args: argparse.Namespace, data_dir: str) -> None:
    """A PySyncObj member in its own process, until stdin closes (the bench holds it open)."""
    node, _ = start_syncobj(args.store, f"127.0.0.1:{args.port}", list(args.peer), data_dir)
    print("ready", flush=True)
    sys.stdin.read()
    node.destroy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", choices=STORES)
    parser.add_argument("op", choices=("put", "put-sync", "get", "range", "node"))
    parser.add_argument("--in-flight", type=int, default=1)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--port", type=int, default=0, help="this member's port (PySyncObj "
                        "needs one named; pykvs picks a free one with 0)")
    parser.add_argument("--peer", action="append", default=[], help="another member")
    parser.add_argument("--data-dir", default=None, help="default: a temp dir, removed after")
    args = parser.parse_args(argv)
    if args.store.startswith("pysyncobj") and args.port == 0:
        parser.error("pysyncobj needs --port (its members are named by address)")
    with tempfile.TemporaryDirectory(prefix=f"peers-{args.store}-") as temp:
        data_dir = args.data_dir or temp
        if args.op == "node":
            serve_syncobj_node(args, data_dir)
            return 0
        began = time.perf_counter()
        runner = run_pykvs if args.store == "pykvs" else run_syncobj
        out = {"target": f"{args.store}-embedded", "op": args.op, "in_flight": args.in_flight,
               **asyncio.run(runner(args, data_dir)),
               "total_s": time.perf_counter() - began}
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
