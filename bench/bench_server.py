"""The server's request path, one server on 127.0.0.1 (LMDB with synced commits in a temp dir).

Baseline: ``Status.Ping`` over msgpack-RPC, the floor of any request (framing, one task, the
loop-thread hop of the sync client). Against it: ``KVS.Get`` (a read assembled from stored
encodings), ``KVS.Apply`` one at a time (a Raft round with one fsync each) and 256 puts in
flight (group commit), over RPC and embedded (``pykvs.open``, no socket).

Run: ``pytest bench/bench_server.py --benchmark-only -p no:cacheprovider``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pykvs
from pykvs.server.sync_client import KV

IN_FLIGHT = 256


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KV]:
    path: Path = tmp_path_factory.mktemp("bench-server") / "db"
    with pykvs.open(str(path)) as db:
        db.put("bench/key", b"x" * 100)
        yield db


@pytest.fixture(scope="module")
def remote(embedded: KV) -> Iterator[KV]:
    assert embedded.server is not None
    with pykvs.connect(embedded.server.address) as db:
        yield db


def _many_puts(db: KV, counter: Iterator[int]) -> None:
    async def burst() -> list[Any]:
        return await asyncio.gather(*(db.aio.put(f"bench/many/{next(counter) % 4096}", b"v")
                                      for _ in range(IN_FLIGHT)))

    assert all(db._thread.run(burst()))


def test_rpc_ping_baseline(benchmark: Any, remote: KV) -> None:
    benchmark(remote.call, "Status.Ping")


def test_rpc_get(benchmark: Any, remote: KV) -> None:
    _, entry = benchmark(remote.get, "bench/key")
    assert entry is not None


def test_rpc_put_sequential(benchmark: Any, remote: KV) -> None:
    counter = itertools.count()
    benchmark(lambda: remote.put(f"bench/seq/{next(counter) % 4096}", b"v"))


def test_rpc_put_256_in_flight(benchmark: Any, remote: KV) -> None:
    counter = itertools.count()
    benchmark(_many_puts, remote, counter)


def test_embedded_get(benchmark: Any, embedded: KV) -> None:
    _, entry = benchmark(embedded.get, "bench/key")
    assert entry is not None


def test_embedded_put_256_in_flight(benchmark: Any, embedded: KV) -> None:
    counter = itertools.count()
    benchmark(_many_puts, embedded, counter)
