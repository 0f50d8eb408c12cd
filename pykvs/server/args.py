"""Reading Consul-shaped RPC arguments: every bad field is named in a clear ValueError.

Arguments arrive as msgpack maps with Consul's field names (``Datacenter``, ``Key``, ``DirEnt``,
``MinQueryIndex``...). Durations are nanoseconds, as Go's ``time.Duration`` travels in Consul's
own msgpack RPC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pykvs.goformat import NS_PER_SECOND

MAX_UINT64 = (1 << 64) - 1


def field_map(args: Mapping[str, Any], name: str, *, required: bool = False) -> dict[str, Any]:
    value = args.get(name)
    if value is None:
        if required:
            raise ValueError(f"missing {name}")
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a map, got {type(value).__name__}")
    return value


def field_str(args: Mapping[str, Any], name: str, default: str = "") -> str:
    value = args.get(name, default)
    if value is None:
        return default
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise ValueError(f"{name} must be UTF-8 text") from None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    return value


def field_bytes(args: Mapping[str, Any], name: str) -> bytes:
    value = args.get(name, b"")
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode()
    if not isinstance(value, bytes):
        raise ValueError(f"{name} must be bytes, got {type(value).__name__}")
    return value


def field_uint(args: Mapping[str, Any], name: str, default: int = 0) -> int:
    value = args.get(name, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_UINT64:
        raise ValueError(f"{name} must be an unsigned 64-bit integer, got {value!r}")
    return value


def field_bool(args: Mapping[str, Any], name: str) -> bool:
    value = args.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a boolean, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class QueryOptions:
    """Consul's QueryOptions, as far as the KV endpoints use them."""

    min_index: int = 0
    max_wait: float | None = None  # seconds; None means the server's default
    allow_stale: bool = False
    require_consistent: bool = False

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> QueryOptions:
        max_query_ns = field_uint(args, "MaxQueryTime")
        options = cls(
            min_index=field_uint(args, "MinQueryIndex"),
            max_wait=max_query_ns / NS_PER_SECOND if max_query_ns else None,
            allow_stale=field_bool(args, "AllowStale"),
            require_consistent=field_bool(args, "RequireConsistent"),
        )
        if options.allow_stale and options.require_consistent:
            raise ValueError("AllowStale and RequireConsistent cannot both be set")
        return options


def uuid_problem(text: str) -> str | None:
    """Why ``text`` is not a UUID, in the words of Consul's UUID index (memdb's
    UUIDFieldIndex), or None when it is one."""
    if len(text) != 36:
        return "UUID must be 36 characters"
    hyphens = text.count("-")
    if hyphens > 4:
        return f'UUID should have maximum of 4 "-"; got {hyphens}'
    digits = text.replace("-", "")
    if len(digits) % 2:
        return "UUID (without hyphens) must be even length"
    for char in digits:
        if char not in _HEX_DIGITS:
            return f"invalid UUID: encoding/hex: invalid byte: U+{ord(char):04X} {char!r}"
    return None


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def check_size(what: str, size: int, limit: int) -> None:
    """ValueError naming ``what`` when ``size`` bytes are over ``limit``."""
    if size > limit:
        raise ValueError(f"{what} too large: {size} bytes, the limit is {limit}")


# A key's length: Consul has no limit of its own but its HTTP request line (Go's 1 MiB header
# limit); a key rides in every entry that names it, so RPC keys are bounded here.
MAX_KEY_SIZE = 64 << 10


def check_key_size(key: bytes) -> None:
    check_size("Key", len(key), MAX_KEY_SIZE)


def check_session_ref(session: str | None) -> None:
    """A KV operation's session: Consul looks it up in its UUID index, which refuses anything
    but a UUID with these words (so a session that cannot exist never reaches the log)."""
    if session:
        problem = uuid_problem(session)
        if problem is not None:
            raise ValueError(f"failed session lookup: {problem}")
