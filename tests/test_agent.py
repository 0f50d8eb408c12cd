"""`pykvs agent` as real processes on 127.0.0.1 with ephemeral ports: start, write, SIGTERM,
restart, read back; --bootstrap-expect 3 with three agents; kill -9 of the leader agent under
load loses no acknowledged write. Every process is killed at the end of its test."""

from __future__ import annotations

import asyncio
import http.client
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import pykvs
from pykvs.server.client import AsyncKV
from pykvs.server.rpc import RPCError


class Agent:
    """One `pykvs agent` process; ``rpc`` is the address it printed on start-up."""

    def __init__(self, root: Path, name: str, *flags: str) -> None:
        self.name = name
        self.data_dir = root / name
        self.args = [sys.executable, "-m", "pykvs.cli", "agent", "--node", name,
                     "--data-dir", str(self.data_dir), "--rpc-port", "0", "--http-port", "0",
                     "--rpc-hold-timeout", "5", *flags]
        self.log = open(root / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self.log)
        self.rpc, self.http = self._read_addresses(timeout=30)

    def _read_addresses(self, timeout: float) -> tuple[str, str]:
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()),
                                  daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        assert line and line[0], f"{self.name}: no start-up line (exit {self.proc.poll()})"
        fields = dict(part.split("=", 1) for part in line[0].decode().split())
        assert set(fields) == {"http", "rpc"}, line
        return fields["rpc"], fields["http"]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.log.close()
        return code


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for agent in started:
        agent.stop(signal.SIGKILL)


def run(coro: object, limit: float = 90) -> object:
    return asyncio.run(asyncio.wait_for(coro, limit))  # type: ignore[arg-type]


async def wait_cluster(clients: list[AsyncKV], size: int, timeout: float = 30) -> str:
    """Until every agent names the same leader among ``size`` peers; returns its address."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            leaders = {await c.leader() for c in clients}
            peers = [await c.peers() for c in clients]
            if len(leaders) == 1 and "" not in leaders and all(len(p) == size for p in peers):
                return leaders.pop()
        except (RPCError, OSError, ConnectionError):
            pass
        assert time.monotonic() < deadline, "the agents did not form a cluster"
        await asyncio.sleep(0.1)


def test_agent_start_write_sigterm_restart_read(tmp_path: Path, agents: list[Agent]) -> None:
    agent = Agent(tmp_path, "a1")
    agents.append(agent)

    async def write() -> None:
        async with await pykvs.connect_async(agent.rpc) as db:
            await wait_cluster([db], 1)
            for i in range(20):
                assert await db.put(f"k/{i}", f"v{i}")
            assert await db.delete("k/0")

    run(write())
    assert agent.stop(signal.SIGTERM) == 0
    again = Agent(tmp_path, "a1")
    agents.append(again)
    assert again.rpc == agent.rpc  # port 0 came back to the port the membership knows

    async def read() -> None:
        async with await pykvs.connect_async(again.rpc) as db:
            await wait_cluster([db], 1)
            _, entries = await db.list("k/")
            assert sorted(e.key for e in entries) == sorted(f"k/{i}".encode()
                                                            for i in range(1, 20))
            assert all(e.value == b"v" + e.key[2:] for e in entries)

    run(read())
    assert again.stop(signal.SIGINT) == 0


def test_bootstrap_expect_three_and_kill_leader_under_load(tmp_path: Path,
                                                           agents: list[Agent]) -> None:
    first = Agent(tmp_path, "a1", "--bootstrap-expect", "3")
    agents.append(first)
    for name in ("a2", "a3"):
        agents.append(Agent(tmp_path, name, "--bootstrap-expect", "3", "--join", first.rpc))
    by_address = {a.rpc: a for a in agents}

    async def scenario() -> None:
        clients = [await pykvs.connect_async(a.rpc, timeout=15) for a in agents]
        try:
            leader = await wait_cluster(clients, 3)
            acked: dict[str, bytes] = {}
            pairs = list(zip(agents, clients, strict=True))

            async def writer(wid: int) -> None:
                for i in range(60):
                    key, value = f"w{wid}/{i}", f"{wid}-{i}".encode()
                    for attempt in range(50):
                        agent, client = pairs[(wid + i + attempt) % len(pairs)]
                        if agent.proc.poll() is not None:
                            continue  # the killed one
                        try:
                            if await client.put(key, value):
                                acked[key] = value
                                break
                        except (TimeoutError, RPCError, OSError, ConnectionError):
                            await asyncio.sleep(0.05)

            writers = [asyncio.ensure_future(writer(w)) for w in range(4)]
            deadline = time.monotonic() + 30
            while len(acked) < 60:
                assert time.monotonic() < deadline, "writes did not get going"
                await asyncio.sleep(0.01)
            os.kill(by_address[leader].proc.pid, signal.SIGKILL)
            await asyncio.gather(*writers)
            assert len(acked) >= 200  # most writes got through despite the failover
            survivors = [c for a, c in pairs if a.rpc != leader]
            await wait_cluster(survivors, 3)
            for client in survivors:
                _, entries = await client.list("w", consistency="consistent")
                found = {e.key.decode(): e.value for e in entries}
                lost = {k for k in acked if found.get(k) != acked[k]}
                assert not lost, f"acknowledged writes lost: {sorted(lost)[:10]}"
        finally:
            for client in clients:
                await client.close()

    run(scenario(), 120)


def test_two_datacenters_joined_by_join_wan(tmp_path: Path, agents: list[Agent]) -> None:
    east = Agent(tmp_path, "east", "--datacenter", "dc1")
    agents.append(east)
    west = Agent(tmp_path, "west", "--datacenter", "dc2", "--join-wan", f"dc1={east.rpc}")
    agents.append(west)

    async def scenario() -> None:
        async with await pykvs.connect_async(west.rpc) as db:
            await wait_cluster([db], 1)
            assert await db.put("from-west", b"hello", dc="dc1")
            _, entry = await db.get("from-west", dc="dc1")
            assert entry is not None and entry.value == b"hello"
            _, local = await db.get("from-west")
            assert local is None  # dc2's own store never saw it
            assert await db.leader(dc="dc1") == east.rpc
        async with await pykvs.connect_async(east.rpc) as db:
            _, entry = await db.get("from-west")
            assert entry is not None and entry.value == b"hello"

    run(scenario())


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_agent_serves_on_either_event_loop(tmp_path: Path, agents: list[Agent],
                                           event_loop: str) -> None:
    """--event-loop: the default (auto) takes uvloop where it is installed, so the rest of
    the suite runs on it; asyncio's own loop serves the same API (both fronts)."""
    if event_loop == "uvloop":
        pytest.importorskip("uvloop")
    agent = Agent(tmp_path, "a1", "--event-loop", event_loop)
    agents.append(agent)
    host, port = agent.http.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        deadline = time.monotonic() + 30
        while True:  # a write before the first election is refused (No cluster leader)
            connection.request("PUT", "/v1/kv/loop/k", body=b"v1")
            response = connection.getresponse()
            body = response.read()
            if response.status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert (response.status, body) == (200, b"true")
        connection.request("GET", "/v1/kv/loop/k?raw")  # fast front
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b"v1")
        connection.request("GET", "/v1/kv/loop/?keys")  # aiohttp's front
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b'["loop/k"]')
    finally:
        connection.close()
    assert agent.stop(signal.SIGTERM) == 0
    assert f"event loop: {event_loop}" in (tmp_path / "a1.log").read_text()
    auto = Agent(tmp_path, "a2")
    agents.append(auto)
    assert auto.stop(signal.SIGTERM) == 0
    expected = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    assert f"event loop: {expected}" in (tmp_path / "a2.log").read_text()


def test_bad_flags_exit_with_a_message(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pykvs.cli", "agent", "--join-wan", "dc2",
                           "--data-dir", str(tmp_path / "x")], capture_output=True, timeout=30)
    assert done.returncode == 2 and b"--join-wan wants DC=HOST:PORT" in done.stderr
