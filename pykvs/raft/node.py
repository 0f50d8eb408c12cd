"""The Raft node: drives the sans-I/O ``RaftCore`` with asyncio.

One ``RaftNode`` is one server. It owns a ``TCPTransport`` and runs two tasks: a ticker (one
``core.tick()`` every ``tick_interval`` seconds) and the Ready loop. Every input (tick, message,
proposal, read, membership change) wakes the Ready loop, which, for each ``Ready``:

1. persists hard state, entries and an incoming snapshot's metadata in **one** durable write
   (``AsyncLogStore.save_async``: the LMDB writer thread syncs while the loop keeps stepping
   the core, so everything that arrived meanwhile is group-committed by the next Ready), and
   queues the log compaction the Ready asks for (``compact_async``, not waited for here);
2. sends the messages (a SNAPSHOT message starts a stream of the body on the bulk lane);
3. installs a snapshot from the leader into the FSM;
4. applies committed entries to the FSM in order, resolving the futures of the proposals they
   carry, and answers ReadIndex requests whose index is now applied; then ``core.advance()``.

Three orderings are relaxed where Raft allows it, because each fsync waited for is latency
every write pays: a leader sends AppendEntries/heartbeats before its own write of the same Ready
is durable (Raft thesis 10.2.1; the core counts the leader towards a commit only after
``advance()``); a Ready that only moves the commit index is applied without waiting for that
write (the index is not needed for safety: the next Ready's write carries it, or a background
write one tick later); and committed entries that earlier Readies' writes already made durable
here (all below this Ready's first new entry, no vote change, no snapshot) are applied before
this Ready's write, so a batch is answered while the next one syncs. Votes, terms and a
follower's acknowledgements are always sent after their write.

Everything from the end of the write to ``advance()`` runs without yielding to the loop, so
the FSM is at exactly the core's applied index between two Readies; snapshots are captured
there. (While an applied-first Ready's write syncs, the FSM and ``applied_index()`` are
already past the core's index; only the Ready loop reads the core's.)

Guarantees to callers: ``apply()`` resolves only once its entry is committed (durable on a
quorum) **and** applied here; it never hangs on a lost proposal: losing leadership before it
committed fails it with ``LeadershipLostError`` (its outcome is then unknown), an entry
replaced by another leader's fails it with ``ProposalDroppedError`` (it was not applied). A
failed durable write stops the node (``NodeFailedError``): a Raft server must not go on after
its disk lied.

Beside this module: ``applier.py`` applies to the FSM and answers the proposals and reads
waiting on it; ``log_writer.py`` queues the writes; ``messenger.py`` sends and receives the
messages (``snapshot_transfer.py``: snapshots as chunk streams on the bulk lane, and their
bodies staged for the Ready that installs them); ``snapshotter.py`` takes snapshots and has the
log compacted behind them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from typing import Any

from pykvs.netaddr import split_address
from pykvs.raft.applier import Applier
from pykvs.raft.cluster_id import ClusterIdentity
from pykvs.raft.config import NodeConfig
from pykvs.raft.core import (
    ConfigChange,
    ConfigChangeError,
    ConfigChangeKind,
    CoreConfig,
    NotLeaderError,
    RaftCore,
    Ready,
    Role,
)
from pykvs.raft.errors import (
    LeadershipLostError,
    NodeClosedError,
    NodeFailedError,
    ProposalDroppedError,
    RaftError,
    RaftTimeoutError,
)
from pykvs.raft.interfaces import AsyncLogStore, SnapshotStore, StateMachine
from pykvs.raft.log_writer import LogWriter
from pykvs.raft.messages import Message, MessageKind
from pykvs.raft.messenger import Messenger
from pykvs.raft.snapshotter import Snapshotter
from pykvs.raft.types import Configuration, SnapshotMeta
from pykvs.raft.waiters import Changes, Completion, LeadershipListeners

log = logging.getLogger(__name__)

__all__ = ["Completion", "ConfigChangeError", "LeadershipLostError", "NodeClosedError",
           "NodeConfig", "NodeFailedError", "NotLeaderError", "ProposalDroppedError", "RaftError",
           "RaftNode", "RaftTimeoutError"]

# What a leader may send before its own write of the same Ready is durable.
_LEADER_KINDS = frozenset({MessageKind.APPEND, MessageKind.HEARTBEAT, MessageKind.SNAPSHOT,
                           MessageKind.TIMEOUT_NOW, MessageKind.READ_INDEX_RESP})


class RaftNode:
    """One Raft server over an AsyncLogStore, a SnapshotStore, an FSM and a TCP transport.

    Create it, ``await start()``, and ``await close()`` when done (the stores stay open: the
    caller owns them). All methods must be called from the event loop it was started in.

    ``peers`` maps server ids to raft addresses known before the membership says so (a new
    server joining needs its leader's address to answer it); the membership's addresses are
    added as they become known. ``bootstrap=True`` founds a new cluster of this server plus
    ``peers`` as voters when the log is empty (every founding server must be given the same set).
    """

    def __init__(
        self,
        config: NodeConfig,
        log_store: AsyncLogStore,
        snapshots: SnapshotStore,
        fsm: StateMachine,
        *,
        bind: str = "127.0.0.1:0",
        peers: Mapping[str, str] | None = None,
        bootstrap: bool = False,
        transport_options: Mapping[str, Any] | None = None,
    ) -> None:
        split_address(bind)
        for peer, address in (peers or {}).items():
            if not peer:
                raise ValueError("peers: server ids must be non-empty")
            split_address(address)
        self.config = config
        self.id = config.id
        self._log = log_store
        self._snapshots = snapshots
        self._bind = bind
        self._static_peers = {p: a for p, a in (peers or {}).items() if p != config.id}
        self._bootstrap = bootstrap
        self._transport_options = dict(transport_options or {})
        self._rng = random.Random(config.seed)
        self._core: RaftCore | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wakeup = asyncio.Event()
        self._read_ids = itertools.count(1)
        self._leader: str | None = None
        self._role = Role.FOLLOWER
        self._durable_vote: tuple[int, str | None] = (0, None)
        self._restore_gate: asyncio.Event | None = None  # set while a user restore runs
        self._leadership = LeadershipListeners(self.id)
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._closed = asyncio.Event()
        self.failure: BaseException | None = None
        self._changes = Changes(self.id, self._require_core)
        self._wait_for = self._changes.wait_for
        self.counters = {"readies": 0, "saves": 0, "applied_entries": 0, "snapshots_taken": 0,
                         "snapshots_sent": 0, "snapshots_installed": 0, "messages_sent": 0}
        self._writer = LogWriter(log_store, config.tick_interval, self.counters, self._fail)
        self._snapshotter = Snapshotter(config, log_store, snapshots, fsm, self.counters,
                                        self._require_core, self._wake)
        self._applier = Applier(self.id, fsm, snapshots, self._snapshotter, self.counters,
                                self._wake, self.leader)
        self._register = self._applier.register  # on the proposal path: no extra call
        self._identity = ClusterIdentity(self.id, log_store, config.make_cluster_id)
        self._messenger = Messenger(config, snapshots, self._static_peers, self.counters,
                                    self._wake, self._wait_for, self._spawn)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Restore the FSM from the latest snapshot, listen, and start ticking."""
        if self._core is not None or self._closing:
            raise RuntimeError("node already started (or closed)")
        meta = self._log.snapshot_meta()
        if meta is not None and meta.index > 0:
            self._applier.restore(meta)
        host, port = split_address(self._bind)
        messenger = self._messenger
        transport = await messenger.start(host, port, random.Random(self._rng.random()), {
            **self._transport_options, "cluster_id": self._identity.value})
        bootstrap = None
        if self._bootstrap:
            bootstrap = Configuration({self.id: self.address, **self._static_peers})
        cfg = self.config
        core_config = CoreConfig(
            id=self.id, election_tick=cfg.election_tick, heartbeat_tick=cfg.heartbeat_tick,
            pre_vote=cfg.pre_vote, check_quorum=cfg.check_quorum, max_inflight=cfg.max_inflight,
            max_batch_entries=cfg.max_batch_entries, max_batch_bytes=cfg.max_batch_bytes,
        )  # fmt: skip
        try:
            self._core = messenger.core = RaftCore(
                core_config, self._log, random.Random(self._rng.random()), bootstrap=bootstrap)
        except BaseException:
            await transport.close()
            raise
        messenger.sync_peers()
        loop = self._applier.loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._ready_loop(), name=f"raft-ready {self.id}"),
            loop.create_task(self._ticker(), name=f"raft-tick {self.id}"),
        ]
        self._wake()

    @property
    def address(self) -> str:
        """The raft address this server listens on (after ``start()``)."""
        if self._messenger.transport is None:
            raise RuntimeError("node not started")
        return self._messenger.transport.address

    async def close(self) -> None:
        """Stop ticking and serving; fail every waiting call with NodeClosedError."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = self._messenger.closing = True
        self._writer.close()
        current = asyncio.current_task()
        tasks = [t for t in [*self._tasks, *self._messenger.tasks(), *self._side_tasks]
                 if t is not current]
        snapshot_task = self._snapshotter.task
        if snapshot_task is not None and snapshot_task is not current:
            tasks.append(snapshot_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._messenger.transport is not None:
            await self._messenger.transport.close()
        for sink in self._messenger.take_sinks():
            with contextlib.suppress(Exception):
                await asyncio.to_thread(sink.abort)
        if self._restore_gate is not None:
            self._restore_gate.set()
        error = self.failure if self.failure is not None else None
        self._fail_all(lambda: NodeFailedError(f"{self.id}: node failed: {error!r}")
                       if error is not None else NodeClosedError(f"{self.id}: node closed"))
        self._changes.notify()
        if self._role is Role.LEADER:
            self._leadership.tell(False)
        self._closed.set()

    async def wait_closed(self) -> None:
        """Until the node is closed (by ``close()`` or after a failure)."""
        await self._closed.wait()

    # -- public API --------------------------------------------------------------------------

    def leader(self) -> str | None:
        """The id of the leader this server knows of (itself when leader), or None."""
        return self._leader

    def is_leader(self) -> bool:
        return self._role is Role.LEADER

    @property
    def cluster_id(self) -> str:
        """The cluster this server belongs to ("" until it knows: cluster_id.py)."""
        return self._identity.value

    def last_contact(self) -> float | None:
        """Seconds since the leader was last heard from: 0.0 on the leader, None when no
        leader has been heard from yet."""
        if self._role is Role.LEADER:
            return 0.0
        if self._messenger.last_contact is None:
            return None
        return time.monotonic() - self._messenger.last_contact

    def add_leadership_listener(self, callback: Callable[[bool], None]) -> Callable[[], None]:
        """Call ``callback(is_leader)`` from the event loop each time this server gains or
        loses leadership (and ``False`` once when it closes while leading); returns a
        function that removes it. Callbacks must not block."""
        return self._leadership.add(callback)

    def leadership_changes(self) -> AsyncIterator[bool]:
        """Whether this server leads: now, then at each change, until the node closes."""
        return self._leadership.changes(self.is_leader, self._closed)

    def configuration(self) -> Configuration:
        """The membership in force (the newest in the log, committed or not)."""
        return self._require_core().configuration

    @property
    def applied_index(self) -> int:
        return self._applier.applied

    async def apply(self, data: bytes, timeout: float | None = None) -> Any:
        """Propose an FSM command; return the FSM's result once committed and applied here.

        Raises NotLeaderError (with ``leader_hint``) off the leader, LeadershipLostError or
        ProposalDroppedError when the proposal is lost, RaftTimeoutError after ``timeout``.
        """
        self._check_command(data)
        return await self._propose(bytes(data), timeout)

    def propose_nowait(self, data: bytes, on_done: Callable[[Completion], None] | None = None,
                       ) -> asyncio.Future[Any] | Completion | None:
        """``apply`` without a coroutine, for hot paths: proposes ``data`` now and returns the
        future of the FSM's result (it fails as ``apply`` raises). None while a user restore
        holds new entries back (``apply`` waits for it). Raises NotLeaderError off the leader.

        With ``on_done``, the outcome is a :class:`Completion` instead, handed to ``on_done``
        from the Ready loop as soon as it is known (no loop iteration in between).
        """
        self._check_command(data)
        if self._restore_gate is not None:
            return None
        core = self._require_core()
        index = core.propose(bytes(data))
        return self._register(core.term, index, None if on_done is None else Completion(on_done))

    def _check_command(self, data: bytes) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        if not data:
            raise ValueError("data must not be empty (empty entries are barriers)")
        if len(data) > self.config.max_entry_bytes:
            raise ValueError(f"data is {len(data)} bytes, above max_entry_bytes "
                             f"({self.config.max_entry_bytes})")

    async def barrier(self, timeout: float | None = None) -> int:
        """Wait until every entry before now is applied here (leader only); returns the index."""
        await self._propose(b"", timeout)
        return self._applier.applied

    async def read_index(self, timeout: float | None = None) -> int:
        """A linearizable read point: a quorum confirmed the leader's commit index (ReadIndex),
        and this server has applied up to it. Works on followers (asks the leader)."""
        core = self._require_core()
        ctx = f"{self.id}/{next(self._read_ids)}".encode()
        core.read_index(ctx)  # raises NotLeaderError when there is no leader
        if timeout is None:
            timeout = self.config.read_timeout
        return await self._applier.wait_read(
            ctx, timeout if timeout is not None else 2 * self.config.election_timeout)

    async def verify_leader(self, timeout: float | None = None) -> int:
        """Confirm with a quorum round that this server is still the leader (for ``consistent``
        reads); returns the read index, applied here. Raises NotLeaderError otherwise."""
        if self._require_core().role is not Role.LEADER:
            raise NotLeaderError(self._leader)
        return await self.read_index(timeout)

    async def add_voter(self, server_id: str, address: str, timeout: float | None = None) -> int:
        """Add (or promote a learner to) a voter; returns the index of the committed change."""
        return await self._change(ConfigChange(ConfigChangeKind.ADD_VOTER, server_id, address),
                                  timeout)

    async def add_learner(self, server_id: str, address: str,
                          timeout: float | None = None) -> int:
        """Add a non-voting member; returns the index of the committed change."""
        return await self._change(ConfigChange(ConfigChangeKind.ADD_LEARNER, server_id, address),
                                  timeout)

    async def remove_server(self, server_id: str, timeout: float | None = None) -> int:
        """Remove a member (the leader itself too: it steps down once that commits)."""
        return await self._change(ConfigChange(ConfigChangeKind.REMOVE, server_id), timeout)

    async def transfer_leadership(self, to: str | None = None,
                                  timeout: float | None = None) -> str:
        """Hand leadership to voter ``to`` (default: the most caught-up other voter); returns
        the new leader's id once this server has heard from it."""
        core = self._require_core()
        if core.role is not Role.LEADER:
            raise NotLeaderError(self._leader)
        if to is None:
            others = [v for v in core.configuration.voters if v != self.id]
            if not others:
                raise ValueError("no other voter to transfer leadership to")
            to = max(others, key=lambda v: p.match if (p := core.progress(v)) is not None else 0)
        elif to == self.id:
            return self.id
        core.transfer_leadership(to)
        self._wake()
        target = to
        await self._wait_for(lambda: self._leader == target and self._role is not Role.LEADER,
                             timeout if timeout is not None else 2 * self.config.election_timeout,
                             f"leadership transfer to {target}")
        return target

    async def snapshot(self) -> SnapshotMeta:
        """Snapshot the FSM into the SnapshotStore and compact the log (keeping the trailing
        window); returns the snapshot's metadata."""
        self._require_core()
        fut: asyncio.Future[SnapshotMeta] = asyncio.get_running_loop().create_future()
        self._snapshotter.waiters.append(fut)
        self._wake()  # the Ready loop takes it between two Readies
        return await fut

    async def restore(self, body: Iterable[bytes], after_index: int = 0,
                      timeout: float | None = None) -> SnapshotMeta:
        """Leader only: make FSM snapshot ``body`` the state of the whole cluster, as
        hashicorp/raft's Restore. The caller has validated ``body`` (the FSM must accept it:
        a body it refuses stops the node); ``after_index`` is the snapshot's own index.

        New proposals wait while it runs. After a barrier, the body goes into the snapshot
        store at an index above the last log index and ``after_index`` (current term), the log
        is compacted to it and this FSM restored from it; followers get it by InstallSnapshot.
        Returns its meta once an entry after it is committed, i.e. a quorum holds it. Until
        then losing this leader may lose the restore (see ``RaftCore.restore``).
        """
        core = self._require_core()
        if core.role is not Role.LEADER:
            raise NotLeaderError(self._leader)
        if self._restore_gate is not None:
            raise RaftError(f"{self.id}: another restore is in progress")
        self._restore_gate = gate = asyncio.Event()
        limit = timeout if timeout is not None else 10 * self.config.election_timeout
        try:
            # Everything proposed before now is applied first (or fails the restore).
            await self._applier.wait_applied(core.term, core.propose(b""), limit)
            meta = await self._messenger.staged.write(
                core.restore_meta(after_index), body,
                lambda meta: self._require_core().restore(meta))  # NotLeaderError, ValueError
            self._wake()
            await self._wait_for(lambda: self._applier.applied >= meta.index, limit,
                                 f"the restored snapshot {meta.index} to be installed")
        finally:
            self._restore_gate = None
            gate.set()
        log.info("%s: restored a user snapshot at index %d (%d bytes); waiting for a quorum",
                 self.id, meta.index, meta.size)
        await self._propose(b"", limit)
        return meta

    def stats(self) -> dict[str, Any]:
        """A picture of this server for operators and tests."""
        core = self._require_core()
        snap = self._log.snapshot_meta()
        conf = core.configuration
        return {
            "id": self.id,
            "address": self.address,
            "term": core.term,
            "role": core.role.value,
            "leader": core.leader_id,
            "commit_index": core.commit_index,
            "applied_index": self._applier.applied,
            "last_log_index": core.last_index,
            "first_log_index": self._log.first_index(),
            "snapshot_index": snap.index if snap is not None else 0,
            "last_contact": self.last_contact(),
            "voters": dict(conf.voters),
            "learners": dict(conf.learners),
            "pending_proposals": len(self._applier.proposals),
            "pending_reads": len(self._applier.reads),
            "failed": repr(self.failure) if self.failure is not None else None,
            **self.counters,
        }

    # -- helpers of the public API -----------------------------------------------------------

    def _require_core(self) -> RaftCore:
        if self.failure is not None:
            raise NodeFailedError(f"{self.id}: node failed: {self.failure!r}")
        if self._closing:
            raise NodeClosedError(f"{self.id}: node closed")
        if self._core is None:
            raise RuntimeError("node not started")
        return self._core

    async def _propose(self, data: bytes, timeout: float | None) -> Any:
        while self._restore_gate is not None:
            # A user restore picks its index above the last one: hold new entries meanwhile.
            await self._restore_gate.wait()
        core = self._require_core()
        index = core.propose(data)  # raises NotLeaderError
        return await self._applier.wait_applied(core.term, index, timeout)

    async def _change(self, change: ConfigChange, timeout: float | None) -> int:
        core = self._require_core()
        if core.role is not Role.LEADER:
            raise NotLeaderError(self._leader)
        # The barrier commits an entry of this term and any earlier membership change, which
        # single-server changes need before the next one may start.
        await self._propose(b"", timeout)
        index = core.propose_config(change)  # raises NotLeaderError / ConfigChangeError
        if change.address:
            self._messenger.peers.learn(change.server_id, change.address)
        self._messenger.sync_peers()
        await self._applier.wait_applied(core.term, index, timeout)
        return index

    def _fail_all(self, make_error: Callable[[], BaseException]) -> None:
        self._applier.fail_all(make_error)
        self._snapshotter.fail_waiters(make_error)

    # -- the Ready loop ----------------------------------------------------------------------

    def _wake(self) -> None:
        self._wakeup.set()

    async def _ticker(self) -> None:
        interval = self.config.tick_interval
        while True:
            await asyncio.sleep(interval)
            assert self._core is not None
            self._core.tick()
            self._wake()

    async def _ready_loop(self) -> None:
        core = self._core
        assert core is not None
        self._durable_vote = (self._log.hard_state().term, self._log.hard_state().vote)
        snapshotter = self._snapshotter
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while core.has_ready():
                    rd = core.ready()
                    await self._process(core, rd)
                    core.advance(rd)
                    self._observe(core)
                    if not self._closing:
                        snapshotter.maybe_start(core)
                self._observe(core)
                if not self._closing:
                    snapshotter.maybe_start(core)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        """Stop the node after an unrecoverable error (a failed write, an FSM bug)."""
        if self.failure is not None or self._closing:
            return
        log.critical("%s: raft node stopping after an unrecoverable error: %r", self.id, exc,
                     exc_info=exc)
        self.failure = exc
        current = asyncio.current_task()
        self._tasks = [t for t in self._tasks if t is not current]
        self._spawn(self.close())

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in a task of its own that ``close()`` cancels if it is still running."""
        task = asyncio.get_running_loop().create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _process(self, core: RaftCore, rd: Ready) -> None:
        """Persist, send, install and apply one Ready, in the order safety needs (no stricter:
        every fsync waited for here is latency every write pays)."""
        self.counters["readies"] += 1
        writer, messenger, applier = self._writer, self._messenger, self._applier
        if rd.compaction is not None:
            # Not waited for here: the snapshot that asked for it waits for its write.
            self._snapshotter.compaction_queued(rd.compaction, writer.compact(rd.compaction))
        hs = rd.hard_state
        vote_unchanged = hs is None or (hs.term, hs.vote) == self._durable_vote
        if hs is not None:
            self._durable_vote = (hs.term, hs.vote)
        if vote_unchanged and not rd.entries and rd.snapshot is None:
            # At most a new commit index to persist. Nothing depends on it being durable (a
            # restarted server re-learns it from the leader; the entries it covers are durable
            # on a quorum already), so apply now and let the next Ready's write carry it, or a
            # background write one tick later if none comes.
            if hs is not None:
                writer.defer_hard_state(hs)
            messenger.send_all(core, rd.messages)
            applier.apply_ready(rd)
            return
        early: list[Message] = []
        late = rd.messages
        if vote_unchanged and rd.snapshot is None and core.role is Role.LEADER:
            # A leader may replicate while it writes its own log (Raft thesis 10.2.1): it
            # counts itself towards a commit only once advance() says its entries are durable.
            early = [m for m in rd.messages if m.kind in _LEADER_KINDS]
            late = [m for m in rd.messages if m.kind not in _LEADER_KINDS]
        messenger.send_all(core, early)
        # Entries that earlier (awaited) writes made durable here, and that are committed, are
        # applied and answered while this Ready's write syncs rather than after it: otherwise
        # every batch of writes waits for the next batch's fsync before it is answered. The
        # write is queued first, so that the disk does not wait for the applying either.
        apply_first = (vote_unchanged and rd.snapshot is None and bool(rd.committed_entries)
                       and (not rd.entries
                            or rd.committed_entries[-1].index < rd.entries[0].index))
        if rd.snapshot is not None:
            await messenger.staged.commit(rd.snapshot)
        saved = writer.save(rd)
        if apply_first:
            applier.apply_ready(rd)
        await saved
        # From here to advance() nothing yields: see the module docstring.
        messenger.send_all(core, late)
        if not apply_first:
            applier.apply_ready(rd)

    def _observe(self, core: RaftCore) -> None:
        """React to role, leader and membership changes."""
        role, leader = core.role, core.leader_id
        if (role, leader) != (self._role, self._leader):
            was_leader = self._role is Role.LEADER
            self._role, self._leader = role, leader
            if was_leader != (role is Role.LEADER):
                self._leadership.tell(not was_leader)
                if not was_leader:
                    self._identity.elected(core, lambda: self._propose(b"", None), self._spawn)
            self._applier.leader_changed(was_leader and role is not Role.LEADER,
                                         core.commit_index, leader)
            log.info("%s: %s in term %d (leader: %s)", self.id, role.value, core.term, leader)
        self._messenger.sync_peers()
        if not self._identity.value:
            self._identity.observe(core, self._messenger.transport)
        self._changes.notify()
