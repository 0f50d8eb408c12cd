"""Pending writes to one table, layered over a committed tree.

A write transaction of the state store does not touch the tree until it commits: each table
keeps its pending puts and deletes in a :class:`TableView`, and reads inside the transaction look
through the view first.  A child view (for one multi-op Consul transaction inside a batch of log
entries) layers over its parent and is merged into it on success or simply dropped on failure.
At commit the root view turns its changes into one tree transaction.

Changes map ``key -> (value, index)`` or ``key -> None`` (deleted); ``dropped`` lists deleted
prefixes in order.  A key found in ``changes`` wins over ``dropped``: a key written after its
prefix was deleted lives again.  So the commit deletes the prefixes first, then applies changes.
"""

from __future__ import annotations

from typing import Any

_ABSENT = object()

Record = tuple[bytes, bytes, int]


class TableView:
    __slots__ = ("changes", "dropped", "parent", "tree")

    def __init__(self, tree: Any = None, parent: TableView | None = None) -> None:
        self.tree = tree  # the committed base (root views only)
        self.parent = parent
        self.changes: dict[bytes, tuple[bytes, int] | None] = {}
        self.dropped: list[bytes] = []

    def child(self) -> TableView:
        return TableView(parent=self)

    @property
    def dirty(self) -> bool:
        return bool(self.changes or self.dropped)

    # -------------------------------------------------------------------------------- reads
    def get(self, key: bytes) -> bytes | None:
        view: TableView | None = self
        while view is not None:
            change = view.changes.get(key, _ABSENT)
            if change is not _ABSENT:
                return None if change is None else change[0]  # type: ignore[index]
            for prefix in view.dropped:
                if key.startswith(prefix):
                    return None
            if view.parent is None:
                return view.tree.get(key)
            view = view.parent
        return None  # pragma: no cover - a root view always has a tree

    def _touches(self, prefix: bytes) -> bool:
        """Whether any pending change in this view or its parents may affect ``prefix``."""
        view: TableView | None = self
        while view is not None:
            if any(p.startswith(prefix) or prefix.startswith(p) for p in view.dropped):
                return True
            if any(k.startswith(prefix) for k in view.changes):
                return True
            view = view.parent
        return False

    def list(self, prefix: bytes) -> list[Record]:
        """``(key, value, index)`` under ``prefix`` in key order, pending changes included."""
        base = self.tree.list_prefix(prefix) if self.parent is None else self.parent.list(prefix)
        if not self.changes and not self.dropped:
            return base
        drops = [p for p in self.dropped if p.startswith(prefix) or prefix.startswith(p)]
        merged: dict[bytes, tuple[bytes, int]] = {
            k: (v, i)
            for k, v, i in base
            if k not in self.changes and not any(k.startswith(p) for p in drops)
        }
        for k, change in self.changes.items():
            if change is not None and k.startswith(prefix):
                merged[k] = change
        return [(k, *merged[k]) for k in sorted(merged)]

    def any_under(self, prefix: bytes) -> bool:
        """Whether some key starts with ``prefix`` (fast when nothing pending touches it)."""
        if not self._touches(prefix):
            root = self
            while root.parent is not None:
                root = root.parent
            return root.tree.count(prefix) > 0
        return bool(self.list(prefix))

    # ------------------------------------------------------------------------------- writes
    def put(self, key: bytes, value: bytes, index: int) -> None:
        self.changes[key] = (value, index)

    def delete(self, key: bytes) -> None:
        self.changes[key] = None

    def delete_prefix(self, prefix: bytes) -> None:
        for key in self.changes:
            if key.startswith(prefix):
                self.changes[key] = None
        self.dropped.append(prefix)

    def merge_into_parent(self) -> None:
        parent = self.parent
        if parent is None:
            raise RuntimeError("merge_into_parent() on a root table view")
        for prefix in self.dropped:
            parent.delete_prefix(prefix)
        parent.changes.update(self.changes)

    def commit(self) -> tuple[Any, set[int]]:
        """Apply the pending changes to the base tree: ``(new_tree, fired_watch_ids)``."""
        if self.parent is not None:
            raise RuntimeError("commit() on a child table view; merge it into its parent")
        if not self.changes and not self.dropped:
            return self.tree, set()
        txn = self.tree.txn()
        for prefix in self.dropped:
            txn.delete_prefix(prefix)
        for key, change in self.changes.items():
            if change is None:
                txn.delete(key)
            else:
                txn.insert(key, change[0], change[1])
        return txn.commit()
