"""Raft servers as real processes (``tests/raft_process.py``) on 127.0.0.1 with LMDB data
directories: kill -9 the leader again and again under continuous writes, and check that every
acknowledged write ends up on every server; restart a server from its data directory, add a
server that must catch up by snapshot, remove one.

Every process runs in its own process group; the fixture kills the groups whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from raft_process import Client, RemoteError

RAFT_PROCESS = Path(__file__).with_name("raft_process.py")
TICK = "0.02"  # seconds per raft tick: elections within a few hundred milliseconds
START_TIMEOUT = 20.0


def run(coro: Coroutine[Any, Any, Any], limit: float) -> Any:
    async def bounded() -> Any:
        task = asyncio.current_task()
        assert task is not None
        deadline = asyncio.get_running_loop().call_later(limit, task.cancel)
        try:
            return await coro
        finally:
            deadline.cancel()

    return asyncio.run(bounded())


async def until(pred: Callable[[], Coroutine[Any, Any, bool]], what: str,
                timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


class Proc:
    """One server process: its id, data directory, addresses and client connection."""

    def __init__(self, root: Path, sid: str, registry: list[asyncio.subprocess.Process]) -> None:
        self.id = sid
        self.dir = root / sid
        self.log_path = root / f"{sid}.log"
        self.raft = "127.0.0.1:0"
        self.client_address = ""
        self.proc: asyncio.subprocess.Process | None = None
        self.client: Client | None = None
        self._registry = registry
        self.starts = 0

    async def start(self, peers: dict[str, str], bootstrap: bool = False,
                    extra: tuple[str, ...] = ()) -> None:
        args = [sys.executable, str(RAFT_PROCESS), "--id", self.id,
                "--data-dir", str(self.dir), "--bind", self.raft, "--tick", TICK,
                "--log-level", "INFO", *extra]
        for peer, address in peers.items():
            if peer != self.id:
                args += ["--peer", f"{peer}={address}"]
        if bootstrap:
            args.append("--bootstrap")
        with open(self.log_path, "ab") as log_file:
            self.proc = await asyncio.create_subprocess_exec(
                *args, stdout=asyncio.subprocess.PIPE, stderr=log_file, start_new_session=True)
        self._registry.append(self.proc)
        self.starts += 1
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), START_TIMEOUT)
        assert line, f"{self.id} exited before listening; see {self.log_path}:\n" + \
            self.log_path.read_text()[-3000:]
        info = json.loads(line)
        self.raft = info["raft"]  # a restart binds the same address the membership holds
        self.client_address = info["client"]
        self.client = await Client.connect(self.client_address)

    async def kill(self) -> None:
        """kill -9 the process group, as a crash."""
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
            self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None

    async def call(self, op: str, **args: Any) -> Any:
        assert self.client is not None, f"{self.id} is not running"
        return await self.client.call(op, **args)

    async def status(self) -> dict[str, Any] | None:
        if self.client is None:
            return None
        try:
            return await self.call("status", timeout=2.0)
        except (TimeoutError, ConnectionError, RemoteError):
            return None


class ProcCluster:
    def __init__(self, root: Path, registry: list[asyncio.subprocess.Process],
                 extra: tuple[str, ...] = ()) -> None:
        self.root = root
        self.registry = registry
        self.extra = extra
        self.procs: dict[str, Proc] = {}

    async def close(self) -> None:
        for proc in self.procs.values():
            await proc.kill()

    def peers(self) -> dict[str, str]:
        return {p.id: p.raft for p in self.procs.values() if p.raft != "127.0.0.1:0"}

    async def found(self, n: int) -> None:
        first = self.procs["n1"] = Proc(self.root, "n1", self.registry)
        await first.start({}, bootstrap=True, extra=self.extra)
        await self.leader()
        for k in range(2, n + 1):
            await self.join(f"n{k}")

    async def join(self, sid: str, extra: tuple[str, ...] = ()) -> Proc:
        proc = self.procs[sid] = Proc(self.root, sid, self.registry)
        await proc.start(self.peers(), extra=self.extra + extra)
        try:
            await self.on_leader("add_voter", id=sid, address=proc.raft)
        except RemoteError as exc:
            # An attempt whose answer was lost to an election may have committed after all.
            if "already a voter" not in str(exc):
                raise
        return proc

    async def restart(self, proc: Proc) -> None:
        await proc.start(self.peers(), extra=self.extra)

    async def leader(self, timeout: float = 20.0) -> Proc:
        """The running server that says it leads (the highest term wins a tie)."""
        found: list[Proc] = []

        async def one() -> bool:
            best: tuple[int, Proc] | None = None
            for proc in self.procs.values():
                st = await proc.status()
                if st is not None and st["role"] == "leader" and (
                        best is None or st["term"] > best[0]):
                    best = (st["term"], proc)
            if best is not None:
                found[:] = [best[1]]
            return best is not None

        await until(one, "a leader", timeout)
        return found[0]

    async def on_leader(self, op: str, timeout: float = 30.0, **args: Any) -> Any:
        """Run ``op`` on the leader, retrying through elections and dead connections."""
        deadline = time.monotonic() + timeout
        while True:
            leader = await self.leader(max(0.5, deadline - time.monotonic()))
            try:
                return await leader.call(op, **args)
            except (TimeoutError, RemoteError, ConnectionError) as exc:
                if isinstance(exc, RemoteError) and exc.name not in RETRYABLE:
                    raise
                assert time.monotonic() < deadline, f"{op} kept failing: {exc!r}"
                await asyncio.sleep(0.05)

    async def converged(self, acked: dict[bytes, bytes], procs: list[Proc] | None = None,
                        timeout: float = 30.0) -> None:
        targets = procs if procs is not None else [p for p in self.procs.values() if p.running]
        missing: dict[str, int] = {}

        async def check() -> bool:
            missing.clear()
            for proc in targets:
                items = dict((await proc.call("dump", prefix=b""))["items"])
                bad = sum(1 for k, v in acked.items() if items.get(k) != v)
                if bad:
                    missing[proc.id] = bad
            return not missing

        with contextlib.suppress(AssertionError):
            await until(check, "convergence", timeout)
        assert not missing, f"acknowledged writes missing or wrong per server: {missing}"


RETRYABLE = {"NotLeaderError", "LeadershipLostError", "ProposalDroppedError",
             "RaftTimeoutError", "TimeoutError", "NodeClosedError"}


@pytest.fixture
def registry() -> Iterator[list[asyncio.subprocess.Process]]:
    """Every process started by a test; their process groups are killed at the end."""
    procs: list[asyncio.subprocess.Process] = []
    yield procs
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    for proc in procs:
        deadline = time.monotonic() + 10
        while proc.returncode is None and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(proc.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                break
            time.sleep(0.01)


class Writers:
    """Clients writing unique keys without pause to whoever leads; records what was acked."""

    def __init__(self, cluster: ProcCluster, n: int) -> None:
        self.cluster = cluster
        self.acked: dict[bytes, bytes] = {}
        self.attempts = 0
        self.failures = 0
        self._stop = asyncio.Event()
        self._tasks = [asyncio.ensure_future(self._write(w)) for w in range(n)]

    async def _write(self, writer: int) -> None:
        seq = 0
        target: Proc | None = None
        while not self._stop.is_set():
            if target is None or not target.running:
                target = await self._find_leader()
                if target is None:
                    await asyncio.sleep(0.02)
                    continue
            key, value = b"w%d-%06d" % (writer, seq), b"%d" % seq
            seq += 1
            self.attempts += 1
            try:
                if await target.call("set", key=key, value=value, timeout=10.0) is True:
                    self.acked[key] = value
            except (TimeoutError, RemoteError, ConnectionError, AssertionError) as exc:
                self.failures += 1
                leader = exc.leader if isinstance(exc, RemoteError) else None
                target = self.cluster.procs.get(leader) if leader else None
                if target is None:
                    await asyncio.sleep(0.02)

    async def _find_leader(self) -> Proc | None:
        for proc in list(self.cluster.procs.values()):
            st = await proc.status()
            if st is not None and st["role"] == "leader":
                return proc
        return None

    async def wait_acks(self, more: int, timeout: float = 20.0) -> None:
        goal = len(self.acked) + more

        async def enough() -> bool:
            return len(self.acked) >= goal

        await until(enough, f"{more} more acknowledged writes", timeout)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def kill_leader_rounds(cluster: ProcCluster, rounds: int, writers: Writers) -> list[str]:
    killed = []
    for _ in range(rounds):
        await writers.wait_acks(20)
        leader = await cluster.leader()
        await leader.kill()
        killed.append(leader.id)
        # The others elect a new leader, which takes writes, before the old one comes back.
        new = await cluster.leader()
        assert new is not leader
        await writers.wait_acks(5)
        await cluster.restart(leader)
    return killed


def kill_test(tmp_path: Path, registry: list[asyncio.subprocess.Process], servers: int,
              rounds: int, limit: float) -> None:
    async def main() -> None:
        cluster = ProcCluster(tmp_path, registry, extra=("--snapshot-threshold", "500",
                                                         "--trailing", "100"))
        try:
            await scenario(cluster)
        finally:
            await cluster.close()

    async def scenario(cluster: ProcCluster) -> None:
        await cluster.found(servers)
        writers = Writers(cluster, 4)
        try:
            killed = await kill_leader_rounds(cluster, rounds, writers)
            await writers.wait_acks(20)
        finally:
            await writers.stop()
        assert len(killed) == rounds
        assert len(writers.acked) >= 25 * rounds
        await cluster.converged(writers.acked)
        # Every server agrees on one history: the same commit point once writes stop.
        index = await cluster.on_leader("barrier")

        async def all_applied() -> bool:
            for proc in cluster.procs.values():
                st = await proc.status()
                if st is None or st["applied_index"] < index:
                    return False
            return True

        await until(all_applied, f"every server to apply up to {index}")
        dumps = [(await p.call("dump", prefix=b""))["items"] for p in cluster.procs.values()]
        assert all(d == dumps[0] for d in dumps)

    run(main(), limit)


def test_kill_the_leader_ten_times_under_writes(tmp_path: Path, registry: list[Any]) -> None:
    kill_test(tmp_path, registry, servers=3, rounds=10, limit=150)


@pytest.mark.slow
def test_kill_the_leader_many_times_five_servers(tmp_path: Path, registry: list[Any]) -> None:
    kill_test(tmp_path, registry, servers=5, rounds=100, limit=1200)


def test_restart_catch_up_snapshot_join_and_remove(tmp_path: Path, registry: list[Any]) -> None:
    async def main() -> None:
        cluster = ProcCluster(tmp_path, registry, extra=("--trailing", "10"))
        try:
            await scenario(cluster)
        finally:
            await cluster.close()

    async def scenario(cluster: ProcCluster) -> None:
        await cluster.found(3)
        acked: dict[bytes, bytes] = {}

        async def put(count: int, tag: bytes) -> None:
            for i in range(count):
                key = b"%s-%04d" % (tag, i)
                assert await cluster.on_leader("set", key=key, value=tag) is True
                acked[key] = tag

        await put(30, b"a")
        # A follower crashes, misses writes, and comes back from its data directory.
        leader = await cluster.leader()
        follower = next(p for p in cluster.procs.values() if p is not leader)
        await follower.kill()
        await put(60, b"b")
        await cluster.restart(follower)
        await cluster.converged(acked, [follower])
        st = await follower.status()
        assert st is not None and st["snapshots_installed"] == 0  # caught up from the log

        # Compact the leader's log; a new server then can only catch up by snapshot.
        snap_index = await cluster.on_leader("snapshot")
        n4 = await cluster.join("n4")
        await put(10, b"c")
        await cluster.converged(acked)
        st = await n4.status()
        assert st is not None and st["snapshots_installed"] >= 1
        assert st["snapshot_index"] >= snap_index
        assert sorted(st["voters"]) == ["n1", "n2", "n3", "n4"]

        # Remove a server; the rest carry on, and its departure is in everyone's membership.
        await cluster.on_leader("remove", id="n4")
        await n4.kill()
        del cluster.procs["n4"]
        await put(10, b"d")
        await cluster.converged(acked)
        for proc in cluster.procs.values():
            st = await proc.status()
            assert st is not None and sorted(st["voters"]) == ["n1", "n2", "n3"]

    run(main(), 120)
