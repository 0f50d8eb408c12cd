"""The errors ``RaftNode`` raises (besides the core's ``NotLeaderError`` and
``ConfigChangeError``). Import them from ``pykvs.raft.node``, which re-exports them.
"""

from __future__ import annotations


class RaftError(Exception):
    """Base class of the errors the node raises (besides the core's NotLeaderError)."""


class LeadershipLostError(RaftError):
    """This server stopped being leader before the entry was applied: it may or may not commit
    under the next leader. ``leader_hint`` names the new leader when known."""

    def __init__(self, index: int, leader_hint: str | None) -> None:
        super().__init__(
            f"leadership lost before entry {index} was applied; its outcome is unknown "
            f"(new leader: {leader_hint or 'unknown'})"
        )
        self.index = index
        self.leader_hint = leader_hint


class ProposalDroppedError(RaftError):
    """Another leader's entry took the proposal's index: the proposal was not applied."""


class RaftTimeoutError(RaftError, TimeoutError):
    """A wait (read index, leadership transfer, apply with a timeout) ran out of time."""


class NodeClosedError(RaftError):
    """The node is closed (or closing)."""


class NodeFailedError(RaftError):
    """The node stopped after an unrecoverable error (a failed durable write, an FSM bug)."""



# Named pykvs.raft.node.<Name> in tracebacks and logs, as before the node was split in modules.
for _error in (RaftError, LeadershipLostError, ProposalDroppedError, RaftTimeoutError,
               NodeClosedError, NodeFailedError):
    _error.__module__ = "pykvs.raft.node"
del _error
