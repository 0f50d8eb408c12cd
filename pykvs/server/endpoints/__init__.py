"""The endpoints: each Consul operation written once, in the shape of Consul's
agent/consul/*_endpoint.go ("forward, authorize, apply or query").

One module per group (kvs, txn, session, status, operator, snapshot, acl), each a class over the
narrow seam of pykvs.server.seam. ``Endpoints`` puts them in one table by RPC method name; the
RPC server and the HTTP codecs both call that table, so a Consul operation has one
implementation and two encodings. KV reads answer with results that render themselves
(results.py): ``rpc_reply()`` for the RPC server, ``json()`` for HTTP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pykvs.server.endpoints.acl import ACLEndpoints
from pykvs.server.endpoints.common import acl_errors
from pykvs.server.endpoints.kvs import KVS
from pykvs.server.endpoints.operator import Operator
from pykvs.server.endpoints.results import Result
from pykvs.server.endpoints.session import Sessions
from pykvs.server.endpoints.snapshot import SavedSnapshots, Snapshot
from pykvs.server.endpoints.status import Status
from pykvs.server.endpoints.txn import Txn

if TYPE_CHECKING:
    from pykvs.server.seam import Endpoint, ServerCore

__all__ = ["Endpoints", "SavedSnapshots", "to_wire"]


def to_wire(endpoint: Endpoint) -> Endpoint:
    """``endpoint`` answering what the RPC server sends: a result's ``rpc_reply()``."""

    async def wire(args: dict[str, Any]) -> Any:
        result = await endpoint(args)
        return result.rpc_reply() if isinstance(result, Result) else result

    return wire


class Endpoints:
    """Every endpoint group of one server, and the table of them by method name."""

    def __init__(self, core: ServerCore, saved: SavedSnapshots) -> None:
        self.kvs = KVS(core)
        self.txn = Txn(core)
        self.sessions = Sessions(core)
        self.status = Status(core)
        self.operator = Operator(core)
        self.snapshot = Snapshot(core, saved)
        self.acl = ACLEndpoints(core)

    def table(self) -> dict[str, Endpoint]:
        """Method name -> endpoint; ACL refusals become RPCError with Consul's text."""
        methods: dict[str, Endpoint] = {}
        for group in (self.acl, self.kvs, self.txn, self.sessions, self.status,
                      self.operator, self.snapshot):
            methods.update(group.table())
        return {name: acl_errors(endpoint, BLOCKING_READS.get(name))
                for name, endpoint in methods.items()}


# The blocking queries and the fields each reads beside QueryOptions' (common.QUERY_FIELDS).
BLOCKING_READS: dict[str, frozenset[str]] = {
    name: frozenset(fields) for name, fields in (
        ("KVS.Get", ("Key",)), ("KVS.List", ("Key",)),
        ("KVS.ListKeys", ("Prefix", "Seperator", "Separator")),
        ("Session.Get", ("SessionID",)), ("Session.List", ()), ("Session.NodeSessions", ("Node",)),
        ("ACL.PolicyRead", ("PolicyID", "PolicyName")), ("ACL.PolicyList", ()),
        ("ACL.TokenRead", ("TokenID", "TokenIDType")), ("ACL.TokenList", ("Policy",)),
    )
}
