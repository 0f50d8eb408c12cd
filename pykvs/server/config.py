"""A server's configuration: everything one server needs, filled by the agent from its flags
(or by ``pykvs.open``), checked once when it is made."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pykvs.netaddr import split_address
from pykvs.server.acl import DEFAULT_POLICIES
from pykvs.server.limits import Limits
from pykvs.server.tls import TLSConfig
from pykvs.state.watch import DEFAULT_QUERY_TIME, MAX_QUERY_TIME

DEFAULT_MAX_VALUE_SIZE = 512 * 1024  # Consul's kv_max_value_size


@dataclass
class ServerConfig:
    """Everything one server needs; the agent fills it from its flags."""

    data_dir: str
    node_name: str = "node1"  # also the Raft server id
    datacenter: str = "dc1"
    bind: str = "127.0.0.1"
    port: int = 8300  # 0 picks a free port (and a restart reuses the one it picked)
    bootstrap: bool = True  # found a one-server cluster when there is no state and no join
    bootstrap_expect: int = 0  # wait for this many servers, then found the cluster together
    join: list[str] = field(default_factory=list)  # "host:port" of servers in this datacenter
    join_wan: dict[str, list[str]] = field(default_factory=dict)  # dc -> server addresses
    rpc_hold_timeout: float = 7.0  # Consul's RPCHoldTimeout
    join_retry_interval: float = 0.5
    max_value_size: int = DEFAULT_MAX_VALUE_SIZE
    default_query_time: float = DEFAULT_QUERY_TIME
    max_query_time: float = MAX_QUERY_TIME
    session_ttl_multiplier: float = 2.0  # Consul's SessionTTLMultiplier (tests shorten it)
    tombstone_ttl: float = 15 * 60.0
    tombstone_granularity: float = 30.0
    tick_interval: float = 0.05
    election_tick: int = 10
    snapshot_threshold: int = 8192
    raft_options: dict[str, Any] = field(default_factory=dict)  # more NodeConfig fields
    acl_enabled: bool = False  # off: every check passes (pykvs.server.acl)
    acl_default_policy: str = "allow"  # for a token's names no rule matches: allow | deny
    # The token this server presents when it asks a cluster to make it a member (Consul's
    # acl.tokens.agent): Internal.Join with Add needs operator:write once ACLs are bootstrapped.
    acl_agent_token: str = ""
    # --encrypt: 32 bytes every server of the cluster holds; servers prove it to each other
    # before any Raft or Internal.Join traffic (pykvs.raft.auth). b"": no such proof.
    encrypt_key: bytes = b""
    tls: TLSConfig = field(default_factory=TLSConfig)  # plaintext unless a certificate is set
    limits: Limits = field(default_factory=Limits)  # protective limits (server/limits.py)

    def __post_init__(self) -> None:
        for name in ("node_name", "datacenter", "bind"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a str, not {type(getattr(self, name)).__name__}")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise TypeError(f"port must be an int, not {type(self.port).__name__}")
        if not self.node_name:
            raise ValueError("node_name must not be empty")
        if not self.datacenter:
            raise ValueError("datacenter must not be empty")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.bootstrap_expect < 0:
            raise ValueError(f"bootstrap_expect must be >= 0, got {self.bootstrap_expect}")
        if self.max_value_size < 1:
            raise ValueError(f"max_value_size must be positive, got {self.max_value_size}")
        if self.encrypt_key and len(self.encrypt_key) != 32:
            raise ValueError(f"encrypt_key must be 32 bytes, got {len(self.encrypt_key)}")
        if self.acl_default_policy not in DEFAULT_POLICIES:
            raise ValueError(f"acl_default_policy must be allow or deny, got "
                             f"{self.acl_default_policy!r}")
        for name in ("rpc_hold_timeout", "join_retry_interval", "default_query_time",
                     "max_query_time", "session_ttl_multiplier", "tombstone_ttl",
                     "tombstone_granularity", "tick_interval"):
            seconds = getattr(self, name)
            if (isinstance(seconds, bool) or not isinstance(seconds, int | float)
                    or not 0 <= seconds < math.inf):  # also refuses NaN
                raise ValueError(f"{name} must be a finite number >= 0, got {seconds!r}")
        for address in [*self.join, *(a for dc in self.join_wan.values() for a in dc)]:
            split_address(address)
