"""The state machine side of a ``RaftNode``: what its Ready loop applies, and who waits for it.

The Ready loop hands each Ready's snapshot to install, committed entries and confirmed read
points to ``Applier.apply_ready``, from the one place where the FSM is exactly at the core's
applied index. Proposals are answered as their entries are applied (with the FSM's result), or
failed when they can no longer be (another leader's entry took the index, leadership was lost
before they committed, a snapshot replaced them); ReadIndex requests are answered once their
read point is applied here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, overload

from pykvs._aio import wait_for
from pykvs.raft.core import NotLeaderError, Ready
from pykvs.raft.errors import LeadershipLostError, ProposalDroppedError, RaftTimeoutError
from pykvs.raft.interfaces import SnapshotStore, StateMachine
from pykvs.raft.snapshot_transfer import ChunkStream
from pykvs.raft.snapshotter import Snapshotter
from pykvs.raft.types import Entry, EntryType, SnapshotMeta
from pykvs.raft.waiters import Completion, PendingRead, Proposal

log = logging.getLogger("pykvs.raft.node")  # the node's log, as before this left node.py


class Applier:
    """Applies to the FSM in log order, and answers the proposals and reads waiting on it."""

    def __init__(
        self,
        node_id: str,
        fsm: StateMachine,
        snapshots: SnapshotStore,
        snapshotter: Snapshotter,
        counters: dict[str, int],
        wake: Callable[[], None],
        leader: Callable[[], str | None],
    ) -> None:
        self._id = node_id
        self._fsm = fsm
        self._snapshots = snapshots
        self._snapshotter = snapshotter
        self._counters = counters
        self._wake = wake  # wake the Ready loop
        self._leader = leader  # the leader this node knows of
        self.applied = 0
        self.proposals: dict[int, Proposal] = {}
        self.reads: dict[bytes, PendingRead] = {}
        # Set by the node's start(). asyncio.get_running_loop() makes a getpid() system call
        # (CPython's fork check); on the proposal path that was 7 % of the loop's time.
        self.loop: asyncio.AbstractEventLoop

    def restore(self, meta: SnapshotMeta) -> None:
        """Replace the FSM with the stored snapshot ``meta``."""
        self._fsm.restore(ChunkStream(iter(self._snapshots.open(meta.index))))
        self.applied = meta.index

    # -- proposals and reads -----------------------------------------------------------------

    @overload
    def register(self, term: int, index: int, outcome: None = None) -> asyncio.Future[Any]: ...
    @overload
    def register(self, term: int, index: int, outcome: Completion) -> Completion: ...

    def register(self, term: int, index: int, outcome: Completion | None = None,
                 ) -> asyncio.Future[Any] | Completion:
        """What carries the result of entry ``index``, proposed in ``term``, resolved as it is
        applied (or dropped): ``outcome``, or a new future on the node's loop."""
        registered = outcome if outcome is not None else self.loop.create_future()
        self.proposals[index] = Proposal(term, registered)
        self._wake()
        return registered

    async def wait_applied(self, term: int, index: int, timeout: float | None) -> Any:
        """The FSM's result for entry ``index``, proposed in ``term``, once applied."""
        fut = self.register(term, index)
        if timeout is None:
            return await fut
        try:
            return await wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            if self.proposals.get(index) is not None and self.proposals[index].future is fut:
                del self.proposals[index]
            raise RaftTimeoutError(f"{self._id}: entry {index} not applied within {timeout}s; "
                                   f"it may still commit") from None

    async def wait_read(self, ctx: bytes, limit: float) -> int:
        """The read point of the ReadIndex request ``ctx`` once applied here."""
        fut: asyncio.Future[int] = self.loop.create_future()
        self.reads[ctx] = PendingRead(fut)
        self._wake()
        try:
            return await wait_for(asyncio.shield(fut), limit)
        except TimeoutError:
            raise RaftTimeoutError(f"{self._id}: read index not confirmed within {limit:.2f}s "
                                   f"(leader: {self._leader() or 'unknown'})") from None
        finally:
            self.reads.pop(ctx, None)

    def leader_changed(self, deposed: bool, committed: int, leader: str | None) -> None:
        """The leader changed: ReadIndex rounds in flight died with the old one (or with our
        forwarding of them), and if this server was deposed, so did its proposals not yet
        committed (``committed`` is the commit index)."""
        if deposed:
            # Entries already committed are applied here all the same (a leader removing
            # itself steps down as its removal commits, before applying it): their callers
            # get the result. The others' outcome is unknown.
            proposals = self.proposals
            self.proposals = {i: p for i, p in proposals.items() if i <= committed}
            for index, proposal in proposals.items():
                if index > committed and not proposal.future.done():
                    proposal.future.set_exception(LeadershipLostError(index, leader))
        reads, self.reads = self.reads, {}
        for read in reads.values():
            if not read.future.done():
                read.future.set_exception(NotLeaderError(leader, "leader changed during a read"))

    def fail_all(self, make_error: Callable[[], BaseException]) -> None:
        proposals, self.proposals = self.proposals, {}
        for proposal in proposals.values():
            if not proposal.future.done():
                proposal.future.set_exception(make_error())
        reads, self.reads = self.reads, {}
        for read in reads.values():
            if not read.future.done():
                read.future.set_exception(make_error())

    # -- applying ----------------------------------------------------------------------------

    def apply_ready(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self._install_snapshot(rd.snapshot)
        if rd.committed_entries:
            self._apply_entries(rd.committed_entries)
        for read_state in rd.read_states:
            read = self.reads.get(read_state.context)
            if read is not None:
                read.index = read_state.index
        self._serve_reads()

    def _apply_entries(self, entries: list[Entry]) -> None:
        commands = [(e.index, e.data) for e in entries if e.type is EntryType.NORMAL and e.data]
        # Only proposals of this server read results: followers and a replay at start-up
        # need none built.
        results = iter(self._fsm.apply_batch(commands, self.proposals) if commands else ())
        self._snapshotter.bytes_since += sum(len(entry.data) for entry in entries)
        for entry in entries:
            result = None
            if entry.type is EntryType.NORMAL and entry.data:
                result = next(results)
            self.applied = entry.index
            proposal = self.proposals.pop(entry.index, None)
            if proposal is None or proposal.future.done():
                continue
            if proposal.term == entry.term:
                proposal.future.set_result(result)
            else:
                proposal.future.set_exception(ProposalDroppedError(
                    f"entry {entry.index} of term {proposal.term} was replaced by term "
                    f"{entry.term}'s entry: not applied"))
        self._counters["applied_entries"] += len(entries)

    def _serve_reads(self) -> None:
        for ctx, read in list(self.reads.items()):
            if read.index is not None and read.index <= self.applied:
                del self.reads[ctx]
                if not read.future.done():
                    read.future.set_result(read.index)

    def _install_snapshot(self, meta: SnapshotMeta) -> None:
        """Replace the FSM with the leader's snapshot (its body is already in our store)."""
        self.restore(meta)
        self._snapshotter.bytes_since = 0
        self._counters["snapshots_installed"] += 1
        leader = self._leader()
        for index in [i for i in self.proposals if i <= meta.index]:
            proposal = self.proposals.pop(index)
            if not proposal.future.done():
                proposal.future.set_exception(LeadershipLostError(index, leader))
        log.info("%s: installed snapshot at index %d from %s", self._id, meta.index, leader)
