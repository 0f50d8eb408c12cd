"""Table and plots of a peer-comparison run (bench/bench_peers.py).

    python bench/plot_peers.py [OUT_DIR] [--plots DIR]

Reads the JSON reports bench_peers.py wrote (default bench/peers/out/, or $PYKVS_PEERS_OUT),
prints a Markdown table with every pykvs figure beside its peer's and the ratio, and writes
PNGs (default bench/peers/plots/): write throughput against writes in flight for every store,
and latency distributions (CDFs from the generator's histograms).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# (pykvs run, peer run, what is compared, target as "pykvs / peer" or None)
PAIRS: list[tuple[str, str, str]] = []
for _servers in (1, 3):
    for _pykvs, _peer in (("pykvs-http", "etcd-http"), ("pykvs-rpc", "etcd-grpc")):
        for _op in ("put-x1", "put-x64", "get-x1", "range-x1"):
            PAIRS.append((f"{_pykvs}-{_servers}srv-{_op}", f"{_peer}-{_servers}srv-{_op}",
                          "ops_per_s"))
    for _peer in ("pysyncobj", "pysyncobj-msync"):
        for _op in ("put-sync-x1", "put-x64", "get-x1", "range-x1"):
            if _servers == 1 or _op.startswith("put"):
                PAIRS.append((f"pykvs-embedded-{_servers}srv-{_op}",
                              f"{_peer}-embedded-{_servers}srv-{_op}", "ops_per_s"))
PAIRS.append(("pykvs-1srv-restart", "etcd-1srv-restart", "restart_s"))

TARGETS = {  # pykvs / peer throughput the issue asks for
    "pykvs-http-1srv-put-x64": 1.5, "pykvs-rpc-1srv-put-x64": 1.0,
    "pykvs-http-3srv-put-x64": 1.0, "pykvs-rpc-3srv-put-x64": 1.0,
    "pykvs-embedded-1srv-put-x64": 5.0,
}


def load(out_dir: Path) -> dict[str, dict[str, Any]]:
    runs = {}
    for path in sorted(out_dir.glob("*.json")):
        report = json.loads(path.read_text())
        runs[report["name"]] = report
    if not runs:
        raise SystemExit(f"no reports in {out_dir}: run bench/bench_peers.py -m peers first")
    return runs


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.2f}"


def table(runs: dict[str, dict[str, Any]]) -> str:
    lines = ["| workload | pykvs | p50 / p99 ms | peer | p50 / p99 ms | ratio | target | "
             "gen. CPU (cores) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for mine, theirs, field in PAIRS:
        a, b = runs.get(mine), runs.get(theirs)
        if a is None or b is None:
            continue
        if field == "restart_s":
            ratio = b[field] / a[field]
            lines.append(f"| restart, {a['keys']:,} keys | {a[field]:.2f} s | | "
                         f"{theirs.split('-')[0]} {b[field]:.2f} s | | {ratio:.2f}x faster | "
                         f"< 3 s | |")
            continue
        ratio = a[field] / b[field]
        target = TARGETS.get(mine)
        verdict = "" if target is None else f">= {target}x " + ("met" if ratio >= target
                                                                else "**missed**")
        if mine.endswith("1srv-put-sync-x1"):
            verdict = "p50 <= 2 ms " + ("met" if a["lat_us"]["p50"] <= 2000 else "**missed**")
        elif mine.endswith("put-sync-x1"):
            # The 2 ms sits beside PySyncObj's ~100 ms, its one-server figure.
            verdict = "(2 ms target: 1 server)"

        def lat(r: dict[str, Any]) -> str:
            return f"{r['lat_us']['p50'] / 1000:.2f} / {r['lat_us']['p99'] / 1000:.2f}"

        gen = f"{a.get('gen_cores', 0):.2f} / {b.get('gen_cores', 0):.2f}"
        lines.append(f"| {mine.removeprefix('pykvs-')} | {_fmt(a[field])}/s | {lat(a)} | "
                     f"{theirs.split('-1srv')[0].split('-3srv')[0]} {_fmt(b[field])}/s | "
                     f"{lat(b)} | {ratio:.2f}x | {verdict} | {gen} |")
    for servers in (1, 3):
        inter = runs.get(f"interleaved-{servers}srv-put-x64")
        if inter is None:
            continue
        ops = inter["ops_per_s"]
        for mine, theirs, key, target in (("pykvs-http", "etcd-http", "http", TARGETS[
                f"pykvs-http-{servers}srv-put-x64"]), ("pykvs-rpc", "etcd-grpc", "rpc", TARGETS[
                f"pykvs-rpc-{servers}srv-put-x64"])):
            ratio = inter[f"{key}_ratio_median"]
            met = "met" if ratio >= target else "**missed**"
            rounds = ", ".join(f"{r:.2f}" for r in inter[f"{key}_ratios"])
            lines.append(f"| {key}-{servers}srv-put-x64, {inter['rounds']} alternated rounds "
                         f"(ratios {rounds}) | median {_fmt(statistics.median(ops[mine]))}/s | | "
                         f"{theirs.split('-')[0]}-{theirs.split('-')[1]} median "
                         f"{_fmt(statistics.median(ops[theirs]))}/s | | {ratio:.2f}x (median of "
                         f"rounds) | >= {target}x {met} | |")
    watch = runs.get("pykvs-http-1srv-watch")
    if watch:
        # The issue times the wake from the commit. The write's acknowledgement leaves the
        # leader as the commit is applied, in the same pass that fires the watches, so the
        # wake after the ack is the wake after the commit less the ack's own delivery; the
        # wake after the write was sent also holds the write's fsync and commit.
        after = watch.get("after_ack_us", {})
        lines.append(f"| blocking queries, {watch['watchers']:,} waiting: wake after the write "
                     f"was sent (holds the write's own commit) | p50 "
                     f"{watch['lat_us']['p50'] / 1000:.2f} ms, p99 "
                     f"{watch['lat_us']['p99'] / 1000:.2f} ms | | | | | | "
                     f"{watch.get('gen_cores', 0):.2f} |")
        if after:
            met = "met" if after["p99"] < 5000 else "**missed**"
            lines.append(f"| same, after the write's acknowledgement (its commit applied) | "
                         f"p50 {after['p50'] / 1000:.2f} ms, p99 {after['p99'] / 1000:.2f} ms "
                         f"| | | | | p99 < 5 ms {met} | |")
    return "\n".join(lines)


def series(runs: dict[str, dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Write throughput by writes in flight, one series per store, protocol and size (from
    the single runs; the interleaved rounds are in the table)."""
    lines: dict[str, list[tuple[int, float]]] = {}
    for name, run in runs.items():
        if name.startswith("interleaved-"):
            continue
        for op, in_flight in (("put-x1", 1), ("put-sync-x1", 1), ("put-x64", 64)):
            if name.endswith(f"-{op}") and not (op == "put-x1" and "embedded" in name):
                label = name.removesuffix(f"-{op}")
                lines.setdefault(label, []).append((in_flight, run["ops_per_s"]))
    return {k: sorted(v) for k, v in sorted(lines.items())}


def plot(runs: dict[str, dict[str, Any]], plots: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots.mkdir(parents=True, exist_ok=True)
    written = []
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, servers in zip(axes, ("1srv", "3srv"), strict=True):
        for label, points in series(runs).items():
            if servers in label:
                xs, ys = zip(*points, strict=True)
                style = "--" if "etcd" in label or "pysyncobj" in label else "-"
                ax.plot(xs, ys, style, marker="o", label=label.replace(f"-{servers}", ""))
        ax.set(xscale="log", yscale="log", xlabel="writes in flight",
               title=f"durable puts/s, {servers[0]} server(s)", xticks=[1, 64])
        ax.set_xticklabels(["1", "64"])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("puts per second (log)")
    fig.tight_layout()
    written.append(plots / "throughput_vs_in_flight.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    groups = {"put_x64": "-1srv-put-x64", "put_x1": "-1srv-put-x1", "get": "-1srv-get-x1",
              "range": "-1srv-range-x1", "put_sync": "-1srv-put-sync-x1"}
    fig, grid = plt.subplots(2, 3, figsize=(14, 8.5))
    grid[1][2].axis("off")
    for ax, (title, suffix) in zip(grid.flat, groups.items(), strict=False):
        for name, run in sorted(runs.items()):
            if not name.endswith(suffix) or "hist" not in run:
                continue
            edges, counts = run["hist"]["edges_us"], run["hist"]["counts"]
            total = sum(counts) or 1
            xs, ys, seen = [], [], counts[0]  # counts[0]: under the first edge (1 us)
            for edge, count in zip(edges, counts[1:], strict=True):
                seen += count
                xs.append(edge / 1000)
                ys.append(seen / total)
            style = "--" if "etcd" in name or "pysyncobj" in name else "-"
            ax.plot(xs, ys, style, label=name.removesuffix(suffix))
        ax.set(xscale="log", xlabel="latency (ms, log)", ylabel="fraction of requests",
               title=f"latency CDF, {title.replace('_', ' ')}, 1 server")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(plots / "latency_cdf.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", nargs="?", type=Path,
                        default=Path(os.environ.get("PYKVS_PEERS_OUT", HERE / "peers" / "out")))
    parser.add_argument("--plots", type=Path, default=HERE / "peers" / "plots")
    args = parser.parse_args(argv)
    runs = load(args.out_dir)
    print(table(runs))
    for path in plot(runs, args.plots):
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
