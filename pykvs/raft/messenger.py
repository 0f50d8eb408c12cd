"""A node's messages to and from the other servers.

Raft messages go on the transport's control lane, which never waits (a message that cannot go
now tells the core its peer is unreachable, and the core probes it again later). A SNAPSHOT
message starts a stream of the snapshot's body on the bulk lane instead, and such streams are
received into the SnapshotStore (``snapshot_transfer.py``). The transport is kept pointed at
every server the node may have to talk to (``peers.py``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from pykvs.raft.config import NodeConfig
from pykvs.raft.core import RaftCore
from pykvs.raft.interfaces import SnapshotSink, SnapshotStore, Transport
from pykvs.raft.messages import Message, MessageKind
from pykvs.raft.peers import PeerAddresses
from pykvs.raft.progress import ProgressState
from pykvs.raft.snapshot_transfer import SNAP, SnapshotReceiver, SnapshotSender, StagedSnapshots
from pykvs.raft.transport import TCPTransport
from pykvs.raft.types import SnapshotMeta

log = logging.getLogger("pykvs.raft.node")  # the node's log, as before this left node.py

# Messages that show a live leader.
_FROM_LEADER = (MessageKind.APPEND, MessageKind.HEARTBEAT, MessageKind.SNAPSHOT)


class Messenger:
    """The transport of one node, between it and the node's core.

    ``core`` is set once the node has made it (messages that come before are dropped) and
    ``closing`` once it closes. ``wait_for(predicate, timeout, what)`` is the node's wait for a
    change it observes; ``spawn`` runs a task the node cancels when it closes.
    """

    def __init__(
        self,
        config: NodeConfig,
        snapshots: SnapshotStore,
        peers: Mapping[str, str],
        counters: dict[str, int],
        wake: Callable[[], None],
        wait_for: Callable[[Callable[[], bool], float, str], Awaitable[None]],
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
    ) -> None:
        self._id = config.id
        self._config = config
        self._counters = counters
        self._wake = wake
        self._wait_for = wait_for
        self.core: RaftCore | None = None
        self.transport: Transport | None = None
        self.closing = False
        self.last_contact: float | None = None  # monotonic time a leader was last heard from
        self.peers = PeerAddresses(self._id, peers)
        # Snapshot bodies written but not committed to the store: committed by the Ready that
        # installs them (see snapshot_transfer.py).
        self.staged = StagedSnapshots(self._id, snapshots, spawn)
        self._sender = SnapshotSender(self._id, snapshots, config.snapshot_send_timeout,
                                      counters, self._snapshot_landed, self._report_snapshot)
        self._receiver = SnapshotReceiver(self._id, snapshots, self.staged,
                                          self._deliver_snapshot)

    async def start(self, host: str, port: int, rng: random.Random,
                    options: Mapping[str, Any]) -> Transport:
        """Listen on ``host:port`` (port 0 picks one)."""
        self.transport = transport = TCPTransport(self._id, self.on_message, host=host,
                                                  port=port, rng=rng, **options)
        await transport.start()
        return transport

    def tasks(self) -> list[asyncio.Task[None]]:
        """The snapshot streams being sent (the node cancels them as it closes)."""
        return self._sender.tasks()

    def take_sinks(self) -> list[SnapshotSink]:
        """The snapshot bodies being received or staged (the node aborts them as it closes)."""
        return [*self._receiver.take_sinks(), *self.staged.take_all()]

    def sync_peers(self) -> None:
        """Point the transport at every server we may have to talk to."""
        if self.core is not None and self.transport is not None:
            self.peers.sync(self.core.configuration, self.transport)

    # -- sending -----------------------------------------------------------------------------

    def send_all(self, core: RaftCore, messages: list[Message]) -> None:
        for message in messages:
            self._send(core, message)

    def _send(self, core: RaftCore, message: Message) -> None:
        transport = self.transport
        assert transport is not None
        if message.kind is MessageKind.SNAPSHOT:
            self._sender.send(transport, message)
            return
        try:
            transport.send(message.dst, message.to_wire())
        except KeyError:
            log.debug("%s: no address for %s, dropping %r", self._id, message.dst, message)
            core.report_unreachable(message.dst)
            return
        except ValueError as exc:  # above max_frame (max_entry_bytes should prevent it)
            log.error("%s: cannot send %r: %s", self._id, message, exc)
            core.report_unreachable(message.dst)
            return
        self._counters["messages_sent"] += 1
        if not transport.is_connected(message.dst):
            core.report_unreachable(message.dst)

    # -- receiving ---------------------------------------------------------------------------

    def on_message(self, sender: str, payload: Any) -> Any:
        """A frame from ``sender``: a Raft message (stepped into the core), or a piece of a
        snapshot stream (the awaitable the transport waits for before the next frame)."""
        core = self.core
        if core is None or self.closing:
            return None
        if isinstance(payload, list) and payload and payload[0] == SNAP:
            return self._receiver.on_frame(sender, payload)
        try:
            message = Message.from_wire(payload)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("%s: dropping a malformed message from %s: %s", self._id, sender, exc)
            return None
        if message.src != sender or message.dst != self._id:
            log.warning("%s: dropping %r received from connection of %s", self._id, message,
                        sender)
            return None
        self._step(core, message)
        return None

    def _step(self, core: RaftCore, message: Message) -> None:
        if message.kind in _FROM_LEADER:
            self.last_contact = time.monotonic()
        core.step(message)
        self._wake()

    # -- snapshot streams --------------------------------------------------------------------

    def _deliver_snapshot(self, message: Message) -> bool:
        """Step a SNAPSHOT message whose body is written here (``SnapshotReceiver``); True if
        the core will install it (the body is then staged for that Ready)."""
        core = self.core
        if core is None or self.closing:
            return False
        self._step(core, message)
        return core.pending_snapshot == message.snapshot

    async def _snapshot_landed(self, peer: str, meta: SnapshotMeta) -> None:
        """Until ``peer`` answered the snapshot sent to it (``SnapshotSender``)."""
        await self._wait_for(lambda: self._follower_has_snapshot(peer),
                             2 * self._config.election_timeout,
                             f"{peer} to install snapshot {meta.index}")

    def _follower_has_snapshot(self, peer: str) -> bool:
        progress = self.core.progress(peer) if self.core is not None else None
        return progress is None or progress.state is not ProgressState.SNAPSHOT

    def _report_snapshot(self, peer: str, ok: bool) -> None:
        """How a stream to ``peer`` ended (``SnapshotSender``)."""
        if not self.closing and self.core is not None:
            self.core.report_snapshot(peer, ok)
            self._wake()
