"""One bare Raft server as a process (a RaftNode over LMDB with the real FSM, no RPC server),
with a tiny client protocol: for tests/test_raft_cluster.py and bench/bench_raft.py.

    python tests/raft_process.py --id n1 --data-dir D --bind 127.0.0.1:0 \\
        [--client 127.0.0.1:0] [--peer n2=127.0.0.1:P ...] [--bootstrap]

runs a ``RaftNode`` over LMDB (``D``) with the real FSM and prints, once it listens, one line of
JSON: ``{"id": ..., "raft": "host:port", "client": "host:port", "pid": ...}``. ``--bootstrap``
founds a cluster of this server and its ``--peer``s when the data directory is empty (ignored
otherwise); a server started without it waits to be added by the leader (``add_voter``), and
needs ``--peer`` addresses of the current members to answer them. SIGTERM / SIGINT close it
cleanly; a failed node exits with status 1.

Client protocol (``--client`` port): frames ``u32_be(length) || msgpack``; a request is
``[id, op, {args}]``, answered (in any order) by ``[id, true, result]`` or
``[id, false, {"error": name, "message": str, "leader": id or nil}]``. Ops:

- ``set`` {key, value} -> True (after commit and apply)
- ``get`` {key, consistency: "default"|"consistent"|"stale"} -> {index, value}
- ``dump`` {prefix} -> {applied, items: [[key, value], ...]} (this server's state, stale)
- ``status`` -> node and storage stats
- ``barrier`` -> index; ``snapshot`` -> snapshot index
- ``add_voter`` / ``add_learner`` {id, address} -> index; ``remove`` {id} -> index
- ``transfer`` {to (optional)} -> the new leader's id
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import msgpack

from pykvs._aio import wait_for
from pykvs.fsm import FSM, kv_command
from pykvs.netaddr import split_address
from pykvs.raft.node import NodeConfig, NotLeaderError, RaftNode
from pykvs.raft.storage import LMDBStorage

MAX_FRAME = 64 << 20


class RemoteError(Exception):
    """The server answered a request with an error."""

    def __init__(self, name: str, message: str, leader: str | None) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.leader = leader


def _frame(obj: Any) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    length = int.from_bytes(await reader.readexactly(4), "big")
    if not 0 < length <= MAX_FRAME:
        raise ValueError(f"frame length {length} outside 1..{MAX_FRAME}")
    return msgpack.unpackb(await reader.readexactly(length), raw=False, strict_map_key=False)


class Client:
    """A pipelining client of the protocol above: many calls may be in flight at once."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._task = asyncio.get_running_loop().create_task(self._read_replies())

    @classmethod
    async def connect(cls, address: str, timeout: float = 5.0) -> Client:
        host, port = split_address(address)
        reader, writer = await wait_for(asyncio.open_connection(host, port), timeout)
        return cls(reader, writer)

    async def call(self, op: str, timeout: float | None = 30.0, **args: Any) -> Any:
        """Send one request and wait for its answer; raises RemoteError for an error reply and
        ConnectionError when the server went away."""
        if self._task.done():
            raise ConnectionResetError("connection to the server is closed")
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        try:
            self._writer.write(_frame([rid, op, args]))
            await self._writer.drain()
            return await wait_for(fut, timeout)
        finally:
            self._waiting.pop(rid, None)

    async def _read_replies(self) -> None:
        error: BaseException = ConnectionResetError("server closed the connection")
        try:
            while True:
                rid, ok, result = await _read_frame(self._reader)
                fut = self._waiting.pop(rid, None)
                if fut is None or fut.done():
                    continue
                if ok:
                    fut.set_result(result)
                else:
                    fut.set_exception(RemoteError(result["error"], result["message"],
                                                  result.get("leader")))
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            error = ConnectionResetError(f"connection to the server lost: {exc!r}")
        finally:
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(error)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


class ClientServer:
    """Serves the client protocol against one node and its FSM."""

    def __init__(self, node: RaftNode, fsm: FSM, storage: LMDBStorage | None = None) -> None:
        self.node = node
        self.fsm = fsm
        self.storage = storage
        self._connections: set[asyncio.Task[Any]] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        requests: set[asyncio.Task[None]] = set()
        try:
            while True:
                request = await _read_frame(reader)
                handler = asyncio.get_running_loop().create_task(self._answer(request, writer))
                requests.add(handler)
                handler.add_done_callback(requests.discard)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        except asyncio.CancelledError:
            pass  # closing
        finally:
            for handler in requests:
                handler.cancel()
            writer.close()
            self._connections.discard(task)

    async def close(self) -> None:
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _answer(self, request: Any, writer: asyncio.StreamWriter) -> None:
        rid = request[0] if isinstance(request, list) and request else None
        try:
            _, op, args = request
            reply = [rid, True, await self._dispatch(str(op), dict(args))]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            leader = getattr(exc, "leader_hint", None)
            reply = [rid, False, {"error": type(exc).__name__, "message": str(exc),
                                  "leader": leader}]
        with contextlib.suppress(OSError):
            writer.write(_frame(reply))

    async def _dispatch(self, op: str, args: dict[str, Any]) -> Any:
        node = self.node
        if op == "set":
            command = kv_command("set", bytes(args["key"]), bytes(args["value"]),
                                 ts=time.time_ns())
            result = await node.apply(command, timeout=args.get("timeout", 30.0))
            if isinstance(result, Exception):
                raise result
            return result
        if op == "get":
            mode = args.get("consistency", "default")
            if mode == "consistent":
                await node.verify_leader()
            elif mode == "default":
                if not node.is_leader():
                    raise NotLeaderError(node.leader())
            elif mode != "stale":
                raise ValueError(f"consistency must be default, consistent or stale, not {mode!r}")
            index, entry = self.fsm.store.kv_get(bytes(args["key"]))
            return {"index": index, "value": None if entry is None else entry.value}
        if op == "dump":
            _, entries = self.fsm.store.kv_list(bytes(args.get("prefix", b"")))
            return {"applied": node.applied_index, "items": [[e.key, e.value] for e in entries]}
        if op == "status":
            stats = node.stats()
            if self.storage is not None:
                stats["storage"] = self.storage.stats()
            return stats
        if op == "barrier":
            return await node.barrier()
        if op == "snapshot":
            return (await node.snapshot()).index
        if op == "add_voter":
            return await node.add_voter(str(args["id"]), str(args["address"]))
        if op == "add_learner":
            return await node.add_learner(str(args["id"]), str(args["address"]))
        if op == "remove":
            return await node.remove_server(str(args["id"]))
        if op == "transfer":
            return await node.transfer_leadership(args.get("to"))
        raise ValueError(f"unknown op {op!r}")


def _parse_peer(text: str) -> tuple[str, str]:
    sid, sep, address = text.partition("=")
    if not sep or not sid:
        raise argparse.ArgumentTypeError(f"--peer must be ID=HOST:PORT, got {text!r}")
    try:
        split_address(address)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return sid, address


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python tests/raft_process.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--id", required=True, help="this server's id")
    p.add_argument("--data-dir", required=True, help="LMDB directory (created if missing)")
    p.add_argument("--bind", default="127.0.0.1:0", help="raft address (port 0: pick one)")
    p.add_argument("--client", default="127.0.0.1:0", help="client protocol address")
    p.add_argument("--peer", action="append", type=_parse_peer, default=[],
                   help="ID=HOST:PORT of another server (repeatable)")
    p.add_argument("--bootstrap", action="store_true",
                   help="found a cluster of this server and its peers if the log is empty")
    p.add_argument("--tick", type=float, default=0.05, help="seconds per raft tick")
    p.add_argument("--election-tick", type=int, default=10)
    p.add_argument("--snapshot-threshold", type=int, default=8192)
    p.add_argument("--trailing", type=int, default=1024, help="entries kept behind a snapshot")
    p.add_argument("--log-level", default="WARNING")
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    storage = LMDBStorage(args.data_dir)
    fsm = FSM()
    config = NodeConfig(args.id, tick_interval=args.tick, election_tick=args.election_tick,
                        snapshot_threshold=args.snapshot_threshold,
                        trailing_entries=args.trailing)
    node = RaftNode(config, storage.log, storage.snapshots, fsm, bind=args.bind,
                    peers=dict(args.peer), bootstrap=args.bootstrap)
    clients = ClientServer(node, fsm, storage)
    server: asyncio.Server | None = None
    try:
        await node.start()
        host, port = split_address(args.client)
        server = await asyncio.start_server(clients.serve, host, port)
        client_port = server.sockets[0].getsockname()[1]
        print(json.dumps({"id": args.id, "raft": node.address, "client": f"{host}:{client_port}",
                          "pid": os.getpid()}), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        stopped = loop.create_task(stop.wait())
        closed = loop.create_task(node.wait_closed())
        await asyncio.wait([stopped, closed], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        closed.cancel()
        return 1 if node.failure is not None else 0
    finally:
        if server is not None:
            server.close()
        await clients.close()
        await node.close()
        storage.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s {args.id} %(levelname)s %(name)s: %(message)s")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
