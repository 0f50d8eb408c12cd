"""Operator.RaftGetConfiguration, Operator.RaftRemovePeer, Operator.TransferLeader: Consul's
agent/consul/operator_raft_endpoint.go."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from pykvs.raft.node import NotLeaderError, RaftError
from pykvs.server.args import field_str
from pykvs.server.rpc import RPCError
from pykvs.server.seam import Retry

if TYPE_CHECKING:
    from pykvs.server.seam import ServerCore


async def on_leader(call: Awaitable[Any], what: str) -> Any:
    """Await a leader-only node call: NotLeaderError retries through forward(), other
    refusals become the error reply."""
    try:
        return await call
    except NotLeaderError:
        raise Retry() from None
    except (RaftError, ValueError) as exc:
        raise RPCError(f"{what}: {exc}") from None


class Operator:
    """The Operator.* endpoints of one server."""

    def __init__(self, core: ServerCore) -> None:
        self.core = core

    def table(self) -> dict[str, Any]:
        return {"Operator.RaftGetConfiguration": self.raft_configuration,
                "Operator.RaftRemovePeer": self.raft_remove_peer,
                "Operator.TransferLeader": self.transfer_leader}

    async def raft_configuration(self, args: dict[str, Any]) -> Any:
        forwarded, reply = await self.core.forward("Operator.RaftGetConfiguration", args,
                                                   read=True)
        if forwarded:
            return reply
        self.core.authorize(args).require_operator_read()
        node = self.core.require_node()
        conf = node.configuration()
        leader = node.leader()
        servers = [
            {"ID": sid, "Node": sid, "Address": address, "Leader": sid == leader,
             "Voter": sid in conf.voters, "ProtocolVersion": "3"}
            for sid, address in sorted(conf.all_servers().items())
        ]
        return {"Servers": servers, "Index": node.applied_index}

    async def raft_remove_peer(self, args: dict[str, Any]) -> Any:
        forwarded, reply = await self.core.forward("Operator.RaftRemovePeer", args, read=False)
        if forwarded:
            return reply
        self.core.authorize(args).require_operator_write()
        server_id, address = field_str(args, "ID"), field_str(args, "Address")
        node = self.core.require_node()
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
        await on_leader(node.remove_server(server_id), f"remove peer {server_id}")
        return {}

    async def transfer_leader(self, args: dict[str, Any]) -> Any:
        forwarded, reply = await self.core.forward("Operator.TransferLeader", args, read=False)
        if forwarded:
            return reply
        self.core.authorize(args).require_operator_write()
        server_id = field_str(args, "ID") or None
        node = self.core.require_node()
        if server_id is not None and server_id not in node.configuration().voters:
            raise RPCError(f"cannot transfer leadership to {server_id!r}: not a voter")
        await on_leader(node.transfer_leadership(server_id), "transfer leadership")
        return {"Success": True}
