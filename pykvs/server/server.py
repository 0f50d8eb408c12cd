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
import logging
from collections.abc import Coroutine
from typing import Any, cast

from pykvs.fsm import FSM
from pykvs.netaddr import split_address
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
from pykvs.server.acl import ServerACL
from pykvs.server.args import QueryOptions
from pykvs.server.config import DEFAULT_MAX_VALUE_SIZE, ServerConfig
from pykvs.server.datadir import DataDir
from pykvs.server.endpoints import Endpoints, SavedSnapshots, to_wire
from pykvs.server.formation import Formation
from pykvs.server.forwarding import Forwarder
from pykvs.server.identity import ServerIdentity
from pykvs.server.leader import LeaderDuties
from pykvs.server.limits import PerClientCounter
from pykvs.server.rpc import ConnectionPool, RPCError, RPCServer
from pykvs.server.seam import NO_LEADER, Endpoint, ReadFn, Retry, WriteDone

__all__ = ["DEFAULT_MAX_VALUE_SIZE", "NO_LEADER", "Server", "ServerConfig"]

log = logging.getLogger(__name__)


def _write_error(exc: NotLeaderError | RaftError) -> Exception:
    """What a failed proposal means for its request: Retry when nothing was applied (it
    then forwards to the new leader), else an RPCError for the caller."""
    if isinstance(exc, NotLeaderError | ProposalDroppedError):
        return Retry()
    if isinstance(exc, LeadershipLostError):
        return RPCError(f"leadership lost while committing the write; its outcome is unknown "
                        f"({exc})")
    return RPCError(f"raft: {exc}")


class Server:
    """A pykvs server. ``await start()`` listens (the address is then known) and forms or
    rejoins the cluster in the background; ``await close()`` stops it.

    Composition: the data directory (datadir.py), formation (formation.py), forwarding
    (forwarding.py), the leader's duties (leader.py), the endpoints (endpoints/) and the RPC
    server (rpc.py) around one Raft node, FSM and state store. The methods here are the seam
    the endpoints use (pykvs.server.seam.ServerCore)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.fsm = FSM()
        self.state = self.fsm.store
        self.acl = ServerACL(bool(config.acl_enabled), config.acl_default_policy,
                             lambda: self.state.snapshot().acl)
        self.authorize = self.acl.authorize  # the seam's authorize, without a call between
        self.data_dir = DataDir(config.data_dir, config.node_name, config.datacenter)
        self.storage: LMDBStorage | None = None
        self.node: RaftNode | None = None
        self.address = ""
        self.leader_duties = LeaderDuties(config, self.state, self.raft_apply)
        self.sessions = self.leader_duties.sessions
        self.tombstones = self.leader_duties.tombstones
        self.tls_server = config.tls.server_context()
        # verify_server_hostname: peers prove server.<dc>.<domain> (identity.py, tls.py).
        self.identity = (ServerIdentity(config.tls, config.datacenter)
                         if config.tls.verify_server_hostname else None)
        self.pool = ConnectionPool(ssl=config.tls.client_context(config.datacenter))
        self.forwarder = Forwarder(config, self.pool, lambda: self.node, lambda: self.address)
        self.applies_here = self.forwarder.applies_here  # per fast write: no extra call
        self.reads_here = self.forwarder.reads_here
        self.formation = Formation(self)
        self.endpoints = Endpoints(self, SavedSnapshots(self._state_image))
        # Method name -> endpoint, run again while leadership moves: ``calls`` answer
        # results (the HTTP codecs render them), ``handlers`` what the RPC server sends.
        self.calls: dict[str, Endpoint] = {
            name: self.forwarder.retrying(endpoint)
            for name, endpoint in self.endpoints.table().items()}
        self.calls["Internal.Join"] = self.forwarder.retrying(self.formation.internal_join)
        self.handlers = {name: to_wire(call) for name, call in self.calls.items()}
        self.blocking_rpc = PerClientCounter(config.limits.max_blocking_per_client,
                                             "blocking queries")
        self.rpc = self._rpc_server(self.handlers)
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    # -------------------------------------------------------------------------- lifecycle
    async def start(self) -> str:
        """Open the data directory and listen; returns the server address ``host:port``."""
        cfg = self.config
        self.storage = self.data_dir.open()
        port = self.data_dir.port_to_use(cfg.bind, cfg.port)
        log_store = self.storage.log
        has_state = log_store.last_index() > 0 or log_store.snapshot_meta() is not None
        try:
            if has_state:
                log.info("%s: restarting from %s", cfg.node_name, cfg.data_dir)
                await self.start_node(port, bootstrap=False, peers={})
            elif cfg.join or cfg.bootstrap_expect > 1:
                await self._discover(port)
            elif cfg.bootstrap or cfg.bootstrap_expect == 1:
                log.info("%s: bootstrapping a new one-server cluster", cfg.node_name)
                await self.start_node(port, bootstrap=True, peers={})
            else:
                raise ValueError("no state, no join address and bootstrap disabled: this server "
                                 "has no way to find a cluster")
        except BaseException:
            await self.close()
            raise
        self.data_dir.write_meta(self.address)
        return self.address

    async def _discover(self, port: int) -> None:
        """Listen with the discovery RPC server, and form the cluster in the background."""
        handlers = self.formation.discovery_handlers(list(self.handlers),
                                                     self.handlers["Status.Ping"])
        discovery = self.formation.discovery = self._rpc_server(handlers)
        host, port = await discovery.start(self.config.bind, port, ssl=self.tls_server)
        self.address = f"{host}:{port}"
        self._spawn(self.formation.form_cluster(), "form cluster")

    async def start_node(self, port: int, *, bootstrap: bool, peers: dict[str, str]) -> None:
        """Start the Raft node on ``port`` (it then owns the listener; see above)."""
        cfg = self.config
        assert self.storage is not None
        node_config = NodeConfig(
            cfg.node_name, tick_interval=cfg.tick_interval, election_tick=cfg.election_tick,
            snapshot_threshold=cfg.snapshot_threshold,
            **{"make_cluster_id": True, **cfg.raft_options},
        )
        node = RaftNode(
            node_config, self.storage.log, self.storage.snapshots, self.fsm,
            bind=f"{cfg.bind}:{port}", peers=peers, bootstrap=bootstrap,
            transport_options={"on_other_connection": self.rpc.serve_handoff,
                               "ssl_server": self.tls_server, "ssl_client": self.pool.ssl,
                               # RPC clients are refused (with an error) by the RPC server;
                               # this backstop leaves room for the Raft links of 32 peers.
                               "max_inbound": cfg.limits.rpc_max_conns + 64,
                               "max_first_frame": cfg.limits.rpc_max_frame,
                               "auth_key": cfg.encrypt_key,
                               "peer_check": self.identity and self.identity.raft_check},
        )
        await node.start()
        self.node = node
        self.address = node.address
        self._spawn(self.leader_duties.watch(node), "leadership watch")

    def _rpc_server(self, handlers: dict[str, Endpoint]) -> RPCServer:
        limits = self.config.limits
        rpc = RPCServer(handlers, max_frame=limits.rpc_max_frame,
                        max_connections=limits.rpc_max_conns, blocking=self.blocking_rpc,
                        uncounted=self._is_other_server_host, connection_errors=True,
                        read_timeout=limits.rpc_read_timeout,
                        idle_timeout=limits.rpc_idle_timeout)
        if self.identity is not None:
            rpc.handlers_for = self.identity.handlers_for(handlers)
        return rpc

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
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.leader_duties.close()
        await self.formation.close()
        await self.rpc.close()
        if self.node is not None:
            await self.node.close()
        await self.pool.close()
        await self.forwarder.close()
        if self.storage is not None:
            self.storage.close()

    @property
    def closed(self) -> bool:
        """Whether ``close()`` has been called."""
        return self._closing

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

    # ------------------------------------------------- the seam (pykvs.server.seam)
    async def forward(self, method: str, args: dict[str, Any], *, read: bool) -> tuple[bool, Any]:
        return await self.forwarder.forward(method, args, read=read)

    async def forward_dc_only(self, method: str, args: dict[str, Any]) -> tuple[bool, Any]:
        return await self.forwarder.forward_dc_only(method, args)

    def leader_address(self) -> str:
        return self.forwarder.leader_address()

    async def raft_apply(self, command: bytes, *, may_delete: bool = False) -> Any:
        node = self.node
        if node is None:
            raise Retry()
        try:
            result = await node.apply(command)
        except (NotLeaderError, RaftError) as exc:
            raise _write_error(exc) from None
        return self._written(result, may_delete)

    def raft_apply_nowait(self, command: bytes, on_done: WriteDone, *,
                          may_delete: bool = False) -> bool:
        node = self.node
        if node is None:
            return False

        def done(proposal: Completion) -> None:
            exc = proposal.exception()
            if exc is None:
                result = self._written(proposal.result(), may_delete)
                if isinstance(result, Exception):  # the FSM's refusal, as raise_if_error
                    on_done(None, RPCError(str(result)))
                else:
                    on_done(result, None)
            elif isinstance(exc, NotLeaderError | RaftError):
                on_done(None, _write_error(exc))
            else:
                on_done(None, exc)

        try:
            return cast(Completion | None, node.propose_nowait(command, done)) is not None
        except (NotLeaderError, ProposalDroppedError):
            return False

    def _written(self, result: Any, may_delete: bool) -> Any:
        if may_delete:
            self.tombstones.hint(self.state.index)
        return result

    async def prepare_read(self, args: dict[str, Any]) -> None:
        if QueryOptions.from_args(args).require_consistent:
            await self._verify_leader()

    async def _verify_leader(self) -> None:
        node = self.node
        if node is None:
            raise Retry()
        try:
            await node.verify_leader()
        except NotLeaderError:
            raise Retry() from None
        except RaftError as exc:
            raise RPCError(f"consistent read: {exc}") from None

    async def local_query(self, args: dict[str, Any], read: ReadFn) -> tuple[int, Any]:
        options = QueryOptions.from_args(args)
        if options.require_consistent:
            await self._verify_leader()
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

    def require_node(self) -> RaftNode:
        if self.node is None:
            raise RPCError(NO_LEADER)
        return self.node

    def _state_image(self) -> Any:
        """A point-in-time image of the state for Snapshot.Save."""
        return self.fsm.snapshot(self.require_node().stats()["term"])

    # ----------------------------------------------------------- what the agent shows
    def raft_servers(self) -> dict[str, str]:
        """Server ID -> address of the current membership ({} while the cluster forms)."""
        return self.node.configuration().all_servers() if self.node is not None else {}

    def raft_stats(self) -> dict[str, Any] | None:
        """The Raft node's figures (term, indexes, role), None while the cluster forms."""
        return self.node.stats() if self.node is not None else None
