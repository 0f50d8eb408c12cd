"""``host:port`` addresses as flags, the Raft membership and the RPC layer write them."""

from __future__ import annotations


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` (``"[v6]:port"`` too) -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"peer address must be 'host:port', got {address!r}")
    return host.strip("[]"), int(port)
