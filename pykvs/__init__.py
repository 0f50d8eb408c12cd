"""pykvs: a durable, Raft-replicated key/value store modelled on Consul's KV store.

``pykvs.open(path)`` runs a server inside this process over the data directory ``path`` and
returns its synchronous API (``open_async`` for asyncio); ``pykvs.connect("host:port")`` gives
the same API against a running ``pykvs agent`` over msgpack-RPC (``connect_async``). Both are
context managers. See :mod:`pykvs.server.client` for the operations
(:mod:`pykvs.server.sync_client` for the synchronous face).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["KV", "AsyncKV", "RPCError", "connect", "connect_async", "open", "open_async"]

if TYPE_CHECKING:
    from pykvs.server.client import AsyncKV, connect_async, open_async
    from pykvs.server.rpc import RPCError
    from pykvs.server.sync_client import KV, connect, open


def __getattr__(name: str) -> Any:
    # Imported on first use, so `import pykvs.radix` (say) does not load the whole server.
    if name == "RPCError":
        from pykvs.server.rpc import RPCError

        return RPCError
    if name in ("KV", "connect", "open"):
        from pykvs.server import sync_client

        return getattr(sync_client, name)
    if name in __all__:
        from pykvs.server import client

        return getattr(client, name)
    raise AttributeError(f"module 'pykvs' has no attribute {name!r}")
