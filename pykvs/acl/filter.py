"""Applying an authorizer to what endpoints return and to what transactions ask.

Reads of lists are filtered, never refused: each helper returns ``(kept, filtered)`` where
``filtered`` tells whether anything was dropped, for Consul's
``X-Consul-Results-Filtered-By-ACLs: true`` header.  (Consul sets that header only when the
request carried a token; the anonymous caller gets the filtered list without it.)

When the caller passes the listing's ``prefix`` and the token may read every key under it, the
helpers return the input untouched without looking at a single key, so the encoded-once path
(the packed listing straight into the C transcoder) costs nothing extra for such tokens.

Transactions are checked op by op before they are proposed (:func:`check_txn_ops`), as Consul's
``Txn.preCheck``; ``get`` and ``get-tree`` are not checked up front, their results are filtered
afterwards (:func:`filter_entries`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter
from typing import Any, TypeVar

from pykvs.acl.authorizer import Authorizer, PermissionDenied
from pykvs.packed import RECORD

__all__ = [
    "check_txn_ops",
    "filter_entries",
    "filter_key_list",
    "filter_keys",
    "filter_packed",
    "filter_sessions",
    "txn_op_denial",
]

T = TypeVar("T")

_key_of = attrgetter("key")
_node_of = attrgetter("node")


def _keep(items: Iterable[T], allowed: Callable[[T], bool]) -> tuple[list[T], bool]:
    items = list(items)
    kept = [item for item in items if allowed(item)]
    return kept, len(kept) != len(items)


def filter_entries(
    authz: Authorizer,
    entries: Iterable[T],
    key: Callable[[T], bytes] = _key_of,
    prefix: bytes | None = None,
) -> tuple[list[T], bool]:
    """The entries whose key the token may read (Consul's FilterDirEnt / FilterTxnResults).

    ``key`` extracts an entry's key (default ``entry.key``; use ``operator.itemgetter(0)`` for
    the tree's ``(key, value, index)`` tuples).
    """
    if prefix is not None and authz.key_read_prefix(prefix):
        return list(entries), False
    read = authz.key_read
    return _keep(entries, lambda entry: read(key(entry)))


def filter_keys(
    authz: Authorizer, keys: Iterable[bytes], prefix: bytes | None = None
) -> tuple[list[bytes], bool]:
    """The keys the token may read."""
    if prefix is not None and authz.key_read_prefix(prefix):
        return list(keys), False
    return _keep(keys, authz.key_read)


def filter_key_list(
    authz: Authorizer, keys: Iterable[bytes], prefix: bytes, separator: bytes = b""
) -> tuple[list[bytes], bool]:
    """Consul's ListKeys under ACLs: filter the *full* keys, then fold at the separator.

    ``keys`` must be every key under ``prefix`` in order (not already folded): a folded
    ``a/`` would hide whether any key below it is readable.  When the token may read the whole
    prefix the caller can skip this and let the tree fold in C.
    """
    kept, filtered = filter_keys(authz, keys, prefix)
    if not separator:
        return kept, filtered
    folded: list[bytes] = []
    seen: set[bytes] = set()
    start = len(prefix)
    for key in kept:
        cut = key.find(separator, start)
        if cut < 0:
            folded.append(key)
            continue
        head = key[: cut + len(separator)]
        if head not in seen:
            seen.add(head)
            folded.append(head)
    return folded, filtered


def filter_packed(
    authz: Authorizer, packed: bytes, prefix: bytes | None = None
) -> tuple[bytes, bool]:
    """A packed listing (the tree's ``list_prefix_packed`` layout) without unreadable records."""
    if prefix is not None and authz.key_read_prefix(prefix):
        return packed, False
    view = memoryview(packed)
    unpack = RECORD.unpack_from
    header = RECORD.size
    read = authz.key_read
    runs: list[memoryview] = []
    run_start = pos = 0
    end = len(packed)
    filtered = False
    while pos < end:
        if pos + header > end:
            raise ValueError(f"truncated packed listing: record header at byte {pos}")
        key_len, value_len, _index = unpack(packed, pos)
        key_at = pos + header
        record_end = key_at + key_len + value_len
        if record_end > end:
            raise ValueError(f"truncated packed listing: record at byte {pos} runs past the end")
        if not read(packed[key_at : key_at + key_len]):
            filtered = True
            if pos > run_start:
                runs.append(view[run_start:pos])
            run_start = record_end
        pos = record_end
    if not filtered:
        return packed, False
    if end > run_start:
        runs.append(view[run_start:end])
    return b"".join(runs), True


def filter_sessions(
    authz: Authorizer, sessions: Iterable[T], node: Callable[[T], str] = _node_of
) -> tuple[list[T], bool]:
    """The sessions the token may read (by their node, as Consul's filterSessions)."""
    read = authz.session_read
    return _keep(sessions, lambda session: read(node(session)))


def txn_op_denial(authz: Authorizer, verb: str, key: bytes) -> PermissionDenied | None:
    """Why the token may not run one KV op of a transaction, or None (Consul's kvsPreApply).

    ``delete-tree`` needs write on the whole prefix; ``check-index`` and ``check-session`` need
    read (their outcome reveals the key); ``get`` and ``get-tree`` pass (their results are
    filtered); every other verb, ``check-not-exists`` included (as in Consul), needs write.
    """
    try:
        if verb == "delete-tree":
            authz.require_key_write_prefix(key)
        elif verb in ("check-index", "check-session"):
            authz.require_key_read(key)
        elif verb not in ("get", "get-tree"):
            authz.require_key_write(key)
    except PermissionDenied as denied:
        return denied
    return None


def check_txn_ops(authz: Authorizer, ops: Sequence[Any]) -> list[tuple[int, str]]:
    """``(op index, Consul's message)`` for every op the token may not run (``.verb``/``.key``).

    An empty list means the transaction may be proposed; otherwise answer with these errors
    and apply nothing, as Consul does.
    """
    errors = []
    for index, op in enumerate(ops):
        denied = txn_op_denial(authz, op.verb, op.key)
        if denied is not None:
            errors.append((index, str(denied)))
    return errors
