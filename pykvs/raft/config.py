"""``NodeConfig``: the settings of one ``RaftNode`` (re-exported by ``pykvs.raft.node``)."""

from __future__ import annotations

from dataclasses import dataclass


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
    make_cluster_id: bool = False  # a leader gives a membership without a cluster id one
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

