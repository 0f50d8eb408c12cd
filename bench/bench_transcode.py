"""A 1,000-entry prefix listing rendered to Consul's JSON body: C transcoder vs plain Python.

Run: pytest bench/bench_transcode.py --benchmark-only -p no:cacheprovider

Same run, same data: 1,000 keys like ``service/web-N/config/key-M`` with 100-byte values,
stored as the state store stores them (msgpack ``[value, flags, create, modify, lock,
session]``, a tenth of them locked by a session).  The listing comes from the C tree
(``Tree.list_prefix_packed``) when pykvs.radix provides it, else from ``pack_listing`` (the
same bytes, built in Python).  The plain-Python way starts from the list of
``(key, stored)`` pairs — it is not charged for unpacking the listing — then decodes each
entry with msgpack, builds dicts with base64 values and calls ``json.dumps``.

Targets (issue 3): the C rendering >= 10x faster than the plain-Python way.
"""

from __future__ import annotations

import base64
import json
import os
import random
from typing import Any

import msgpack
import pytest
from ratios import interleaved_speedup

from pykvs.transcode import pack_kv_listing_msgpack, pack_listing, render_kv_json

ENTRIES = 1_000
VALUE_SIZE = 100
PREFIX = b"service/"
TARGET_JSON_SPEEDUP = 10.0

# Fastest round of each benchmark in this run: on a shared, noisy machine the minimum is the
# steadiest estimate of the work itself (medians are printed too).
_fastest: dict[str, float] = {}
_medians: dict[str, float] = {}


def _records() -> list[tuple[bytes, bytes, int]]:
    rng = random.Random(3)
    records = []
    for i in range(ENTRIES):
        key = b"service/web-%d/config/key-%d" % (i // 10, i)
        value = rng.randbytes(VALUE_SIZE)
        session = "adf4238a-882b-9ddc-4a9d-5b6758e4159e" if i % 10 == 0 else None
        create, modify = 1_000 + i, 2_000 + i
        stored = msgpack.packb([value, i % 7, create, modify, int(session is not None), session])
        records.append((key, stored, modify))
    records.sort()
    return records


def _listing_source(records: list[tuple[bytes, bytes, int]]) -> tuple[bytes, str]:
    """The packed listing, from the C tree when it exists."""
    try:
        from pykvs.radix import Tree
    except ImportError:
        return pack_listing(records), "pack_listing (pykvs.radix not available)"
    txn = Tree().txn()
    for key, stored, index in records:
        txn.insert(key, stored, index)
    tree, _ = txn.commit()
    return tree.list_prefix_packed(PREFIX), "Tree.list_prefix_packed"


RECORDS = _records()
PACKED, SOURCE = _listing_source(RECORDS)
PAIRS = [(key, stored) for key, stored, _ in RECORDS]


def python_render_json(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """The plain-Python way: decode, build dicts with base64 values, json.dumps."""
    body: list[dict[str, Any]] = []
    for key, stored in pairs:
        value, flags, create, modify, lock, session = msgpack.unpackb(stored)
        entry: dict[str, Any] = {
            "LockIndex": lock,
            "Key": key.decode("utf-8", "replace"),
            "Flags": flags,
            "Value": base64.b64encode(value).decode("ascii") if value else None,
        }
        if session:
            entry["Session"] = session
        entry["CreateIndex"] = create
        entry["ModifyIndex"] = modify
        body.append(entry)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def python_pack_msgpack(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """The plain-Python RPC reply: decode each stored entry and encode the whole reply again."""
    return msgpack.packb([[key, msgpack.unpackb(stored)] for key, stored in pairs])


def _record(name: str, benchmark: Any) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        _fastest[name] = stats.stats.min
        _medians[name] = stats.stats.median
        if name.endswith("_c"):
            benchmark.extra_info["listing_source"] = SOURCE


@pytest.mark.benchmark(group="transcode-json-1000")
def test_json_python_baseline(benchmark: Any) -> None:
    assert len(PACKED) > ENTRIES * VALUE_SIZE
    assert json.loads(render_kv_json(PACKED)) == json.loads(python_render_json(PAIRS))
    benchmark(python_render_json, PAIRS)
    _record("json_python", benchmark)


@pytest.mark.benchmark(group="transcode-json-1000")
def test_json_c_transcoder(benchmark: Any) -> None:
    benchmark(render_kv_json, PACKED)
    _record("json_c", benchmark)
    _check_speedup()


@pytest.mark.benchmark(group="transcode-msgpack-1000")
def test_msgpack_python_baseline(benchmark: Any) -> None:
    reply = msgpack.unpackb(pack_kv_listing_msgpack(PACKED))
    assert reply == msgpack.unpackb(python_pack_msgpack(PAIRS))
    benchmark(python_pack_msgpack, PAIRS)
    _record("msgpack_python", benchmark)


@pytest.mark.benchmark(group="transcode-msgpack-1000")
def test_msgpack_c_transcoder(benchmark: Any) -> None:
    benchmark(pack_kv_listing_msgpack, PACKED)
    _record("msgpack_c", benchmark)
    if {"msgpack_python", "msgpack_c"} <= _fastest.keys():
        speedup = _fastest["msgpack_python"] / _fastest["msgpack_c"]
        benchmark.extra_info["speedup_vs_python"] = round(speedup, 1)
        print(f"\nmsgpack reply: speedup {speedup:.1f}x (by min) over the plain-Python way")


def _check_speedup() -> None:
    """The JSON target, as a ratio of the fastest rounds measured in this same run."""
    if not {"json_python", "json_c"} <= _fastest.keys():
        return  # benchmarks disabled, or the baseline was deselected: nothing to compare
    # Judged interleaved (bench/ratios.py); the separate tests' figures are printed beside.
    speedup = interleaved_speedup(lambda: python_render_json(PAIRS),
                                  lambda: render_kv_json(PACKED))
    median_speedup = _medians["json_python"] / _medians["json_c"]
    print(
        f"\n{ENTRIES} entries, listing from {SOURCE}:"
        f" JSON python min {_fastest['json_python'] * 1e6:.0f} us"
        f" (median {_medians['json_python'] * 1e6:.0f} us),"
        f" C min {_fastest['json_c'] * 1e6:.1f} us (median {_medians['json_c'] * 1e6:.1f} us);"
        f" speedup {speedup:.1f}x interleaved, {median_speedup:.1f}x by separate medians"
        f" (target {TARGET_JSON_SPEEDUP:.0f}x) [{os.cpu_count()} CPUs, shared machine]"
    )
    assert speedup >= TARGET_JSON_SPEEDUP
