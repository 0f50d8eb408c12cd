"""The Raft node: drives the sans-I/O ``RaftCore`` with asyncio.

One ``RaftNode`` is one server. It owns a ``TCPTransport`` and runs two tasks: a ticker (one
``core.tick()`` every ``tick_interval`` seconds) and the Ready loop. Every input (tick, message,
proposal, read, membership change) wakes the Ready loop, which, for each ``Ready``:

1. persists hard state, entries and an incoming snapshot's metadata in **one** durable write
   (``LogStore.save_async`` when the store has it: the LMDB writer thread syncs while the loop
   keeps stepping the core, so everything that arrived meanwhile is group-committed by the next
   Ready);
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

Snapshots: when ``applied`` passes the last snapshot by ``snapshot_threshold`` entries (at most
once per ``snapshot_interval`` seconds), or the entries applied since it carry
``snapshot_threshold_bytes`` of payload (or on ``snapshot()``),
the FSM's O(1) point-in-time copy is streamed into the SnapshotStore from a
worker thread, and the log is compacted up to ``trailing_entries`` behind it. A follower that
needs compacted entries receives the body in chunks on the transport's bulk lane
(``["snap", "begin"|"chunk"|"end", ...]`` frames; heartbeats never wait behind them); the
SNAPSHOT message itself rides in the "end" frame and is stepped into the follower's core only
once the whole body is durable there.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
import zlib
from collections.abc import AsyncIterator, Callable, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol, cast, overload

from pykvs._aio import wait_for
from pykvs.netaddr import split_address
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
from pykvs.raft.interfaces import LogStore, SnapshotStore
from pykvs.raft.messages import Message, MessageKind
from pykvs.raft.progress import ProgressState
from pykvs.raft.transport import TCPTransport
from pykvs.raft.types import Configuration, Entry, EntryType, HardState, SnapshotMeta

log = logging.getLogger(__name__)

__all__ = [
    "Completion",
    "ConfigChangeError",
    "LeadershipLostError",
    "NodeClosedError",
    "NodeConfig",
    "NodeFailedError",
    "NotLeaderError",
    "ProposalDroppedError",
    "RaftError",
    "RaftNode",
    "RaftTimeoutError",
]

_SNAP = "snap"  # first item of every bulk-lane frame (control frames start with an int)
# What a leader may send before its own write of the same Ready is durable.
_LEADER_KINDS = frozenset({MessageKind.APPEND, MessageKind.HEARTBEAT, MessageKind.SNAPSHOT,
                           MessageKind.TIMEOUT_NOW, MessageKind.READ_INDEX_RESP})


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


class FSMLike(Protocol):
    """What the node needs of the state machine (``pykvs.fsm.FSM``)."""

    def apply_batch(self, entries: list[tuple[int, bytes]],
                    results_for: Container[int] | None = None) -> list[Any]:
        """Results of the entries whose index is in ``results_for`` (others: None)."""
        ...
    def snapshot(self, term: int = 0) -> Any: ...  # has .chunks() -> Iterator[bytes]
    def restore(self, stream: Any) -> Any: ...


@dataclass
class NodeConfig:
    id: str
    tick_interval: float = 0.05  # seconds per core tick
    election_tick: int = 10  # election timeout in ticks (randomized up to twice that)
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_inflight: int = 64
    max_batch_entries: int = 256
    max_batch_bytes: int = 1 << 20
    snapshot_threshold: int = 8192  # applied entries in the log before an automatic snapshot
    # ... or payload bytes of the entries applied since the last snapshot: bounds what a
    # restart replays when entries are large (a 64-op transaction is one entry of ~8 KiB).
    snapshot_threshold_bytes: int = 16 << 20
    # Seconds from one automatic snapshot to the next one the entry count may start (Consul's
    # raft_snapshot_interval, 5 s): under a steady write load a threshold of 8,192 entries
    # would otherwise snapshot the whole state and compact the log twice a second. The
    # payload-bytes threshold does not wait.
    snapshot_interval: float = 5.0
    trailing_entries: int = 1024  # entries kept behind a snapshot for slow followers
    snapshot_send_timeout: float = 10.0  # seconds a bulk frame may wait for queue room
    read_timeout: float | None = None  # ReadIndex rounds; default: two election timeouts
    max_entry_bytes: int = 4 << 20  # one command; AppendEntries frames must carry it whole
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("id must be a non-empty server id")
        if self.tick_interval <= 0:
            raise ValueError(f"tick_interval must be positive, got {self.tick_interval}")
        if self.snapshot_threshold < 1:
            raise ValueError(f"snapshot_threshold must be at least 1, got "
                             f"{self.snapshot_threshold}")
        if self.snapshot_threshold_bytes < 1:
            raise ValueError(f"snapshot_threshold_bytes must be at least 1, got "
                             f"{self.snapshot_threshold_bytes}")
        if self.trailing_entries < 0:
            raise ValueError(f"trailing_entries must be >= 0, got {self.trailing_entries}")
        if not self.snapshot_interval >= 0:
            raise ValueError(f"snapshot_interval must be >= 0 seconds, got "
                             f"{self.snapshot_interval}")

    @property
    def election_timeout(self) -> float:
        """The longest randomized election timeout, in seconds."""
        return 2 * self.election_tick * self.tick_interval


class Completion:
    """The outcome of a ``propose_nowait(data, on_done)``: read like a done future, and handed
    to ``on_done`` synchronously, in the Ready loop's pass that applies (or drops) the entry.

    Why not an asyncio future: its done-callbacks each go through ``loop.call_soon`` (a Handle
    made, queued and run a loop iteration later), and at tens of thousands of writes a second
    that bookkeeping is a visible share of the loop. ``on_done`` must not block or raise (what
    it raises is logged and dropped); it may propose again.
    """

    __slots__ = ("_done", "_exception", "_on_done", "_result")

    def __init__(self, on_done: Callable[[Completion], None]) -> None:
        self._on_done = on_done
        self._done = False
        self._result: Any = None
        self._exception: BaseException | None = None

    def done(self) -> bool:
        return self._done

    def result(self) -> Any:
        if not self._done:
            raise asyncio.InvalidStateError("the proposal is not applied yet")
        if self._exception is not None:
            raise self._exception
        return self._result

    def exception(self) -> BaseException | None:
        if not self._done:
            raise asyncio.InvalidStateError("the proposal is not applied yet")
        return self._exception

    def set_result(self, result: Any) -> None:
        self._result = result
        self._finish()

    def set_exception(self, exception: BaseException) -> None:
        self._exception = exception
        self._finish()

    def _finish(self) -> None:
        if self._done:
            raise asyncio.InvalidStateError("the proposal already has an outcome")
        self._done = True
        try:
            self._on_done(self)
        except Exception:  # a caller's bug must not stop the Ready loop
            log.exception("a proposal's on_done callback failed")


@dataclass(slots=True)
class _Proposal:
    term: int
    future: asyncio.Future[Any] | Completion


@dataclass
class _Read:
    future: asyncio.Future[int]
    index: int | None = None  # set once the ReadIndex round confirmed it


@dataclass
class _Incoming:
    """A snapshot body being received from one peer."""

    transfer: int
    meta: SnapshotMeta
    sink: Any
    next_chunk: int = 0
    size: int = 0
    crc: int = 0


class _ChunkStream:
    """A read-only binary stream over an iterator of byte chunks (for ``FSM.restore``)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        parts = []
        want = n
        while want != 0:
            if self._pos >= len(self._buffer):
                nxt = next(self._chunks, None)
                if nxt is None:
                    break
                self._buffer, self._pos = nxt, 0
                continue
            end = len(self._buffer) if want < 0 else min(len(self._buffer), self._pos + want)
            parts.append(self._buffer[self._pos : end])
            if want > 0:
                want -= end - self._pos
            self._pos = end
        return b"".join(parts)


class RaftNode:
    """One Raft server over a LogStore, a SnapshotStore, an FSM and a TCP transport.

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
        log_store: LogStore,
        snapshots: SnapshotStore,
        fsm: FSMLike,
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
        self._fsm = fsm
        self._bind = bind
        self._static_peers = {p: a for p, a in (peers or {}).items() if p != config.id}
        self._bootstrap = bootstrap
        self._transport_options = dict(transport_options or {})
        self._rng = random.Random(config.seed)
        self._core: RaftCore | None = None
        self._transport: TCPTransport | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wakeup = asyncio.Event()
        self._changed = asyncio.Event()  # set and replaced whenever observable state changes
        self._proposals: dict[int, _Proposal] = {}
        # Set by start(). asyncio.get_running_loop() makes a getpid() system call (CPython's
        # fork check); on the proposal path that was 7 % of the loop's time under load.
        self._loop: asyncio.AbstractEventLoop
        self._reads: dict[bytes, _Read] = {}
        self._read_ids = itertools.count(1)
        self._applied = 0
        self._last_contact: float | None = None
        self._leader: str | None = None
        self._role = Role.FOLLOWER
        self._known_addresses: dict[str, str] = dict(self._static_peers)
        self._peers_sent: dict[str, str] | None = None
        self._conf_seen: Configuration | None = None
        self._snapshot_waiters: list[asyncio.Future[SnapshotMeta]] = []
        self._snapshot_task: asyncio.Task[None] | None = None
        self._snapshot_retry_at = 0.0  # after a failed automatic snapshot, wait before retrying
        self._last_snapshot_at = -float("inf")  # monotonic start of the last automatic one
        # Payload bytes of the entries applied after the newest snapshot (taken or installed),
        # and of those a snapshot being written covers (given back if it fails).
        self._bytes_since_snapshot = 0
        self._bytes_in_snapshot = 0
        self._durable_vote: tuple[int, str | None] = (0, None)
        self._deferred_hard_state: HardState | None = None  # a commit index not yet written
        self._deferred_flush: asyncio.TimerHandle | None = None
        self._snapshot_senders: dict[str, asyncio.Task[None]] = {}
        self._incoming: dict[str, _Incoming] = {}
        # Snapshot bodies written but not committed to the store: committed by the Ready that
        # installs them, so a body is never stored unless the log points to it (else two such
        # could push the snapshot our log is compacted to out of the keep-two store).
        self._staged: dict[int, Any] = {}
        self._restore_gate: asyncio.Event | None = None  # set while a user restore runs
        self._leadership_listeners: list[Callable[[bool], None]] = []
        self._transfer_ids = itertools.count(1)
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._closed = asyncio.Event()
        self.failure: BaseException | None = None
        self.counters = {"readies": 0, "saves": 0, "applied_entries": 0, "snapshots_taken": 0,
                         "snapshots_sent": 0, "snapshots_installed": 0, "messages_sent": 0}

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Restore the FSM from the latest snapshot, listen, and start ticking."""
        if self._core is not None or self._closing:
            raise RuntimeError("node already started (or closed)")
        meta = self._log.snapshot_meta()
        if meta is not None and meta.index > 0:
            self._fsm.restore(_ChunkStream(iter(self._snapshots.open(meta.index))))
            self._applied = meta.index
        host, port = split_address(self._bind)
        self._transport = TCPTransport(
            self.id, self._on_message, host=host, port=port, rng=random.Random(self._rng.random()),
            **self._transport_options,
        )
        await self._transport.start()
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
            self._core = RaftCore(core_config, self._log, random.Random(self._rng.random()),
                                  bootstrap=bootstrap)
        except BaseException:
            await self._transport.close()
            raise
        self._sync_peers()
        loop = self._loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._ready_loop(), name=f"raft-ready {self.id}"),
            loop.create_task(self._ticker(), name=f"raft-tick {self.id}"),
        ]
        self._wake()

    @property
    def address(self) -> str:
        """The raft address this server listens on (after ``start()``)."""
        if self._transport is None:
            raise RuntimeError("node not started")
        return self._transport.address

    async def close(self) -> None:
        """Stop ticking and serving; fail every waiting call with NodeClosedError."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        if self._deferred_flush is not None:
            self._deferred_flush.cancel()
        current = asyncio.current_task()
        tasks = [t for t in [*self._tasks, *self._snapshot_senders.values(), *self._side_tasks]
                 if t is not current]
        if self._snapshot_task is not None and self._snapshot_task is not current:
            tasks.append(self._snapshot_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._transport is not None:
            await self._transport.close()
        sinks = [incoming.sink for incoming in self._incoming.values()]
        sinks += self._staged.values()
        self._incoming.clear()
        self._staged.clear()
        for sink in sinks:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(sink.abort)
        if self._restore_gate is not None:
            self._restore_gate.set()
        error = self.failure if self.failure is not None else None
        self._fail_all(lambda: NodeFailedError(f"{self.id}: node failed: {error!r}")
                       if error is not None else NodeClosedError(f"{self.id}: node closed"))
        self._notify()
        if self._role is Role.LEADER:
            self._tell_leadership(False)
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

    def last_contact(self) -> float | None:
        """Seconds since the leader was last heard from: 0.0 on the leader, None when no
        leader has been heard from yet."""
        if self._role is Role.LEADER:
            return 0.0
        if self._last_contact is None:
            return None
        return time.monotonic() - self._last_contact

    def add_leadership_listener(self, callback: Callable[[bool], None]) -> Callable[[], None]:
        """Call ``callback(is_leader)`` from the event loop each time this server gains or
        loses leadership (and ``False`` once when it closes while leading); returns a
        function that removes it. Callbacks must not block."""
        self._leadership_listeners.append(callback)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._leadership_listeners.remove(callback)

        return remove

    async def leadership_changes(self) -> AsyncIterator[bool]:
        """Whether this server leads: now, then at each change, until the node closes."""
        changes: asyncio.Queue[bool | None] = asyncio.Queue()
        remove = self.add_leadership_listener(changes.put_nowait)
        closed_waiter = asyncio.get_running_loop().create_task(self._closed.wait())
        closed_waiter.add_done_callback(lambda _: changes.put_nowait(None))
        try:
            current = self.is_leader()
            yield current
            while (leading := await changes.get()) is not None:
                if leading != current:
                    current = leading
                    yield leading
            if current:
                yield False
        finally:
            remove()
            closed_waiter.cancel()

    def _tell_leadership(self, leading: bool) -> None:
        for callback in list(self._leadership_listeners):
            try:
                callback(leading)
            except Exception:
                log.exception("%s: leadership listener %r failed", self.id, callback)

    def configuration(self) -> Configuration:
        """The membership in force (the newest in the log, committed or not)."""
        return self._require_core().configuration

    @property
    def applied_index(self) -> int:
        return self._applied

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
        return self._register(core, index, None if on_done is None else Completion(on_done))

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
        return self._applied

    async def read_index(self, timeout: float | None = None) -> int:
        """A linearizable read point: a quorum confirmed the leader's commit index (ReadIndex),
        and this server has applied up to it. Works on followers (asks the leader)."""
        core = self._require_core()
        ctx = f"{self.id}/{next(self._read_ids)}".encode()
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        core.read_index(ctx)  # raises NotLeaderError when there is no leader
        self._reads[ctx] = _Read(fut)
        self._wake()
        limit = timeout if timeout is not None else self._read_timeout()
        try:
            return await wait_for(asyncio.shield(fut), limit)
        except TimeoutError:
            raise RaftTimeoutError(f"{self.id}: read index not confirmed within {limit:.2f}s "
                                   f"(leader: {self._leader or 'unknown'})") from None
        finally:
            self._reads.pop(ctx, None)

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
            to = max(others, key=lambda v: getattr(core.progress(v), "match", 0))
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
        self._snapshot_waiters.append(fut)
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
            await self._await_entry(core, core.propose(b""), limit)
            meta = core.restore_meta(after_index)
            sink = self._snapshots.create(meta)
            try:
                size, crc = await asyncio.to_thread(self._write_body, sink, body)
                meta = replace(meta, size=size, crc=crc)
                self._require_core().restore(meta)  # NotLeaderError / ValueError: not done
            except BaseException:
                await asyncio.to_thread(sink.abort)
                raise
            self._stage(meta.index, sink)
            self._wake()
            await self._wait_for(lambda: self._applied >= meta.index, limit,
                                 f"the restored snapshot {meta.index} to be installed")
        finally:
            self._restore_gate = None
            gate.set()
        log.info("%s: restored a user snapshot at index %d (%d bytes); waiting for a quorum",
                 self.id, meta.index, meta.size)
        await self._propose(b"", limit)
        return meta

    @staticmethod
    def _write_body(sink: Any, body: Iterable[bytes]) -> tuple[int, int]:
        """In a worker thread: write ``body`` into ``sink``; returns its size and CRC."""
        size = crc = 0
        for chunk in body:
            sink.write(chunk)
            size += len(chunk)
            crc = zlib.crc32(chunk, crc)
        return size, crc

    def _stage(self, index: int, sink: Any) -> None:
        """Keep ``sink`` for the Ready that installs snapshot ``index``; a staged body the
        core replaced before that Ready is dropped."""
        for old_index, old in list(self._staged.items()):
            if old_index != index:
                del self._staged[old_index]
                task = asyncio.get_running_loop().create_task(asyncio.to_thread(old.abort))
                self._side_tasks.add(task)
                task.add_done_callback(self._side_tasks.discard)
        previous = self._staged.get(index)
        if previous is not None and previous is not sink:
            task = asyncio.get_running_loop().create_task(asyncio.to_thread(previous.abort))
            self._side_tasks.add(task)
            task.add_done_callback(self._side_tasks.discard)
        self._staged[index] = sink

    async def _commit_staged(self, meta: SnapshotMeta) -> None:
        """Commit the body of the snapshot this Ready installs (before its meta is saved)."""
        sink = self._staged.pop(meta.index, None)
        if sink is None:
            return  # already stored (a restarted install, or a test's store)
        stored = await asyncio.to_thread(sink.commit)
        if (stored.size, stored.crc) != (meta.size, meta.crc):
            raise RaftError(f"{self.id}: stored snapshot {stored} does not match {meta}")

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
            "applied_index": self._applied,
            "last_log_index": core.last_index,
            "first_log_index": self._log.first_index(),
            "snapshot_index": snap.index if snap is not None else 0,
            "last_contact": self.last_contact(),
            "voters": dict(conf.voters),
            "learners": dict(conf.learners),
            "pending_proposals": len(self._proposals),
            "pending_reads": len(self._reads),
            "failed": repr(self.failure) if self.failure is not None else None,
            **self.counters,
        }

    # -- proposals ---------------------------------------------------------------------------

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
        return await self._await_entry(core, index, timeout)

    @overload
    def _register(self, core: RaftCore, index: int, outcome: None = None,
                  ) -> asyncio.Future[Any]: ...
    @overload
    def _register(self, core: RaftCore, index: int, outcome: Completion) -> Completion: ...

    def _register(self, core: RaftCore, index: int, outcome: Completion | None = None,
                  ) -> asyncio.Future[Any] | Completion:
        """What carries entry ``index``'s result, resolved as it is applied (or dropped):
        ``outcome``, or a new future on the node's loop."""
        registered = outcome if outcome is not None else self._loop.create_future()
        self._proposals[index] = _Proposal(core.term, registered)
        self._wake()
        return registered

    async def _await_entry(self, core: RaftCore, index: int, timeout: float | None) -> Any:
        fut = self._register(core, index)
        if timeout is None:
            return await fut
        try:
            return await wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            if self._proposals.get(index) is not None and self._proposals[index].future is fut:
                del self._proposals[index]
            raise RaftTimeoutError(f"{self.id}: entry {index} not applied within {timeout}s; "
                                   f"it may still commit") from None

    async def _change(self, change: ConfigChange, timeout: float | None) -> int:
        core = self._require_core()
        if core.role is not Role.LEADER:
            raise NotLeaderError(self._leader)
        # The barrier commits an entry of this term and any earlier membership change, which
        # single-server changes need before the next one may start.
        await self._propose(b"", timeout)
        index = core.propose_config(change)  # raises NotLeaderError / ConfigChangeError
        if change.address:
            self._known_addresses[change.server_id] = change.address
        self._sync_peers()
        await self._await_entry(core, index, timeout)
        return index

    # -- waiting -----------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_for(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not pred():
            self._require_core()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RaftTimeoutError(f"{self.id}: timed out after {timeout:.2f}s waiting for "
                                       f"{what}")
            with contextlib.suppress(asyncio.TimeoutError):
                await wait_for(self._changed.wait(), remaining)

    def _read_timeout(self) -> float:
        if self.config.read_timeout is not None:
            return self.config.read_timeout
        return 2 * self.config.election_timeout

    def _fail_all(self, make_error: Callable[[], BaseException]) -> None:
        proposals, self._proposals = self._proposals, {}
        for proposal in proposals.values():
            if not proposal.future.done():
                proposal.future.set_exception(make_error())
        reads, self._reads = self._reads, {}
        for read in reads.values():
            if not read.future.done():
                read.future.set_exception(make_error())
        waiters, self._snapshot_waiters = self._snapshot_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(make_error())

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
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while core.has_ready():
                    rd = core.ready()
                    await self._process(core, rd)
                    core.advance(rd)
                    self._observe(core)
                    self._maybe_snapshot(core)
                self._observe(core)
                self._maybe_snapshot(core)
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
        task = asyncio.get_running_loop().create_task(self.close())
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _process(self, core: RaftCore, rd: Ready) -> None:
        """Persist, send, install and apply one Ready, in the order safety needs (no stricter:
        every fsync waited for here is latency every write pays)."""
        self.counters["readies"] += 1
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
                self._defer_hard_state(hs)
            self._send_all(core, rd.messages)
            self._apply_ready(rd)
            return
        early: list[Message] = []
        late = rd.messages
        if vote_unchanged and rd.snapshot is None and core.role is Role.LEADER:
            # A leader may replicate while it writes its own log (Raft thesis 10.2.1): it
            # counts itself towards a commit only once advance() says its entries are durable.
            early = [m for m in rd.messages if m.kind in _LEADER_KINDS]
            late = [m for m in rd.messages if m.kind not in _LEADER_KINDS]
        self._send_all(core, early)
        # Entries that earlier (awaited) writes made durable here, and that are committed, are
        # applied and answered while this Ready's write syncs rather than after it: otherwise
        # every batch of writes waits for the next batch's fsync before it is answered. The
        # write is queued first, so that the disk does not wait for the applying either.
        apply_first = (vote_unchanged and rd.snapshot is None and bool(rd.committed_entries)
                       and (not rd.entries
                            or rd.committed_entries[-1].index < rd.entries[0].index))
        if rd.snapshot is not None:
            await self._commit_staged(rd.snapshot)
        saved = self._persist(rd)
        if apply_first:
            self._apply_ready(rd)
        if saved is not None:
            await saved
        # From here to advance() nothing yields: see the module docstring.
        self._send_all(core, late)
        if not apply_first:
            self._apply_ready(rd)

    def _persist(self, rd: Ready) -> asyncio.Future[None] | None:
        """Start writing ``rd`` durably: the future of its sync, or None once a log without
        ``save_async`` has saved it."""
        self.counters["saves"] += 1
        hard_state = rd.hard_state or self._deferred_hard_state  # a newer one supersedes it
        self._deferred_hard_state = None
        save_async = getattr(self._log, "save_async", None)
        if save_async is not None:
            return cast("asyncio.Future[None]", save_async(hard_state, rd.entries, rd.snapshot))
        self._log.save(hard_state, rd.entries, rd.snapshot)
        return None

    def _defer_hard_state(self, hard_state: HardState) -> None:
        self._deferred_hard_state = hard_state
        if self._deferred_flush is None:
            self._deferred_flush = asyncio.get_running_loop().call_later(
                self.config.tick_interval, self._flush_hard_state)

    def _flush_hard_state(self) -> None:
        self._deferred_flush = None
        hard_state, self._deferred_hard_state = self._deferred_hard_state, None
        if hard_state is None or self._closing:
            return
        self.counters["saves"] += 1
        save_async = getattr(self._log, "save_async", None)
        if save_async is None:
            self._log.save(hard_state, ())
            return

        def check(done: asyncio.Future[None]) -> None:
            if not done.cancelled() and done.exception() is not None:
                self._fail(done.exception())  # type: ignore[arg-type]

        save_async(hard_state, ()).add_done_callback(check)

    def _send_all(self, core: RaftCore, messages: list[Message]) -> None:
        for message in messages:
            self._send(core, message)

    def _apply_ready(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self._install_snapshot(rd.snapshot)
        if rd.committed_entries:
            self._apply_entries(rd.committed_entries)
        for read_state in rd.read_states:
            read = self._reads.get(read_state.context)
            if read is not None:
                read.index = read_state.index
        self._serve_reads()

    def _observe(self, core: RaftCore) -> None:
        """React to role, leader and membership changes."""
        role, leader = core.role, core.leader_id
        if (role, leader) != (self._role, self._leader):
            was_leader = self._role is Role.LEADER
            self._role, self._leader = role, leader
            if was_leader != (role is Role.LEADER):
                self._tell_leadership(not was_leader)
            if was_leader and role is not Role.LEADER:
                # Entries already committed are applied here all the same (a leader removing
                # itself steps down as its removal commits, before applying it): their callers
                # get the result. The others' outcome is unknown.
                committed = core.commit_index
                proposals = self._proposals
                self._proposals = {i: p for i, p in proposals.items() if i <= committed}
                for index, proposal in proposals.items():
                    if index > committed and not proposal.future.done():
                        proposal.future.set_exception(LeadershipLostError(index, leader))
            # ReadIndex rounds in flight died with the old leader (or our forwarding of them).
            reads, self._reads = self._reads, {}
            for read in reads.values():
                if not read.future.done():
                    read.future.set_exception(NotLeaderError(leader, "leader changed during a "
                                                                     "read"))
            log.info("%s: %s in term %d (leader: %s)", self.id, role.value, core.term, leader)
        self._sync_peers()
        self._notify()

    def _sync_peers(self) -> None:
        """Point the transport at every server we may have to talk to."""
        if self._core is None or self._transport is None:
            return
        configuration = self._core.configuration
        if configuration is self._conf_seen:
            return
        self._conf_seen = configuration
        conf = configuration.all_servers()
        for server, address in conf.items():
            if address:
                self._known_addresses[server] = address
        # Members' current addresses win; static peers stay reachable until removed.
        peers = {**self._known_addresses, **{s: a for s, a in conf.items() if a}}
        peers.pop(self.id, None)
        if peers != self._peers_sent:
            self._transport.set_peers(peers)
            self._peers_sent = peers

    # -- messages ----------------------------------------------------------------------------

    def _send(self, core: RaftCore, message: Message) -> None:
        transport = self._transport
        assert transport is not None
        if message.kind is MessageKind.SNAPSHOT:
            self._start_snapshot_send(message)
            return
        try:
            transport.send(message.dst, message.to_wire())
        except KeyError:
            log.debug("%s: no address for %s, dropping %r", self.id, message.dst, message)
            core.report_unreachable(message.dst)
            return
        except ValueError as exc:  # above max_frame (max_entry_bytes should prevent it)
            log.error("%s: cannot send %r: %s", self.id, message, exc)
            core.report_unreachable(message.dst)
            return
        self.counters["messages_sent"] += 1
        if not transport.is_connected(message.dst):
            core.report_unreachable(message.dst)

    def _on_message(self, sender: str, payload: Any) -> Any:
        core = self._core
        if core is None or self._closing:
            return None
        if isinstance(payload, list) and payload and payload[0] == _SNAP:
            return self._on_snapshot_frame(sender, payload)
        try:
            message = Message.from_wire(payload)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("%s: dropping a malformed message from %s: %s", self.id, sender, exc)
            return None
        if message.src != sender or message.dst != self.id:
            log.warning("%s: dropping %r received from connection of %s", self.id, message,
                        sender)
            return None
        self._step(core, message)
        return None

    def _step(self, core: RaftCore, message: Message) -> None:
        if message.kind in (MessageKind.APPEND, MessageKind.HEARTBEAT, MessageKind.SNAPSHOT):
            self._last_contact = time.monotonic()
        core.step(message)
        self._wake()

    # -- applying ----------------------------------------------------------------------------

    def _apply_entries(self, entries: list[Entry]) -> None:
        commands = [(e.index, e.data) for e in entries if e.type is EntryType.NORMAL and e.data]
        # Only proposals of this server read results: followers and a replay at start-up
        # need none built.
        results = iter(self._fsm.apply_batch(commands, self._proposals) if commands else ())
        self._bytes_since_snapshot += sum(len(entry.data) for entry in entries)
        for entry in entries:
            result = None
            if entry.type is EntryType.NORMAL and entry.data:
                result = next(results)
            self._applied = entry.index
            proposal = self._proposals.pop(entry.index, None)
            if proposal is None or proposal.future.done():
                continue
            if proposal.term == entry.term:
                proposal.future.set_result(result)
            else:
                proposal.future.set_exception(ProposalDroppedError(
                    f"entry {entry.index} of term {proposal.term} was replaced by term "
                    f"{entry.term}'s entry: not applied"))
        self.counters["applied_entries"] += len(entries)

    def _serve_reads(self) -> None:
        for ctx, read in list(self._reads.items()):
            if read.index is not None and read.index <= self._applied:
                del self._reads[ctx]
                if not read.future.done():
                    read.future.set_result(read.index)

    # -- snapshots: taking -------------------------------------------------------------------

    def _maybe_snapshot(self, core: RaftCore) -> None:
        """Between two Readies (the FSM is exactly at the core's applied index), capture a
        snapshot when one was asked for or the log passed the threshold; a task writes it."""
        if self._snapshot_task is not None or self._closing:
            return
        applied, base = core.applied_index, self._snapshot_index()
        config, now = self.config, time.monotonic()
        by_count = (applied - base >= config.snapshot_threshold
                    and now >= self._last_snapshot_at + config.snapshot_interval)
        by_bytes = self._bytes_since_snapshot >= config.snapshot_threshold_bytes
        automatic = (by_count or by_bytes) and now >= self._snapshot_retry_at
        if not (self._snapshot_waiters or automatic):
            return
        waiters, self._snapshot_waiters = self._snapshot_waiters, []
        if core.snapshot_pending or applied <= base:
            existing = self._log.snapshot_meta()
            for waiter in waiters:
                if core.snapshot_pending or existing is None:
                    waiter.set_exception(RaftError(
                        f"{self.id}: nothing to snapshot (applied {applied}) or a snapshot "
                        f"from the leader is being installed"))
                else:
                    waiter.set_result(existing)  # nothing new since the last snapshot
            return
        meta = core.snapshot_meta(applied)
        image = self._fsm.snapshot(meta.term)  # O(1) point-in-time copy of the state
        if automatic:
            self._last_snapshot_at = now
        self._bytes_in_snapshot, self._bytes_since_snapshot = self._bytes_since_snapshot, 0
        self._snapshot_task = asyncio.get_running_loop().create_task(
            self._finish_snapshot(meta, image, waiters), name=f"raft-snapshot {self.id}")

    async def _finish_snapshot(self, meta: SnapshotMeta, image: Any,
                               waiters: list[asyncio.Future[SnapshotMeta]]) -> None:
        try:
            meta = await asyncio.to_thread(self._write_snapshot, meta, image)
            core = self._require_core()
            if not core.snapshot_pending:
                # One short durable write; the core owns its calls into the LogStore.
                core.compact(max(0, meta.index - self.config.trailing_entries), meta)
            self.counters["snapshots_taken"] += 1
            log.info("%s: snapshot at index %d (%d bytes), log compacted", self.id, meta.index,
                     meta.size)
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(meta)
        except Exception as exc:
            log.warning("%s: snapshot at index %d failed: %r", self.id, meta.index, exc)
            self._snapshot_retry_at = time.monotonic() + 10 * self.config.election_timeout
            self._bytes_since_snapshot += self._bytes_in_snapshot
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
        finally:
            self._snapshot_task = None
            self._wake()

    def _snapshot_index(self) -> int:
        meta = self._log.snapshot_meta()
        return meta.index if meta is not None else 0

    def _write_snapshot(self, meta: SnapshotMeta, image: Any) -> SnapshotMeta:
        """In a worker thread: stream the FSM image into a sink (committed versions of the tree
        may be read from any thread)."""
        sink = self._snapshots.create(meta)
        try:
            for chunk in image.chunks():
                sink.write(chunk)
            return sink.commit()
        except BaseException:
            sink.abort()
            raise

    def _install_snapshot(self, meta: SnapshotMeta) -> None:
        """Replace the FSM with the leader's snapshot (its body is already in our store)."""
        self._fsm.restore(_ChunkStream(iter(self._snapshots.open(meta.index))))
        self._applied = meta.index
        self._bytes_since_snapshot = 0
        self.counters["snapshots_installed"] += 1
        for index in [i for i in self._proposals if i <= meta.index]:
            proposal = self._proposals.pop(index)
            if not proposal.future.done():
                proposal.future.set_exception(LeadershipLostError(index, self._leader))
        log.info("%s: installed snapshot at index %d from %s", self.id, meta.index,
                 self._leader)

    # -- snapshots: sending (leader) ---------------------------------------------------------

    def _start_snapshot_send(self, message: Message) -> None:
        running = self._snapshot_senders.get(message.dst)
        if running is not None and not running.done():
            return  # the stream in progress reports to the core when it ends
        task = asyncio.get_running_loop().create_task(
            self._send_snapshot(message), name=f"raft-snapshot {self.id}->{message.dst}")
        self._snapshot_senders[message.dst] = task

    async def _send_snapshot(self, message: Message) -> None:
        transport, meta, peer = self._transport, message.snapshot, message.dst
        assert transport is not None and meta is not None
        limit = self.config.snapshot_send_timeout
        transfer = next(self._transfer_ids)
        ok = False
        try:
            await wait_for(
                transport.send_bulk(peer, [_SNAP, "begin", transfer, meta.to_wire()]), limit)
            chunks = iter(self._snapshots.open(meta.index))
            seq = 0
            while True:
                chunk = await asyncio.to_thread(next, chunks, None)
                if chunk is None:
                    break
                await wait_for(
                    transport.send_bulk(peer, [_SNAP, "chunk", transfer, seq, chunk]), limit)
                seq += 1
            await wait_for(
                transport.send_bulk(peer, [_SNAP, "end", transfer, seq, message.to_wire()]),
                limit)
            ok = True
            self.counters["snapshots_sent"] += 1
            log.info("%s: sent snapshot at index %d to %s (%d chunks)", self.id, meta.index,
                     peer, seq)
            # Let the follower's answer move its progress on; reporting at once would let a
            # heartbeat answer that overtakes it start a second transfer of the same snapshot.
            with contextlib.suppress(RaftError):
                await self._wait_for(lambda: self._snapshot_landed(peer),
                                     2 * self.config.election_timeout,
                                     f"{peer} to install snapshot {meta.index}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s: sending snapshot %d to %s failed: %r", self.id, meta.index, peer,
                        exc)
        finally:
            if not self._closing and self._core is not None:
                self._core.report_snapshot(peer, ok)
                self._wake()

    def _snapshot_landed(self, peer: str) -> bool:
        progress = self._core.progress(peer) if self._core is not None else None
        return progress is None or progress.state is not ProgressState.SNAPSHOT

    # -- snapshots: receiving (follower) -----------------------------------------------------

    async def _on_snapshot_frame(self, sender: str, frame: list[Any]) -> None:
        try:
            await self._snapshot_frame(sender, frame)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s: snapshot stream from %s dropped: %r", self.id, sender, exc)
            await self._drop_incoming(sender)

    async def _drop_incoming(self, sender: str) -> None:
        incoming = self._incoming.pop(sender, None)
        if incoming is not None:
            await asyncio.to_thread(incoming.sink.abort)

    async def _snapshot_frame(self, sender: str, frame: list[Any]) -> None:
        step = frame[1]
        if step == "begin":
            _, _, transfer, meta_wire = frame
            await self._drop_incoming(sender)
            meta = SnapshotMeta.from_wire(meta_wire)
            sink = self._snapshots.create(meta)
            self._incoming[sender] = _Incoming(int(transfer), meta, sink)
            return
        incoming = self._incoming.get(sender)
        if incoming is None or incoming.transfer != frame[2]:
            return  # the rest of a stream whose start we did not see: ignore it
        if step == "chunk":
            _, _, _, seq, chunk = frame
            if seq != incoming.next_chunk or not isinstance(chunk, bytes):
                raise ValueError(f"snapshot chunk {seq!r} out of order (expected "
                                 f"{incoming.next_chunk})")
            await asyncio.to_thread(incoming.sink.write, chunk)
            incoming.next_chunk += 1
            incoming.size += len(chunk)
            incoming.crc = zlib.crc32(chunk, incoming.crc)
        elif step == "end":
            _, _, _, count, wire = frame
            if count != incoming.next_chunk:
                raise ValueError(f"snapshot stream ended after {incoming.next_chunk} chunks, "
                                 f"sender says {count}")
            message = Message.from_wire(wire)
            sent = message.snapshot
            if sent is None or message.src != sender or message.dst != self.id:
                raise ValueError(f"bad snapshot message at the end of a stream: {message!r}")
            received = (incoming.meta.index, incoming.meta.term, incoming.size, incoming.crc)
            if received != (sent.index, sent.term, sent.size, sent.crc):
                raise ValueError(f"received snapshot (index, term, size, crc) {received} does "
                                 f"not match its message {sent}")
            del self._incoming[sender]
            core = self._core
            if core is None or self._closing:
                await asyncio.to_thread(incoming.sink.abort)
                return
            self._step(core, message)
            if core.pending_snapshot == sent:
                self._stage(sent.index, incoming.sink)  # committed by the installing Ready
            else:
                # Caught up meanwhile: never store a body the log will not point to.
                await asyncio.to_thread(incoming.sink.abort)
        else:
            raise ValueError(f"unknown snapshot frame {step!r}")

