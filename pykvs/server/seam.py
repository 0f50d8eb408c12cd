"""The narrow seam between the endpoints and the server they run on.

Consul's endpoints hold a ``*Server`` and call four or five of its methods: ``forward``,
``raftApply``, ``blockingQuery``, ``setQueryMeta`` and the ACL resolver. Ours depend on the same
few, declared here, not on :class:`~pykvs.server.server.Server`'s fields: an endpoint can be read
(and tested) knowing only this page.

``Retry`` is the one signal that leadership moved before anything was proposed: whoever sees it
runs the request again, and the retry forwards to the new leader.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pykvs.acl import Authorizer
    from pykvs.raft.node import RaftNode
    from pykvs.server.config import ServerConfig
    from pykvs.server.leader import SessionTimers
    from pykvs.state.store import StateSnapshot, StateStore
    from pykvs.state.watch import WatchSet

NO_LEADER = "No cluster leader"

Endpoint = Callable[[dict[str, Any]], Awaitable[Any]]
ReadFn = Callable[["WatchSet", "StateSnapshot"], tuple[int, Any]]
WriteDone = Callable[[Any, BaseException | None], None]


class Retry(Exception):
    """Leadership moved before anything was proposed: run the request again (it forwards)."""


class ServerCore(Protocol):
    """What an endpoint may ask of its server."""

    config: ServerConfig
    state: StateStore  # read-only to endpoints: only the FSM writes it
    sessions: SessionTimers  # the leader's TTL timers

    async def forward(self, method: str, args: dict[str, Any], *,
                      read: bool) -> tuple[bool, Any]:
        """``(True, reply)`` when another server answered, ``(False, None)`` to answer here."""
        ...

    async def forward_dc_only(self, method: str, args: dict[str, Any]) -> tuple[bool, Any]:
        """``forward`` to another datacenter only: any server of this one may answer."""
        ...

    def reads_here(self, args: dict[str, Any]) -> bool:
        """Whether ``forward(..., read=True)`` would answer ``(False, None)`` right now for a
        read that is not ``consistent``; safe to ask from any thread."""
        ...

    def applies_here(self, args: dict[str, Any]) -> bool:
        """Whether ``forward(..., read=False)`` would answer ``(False, None)`` right now."""
        ...

    async def raft_apply(self, command: bytes, *, may_delete: bool = False) -> Any:
        """Propose ``command``; the FSM's result once committed and applied (Retry when
        leadership moved before anything was proposed)."""
        ...

    def raft_apply_nowait(self, command: bytes, on_done: WriteDone, *,
                          may_delete: bool = False) -> bool:
        """``raft_apply`` without a coroutine: ``on_done(result, error)`` from the Raft loop,
        the FSM's refusal as an RPCError error (``raft_apply`` returns it, for the endpoint
        to raise); False when nothing was proposed (the caller takes the coroutine path)."""
        ...

    async def local_query(self, args: dict[str, Any], read: ReadFn) -> tuple[int, Any]:
        """The consistency check, then Consul's blocking query of ``read`` here."""
        ...

    async def prepare_read(self, args: dict[str, Any]) -> None:
        """A consistent read first confirms leadership with a quorum round."""
        ...

    def query_meta(self, index: int) -> dict[str, Any]:
        """QueryMeta: Index, KnownLeader, LastContact."""
        ...

    def authorize(self, args: dict[str, Any]) -> Authorizer:
        """The rights of the request's token."""
        ...

    def require_node(self) -> RaftNode:
        """The Raft node, or RPCError(NO_LEADER) while the cluster forms."""
        ...

    def leader_address(self) -> str:
        """The leader's RPC address, "" when none is known."""
        ...
