"""Process fixtures for the peer comparison: etcd members and pykvs agents on 127.0.0.1.

Every store runs as its own processes in a temp dir, with ephemeral ports, and is stopped (then
killed if it lingers) by ``close()``. Both keep their default durability, which is a synced
log write before a write is acknowledged:

- etcd fsyncs its WAL on every Raft Ready (``wal.Sync`` in ``raftNode.start``) and offers no
  flag to turn that off in 3.4 (``--unsafe-no-fsync`` came in 3.5); its bbolt backend commits
  every 100 ms or 10,000 writes (``--backend-batch-interval`` / ``-limit``), which does not
  affect durability because the WAL is replayed on start.
- pykvs writes each Ready in one LMDB transaction opened with ``sync=True, metasync=True``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .loadgen import cpu_seconds

ETCD = shutil.which("etcd")
ETCDCTL = shutil.which("etcdctl")
START_TIMEOUT = 60.0


def free_port() -> int:
    """A port nothing listens on now (etcd needs its ports named up front)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout: float = START_TIMEOUT,
             interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; raise naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except (OSError, ValueError, KeyError) as exc:  # not up yet
            last = exc
        else:
            if result:
                return result
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s (last error: {last!r})")


def http_json(url: str, body: Any = None, timeout: float = 5.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return json.loads(reply.read() or b"null")


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


class Process:
    """One server process with its log file; ``stop()`` sends SIGTERM, then SIGKILL."""

    def __init__(self, name: str, args: list[str], log_path: Path,
                 hold_stdin: bool = False) -> None:
        self.name = name
        self.args = args
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        # hold_stdin: the process runs until its stdin closes (embedded.py ... node).
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log,
                                     stdin=subprocess.PIPE if hold_stdin else subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read_line(self, timeout: float) -> str:
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()),
                                  daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not line or not line[0]:
            raise RuntimeError(f"{self.name}: no start-up line within {timeout:.0f}s "
                               f"(exit code {self.proc.poll()}); see {self.log.name}")
        return line[0].decode()

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


@dataclass
class Member:
    """One server of a cluster under test, with the addresses a load generator needs."""

    name: str
    http: str  # host:port of the HTTP API (pykvs' Consul API, etcd's JSON gateway)
    rpc: str  # host:port of the native protocol (pykvs msgpack-RPC, etcd gRPC)
    process: Process


class Cluster:
    """n servers of one store; ``leader()`` is the member writes should go to."""

    store = ""

    def __init__(self, size: int, root: Path | None = None) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size = size
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix=f"peers-{self.store}-")) if root is None \
            else root
        self.members: list[Member] = []

    def pids(self) -> list[int]:
        return [m.process.pid for m in self.members]

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())

    def leader(self) -> Member:
        raise NotImplementedError

    def stop_processes(self) -> None:
        """Stop the servers but keep their data dirs (for a restart)."""
        for member in self.members:
            member.process.stop()
        self.members.clear()

    def close(self) -> None:
        self.stop_processes()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EtcdCluster(Cluster):
    """``size`` etcd members on 127.0.0.1 (static bootstrap, one temp data dir each)."""

    store = "etcd"

    def __init__(self, size: int, root: Path | None = None, start: bool = True) -> None:
        if ETCD is None:
            raise RuntimeError("etcd is not installed (run bench/peers/setup.sh)")
        super().__init__(size, root)
        self.client_ports = [free_port() for _ in range(size)]
        self.peer_ports = [free_port() for _ in range(size)]
        self.names = [f"etcd{i}" for i in range(size)]
        self.initial_cluster = ",".join(f"{n}=http://127.0.0.1:{p}"
                                        for n, p in zip(self.names, self.peer_ports, strict=True))
        if start:
            self.start(state="new")

    def _args(self, i: int, state: str) -> list[str]:
        client = f"http://127.0.0.1:{self.client_ports[i]}"
        peer = f"http://127.0.0.1:{self.peer_ports[i]}"
        return [ETCD or "etcd", "--name", self.names[i],
                "--data-dir", str(self.root / self.names[i]),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", self.initial_cluster,
                "--initial-cluster-state", state, "--initial-cluster-token", "pykvs-bench",
                "--logger", "zap", "--log-level", "error"]

    def start(self, state: str = "existing") -> float:
        """Start every member; returns the seconds until all answer a linearizable read."""
        began = time.monotonic()
        for i, name in enumerate(self.names):
            self.members.append(Member(
                name, f"127.0.0.1:{self.client_ports[i]}", f"127.0.0.1:{self.client_ports[i]}",
                Process(name, self._args(i, state), self.root / f"{name}.log")))
        for member in self.members:
            # A range is linearizable by default: it answers only once a leader serves.
            wait_for(f"etcd member {member.name}", lambda m=member: http_json(
                f"http://{m.http}/v3/kv/range", {"key": b64("ready")}, timeout=2)["header"])
        return time.monotonic() - began

    def leader(self) -> Member:
        def find() -> Member | None:
            for member in self.members:
                status = http_json(f"http://{member.http}/v3/maintenance/status", {})
                if status.get("leader") and status["leader"] == status["header"]["member_id"]:
                    return member
            return None

        return wait_for("etcd leader", find)


class PykvsCluster(Cluster):
    """``size`` ``pykvs agent`` processes; three form a cluster with --bootstrap-expect."""

    store = "pykvs"

    def __init__(self, size: int, root: Path | None = None, start: bool = True,
                 expect: int | None = None, extra_args: tuple[str, ...] = ()) -> None:
        super().__init__(size, root)
        self.names = [f"pykvs{i}" for i in range(size)]
        self.extra_args = list(extra_args)  # more `pykvs agent` flags for every member
        # expect > size: the other members are started elsewhere (an embedded server).
        self.expect = size if expect is None else expect
        if start:
            self.start(wait=self.expect == size)

    def _args(self, i: int, join: str | None) -> list[str]:
        args = [sys.executable, "-m", "pykvs.cli", "agent", "--node", self.names[i],
                "--data-dir", str(self.root / self.names[i]), "--rpc-port", "0",
                "--http-port", "0", "--log-level", "warn", *self.extra_args]
        if self.expect > 1:
            args += ["--bootstrap-expect", str(self.expect)]
        if join:
            args += ["--join", join]
        return args

    def start(self, wait: bool = True) -> float:
        """Start every agent; returns the seconds until every one serves a read with a leader
        known (with ``wait``). A restart reuses the recorded RPC ports (server.json)."""
        began = time.monotonic()
        join = None
        for i, name in enumerate(self.names):
            process = Process(name, self._args(i, join), self.root / f"{name}.log")
            fields = dict(part.split("=", 1) for part in process.read_line(START_TIMEOUT).split())
            self.members.append(Member(name, fields["http"], fields["rpc"], process))
            join = join or fields["rpc"]
        for member in self.members if wait else []:
            wait_for(f"pykvs agent {member.name}",
                     lambda m=member: http_json(f"http://{m.http}/v1/status/leader"))
        return time.monotonic() - began

    def leader(self) -> Member:
        by_rpc = {m.rpc: m for m in self.members}
        return wait_for("pykvs leader", lambda: by_rpc.get(
            http_json(f"http://{self.members[0].http}/v1/status/leader")))


class SyncObjPeers(Cluster):
    """Two PySyncObj members in processes of their own (``embedded.py STORE node``); the third
    is the embedded one under load, started with ``embedded_args()``."""

    store = "pysyncobj"

    def __init__(self, variant: str, root: Path | None = None) -> None:
        super().__init__(2, root)
        self.ports = [free_port() for _ in range(3)]
        addresses = [f"127.0.0.1:{port}" for port in self.ports]
        script = str(Path(__file__).with_name("embedded.py"))
        processes = []
        for i in (1, 2):
            args = [sys.executable, script, variant, "node", "--port", str(self.ports[i]),
                    "--data-dir", str(self.root / f"node{i}"),
                    *(x for j, a in enumerate(addresses) if j != i for x in ("--peer", a))]
            (self.root / f"node{i}").mkdir()
            processes.append(Process(f"pysyncobj{i}", args, self.root / f"node{i}.log",
                                     hold_stdin=True))
        for i, process in enumerate(processes, start=1):
            self.members.append(Member(process.name, addresses[i], addresses[i], process))
            if process.read_line(START_TIMEOUT).strip() != "ready":
                raise RuntimeError(f"{process.name} did not start; see {process.log.name}")

    def embedded_args(self) -> list[str]:
        return ["--port", str(self.ports[0]), "--peer", self.members[0].rpc,
                "--peer", self.members[1].rpc]
