"""Session.Apply, Session.Get, Session.List, Session.NodeSessions, Session.Renew: Consul's
agent/consul/session_endpoint.go. The leader keeps the TTL timers; a create arms one, a renew
re-arms it, a destroy stops it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pykvs import fsm
from pykvs._pack import packb
from pykvs.acl import filter_sessions
from pykvs.goformat import go_quote
from pykvs.server.args import check_size, field_map, field_str, field_uint, uuid_problem
from pykvs.server.endpoints.common import filtered_query, raise_if_error
from pykvs.server.rpc import RPCError
from pykvs.state.sessions import (
    BEHAVIOR_RELEASE,
    DEFAULT_LOCK_DELAY_NS,
    Session,
    SessionError,
    validate_session,
)

if TYPE_CHECKING:
    from pykvs.server.seam import ServerCore
    from pykvs.state.store import StateSnapshot
    from pykvs.state.watch import WatchSet

__all__ = ["SessionError", "Sessions", "new_session", "session_to_wire"]

# Bounds on what a session create writes to the log (Consul has none but its HTTP body size;
# these are far above any real name, node or TTL).
_SESSION_TEXT_LIMITS = (("Name", 4096), ("Node", 4096), ("TTL", 64), ("Behavior", 64))


def new_session(body: Mapping[str, Any], default_node: str, session_id: str = "") -> Session:
    """A session to create from Session.Apply's ``Session`` map, with Consul's defaults
    (this agent's node, a 15 s lock-delay, the release behaviour) and checked by Consul's
    rules; SessionError with Consul's words when it is refused."""
    lock_delay = body.get("LockDelay")
    if lock_delay is None:
        lock_delay = DEFAULT_LOCK_DELAY_NS
    elif not (isinstance(lock_delay, int) and lock_delay < 0):  # negative: Consul's refusal
        lock_delay = field_uint(body, "LockDelay")
    for name, limit in _SESSION_TEXT_LIMITS:
        check_size(f"Session {name}", len(field_str(body, name).encode()), limit)
    session = Session(
        id=session_id or str(uuid.uuid4()),
        node=field_str(body, "Node") or default_node,
        name=field_str(body, "Name"),
        lock_delay=lock_delay,
        behavior=field_str(body, "Behavior") or BEHAVIOR_RELEASE,
        ttl=field_str(body, "TTL"),
    )
    return validate_session(session)


def session_to_wire(session: Session) -> dict[str, Any]:
    return {
        "ID": session.id,
        "Name": session.name,
        "Node": session.node,
        "LockDelay": session.lock_delay,
        "Behavior": session.behavior,
        "TTL": session.ttl,
        "CreateIndex": session.create_index,
        "ModifyIndex": session.modify_index,
    }


Select = Callable[["StateSnapshot", "WatchSet"], tuple[int, list[Session]]]


class Sessions:
    """The Session.* endpoints of one server."""

    def __init__(self, core: ServerCore) -> None:
        self.core = core

    def table(self) -> dict[str, Any]:
        return {"Session.Apply": self.apply, "Session.Get": self.get, "Session.List": self.list,
                "Session.NodeSessions": self.node_sessions, "Session.Renew": self.renew}

    async def apply(self, args: dict[str, Any]) -> Any:
        forwarded, reply = await self.core.forward("Session.Apply", args, read=False)
        if forwarded:
            return reply
        op = field_str(args, "Op")
        body = field_map(args, "Session", required=True)
        if op == "destroy":
            return await self._destroy(args, field_str(body, "ID"))
        if op != "create":
            raise ValueError(f"unknown session operation {op!r} (expected create or destroy)")
        try:
            session = new_session(body, self.core.config.node_name)
        except SessionError as exc:
            raise RPCError(str(exc)) from None
        self.core.authorize(args).require_session_write(session.node)
        command = fsm.session_create_command(session, ts=time.time_ns())
        session_id = raise_if_error(await self.core.raft_apply(command))
        self.core.sessions.start_timer(session_id, session.ttl)
        return session_id

    async def _destroy(self, args: dict[str, Any], session_id: str) -> str:
        """Consul's destroy: the ID must be a UUID (its state store's lookup refuses anything
        else; a bad argument here, HTTP's 400) and the token checked before anything is
        proposed. With ACLs on, an unknown
        session is refused as Consul refuses it; without, it is answered with nothing
        proposed (there is nothing to destroy)."""
        if not session_id:
            raise ValueError("Must provide ID")
        problem = uuid_problem(session_id)
        if problem is not None:
            raise ValueError(f"Session lookup failed: failed session lookup: {problem}")
        authz = self.core.authorize(args)
        _, existing = self.core.state.session_get(session_id)
        if existing is None:
            if self.core.config.acl_enabled:
                raise RPCError(f"Unknown session {go_quote(session_id)}")
            return session_id
        authz.require_session_write(existing.node)
        command = fsm.session_destroy_command(session_id, ts=time.time_ns())
        raise_if_error(await self.core.raft_apply(command, may_delete=True))
        self.core.sessions.stop_timer(session_id)
        return session_id

    async def _query(self, method: str, args: dict[str, Any], select: Select) -> Any:
        forwarded, reply = await self.core.forward(method, args, read=True)
        if forwarded:
            return reply
        authz = self.core.authorize(args)

        def read(ws: WatchSet, state: StateSnapshot) -> tuple[int, tuple[bytes, bool]]:
            index, found = select(state, ws)
            kept, filtered = filter_sessions(authz, found)
            return index, (packb([session_to_wire(s) for s in kept]), filtered)

        return await filtered_query(self.core, args, read, "Sessions")

    async def get(self, args: dict[str, Any]) -> Any:
        session_id = field_str(args, "SessionID")

        def select(state: StateSnapshot, ws: WatchSet) -> tuple[int, list[Session]]:
            index, found = state.session_get(session_id, ws)
            return index, [] if found is None else [found]

        return await self._query("Session.Get", args, select)

    async def list(self, args: dict[str, Any]) -> Any:
        return await self._query("Session.List", args, lambda state, ws: state.session_list(ws))

    async def node_sessions(self, args: dict[str, Any]) -> Any:
        node = field_str(args, "Node")
        return await self._query("Session.NodeSessions", args,
                                 lambda state, ws: state.node_sessions(node, ws))

    async def renew(self, args: dict[str, Any]) -> Any:
        # Renew resets the leader's TTL timer, so it always goes to the leader.
        forwarded, reply = await self.core.forward("Session.Renew", args, read=False)
        if forwarded:
            return reply
        session_id = field_str(args, "SessionID")
        index, found = self.core.state.session_get(session_id)
        if found is not None:
            self.core.authorize(args).require_session_write(found.node)
            self.core.sessions.start_timer(found.id, found.ttl)
        sessions = [] if found is None else [session_to_wire(found)]
        return {"Sessions": sessions, **self.core.query_meta(index)}
