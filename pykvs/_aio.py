"""asyncio helpers every layer may use (this module imports nothing from pykvs).

``wait_for`` replaces ``asyncio.wait_for``: on Python 3.11, ``asyncio.wait_for`` swallows a
cancellation that lands in the same loop iteration as its inner await completing, and returns the
result instead. A task cancelled at that moment (a server closing, a link retired) then carries on
and can loop forever; this was the cause of hangs in ``close()``. ``asyncio.timeout`` tells its
own timeout apart from an outside cancel, so a cancel is never lost (3.12 rebuilt ``wait_for``
on it for this reason).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    """Await ``aw`` for at most ``timeout`` seconds (None: no limit); raises TimeoutError."""
    if timeout is None:  # asyncio.timeout() would cost two getpid() calls for nothing
        return await aw
    async with asyncio.timeout(timeout):
        return await aw
