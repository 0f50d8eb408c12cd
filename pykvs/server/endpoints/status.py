"""Status.Leader, Status.Peers, Status.Ping: Consul's agent/consul/status_endpoint.go. Any
server answers them (only another datacenter's are forwarded)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pykvs.server.seam import ServerCore


class Status:
    """The Status.* endpoints of one server."""

    def __init__(self, core: ServerCore) -> None:
        self.core = core

    def table(self) -> dict[str, Any]:
        return {"Status.Leader": self.leader, "Status.Peers": self.peers,
                "Status.Ping": self.ping}

    async def leader(self, args: dict[str, Any]) -> str:
        forwarded, reply = await self.core.forward_dc_only("Status.Leader", args)
        return reply if forwarded else self.core.leader_address()

    async def peers(self, args: dict[str, Any]) -> list[str]:
        forwarded, reply = await self.core.forward_dc_only("Status.Peers", args)
        if forwarded:
            return reply
        return sorted(self.core.require_node().configuration().voters.values())

    async def ping(self, args: dict[str, Any]) -> bool:
        return True
