"""The messages Raft servers exchange, as one plain dataclass with a kind.

One ``Message`` type (as etcd's raftpb.Message) keeps the core's dispatch and the transport's
framing simple: each kind uses the subset of fields listed in ``MessageKind``'s comments and leaves
the rest at their defaults. ``to_wire()`` gives a msgpack-able tuple; ``from_wire()`` reverses it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pykvs._slots import use_slot_setters
from pykvs.raft.types import Entry, SnapshotMeta


class MessageKind(enum.IntEnum):
    """What a message asks or answers. Field use per kind is noted beside each."""

    # AppendEntries: index/log_term = the entry before `entries`; commit = leader's commit.
    APPEND = 1
    # index = last index now matching the leader (accept), or the rejected `index` (reject) with
    # reject_hint/log_term = the follower's guess of the last index/term that may match.
    APPEND_RESP = 2
    # RequestVote: index/log_term = candidate's last entry; context = b"transfer" when the
    # election comes from a leadership transfer (voters then ignore their leader lease).
    VOTE = 3
    VOTE_RESP = 4  # reject
    # Pre-vote: as VOTE, sent with term = candidate's term + 1 but changing no one's term.
    PRE_VOTE = 5
    PRE_VOTE_RESP = 6  # reject
    HEARTBEAT = 7  # commit = min(follower's match, leader commit); context = ReadIndex round
    HEARTBEAT_RESP = 8  # context echoed back
    # InstallSnapshot: snapshot = the meta of the body the driver streams alongside.
    SNAPSHOT = 9
    TIMEOUT_NOW = 10  # leadership transfer: campaign now, skipping pre-vote and the lease
    # A follower forwards a ReadIndex request to the leader: context = the caller's token.
    READ_INDEX = 11
    READ_INDEX_RESP = 12  # index = the read index for `context`; reject when it could not be served
    TRANSFER_LEADER = 13  # a follower forwards a transfer request: index unused, context = target


@dataclass(frozen=True, slots=True)
class Message:
    kind: MessageKind
    term: int
    src: str
    dst: str
    index: int = 0
    log_term: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    snapshot: SnapshotMeta | None = None

    def to_wire(self) -> tuple:
        return (
            int(self.kind),
            self.term,
            self.src,
            self.dst,
            self.index,
            self.log_term,
            [e.to_wire() for e in self.entries],
            self.commit,
            self.reject,
            self.reject_hint,
            self.context,
            None if self.snapshot is None else self.snapshot.to_wire(),
        )

    @classmethod
    def from_wire(cls, wire: tuple | list) -> Message:
        if not isinstance(wire, (tuple, list)) or len(wire) != 12:
            raise ValueError(f"malformed raft message: expected a 12-item array, got {wire!r:.80}")
        kind, term, src, dst, index, log_term, entries, commit, reject, hint, context, snap = wire
        return cls(
            kind=MessageKind(kind),
            term=int(term),
            src=str(src),
            dst=str(dst),
            index=int(index),
            log_term=int(log_term),
            entries=tuple(Entry.from_wire(e) for e in entries),
            commit=int(commit),
            reject=bool(reject),
            reject_hint=int(hint),
            context=bytes(context),
            snapshot=None if snap is None else SnapshotMeta.from_wire(snap),
        )

    def __repr__(self) -> str:
        parts = [f"{self.kind.name} t{self.term} {self.src}->{self.dst}"]
        if self.index or self.log_term:
            parts.append(f"i{self.index}/t{self.log_term}")
        if self.entries:
            parts.append(f"ents[{self.entries[0].index}..{self.entries[-1].index}]")
        if self.commit:
            parts.append(f"c{self.commit}")
        if self.reject:
            parts.append(f"reject(hint={self.reject_hint})")
        if self.context:
            parts.append(f"ctx={self.context!r}")
        if self.snapshot is not None:
            parts.append(f"snap@{self.snapshot.index}/t{self.snapshot.term}")
        return "Message(" + " ".join(parts) + ")"


use_slot_setters(Message)  # one per Raft message sent or received
