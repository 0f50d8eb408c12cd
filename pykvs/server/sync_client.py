"""The synchronous face of the Python API: :class:`KV`, an :class:`AsyncKV` whose event loop
runs in a thread of its own, and :func:`open` / :func:`connect`.

Every method blocks its caller until the loop thread has run it, except the reads of an
embedded store that its server may answer at once (a default read on the leader, a stale one
anywhere): those run in the caller's thread, against the current immutable state version, with
no hop to the loop (see ``AsyncKV._read_now``).
"""

from __future__ import annotations

import asyncio
import builtins
import ssl
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from pykvs.server.client import AsyncKV, connect_async, open_async
from pykvs.server.server import Server
from pykvs.server.tls import TLSConfig
from pykvs.state.entry import DirEntry

T = TypeVar("T")


class _LoopThread:
    """An event loop running in a daemon thread, for the synchronous API."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("the synchronous pykvs API cannot be called from its own loop")
        if self.loop.is_closed():
            coro.close()
            raise RuntimeError("this pykvs store is closed")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


def _sync(name: str) -> Callable[..., Any]:
    method = getattr(AsyncKV, name)

    def call(self: KV, *args: Any, **kwargs: Any) -> Any:
        return self._thread.run(method(self.aio, *args, **kwargs))

    call.__name__ = name
    call.__qualname__ = f"KV.{name}"
    call.__doc__ = method.__doc__
    return call


class KV:
    """The synchronous API: every method of :class:`AsyncKV`, blocking, on a loop thread.

    Close it (or use ``with``) to stop the server (embedded) or the connection (remote)."""

    def __init__(self, make: Callable[[], Awaitable[AsyncKV]], name: str = "pykvs") -> None:
        self._thread = _LoopThread(name)
        try:
            self.aio: AsyncKV = self._thread.run(_await(make()))
        except BaseException:
            self._thread.stop()
            raise
        self._closed = False

    @property
    def server(self) -> Server | None:
        return self.aio.server

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._thread.run(self.aio.close())
        finally:
            self._thread.stop()

    def __enter__(self) -> KV:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, method: str, args: dict[str, Any]) -> tuple[int, Any]:
        """A read answered in this thread when the embedded server may (no hop to its
        loop thread), else on the loop."""
        found = self.aio._read_now(method, args)
        return found if found is not None else self._thread.run(self.aio._read(method, args))

    def get(self, key: str | bytes, **options: Any) -> tuple[int, DirEntry | None]:
        return self._read(*self.aio._get_args(key, **options))

    def list(self, prefix: str | bytes = b"",
             **options: Any) -> tuple[int, builtins.list[DirEntry]]:
        return self._read(*self.aio._list_args(prefix, **options))

    def keys(self, prefix: str | bytes = b"", separator: str | bytes | None = None,
             **options: Any) -> tuple[int, builtins.list[bytes]]:
        return self._read(*self.aio._keys_args(prefix, separator, **options))

    get.__doc__, list.__doc__, keys.__doc__ = AsyncKV.get.__doc__, AsyncKV.list.__doc__, \
        AsyncKV.keys.__doc__
    put = _sync("put")
    delete = _sync("delete")
    txn = _sync("txn")
    txn_read = _sync("txn_read")
    session_create = _sync("session_create")
    session_destroy = _sync("session_destroy")
    session_renew = _sync("session_renew")
    session_info = _sync("session_info")
    session_list = _sync("session_list")
    session_node = _sync("session_node")
    leader = _sync("leader")
    peers = _sync("peers")
    raft_configuration = _sync("raft_configuration")
    raft_remove_peer = _sync("raft_remove_peer")
    transfer_leader = _sync("transfer_leader")
    snapshot_save = _sync("snapshot_save")
    call = _sync("call")


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


def open(path: str, **options: Any) -> KV:
    """The synchronous :func:`open_async`: the server runs on a loop thread of its own."""
    return KV(lambda: open_async(path, **options), name=f"pykvs {path}")


def connect(address: str = "127.0.0.1:8300", *, timeout: float | None = None,
            tls: ssl.SSLContext | TLSConfig | None = None, token: str = "") -> KV:
    """The synchronous :func:`connect_async`."""
    return KV(lambda: connect_async(address, timeout=timeout, tls=tls, token=token),
              name=f"pykvs {address}")

