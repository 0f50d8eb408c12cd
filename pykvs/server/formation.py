"""Cluster formation: bootstrap, ``--bootstrap-expect`` and ``--join`` (Consul's serf-driven
bootstrap, done here with one RPC, ``Internal.Join``).

A server with no state that must find its cluster first listens with a discovery RPC server on
its port (answering only ``Internal.Join`` and ``Status.Ping``), and introduces itself to its
``join`` addresses until either one answers from a formed cluster (then it starts its Raft node
knowing the members and asks to be made a voter) or ``bootstrap_expect`` servers know of each
other (then they all start their nodes with the same founding membership). The discovery
listener hands the port over to the Raft node, so the address in the membership is the one it
was introduced by.

Who may join (without TLS or ``--encrypt`` a caller cannot prove it is a server)
-------------------------------------------------------------------------------
- **Founding** (``bootstrap_expect``): an introduction is heard only from an address in this
  server's own ``join`` list, or from a server that says it forms a cluster of the same expected
  size. Either way it is only a *candidate*: it counts towards ``bootstrap_expect`` once this
  server has itself called it back and it answered as a forming server (naming itself, with the
  same expected size, or from an address of the ``join`` list). An anonymous call naming an
  address nobody answers at founds nothing.
- **A formed cluster**: ``Add`` (make me a voter) needs, once ACLs are bootstrapped, a token with
  ``operator:write`` (as Consul's raft operations); with ACLs off, or before their bootstrap
  (when anyone may take the management token anyway), it is allowed as before. The cluster id
  is in the answer only for a caller that may add itself; a joining server stores it before
  its node starts (``acl_agent_token`` is the token it presents).
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from typing import TYPE_CHECKING, Any, Protocol

from pykvs.netaddr import split_address
from pykvs.raft import auth
from pykvs.raft.cluster_id import store_cluster_id
from pykvs.raft.node import NotLeaderError
from pykvs.server.args import field_bool, field_str
from pykvs.server.rpc import ConnectionPool, RPCError, RPCServer
from pykvs.server.seam import NO_LEADER, Endpoint, Retry

if TYPE_CHECKING:
    from pykvs.acl import Authorizer
    from pykvs.raft.node import RaftNode
    from pykvs.raft.storage import LMDBStorage
    from pykvs.server.acl import ServerACL
    from pykvs.server.config import ServerConfig
    from pykvs.state.store import StateStore

log = logging.getLogger(__name__)


class FormingServer(Protocol):
    """What formation needs of its server."""

    config: ServerConfig
    pool: ConnectionPool
    address: str
    node: RaftNode | None
    storage: LMDBStorage | None
    acl: ServerACL
    state: StateStore

    def authorize(self, args: dict[str, Any]) -> Authorizer: ...

    async def forward(self, method: str, args: dict[str, Any], *,
                      read: bool) -> tuple[bool, Any]: ...

    async def start_node(self, port: int, *, bootstrap: bool, peers: dict[str, str]) -> None: ...


class Formation:
    """Discovery, Internal.Join and the hand-over to the Raft node, for one server."""

    def __init__(self, server: FormingServer) -> None:
        self.server = server
        self.known: dict[str, str] = {}  # founders met (and checked) for bootstrap_expect
        self.candidates: dict[str, str] = {}  # introduced, to be called back before counted
        self.rounds = 0  # rounds of introductions made
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
        """A server introduces itself. Before the cluster forms, remember it as a candidate
        founder; after, answer the membership, and with ``Add`` make it a voter (see the
        module docstring for who may)."""
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
        key = server.config.encrypt_key
        if key and not auth.verify(key, "join", _signed(args), args.get("Proof")):
            raise RPCError(f"Internal.Join: {server_id} did not prove the encrypt key")
        if add and server.node is not None:
            forwarded, reply = await server.forward("Internal.Join", args, read=False)
            if forwarded:
                return dict(reply)
        reply = await self._join(args, server_id, address, add, proven=bool(key))
        if key:
            reply["Proof"] = auth.sign(key, "join-reply", [args.get("Nonce"), *_signed(reply)])
        return reply

    async def _join(self, args: dict[str, Any], server_id: str, address: str, add: bool, *,
                    proven: bool) -> dict[str, Any]:
        node = self.server.node
        if node is None:
            return self._introduced(server_id, address, args.get("BootstrapExpect"))
        if add:
            if not proven:  # a server that proved the encrypt key is one of ours
                self._may_add(args, strict=True)
            await self._add_voter(node, server_id, address)
        members = node.configuration().all_servers()
        if not members:  # a founder whose node has not applied its first membership yet
            return self._discovery_reply()
        reply = {"Cluster": True, "Servers": members}
        if node.cluster_id and (add or proven or self._may_add(args, strict=False)):
            reply["ClusterID"] = node.cluster_id
        return reply

    def _introduced(self, server_id: str, address: str, expect: Any) -> dict[str, Any]:
        """An introduction before the cluster forms: a candidate founder (module docstring)."""
        cfg = self.server.config
        forming = cfg.bootstrap_expect > 1 and expect == cfg.bootstrap_expect
        if address not in cfg.join and not forming:
            raise RPCError(f"Internal.Join: server {server_id} at {address} is not in this "
                           f"server's join list and does not form a cluster of "
                           f"{cfg.bootstrap_expect} servers")
        if server_id not in self.known:
            self.candidates[server_id] = address
        return self._discovery_reply()

    def _discovery_reply(self) -> dict[str, Any]:
        cfg = self.server.config
        return {"Cluster": False, "ID": cfg.node_name, "BootstrapExpect": cfg.bootstrap_expect,
                "Servers": {**self.known, cfg.node_name: self.server.address}}

    def _may_add(self, args: dict[str, Any], *, strict: bool) -> bool:
        """Whether the caller may make a server a member: operator:write once ACLs are
        bootstrapped (raises PermissionDenied when ``strict``)."""
        server = self.server
        if not server.acl.enabled or not server.state.snapshot().acl.bootstrap_index:
            return True
        authz = server.authorize(args)
        if strict:
            authz.require_operator_write()
        return authz.operator_write()

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
        introduce: dict[str, Any] = {"ID": cfg.node_name, "Address": server.address,
                                     "Datacenter": cfg.datacenter,
                                     "BootstrapExpect": cfg.bootstrap_expect}
        if cfg.acl_agent_token:
            introduce["Token"] = cfg.acl_agent_token
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

    async def _introduce(self, introduce: dict[str, Any], attempt: int) -> dict[str, Any] | None:
        """One round of introductions, to the join list and the candidates; the answer of a
        formed cluster, if one answered. A forming server that answers is a founder."""
        server = self.server
        cfg = server.config
        self.rounds += 1
        targets = dict.fromkeys([*cfg.join, *self.candidates.values()])
        for target in targets:
            if target == server.address:
                continue
            try:
                reply = await self._call(target, introduce, 5.0)
            except (TimeoutError, OSError, ConnectionError, RPCError) as exc:
                if attempt % 20 == 0:
                    log.info("%s: join %s: %s (retrying)", cfg.node_name, target, exc)
                continue
            servers = {str(k): str(v) for k, v in reply["Servers"].items()}
            if reply["Cluster"] and servers:  # a cluster with no members is still forming
                return {**reply, "Servers": servers}
            self._met(target, reply, servers)
        return None

    def _met(self, target: str, reply: dict[str, Any], servers: dict[str, str]) -> None:
        """A forming server answered our introduction at ``target``: a founder if it is one we
        were told to join or forms a cluster of our size; the others it knows are candidates."""
        cfg = self.server.config
        their_id = str(reply.get("ID") or "")
        if their_id and (target in cfg.join or reply.get("BootstrapExpect") ==
                         cfg.bootstrap_expect):
            self.known[their_id] = servers.get(their_id, target)
            self.candidates.pop(their_id, None)
        elif not their_id and target in cfg.join:  # a server from before this check
            self.known.update(servers)
        for sid, address in servers.items():
            if sid not in self.known:
                self.candidates[sid] = address

    async def _hand_over_port(self, *, bootstrap: bool, peers: dict[str, str]) -> None:
        assert self.discovery is not None
        port = split_address(self.server.address)[1]
        await self.discovery.close()
        self.discovery = None
        await self.server.start_node(port, bootstrap=bootstrap, peers=peers)

    async def _join_cluster(self, cluster: dict[str, Any]) -> None:
        """Start the node knowing the members' addresses (and the cluster id, when the cluster
        told it), then ask to be made a voter (unless the membership already has us: a founder
        of a bootstrap_expect cluster)."""
        server = self.server
        cfg = server.config
        servers: dict[str, str] = cluster["Servers"]
        log.info("%s: joining the cluster of %s", cfg.node_name, sorted(servers))
        cluster_id = cluster.get("ClusterID")
        if isinstance(cluster_id, str) and cluster_id and server.storage is not None:
            store_cluster_id(server.storage.log, cluster_id)
        await self._hand_over_port(bootstrap=False, peers=servers)
        if servers.get(cfg.node_name) == server.address:
            return
        args = {"ID": cfg.node_name, "Address": server.address, "Datacenter": cfg.datacenter,
                "Add": True}
        if cfg.acl_agent_token:
            args["Token"] = cfg.acl_agent_token
        targets = [a for a in servers.values() if a != server.address]
        attempt = 0
        while True:
            for target in targets:
                try:
                    await self._call(target, args, max(10.0, 2 * cfg.rpc_hold_timeout))
                    log.info("%s: joined the cluster through %s", cfg.node_name, target)
                    return
                except (TimeoutError, OSError, ConnectionError, RPCError) as exc:
                    if attempt % 20 == 0:
                        log.info("%s: join through %s: %s (retrying)", cfg.node_name, target,
                                 exc)
            attempt += 1
            await asyncio.sleep(cfg.join_retry_interval * (0.5 + random.random()))

    async def _call(self, target: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Internal.Join at ``target``; with an encrypt key, the call proves it and the
        answer must prove it too (for this call: its nonce)."""
        key = self.server.config.encrypt_key
        if key:
            args = {**args, "Nonce": secrets.token_bytes(16)}
            args["Proof"] = auth.sign(key, "join", _signed(args))
        reply = dict(await self.server.pool.call(split_address(target), "Internal.Join", args,
                                                 timeout=timeout))
        if key and not auth.verify(key, "join-reply", [args["Nonce"], *_signed(reply)],
                                   reply.get("Proof")):
            raise RPCError(f"the server at {target} did not prove the encrypt key")
        return reply

    async def close(self) -> None:
        if self.discovery is not None:
            await self.discovery.close()


def _signed(fields: dict[str, Any]) -> list[Any]:
    """What the proof of an Internal.Join call (or of its answer) covers."""
    return [fields.get(name) for name in ("ID", "Address", "Datacenter", "Add", "BootstrapExpect",
                                          "Nonce", "Cluster", "ClusterID", "Servers")]
