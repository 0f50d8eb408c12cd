"""A plain-Python reference model of Consul's KV state store semantics.

Deliberately naive (dicts, full scans, deep copies for transactions) so that it is easy to check
by reading against Consul's agent/consul/state/kvs.go, txn.go, session.go, graveyard.go and the
endpoint rules (index 0 is reported as 1, lock-delay refuses a lock).  The property tests drive
it and the real store with the same commands and compare every answer and every index.

Entries are tuples ``(key, value, flags, create_index, modify_index, lock_index, session)``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from pykvs.goformat import go_quote

MAX_LOCK_DELAY_NS = 60 * 1_000_000_000


class ModelError(Exception):
    """The model's counterpart of an error result."""


@dataclass
class ModelState:
    kvs: dict[bytes, tuple] = field(default_factory=dict)
    tombstones: dict[bytes, int] = field(default_factory=dict)
    sessions: dict[str, dict] = field(default_factory=dict)
    table_index: dict[str, int] = field(
        default_factory=lambda: {"kvs": 0, "tombstones": 0, "sessions": 0}
    )
    delays: dict[bytes, int] = field(default_factory=dict)


def _entry(key, value, flags, create, modify, lock, session):
    return (key, value, flags, create, modify, lock, session)


class KVModel:
    def __init__(self) -> None:
        self.s = ModelState()

    # ----------------------------------------------------------------------------- writes
    def _put(self, idx: int, key: bytes, value: bytes, flags: int, lock: int, session) -> tuple:
        """kvsSetTxn: keeps CreateIndex, skips the write when nothing changed."""
        old = self.s.kvs.get(key)
        create = old[3] if old else idx
        if old and (old[1], old[2], old[5], old[6]) == (value, flags, lock, session):
            return old
        new = _entry(key, value, flags, create, idx, lock, session)
        self.s.kvs[key] = new
        self.s.table_index["kvs"] = idx
        return new

    def _tombstone(self, idx: int, key: bytes) -> None:
        self.s.tombstones[key] = idx
        self.s.table_index["tombstones"] = idx

    def set(self, idx: int, key: bytes, value: bytes, flags: int) -> tuple:
        old = self.s.kvs.get(key)
        return self._put(idx, key, value, flags, 0, old[6] if old else None)

    def cas(self, idx, key, value, flags, cas_index) -> tuple | None:
        old = self.s.kvs.get(key)
        if cas_index == 0 and old is not None:
            return None
        if cas_index != 0 and (old is None or old[4] != cas_index):
            return None
        return self.set(idx, key, value, flags)

    def lock(self, idx, key, value, flags, session) -> tuple | None:
        if not session:
            raise ModelError("missing session")
        if session not in self.s.sessions:
            raise ModelError(f"invalid session {go_quote(session)}")
        old = self.s.kvs.get(key)
        if old is None:
            lock_index = 1
        elif old[6] == session:
            lock_index = old[5]
        elif old[6]:
            return None
        else:
            lock_index = old[5] + 1
        return self._put(idx, key, value, flags, lock_index, session)

    def unlock(self, idx, key, value, flags, session) -> tuple | None:
        if not session:
            raise ModelError("missing session")
        old = self.s.kvs.get(key)
        if old is None or old[6] != session:
            return None
        return self._put(idx, key, value, flags, old[5], None)

    def delete(self, idx, key) -> None:
        if key in self.s.kvs:
            del self.s.kvs[key]
            self._tombstone(idx, key)
            self.s.table_index["kvs"] = idx

    def delete_cas(self, idx, key, cas_index) -> bool:
        old = self.s.kvs.get(key)
        if old is None:
            return True
        if old[4] != cas_index:
            return False
        self.delete(idx, key)
        return True

    def delete_tree(self, idx, prefix) -> None:
        doomed = [k for k in self.s.kvs if k.startswith(prefix)]
        if not doomed:
            return
        for k in doomed:
            del self.s.kvs[k]
        if prefix:
            self._tombstone(idx, prefix)
        self.s.table_index["kvs"] = idx

    def lock_delayed(self, key: bytes, now_ns: int) -> bool:
        return self.s.delays.get(key, 0) > now_ns

    # --------------------------------------------------------------- single-verb commands
    def apply_kv(self, idx, op, key, value=b"", flags=0, cas_index=0, session=None, now_ns=0):
        """What the FSM returns for a KV command: True/False, or raises ModelError."""
        if not key and op != "delete-tree":
            raise ModelError("Must provide key")
        if op == "set":
            self.set(idx, key, value, flags)
            return True
        if op == "cas":
            return self.cas(idx, key, value, flags, cas_index) is not None
        if op == "lock":
            if self.lock_delayed(key, now_ns):
                return False
            return self.lock(idx, key, value, flags, session) is not None
        if op == "unlock":
            return self.unlock(idx, key, value, flags, session) is not None
        if op == "delete":
            self.delete(idx, key)
            return True
        if op == "delete-cas":
            return self.delete_cas(idx, key, cas_index)
        if op == "delete-tree":
            self.delete_tree(idx, key)
            return True
        raise ModelError(f"Invalid KVS operation '{op}'")

    # ------------------------------------------------------------------------ transactions
    def _txn_op(self, idx, op: dict) -> list[tuple]:
        verb, key = op["verb"], op["key"]
        value, flags = op.get("value", b""), op.get("flags", 0)
        index, session = op.get("index", 0), op.get("session")
        q = go_quote(key)

        def blank(e):
            return (e[0], b"", *e[2:])

        if verb == "set":
            return [blank(self.set(idx, key, value, flags))]
        if verb == "cas":
            e = self.cas(idx, key, value, flags, index)
            if e is None:
                raise ModelError(f"failed to set key {q}, index is stale")
            return [blank(e)]
        if verb == "lock":
            e = self.lock(idx, key, value, flags, session)
            if e is None:
                raise ModelError(f"failed to lock key {q}, lock is already held")
            return [blank(e)]
        if verb == "unlock":
            e = self.unlock(idx, key, value, flags, session)
            if e is None:
                raise ModelError(
                    f"failed to unlock key {q}, lock isn't held, or is held by another session"
                )
            return [blank(e)]
        if verb == "get":
            if key not in self.s.kvs:
                raise ModelError(f"key {q} doesn't exist")
            return [self.s.kvs[key]]
        if verb == "get-tree":
            return [self.s.kvs[k] for k in sorted(self.s.kvs) if k.startswith(key)]
        if verb == "check-index":
            e = self.s.kvs.get(key)
            if e is None:
                raise ModelError(f"failed to check index, key {q} doesn't exist")
            if e[4] != index:
                raise ModelError(
                    f"failed index check for key {q}, current modify index {e[4]} != {index}"
                )
            return [blank(e)]
        if verb == "check-session":
            e = self.s.kvs.get(key)
            if e is None:
                raise ModelError(f"failed to check session, key {q} doesn't exist")
            if (e[6] or "") != (session or ""):
                raise ModelError(
                    f"failed session check for key {q}, current session "
                    f"{go_quote(e[6] or '')} != {go_quote(session or '')}"
                )
            return [blank(e)]
        if verb == "check-not-exists":
            if key in self.s.kvs:
                raise ModelError(f"key {q} exists")
            return []
        if verb == "delete":
            self.delete(idx, key)
            return []
        if verb == "delete-tree":
            self.delete_tree(idx, key)
            return []
        if verb == "delete-cas":
            if not self.delete_cas(idx, key, index):
                raise ModelError(f"failed to delete key {q}, index is stale")
            return []
        raise ModelError(f"unknown KV verb {go_quote(verb)}")

    def txn(self, idx, ops: list[dict], now_ns: int = 0):
        """Returns (results, errors); errors is a list of (op_index, message)."""
        errors = []
        for i, op in enumerate(ops):
            if not op["key"] and op["verb"] != "delete-tree":
                errors.append((i, "Must provide key"))
            elif op["verb"] == "lock" and self.lock_delayed(op["key"], now_ns):
                errors.append((i, f"failed to lock key {go_quote(op['key'])} due to lock delay"))
        if errors:
            return None, errors
        saved = copy.deepcopy(self.s)
        results = []
        for i, op in enumerate(ops):
            try:
                results.extend(self._txn_op(idx, op))
            except ModelError as exc:
                errors.append((i, str(exc)))
        if errors:
            self.s = saved
            return None, errors
        return results, []

    # ---------------------------------------------------------------------------- sessions
    def session_create(
        self, idx, sid, node, name="", lock_delay=15_000_000_000, behavior="release", ttl=""
    ) -> str:
        if sid in self.s.sessions:
            raise ModelError(f"session {go_quote(sid)} already exists")
        self.s.sessions[sid] = {
            "id": sid,
            "node": node,
            "name": name,
            "lock_delay": lock_delay,
            "behavior": behavior or "release",
            "ttl": ttl,
            "create_index": idx,
            "modify_index": idx,
        }
        self.s.table_index["sessions"] = idx
        return sid

    def session_destroy(self, idx, sid, now_ns) -> None:
        sess = self.s.sessions.pop(sid, None)
        if sess is None:
            return
        self.s.table_index["sessions"] = idx
        delay = min(sess["lock_delay"], MAX_LOCK_DELAY_NS)
        held = sorted(k for k, e in self.s.kvs.items() if e[6] == sid)
        for key in held:
            e = self.s.kvs[key]
            if sess["behavior"] == "delete":
                self.delete(idx, key)
            else:
                self._put(idx, key, e[1], e[2], e[5], None)
            if delay > 0:
                self.s.delays[key] = now_ns + delay

    def reap(self, upto: int) -> None:
        self.s.tombstones = {k: i for k, i in self.s.tombstones.items() if i > upto}

    # ------------------------------------------------------------------------------- reads
    def _kvs_table_index(self) -> int:
        return max(self.s.table_index["kvs"], self.s.table_index["tombstones"])

    def get(self, key: bytes):
        """(index a client sees, entry or None) as KVS.Get answers."""
        e = self.s.kvs.get(key)
        if e is not None:
            return e[4], e
        return max(self._kvs_table_index(), 1), None

    def list(self, prefix: bytes):
        entries = [self.s.kvs[k] for k in sorted(self.s.kvs) if k.startswith(prefix)]
        index = self._kvs_table_index()
        if prefix:
            sub = max([e[4] for e in entries] + [0])
            sub = max([sub] + [i for k, i in self.s.tombstones.items() if k.startswith(prefix)])
        else:
            sub = index
        if sub:
            index = sub
        return max(index, 1), entries

    def keys(self, prefix: bytes, separator: bytes):
        index, entries = self.list(prefix)
        out: list[bytes] = []
        seen: set[bytes] = set()
        for e in entries:
            key = e[0]
            cut = key.find(separator, len(prefix)) if separator else -1
            if cut >= 0:
                key = key[: cut + len(separator)]
                if key in seen:
                    continue
                seen.add(key)
            out.append(key)
        return index, out

    def session_get(self, sid: str):
        return max(self.s.table_index["sessions"], 1), self.s.sessions.get(sid)

    def session_list(self):
        sessions = [self.s.sessions[k] for k in sorted(self.s.sessions)]
        return max(self.s.table_index["sessions"], 1), sessions
