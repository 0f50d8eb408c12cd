"""A server's data directory: who owns it (``server.json``) and its Raft store (``raft/``).

``server.json`` records the node, datacenter and address that use the directory. It is read
before anything is opened, so a server never starts on another node's or datacenter's data,
and it is written after the store exists, so a directory whose store was lost is refused
instead of silently serving (or bootstrapping) an empty state in place of the data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lmdb

from pykvs.netaddr import split_address
from pykvs.raft.lmdbfile import check_lmdb_file
from pykvs.raft.storage import LMDBStorage

META_FILE = "server.json"
META_FORMAT = 1  # server.json's "format": a newer one is refused, none means 1


class DataDir:
    """One server's data directory, for ``node_name`` of ``datacenter``."""

    def __init__(self, path: str | Path, node_name: str, datacenter: str) -> None:
        self.path = Path(path)
        self.node_name = node_name
        self.datacenter = datacenter
        self.meta: dict[str, Any] = {}

    def open(self) -> LMDBStorage:
        """Create or check the directory and open its Raft store."""
        path = self.path
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"data directory {path} is not a directory")
        path.mkdir(parents=True, exist_ok=True)
        self.meta = self._read_meta()  # before anything is opened: refuse another's dir
        store_file = path / "raft" / "data.mdb"
        if self.meta and not store_file.exists():
            raise ValueError(f"{store_file} is missing but {path / META_FILE} says this "
                             f"directory was in use; restore it, or remove {META_FILE} to "
                             f"start this server afresh")
        check_lmdb_file(store_file)
        try:
            return LMDBStorage(path / "raft")
        except lmdb.Error as exc:
            raise ValueError(f"{store_file}: cannot open the Raft store: {exc}") from None

    def port_to_use(self, bind: str, port: int) -> int:
        """``port``; for port 0, the port an earlier run recorded (the Raft membership knows
        this server by its address, so a restart must come back to it)."""
        if port:
            return port
        recorded = self.meta.get("address")
        if isinstance(recorded, str):
            host, recorded_port = split_address(recorded)
            if host == bind:
                return recorded_port
        return 0

    def _read_meta(self) -> dict[str, Any]:
        path = self.path / META_FILE
        if not path.exists():
            return {}
        try:
            meta = json.loads(path.read_bytes())
        except ValueError as exc:
            raise ValueError(f"{path} is corrupt (not JSON: {exc}); it records which node "
                             "owns this data directory") from None
        if not isinstance(meta, dict):
            raise ValueError(f"{path} is corrupt: expected a JSON object, got "
                             f"{type(meta).__name__}")
        if not isinstance(meta.get("format", 1), int) or meta.get("format", 1) > META_FORMAT:
            raise ValueError(f"{path}: data directory format {meta['format']!r} is newer than "
                             f"this pykvs understands ({META_FORMAT})")
        for name, mine in (("node", self.node_name), ("datacenter", self.datacenter)):
            if meta.get(name) not in (None, mine):
                raise ValueError(f"data directory {self.path} belongs to {name} "
                                 f"{meta[name]!r}, not {mine!r}")
        return dict(meta)

    def write_meta(self, address: str) -> None:
        meta = {"format": META_FORMAT, "node": self.node_name,
                "datacenter": self.datacenter, "address": address}
        tmp = self.path / (META_FILE + ".tmp")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self.path / META_FILE)
