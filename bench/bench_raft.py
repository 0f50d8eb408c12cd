"""Committed, synced writes per second through Raft, against the raw LMDB floor of the same run.

    pytest bench/bench_raft.py --benchmark-only -p no:cacheprovider

Servers are real processes (``tests/raft_process.py``) on 127.0.0.1, each with its own
LMDB directory; the client pipelines ``set`` requests over one connection. A write counts once
``set`` returned True: committed (durable on a quorum) and applied by the leader's FSM.

- ``raft[1 server|3 servers, 1|64 in flight]``: writes per second (``extra_info``).
- ``lmdb floor[1|64]``: the same number of 100-byte writes straight into LMDB, one synced
  transaction per batch of 1 or 64: no Raft can beat it. Each raft case also times the floor
  right before each of its rounds (untimed), and ``ratio_to_floor`` compares the medians, so
  what the replication, the framing and Python cost on top of the disk is measured against the
  disk as it was at that moment (it is shared, and its fsync latency drifts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest
from ratios import median_seconds

# The bare Raft server process and its client are the tests' plumbing (tests/raft_process.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from raft_process import Client

RAFT_PROCESS = Path(__file__).resolve().parent.parent / "tests" / "raft_process.py"
VALUE = b"v" * 100
WRITES = {1: 150, 64: 3000}  # writes per round, by writes in flight
ROUNDS = 5
SUMMARY: list[str] = []


class ProcessCluster:
    """n server processes founded by add_voter, and an event loop to drive a client in."""

    def __init__(self, root: Path, n: int) -> None:
        self.root = root
        self.procs: list[subprocess.Popen[str]] = []
        self.loop = asyncio.new_event_loop()
        self.leader: Client | None = None
        self.servers = n
        try:
            self.loop.run_until_complete(self._found(n))
        except BaseException:
            self.close()
            raise

    def _spawn(self, sid: str, *extra: str) -> dict[str, Any]:
        proc = subprocess.Popen(
            [sys.executable, str(RAFT_PROCESS), "--id", sid, "--data-dir",
             str(self.root / sid), "--tick", "0.05", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, f"server {sid} did not start"
        return json.loads(line)

    async def _found(self, n: int) -> None:
        first = self._spawn("n1", "--bootstrap")
        self.leader = await Client.connect(first["client"])
        deadline = time.monotonic() + 30
        while (await self.leader.call("status"))["role"] != "leader":
            assert time.monotonic() < deadline, "no leader"
            await asyncio.sleep(0.02)
        for k in range(2, n + 1):
            info = self._spawn(f"n{k}", "--peer", f"n1={first['raft']}")
            await self.leader.call("add_voter", id=f"n{k}", address=info["raft"])

    def write(self, count: int, in_flight: int, tag: str) -> None:
        async def writer(w: int) -> None:
            assert self.leader is not None
            for i in range(w, count, in_flight):
                ok = await self.leader.call("set", key=f"{tag}/{i}".encode(), value=VALUE)
                assert ok is True

        async def all_writers() -> None:
            await asyncio.gather(*(writer(w) for w in range(in_flight)))

        self.loop.run_until_complete(all_writers())

    def leader_commits(self) -> int:
        """Durable LMDB commits (fsyncs) the leader has made so far."""
        assert self.leader is not None
        status = self.loop.run_until_complete(self.leader.call("status"))
        return int(status["storage"]["commits"])

    def close(self) -> None:
        if self.leader is not None:
            self.loop.run_until_complete(self.leader.close())
        self.loop.close()
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.procs:
            proc.wait(10)


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print writes/s (median round) of every case once the module is done."""
    yield
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if reporter is None or capture is None or not SUMMARY:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line("committed, synced writes per second (median round):")
        for line in SUMMARY:
            reporter.write_line("  " + line)


@pytest.fixture(scope="module", params=[1, 3], ids=["1 server", "3 servers"])
def cluster(request: pytest.FixtureRequest) -> Iterator[ProcessCluster]:
    with tempfile.TemporaryDirectory(prefix="bench-raft-") as root:
        cluster = ProcessCluster(Path(root), request.param)
        cluster.servers = request.param
        try:
            yield cluster
        finally:
            cluster.close()


def lmdb_floor(path: str, count: int, batch: int, tag: int) -> None:
    env = lmdb.open(path, map_size=1 << 30, sync=True, metasync=True)
    try:
        for start in range(0, count, batch):
            with env.begin(write=True) as txn:
                for i in range(start, min(count, start + batch)):
                    txn.put(b"%d/%d" % (tag, i), VALUE)
    finally:
        env.close()


@pytest.mark.parametrize("in_flight", [1, 64])
def test_lmdb_floor(benchmark: Any, in_flight: int, tmp_path: Path) -> None:
    count = WRITES[in_flight]
    rounds = iter(range(1000))
    benchmark.pedantic(lambda: lmdb_floor(str(tmp_path), count, in_flight, next(rounds)),
                       rounds=ROUNDS, iterations=1)
    rate = count / median_seconds(benchmark)
    benchmark.extra_info.update(writes=count, writes_per_s=round(rate))
    SUMMARY.append(f"LMDB floor, one synced transaction per {in_flight:>2} writes: {rate:7.0f}/s")


@pytest.mark.parametrize("in_flight", [1, 64])
def test_raft(benchmark: Any, cluster: ProcessCluster, in_flight: int, tmp_path: Path) -> None:
    count = WRITES[in_flight]
    rounds = iter(range(1000))
    floor_times: list[float] = []

    def floor_round() -> None:
        # The disk is shared and its fsync latency drifts: time the floor right before each
        # round (untimed by the benchmark) so the ratio compares like with like.
        start = time.perf_counter()
        lmdb_floor(str(tmp_path), count, in_flight, len(floor_times))
        floor_times.append(time.perf_counter() - start)

    cluster.write(20, in_flight, "warm-up")
    commits_before = cluster.leader_commits()
    benchmark.pedantic(lambda: cluster.write(count, in_flight, f"r{next(rounds)}"),
                       setup=floor_round, rounds=ROUNDS, iterations=1)
    fsyncs = (cluster.leader_commits() - commits_before) / (count * ROUNDS)
    rate = count / median_seconds(benchmark)
    floor = count / statistics.median(floor_times)
    benchmark.extra_info.update(writes=count, writes_per_s=round(rate),
                                floor_writes_per_s=round(floor),
                                ratio_to_floor=round(rate / floor, 3),
                                leader_fsyncs_per_write=round(fsyncs, 3))
    SUMMARY.append(
        f"raft, {cluster.servers} server{'s' if cluster.servers > 1 else ' '}, {in_flight:>2} "
        f"in flight: {rate:7.0f}/s; LMDB floor beside it {floor:7.0f}/s "
        f"(ratio {rate / floor:.3f}); leader fsyncs per write {fsyncs:.2f}")
