"""The persistent, watchable radix tree (csrc/radix.c), as Python objects.

This is the only module that touches ``ffi``/``lib`` for the tree. Two classes:

``Tree``
    An immutable version. Reads never change it; ``tree.txn()`` starts a
    transaction whose ``commit()`` returns a new ``Tree`` plus the set of watch
    ids it fired. Versions share their unchanged nodes, so keeping many alive is
    cheap; ``snapshot()`` is O(1). A version is freed when its last ``Tree``
    object goes away.

``Txn``
    A copy-on-write transaction over a base version: ``insert``, ``delete``,
    ``delete_prefix``, reads that see its own uncommitted writes, then
    ``commit()`` (or ``abort()``). Used once; any use after commit or abort
    raises ``TransactionClosed``. A transaction belongs to the thread that
    created it (``Tree`` objects may be shared between threads freely: a
    committed version never changes; the C calls run without the GIL, except
    the point gets, whose lookup is shorter than releasing it).

Keys and values are byte strings (``bytes``; ``bytearray`` and ``memoryview``
are copied to ``bytes``); keys may hold NUL bytes and may be empty. Each entry
carries a modify index, an unsigned 64-bit integer.

Watch ids
    Every node and leaf of the tree has an integer watch id. ``get_watch(key)``
    returns the id of the key's leaf when it exists, else the id of the deepest
    node on the key's path (that node is replaced by any write that creates the
    key, and by some other writes below it: a coarser but sound signal).
    ``prefix_watch(prefix)`` returns the id of the node covering every key that
    starts with ``prefix``. ``commit()`` reports the ids of every node and leaf
    of the base version that the transaction replaced or removed. Soundness:
    when the answer of a lookup changes, the id it returned fires. Precision:
    writing key A never fires the leaf id of another existing key B.

Listings cross into C once. ``list_prefix_packed`` returns one ``bytes`` in the
packed layout of docs/ARCHITECTURE.md (records of ``u32 key_len, u32
value_len, u64 index, key, value``, little-endian, back to back); the list
forms are built by C as a pickle stream (protocol 3, only bytes, ints, tuples
and a list) that ``pickle.loads`` turns into Python objects at C speed.
"""

from __future__ import annotations

import pickle
import sys
import threading
from collections.abc import Iterator
from typing import Any

from pykvs._cradix import ffi, lib

__all__ = ["Entry", "TransactionClosed", "Tree", "Txn", "bytes_allocated"]

Entry = tuple[bytes, bytes, int]
"""A listed entry: (key, value, modify index)."""

Bytes = bytes | bytearray | memoryview
"""What key, value, prefix and separator arguments accept (bytes-likes are copied)."""

_MAX_INDEX = (1 << 64) - 1
_MAX_VALUE = (1 << 32) - 1
_CHUNK = 1024  # entries per C call when iterating

_loads = pickle.loads
_buffer = ffi.buffer
_unpack = ffi.unpack
_NULL = ffi.NULL
_get_ident = threading.get_ident
_PACKED = lib.RADIX_PACKED
_radix_get = lib.radix_get

# Tree.get and Tree.get_with_index call plain CPython functions (csrc/radix_py.h says
# why: cffi's call machinery costs 15x the lookup); other reads and all writes use cffi.
if lib.radix_py_install() != 0:
    raise ImportError("pykvs._cradix: could not install the point-read functions")
_fast_reads = sys.modules["pykvs._cradix_fast"]
_fast_get = _fast_reads.get
_fast_get_with_index = _fast_reads.get_with_index


class TransactionClosed(RuntimeError):
    """The transaction was already committed or aborted."""


def bytes_allocated() -> int:
    """Bytes the C tree holds right now, as requested from malloc: every live version and
    transaction, plus each thread's reusable listing buffer (at most 1 MiB a thread)."""
    return int(lib.radix_bytes_allocated())


def _as_bytes(obj: object, name: str) -> bytes:
    if type(obj) is bytes:
        return obj
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj)
    raise TypeError(f"{name} must be bytes, not {type(obj).__name__}")


def _check_index(index: object) -> int:
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"index must be an int, not {type(index).__name__}")
    if not 0 <= index <= _MAX_INDEX:
        raise ValueError(f"index must be in 0..2**64-1, got {index}")
    return index


def _check_limit(limit: object) -> int:
    if type(limit) is not int:
        raise TypeError(f"limit must be an int, not {type(limit).__name__}")
    if limit < 0:
        raise ValueError(f"limit must be >= 0 (0: no limit), got {limit}")
    return limit


# --------------------------------------------------------------------------
# Reads shared by Tree and Txn, on a root pointer.


def _call(fn: Any, root: Any, data: Any, name: str) -> Any:
    """fn(root, data, len(data)), data checked to be bytes (bytes-likes are copied)."""
    if type(data) is not bytes:
        data = _as_bytes(data, name)
    return fn(root, data, len(data))


def _get(root: Any, key: Any) -> bytes | None:
    leaf = _call(_radix_get, root, key, "key")
    return _unpack(leaf.data, leaf.vlen) if leaf else None


def _get_with_index(root: Any, key: Any) -> tuple[bytes, int] | None:
    leaf = _call(_radix_get, root, key, "key")
    return (_unpack(leaf.data, leaf.vlen), leaf.index) if leaf else None


def _get_watch(root: Any, key: Any) -> tuple[bytes | None, int]:
    leaf = _call(_radix_get, root, key, "key")
    if leaf:
        return _unpack(leaf.data, leaf.vlen), leaf.watch
    return None, _call(lib.radix_key_watch, root, key, "key")


_tls = threading.local()
_KEEP_BUFFER = 1 << 20  # a thread keeps its listing buffer between calls up to this size


def _thread_buffer() -> Any:
    """This thread's listing buffer (C memory, reused: no malloc or page faults per call)."""
    try:
        return _tls.buf
    except AttributeError:
        buf = _tls.buf = ffi.gc(ffi.new("radix_buf *"), lib.radix_buf_free)
        return buf


def _scan(root: Any, prefix: Any, lower: Any, sep: Any, limit: int, fmt: int) -> Any:
    """Runs radix_scan; returns the decoded list (pickle formats) or bytes (packed)."""
    if type(prefix) is not bytes:
        prefix = _as_bytes(prefix, "prefix")
    if type(lower) is not bytes:
        lower = _as_bytes(lower, "lower_bound")
    if type(sep) is not bytes:
        sep = _as_bytes(sep, "separator")
    buf = _thread_buffer()
    buf.len = 0
    try:
        n = lib.radix_scan(
            root, prefix, len(prefix), lower, len(lower), sep, len(sep), limit, fmt, buf
        )
        if n < 0:
            raise MemoryError("radix tree: out of memory while listing")
        if fmt == _PACKED:
            return _buffer(buf.data, buf.len)[:] if buf.len else b""
        return _loads(_buffer(buf.data, buf.len))
    finally:
        if buf.cap > _KEEP_BUFFER:
            lib.radix_buf_free(buf)


class _Reads:
    """The read API, shared by Tree (a fixed root) and Txn (its working root)."""

    __slots__ = ()

    def _r(self) -> Any:
        raise NotImplementedError

    def __len__(self) -> int:
        return int(lib.radix_len(self._r()))

    def __contains__(self, key: Any) -> bool:
        return bool(_call(_radix_get, self._r(), key, "key"))

    def get(self, key: Bytes) -> bytes | None:
        """The value stored at key, or None."""
        return _get(self._r(), key)

    def get_with_index(self, key: Bytes) -> tuple[bytes, int] | None:
        """(value, modify index) for key, or None."""
        return _get_with_index(self._r(), key)

    def get_watch(self, key: Bytes) -> tuple[bytes | None, int]:
        """(value or None, watch id): the id fires when the answer changes."""
        return _get_watch(self._r(), key)

    def key_watch(self, key: Bytes) -> int:
        """get_watch(key)'s watch id alone: the key's leaf id when it exists, else the id of
        the deepest node on its path (fired by any write that creates the key)."""
        return int(_call(lib.radix_key_watch, self._r(), key, "key"))

    def prefix_watch(self, prefix: Bytes = b"") -> int:
        """The watch id of the node covering every key that starts with prefix."""
        return int(_call(lib.radix_prefix_watch, self._r(), prefix, "prefix"))

    def max_index(self, prefix: Bytes = b"") -> int:
        """The largest modify index among keys starting with prefix (0: none)."""
        return int(_call(lib.radix_max_index, self._r(), prefix, "prefix"))

    def count(self, prefix: Bytes = b"") -> int:
        """How many keys start with prefix."""
        return int(_call(lib.radix_count, self._r(), prefix, "prefix"))

    def list_prefix(self, prefix: Bytes = b"") -> list[Entry]:
        """[(key, value, index)] of keys starting with prefix, in key order."""
        return _scan(self._r(), prefix, prefix, b"", 0, lib.RADIX_PICKLE_ITEMS)

    def list_prefix_packed(self, prefix: Bytes = b"") -> bytes:
        """The same listing as one bytes object, in the packed layout."""
        return _scan(self._r(), prefix, prefix, b"", 0, lib.RADIX_PACKED)

    def list_keys(self, prefix: Bytes = b"", separator: Bytes = b"") -> list[bytes]:
        """Consul's ``?keys&separator=``: keys starting with prefix, in order; a key
        holding separator after the prefix is cut just after its first one, and
        each such "folder" is listed once. An empty separator lists every key."""
        return _scan(self._r(), prefix, prefix, separator, 0, lib.RADIX_PICKLE_KEYS)

    def seek(self, lower_bound: Bytes = b"", limit: int = 0, prefix: Bytes = b"") -> list[Entry]:
        """Up to limit (0: all) entries with key >= lower_bound (and starting with
        prefix), in key order: ordered pagination."""
        return _scan(
            self._r(), prefix, lower_bound, b"", _check_limit(limit), lib.RADIX_PICKLE_ITEMS
        )

    def seek_packed(self, lower_bound: Bytes = b"", limit: int = 0, prefix: Bytes = b"") -> bytes:
        """seek() in the packed layout."""
        return _scan(self._r(), prefix, lower_bound, b"", _check_limit(limit), lib.RADIX_PACKED)

    def items(self, prefix: Bytes = b"") -> Iterator[Entry]:
        """Iterates (key, value, index) in key order, fetching from C in chunks."""
        return self._chunks(prefix, lib.RADIX_PICKLE_ITEMS, lambda entry: entry[0])

    def keys(self, prefix: Bytes = b"") -> Iterator[bytes]:
        """Iterates keys in order, fetching from C in chunks."""
        return self._chunks(prefix, lib.RADIX_PICKLE_KEYS, lambda key: key)

    def _chunks(self, prefix: Bytes, fmt: int, key_of: Any) -> Iterator[Any]:
        lower: Bytes = prefix
        while True:
            chunk = _scan(self._r(), prefix, lower, b"", _CHUNK, fmt)
            yield from chunk
            if len(chunk) < _CHUNK:
                return
            lower = key_of(chunk[-1]) + b"\x00"  # the next key after the last one

    def __iter__(self) -> Iterator[bytes]:
        return self.keys()


class Tree(_Reads):
    """An immutable version of the tree (see the module docstring)."""

    # _root: the root as a plain pointer (cheapest to pass to C); _owner: the same
    # pointer wrapped by ffi.gc, which releases the version when the Tree goes;
    # _addr: its address as an int, for the CPython point reads.
    __slots__ = ("__weakref__", "_addr", "_owner", "_root")

    def __init__(self) -> None:
        root = lib.radix_empty()
        if root == _NULL:
            raise MemoryError("radix tree: out of memory")
        self._owner = ffi.gc(root, lib.radix_release)
        self._root = root
        self._addr = int(ffi.cast("uintptr_t", root))

    @classmethod
    def _adopt(cls, root: Any) -> Tree:
        """Wraps a root the caller holds one reference to (which the Tree takes)."""
        tree = cls.__new__(cls)
        tree._owner = ffi.gc(root, lib.radix_release)
        tree._root = root
        tree._addr = int(ffi.cast("uintptr_t", root))
        return tree

    def _r(self) -> Any:
        return self._root

    # The point reads: one CPython call for a bytes key; any other key takes the
    # checked path (bytes-likes copied, a wrong type named).
    def get(self, key: Bytes) -> bytes | None:
        """The value stored at key, or None."""
        try:
            return _fast_get(self._addr, key)
        except TypeError:
            return _get(self._root, key)

    def get_with_index(self, key: Bytes) -> tuple[bytes, int] | None:
        """(value, modify index) for key, or None."""
        try:
            return _fast_get_with_index(self._addr, key)
        except TypeError:
            return _get_with_index(self._root, key)

    def snapshot(self) -> Tree:
        """Another handle on this same version, O(1) (the version is immutable)."""
        lib.radix_retain(self._root)
        return Tree._adopt(self._root)

    def txn(self) -> Txn:
        """A transaction based on this version."""
        return Txn(self)

    def __repr__(self) -> str:
        return f"<radix.Tree len={len(self)}>"


class Txn(_Reads):
    """A copy-on-write transaction (see the module docstring)."""

    __slots__ = ("_thread", "_x")

    def __init__(self, base: Tree) -> None:
        if not isinstance(base, Tree):
            raise TypeError(f"base must be a radix.Tree, not {type(base).__name__}")
        x = lib.radix_txn_begin(base._root)
        if x == _NULL:
            raise MemoryError("radix tree: out of memory")
        self._x = ffi.gc(x, lib.radix_txn_free)
        self._thread = _get_ident()

    def _open(self) -> Any:
        x = self._x
        if x is None:
            raise TransactionClosed("transaction already committed or aborted")
        if self._thread != _get_ident():
            raise RuntimeError("a transaction may only be used by the thread that created it")
        return x

    def _r(self) -> Any:
        return self._open().root

    def insert(self, key: Bytes, value: Bytes, index: int) -> bool:
        """Sets key to (value, index). Returns True when the key was new."""
        x = self._open()
        try:
            r = lib.radix_txn_insert(x, key, len(key), value, len(value), index)
        except (TypeError, OverflowError):
            key = _as_bytes(key, "key")
            value = _as_bytes(value, "value")
            index = _check_index(index)
            r = lib.radix_txn_insert(x, key, len(key), value, len(value), index)
        if r < 0:
            if r == -2:
                raise ValueError(
                    f"key or value too large: {len(key)}, {len(value)} bytes (max {_MAX_VALUE})"
                )
            raise MemoryError("radix tree: out of memory")
        return r == 1

    def insert_packed(self, page: Bytes) -> int:
        """Inserts every record of a page in the packed listing layout (as
        ``list_prefix_packed`` returns it), in page order, in one C call: the bulk
        loader of a snapshot restore. Returns the number of records.

        A malformed page raises ValueError naming the bad record's offset and inserts
        nothing. On MemoryError some records may be in; abort the transaction."""
        x = self._open()
        if type(page) is not bytes:
            page = _as_bytes(page, "page")
        bad_at = ffi.new("size_t *")
        n = lib.radix_txn_insert_packed(x, page, len(page), bad_at)
        if n >= 0:
            return int(n)
        if n == -2:
            raise ValueError(f"page: record header cut short at byte {bad_at[0]}")
        if n == -3:
            raise ValueError(f"page: the record at byte {bad_at[0]} runs past the page's end")
        raise MemoryError("radix tree: out of memory")

    def delete(self, key: Bytes) -> bool:
        """Removes key. Returns whether it existed."""
        r = _call(lib.radix_txn_delete, self._open(), key, "key")
        if r < 0:
            raise MemoryError("radix tree: out of memory")
        return r == 1

    def delete_prefix(self, prefix: Bytes) -> int:
        """Removes every key starting with prefix. Returns how many."""
        r = _call(lib.radix_txn_delete_prefix, self._open(), prefix, "prefix")
        if r < 0:
            raise MemoryError("radix tree: out of memory")
        return int(r)

    def commit(self) -> tuple[Tree, set[int]]:
        """Ends the transaction: (the new version, the watch ids it fired)."""
        x = self._open()
        root = lib.radix_txn_commit(x)
        fired = set(_unpack(x.fired, x.nfired)) if x.nfired else set()
        self._x = None
        ffi.release(x)  # frees the transaction now (the new root is the Tree's)
        return Tree._adopt(root), fired

    def abort(self) -> None:
        """Ends the transaction, dropping its writes."""
        x = self._open()
        self._x = None
        ffi.release(x)

    @property
    def closed(self) -> bool:
        return self._x is None

    def __enter__(self) -> Txn:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._x is not None:
            self.abort()

    def __repr__(self) -> str:
        state = "closed" if self._x is None else f"len={len(self)}"
        return f"<radix.Txn {state}>"
