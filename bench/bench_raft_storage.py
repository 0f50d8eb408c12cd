"""Synced write throughput of the Raft log on LMDB.

The floor is raw LMDB: one synced write transaction per batch of 100-byte values (what any log
on this disk must pay). Against it, the same batches through ``LMDBLogStore.save()`` (CRC'd
records, the writer thread, one sync per call) and through ``save_async()`` with 64 single-entry
saves in flight (coalesced into shared transactions: group commit).

Run: pytest bench/bench_raft_storage.py --benchmark-only -p no:cacheprovider
Each benchmark's ``extra_info`` has ``entries_per_round``: entries/s = OPS x entries_per_round.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import lmdb
import pytest

from pykvs.raft.storage import LMDBStorage
from pykvs.raft.types import Entry, HardState

VALUE = b"v" * 100


@pytest.mark.parametrize("batch", [1, 64])
def test_raw_lmdb_synced_batch(benchmark, tmp_path: Path, batch: int) -> None:
    env = lmdb.open(str(tmp_path / "raw"), map_size=1 << 30, sync=True, metasync=True)
    keys = itertools.count(1)

    def write_batch() -> None:
        with env.begin(write=True) as txn:
            txn.cursor().putmulti(
                [(next(keys).to_bytes(8, "big"), VALUE) for _ in range(batch)], append=True)

    benchmark.extra_info["entries_per_round"] = batch
    benchmark(write_batch)
    env.close()


@pytest.mark.parametrize("batch", [1, 64])
def test_save_synced_batch(benchmark, tmp_path: Path, batch: int) -> None:
    store = LMDBStorage(tmp_path / "db")
    indexes = itertools.count(1)

    def save_batch() -> None:
        lo = next(indexes)
        for _ in range(batch - 1):
            next(indexes)
        store.log.save(HardState(1, "a", 0), [Entry(i, 1, data=VALUE)
                                              for i in range(lo, lo + batch)])

    benchmark.extra_info["entries_per_round"] = batch
    benchmark(save_batch)
    store.close()


def test_save_async_64_in_flight(benchmark, tmp_path: Path) -> None:
    store = LMDBStorage(tmp_path / "db")
    indexes = itertools.count(1)
    loop = asyncio.new_event_loop()

    async def round_of_64() -> None:
        futs = []
        for _ in range(64):
            i = next(indexes)
            futs.append(store.log.save_async(HardState(1, "a", i), [Entry(i, 1, data=VALUE)]))
        await asyncio.gather(*futs)

    before = store.stats()
    benchmark(lambda: loop.run_until_complete(round_of_64()))
    after = store.stats()
    benchmark.extra_info["entries_per_round"] = 64
    benchmark.extra_info["saves_per_commit"] = round(
        (after["saves"] - before["saves"]) / max(1, after["commits"] - before["commits"]), 1)
    loop.close()
    store.close()
