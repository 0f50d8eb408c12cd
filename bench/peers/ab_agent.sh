#!/bin/bash
# A/B of one `pykvs agent`: an export of REV (A) against the work tree (B), alternated ROUNDS
# times (SECS each per case), so slow drifts of a shared VM hit both sides alike. Each round
# runs every case of CASES on a fresh agent of each side. Prints each run and, per case and
# side, the medians of ops/s and of the agent's CPU per op (from /proc).
#
#   bench/peers/ab_agent.sh [REV=HEAD] [ROUNDS=4] [SECS=4]
#   CASES="put:64 put:1 get:64 range:8": op:in-flight pairs of bench/peers/loadgen.py
#     (put: 100-byte values; get: one of 1,000 keys; range: a 1,000-key recurse listing;
#     the keys are written before get and range). Default: "put:64".
#   TARGET=pykvs-rpc: msgpack-RPC (pipelined on one connection) instead of HTTP.
#   A_ENV / B_ENV: extra environment for the A / B agent (e.g. B_ENV="PYTHONPATH=...").
#   DATA_ROOT=/dev/shm: the agents' data directories on tmpfs, so that fsync costs nothing and
#     the agent is bound by its CPU alone (a steadier A/B of CPU per op; not a durable setup).
# When REV's csrc/ differs from the work tree's, A gets its own C extension, built in its
# export; otherwise it uses the one built here.
set -euo pipefail
cd "$(dirname "$0")/../.."
REV=${1:-HEAD}; ROUNDS=${2:-4}; SECS=${3:-4}
TARGET=${TARGET:-pykvs-http}
CASES=${CASES:-put:64}
TREE=$(pwd)
BASE=$(mktemp -d /tmp/pykvs-ab-base.XXXX)
OUT=$(mktemp /tmp/pykvs-ab.XXXX)
trap 'rm -rf "$BASE" "$OUT"' EXIT
git archive "$REV" | tar -x -C "$BASE"
if git diff --quiet "$REV" -- csrc; then
  cp pykvs/_cradix*.so "$BASE/pykvs/"
else
  (cd "$BASE" && python setup.py -q build_ext --inplace > /dev/null 2>&1)
fi

free_port() {
  python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"
}

run() {  # label, source tree, extra env
  local dir; dir=$(mktemp -d "${DATA_ROOT:-/tmp}/pykvs-ab-run.XXXX")
  local port rpc_port
  port=$(free_port); rpc_port=$(free_port)
  (cd /tmp && env PYTHONPATH="$2" $3 python -m pykvs.cli agent --node ab --data-dir "$dir/d" \
      --http-port "$port" --rpc-port "$rpc_port" --log-level warn > "$dir/agent.log" 2>&1 &)
  for _ in $(seq 100); do
    curl -sf "127.0.0.1:$port/v1/status/leader" | grep -q . && break; sleep 0.1
  done
  local pid; pid=$(pgrep -f "data-dir $dir/d")
  local addr="127.0.0.1:$port"
  [ "$TARGET" = pykvs-rpc ] && addr="127.0.0.1:$rpc_port"
  local filled=""
  for case in $CASES; do
    local op=${case%%:*} in_flight=${case##*:}
    if [ "$op" != put ] && [ -z "$filled" ]; then
      python bench/peers/loadgen.py "$TARGET" fill --addr "$addr" > /dev/null
      filled=1
    fi
    python bench/peers/loadgen.py "$TARGET" "$op" --addr "$addr" --in-flight "$in_flight" \
        --duration "$SECS" --server-pid "$pid" | python -c "import json, sys
d = json.load(sys.stdin)
print('$case', '$1', round(d['ops_per_s']), round(1e6 * d['server_cpu_s'] / (d['ops_per_s'] * $SECS)))"
  done
  kill "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  rm -rf "$dir"
}

for _ in $(seq "$ROUNDS"); do
  run A "$BASE" "${A_ENV:-}"
  run B "$TREE" "${B_ENV:-}"
done | tee "$OUT"
python - "$OUT" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    case, label, ops, us = line.split()
    runs[case, label].append((int(ops), int(us)))
for (case, label), values in sorted(runs.items()):
    print(f"{case} {label}: ops/s median {statistics.median(v[0] for v in values):,.0f}, "
          f"CPU per op median {statistics.median(v[1] for v in values):.0f} us")
PY
