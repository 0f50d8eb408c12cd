"""KVS.Apply, KVS.Get, KVS.List, KVS.ListKeys: Consul's agent/consul/kvs_endpoint.go.

Each reads "forward, authorize, apply or query". Reads answer with a result that renders
itself (pykvs.server.endpoints.results): the RPC server sends its msgpack, the HTTP API its
JSON, from the same stored bytes. ``apply_nowait`` is KVS.Apply for a caller that cannot
afford a coroutine per write (the fast HTTP front): the same checks and the same command,
proposed at once when this server is the one that applies it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pykvs import fsm
from pykvs.acl import Authorizer, filter_key_list, filter_packed, txn_op_denial
from pykvs.server.args import (
    check_key_size,
    check_session_ref,
    field_bytes,
    field_map,
    field_str,
    field_uint,
)
from pykvs.server.endpoints.common import filtered_meta, raise_if_error
from pykvs.server.endpoints.results import KeyList, KVEntry, KVListing

if TYPE_CHECKING:
    from pykvs.server.seam import ServerCore, WriteDone
    from pykvs.state.store import StateSnapshot
    from pykvs.state.watch import WatchSet

KV_APPLY_OPS = fsm.KV_VERBS
# A read of one state version: with a watch set as a blocking query runs it, without one
# when it is answered at once.
KVRead = Callable[["WatchSet | None", "StateSnapshot"], tuple[int, Any]]
VALUE_TOO_LARGE = "Value too large"


def check_value_size(core: ServerCore, value: bytes) -> None:
    """Consul's kv_max_value_size."""
    limit = core.config.max_value_size
    if len(value) > limit:
        raise ValueError(f"{VALUE_TOO_LARGE}: {len(value)} bytes, the limit is {limit}")


def list_keys(
    authz: Authorizer, state: StateSnapshot, prefix: bytes, separator: bytes,
    ws: WatchSet | None = None,
) -> tuple[int, list[bytes], bool]:
    """Consul's ListKeys under ACLs: ``(index, keys, filtered)``.  A token that may read the
    whole prefix gets the tree's fold in C; any other filters the full keys, then folds."""
    if authz.key_read_prefix(prefix):
        index, keys = state.kv_list_keys(prefix, separator, ws)
        return index, keys, False
    index, every = state.kv_list_keys(prefix, b"", ws)
    keys, filtered = filter_key_list(authz, every, prefix, separator)
    return index, keys, filtered


class KVS:
    """The KVS.* endpoints of one server."""

    def __init__(self, core: ServerCore) -> None:
        self.core = core

    def table(self) -> dict[str, Any]:
        return {"KVS.Apply": self.apply, "KVS.Get": self.get, "KVS.List": self.list,
                "KVS.ListKeys": self.list_keys}

    # ------------------------------------------------------------------------------ writes
    async def apply(self, args: dict[str, Any]) -> Any:
        forwarded, reply = await self.core.forward("KVS.Apply", args, read=False)
        if forwarded:
            return reply
        command, may_delete = self.command(args)
        return raise_if_error(await self.core.raft_apply(command, may_delete=may_delete))

    def apply_nowait(self, args: dict[str, Any], on_done: WriteDone) -> bool:
        """KVS.Apply proposed at once when this server applies it, answered through
        ``on_done(result, error)`` from the Raft loop; False when ``apply`` must run (the
        write goes to another server). Bad input raises here, as in ``apply``; the FSM's
        refusal is an RPCError, as ``apply`` raises it. An error ``Retry`` means nothing was
        applied: run ``apply``."""
        core = self.core
        if not core.applies_here(args):
            return False
        command, may_delete = self.command(args)
        return core.raft_apply_nowait(command, on_done, may_delete=may_delete)

    def command(self, args: dict[str, Any]) -> tuple[bytes, bool]:
        """KVS.Apply's checks on the server that applies it: ``(FSM command, may delete)``."""
        op = field_str(args, "Op")
        if op not in KV_APPLY_OPS:
            raise ValueError(f"unknown KVS operation {op!r} (expected one of {KV_APPLY_OPS})")
        ent = field_map(args, "DirEnt", required=True)
        key = field_bytes(ent, "Key")
        value = field_bytes(ent, "Value")
        if not key and op != "delete-tree":
            raise ValueError("Must provide key")
        check_value_size(self.core, value)
        check_key_size(key)
        session = field_str(ent, "Session") or None
        check_session_ref(session)
        if op in ("lock", "unlock") and not session:
            raise ValueError(f"{op} needs DirEnt.Session")
        denied = txn_op_denial(self.core.authorize(args), op, key)
        if denied is not None:
            raise denied
        command = fsm.kv_command(
            op, key, value, flags=field_uint(ent, "Flags"), index=field_uint(ent, "ModifyIndex"),
            session=session, ts=time.time_ns(),
        )
        return command, op.startswith("delete")

    # ------------------------------------------------------------------------------- reads
    # Each read is built once (authorize, then the state read) and run either as a blocking
    # query on the event loop (``get``, ``list``, ``list_keys``) or at once in the caller's
    # thread (``*_now``: an embedded store's reads, no hop to the loop). A committed state
    # version is immutable, so any thread may read one while the FSM commits the next.

    def _get_read(self, args: dict[str, Any]) -> tuple[bytes, KVRead]:
        key = field_bytes(args, "Key")
        self.core.authorize(args).require_key_read(key)

        def read(ws: WatchSet | None, state: StateSnapshot) -> tuple[int, bytes | None]:
            return state.kv_get_stored(key, ws)

        return key, read

    def _list_read(self, args: dict[str, Any]) -> KVRead:
        prefix = field_bytes(args, "Key")
        authz = self.core.authorize(args)

        def read(ws: WatchSet | None, state: StateSnapshot) -> tuple[int, tuple[bytes, bool]]:
            index, packed = state.kv_list_packed(prefix, ws)
            return index, filter_packed(authz, packed, prefix)

        return read

    def _list_keys_read(self, args: dict[str, Any]) -> KVRead:
        prefix = field_bytes(args, "Prefix")
        # Consul's Go field really is spelled "Seperator"; accept both spellings.
        separator = field_bytes(args, "Seperator") or field_bytes(args, "Separator")
        authz = self.core.authorize(args)

        def read(ws: WatchSet | None, state: StateSnapshot
                 ) -> tuple[int, tuple[list[bytes], bool]]:
            index, keys, filtered = list_keys(authz, state, prefix, separator, ws)
            return index, (keys, filtered)

        return read

    def _now(self, args: dict[str, Any], read: KVRead) -> tuple[int, Any] | None:
        """``read`` of the current state, or None when the query must wait (its index is
        not past MinQueryIndex: a blocking query)."""
        index, found = read(None, self.core.state.snapshot())
        return None if index <= field_uint(args, "MinQueryIndex") else (index, found)

    def _answers_now(self, args: dict[str, Any]) -> bool:
        """Whether this thread may answer the read at once: no consistency round, and this
        server answers it (a default read on the leader, a stale read anywhere)."""
        return args.get("RequireConsistent") is not True and self.core.reads_here(args)

    async def get(self, args: dict[str, Any]) -> KVEntry:
        forwarded, reply = await self.core.forward("KVS.Get", args, read=True)
        if forwarded:
            return KVEntry.from_reply(field_bytes(args, "Key"), reply)
        key, read = self._get_read(args)
        index, stored = await self.core.local_query(args, read)
        return KVEntry(self.core.query_meta(index), key, stored)

    def get_now(self, args: dict[str, Any]) -> KVEntry | None:
        """KVS.Get answered in the caller's thread, or None: run ``get``."""
        if not self._answers_now(args):
            return None
        key, read = self._get_read(args)
        found = self._now(args, read)
        return None if found is None else KVEntry(self.core.query_meta(found[0]), key,
                                                  found[1])

    async def list(self, args: dict[str, Any]) -> KVListing:
        forwarded, reply = await self.core.forward("KVS.List", args, read=True)
        if forwarded:
            return KVListing.from_reply(reply)
        index, (packed, filtered) = await self.core.local_query(args, self._list_read(args))
        return KVListing(filtered_meta(self.core, args, index, filtered), packed)

    def list_now(self, args: dict[str, Any]) -> KVListing | None:
        """KVS.List answered in the caller's thread, or None: run ``list``."""
        if not self._answers_now(args):
            return None
        found = self._now(args, self._list_read(args))
        if found is None:
            return None
        index, (packed, filtered) = found
        return KVListing(filtered_meta(self.core, args, index, filtered), packed)

    async def list_keys(self, args: dict[str, Any]) -> KeyList:
        forwarded, reply = await self.core.forward("KVS.ListKeys", args, read=True)
        if forwarded:
            return KeyList.from_reply(reply)
        index, (keys, filtered) = await self.core.local_query(args, self._list_keys_read(args))
        return KeyList(filtered_meta(self.core, args, index, filtered), keys)

    def list_keys_now(self, args: dict[str, Any]) -> KeyList | None:
        """KVS.ListKeys answered in the caller's thread, or None: run ``list_keys``."""
        if not self._answers_now(args):
            return None
        found = self._now(args, self._list_keys_read(args))
        if found is None:
            return None
        index, (keys, filtered) = found
        return KeyList(filtered_meta(self.core, args, index, filtered), keys)
