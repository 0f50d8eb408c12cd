"""``/v1/status/*``, ``/v1/operator/raft/*`` and ``/v1/agent/self``.

Status and Operator calls go through the server's RPC endpoints in-process (they forward to the
leader or another datacenter as Consul's do). ``/v1/agent/self`` answers the fields clients read
to learn where they are: ``Config.Datacenter``, ``Config.NodeName``, ``Config.Server``,
``Member`` (name, address, port, tags). With ACLs on it needs ``agent:read``, as Consul.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

import pykvs
from pykvs.http.common import HTTPError, json_response, query_args, server_of, write_args
from pykvs.netaddr import split_address


async def status_leader(request: web.Request) -> web.StreamResponse:
    server = server_of(request)
    leader = await server.calls["Status.Leader"](write_args(request))
    return json_response(leader or "")


async def status_peers(request: web.Request) -> web.StreamResponse:
    server = server_of(request)
    peers = await server.calls["Status.Peers"](write_args(request))
    return json_response(list(peers or []))


async def raft_configuration(request: web.Request) -> web.StreamResponse:
    server = server_of(request)
    reply = await server.calls["Operator.RaftGetConfiguration"](query_args(request))
    return json_response({"Servers": reply["Servers"], "Index": reply["Index"]})


async def raft_remove_peer(request: web.Request) -> web.StreamResponse:
    server = server_of(request)
    query = request.query
    has_id, has_address = "id" in query, "address" in query
    if not has_id and not has_address:
        raise HTTPError(400, "Must specify either ?id with the server's ID or ?address with "
                             "IP:port of peer to remove")
    if has_id and has_address:
        raise HTTPError(400, "Must specify only one of ?id or ?address")
    args = {**write_args(request), "ID": query.get("id", ""),
            "Address": query.get("address", "")}
    await server.calls["Operator.RaftRemovePeer"](args)
    return web.Response(status=200)


async def raft_transfer_leader(request: web.Request) -> web.StreamResponse:
    server = server_of(request)
    args = {**write_args(request), "ID": request.query.get("id", "")}
    reply = await server.calls["Operator.TransferLeader"](args)
    return json_response({"Success": bool(reply.get("Success", True))})


def agent_self(server: Any) -> dict[str, Any]:
    """The parts of Consul's /v1/agent/self that describe this agent."""
    config = server.config
    host, port = split_address(server.address) if server.address else (config.bind, 0)
    raft = server.raft_stats()
    stats: dict[str, Any] = {}
    if raft is not None:
        stats = {"raft": {k: str(raft[k]) for k in ("term", "commit_index", "applied_index",
                                                   "last_log_index", "role")}}
        stats["raft"]["state"] = raft["role"].capitalize()
    version = pykvs.__version__
    return {
        "Config": {
            "Datacenter": config.datacenter,
            "PrimaryDatacenter": config.datacenter,
            "NodeName": config.node_name,
            "NodeID": config.node_name,
            "Server": True,
            "Revision": "pykvs",
            "Version": version,
        },
        "Coord": None,
        "Member": {
            "Name": config.node_name,
            "Addr": host,
            "Port": port,
            "Tags": {"role": "consul", "dc": config.datacenter, "port": str(port),
                     "id": config.node_name, "vsn": "2", "build": f"{version}:pykvs"},
            "Status": 1,
        },
        "Stats": stats,
        "Meta": {},
    }


async def agent_self_endpoint(request: web.Request) -> web.StreamResponse:
    """Consul's AgentSelf: the token must read this agent (``agent:read`` on its node name);
    the answer holds the Raft term and indexes."""
    server = server_of(request)
    server.authorize(write_args(request)).require_agent_read(server.config.node_name)
    return json_response(agent_self(server))
