#!/bin/sh
# Install the stores bench/bench_peers.py compares pykvs with:
#   etcd 3.4 (server and etcdctl) from Debian's packages etcd-server / etcd-client,
#   PySyncObj from PyPI, and the plotting / profiling tools, into the active virtualenv
#   (or the one named by $PYTHON, default /work/venv/bin/python).
# Run as root (apt-get). Idempotent: a second run changes nothing.
set -eu

PYTHON="${PYTHON:-${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}}"
PYTHON="${PYTHON:-/work/venv/bin/python}"

if ! command -v etcd >/dev/null 2>&1 || ! command -v etcdctl >/dev/null 2>&1; then
    apt-get update
    # The Debian packages start no service in a container without systemd; the benchmark
    # starts its own etcd processes on ephemeral ports.
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        etcd-server etcd-client
fi
etcd --version | head -n 1

# grpcio drives etcd's gRPC API (the etcd3 package does not import with current protobuf).
"$PYTHON" -m pip install --quiet pysyncobj matplotlib py-spy grpcio
"$PYTHON" -c "import pysyncobj, matplotlib, grpc; print('pysyncobj', pysyncobj.__file__)"
