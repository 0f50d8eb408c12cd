"""Results that render themselves: KV reads as the RPC reply (msgpack) or Consul's JSON.

An endpoint answers a KV read with one of these, whether this server read its own state or
forwarded the request and got the answer back. The RPC server sends ``rpc_reply()``; the HTTP
codecs ask for ``json()`` (or ``raw_value()``). Local results hold the stored encodings (one
stored entry, or the packed listing of csrc/radix) and render them in C without decoding them
in Python (encoded once); a forwarded reply is kept as it came and rendered by the same C
transcoder, so a follower answers byte for byte what the leader does.
"""

from __future__ import annotations

from typing import Any

import msgpack

from pykvs import transcode
from pykvs._pack import packb
from pykvs.server.endpoints.common import raw_reply
from pykvs.server.rpc import RawMsgpack
from pykvs.state.entry import DirEntry, decode_fields, encode_entry, entries_from_pairs

_EMPTY_LIST = b"\x90"


def unpackb(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def _entry_pair(key: bytes, stored: bytes) -> bytes:
    """msgpack ``[[key, stored]]`` with the stored entry embedded as is."""
    return b"\x91\x92" + packb(key) + stored


def _packed_from_reply(entries: list[Any]) -> bytes:
    """A forwarded reply's ``[[key, [value, flags, create, modify, lock, session]], ...]`` in
    the packed listing layout the local path reads from the tree."""
    records = []
    for key, (value, flags, create_index, modify_index, lock_index, session) in entries:
        stored = encode_entry(value, flags, create_index, modify_index, lock_index, session)
        records.append((key, stored, modify_index))
    return transcode.pack_listing(records)


class Result:
    """A reply that renders itself; the RPC server sends ``rpc_reply()``."""

    __slots__ = ()

    def rpc_reply(self) -> Any:
        raise NotImplementedError


class KVEntry(Result):
    """KVS.Get: one entry (or none) and QueryMeta."""

    __slots__ = ("key", "meta", "reply", "stored")

    def __init__(self, meta: dict[str, Any], key: bytes, stored: bytes | None,
                 reply: dict[str, Any] | None = None) -> None:
        self.meta = meta
        self.key = key
        self.stored = stored  # the state store's encoding, None when the key is absent
        self.reply = reply  # the forwarded reply as it came, if forwarded

    @classmethod
    def from_reply(cls, key: bytes, reply: dict[str, Any]) -> KVEntry:
        entries = reply.get("Entries")
        stored = None
        if entries:
            value, flags, create_index, modify_index, lock_index, session = entries[0][1]
            stored = encode_entry(value, flags, create_index, modify_index, lock_index,
                                  session)
        return cls(reply, key, stored, reply)

    def rpc_reply(self) -> Any:
        if self.reply is not None:
            return self.reply
        raw = None if self.stored is None else _entry_pair(self.key, self.stored)
        return raw_reply(self.meta, "Entries", raw)

    def json(self) -> bytes | None:
        """Consul's JSON list of the one entry, None when there is none."""
        if self.stored is None:
            return None
        return transcode.render_kv_entry_json(self.key, self.stored)

    def raw_value(self) -> bytes | None:
        """The value alone (``?raw``), None when there is no entry."""
        if self.stored is None:
            return None
        return bytes(decode_fields(self.stored)[0])

    def entry(self) -> DirEntry | None:
        """The entry as a Python object (an embedded store's ``get``), None when absent."""
        if self.stored is None:
            return None
        return entries_from_pairs(((self.key, decode_fields(self.stored)),))[0]


class KVListing(Result):
    """KVS.List: the entries under a prefix (those the token may read) and QueryMeta."""

    __slots__ = ("meta", "packed", "reply")

    def __init__(self, meta: dict[str, Any], packed: bytes,
                 reply: dict[str, Any] | None = None) -> None:
        self.meta = meta
        self.packed = packed  # csrc/radix's packed listing layout
        self.reply = reply

    @classmethod
    def from_reply(cls, reply: dict[str, Any]) -> KVListing:
        return cls(reply, _packed_from_reply(reply.get("Entries") or []), reply)

    def rpc_reply(self) -> Any:
        if self.reply is not None:
            return self.reply
        listing = transcode.pack_kv_listing_msgpack(self.packed)
        return raw_reply(self.meta, "Entries", None if listing == _EMPTY_LIST else listing)

    def json(self) -> bytes | None:
        """Consul's JSON list, None when nothing is listed."""
        return transcode.render_kv_json(self.packed) if self.packed else None

    def entries(self) -> list[DirEntry]:
        """The entries as Python objects, in key order (an embedded store's ``list``): the
        listing made msgpack in C and decoded in C, as an RPC client decodes the reply."""
        if not self.packed:
            return []
        return entries_from_pairs(unpackb(transcode.pack_kv_listing_msgpack(self.packed)))


class KeyList(Result):
    """KVS.ListKeys: keys (folded at the separator) and QueryMeta."""

    __slots__ = ("keys", "meta", "reply")

    def __init__(self, meta: dict[str, Any], keys: list[bytes],
                 reply: dict[str, Any] | None = None) -> None:
        self.meta = meta
        self.keys = keys
        self.reply = reply

    @classmethod
    def from_reply(cls, reply: dict[str, Any]) -> KeyList:
        return cls(reply, [bytes(k) for k in reply.get("Keys") or []], reply)

    def rpc_reply(self) -> RawMsgpack | dict[str, Any]:
        if self.reply is not None:
            return self.reply
        return raw_reply(self.meta, "Keys", packb(self.keys))

    def json(self) -> bytes:
        return transcode.render_keys_json(self.keys)
