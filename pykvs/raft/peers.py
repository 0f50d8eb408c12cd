"""The addresses a node's transport must know: every member's, and the peers it was given."""

from __future__ import annotations

from collections.abc import Mapping

from pykvs.raft.interfaces import Transport
from pykvs.raft.types import Configuration


class PeerAddresses:
    """``peers`` given to the node (a new server joining needs its leader's address to answer
    it) stay reachable until removed; the membership's addresses are added as they become known,
    and win over older ones."""

    def __init__(self, node_id: str, peers: Mapping[str, str]) -> None:
        self._id = node_id
        self._known: dict[str, str] = dict(peers)
        self._sent: dict[str, str] | None = None
        self._conf_seen: Configuration | None = None

    def learn(self, server_id: str, address: str) -> None:
        """A server's address, from a membership change this node proposes."""
        self._known[server_id] = address

    def sync(self, configuration: Configuration, transport: Transport) -> None:
        """Point ``transport`` at every server we may have to talk to."""
        if configuration is self._conf_seen:
            return
        self._conf_seen = configuration
        conf = configuration.all_servers()
        for server, address in conf.items():
            if address:
                self._known[server] = address
        # Members' current addresses win; static peers stay reachable until removed.
        peers = {**self._known, **{s: a for s, a in conf.items() if a}}
        peers.pop(self._id, None)
        if peers != self._sent:
            transport.set_peers(peers)
            self._sent = peers
