"""The C radix tree against Python's dict and sortedcontainers.SortedDict (issue 2).

Run: pytest bench/bench_radix.py --benchmark-only -p no:cacheprovider -s

Same run, same data: PYKVS_BENCH_KEYS hierarchical keys (default 1,000,000:
``service/web-N/config/key-M``, 1,000 services of 1,000 keys) with distinct 100-byte values,
built once per session. Baselines hold the same bytes objects: a dict (key -> value) and a
SortedDict (key -> value). Targets, as ratios measured in this run (fastest rounds):

- point get through the wrapper: <= 0.5 us (absolute: reported with the dict's figure);
- listing a 1,000-entry prefix: packed bytes >= 3x faster than SortedDict ``irange`` plus value
  reads; the list of (key, value, index) tuples >= 1x;
- list_keys with a separator over a wide prefix, max_index, count: independent of the tree's
  size (timed on a 10k-key tree of the same shape with as many folders, and on the big one);
- memory: <= 48 bytes per entry beyond the key's and value's own bytes (C allocator count;
  process RSS as a cross-check, dict + SortedDict measured the same way); snapshot time
  independent of size;
- commit throughput for 1 and 100 inserts per transaction.

The figures printed at the end go into bench/RESULTS.md.
"""

from __future__ import annotations

import gc
import os
import random
import time
from typing import Any

import pytest
from sortedcontainers import SortedDict

from pykvs import radix
from pykvs.radix import Tree

N_KEYS = int(os.environ.get("PYKVS_BENCH_KEYS", "1000000"))
PER_SERVICE = 1_000
SERVICES = max(1, N_KEYS // PER_SERVICE)
SMALL_PER_SERVICE = 10  # the 10k tree: as many services (folders), 10 keys each
VALUE_SIZE = 100
GETS = 1_000  # keys per round of the point-get benchmarks

_fastest: dict[str, float] = {}
_facts: dict[str, Any] = {}


def _key(service: int, k: int) -> bytes:
    return b"service/web-%d/config/key-%d" % (service, k)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _build(
    services: int, per_service: int, rng: random.Random
) -> tuple[Tree, list[bytes], list[bytes]]:
    keys = [_key(s, k) for s in range(services) for k in range(per_service)]
    values = [rng.randbytes(VALUE_SIZE) for _ in keys]
    txn = Tree().txn()
    for index, (key, value) in enumerate(zip(keys, values, strict=True), start=1):
        txn.insert(key, value, index)
    tree, _ = txn.commit()
    return tree, keys, values


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    """The big tree and its baselines, plus memory figures taken while building them."""
    rng = random.Random(7)
    gc.collect()
    keys = [_key(s, k) for s in range(SERVICES) for k in range(PER_SERVICE)]
    values = [rng.randbytes(VALUE_SIZE) for _ in keys]
    payload = sum(map(len, keys)) + VALUE_SIZE * len(keys)

    gc.collect()
    c0, rss0 = radix.bytes_allocated(), _rss()
    t0 = time.perf_counter()
    txn = Tree().txn()
    for index, (key, value) in enumerate(zip(keys, values, strict=True), start=1):
        txn.insert(key, value, index)
    tree, _ = txn.commit()
    build_s = time.perf_counter() - t0
    del txn
    gc.collect()
    c1, rss1 = radix.bytes_allocated(), _rss()

    # The baselines hold the very key and value objects, whose bytes the tree copied: their
    # per-entry cost is the containers plus each object's header beyond its bytes.
    key_value_objects = sum(
        k.__sizeof__() + v.__sizeof__() for k, v in zip(keys, values, strict=True)
    )
    d = dict(zip(keys, values, strict=True))
    sd = SortedDict(d)
    gc.collect()
    rss2 = _rss()
    n = len(keys)
    _facts.update(
        n=n,
        build_s=build_s,
        tree_bytes_per_entry=(c1 - c0 - payload) / n,
        tree_rss_per_entry=(rss1 - rss0 - payload) / n,
        py_rss_per_entry=(rss2 - rss1 + key_value_objects - payload) / n,
        nodes=radix.lib.radix_node_count(tree._root),
    )
    small, _, _ = _build(SERVICES, SMALL_PER_SERVICE, rng)
    return {
        "tree": tree,
        "dict": d,
        "sd": sd,
        "small": small,
        "get_keys": rng.sample(keys, GETS),
        "prefix": b"service/web-%d/config/" % (SERVICES // 2),
    }


def _record(name: str, benchmark: Any, per: int = 1) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        _fastest[name] = stats.stats.min / per


# ------------------------------------------------------------------------------ point get
@pytest.mark.benchmark(group="get")
def test_get_tree(benchmark: Any, data: dict[str, Any]) -> None:
    get, keys = data["tree"].get, data["get_keys"]
    assert all(get(k) == data["dict"][k] for k in keys)

    def run() -> None:
        for k in keys:
            get(k)

    benchmark(run)
    _record("get_tree", benchmark, GETS)


@pytest.mark.benchmark(group="get")
def test_get_dict(benchmark: Any, data: dict[str, Any]) -> None:
    get, keys = data["dict"].get, data["get_keys"]

    def run() -> None:
        for k in keys:
            get(k)

    benchmark(run)
    _record("get_dict", benchmark, GETS)


@pytest.mark.benchmark(group="get-hot")
@pytest.mark.parametrize("kind", ["tree", "dict"])
def test_get_hot_key(benchmark: Any, data: dict[str, Any], kind: str) -> None:
    """One key read over and over: the wrapper's own cost, with the data in cache."""
    get, key = data[kind].get, data["get_keys"][0]

    def run() -> None:
        for _ in range(GETS):
            get(key)

    benchmark(run)
    _record(f"get_hot_{kind}", benchmark, GETS)


@pytest.mark.benchmark(group="get")
def test_get_with_index_tree(benchmark: Any, data: dict[str, Any]) -> None:
    get, keys = data["tree"].get_with_index, data["get_keys"]

    def run() -> None:
        for k in keys:
            get(k)

    benchmark(run)
    _record("get_with_index_tree", benchmark, GETS)


# ------------------------------------------------------------------- 1,000-entry listing
def _sorted_dict_listing(sd: SortedDict, prefix: bytes) -> list[tuple[bytes, bytes]]:
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    return [(k, sd[k]) for k in sd.irange(prefix, end, inclusive=(True, False))]


@pytest.mark.benchmark(group="list-1000")
def test_list_sorteddict(benchmark: Any, data: dict[str, Any]) -> None:
    listing = benchmark(_sorted_dict_listing, data["sd"], data["prefix"])
    assert len(listing) == PER_SERVICE
    _record("list_sd", benchmark)


@pytest.mark.benchmark(group="list-1000")
def test_list_packed(benchmark: Any, data: dict[str, Any]) -> None:
    packed = benchmark(data["tree"].list_prefix_packed, data["prefix"])
    assert len(packed) == sum(
        16 + len(k) + len(v) for k, v in _sorted_dict_listing(data["sd"], data["prefix"])
    )
    _record("list_packed", benchmark)


@pytest.mark.benchmark(group="list-1000")
def test_list_tuples(benchmark: Any, data: dict[str, Any]) -> None:
    listing = benchmark(data["tree"].list_prefix, data["prefix"])
    assert [(k, v) for k, v, _ in listing] == _sorted_dict_listing(data["sd"], data["prefix"])
    _record("list_tuples", benchmark)


# -------------------------------------------- O(key length): 10k keys against the big tree
@pytest.mark.benchmark(group="list-keys-wide-prefix")
@pytest.mark.parametrize("size", ["small", "tree"])
def test_list_keys_wide_prefix(benchmark: Any, data: dict[str, Any], size: str) -> None:
    folders = benchmark(data[size].list_keys, b"service/", b"/")
    assert len(folders) == SERVICES
    _record(f"list_keys_{size}", benchmark)


@pytest.mark.benchmark(group="max-index-count")
@pytest.mark.parametrize("size", ["small", "tree"])
def test_max_index_and_count(benchmark: Any, data: dict[str, Any], size: str) -> None:
    tree, prefix = data[size], data["prefix"]

    def run() -> None:
        tree.max_index(prefix)
        tree.count(prefix)

    benchmark(run)
    assert tree.count(prefix) == (PER_SERVICE if size == "tree" else SMALL_PER_SERVICE)
    _record(f"max_count_{size}", benchmark, 2)


@pytest.mark.benchmark(group="snapshot")
@pytest.mark.parametrize("size", ["small", "tree"])
def test_snapshot(benchmark: Any, data: dict[str, Any], size: str) -> None:
    benchmark(data[size].snapshot)
    _record(f"snapshot_{size}", benchmark)


# ---------------------------------------------------------------------- commit throughput
@pytest.mark.benchmark(group="commit")
@pytest.mark.parametrize("batch", [1, 100])
def test_commit(benchmark: Any, data: dict[str, Any], batch: int) -> None:
    base = data["tree"]
    value = b"v" * VALUE_SIZE
    writes = [(_key(i % SERVICES, PER_SERVICE + i), value, 10**7 + i) for i in range(batch)]

    def run() -> None:
        txn = base.txn()
        for key, v, index in writes:
            txn.insert(key, v, index)
        txn.commit()

    benchmark(run)
    _record(f"commit_{batch}", benchmark)


@pytest.mark.benchmark(group="len")
def test_report(benchmark: Any, data: dict[str, Any]) -> None:
    """Times len() (O(1)), then prints every figure and ratio of this run and checks the
    ratio targets (a benchmark itself so that --benchmark-only keeps it, and last)."""
    assert benchmark(len, data["tree"]) == _facts["n"]
    f, x = _fastest, _facts
    if not {"get_tree", "list_sd", "list_packed", "list_tuples"} <= f.keys():
        pytest.skip("benchmarks disabled or deselected")
    packed_speedup = f["list_sd"] / f["list_packed"]
    tuples_speedup = f["list_sd"] / f["list_tuples"]
    lines = [
        f"{x['n']:,} keys, {x['nodes']:,} nodes, built in one transaction in {x['build_s']:.1f} s"
        f" [{os.cpu_count()} CPUs, shared machine; fastest rounds]",
        f"point get, {GETS} random keys: tree {f['get_tree'] * 1e9:.0f} ns, get_with_index"
        f" {f.get('get_with_index_tree', 0) * 1e9:.0f} ns, dict {f['get_dict'] * 1e9:.0f} ns;"
        f" one hot key: tree {f.get('get_hot_tree', 0) * 1e9:.0f} ns,"
        f" dict {f.get('get_hot_dict', 0) * 1e9:.0f} ns (target <= 500 ns)",
        f"1,000-entry listing: SortedDict irange+reads {f['list_sd'] * 1e6:.1f} us, packed"
        f" {f['list_packed'] * 1e6:.1f} us ({packed_speedup:.2f}x, target >= 3x), tuples"
        f" {f['list_tuples'] * 1e6:.1f} us ({tuples_speedup:.2f}x, target >= 1x)",
    ]
    small_n = SERVICES * SMALL_PER_SERVICE
    for what, name, scale, unit in (
        (f"list_keys(b'service/', b'/') -> {SERVICES} folders", "list_keys", 1e6, "us"),
        ("max_index / count of a prefix", "max_count", 1e9, "ns"),
        ("snapshot", "snapshot", 1e9, "ns"),
    ):
        if f"{name}_small" in f and f"{name}_tree" in f:
            lines.append(
                f"{what}: {f[f'{name}_small'] * scale:.0f} {unit} at {small_n:,} keys,"
                f" {f[f'{name}_tree'] * scale:.0f} {unit} at {x['n']:,}"
            )
    lines.append(
        f"memory beyond key and value bytes: tree {x['tree_bytes_per_entry']:.1f} B/entry"
        f" (allocator count), {x['tree_rss_per_entry']:.1f} B/entry (RSS); dict + SortedDict"
        f" {x['py_rss_per_entry']:.1f} B/entry (RSS + object headers) (target <= 48)"
    )
    if "commit_1" in f and "commit_100" in f:
        lines.append(
            f"commit: 1 insert/txn {1 / f['commit_1']:,.0f} txn/s ({f['commit_1'] * 1e6:.1f} us);"
            f" 100 inserts/txn {1 / f['commit_100']:,.0f} txn/s"
            f" ({100 / f['commit_100']:,.0f} inserts/s)"
        )
    print("\n" + "\n".join(lines))
    assert x["tree_bytes_per_entry"] <= 48
    assert packed_speedup >= 3
    assert tuples_speedup >= 1
