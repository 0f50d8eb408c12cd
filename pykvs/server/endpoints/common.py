"""What every endpoint shares: reply maps with pre-encoded fields, FSM refusals, ACL errors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pykvs._pack import packb
from pykvs.acl import ACLNotFound, PermissionDenied
from pykvs.server.args import field_str
from pykvs.server.rpc import RawMsgpack, RPCError

if TYPE_CHECKING:
    from pykvs.server.seam import Endpoint, ReadFn, ServerCore


def raw_reply(meta: dict[str, Any], name: str, raw: bytes | None) -> RawMsgpack:
    """A reply map of ``meta`` plus one field whose value is already msgpack (or nil)."""
    if len(meta) + 1 > 15:
        raise ValueError("raw_reply is for small maps")
    parts = [bytes([0x80 | (len(meta) + 1)])]
    for key, value in meta.items():
        parts.append(packb(key))
        parts.append(packb(value))
    parts.append(packb(name))
    parts.append(raw if raw is not None else b"\xc0")
    return RawMsgpack(b"".join(parts))


def raise_if_error(result: Any) -> Any:
    """The FSM returns (not raises) Consul's refusals so every replica agrees; surface them."""
    if isinstance(result, Exception):
        raise RPCError(str(result))
    return result


# What every query reads of its request (QueryOptions, the datacenter, the token).
QUERY_FIELDS = frozenset({"Datacenter", "Token", "MinQueryIndex", "MaxQueryTime", "AllowStale",
                          "RequireConsistent"})


def acl_errors(endpoint: Endpoint, reads: frozenset[str] | None = None) -> Endpoint:
    """ACL refusals travel as their Consul text (the HTTP layer answers them 403). For a
    blocking query (``reads``: the fields it reads beside QUERY_FIELDS), every other field of
    the request is dropped before it waits, so a request's other decoded fields are not held
    for the whole wait (the request map is the caller's, made for this call)."""
    keep = None if reads is None else QUERY_FIELDS | reads

    async def checked(args: dict[str, Any]) -> Any:
        if keep is not None and args.get("MinQueryIndex"):
            for name in [name for name in args if name not in keep]:
                del args[name]
        try:
            return await endpoint(args)
        except (PermissionDenied, ACLNotFound) as exc:
            raise RPCError(str(exc)) from None

    return checked


def filtered_meta(core: ServerCore, args: dict[str, Any], index: int,
                  filtered: bool) -> dict[str, Any]:
    """QueryMeta, with ResultsFilteredByACLs when something was dropped and the request named
    a token (as Consul: the anonymous caller is not told)."""
    meta = core.query_meta(index)
    if filtered and field_str(args, "Token"):
        meta["ResultsFilteredByACLs"] = True
    return meta


async def filtered_query(core: ServerCore, args: dict[str, Any], read: ReadFn,
                         name: str) -> RawMsgpack:
    """A blocking query whose ``read`` answers ``(index, (raw, filtered))``: the reply map is
    QueryMeta plus ``name``."""
    index, (raw, filtered) = await core.local_query(args, read)
    return raw_reply(filtered_meta(core, args, index, filtered), name, raw)
