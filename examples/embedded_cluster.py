"""One member of a replicated store that Python processes embed together (no agent).

Each process calls ``pykvs.open`` with its own node name, data directory and Raft port, and
the addresses of the others: the founders wait for each other (``bootstrap_expect``), a later
process joins them. Any member reads and writes (a follower forwards to the leader); a member
that dies is replaced by a new one that catches up from the leader's snapshot.

    python examples/embedded_cluster.py --name n1 --data-dir /tmp/n1 --port 8301 --expect 3 \\
        --join 127.0.0.1:8302 --join 127.0.0.1:8303
    (and n2 on 8302, n3 on 8303, each joining the other two)
    python examples/embedded_cluster.py --name n4 --data-dir /tmp/n4 --port 8304 \\
        --join 127.0.0.1:8301

Then type on a member's standard input: ``put KEY VALUE``, ``get KEY`` (``get KEY stale`` reads
this member's own state), ``keys PREFIX``, ``stats``, ``quit``. Each answer is one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys

import pykvs


def serve(kv: pykvs.KV, lines: object) -> None:
    for line in lines:  # type: ignore[attr-defined]
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            return
        try:
            answer = answer_to(kv, words)
        except pykvs.RPCError as exc:  # e.g. "No cluster leader" while a new one is elected
            answer = {"error": str(exc)}
        print(json.dumps(answer), flush=True)


def answer_to(kv: pykvs.KV, words: list[str]) -> object:
    if words[0] == "put" and len(words) == 3:
        answer: object = kv.put(words[1], words[2].encode())
    elif words[0] == "get" and len(words) in (2, 3):
        consistency = "stale" if words[2:] == ["stale"] else "default"
        _, entry = kv.get(words[1], consistency=consistency)
        answer = None if entry is None else entry.value.decode()
    elif words[0] == "keys" and len(words) == 2:
        answer = [k.decode() for k in kv.keys(words[1])[1]]
    elif words[0] == "stats":
        assert kv.server is not None and kv.server.node is not None
        stats = kv.server.node.stats()
        answer = {k: stats[k] for k in ("role", "applied_index", "snapshot_index")}
        answer["snapshots_installed"] = kv.server.node.counters["snapshots_installed"]
    else:
        answer = {"error": f"unknown command {' '.join(words)!r}"}
    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--expect", type=int, default=0, help="founders: how many found it")
    parser.add_argument("--join", action="append", default=[], metavar="HOST:PORT")
    parser.add_argument("--snapshot-threshold", type=int, default=0,
                        help="snapshot after this many entries (a demo of catching up from "
                             "a snapshot; default: pykvs's 8,192, at most every 5 s)")
    args = parser.parse_args()
    snapshots = {} if not args.snapshot_threshold else {
        "snapshot_threshold": args.snapshot_threshold,
        "raft_options": {"snapshot_interval": 0.1, "trailing_entries": 16}}
    with pykvs.open(args.data_dir, node_name=args.name, port=args.port,
                    bootstrap_expect=args.expect, join=args.join, **snapshots) as kv:
        print(json.dumps({"ready": args.name, "leader": kv.leader()}), flush=True)
        serve(kv, sys.stdin)


if __name__ == "__main__":
    main()
