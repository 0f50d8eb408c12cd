"""A/B of a 3-server pykvs cluster under HTTP writes: plaintext Raft (A) against the same
cluster with ``--encrypt`` or with mutual TLS and server-hostname-free verification (B),
alternated rounds on fresh clusters so that slow drifts of a shared VM hit both sides alike.

    cd bench && python -m peers.ab_cluster [--mode encrypt|tls] [--rounds 4] [--seconds 4]

Each round starts a cluster (``PykvsCluster``), loads its leader over HTTP with
``loadgen.py`` (put x64, then put x1), and reports ops/s and the cluster's CPU per op (all
three servers, from /proc). The medians per side are printed last.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from .fixtures import PykvsCluster
from .loadgen import TARGETS, Window, closed_loop

CASES = ((64, "put x64"), (1, "put x1"))


def _tls_args(root: Path) -> tuple[str, ...]:
    """A CA and one server certificate (made with ``pykvs tls``) every member presents."""
    for args in (["ca", "create"], ["cert", "create", "-server"]):
        subprocess.run([sys.executable, "-m", "pykvs.cli", "tls", *args], cwd=root,
                       check=True, capture_output=True)
    return ("--tls-cert", str(root / "dc1-server-consul-0.pem"),
            "--tls-key", str(root / "dc1-server-consul-0-key.pem"),
            "--tls-ca", str(root / "consul-agent-ca.pem"),
            "--verify-incoming", "--verify-outgoing")


def _side_args(mode: str, root: Path) -> tuple[str, ...]:
    if mode == "encrypt":
        return ("--encrypt", base64.b64encode(os.urandom(32)).decode())
    return _tls_args(root)


def _measure(extra: tuple[str, ...], seconds: float) -> dict[str, tuple[float, float]]:
    out = {}
    with PykvsCluster(3, extra_args=extra) as cluster:
        leader = cluster.leader()
        for in_flight, name in CASES:
            window = Window(0.5, seconds, cluster.pids())
            asyncio.run(closed_loop(TARGETS["pykvs-http"](leader.http), "put", in_flight,
                                    window))
            report = window.report()
            ops = report["ops_per_s"]
            out[name] = (ops, 1e6 * report["server_cpu_s"] / max(1.0, ops * seconds))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("encrypt", "tls"), default="encrypt")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        extra = _side_args(args.mode, Path(tmp))
        for _ in range(args.rounds):
            for side, flags in (("A", ()), ("B", extra)):
                for name, figures in _measure(flags, args.seconds).items():
                    results.setdefault((name, side), []).append(figures)
                    print(name, side, round(figures[0]), round(figures[1]), flush=True)
    print(f"B = --{args.mode}")
    for (name, side), runs in sorted(results.items()):
        print(f"{name} {side}: ops/s median {statistics.median(r[0] for r in runs):,.0f}, "
              f"cluster CPU per op median {statistics.median(r[1] for r in runs):.0f} us")


if __name__ == "__main__":
    main()
