"""Issue 15, from the attacker's side of the RPC port: raw msgpack frames, built by hand, sent
over a socket to a real server on 127.0.0.1.

- Decode amplification: a frame of millions of empty maps is refused undecoded (over its
  method's size, or over the decoding limits), the server's memory grows by a small multiple of
  the bytes sent, and a blocking query keeps only the fields it reads while it waits.
- Anonymous log growth: Session.Apply destroy with an ID that is not a UUID, or of a session
  that does not exist, proposes nothing; with ACLs on the token is checked first.
- Nothing reaches the Raft log that the caller could not write: oversized keys, transactions,
  session names, ACL records and non-UUID session references are refused before Raft.
- Slow peers: a half-sent frame is closed at the read deadline, an idle connection at the idle
  time, each with a connection error naming it.
- Random msgpack at every RPC method: an RPC error or a result, never an internal error, and
  memory bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pykvs import http
from pykvs.netaddr import split_address
from pykvs.raft.transport import decode_frame
from pykvs.server.limits import Limits
from pykvs.server.rpc import RPCClient
from pykvs.server.server import Server, ServerConfig

MIB = 1 << 20


def run(coro: Awaitable[Any], limit: float = 120) -> Any:
    return asyncio.run(asyncio.wait_for(coro, limit))  # type: ignore[arg-type]


@asynccontextmanager
async def serving(root: Path, *, acl: bool = False, **limits: Any) -> AsyncIterator[Server]:
    config = ServerConfig(data_dir=str(root / "s1"), port=0, tick_interval=0.02,
                          limits=Limits(**limits), acl_enabled=acl,
                          acl_default_policy="deny" if acl else "allow")
    server = Server(config)
    try:
        await server.start()
        await server.wait_leader(10)
        await until(lambda: settled(server), "the new leader's own entries")
        yield server
    finally:
        await server.close()


class Raw:
    """One hand-driven RPC connection: frames out, frames in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.ids = itertools.count(1)

    @classmethod
    async def open(cls, server: Server) -> Raw:
        host, port = split_address(server.address)
        return cls(*await asyncio.open_connection(host, port))

    def send_body(self, body: bytes) -> None:
        self.writer.write(len(body).to_bytes(4, "big") + body)

    async def frame(self, timeout: float = 20) -> Any:
        header = await asyncio.wait_for(self.reader.readexactly(4), timeout)
        body = await asyncio.wait_for(
            self.reader.readexactly(int.from_bytes(header, "big")), timeout)
        return msgpack.unpackb(body, raw=False, strict_map_key=False)

    async def call(self, method: str, args: Any) -> tuple[str | None, Any]:
        """One request; ``(error, result)`` of its response."""
        req_id = next(self.ids)
        self.send_body(msgpack.packb([req_id, method, args]))
        reply = await self.frame()
        assert reply[0] == req_id, reply
        return reply[1], reply[2]

    async def closed_with(self, timeout: float) -> str | None:
        """Read until the server closes (within ``timeout``); its connection error, if any."""
        error = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            assert left > 0, "the server did not close the connection in time"
            try:
                frame = await self.frame(left)
            except asyncio.IncompleteReadError:
                return error
            except ConnectionError:
                return error
            if frame[0] is None:
                error = frame[1]

    async def sent_and_closed(self, body: bytes) -> tuple[str | None, int]:
        """Send one frame the server must refuse by closing: its connection error, and how
        much the traced memory peaked meanwhile."""
        with traced() as peak:
            self.send_body(body)
            error = await self.closed_with(20)
            return error, peak()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def until(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def settled(server: Server) -> bool:
    """The leader wrote what a new leader writes of its own (its no-op, the cluster id, the
    barrier before its duties) and applied it: later entries are the tests' alone."""
    stats, node = server.raft_stats(), server.node
    return (stats is not None and node is not None and server.leader_duties.leading
            and bool(getattr(node.configuration(), "cluster_id", True))
            and stats["applied_index"] == stats["last_log_index"])


def last_index(server: Server) -> int:
    stats = server.raft_stats()
    assert stats is not None
    return int(stats["last_log_index"])


def data_mdb_size(server: Server) -> int:
    return sum(p.stat().st_size for p in Path(server.config.data_dir).rglob("data.mdb"))


async def unharmed(server: Server, before: int) -> None:
    """Nothing was committed since ``before`` (the Raft last index), and the server serves."""
    assert last_index(server) == before
    await still_serving(server)


async def still_serving(server: Server) -> None:
    raw = await Raw.open(server)
    try:
        error, result = await raw.call("KVS.Apply", {"Op": "set", "DirEnt": {
            "Key": "alive", "Value": b"yes"}})
        assert error is None and result is True
        error, result = await raw.call("Status.Ping", {})
        assert error is None
    finally:
        await raw.close()


@contextlib.contextmanager
def traced() -> Any:
    """tracemalloc around a block: yields a function giving the peak growth so far."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        yield lambda: tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


# --------------------------------------------------------------------- decode amplification
def empty_maps_request(method: str, count: int, **args: Any) -> bytes:
    """``[1, method, {**args, "Junk": [{}, {}, ...]}]`` of ``count`` empty maps, by hand: 2M
    maps decode to ~137 MiB of Python dicts without limits."""
    assert len(args) < 15  # fixarray(3), id, method, a fixmap of len(args) + 1
    body = b"\x93" + msgpack.packb(1) + msgpack.packb(method)
    body += bytes([0x80 | (len(args) + 1)]) + b"".join(
        msgpack.packb(k) + msgpack.packb(v) for k, v in args.items())
    body += msgpack.packb("Junk") + b"\xdd" + count.to_bytes(4, "big") + b"\x80" * count
    return body


def test_a_frame_of_empty_maps_is_refused_undecoded(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path) as server:
            before = last_index(server)
            # As the first frame of a connection (read by the shared port's listener), under
            # the decoding limits: refused, the connection closed.
            raw = await Raw.open(server)
            body = empty_maps_request("KVS.List", 2_000_000, Key="", MinQueryIndex=1 << 40)
            error, grown = await raw.sent_and_closed(body)
            assert error is not None and "(the decoding limit)" in error, error
            assert grown < 4 * len(body), (grown, len(body))  # 2M maps: 137 MiB unbounded
            await raw.close()
            raw = await Raw.open(server)
            assert (await raw.call("Status.Ping", {}))[0] is None
            # Later frames: a KVS.List may not be this large, answered from its first bytes.
            with traced() as peak:
                raw.send_body(body)
                reply = await raw.frame()
                grown = peak()
            assert reply[0] == 1 and "over the 131072-byte limit" in reply[1], reply
            assert grown < 3 * len(body), (grown, len(body))  # the frame itself, not 137 MiB
            # The connection keeps serving (the frame was read whole).
            assert (await raw.call("Status.Ping", {}))[0] is None
            # A method that may be large decodes under the limits: refused, connection closed.
            body = empty_maps_request("KVS.Apply", 2_000_000, Op="set")
            error, grown = await raw.sent_and_closed(body)
            assert error is not None and "(the decoding limit)" in error, error
            assert grown < 4 * len(body), (grown, len(body))
            await raw.close()
            await unharmed(server, before)

    run(main())


def test_nested_containers_stop_at_the_decoding_limits(tmp_path: Path) -> None:
    """Many small maps inside arrays (each under max_array_len): the hooks' count stops it."""
    async def main() -> None:
        async with serving(tmp_path) as server:
            before = last_index(server)
            raw = await Raw.open(server)
            assert (await raw.call("Status.Ping", {}))[0] is None  # (first frames: the port's)
            junk = [[{} for _ in range(15)] for _ in range(200_000)]
            body = msgpack.packb([1, "KVS.Apply", {"Op": "set", "Junk": junk}])
            del junk
            error, grown = await raw.sent_and_closed(body)
            assert error is not None and "(the decoding limit)" in error, error
            # Without limits: 3M dicts and 200k lists, ~250 MiB for these 3.2 MB.
            assert grown < 8 * len(body), (grown / len(body))
            await raw.close()
            await unharmed(server, before)

    run(main())


def test_the_densest_valid_frames_decode() -> None:
    """Big listings and key lists (a forwarded read's reply) stay under the decoding limit:
    150,000 entries of a one-character key (60 bytes each), 300,000 one-byte keys."""
    entries = [{"LockIndex": 0, "Key": b"k", "Flags": 0, "Value": None, "CreateIndex": 5,
                "ModifyIndex": 5} for _ in range(150_000)]
    reply = {"Index": 5, "KnownLeader": True, "LastContact": 0, "Entries": entries}
    assert decode_frame(msgpack.packb(reply)) == reply
    reply = {"Index": 5, "Keys": [b"%d" % (i % 10) for i in range(300_000)]}
    assert decode_frame(msgpack.packb(reply)) == reply


def test_a_blocking_query_keeps_only_what_it_reads(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path) as server:
            raw = await Raw.open(server)
            error, reply = await raw.call("KVS.List", {"Key": "w/"})
            assert error is None
            index = reply["Index"]
            junk = [os.urandom(1000) for _ in range(100)]  # ~100 KB: under the 128 KiB limit
            body = msgpack.packb([7, "KVS.List", {"Key": "w/", "MinQueryIndex": index,
                                                  "MaxQueryTime": 30 * 10**9, "Junk": junk}])
            del junk
            with traced() as peak:
                base = tracemalloc.get_traced_memory()[0]
                raw.send_body(body)
                # Decoded (the peak saw the junk), then waiting with the junk released; the
                # query's own reply has not come (it waits for a write).
                await until(lambda: peak() > 100_000, "the request decoded")
                await until(lambda: server.blocking_rpc.counts.get("127.0.0.1") == 1,
                            "the query waiting")
                await until(lambda: tracemalloc.get_traced_memory()[0] - base < 50_000,
                            "the junk released while the query waits")
            writer = await Raw.open(server)
            assert (await writer.call("KVS.Apply", {"Op": "set", "DirEnt": {
                "Key": "w/x", "Value": b"1"}}))[0] is None
            reply = await raw.frame()
            assert reply[0] == 7 and reply[1] is None and len(reply[2]["Entries"]) == 1
            await writer.close()
            await raw.close()

    run(main())


# -------------------------------------------------------------------- anonymous log growth
def test_session_destroy_needs_a_uuid_and_proposes_nothing_unknown(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path) as server:
            raw = await Raw.open(server)
            before, disk = last_index(server), data_mdb_size(server)
            for _ in range(10):
                error, _ = await raw.call("Session.Apply", {
                    "Op": "destroy", "Session": {"ID": "x" * 100_000}})
                assert error == ("Session.Apply: Session lookup failed: failed session lookup: "
                                 "UUID must be 36 characters"), error
            error, _ = await raw.call("Session.Apply", {
                "Op": "destroy", "Session": {"ID": "g" * 8 + "-0000-0000-0000-" + "0" * 12}})
            assert error is not None and "invalid UUID" in error
            # 4 MiB: over the size of a Session.Apply request, refused unread.
            raw.send_body(msgpack.packb([99, "Session.Apply", {
                "Op": "destroy", "Session": {"ID": "y" * (4 * MIB)}}]))
            reply = await raw.frame()
            assert reply[0] == 99 and "over the 131072-byte limit" in reply[1]
            unknown = str(uuid.uuid4())
            for _ in range(20):
                assert await raw.call("Session.Apply", {
                    "Op": "destroy", "Session": {"ID": unknown}}) == (None, unknown)
            assert last_index(server) == before
            assert data_mdb_size(server) == disk
            # A real session is still destroyed (one entry).
            error, created = await raw.call("Session.Apply", {"Op": "create", "Session": {}})
            assert error is None
            assert await raw.call("Session.Apply", {
                "Op": "destroy", "Session": {"ID": created}}) == (None, created)
            assert last_index(server) == before + 2
            await raw.close()

    run(main())


def test_session_destroy_with_acls_checks_the_token_first(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path, acl=True) as server:
            raw = await Raw.open(server)
            error, token = await raw.call("ACL.BootstrapTokens", {})
            assert error is None
            secret = token["SecretID"]
            error, created = await raw.call("Session.Apply", {
                "Op": "create", "Session": {}, "Token": secret})
            assert error is None
            before = last_index(server)
            unknown = str(uuid.uuid4())
            error, _ = await raw.call("Session.Apply", {"Op": "destroy",
                                                        "Session": {"ID": unknown}})
            assert error == f'Unknown session "{unknown}"', error
            error, _ = await raw.call("Session.Apply", {"Op": "destroy",
                                                        "Session": {"ID": created}})
            assert error is not None and error.startswith("Permission denied"), error
            error, _ = await raw.call("Session.Apply", {"Op": "destroy", "Token": "nope",
                                                        "Session": {"ID": created}})
            assert error == "ACL not found", error
            assert last_index(server) == before
            assert await raw.call("Session.Apply", {
                "Op": "destroy", "Session": {"ID": created}, "Token": secret}) == (None, created)
            await raw.close()

    run(main())


def test_http_session_destroy_of_anything_is_not_true(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path) as server:
            api = await http.start(server, "127.0.0.1", 0)
            try:
                before = last_index(server)
                async with aiohttp.ClientSession() as session, session.put(
                        f"http://{api.address}/v1/session/destroy/anything") as response:
                    text = await response.text()
                assert response.status == 400 and "UUID must be 36 characters" in text
                assert last_index(server) == before
            finally:
                await api.close()

    run(main())


# ------------------------------------------------ nothing the caller could not write is logged
def test_every_write_is_checked_before_raft(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path) as server:
            raw = await Raw.open(server)
            before = last_index(server)
            refusals = [
                ("KVS.Apply", {"Op": "set", "DirEnt": {"Key": "k" * (65 * 1024)}},
                 "Key too large"),
                ("KVS.Apply", {"Op": "lock", "DirEnt": {"Key": "k", "Session": "s" * 5000}},
                 "failed session lookup: UUID must be 36 characters"),
                ("Txn.Apply", {"Ops": [{"KV": {"Verb": "set", "Key": f"k{i}",
                                               "Value": b"v" * 400_000}} for i in range(3)]},
                 "Transaction too large"),
                ("Txn.Apply", {"Ops": [{"KV": {"Verb": "lock", "Key": "k",
                                               "Session": "nope"}}]},
                 "failed session lookup"),
                ("Session.Apply", {"Op": "create", "Session": {"Name": "n" * 5000}},
                 "Session Name too large"),
                ("Session.Apply", {"Op": "create", "Session": {"TTL": "1" * 100 + "s"}},
                 "Session TTL too large"),
            ]
            for method, args, expected in refusals:
                error, _ = await raw.call(method, args)
                assert error is not None and expected in error, (method, error)
            assert last_index(server) == before
            await raw.close()
            await still_serving(server)

    run(main())


def test_with_acls_nothing_anonymous_is_proposed(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path, acl=True) as server:
            raw = await Raw.open(server)
            error, token = await raw.call("ACL.BootstrapTokens", {})
            assert error is None
            secret = token["SecretID"]
            before = last_index(server)
            for method, args in [
                ("KVS.Apply", {"Op": "set", "DirEnt": {"Key": "k", "Value": b"v"}}),
                ("Txn.Apply", {"Ops": [{"KV": {"Verb": "set", "Key": "k"}}]}),
                ("Session.Apply", {"Op": "create", "Session": {}}),
                ("ACL.PolicySet", {"Policy": {"Name": "p", "Rules": ""}}),
                ("ACL.TokenSet", {"ACLToken": {}, "Create": True}),
                ("ACL.PolicyDelete", {"PolicyID": str(uuid.uuid4())}),
                ("ACL.TokenDelete", {"TokenID": str(uuid.uuid4())}),
                ("ACL.BootstrapTokens", {}),
                ("Operator.RaftRemovePeer", {"ID": "node1"}),
            ]:
                error, reply = await raw.call(method, args)
                # A transaction's refusals are its reply's Errors, as Consul's.
                assert error is not None or reply["Errors"], (method, reply)
            # Management deletes of what does not exist propose nothing either.
            for method, args in [
                ("ACL.PolicyDelete", {"PolicyID": str(uuid.uuid4()), "Token": secret}),
                ("ACL.TokenDelete", {"TokenID": str(uuid.uuid4()), "Token": secret}),
            ]:
                assert await raw.call(method, args) == (None, True)
            error, _ = await raw.call("ACL.TokenDelete", {"TokenID": "x" * 1000,
                                                          "Token": secret})
            assert error == "ACL.TokenDelete: Accessor ID is missing or an invalid UUID"
            error, _ = await raw.call("ACL.TokenSet", {"Token": secret, "Create": True,
                                                       "ACLToken": {"AccessorID": "a" * 999}})
            assert error == "ACL.TokenSet: Invalid Token: AccessorID is not a valid UUID"
            error, _ = await raw.call("ACL.PolicySet", {"Token": secret, "Policy": {
                "Name": "big", "Rules": "", "Description": "d" * (1100 * 1024)}})
            assert error is not None and "Policy too large" in error
            assert last_index(server) == before
            await raw.close()

    run(main())


# ----------------------------------------------------------------------------- slow peers
def test_a_half_sent_frame_is_closed_at_the_read_deadline(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path, rpc_read_timeout=0.2) as server:
            raw = await Raw.open(server)
            # (A connection's first frame is the shared port's: its hello deadline, 5 s.)
            assert (await raw.call("Status.Ping", {}))[0] is None
            raw.writer.write((8 * MIB - 16).to_bytes(4, "big") + b"\x93" + b"\x00" * 1000)
            await raw.writer.drain()
            error = await raw.closed_with(5)
            assert error is not None and "read deadline" in error, error
            await raw.close()
            # One byte of the header is enough to start the clock.
            raw = await Raw.open(server)
            assert (await raw.call("Status.Ping", {}))[0] is None
            raw.writer.write(b"\x00")
            error = await raw.closed_with(5)
            assert error is not None and "read deadline" in error, error
            await raw.close()
            # A whole frame within the deadline is served.
            await still_serving(server)

    run(main())


def test_an_idle_connection_is_closed(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path, rpc_idle_timeout=0.3) as server:
            raw = await Raw.open(server)
            assert (await raw.call("Status.Ping", {}))[0] is None
            error = await raw.closed_with(5)
            assert error is not None and "idle for 0.3s" in error, error
            await raw.close()
            # A blocking query in flight (1 s, past the index) is not idle: it is answered.
            raw = await Raw.open(server)
            raw.send_body(msgpack.packb([5, "KVS.Get", {
                "Key": "nothing", "MinQueryIndex": 1 << 40, "MaxQueryTime": 10**9}]))
            reply = await raw.frame(10)
            assert reply[0] == 5 and reply[1] is None
            error = await raw.closed_with(5)  # then idle
            assert error is not None and "idle" in error
            await raw.close()

    run(main())


def test_a_client_redials_before_the_server_calls_it_idle(tmp_path: Path) -> None:
    """RPCClient (the forwarding pool's) closes a connection idle for ``idle_redial`` itself,
    so a request never meets the server's idle close on its way."""
    async def main() -> None:
        async with serving(tmp_path) as server:
            host, port = split_address(server.address)
            client = RPCClient(host, port, idle_redial=0.05)
            try:
                await client.call("Status.Ping", {})
                first = client._writer
                loop = asyncio.get_running_loop()
                await until(lambda: loop.time() - client._last_used > 0.05, "idle")
                await client.call("Status.Ping", {})
                assert client._writer is not None and client._writer is not first
                assert first is not None and first.is_closing()
            finally:
                await client.close()

    run(main())


def test_limits_refuse_bad_timeouts() -> None:
    for bad in (0, -1, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match="rpc_read_timeout must be a positive number"):
            Limits(rpc_read_timeout=bad)
    with pytest.raises(ValueError, match="rpc_idle_timeout"):
        Limits(rpc_idle_timeout=0)


# ----------------------------------------------------------------- random frames, every method
FIELDS = ["Op", "Key", "Value", "DirEnt", "Session", "ID", "Token", "Datacenter", "Ops", "KV",
          "Verb", "MinQueryIndex", "MaxQueryTime", "AllowStale", "RequireConsistent", "Prefix",
          "Seperator", "SessionID", "Node", "Name", "TTL", "Behavior", "LockDelay", "Policy",
          "PolicyID", "PolicyName", "ACLToken", "TokenID", "TokenIDType", "Create", "Rules",
          "AccessorID", "SecretID", "Offset", "Data", "EOF", "Flags", "Index", "ModifyIndex",
          "Address"]
OPS = ["set", "cas", "lock", "unlock", "delete", "delete-tree", "delete-cas", "get", "create",
       "destroy", "get-tree", "check-index", "check-session"]

scalars = (st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1)
           | st.floats(allow_nan=True) | st.text(max_size=40) | st.binary(max_size=40)
           | st.sampled_from(OPS))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6)
    | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=6),
    max_leaves=30)
args_maps = st.dictionaries(st.sampled_from(FIELDS), values, max_size=8) | values


def test_random_frames_at_every_method_get_rpc_errors(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path, rpc_read_timeout=5.0) as server:
            # Internal.Join is the formation's (guarded by its own work); a removal of this
            # server would end the test, not the server.
            methods = sorted(m for m in server.handlers if m != "Internal.Join")
            raw = await Raw.open(server)
            loop = asyncio.get_running_loop()
            seen: list[str] = []

            @settings(max_examples=300, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(method=st.sampled_from(methods), args=args_maps)
            def probe(method: str, args: Any) -> None:
                fut = asyncio.run_coroutine_threadsafe(raw.call(method, args), loop)
                error, _ = fut.result(30)
                if error is not None:
                    assert "internal error" not in error, (method, args, error)
                    seen.append(error)

            with traced() as peak:
                await asyncio.to_thread(probe)
                grown = peak()
            assert seen  # the run did reach refusals
            assert grown < 64 * MIB, grown
            await raw.close()
            # Bytes that are not msgpack: the connection is closed with a message.
            raw = await Raw.open(server)
            assert (await raw.call("Status.Ping", {}))[0] is None  # (first frames: the port's)
            raw.send_body(b"\xc1\xc1\xc1")
            error = await raw.closed_with(5)
            assert error is not None and "not one msgpack object" in error
            await raw.close()
            await still_serving(server)

    run(main(), limit=300)
