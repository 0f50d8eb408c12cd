"""A check of an LMDB data file before LMDB maps it.

LMDB maps the file and trusts its meta pages: a file that is empty, or shorter than the last
page its newest meta page names, makes a read past the end kill the process with SIGBUS
instead of raising. Reading the two meta pages by hand first turns that into a clear error.
"""

from __future__ import annotations

import struct
from pathlib import Path

_LMDB_MAGIC = 0xBEEFC0DE


def check_lmdb_file(path: Path) -> None:
    """Refuse an LMDB data file that is empty or shorter than its meta page says: LMDB maps
    the file and reading past its end kills the process with SIGBUS instead of an error."""
    if not path.exists():
        return
    size = path.stat().st_size
    with path.open("rb") as f:
        first = f.read(256)
        # meta page 0 holds the page size in its free-list db's md_pad (offset 40)
        psize = struct.unpack_from("=I", first, 40)[0] if len(first) >= 152 else 0
        f.seek(psize)
        pages = [first, f.read(256) if psize else b""]
    metas = []  # (txnid, last page) of each meta page with LMDB's magic
    for page in pages:
        if len(page) >= 152 and struct.unpack_from("=I", page, 16)[0] == _LMDB_MAGIC:
            last_pg, txnid = struct.unpack_from("=QQ", page, 136)
            metas.append((txnid, last_pg))
    if not metas or not 512 <= psize <= 65536:
        raise ValueError(f"{path} is not an LMDB file (empty or corrupt: {size} bytes)")
    last_pg = max(metas)[1]
    if size < (last_pg + 1) * psize:
        raise ValueError(f"{path} is truncated: {size} bytes, its last page ends at byte "
                         f"{(last_pg + 1) * psize}")
