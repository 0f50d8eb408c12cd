"""The packed listing: how a prefix listing crosses from C to Python once, as one ``bytes``.

Records back to back, no header; each is a ``RECORD`` header (key length, value length, the
leaf's modify index; little-endian u32, u32, u64) followed by the key and the value. The C tree
writes it (csrc/radix.c), the transcoder reads it (csrc/transcode.c), and in Python the state
snapshot, the ACL list filter and the transcoder's wrapper walk it; docs/ARCHITECTURE.md
describes it. A layout with no code of its own, so every layer may import it.
"""

from __future__ import annotations

import struct

RECORD = struct.Struct("<IIQ")  # key_len, value_len, index
