"""The cluster id: which cluster a server belongs to, checked in every Raft hello.

Where it lives
--------------
Each server keeps it in its stable store (the fact ``cluster_id``, beside term and vote), and
the cluster keeps it in its membership (``Configuration.cluster_id``), so the log and every
snapshot carry it. A server gets it in one of two ways, and never changes it after:

- a server joining a formed cluster is told it by the cluster's ``Internal.Join`` answer and
  stores it before its node starts (``store_cluster_id``), so its first hello carries it;
- any server adopts the id of its *committed* membership when its store has none (a founder,
  or a server of a cluster formed before cluster ids). A committed entry is never replaced, so
  every server adopts the same id.

Who makes it: the first leader of a cluster whose membership has none
(``NodeConfig.make_cluster_id``) proposes the membership in force with a new random id, once
its term's no-op has committed. That covers a cluster just founded (several founders write
the same entry 1 each on their own, so a random id cannot be in it) and a cluster of data
directories from before cluster ids (each server generating its own at start would split it).
Until a server has an id it accepts any hello (as before ids existed); a short window at a
cluster's birth or upgrade, documented in docs/SECURITY.md.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pykvs.raft.core import ConfigChangeError, NotLeaderError, RaftCore, Role
from pykvs.raft.errors import RaftError

if TYPE_CHECKING:
    from pykvs.raft.interfaces import Transport

log = logging.getLogger("pykvs.raft.node")

FACT = "cluster_id"


def stored_cluster_id(store: Any) -> str:
    """The cluster id in a stable store ("" when it has none)."""
    value = store.fact(FACT)
    return value if isinstance(value, str) else ""


def store_cluster_id(store: Any, cluster_id: str) -> None:
    """Durably record ``cluster_id`` (a joining server, before its node starts); refuses to
    change an id already stored."""
    if not cluster_id:
        raise ValueError("a cluster id must not be empty")
    stored = stored_cluster_id(store)
    if stored and stored != cluster_id:
        raise ValueError(f"this server belongs to cluster {stored}, not {cluster_id}")
    if not stored:
        store.put_fact(FACT, cluster_id)


class ClusterIdentity:
    """One node's cluster id: adopted from the committed membership, made when leading."""

    def __init__(self, node_id: str, store: Any, make: bool) -> None:
        self._id = node_id
        self._store = store
        self._make = make
        self.value = stored_cluster_id(store)
        self._making = False

    def observe(self, core: RaftCore, transport: Transport | None) -> None:
        """After a Ready, while this server has no id: adopt the committed membership's, or
        the newest membership's once a peer's hello named that id (see below)."""
        try:
            cluster_id = core.configuration_at(core.commit_index).cluster_id
        except ValueError:
            return
        if not cluster_id and transport is not None:
            # The id a peer names in its hello was committed (a server names one only once
            # committed, or told by the cluster), so no other can ever be: ours to adopt when
            # our log carries it. Without this, a server that holds the entry but not yet the
            # commit could wait forever: its answers name no id, so the leader refuses them.
            newest = core.configuration.cluster_id
            if newest in transport.ids_heard:
                cluster_id = newest
        if not cluster_id:
            return
        self._store.put_fact(FACT, cluster_id)
        self.value = cluster_id
        if transport is not None:
            transport.set_cluster_id(cluster_id)
        log.info("%s: this server belongs to cluster %s", self._id, cluster_id)

    def elected(self, core: RaftCore, barrier: Callable[[], Awaitable[Any]],
                spawn: Callable[[Any], None]) -> None:
        """This server just won an election: make the id if its membership has none."""
        if self._make and not self._making and not core.configuration.cluster_id:
            self._making = True
            spawn(self._propose(core, barrier))

    async def _propose(self, core: RaftCore, barrier: Callable[[], Awaitable[Any]]) -> None:
        try:
            while core.role is Role.LEADER and not core.configuration.cluster_id:
                try:
                    await barrier()  # the term's no-op and any earlier change committed
                    core.propose_cluster_id(str(uuid.uuid4()))
                except ConfigChangeError:
                    continue  # another change came first: the next barrier commits it
                else:
                    log.info("%s: made the cluster id %s", self._id,
                             core.configuration.cluster_id)
                    await barrier()
        except (NotLeaderError, RaftError):
            pass  # the next leader makes it
        finally:
            self._making = False
