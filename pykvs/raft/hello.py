"""The first frame of every Raft connection (see transport.py): who sends, on which lane, and
of which cluster."""

from __future__ import annotations

from typing import Any

HELLO_MAGIC = "pykvs-raft"
PROTOCOL_VERSION = 2  # the hello with a cluster id; 1: the hello before cluster ids
HELLO_V1 = 1
CONTROL = "control"
BULK = "bulk"
LANES = (CONTROL, BULK)


class FrameError(Exception):
    """A frame (or the hello) broke the wire format; its connection is closed."""


def make_hello(local_id: str, lane: str, cluster_id: str) -> tuple[Any, ...]:
    if cluster_id:
        return (HELLO_MAGIC, PROTOCOL_VERSION, local_id, lane, cluster_id)
    return (HELLO_MAGIC, HELLO_V1, local_id, lane)


def read_hello(hello: Any) -> tuple[str, str]:
    """The sender and the cluster id ("" for none) a hello names; FrameError if malformed."""
    if (not isinstance(hello, list) or len(hello) not in (4, 5) or hello[0] != HELLO_MAGIC
            or not isinstance(hello[2], str) or not hello[2] or hello[3] not in LANES):
        raise FrameError(f"bad hello {hello!r:.100}")
    version = hello[1]
    if version not in (HELLO_V1, PROTOCOL_VERSION) or len(hello) != 3 + version:
        raise FrameError(f"protocol version {version!r} in a hello of {len(hello)} fields "
                         f"(this server speaks {PROTOCOL_VERSION})")
    theirs = hello[4] if version == PROTOCOL_VERSION else ""
    if not isinstance(theirs, str):
        raise FrameError(f"bad hello {hello!r:.100}")
    return hello[2], theirs


def is_hello(frame: Any) -> bool:
    """Whether a first frame claims to be a Raft hello (then it must be a valid one)."""
    return isinstance(frame, list) and bool(frame) and frame[0] == HELLO_MAGIC
