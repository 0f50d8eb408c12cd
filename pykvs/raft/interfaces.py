"""The seams of the Raft layer, as small protocols (in the spirit of hashicorp/raft's LogStore,
StableStore, SnapshotStore and FSM).

``LogStore`` is what the sans-I/O core reads (``core.py`` never writes it: its Readies ask the
driver to) and ``SnapshotStore`` holds the snapshot bodies. ``AsyncLogStore`` adds the writes
``node.py`` queues from the event loop, ``StateMachine`` is what the node applies entries to
and snapshots, and ``Transport`` is how it reaches its peers.

``storage/`` implements the stores on LMDB and ``transport.py`` the transport on TCP;
``memstore.py`` implements the stores in memory for the core's tests and the deterministic
simulator; ``pykvs.fsm.FSM`` is the state machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Container, Iterator, Mapping, Sequence
from typing import Any, Protocol

from pykvs.raft.types import Entry, HardState, SnapshotMeta


class CompactedError(LookupError):
    """The requested index is at or below the last snapshot: the log no longer holds it."""


class UnavailableError(LookupError):
    """The requested index is above the last index in the log."""


class LogStore(Protocol):
    """The durable log plus the hard state (term, vote, commit).

    Indexes start at 1. After compaction the log keeps the term of its last compacted index so
    that ``term(first_index() - 1)`` still answers (the AppendEntries consistency check needs it).
    """

    def first_index(self) -> int:
        """Index of the first entry held (``snapshot index + 1`` once compacted; 1 when empty)."""
        ...

    def last_index(self) -> int:
        """Index of the last entry held (the snapshot index when the log is empty after it)."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry at ``index``; raises CompactedError / UnavailableError."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries in ``[lo, hi)``; at least one entry if any is in range, then up to max_bytes."""
        ...

    def hard_state(self) -> HardState: ...

    def snapshot_meta(self) -> SnapshotMeta | None:
        """Metadata of the newest snapshot the log was compacted to or reset from."""
        ...

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: SnapshotMeta | None = None,
    ) -> None:
        """Persist one Ready in a single durable write (one transaction, one sync).

        ``snapshot`` (when given) is applied first: entries up to its index are dropped, and the
        whole log is dropped if it does not contain the snapshot's (index, term). Then ``entries``
        are written; any entry already stored at or after ``entries[0].index`` is replaced.
        """
        ...

    def compact(self, upto: int, meta: SnapshotMeta) -> None:
        """Drop entries ``<= upto`` (covered by the snapshot ``meta``), durably."""
        ...


class SnapshotSink(Protocol):
    def write(self, chunk: bytes) -> None: ...
    def commit(self) -> SnapshotMeta:
        """Make the snapshot durable and visible; returns its meta with size and CRC filled in."""
        ...
    def abort(self) -> None: ...


class SnapshotStore(Protocol):
    """Snapshot bodies, written in chunks; the newest two are kept."""

    def create(self, meta: SnapshotMeta) -> SnapshotSink: ...

    def latest(self) -> SnapshotMeta | None: ...

    def open(self, index: int) -> Iterator[bytes]:
        """The body of the snapshot at ``index``, chunk by chunk, its CRC verified at the end."""
        ...


class AsyncLogStore(LogStore, Protocol):
    """A LogStore whose writes are queued from the event loop and synced off it (by a writer
    thread), in the order they are queued, coalesced into as few syncs as possible. What
    ``RaftNode`` drives; each returns a future that resolves once the write is durable (or fails
    with the store's error).
    """

    def save_async(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: SnapshotMeta | None = None,
    ) -> asyncio.Future[None]:
        """``save()``, queued now."""
        ...

    def compact_async(self, upto: int, meta: SnapshotMeta) -> asyncio.Future[None]:
        """``compact()``, queued now."""
        ...

    def fact(self, name: str) -> Any:
        """A small durable fact (the cluster id), None when absent."""
        ...

    def put_fact(self, name: str, value: Any) -> None:
        """Durably store a small fact (written at once, not queued)."""
        ...


class SnapshotImage(Protocol):
    """A point-in-time copy of the state machine, taken in O(1) on the event loop and streamed
    from a worker thread while entries go on being applied."""

    def chunks(self) -> Iterator[bytes]:
        """The snapshot body, piece by piece."""
        ...


class StateMachine(Protocol):
    """What the node needs of the state machine (``pykvs.fsm.FSM``). Called from the event
    loop only, in log order."""

    def apply_batch(self, entries: list[tuple[int, bytes]],
                    results_for: Container[int] | None = None) -> list[Any]:
        """Apply ``(index, command)`` pairs; the results of the entries whose index is in
        ``results_for`` (others: None), in order."""
        ...

    def snapshot(self, term: int = 0) -> SnapshotImage: ...

    def restore(self, stream: Any) -> object:
        """Replace the whole state by a snapshot body, read from ``stream`` with ``read(n)``
        (a binary stream over the body's chunks)."""
        ...


class Transport(Protocol):
    """Frames to and from the other servers (``transport.TCPTransport``): a control lane that
    never waits, and a bulk lane for snapshot bodies with room for a few frames per peer."""

    @property
    def address(self) -> str: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def set_peers(self, peers: Mapping[str, str]) -> None:
        """The servers to keep links to, id -> address."""
        ...

    def set_cluster_id(self, cluster_id: str) -> None:
        """Accept only servers of cluster ``cluster_id`` from now on, and name it."""
        ...

    @property
    def ids_heard(self) -> set[str]:
        """Cluster ids named by the hellos accepted while this server had none."""
        ...

    def send(self, peer: str, payload: Any) -> bool:
        """Queue a control frame, never waiting (False: the oldest queued one was dropped);
        raises KeyError for a peer with no address, ValueError for a frame above the limit."""
        ...

    async def send_bulk(self, peer: str, payload: Any) -> None:
        """Queue a bulk frame, waiting for room in the peer's bulk queue."""
        ...

    def is_connected(self, peer: str) -> bool: ...
