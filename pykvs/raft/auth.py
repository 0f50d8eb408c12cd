"""``--encrypt KEY``: servers prove a shared 32-byte key to each other (HMAC-SHA256).

Raft connections: a challenge-response before the Raft hello, both ways, so a peer that does
not hold the key sends no Raft frame and receives none::

    dialer   -> listener  ["pykvs-auth", 1, nonce_d]                      (32 random bytes)
    listener -> dialer    ["pykvs-auth", nonce_l, HMAC(key, "listener" nonce_d nonce_l)]
    dialer   -> listener  [HMAC(key, "dialer" nonce_l nonce_d)]

then the Raft hello and frames as usual. Each side checks the other's MAC (in constant time);
the labels differ, so a MAC cannot be reflected back. ``sign``/``verify`` are the same proof
for single RPC calls (``Internal.Join``: pykvs.server.formation).

What it is not: encryption or per-frame integrity. It proves who opened a connection; a man in
the middle can still read or alter what follows. Use TLS for that.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from pykvs._aio import wait_for
from pykvs._pack import packb
from pykvs.raft.hello import FrameError, is_hello

AUTH_MAGIC = "pykvs-auth"
KEY_BYTES = 32
_NONCE = 32
_MAX_AUTH_FRAME = 256


class AuthError(FrameError):
    """A peer did not prove the key (or broke the exchange); its connection is closed."""


def new_key() -> str:
    """A new key, as ``pykvs keygen`` prints it (``consul keygen``'s format)."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def parse_key(text: str) -> bytes:
    """The key of ``--encrypt``: base64 of exactly 32 bytes; ValueError otherwise."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the encrypt key is not base64 (make one with pykvs keygen)") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"the encrypt key must be {KEY_BYTES} bytes, got {len(key)} (make one "
                         f"with pykvs keygen)")
    return key


def mac(key: bytes, label: bytes, *parts: bytes) -> bytes:
    h = hmac.new(key, label, hashlib.sha256)
    for part in parts:
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.digest()


def sign(key: bytes, label: str, value: Any) -> bytes:
    """The proof that the holder of ``key`` made ``value`` (msgpack-able) for ``label``."""
    return mac(key, label.encode(), packb(value))


def verify(key: bytes, label: str, value: Any, proof: Any) -> bool:
    return isinstance(proof, bytes) and hmac.compare_digest(proof, sign(key, label, value))


def is_auth_hello(frame: Any) -> bool:
    return isinstance(frame, list) and bool(frame) and frame[0] == AUTH_MAGIC


def _frame(obj: Any) -> bytes:
    body = packb(obj)
    return len(body).to_bytes(4, "big") + body


Read = Callable[[int], Awaitable[Any]]  # one frame of at most N bytes (transport.read_frame)


async def prove(read: Read, writer: asyncio.StreamWriter, key: bytes, timeout: float) -> None:
    """The dialer's side; AuthError unless the listener proves the key too."""
    mine = secrets.token_bytes(_NONCE)
    try:
        writer.write(_frame([AUTH_MAGIC, 1, mine]))
        reply = await wait_for(read(_MAX_AUTH_FRAME), timeout)
    except (TimeoutError, asyncio.IncompleteReadError, FrameError) as exc:
        raise AuthError(f"no answer to the key challenge: {exc!r}") from None
    if (not isinstance(reply, list) or len(reply) != 3 or reply[0] != AUTH_MAGIC
            or not isinstance(reply[1], bytes) or len(reply[1]) != _NONCE
            or not isinstance(reply[2], bytes)
            or not hmac.compare_digest(reply[2], mac(key, b"listener", mine, reply[1]))):
        raise AuthError("the server did not prove the encrypt key")
    writer.write(_frame([mac(key, b"dialer", reply[1], mine)]))


async def challenge(first: Any, read: Read, writer: asyncio.StreamWriter, key: bytes,
                    timeout: float) -> None:
    """The listener's side, ``first`` being the dialer's opening frame; AuthError unless the
    dialer proves the key."""
    if (len(first) != 3 or first[1] != 1 or not isinstance(first[2], bytes)
            or len(first[2]) != _NONCE):
        raise AuthError(f"bad key challenge {first!r:.100}")
    theirs, mine = first[2], secrets.token_bytes(_NONCE)
    writer.write(_frame([AUTH_MAGIC, mine, mac(key, b"listener", theirs, mine)]))
    try:
        answer = await wait_for(read(_MAX_AUTH_FRAME), timeout)
    except (TimeoutError, asyncio.IncompleteReadError) as exc:
        raise AuthError(f"no answer to the key challenge: {exc!r}") from None
    if (not isinstance(answer, list) or len(answer) != 1 or not isinstance(answer[0], bytes)
            or not hmac.compare_digest(answer[0], mac(key, b"dialer", mine, theirs))):
        raise AuthError("the peer did not prove the encrypt key")


async def authenticate(first: Any, read: Read, writer: asyncio.StreamWriter, key: bytes,
                       timeout: float, limit: int) -> Any:
    """A listener's first frame when it has a key: a Raft hello must come after the key was
    proved (the frame after the exchange is returned, read with ``limit``); a connection that
    opens otherwise goes to the RPC side as it is (a client, unauthenticated)."""
    if is_auth_hello(first):
        await challenge(first, read, writer, key, timeout)
        return await wait_for(read(limit), timeout)
    if is_hello(first):
        raise AuthError(f"server {first[2] if len(first) > 2 else '?'!r} sent a Raft hello "
                        f"without proving the encrypt key")
    return first
