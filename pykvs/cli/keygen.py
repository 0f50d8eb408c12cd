"""``pykvs keygen``: print a new key for ``pykvs agent --encrypt`` (32 random bytes, base64),
as ``consul keygen``."""

from __future__ import annotations

import argparse
from typing import Any

from pykvs.raft.auth import new_key


def keygen(_ns: argparse.Namespace) -> int:
    print(new_key())
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("keygen", help="print a new --encrypt key",
                                   description="Print a new key for pykvs agent --encrypt "
                                   "(32 random bytes, base64)")
    parser.set_defaults(run=keygen)
