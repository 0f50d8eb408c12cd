"""The stored KV entry: Consul's DirEntry, and its encoding as a tree value.

A KV entry is stored in the tree already encoded, as the msgpack array
``[Value bin, Flags uint, CreateIndex uint, ModifyIndex uint, LockIndex uint, Session str|nil]``
(docs/ARCHITECTURE.md); the key is the tree key and is not repeated, and the tree's own per-leaf
index is the ModifyIndex.  Python decodes an entry only when a Python caller asks for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import msgpack

from pykvs._slots import use_slot_setters

# One packer for the single writer; Packer.pack is about twice as fast as msgpack.packb.
_packer = msgpack.Packer(use_bin_type=True)
_unpackb = msgpack.unpackb


@dataclass(frozen=True, slots=True)
class DirEntry:
    """A KV entry as Consul names its fields.  ``session`` is None when the key is not locked."""

    key: bytes
    value: bytes = b""
    flags: int = 0
    create_index: int = 0
    modify_index: int = 0
    lock_index: int = 0
    session: str | None = None

    def without_value(self) -> DirEntry:
        """The entry with its value blanked, as Consul returns it from write verbs of a txn."""
        return DirEntry(
            self.key,
            b"",
            self.flags,
            self.create_index,
            self.modify_index,
            self.lock_index,
            self.session,
        )

    def encode(self) -> bytes:
        """The stored form (the key is not part of it)."""
        return encode_entry(
            self.value,
            self.flags,
            self.create_index,
            self.modify_index,
            self.lock_index,
            self.session,
        )


def encode_entry(
    value: bytes,
    flags: int,
    create_index: int,
    modify_index: int,
    lock_index: int,
    session: str | None,
) -> bytes:
    """Encode the stored form of an entry (an empty session is stored as nil)."""
    return _packer.pack([value, flags, create_index, modify_index, lock_index, session or None])


# A frozen dataclass's __init__ sets each field through object.__setattr__ (a name lookup per
# field): 70 % of building a 1,000-entry listing in Python, 20 % of replaying a log of KV
# txns.  Calling the slot descriptors' setters builds the same frozen, equal, hashable object
# in half the time, so DirEntry (and TxnOp) get an __init__ that does that.
_new_object = object.__new__


use_slot_setters(DirEntry)
_SET_FIELDS = tuple(DirEntry.__dict__[f.name].__set__ for f in fields(DirEntry))


def entries_from_pairs(pairs: Iterable[Sequence[Any]]) -> list[DirEntry]:
    """DirEntries from ``[[key, [value, flags, create, modify, lock, session]], ...]`` (the
    wire form of a KVS.Get/KVS.List reply's ``Entries``), unchecked; an empty session is
    None."""
    set_key, set_value, set_flags, set_create, set_modify, set_lock, set_session = _SET_FIELDS
    entries: list[DirEntry] = []
    append = entries.append
    for key, (value, flags, create_index, modify_index, lock_index, session) in pairs:
        entry = _new_object(DirEntry)
        set_key(entry, bytes(key))
        set_value(entry, bytes(value or b""))
        set_flags(entry, flags)
        set_create(entry, create_index)
        set_modify(entry, modify_index)
        set_lock(entry, lock_index)
        set_session(entry, session or None)
        append(entry)
    return entries


def decode_fields(data: bytes) -> list:
    """The six stored items ``[value, flags, create, modify, lock, session]``, unchecked."""
    return _unpackb(data)


def decode_entry(key: bytes, data: bytes) -> DirEntry:
    """Decode a stored entry; raises ValueError when ``data`` is not one."""
    try:
        fields = _unpackb(data)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ValueError(f"stored entry for key {key!r} is not valid msgpack: {exc}") from None
    if not isinstance(fields, list) or len(fields) != 6:
        raise ValueError(f"stored entry for key {key!r} is not a msgpack array of 6 items")
    value, flags, create_index, modify_index, lock_index, session = fields
    return DirEntry(
        key, bytes(value), flags, create_index, modify_index, lock_index, session or None
    )
