"""The Raft TCP transport over real sockets on 127.0.0.1: delivery and order, reconnects, bounded
queues, hostile frames, snapshot streams beside heartbeats, and clean shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import warnings
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import msgpack
import pytest

from pykvs.raft.messages import Message, MessageKind
from pykvs.raft.transport import TCPTransport
from pykvs.raft.types import Entry, EntryType

FAST: dict[str, Any] = {"backoff_min": 0.01, "backoff_max": 0.1}


def run(coro: Coroutine[Any, Any, Any], debug: bool = True) -> Any:
    """Run a scenario in a fresh loop (debug mode reports leaked tasks), cancelled after 60 s."""

    async def bounded() -> Any:
        task = asyncio.current_task()
        assert task is not None
        deadline = asyncio.get_running_loop().call_later(60, task.cancel)
        try:
            return await coro
        finally:
            deadline.cancel()

    return asyncio.run(bounded(), debug=debug)


async def until(pred: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait for a condition that another task makes true (polling, with a deadline)."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def link_stat(t: TCPTransport, peer: str, lane: str, key: str) -> Any:
    return t.stats()["peers"].get(peer, {}).get(lane, {}).get(key)


class Inbox:
    """Collects (from_id, payload) and lets a test wait for a count."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []
        self.changed = asyncio.Event()

    def __call__(self, sender: str, payload: Any) -> None:
        self.items.append((sender, payload))
        self.changed.set()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[str, Any]]:
        async def wait() -> None:
            while len(self.items) < count:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), timeout)
        return self.items


async def pair(
    inbox_b: Callable[[str, Any], Awaitable[None] | None], **opts: Any
) -> tuple[TCPTransport, TCPTransport]:
    b = TCPTransport("b", inbox_b, **opts)
    await b.start()
    a = TCPTransport("a", Inbox(), peers={"b": b.address}, **opts)
    await a.start()
    return a, b


async def free_port() -> int:
    probe = TCPTransport("probe", Inbox())
    await probe.start()
    port = probe.port
    await probe.close()
    return port


def test_messages_arrive_in_order_with_the_senders_id() -> None:
    async def scenario() -> None:
        inbox = Inbox()
        a, b = await pair(inbox, **FAST)
        msg = Message(MessageKind.APPEND, 3, "a", "b", index=7, log_term=2,
                      entries=(Entry(8, 3, EntryType.NORMAL, b"\x00set"),), commit=6)
        payloads: list[Any] = [msg.to_wire(), {"k": b"v", 1: None}, "text", b"", 2**63, [1.5]]
        payloads += list(range(500))
        for p in payloads:
            a.send("b", p)
        got = await inbox.wait_for(len(payloads))
        assert {sender for sender, _ in got} == {"a"}
        assert Message.from_wire(got[0][1]) == msg
        assert [p for _, p in got[1:]] == [{"k": b"v", 1: None}, "text", b"", 2**63, [1.5],
                                           *range(500)]
        with pytest.raises(KeyError, match="unknown peer"):
            a.send("zz", 1)
        with pytest.raises(ValueError, match="max_frame"):
            a.send("b", b"x" * (17 << 20))
        await a.close()
        await b.close()

    run(scenario())


def test_a_restarted_peer_is_redialled_and_gets_what_was_queued() -> None:
    async def scenario() -> None:
        inbox = Inbox()
        a, b = await pair(inbox, **FAST)
        a.send("b", "before")
        await inbox.wait_for(1)
        await b.close()
        await until(lambda: not a.is_connected("b"), "a to notice b is gone")
        for i in range(5):
            a.send("b", i)
        inbox2 = Inbox()
        b2 = TCPTransport("b", inbox2, port=b.port, **FAST)
        await b2.start()
        got = await inbox2.wait_for(5)
        assert [p for _, p in got] == [0, 1, 2, 3, 4]
        assert a.stats()["peers"]["b"]["control"]["connects"] == 2
        await a.close()
        await b2.close()

    run(scenario())


def test_a_full_queue_to_a_down_peer_drops_the_oldest_and_counts() -> None:
    async def scenario() -> None:
        port = await free_port()
        a = TCPTransport("a", Inbox(), peers={"b": f"127.0.0.1:{port}"}, queue_limit=4, **FAST)
        accepted = [a.send("b", i) for i in range(10)]
        assert accepted == [True] * 4 + [False] * 6
        await until(lambda: link_stat(a, "b", "control", "dial_failures"), "a failed dial")
        assert a.stats()["peers"]["b"]["control"]["dropped"] == 6
        inbox = Inbox()
        b = TCPTransport("b", inbox, port=port)
        await b.start()
        assert [p for _, p in await inbox.wait_for(4)] == [6, 7, 8, 9]
        await a.close()
        await b.close()

    run(scenario())


async def raw_exchange(address: str, data: bytes) -> bytes:
    """Send raw bytes to a transport; returns what it sent back before closing (nothing)."""
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    await writer.drain()
    rest = await asyncio.wait_for(reader.read(), 10)  # EOF: the transport closed it
    writer.close()
    await writer.wait_closed()
    return rest


def frame(obj: Any = None, body: bytes | None = None) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True) if body is None else body
    return len(body).to_bytes(4, "big") + body


HELLO = frame(["pykvs-raft", 1, "x", "control"])


@pytest.mark.parametrize(
    ("data", "logged"),
    [
        (HELLO + frame(body=b"\xc1"), "not one msgpack object"),
        (HELLO + frame(body=b"\x01\x02"), "not one msgpack object"),  # two objects
        (HELLO + (1 << 20).to_bytes(4, "big") + b"\0" * 64, "outside 1..65536"),
        (HELLO + (0).to_bytes(4, "big"), "outside 1..65536"),
        (frame(["hello", 1, "x", "control"]), "bad hello"),
        (frame(["pykvs-raft", 9, "x", "control"]), "protocol version 9"),
        (frame(["pykvs-raft", 1, "x", "sideways"]), "bad hello"),
    ],
    ids=["bad-msgpack", "two-objects", "oversized", "empty", "bad-magic", "bad-version",
         "bad-lane"],
)
def test_a_bad_frame_closes_only_its_connection(
    caplog: pytest.LogCaptureFixture, data: bytes, logged: str
) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        a, b = await pair(inbox, max_frame=65536, **FAST)
        a.send("b", "first")
        await inbox.wait_for(1)
        assert await raw_exchange(b.address, data) == b""
        assert b.stats()["inbound"]["bad_frames"] == 1
        a.send("b", "still up")  # the server and the good connection carry on
        assert [p for _, p in await inbox.wait_for(2)] == ["first", "still up"]
        assert a.stats()["peers"]["b"]["control"]["connects"] == 1
        await a.close()
        await b.close()

    with caplog.at_level(logging.WARNING, logger="pykvs.raft.transport"):
        run(scenario())
    assert any(logged in r.getMessage() for r in caplog.records), caplog.text


def test_a_handler_error_is_logged_and_the_connection_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        inbox = Inbox()

        def handler(sender: str, payload: Any) -> None:
            if payload == "boom":
                raise RuntimeError("handler bug")
            inbox(sender, payload)

        a, b = await pair(handler, **FAST)
        for p in ("one", "boom", "two"):
            a.send("b", p)
        assert [p for _, p in await inbox.wait_for(2)] == ["one", "two"]
        assert b.stats()["inbound"]["handler_errors"] == 1
        await a.close()
        await b.close()

    with caplog.at_level(logging.ERROR, logger="pykvs.raft.transport"):
        run(scenario())
    assert "on_message failed" in caplog.text


CHUNK = 1 << 20


def test_heartbeats_pass_a_snapshot_stream_stalled_by_its_receiver() -> None:
    """The receiver stops reading snapshot chunks; the bulk lane fills up and its sender blocks;
    control messages still go through."""

    async def scenario() -> None:
        release = asyncio.Event()
        chunks: list[int] = []
        pings = Inbox()

        async def handler(sender: str, payload: Any) -> None:
            if payload[0] == "chunk":
                assert payload[2] == bytes([payload[1] % 256]) * CHUNK
                chunks.append(payload[1])
                if payload[1] == 0:
                    await release.wait()  # a slow disk: back-pressure on the bulk lane
            else:
                pings(sender, payload)

        a, b = await pair(handler, max_frame=2 * CHUNK, bulk_queue_limit=2, write_timeout=60,
                          **FAST)
        total = 48

        async def stream() -> None:
            for i in range(total):
                await a.send_bulk("b", ("chunk", i, bytes([i % 256]) * CHUNK))

        streamer = asyncio.create_task(stream())
        await until(lambda: link_stat(a, "b", "bulk", "queued") == 2 and chunks == [0],
                    "the bulk lane to fill up")
        for i in range(100):
            a.send("b", ("ping", i))
        got = await pings.wait_for(100)
        assert [p[1] for _, p in got] == list(range(100))
        assert chunks == [0] and not streamer.done()  # the stream is still stuck
        release.set()
        await streamer
        await until(lambda: len(chunks) == total, "all chunks")
        assert chunks == list(range(total))
        await a.close()
        await b.close()

    run(scenario())


def test_small_messages_keep_flowing_during_a_snapshot_stream() -> None:
    """Ping-pong rounds on the control lane while 16 MiB stream on the bulk lane: the median
    round trip is shorter than the time one chunk takes, so pings do not wait behind chunks.
    (Sent on one connection, each ping would queue behind several chunks.)"""

    async def scenario() -> None:
        chunks: list[int] = []
        latencies: list[float] = []
        got_ping = asyncio.Event()

        def handler(sender: str, payload: Any) -> None:
            if payload[0] == "chunk":
                chunks.append(payload[1])
            else:
                got_ping.set()

        a, b = await pair(handler, max_frame=2 * CHUNK, **FAST)
        a.send("b", ("ping", -1))  # connect the control lane first
        await got_ping.wait()
        total = 16

        async def stream() -> None:
            for i in range(total):
                await a.send_bulk("b", ("chunk", i, bytes(CHUNK)))

        started = time.perf_counter()
        streamer = asyncio.create_task(stream())
        while len(chunks) < total:
            got_ping.clear()
            sent = time.perf_counter()
            a.send("b", ("ping", len(latencies)))
            await asyncio.wait_for(got_ping.wait(), 10)
            latencies.append(time.perf_counter() - sent)
        await streamer
        per_chunk = (time.perf_counter() - started) / total
        median = sorted(latencies)[len(latencies) // 2]
        assert median < per_chunk, f"ping p50 {median:.4f}s vs {per_chunk:.4f}s per chunk"
        await a.close()
        await b.close()

    run(scenario(), debug=False)  # debug mode's bookkeeping would dominate the timings


def test_close_leaves_no_task_connection_or_warning(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        port = await free_port()
        inbox = Inbox()
        a, b = await pair(inbox, **FAST)
        a.set_peers({"b": b.address, "down": f"127.0.0.1:{port}"})
        a.send("b", 1)
        a.send("down", 1)  # a link that keeps dialling
        await a.send_bulk("b", ("chunk", 0))
        await inbox.wait_for(2)
        host, p = b.address.rsplit(":", 1)
        _, half = await asyncio.open_connection(host, int(p))
        half.write(HELLO + (100).to_bytes(4, "big") + b"\x92")  # stops inside a frame
        await half.drain()
        await until(lambda: b.stats()["inbound"]["connections"] == 3, "b to accept")
        await a.close()
        await b.close()
        await a.close()  # idempotent
        half.close()
        await half.wait_closed()
        assert asyncio.all_tasks() == {asyncio.current_task()}

    # Collect what earlier tests left behind first, so only this scenario's leaks are counted.
    gc.collect()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        run(scenario())
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], caught
    assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text


def test_removing_a_peer_closes_its_links() -> None:
    async def scenario() -> None:
        port = await free_port()
        inbox = Inbox()
        a, b = await pair(inbox, bulk_queue_limit=1, **FAST)
        a.set_peers({"b": b.address, "down": f"127.0.0.1:{port}"})
        a.send("b", 1)
        await inbox.wait_for(1)
        await a.send_bulk("down", "fills the queue")
        blocked = asyncio.create_task(a.send_bulk("down", "waits for room"))
        await until(lambda: link_stat(a, "down", "bulk", "dial_failures"), "a failed dial")
        assert not blocked.done()
        a.set_peers({})
        with pytest.raises(ConnectionAbortedError, match="bulk link to down was closed"):
            await blocked
        with pytest.raises(KeyError):
            a.send("b", 2)
        await until(lambda: a.stats()["peers"] == {}, "the link to go")
        with pytest.raises(ValueError, match="host:port"):
            a.set_peers({"b": "nowhere"})
        await a.close()
        await b.close()
        assert asyncio.all_tasks() == {asyncio.current_task()}

    run(scenario())
