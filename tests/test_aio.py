"""pykvs._aio.wait_for never loses a cancellation (asyncio.wait_for on 3.11 can)."""

from __future__ import annotations

import asyncio

import pytest

from pykvs._aio import wait_for


def test_cancel_landing_as_the_inner_await_completes_is_not_swallowed() -> None:
    # The race behind hangs in close(): the awaited future completes and the task is cancelled
    # in the same loop iteration. The task must end cancelled, not carry on with the result.
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        inner: asyncio.Future[int] = loop.create_future()
        carried_on = False

        async def waiter() -> None:
            nonlocal carried_on
            await wait_for(inner, 10)
            carried_on = True

        task = asyncio.create_task(waiter())
        await asyncio.sleep(0)  # the task now waits inside wait_for
        inner.set_result(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not carried_on

    asyncio.run(scenario())


def test_times_out_and_returns_results() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        assert await wait_for(asyncio.sleep(0, result="done"), 5) == "done"
        assert await wait_for(asyncio.sleep(0, result="no limit"), None) == "no limit"
        with pytest.raises(TimeoutError):
            await wait_for(loop.create_future(), 0.01)

    asyncio.run(scenario())
