"""README's "Running securely" block, run as written: keygen, a CA and certificates made with
``pykvs tls``, three agents with mutual TLS, server-name checks, an encrypt key and ACLs in
default-deny, the ACL bootstrap, a write with the management token and an anonymous read
refused. Only the ports (free ones) and the directory (a temporary one) differ."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from ports import free_ports

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_block() -> str:
    text = README.read_text()
    section = text.split("## Running securely", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def stop_group(pgid: int) -> None:
    """SIGTERM to every process of the group, waited for (bounded), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def test_the_readme_block_runs_a_secure_cluster(tmp_path: Path) -> None:
    script = readme_block()
    ports = free_ports(6)
    # 830$i / 850$i and the literal 8300..8302 / 8500 become free ports.
    script = script.replace("--rpc-port 830$i", '--rpc-port "${RPC[$i]}"')
    script = script.replace("--http-port 850$i", '--http-port "${HTTP[$i]}"')
    for i in range(3):
        script = script.replace(f"127.0.0.1:830{i}", f"127.0.0.1:{ports[i]}")
    script = script.replace("127.0.0.1:8500", f"127.0.0.1:{ports[3]}")
    assert not re.search(r"\b8[35]0\d\b", script), script
    prelude = (f"set -e\nRPC=({ports[0]} {ports[1]} {ports[2]})\n"
               f"HTTP=({ports[3]} {ports[4]} {ports[5]})\n"
               f'pykvs() {{ "{sys.executable}" -m pykvs.cli "$@"; }}\n')
    (tmp_path / "run.sh").write_text(prelude + script)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CONSUL_HTTP", "PYKVS_HTTP"))}
    proc = subprocess.Popen(["bash", str(tmp_path / "run.sh")], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=180)
    finally:
        stop_group(proc.pid)  # the agents the block started in the background
    logs = "\n".join(p.read_text() for p in tmp_path.glob("agent-s*.log"))
    assert proc.returncode == 0, out + logs
    assert "Success! Data written to: app/config" in out, out
    assert "Permission denied" in out and "anonymous: refused" in out, out
    for name in ("encrypt.key", "consul-agent-ca.pem", "dc1-server-consul-2.pem",
                 "dc1-client-consul-0.pem"):
        assert (tmp_path / name).exists(), name
