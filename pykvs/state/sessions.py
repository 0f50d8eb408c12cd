"""Sessions as Consul defines them: the record, its validation, and lock-delay bookkeeping.

A session is created by a replicated command that already carries its ID (the leader generates
the UUID, so applying the command is deterministic).  Renewing a TTL is not replicated: as in
Consul, the leader keeps the TTL timers and replicates a destroy when one runs out; the state
store only answers whether the session still exists.

Lock-delay follows Chubby/Consul: when a session is destroyed, each key it held cannot be locked
again until ``min(LockDelay, 60s)`` has passed.  Consul checks it against the leader's wall clock
before the write enters Raft; here every command carries the timestamp the leader assigned, and
the delay is checked against the timestamp of the command being applied, so every replica
decides the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from pykvs.goformat import NS_PER_SECOND, DurationError, parse_go_duration

SESSION_TTL_MIN_NS = 10 * NS_PER_SECOND  # Consul's default session_ttl_min
SESSION_TTL_MAX_NS = 24 * 3600 * NS_PER_SECOND  # structs.SessionTTLMax
MAX_LOCK_DELAY_NS = 60 * NS_PER_SECOND  # structs.MaxLockDelay
DEFAULT_LOCK_DELAY_NS = 15 * NS_PER_SECOND  # what Consul's HTTP endpoint fills in

BEHAVIOR_RELEASE = "release"
BEHAVIOR_DELETE = "delete"
BEHAVIORS = (BEHAVIOR_RELEASE, BEHAVIOR_DELETE)


class SessionError(ValueError):
    """A session command that Consul would refuse; the message is Consul's."""


@dataclass(frozen=True, slots=True)
class Session:
    """A session as Consul names its fields (LockDelay in nanoseconds, TTL as Go duration text)."""

    id: str
    node: str = ""
    name: str = ""
    lock_delay: int = DEFAULT_LOCK_DELAY_NS
    behavior: str = BEHAVIOR_RELEASE
    ttl: str = ""
    create_index: int = 0
    modify_index: int = 0

    def encode(self) -> bytes:
        """Stored form: a msgpack array without the ID (the ID is the tree key)."""
        return msgpack.packb(
            [
                self.node,
                self.name,
                self.lock_delay,
                self.behavior,
                self.ttl,
                self.create_index,
                self.modify_index,
            ],
            use_bin_type=True,
        )

    @classmethod
    def decode(cls, session_id: str, data: bytes) -> Session:
        node, name, lock_delay, behavior, ttl, create_index, modify_index = msgpack.unpackb(data)
        return cls(session_id, node, name, lock_delay, behavior, ttl, create_index, modify_index)


def validate_session(session: Session) -> Session:
    """Apply Consul's rules for a new session; returns it with defaults filled in."""
    if not session.id:
        raise SessionError("Missing session ID")
    if not session.node:
        raise SessionError("Must provide Node")
    behavior = session.behavior or BEHAVIOR_RELEASE
    if behavior not in BEHAVIORS:
        raise SessionError(f"Invalid Behavior setting '{session.behavior}'")
    if session.ttl:
        try:
            ttl_ns = parse_go_duration(session.ttl)
        except DurationError as exc:
            raise SessionError(f"Session TTL '{session.ttl}' invalid: {exc}") from None
        if ttl_ns != 0 and not SESSION_TTL_MIN_NS <= ttl_ns <= SESSION_TTL_MAX_NS:
            raise SessionError(f"Invalid Session TTL '{ttl_ns}', must be between [10s=24h0m0s]")
    if session.lock_delay < 0:
        raise SessionError(f"Invalid LockDelay '{session.lock_delay}', must not be negative")
    if behavior != session.behavior:
        session = Session(
            session.id,
            session.node,
            session.name,
            session.lock_delay,
            behavior,
            session.ttl,
            session.create_index,
            session.modify_index,
        )
    return session


class LockDelays:
    """key -> time (ns) before which the key may not be locked.  Owned by the single writer."""

    __slots__ = ("_expires", "_prune_at")

    def __init__(self, expires: dict[bytes, int] | None = None, prune_at: int = 1024) -> None:
        self._expires: dict[bytes, int] = dict(expires or {})
        # When to forget ended delays next.  Part of the replicated state (it is in snapshots)
        # so that every replica prunes at the same command even if leader clocks step back.
        self._prune_at = prune_at

    def set(self, key: bytes, now_ns: int, delay_ns: int) -> None:
        delay_ns = min(delay_ns, MAX_LOCK_DELAY_NS)
        if delay_ns <= 0:
            return
        self._expires[key] = now_ns + delay_ns
        if len(self._expires) >= self._prune_at:
            self.prune(now_ns)
            self._prune_at = max(1024, 2 * len(self._expires))

    def expiry(self, key: bytes) -> int:
        """When the key's lock-delay ends (0 when it has none)."""
        return self._expires.get(key, 0)

    def blocks(self, key: bytes, now_ns: int) -> bool:
        """True while a lock of ``key`` at ``now_ns`` must be refused."""
        return self._expires.get(key, 0) > now_ns

    def prune(self, now_ns: int) -> None:
        """Forget delays that ended at or before ``now_ns``."""
        self._expires = {k: t for k, t in self._expires.items() if t > now_ns}

    def items(self) -> list[tuple[bytes, int]]:
        return sorted(self._expires.items())

    @property
    def prune_at(self) -> int:
        return self._prune_at

    def __len__(self) -> int:
        return len(self._expires)
