"""Limits that protect a server from what its clients send: how large, how many, how long.

Each limit has a default (docs/SECURITY.md lists them) and an agent flag. When one is hit the
client gets an answer that names the limit and its value, never a silent drop:

- ``http_max_body``: largest HTTP request body (413), except a snapshot restore, which has
  its own archive limit. Values and transactions also have their own, smaller limits.
- ``http_max_conns`` / ``rpc_max_conns``: open connections to the HTTP API / RPC clients of
  the server port. One over the limit gets a 503 (HTTP) or an error frame (RPC) and is closed.
- ``rpc_max_frame``: largest RPC frame; a larger one gets an error frame, then the connection
  is closed (the stream cannot be resynchronised).
- ``max_blocking_per_client``: blocking queries (a read with an index to wait past) one client
  address may have waiting at once, over HTTP and over RPC each; one more is refused (429 /
  an error) at once. Other servers of the cluster are not counted on RPC: they forward their
  own clients' queries, which those servers already counted.
- ``rpc_read_timeout``: once the first byte of an RPC frame has arrived, the rest must arrive
  within this many seconds (10), as Go's ``ReadHeaderTimeout``; a half-sent frame is not held.
- ``rpc_idle_timeout``: an RPC connection with no request in flight and no frame begun for this
  many seconds (300) is closed. Both closes send the connection error first.
- ``http_header_timeout``: once the first byte of an HTTP request (its head) has arrived, the
  head must arrive in full within this many seconds (10), as Go's ``ReadHeaderTimeout``;
  ``http_body_timeout``: once the head has, the body must within this many (60), as the body
  part of Go's ``ReadTimeout`` (snapshot restores too). Either closes the connection, with no
  answer, as Go does. Idle HTTP connections close after 75 s (aiohttp's keep-alive).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields

DEFAULT_HTTP_MAX_BODY = 4 << 20
DEFAULT_HTTP_MAX_CONNS = 1024
DEFAULT_RPC_MAX_CONNS = 1024
DEFAULT_RPC_MAX_FRAME = 8 << 20
DEFAULT_MAX_BLOCKING_PER_CLIENT = 256
DEFAULT_RPC_READ_TIMEOUT = 10.0
DEFAULT_RPC_IDLE_TIMEOUT = 300.0
DEFAULT_HTTP_HEADER_TIMEOUT = 10.0
DEFAULT_HTTP_BODY_TIMEOUT = 60.0


class LimitExceeded(Exception):
    """A request or connection went over a limit; the message says which and its value."""


@dataclass(frozen=True)
class Limits:
    """The protective limits of one server (see the module docstring)."""

    http_max_body: int = DEFAULT_HTTP_MAX_BODY
    http_max_conns: int = DEFAULT_HTTP_MAX_CONNS
    rpc_max_conns: int = DEFAULT_RPC_MAX_CONNS
    rpc_max_frame: int = DEFAULT_RPC_MAX_FRAME
    max_blocking_per_client: int = DEFAULT_MAX_BLOCKING_PER_CLIENT
    rpc_read_timeout: float = DEFAULT_RPC_READ_TIMEOUT
    rpc_idle_timeout: float = DEFAULT_RPC_IDLE_TIMEOUT
    http_header_timeout: float = DEFAULT_HTTP_HEADER_TIMEOUT
    http_body_timeout: float = DEFAULT_HTTP_BODY_TIMEOUT

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name.endswith("_timeout"):
                if (isinstance(value, bool) or not isinstance(value, int | float)
                        or not 0 < value < math.inf):
                    raise ValueError(f"limits: {item.name} must be a positive number of "
                                     f"seconds, got {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"limits: {item.name} must be a positive integer, got {value!r}")
        if self.rpc_max_frame < 64:
            raise ValueError(f"limits: rpc_max_frame must be at least 64 bytes, got "
                             f"{self.rpc_max_frame}")


class PerClientCounter:
    """How many of something each client address has open, refused above ``limit``."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what
        self.counts: dict[str, int] = {}

    @contextmanager
    def hold(self, address: str) -> Iterator[None]:
        """Count one for ``address`` while the block runs; LimitExceeded when it has
        ``limit`` already."""
        count = self.counts.get(address, 0)
        if count >= self.limit:
            raise LimitExceeded(f"Too many concurrent {self.what} from {address}: the limit "
                                f"is {self.limit} per client address")
        self.counts[address] = count + 1
        try:
            yield
        finally:
            left = self.counts[address] - 1
            if left:
                self.counts[address] = left
            else:
                del self.counts[address]


def too_many_connections(kind: str, limit: int) -> str:
    return f"Too many {kind} connections: the limit is {limit}; try again later"
