"""Reopening a one-server store (``pykvs.open`` over the same data directory), from the user's
side: it serves again without waiting an election timeout, and what it replays is bounded by
the log's size since the last snapshot, not by its entry count (issue 7)."""

from __future__ import annotations

from pathlib import Path

import pykvs


def test_a_reopened_one_server_store_serves_without_an_election_timeout(tmp_path: Path) -> None:
    # 10 s ticks: an election timeout is 100-200 s, far beyond wait_leader. open() returns in
    # time only because the only voter elects itself at once (at its bootstrap and after).
    path = str(tmp_path / "data")
    with pykvs.open(path, tick_interval=10.0, wait_leader=20.0) as db:
        db.put("k", b"v")
    with pykvs.open(path, tick_interval=10.0, wait_leader=20.0) as db:
        _, entry = db.get("k")
        assert entry is not None and entry.value == b"v"
        assert db.server is not None and db.leader() == db.server.address


def test_a_reopened_store_replays_only_the_log_since_a_snapshot_by_size(tmp_path: Path) -> None:
    """Few, large transactions (16 ops of 1 KB: each one log entry of ~17 KB) never reach the
    snapshot threshold in entries (8,192), but do reach ``snapshot_threshold_bytes``: the
    store is snapshotted, and a reopen replays less than that many bytes of log."""
    path = str(tmp_path / "data")
    limit = 64 * 1024
    value = b"x" * 1000
    options = {"raft_options": {"snapshot_threshold_bytes": limit}}
    with pykvs.open(path, **options) as db:
        for t in range(40):
            ops = [{"Verb": "set", "Key": f"many/{t:03d}/{i:02d}", "Value": value}
                   for i in range(16)]
            assert db.txn(ops).ok
    with pykvs.open(path, **options) as db:
        server = db.server
        assert server is not None and server.node is not None
        stats = server.node.stats()
        assert stats["snapshot_index"] > 0
        entry_bytes = 16 * len(value)
        # Replayed: fewer entries than fit in ``limit``, plus the new term's no-op.
        assert stats["applied_index"] - stats["snapshot_index"] <= limit // entry_bytes + 1, stats
        _, entries = db.list("many/")
        assert len(entries) == 40 * 16 and {e.value for e in entries} == {value}
