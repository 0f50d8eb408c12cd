"""Cluster formation: bootstrap, ``--bootstrap-expect`` and ``--join`` (Consul's serf-driven
bootstrap, done here with one RPC, ``Internal.Join``).

A server with no state that must find its cluster first listens with a discovery RPC server on
its port (answering only ``Internal.Join`` and ``Status.Ping``), and introduces itself to its
``join`` addresses until either one answers from a formed cluster (then it starts its Raft node
knowing the members and asks to be made a voter) or ``bootstrap_expect`` servers know of each
other (then they all start their nodes with the same founding membership). The discovery
listener hands the port over to the Raft node, so the address in the membership is the one it
was introduced by.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING, Any, Protocol

from pykvs.netaddr import split_address
from pykvs.raft.node import NotLeaderError
from pykvs.server.args import field_bool, field_str
from pykvs.server.rpc import ConnectionPool, RPCError, RPCServer
from pykvs.server.seam import NO_LEADER, Endpoint, Retry

if TYPE_CHECKING:
    from pykvs.raft.node import RaftNode
    from pykvs.server.config import ServerConfig

log = logging.getLogger(__name__)


class FormingServer(Protocol):
    """What formation needs of its server."""

    config: ServerConfig
    pool: ConnectionPool
    address: str
    node: RaftNode | None

    async def forward(self, method: str, args: dict[str, Any], *,
                      read: bool) -> tuple[bool, Any]: ...

    async def start_node(self, port: int, *, bootstrap: bool, peers: dict[str, str]) -> None: ...


class Formation:
    """Discovery, Internal.Join and the hand-over to the Raft node, for one server."""

    def __init__(self, server: FormingServer) -> None:
        self.server = server
        self.known: dict[str, str] = {}  # servers met while waiting for bootstrap_expect
        self.discovery: RPCServer | None = None

    def discovery_handlers(self, names: list[str], ping: Endpoint) -> dict[str, Endpoint]:
        """Before the node exists: Internal.Join and Status.Ping; every other method says
        there is no leader."""

        async def no_leader(args: dict[str, Any]) -> Any:
            raise RPCError(NO_LEADER)

        handlers: dict[str, Endpoint] = {name: no_leader for name in names}
        handlers["Internal.Join"] = self.internal_join
        handlers["Status.Ping"] = ping
        return handlers

    async def internal_join(self, args: dict[str, Any]) -> dict[str, Any]:
        """A server introduces itself. Before the cluster forms, remember it (for
        bootstrap_expect); after, answer the membership, and with ``Add`` make it a voter."""
        server = self.server
        server_id = field_str(args, "ID")
        address = field_str(args, "Address")
        datacenter = field_str(args, "Datacenter")
        add = field_bool(args, "Add")
        if not server_id or not address:
            raise ValueError("Internal.Join needs ID and Address")
        split_address(address)
        if datacenter != server.config.datacenter:
            raise RPCError(f"server {server_id} is in datacenter {datacenter!r}, this server is "
                           f"in {server.config.datacenter!r}: use join_wan across datacenters")
        node = server.node
        if node is None:
            self.known[server_id] = address
            return {"Cluster": False, "Servers": {**self.known,
                                                  server.config.node_name: server.address}}
        if add:
            forwarded, reply = await server.forward("Internal.Join", args, read=False)
            if forwarded:
                return dict(reply)
            await self._add_voter(node, server_id, address)
        return {"Cluster": True, "Servers": node.configuration().all_servers()}

    async def _add_voter(self, node: RaftNode, server_id: str, address: str) -> None:
        conf = node.configuration()
        if conf.voters.get(server_id) == address:
            return
        if server_id in conf.all_servers():
            raise RPCError(f"server {server_id} is already a member at "
                           f"{conf.all_servers()[server_id]}; remove it first")
        try:
            await node.add_voter(server_id, address)
        except NotLeaderError:
            raise Retry() from None
        log.info("%s: added server %s at %s", self.server.config.node_name, server_id, address)

    async def form_cluster(self) -> None:
        """Discovery: meet servers through ``join`` until a cluster can be joined or
        ``bootstrap_expect`` servers are known, then hand the port to the Raft node."""
        server = self.server
        cfg = server.config
        self.known[cfg.node_name] = server.address
        introduce = {"ID": cfg.node_name, "Address": server.address,
                     "Datacenter": cfg.datacenter}
        attempt = 0
        while True:
            cluster = await self._introduce(introduce, attempt)
            if cluster is not None:
                await self._join_cluster(cluster)
                return
            if cfg.bootstrap_expect > 1 and len(self.known) >= cfg.bootstrap_expect:
                peers = dict(self.known)
                log.info("%s: %d servers known, bootstrapping the cluster: %s", cfg.node_name,
                         len(peers), sorted(peers))
                await self._hand_over_port(bootstrap=True, peers=peers)
                return
            attempt += 1
            await asyncio.sleep(cfg.join_retry_interval * (0.5 + random.random()))

    async def _introduce(self, introduce: dict[str, Any], attempt: int) -> dict[str, str] | None:
        """One round of introductions; the members of a formed cluster, if one answered."""
        server = self.server
        for target in server.config.join:
            if target == server.address:
                continue
            try:
                reply = await server.pool.call(split_address(target), "Internal.Join",
                                               introduce, timeout=5.0)
            except (TimeoutError, OSError, ConnectionError, RPCError) as exc:
                if attempt % 20 == 0:
                    log.info("%s: join %s: %s (retrying)", server.config.node_name, target, exc)
                continue
            servers = {str(k): str(v) for k, v in reply["Servers"].items()}
            if reply["Cluster"]:
                return servers
            self.known.update(servers)
        return None

    async def _hand_over_port(self, *, bootstrap: bool, peers: dict[str, str]) -> None:
        assert self.discovery is not None
        port = split_address(self.server.address)[1]
        await self.discovery.close()
        self.discovery = None
        await self.server.start_node(port, bootstrap=bootstrap, peers=peers)

    async def _join_cluster(self, servers: dict[str, str]) -> None:
        """Start the node knowing the members' addresses, then ask to be made a voter (unless
        the membership already has us: a founder of a bootstrap_expect cluster)."""
        server = self.server
        cfg = server.config
        log.info("%s: joining the cluster of %s", cfg.node_name, sorted(servers))
        await self._hand_over_port(bootstrap=False, peers=servers)
        if servers.get(cfg.node_name) == server.address:
            return
        args = {"ID": cfg.node_name, "Address": server.address, "Datacenter": cfg.datacenter,
                "Add": True}
        targets = [a for a in servers.values() if a != server.address]
        attempt = 0
        while True:
            for target in targets:
                try:
                    await server.pool.call(split_address(target), "Internal.Join", args,
                                           timeout=max(10.0, 2 * cfg.rpc_hold_timeout))
                    log.info("%s: joined the cluster through %s", cfg.node_name, target)
                    return
                except (TimeoutError, OSError, ConnectionError, RPCError) as exc:
                    if attempt % 20 == 0:
                        log.info("%s: join through %s: %s (retrying)", cfg.node_name, target,
                                 exc)
            attempt += 1
            await asyncio.sleep(cfg.join_retry_interval * (0.5 + random.random()))

    async def close(self) -> None:
        if self.discovery is not None:
            await self.discovery.close()
