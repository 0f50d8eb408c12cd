"""``pykvs agent``: one server process, wired from its flags, stopped cleanly by a signal.

With no flags it is one server that bootstraps itself: data in ``./pykvs-data``, RPC (and Raft)
on 127.0.0.1:8300, HTTP on 127.0.0.1:8500, datacenter ``dc1``. Once listening it prints one line
on stdout, ``http=HOST:P rpc=HOST:Q``, with the ports actually bound (flags may say 0), so
tests and scripts can find it. SIGINT or SIGTERM closes the server (the node, then the data
directory) and the process exits 0; a restart resumes from the data directory.

The HTTP API (Consul's, pykvs.http) runs in the same process and calls this server in-process:
``pykvs.http.start(server, host, port)`` binds ``--bind``:``--http-port`` (0 picks a port) and
returns a handle with the bound ``address`` and ``close()``; it stops before the server does.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pykvs.netaddr import split_address
from pykvs.raft.auth import parse_key
from pykvs.raft.storage import StorageError
from pykvs.server.limits import Limits
from pykvs.server.server import Server, ServerConfig
from pykvs.server.tls import TLSConfig

if TYPE_CHECKING:
    from pykvs.http import HTTPServer

log = logging.getLogger("pykvs.agent")

LOG_FORMAT = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"
LOG_LEVELS = ("trace", "debug", "info", "warn", "warning", "error")
# "auto": uvloop where it is installed (a dependency on Linux and macOS), else asyncio's own.
# uvloop runs the same code with its loop, transports and selector in C: 16,077 -> 17,976
# HTTP puts/s and 64 -> 56 us of agent CPU per put (bench/PEERS.md, 2026-12-06).
EVENT_LOOPS = ("auto", "uvloop", "asyncio")


def loop_factory(choice: str) -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The event loop ``--event-loop choice`` names: (its name, a factory). ValueError when
    the choice is unknown, or is "uvloop" where uvloop is not installed."""
    if choice not in EVENT_LOOPS:
        raise ValueError(f"--event-loop {choice!r}: expected one of {', '.join(EVENT_LOOPS)}")
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise ValueError("--event-loop uvloop: uvloop is not installed "
                                 "(pip install uvloop), or use --event-loop asyncio") from None
        else:
            return "uvloop", uvloop.new_event_loop
    return "asyncio", asyncio.new_event_loop


@dataclass
class AgentConfig:
    node: str = field(default_factory=socket.gethostname)
    datacenter: str = "dc1"
    data_dir: str = "./pykvs-data"
    bind: str = "127.0.0.1"
    http_port: int = 8500
    rpc_port: int = 8300
    bootstrap_expect: int = 0
    join: list[str] = field(default_factory=list)
    join_wan: list[str] = field(default_factory=list)  # "DC=HOST:PORT"
    dev: bool = False
    log_level: str = "info"
    rpc_hold_timeout: float = 7.0
    max_value_size: int = 512 * 1024
    tls: TLSConfig = field(default_factory=TLSConfig)  # --tls-*, --verify-*
    https_port: int | None = None  # HTTPS beside HTTP when set (needs --tls-cert/--tls-key)
    limits: Limits = field(default_factory=Limits)  # --http-max-body, --rpc-read-timeout, ...
    acl_enabled: bool = False
    acl_default_policy: str = "allow"
    event_loop: str = "auto"  # one of EVENT_LOOPS
    acl_agent_token: str = ""  # presented to join a cluster whose ACLs are bootstrapped
    encrypt: str = ""  # --encrypt KEY (base64 of 32 bytes): pykvs.raft.auth

    def server_config(self, data_dir: str) -> ServerConfig:
        return ServerConfig(
            data_dir=data_dir,
            node_name=self.node,
            datacenter=self.datacenter,
            bind=self.bind,
            port=self.rpc_port,
            bootstrap=not self.join and self.bootstrap_expect <= 1,
            bootstrap_expect=0 if self.dev else self.bootstrap_expect,
            join=[] if self.dev else list(self.join),
            join_wan=parse_join_wan(self.join_wan),
            rpc_hold_timeout=self.rpc_hold_timeout,
            max_value_size=self.max_value_size,
            tls=self.tls,
            limits=self.limits,
            acl_enabled=self.acl_enabled,
            acl_default_policy=self.acl_default_policy,
            acl_agent_token=self.acl_agent_token,
            encrypt_key=parse_key(self.encrypt) if self.encrypt else b"",
        )


def parse_join_wan(items: list[str]) -> dict[str, list[str]]:
    """``["dc2=127.0.0.1:8300", ...]`` -> ``{"dc2": ["127.0.0.1:8300"]}``."""
    out: dict[str, list[str]] = {}
    for item in items:
        datacenter, sep, address = item.partition("=")
        if not sep or not datacenter or not address:
            raise ValueError(f"--join-wan wants DC=HOST:PORT, got {item!r}")
        split_address(address)
        out.setdefault(datacenter, []).append(address)
    return out


def configure_logging(level: str) -> None:
    name = level.lower()
    if name not in LOG_LEVELS:
        raise ValueError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    numeric = {"trace": logging.DEBUG, "warn": logging.WARNING}.get(name) or getattr(
        logging, name.upper())
    logging.basicConfig(level=numeric, format=LOG_FORMAT, stream=sys.stderr, force=True)


async def _start_http(server: Server, host: str, port: int, https_port: int | None = None
                      ) -> tuple[HTTPServer, str]:
    """The HTTP API of ``server``: (its handle, "host:port"), and the HTTPS address after
    " https=" when ``https_port`` is set."""
    # Imported here, not above: pykvs.http brings aiohttp, and the pykvs command imports this
    # module for every subcommand (it doubles `pykvs kv get`'s start-up, 0.14 -> 0.29 s).
    from pykvs import http

    if https_port is None:
        handle = await http.start(server, host, port)
        return handle, str(handle.address)
    handle = await http.start(server, host, port, https_port=https_port,
                              ssl_context=server.tls_server)
    return handle, f"{handle.address} https={handle.https_address}"


# Under load the agent allocates a few dozen short-lived objects per request; with the default
# gen-0 threshold (700) the cyclic collector ran 144 times in 4.5 s of HTTP puts (64 in
# flight), the longest pause 17.9 ms; with these, not once. Measured (A/B,
# 1 agent, 64 HTTP puts in flight, medians of 4): 7,196 -> 7,547 puts/s in one run, no
# difference beyond the noise (+-10 %) in another: a small gain, kept because it costs nothing.
AGENT_GC_THRESHOLDS = (50_000, 20, 100)


async def run(config: AgentConfig, stop: asyncio.Event | None = None, *,
              own_process: bool = False) -> int:
    """Run until SIGINT/SIGTERM (or ``stop``); returns the exit code. ``own_process``: the
    process is the agent's alone (``pykvs agent``), so its garbage collector is tuned for it.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    temp_dir = tempfile.mkdtemp(prefix="pykvs-dev-") if config.dev else None
    data_dir = temp_dir or config.data_dir
    server = Server(config.server_config(data_dir))
    http_handle: HTTPServer | None = None
    try:
        address = await server.start()
        http_handle, http_address = await _start_http(server, config.bind, config.http_port,
                                                      config.https_port)
        if own_process:
            gc.set_threshold(*AGENT_GC_THRESHOLDS)
            gc.freeze()  # what start-up built lives as long as the process: never scan it
        print(f"http={http_address} rpc={address}", flush=True)
        log.info("agent %s (datacenter %s) serving RPC on %s, data in %s", config.node,
                 config.datacenter, address, data_dir)
        await stop.wait()
        log.info("agent %s stopping", config.node)
        return 0
    finally:
        if http_handle is not None:
            await http_handle.close()
        await server.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
        log.info("agent %s stopped", config.node)


def main(config: AgentConfig) -> int:
    configure_logging(config.log_level)
    try:
        loop_name, new_loop = loop_factory(config.event_loop)
        log.info("event loop: %s", loop_name)
        with asyncio.Runner(loop_factory=new_loop) as runner:
            return runner.run(run(config, own_process=True))
    except socket.gaierror as exc:
        log.error("agent failed to start: --bind %r: %s", config.bind, exc.strerror)
        return 1
    except (ValueError, OSError, StorageError) as exc:  # bad config, data dir or port
        log.error("agent failed to start: %s", exc)
        return 1
