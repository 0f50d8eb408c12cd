"""Where a request is answered: Consul's ``forward()`` and the RPC hold.

A request for another datacenter goes to a server of that datacenter (from ``join_wan``, the
next one when one is down). A write, or a read that is not ``stale``, goes to the leader; while
no leader is known it waits up to ``rpc_hold_timeout`` (Consul's RPCHoldTimeout) and then
fails with "No cluster leader". An endpoint that finds leadership moved before it proposed
anything raises ``Retry``; ``retrying`` runs it again (and the new try forwards).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pykvs.netaddr import split_address
from pykvs.server.args import QueryOptions, field_str
from pykvs.server.rpc import ConnectionLost, ConnectionPool, RPCError
from pykvs.server.seam import NO_LEADER, Endpoint, Retry

if TYPE_CHECKING:
    from pykvs.raft.node import RaftNode
    from pykvs.server.config import ServerConfig

log = logging.getLogger(__name__)


class Forwarder:
    """Forwarding for one server: ``node()`` is its Raft node (None while the cluster
    forms), ``address()`` its own RPC address."""

    def __init__(self, config: ServerConfig, pool: ConnectionPool,
                 node: Callable[[], RaftNode | None], address: Callable[[], str]) -> None:
        self.config = config
        self.pool = pool
        self._node = node
        self._address = address
        # verify_server_hostname: another datacenter's servers name server.<it>.<domain>, so
        # they are dialled with a context that checks that name (pykvs.server.tls).
        self.wan_pools: dict[str, ConnectionPool] = {}

    def retrying(self, endpoint: Endpoint) -> Endpoint:
        """``endpoint`` run again while it raises Retry, up to the hold time."""

        async def handler(args: dict[str, Any]) -> Any:
            # time.monotonic(), not the loop's clock: asyncio.get_running_loop() makes a
            # getpid() system call, and this runs for every RPC.
            deadline = time.monotonic() + self.config.rpc_hold_timeout
            while True:
                try:
                    return await endpoint(args)
                except Retry:
                    if time.monotonic() >= deadline:
                        raise RPCError(NO_LEADER) from None
                    await asyncio.sleep(self._stagger())

        return handler

    def _stagger(self) -> float:
        """Consul waits RandomStagger(RPCHoldTimeout / 16) between tries; kept short here."""
        return min(0.02 + random.random() * self.config.rpc_hold_timeout / 16, 0.2)

    def _other_dc(self, args: dict[str, Any]) -> str:
        """The datacenter ``args`` names when it is not this one, else ""."""
        datacenter = field_str(args, "Datacenter")
        return datacenter if datacenter and datacenter != self.config.datacenter else ""

    def _leads(self) -> bool:
        node = self._node()
        return node is not None and node.is_leader()

    def reads_here(self, args: dict[str, Any]) -> bool:
        """The decision ``forward(..., read=True)`` makes first for a read that does not ask
        for consistency: answered here right now (a stale read on any server that has a
        node, a default read on the leader)."""
        if self._other_dc(args):
            return False
        if args.get("AllowStale") is True:
            return self._node() is not None
        return self._leads()

    def applies_here(self, args: dict[str, Any]) -> bool:
        """The decision ``forward(..., read=False)`` makes first: answered here right now."""
        return not self._other_dc(args) and self._leads()

    async def forward(self, method: str, args: dict[str, Any], *, read: bool) -> tuple[bool, Any]:
        """``(True, reply)`` when another server answered, ``(False, None)`` to answer here."""
        datacenter = self._other_dc(args)
        if datacenter:
            return True, await self._forward_dc(datacenter, method, args, read=read)
        if read and QueryOptions.from_args(args).allow_stale:
            if self._node() is None:
                raise RPCError(NO_LEADER)
            return False, None
        deadline = time.monotonic() + self.config.rpc_hold_timeout  # see retrying
        while True:
            if self._leads():
                return False, None
            address = self.leader_address()
            if address and address != self._address():
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
        datacenter = self._other_dc(args)
        if datacenter:
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
        pool = self._pool_for(datacenter)
        for address in servers[start:] + servers[:start]:
            try:
                return await pool.call(split_address(address), method, args)
            except ConnectionLost as exc:
                if not read:
                    raise RPCError(f"connection to {address} in datacenter {datacenter} was "
                                   f"lost; the write's outcome is unknown") from None
                failures.append(f"{address}: {exc}")
            except OSError as exc:
                failures.append(f"{address}: {exc}")
        raise RPCError(f"No path to datacenter {datacenter!r}: " + "; ".join(failures))

    def _pool_for(self, datacenter: str) -> ConnectionPool:
        tls = self.config.tls
        if not tls.verify_server_hostname:
            return self.pool
        pool = self.wan_pools.get(datacenter)
        if pool is None:
            pool = self.wan_pools[datacenter] = ConnectionPool(
                max_frame=self.pool.max_frame, ssl=tls.client_context(datacenter))
        return pool

    async def close(self) -> None:
        """Close the connections to other datacenters (the main pool is the server's)."""
        for pool in self.wan_pools.values():
            await pool.close()
        self.wan_pools.clear()

    def leader_address(self) -> str:
        """The leader's RPC address, "" when none is known."""
        node = self._node()
        if node is None:
            return ""
        leader = node.leader()
        if leader is None:
            return ""
        if leader == node.id:
            return self._address()
        return node.configuration().all_servers().get(leader, "")
