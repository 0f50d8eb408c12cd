"""One pykvs server: Raft node + FSM + state store + the RPC endpoints, on one address.

What Consul's ``agent/consul.Server`` does for KV: ``forward()`` (to another datacenter, or to
the leader), ``raftApply()``, ``blockingQuery()``, the leader's duties (session TTL timers,
tombstone reaping) and cluster formation (bootstrap, ``--bootstrap-expect``, ``--join``).

One port per server
-------------------
Raft and RPC share one listening address, as Consul's port 8300 does. The Raft transport owns
the listener; a connection whose first frame is not a Raft hello is handed to the RPC server
(``TCPTransport(on_other_connection=...)``). So the address in the Raft membership is also the
server's RPC address: ``Status.Leader``/``Status.Peers`` answer it, forwarding dials it, and a
``--join`` names it. Before the Raft node exists (a server waiting for ``--bootstrap-expect``
peers or for its ``--join`` target), a plain RPC listener holds the same port and answers the
discovery calls; it hands the port over to the node once the cluster forms.

Reads
-----
``stale``: any server answers from its own state. ``default``: the leader answers from its state
(a follower forwards). ``consistent``: the leader first confirms with a quorum round (ReadIndex)
that it is still leader. Replies carry QueryMeta: ``Index``, ``KnownLeader``, ``LastContact``
(nanoseconds since this server heard from the leader; 0 on the leader).

Writes
------
A write on a follower goes to the leader. On the leader it is proposed to Raft as a msgpack
command (pykvs.fsm); the reply is the FSM's result once the entry is committed and applied. A
proposal refused because leadership moved (nothing was proposed) is retried through
``forward()``; one whose outcome is unknown (leadership lost after proposing) is an error.
While no leader is known, requests wait up to ``rpc_hold_timeout`` and then fail with
"No cluster leader".
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import lmdb

from pykvs import fsm as fsm_module
from pykvs.fsm import FSM
from pykvs.netaddr import split_address
from pykvs.raft.lmdbfile import check_lmdb_file
from pykvs.raft.node import (
    Completion,
    LeadershipLostError,
    NodeConfig,
    NotLeaderError,
    ProposalDroppedError,
    RaftError,
    RaftNode,
)
from pykvs.raft.storage import LMDBStorage
from pykvs.raft.types import Configuration
from pykvs.server.acl import DEFAULT_POLICIES, ServerACL
from pykvs.server.args import QueryOptions, field_bool, field_str
from pykvs.server.endpoints import Endpoints, raw_reply
from pykvs.server.leader import SessionTimers, TombstoneGC
from pykvs.server.limits import Limits, PerClientCounter
from pykvs.server.rpc import ConnectionLost, ConnectionPool, RawMsgpack, RPCError, RPCServer
from pykvs.server.tls import TLSConfig
from pykvs.state.store import StateSnapshot, StateStore
from pykvs.state.txn import TxnOp, TxnResult
from pykvs.state.watch import DEFAULT_QUERY_TIME, MAX_QUERY_TIME, WatchSet

log = logging.getLogger(__name__)

NO_LEADER = "No cluster leader"
VALUE_TOO_LARGE = "Value too large"
DEFAULT_MAX_VALUE_SIZE = 512 * 1024
_META_FILE = "server.json"
_META_FORMAT = 1  # server.json's "format": a newer one is refused, none means 1
SNAPSHOT_CHUNK = 1 << 20  # bytes per Snapshot.Read reply
SNAPSHOT_HOLD = 60.0  # seconds a saved snapshot waits for its next read


@dataclass
class ServerConfig:
    """Everything one server needs; the agent fills it from its flags."""

    data_dir: str
    node_name: str = "node1"  # also the Raft server id
    datacenter: str = "dc1"
    bind: str = "127.0.0.1"
    port: int = 8300  # 0 picks a free port (and a restart reuses the one it picked)
    bootstrap: bool = True  # found a one-server cluster when there is no state and no join
    bootstrap_expect: int = 0  # wait for this many servers, then found the cluster together
    join: list[str] = field(default_factory=list)  # "host:port" of servers in this datacenter
    join_wan: dict[str, list[str]] = field(default_factory=dict)  # dc -> server addresses
    rpc_hold_timeout: float = 7.0  # Consul's RPCHoldTimeout
    join_retry_interval: float = 0.5
    max_value_size: int = DEFAULT_MAX_VALUE_SIZE
    default_query_time: float = DEFAULT_QUERY_TIME
    max_query_time: float = MAX_QUERY_TIME
    session_ttl_multiplier: float = 2.0  # Consul's SessionTTLMultiplier (tests shorten it)
    tombstone_ttl: float = 15 * 60.0
    tombstone_granularity: float = 30.0
    tick_interval: float = 0.05
    election_tick: int = 10
    snapshot_threshold: int = 8192
    raft_options: dict[str, Any] = field(default_factory=dict)  # more NodeConfig fields
    acl_enabled: bool = False  # off: every check passes (pykvs.server.acl)
    acl_default_policy: str = "allow"  # for a token's names no rule matches: allow | deny
    tls: TLSConfig = field(default_factory=TLSConfig)  # plaintext unless a certificate is set
    limits: Limits = field(default_factory=Limits)  # protective limits (server/limits.py)

    def __post_init__(self) -> None:
        for name in ("node_name", "datacenter", "bind"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a str, not {type(getattr(self, name)).__name__}")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise TypeError(f"port must be an int, not {type(self.port).__name__}")
        if not self.node_name:
            raise ValueError("node_name must not be empty")
        if not self.datacenter:
            raise ValueError("datacenter must not be empty")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.bootstrap_expect < 0:
            raise ValueError(f"bootstrap_expect must be >= 0, got {self.bootstrap_expect}")
        if self.max_value_size < 1:
            raise ValueError(f"max_value_size must be positive, got {self.max_value_size}")
        if self.acl_default_policy not in DEFAULT_POLICIES:
            raise ValueError(f"acl_default_policy must be allow or deny, got "
                             f"{self.acl_default_policy!r}")
        for name in ("rpc_hold_timeout", "join_retry_interval", "default_query_time",
                     "max_query_time", "session_ttl_multiplier", "tombstone_ttl",
                     "tombstone_granularity", "tick_interval"):
            seconds = getattr(self, name)
            if (isinstance(seconds, bool) or not isinstance(seconds, int | float)
                    or not 0 <= seconds < math.inf):  # also refuses NaN
                raise ValueError(f"{name} must be a finite number >= 0, got {seconds!r}")
        for address in [*self.join, *(a for dc in self.join_wan.values() for a in dc)]:
            split_address(address)


class _Retry(Exception):
    """Leadership moved before anything was proposed: run the request again (it forwards)."""


RETRY = object()  # write_outcome's "nothing was applied: run the request again"


def _write_error(exc: NotLeaderError | RaftError) -> Exception:
    """What a failed proposal means for its request: _Retry when nothing was applied (it
    then forwards to the new leader), else an RPCError for the caller."""
    if isinstance(exc, NotLeaderError | ProposalDroppedError):
        return _Retry()
    if isinstance(exc, LeadershipLostError):
        return RPCError(f"leadership lost while committing the write; its outcome is unknown "
                        f"({exc})")
    return RPCError(f"raft: {exc}")


ReadFn = Callable[[WatchSet, StateSnapshot], tuple[int, Any]]


class Server:
    """A pykvs server. ``await start()`` listens (the address is then known) and forms or
    rejoins the cluster in the background; ``await close()`` stops it."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.fsm = FSM()
        self.state: StateStore = self.fsm.store
        self.acl = ServerACL(self)  # before the endpoints: they check with it
        self.storage: LMDBStorage | None = None
        self.node: RaftNode | None = None
        self.sessions = SessionTimers(self._expire_session, config.session_ttl_multiplier)
        self.tombstones = TombstoneGC(config.tombstone_ttl, config.tombstone_granularity)
        self.tls_server = config.tls.server_context()
        self.pool = ConnectionPool(ssl=config.tls.client_context())
        self.endpoints = Endpoints(self)
        self.handlers: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            name: self._retrying(handler) for name, handler in self.endpoints.table().items()
        }
        self.handlers["Internal.Join"] = self._retrying(self._internal_join)
        self.blocking_rpc = PerClientCounter(config.limits.max_blocking_per_client,
                                             "blocking queries")
        self.rpc = self._rpc_server(self.handlers)
        self.address = ""
        self._discovery: RPCServer | None = None
        self._known: dict[str, str] = {}  # servers met while waiting for bootstrap_expect
        self._tasks: list[asyncio.Task[None]] = []
        self._leader_tasks: list[asyncio.Task[None]] = []
        self._is_leader = False
        self._node_ready = asyncio.Event()
        self._closing = False
        self._saved: dict[str, tuple[bytes, float]] = {}  # snapshot id -> (body, expiry)

    # -------------------------------------------------------------------------- lifecycle
    async def start(self) -> str:
        """Open the data directory and listen; returns the server address ``host:port``."""
        cfg = self.config
        data_dir = Path(cfg.data_dir)
        if data_dir.exists() and not data_dir.is_dir():
            raise NotADirectoryError(f"data directory {data_dir} is not a directory")
        data_dir.mkdir(parents=True, exist_ok=True)
        meta = self._read_meta(data_dir)  # before anything is opened: refuse another's dir
        port = self._port_to_use(meta)
        if meta and not (data_dir / "raft" / "data.mdb").exists():
            # server.json is written after the store is created: the store was lost, and a
            # new empty one would serve (or bootstrap) an empty state in place of the data
            raise ValueError(f"{data_dir / 'raft' / 'data.mdb'} is missing but "
                             f"{data_dir / _META_FILE} says this directory was in use; restore "
                             f"it, or remove {_META_FILE} to start this server afresh")
        check_lmdb_file(data_dir / "raft" / "data.mdb")
        try:
            self.storage = LMDBStorage(data_dir / "raft")
        except lmdb.Error as exc:
            raise ValueError(f"{data_dir / 'raft' / 'data.mdb'}: cannot open the Raft store: "
                             f"{exc}") from None
        log_store = self.storage.log
        has_state = log_store.last_index() > 0 or log_store.snapshot_meta() is not None
        try:
            if has_state:
                log.info("%s: restarting from %s", cfg.node_name, data_dir)
                await self._start_node(port, bootstrap=False, peers={})
            elif cfg.join or cfg.bootstrap_expect > 1:
                self._discovery = self._rpc_server(self._discovery_handlers())
                host, port = await self._discovery.start(cfg.bind, port, ssl=self.tls_server)
                self.address = f"{host}:{port}"
                self._spawn(self._form_cluster(), "form cluster")
            elif cfg.bootstrap or cfg.bootstrap_expect == 1:
                log.info("%s: bootstrapping a new one-server cluster", cfg.node_name)
                await self._start_node(port, bootstrap=True, peers={})
            else:
                raise ValueError("no state, no join address and bootstrap disabled: this server "
                                 "has no way to find a cluster")
        except BaseException:
            await self.close()
            raise
        self._write_meta(data_dir)
        return self.address

    def _port_to_use(self, meta: dict[str, Any]) -> int:
        """The configured port; for port 0, the port an earlier run recorded (the Raft
        membership knows this server by its address, so a restart must come back to it)."""
        if self.config.port:
            return self.config.port
        recorded = meta.get("address")
        if isinstance(recorded, str):
            host, port = split_address(recorded)
            if host == self.config.bind:
                return port
        return 0

    def _read_meta(self, data_dir: Path) -> dict[str, Any]:
        path = data_dir / _META_FILE
        if not path.exists():
            return {}
        try:
            meta = json.loads(path.read_bytes())
        except ValueError as exc:
            raise ValueError(f"{path} is corrupt (not JSON: {exc}); it records which node "
                             "owns this data directory") from None
        if not isinstance(meta, dict):
            raise ValueError(f"{path} is corrupt: expected a JSON object, got "
                             f"{type(meta).__name__}")
        if not isinstance(meta.get("format", 1), int) or meta.get("format", 1) > _META_FORMAT:
            raise ValueError(f"{path}: data directory format {meta['format']!r} is newer than "
                             f"this pykvs understands ({_META_FORMAT})")
        if meta.get("node") not in (None, self.config.node_name):
            raise ValueError(f"data directory {data_dir} belongs to node {meta['node']!r}, "
                             f"not {self.config.node_name!r}")
        if meta.get("datacenter") not in (None, self.config.datacenter):
            raise ValueError(f"data directory {data_dir} belongs to datacenter "
                             f"{meta['datacenter']!r}, not {self.config.datacenter!r}")
        return dict(meta)

    def _write_meta(self, data_dir: Path) -> None:
        meta = {"format": _META_FORMAT, "node": self.config.node_name,
                "datacenter": self.config.datacenter, "address": self.address}
        tmp = data_dir / (_META_FILE + ".tmp")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, data_dir / _META_FILE)

    async def _start_node(self, port: int, *, bootstrap: bool, peers: dict[str, str]) -> None:
        cfg = self.config
        assert self.storage is not None
        node_config = NodeConfig(
            cfg.node_name, tick_interval=cfg.tick_interval, election_tick=cfg.election_tick,
            snapshot_threshold=cfg.snapshot_threshold, **cfg.raft_options,
        )
        node = RaftNode(
            node_config, self.storage.log, self.storage.snapshots, self.fsm,
            bind=f"{cfg.bind}:{port}", peers=peers, bootstrap=bootstrap,
            transport_options={"on_other_connection": self.rpc.serve_handoff,
                               "ssl_server": self.tls_server, "ssl_client": self.pool.ssl,
                               # RPC clients are refused (with an error) by the RPC server;
                               # this backstop leaves room for the Raft links of 32 peers.
                               "max_inbound": cfg.limits.rpc_max_conns + 64,
                               "max_first_frame": cfg.limits.rpc_max_frame},
        )
        await node.start()
        self.node = node
        self.address = node.address
        self._node_ready.set()
        self._spawn(self._watch_leadership(), "leadership watch")

    def _rpc_server(self, handlers: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]]
                    ) -> RPCServer:
        limits = self.config.limits
        return RPCServer(handlers, max_frame=limits.rpc_max_frame,
                         max_connections=limits.rpc_max_conns, blocking=self.blocking_rpc,
                         uncounted=self._is_other_server_host, connection_errors=True)

    def _is_other_server_host(self, host: str) -> bool:
        """Whether ``host`` runs another server of the cluster (its forwarded blocking
        queries were counted where they came in)."""
        node = self.node
        if node is None:
            return False
        return any(split_address(address)[0] == host
                   for sid, address in node.configuration().all_servers().items()
                   if sid != node.id)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.config.node_name} {name}")
        self._tasks.append(task)

    async def close(self) -> None:
        """Stop serving, stop the node, close the data directory."""
        if self._closing:
            return
        self._closing = True
        for task in [*self._tasks, *self._leader_tasks]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._leader_tasks, return_exceptions=True)
        await self.sessions.close()
        if self._discovery is not None:
            await self._discovery.close()
        await self.rpc.close()
        if self.node is not None:
            await self.node.close()
        await self.pool.close()
        if self.storage is not None:
            self.storage.close()

    async def wait_leader(self, timeout: float) -> str:
        """Until a leader is known (tests, the embedded store); returns its address."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            address = self.leader_address()
            if address:
                return address
            if loop.time() >= deadline:
                raise TimeoutError(f"{self.config.node_name}: no leader after {timeout:.1f}s")
            await asyncio.sleep(min(0.02, max(0.0, deadline - loop.time())))

    # ---------------------------------------------------------------- cluster formation
    def _discovery_handlers(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[Any]]]:
        async def no_leader(args: dict[str, Any]) -> Any:
            raise RPCError(NO_LEADER)

        handlers: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            name: no_leader for name in self.handlers}
        handlers["Internal.Join"] = self._internal_join
        handlers["Status.Ping"] = self.handlers["Status.Ping"]
        return handlers

    async def _internal_join(self, args: dict[str, Any]) -> dict[str, Any]:
        """A server introduces itself. Before the cluster forms, remember it (for
        bootstrap_expect); after, answer the membership, and with ``Add`` make it a voter."""
        server_id = field_str(args, "ID")
        address = field_str(args, "Address")
        datacenter = field_str(args, "Datacenter")
        add = field_bool(args, "Add")
        if not server_id or not address:
            raise ValueError("Internal.Join needs ID and Address")
        split_address(address)
        if datacenter != self.config.datacenter:
            raise RPCError(f"server {server_id} is in datacenter {datacenter!r}, this server is "
                           f"in {self.config.datacenter!r}: use join_wan across datacenters")
        node = self.node
        if node is None:
            self._known[server_id] = address
            return {"Cluster": False, "Servers": {**self._known,
                                                  self.config.node_name: self.address}}
        if add:
            forwarded, reply = await self.forward("Internal.Join", args, read=False)
            if forwarded:
                return dict(reply)
            conf = node.configuration()
            if conf.voters.get(server_id) != address:
                if server_id in conf.all_servers():
                    raise RPCError(f"server {server_id} is already a member at "
                                   f"{conf.all_servers()[server_id]}; remove it first")
                try:
                    await node.add_voter(server_id, address)
                except NotLeaderError:
                    raise _Retry() from None
                log.info("%s: added server %s at %s", self.config.node_name, server_id, address)
        return {"Cluster": True, "Servers": node.configuration().all_servers()}

    async def _form_cluster(self) -> None:
        """Discovery: meet servers through ``join`` until a cluster can be joined or
        ``bootstrap_expect`` servers are known, then hand the port to the Raft node."""
        cfg = self.config
        self._known[cfg.node_name] = self.address
        introduce = {"ID": cfg.node_name, "Address": self.address, "Datacenter": cfg.datacenter}
        attempt = 0
        while True:
            cluster: dict[str, str] | None = None
            for target in cfg.join:
                if target == self.address:
                    continue
                try:
                    reply = await self.pool.call(split_address(target), "Internal.Join",
                                                 introduce, timeout=5.0)
                except (TimeoutError, OSError, ConnectionError, RPCError) as exc:
                    if attempt % 20 == 0:
                        log.info("%s: join %s: %s (retrying)", cfg.node_name, target, exc)
                    continue
                servers = {str(k): str(v) for k, v in reply["Servers"].items()}
                if reply["Cluster"]:
                    cluster = servers
                    break
                self._known.update(servers)
            if cluster is not None:
                await self._join_cluster(cluster)
                return
            if cfg.bootstrap_expect > 1 and len(self._known) >= cfg.bootstrap_expect:
                peers = dict(self._known)
                log.info("%s: %d servers known, bootstrapping the cluster: %s", cfg.node_name,
                         len(peers), sorted(peers))
                await self._hand_over_port(bootstrap=True, peers=peers)
                return
            attempt += 1
            await asyncio.sleep(cfg.join_retry_interval * (0.5 + random.random()))

    async def _hand_over_port(self, *, bootstrap: bool, peers: dict[str, str]) -> None:
        assert self._discovery is not None
        port = split_address(self.address)[1]
        await self._discovery.close()
        self._discovery = None
        await self._start_node(port, bootstrap=bootstrap, peers=peers)

    async def _join_cluster(self, servers: dict[str, str]) -> None:
        """Start the node knowing the members' addresses, then ask to be made a voter (unless
        the membership already has us: a founder of a bootstrap_expect cluster)."""
        cfg = self.config
        log.info("%s: joining the cluster of %s", cfg.node_name, sorted(servers))
        await self._hand_over_port(bootstrap=False, peers=servers)
        if servers.get(cfg.node_name) == self.address:
            return
        args = {"ID": cfg.node_name, "Address": self.address, "Datacenter": cfg.datacenter,
                "Add": True}
        targets = [a for a in servers.values() if a != self.address]
        attempt = 0
        while True:
            for target in targets:
                try:
                    await self.pool.call(split_address(target), "Internal.Join", args,
                                         timeout=max(10.0, 2 * cfg.rpc_hold_timeout))
                    log.info("%s: joined the cluster through %s", cfg.node_name, target)
                    return
                except (TimeoutError, OSError, ConnectionError, RPCError) as exc:
                    if attempt % 20 == 0:
                        log.info("%s: join through %s: %s (retrying)", cfg.node_name, target,
                                 exc)
            attempt += 1
            await asyncio.sleep(cfg.join_retry_interval * (0.5 + random.random()))

    # ------------------------------------------------------------------ leader duties
    async def _watch_leadership(self) -> None:
        """Consul's monitorLeadership: set up the leader's duties when leadership is gained
        (after a barrier, so the state is current), tear them down when it is lost."""
        node = self.node
        assert node is not None
        async for leading in node.leadership_changes():
            while leading and not self._is_leader and node.is_leader():
                try:
                    await node.barrier(timeout=max(1.0, self.config.rpc_hold_timeout))
                except (RaftError, NotLeaderError) as exc:
                    log.info("%s: barrier after winning the election failed: %r",
                             self.config.node_name, exc)
                    await asyncio.sleep(self.config.tick_interval)
                else:
                    self._establish_leadership()
            if not leading and self._is_leader:
                self._revoke_leadership()

    def _establish_leadership(self) -> None:
        self._is_leader = True
        _, sessions = self.state.session_list()
        self.sessions.activate([(s.id, s.ttl) for s in sessions])
        self.tombstones.reset()
        self._leader_tasks.append(asyncio.get_running_loop().create_task(self._reap_tombstones()))
        log.info("%s: leader duties started (%d session timers)", self.config.node_name,
                 len(self.sessions))

    def _revoke_leadership(self) -> None:
        self._is_leader = False
        self.sessions.deactivate()
        for task in self._leader_tasks:
            task.cancel()
        self._leader_tasks.clear()
        log.info("%s: leader duties stopped", self.config.node_name)

    async def _reap_tombstones(self) -> None:
        while True:
            await asyncio.sleep(self.tombstones.granularity)
            upto = self.tombstones.expired()
            if upto:
                try:
                    await self.raft_apply(fsm_module.reap_command(upto))
                except (RPCError, _Retry) as exc:
                    log.info("%s: tombstone reap up to %d failed: %r", self.config.node_name,
                             upto, exc)

    async def _expire_session(self, session_id: str) -> None:
        log.info("%s: session %s TTL expired", self.config.node_name, session_id)
        command = fsm_module.session_destroy_command(session_id, ts=time.time_ns())
        await self.raft_apply(command, may_delete=True)

    # ------------------------------------------------------------------ forwarding
    def _retrying(
        self, endpoint: Callable[[dict[str, Any]], Awaitable[Any]]
    ) -> Callable[[dict[str, Any]], Awaitable[Any]]:
        """Run ``endpoint`` again while it says leadership moved, up to the hold time."""

        async def handler(args: dict[str, Any]) -> Any:
            # time.monotonic(), not the loop's clock: asyncio.get_running_loop() makes a
            # getpid() system call, and this runs for every RPC.
            deadline = time.monotonic() + self.config.rpc_hold_timeout
            while True:
                try:
                    return await endpoint(args)
                except _Retry:
                    if time.monotonic() >= deadline:
                        raise RPCError(NO_LEADER) from None
                    await asyncio.sleep(self._stagger())

        return handler

    def _stagger(self) -> float:
        """Consul waits RandomStagger(RPCHoldTimeout / 16) between tries; kept short here."""
        return min(0.02 + random.random() * self.config.rpc_hold_timeout / 16, 0.2)

    async def forward(self, method: str, args: dict[str, Any], *, read: bool) -> tuple[bool, Any]:
        """``(True, reply)`` when another server answered, ``(False, None)`` to answer here."""
        datacenter = field_str(args, "Datacenter")
        if datacenter and datacenter != self.config.datacenter:
            return True, await self._forward_dc(datacenter, method, args, read=read)
        if read and QueryOptions.from_args(args).allow_stale:
            if self.node is None:
                raise RPCError(NO_LEADER)
            return False, None
        deadline = time.monotonic() + self.config.rpc_hold_timeout  # see _retrying
        while True:
            node = self.node
            if node is not None and node.is_leader():
                return False, None
            address = self.leader_address() if node is not None else ""
            if address and address != self.address:
                try:
                    return True, await self.pool.call(split_address(address), method, args)
                except ConnectionLost:
                    if not read:  # the write may have been applied: do not send it twice
                        raise RPCError(f"connection to the leader {address} was lost; the "
                                       f"write's outcome is unknown") from None
                except OSError as exc:  # could not connect: nothing was sent
                    log.debug("forward %s to %s: %s", method, address, exc)
            if time.monotonic() >= deadline:
                raise RPCError(NO_LEADER)
            await asyncio.sleep(self._stagger())

    async def forward_dc_only(self, method: str, args: dict[str, Any]) -> tuple[bool, Any]:
        """Forward to another datacenter only (Status.* answer from any server)."""
        datacenter = field_str(args, "Datacenter")
        if datacenter and datacenter != self.config.datacenter:
            return True, await self._forward_dc(datacenter, method, args, read=True)
        return False, None

    async def _forward_dc(self, datacenter: str, method: str, args: dict[str, Any], *,
                          read: bool) -> Any:
        """To a server of ``datacenter`` (from join_wan), the next one when one is down."""
        servers = list(self.config.join_wan.get(datacenter, ()))
        if not servers:
            raise RPCError(f"No path to datacenter {datacenter!r}")
        start = random.randrange(len(servers))
        failures = []
        for address in servers[start:] + servers[:start]:
            try:
                return await self.pool.call(split_address(address), method, args)
            except ConnectionLost as exc:
                if not read:
                    raise RPCError(f"connection to {address} in datacenter {datacenter} was "
                                   f"lost; the write's outcome is unknown") from None
                failures.append(f"{address}: {exc}")
            except OSError as exc:
                failures.append(f"{address}: {exc}")
        raise RPCError(f"No path to datacenter {datacenter!r}: " + "; ".join(failures))

    # ----------------------------------------------------------------- applying, reading
    async def raft_apply(self, command: bytes, *, may_delete: bool = False) -> Any:
        """Propose ``command``; the FSM's result once it is committed and applied."""
        node = self.node
        if node is None:
            raise _Retry()
        try:
            result = await node.apply(command)
        except (NotLeaderError, RaftError) as exc:
            raise _write_error(exc) from None
        return self._written(result, may_delete)

    def _written(self, result: Any, may_delete: bool) -> Any:
        if may_delete:
            self.tombstones.hint(self.state.index)
        return result

    def writes_here(self, args: dict[str, Any]) -> bool:
        """Would ``forward()`` let this server apply the write ``args`` itself?"""
        datacenter = field_str(args, "Datacenter")
        node = self.node
        return ((not datacenter or datacenter == self.config.datacenter)
                and node is not None and node.is_leader())

    def propose_nowait(self, command: bytes, on_done: Callable[[Completion], None],
                       ) -> Completion | None:
        """``raft_apply`` without a coroutine (the fast HTTP front's writes): the proposal's
        outcome goes to ``on_done`` from the Ready loop, to be read with ``write_outcome``;
        None when it must take the full path (no node, not the leader any more, a restore
        holding new entries)."""
        node = self.node
        if node is None:
            return None
        try:
            return cast(Completion | None, node.propose_nowait(command, on_done))
        except (NotLeaderError, ProposalDroppedError):
            return None

    def write_outcome(self, proposal: Completion, *, may_delete: bool = False) -> Any:
        """The FSM's result of a ``propose_nowait`` future, or ``RETRY`` when nothing was
        applied and the request must run again (it then forwards); raises as ``raft_apply``."""
        exc = proposal.exception()
        if exc is None:
            return self._written(proposal.result(), may_delete)
        if not isinstance(exc, NotLeaderError | RaftError):
            raise exc
        error = _write_error(exc)
        if isinstance(error, _Retry):
            return RETRY
        raise error from None

    async def prepare_read(self, options: QueryOptions) -> None:
        """A consistent read first confirms leadership with a quorum round (ReadIndex)."""
        if options.require_consistent:
            node = self.node
            if node is None:
                raise _Retry()
            try:
                await node.verify_leader()
            except NotLeaderError:
                raise _Retry() from None
            except RaftError as exc:
                raise RPCError(f"consistent read: {exc}") from None

    async def blocking_query(self, args: dict[str, Any], read: ReadFn, name: str) -> RawMsgpack:
        """Consul's blockingQuery: run ``read`` (it fills the watch set), waiting while its
        index equals MinQueryIndex; the reply map is QueryMeta plus ``name``."""
        options = QueryOptions.from_args(args)
        await self.prepare_read(options)
        index, raw = await self.state.blocking_query(
            read, options.min_index, options.max_wait,
            default_query_time=self.config.default_query_time,
            max_query_time=self.config.max_query_time,
        )
        return raw_reply(self.query_meta(index), name, raw)

    def read_txn(self, ops: list[TxnOp]) -> TxnResult:
        """A read-only transaction against the current state (never committed)."""
        return self.state.begin().txn(self.state.index, ops, time.time_ns())

    # ------------------------------------------------- in-process callers (the HTTP layer)
    def retrying(
        self, endpoint: Callable[[dict[str, Any]], Awaitable[Any]]
    ) -> Callable[[dict[str, Any]], Awaitable[Any]]:
        """``endpoint`` run again while leadership moves, as the RPC handlers are; for
        callers in this process that compose forward() and local_query()."""
        return self._retrying(endpoint)

    async def local_query(self, args: dict[str, Any], read: ReadFn) -> tuple[int, Any]:
        """A read this server answers (forward() said so): the consistency check, then
        Consul's blocking query; ``(index, what read returned)``, no RPC reply built."""
        options = QueryOptions.from_args(args)
        await self.prepare_read(options)
        return await self.state.blocking_query(
            read, options.min_index, options.max_wait,
            default_query_time=self.config.default_query_time,
            max_query_time=self.config.max_query_time,
        )

    def query_meta(self, index: int) -> dict[str, Any]:
        node = self.node
        known_leader = node is not None and node.leader() is not None
        last_contact = 0
        if node is not None:
            contact = node.last_contact()
            last_contact = int(contact * 1e9) if contact is not None else 0
        return {"Index": max(index, 1), "KnownLeader": known_leader, "LastContact": last_contact}

    def check_value_size(self, value: bytes) -> None:
        if len(value) > self.config.max_value_size:
            raise ValueError(f"{VALUE_TOO_LARGE}: {len(value)} bytes, the limit is "
                             f"{self.config.max_value_size}")

    # ----------------------------------------------------------------- status, operator
    def require_node(self) -> RaftNode:
        if self.node is None:
            raise RPCError(NO_LEADER)
        return self.node

    def leader_address(self) -> str:
        node = self.node
        if node is None:
            return ""
        leader = node.leader()
        if leader is None:
            return ""
        if leader == node.id:
            return self.address
        return node.configuration().all_servers().get(leader, "")

    async def save_snapshot(self) -> tuple[str, int, int]:
        """Serialize the state as of now (an O(1) copy, written out in a worker thread);
        ``(id, size, index)``. The body is kept for Snapshot.Read until read or expired."""
        node = self.require_node()
        image = self.fsm.snapshot(node.stats()["term"])
        body = await asyncio.to_thread(image.to_bytes)
        now = time.monotonic()
        self._saved = {k: v for k, v in self._saved.items() if v[1] > now}
        snapshot_id = uuid.uuid4().hex
        self._saved[snapshot_id] = (body, now + SNAPSHOT_HOLD)
        return snapshot_id, len(body), image.index

    def read_snapshot(self, snapshot_id: str, offset: int) -> tuple[bytes, bool]:
        """One chunk of a saved snapshot from ``offset``; the last one drops it."""
        saved = self._saved.get(snapshot_id)
        if saved is None:
            raise RPCError(f"unknown or expired snapshot ID {snapshot_id!r}")
        body = saved[0]
        if offset > len(body):
            raise ValueError(f"Offset {offset} is past the snapshot's {len(body)} bytes")
        chunk = body[offset : offset + SNAPSHOT_CHUNK]
        eof = offset + len(chunk) >= len(body)
        if eof:
            del self._saved[snapshot_id]
        else:
            self._saved[snapshot_id] = (body, time.monotonic() + SNAPSHOT_HOLD)
        return chunk, eof

    def raft_configuration(self) -> dict[str, Any]:
        node = self.require_node()
        conf: Configuration = node.configuration()
        leader = node.leader()
        servers = [
            {"ID": sid, "Node": sid, "Address": address, "Leader": sid == leader,
             "Voter": sid in conf.voters, "ProtocolVersion": "3"}
            for sid, address in sorted(conf.all_servers().items())
        ]
        return {"Servers": servers, "Index": node.applied_index}

    async def remove_peer(self, server_id: str, address: str) -> dict[str, Any]:
        node = self.require_node()
        members = node.configuration().all_servers()
        if not server_id:
            if not address:
                raise ValueError("Must specify either ID or Address")
            matches = [sid for sid, addr in members.items() if addr == address]
            if not matches:
                raise RPCError(f"address {address!r} was not found in the Raft configuration")
            server_id = matches[0]
        elif server_id not in members:
            raise RPCError(f"id {server_id!r} was not found in the Raft configuration")
        await _on_leader(node.remove_server(server_id), f"remove peer {server_id}")
        return {}

    async def transfer_leader(self, server_id: str | None) -> dict[str, Any]:
        node = self.require_node()
        if server_id is not None and server_id not in node.configuration().voters:
            raise RPCError(f"cannot transfer leadership to {server_id!r}: not a voter")
        await _on_leader(node.transfer_leadership(server_id), "transfer leadership")
        return {"Success": True}


async def _on_leader(call: Awaitable[Any], what: str) -> Any:
    """Await a leader-only node call: NotLeaderError retries through forward(), other
    refusals become the error reply."""
    try:
        return await call
    except NotLeaderError:
        raise _Retry() from None
    except (RaftError, ValueError) as exc:
        raise RPCError(f"{what}: {exc}") from None

