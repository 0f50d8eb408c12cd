"""The Python API of pykvs: the same operations against an in-process server or over RPC.

:class:`AsyncKV` turns friendly calls (``put``, ``get``, ``delete``, ``txn``, sessions...) into
the RPC endpoints' Consul-shaped arguments and back. Under it is a *caller*: either
:class:`RemoteCaller` (msgpack-RPC to an agent) or :class:`LocalCaller` (the endpoints of a
:class:`~pykvs.server.server.Server` running in this process, no socket in between). :class:`KV`
(pykvs.server.sync_client) is the synchronous face of an ``AsyncKV`` whose event loop runs in
a thread of its own.

Reads return ``(index, result)`` as Consul's clients do, so the index can feed the next
blocking read (``index=`` and ``wait=``). ``consistency`` is ``"default"`` (the leader
answers), ``"consistent"`` (the leader first confirms it still leads) or ``"stale"`` (any
server answers from its own state). ``dc`` sends the request to another datacenter.
"""

from __future__ import annotations

import builtins
import dataclasses
import math
import os
import ssl
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar

import msgpack

from pykvs.acl import ACLNotFound, PermissionDenied
from pykvs.goformat import NS_PER_SECOND
from pykvs.server.rpc import RawMsgpack, RPCClient, RPCError, invoke
from pykvs.server.server import Server, ServerConfig
from pykvs.server.tls import TLSConfig
from pykvs.state.entry import DirEntry, entries_from_pairs
from pykvs.state.sessions import Session
from pykvs.state.txn import TxnError, TxnResult

T = TypeVar("T")
CONSISTENCY_MODES = ("default", "consistent", "stale")
# Consul's TxnKVOp fields (Namespace and Partition are Enterprise's, accepted and unused)
TXN_KV_FIELDS = frozenset({"Verb", "Key", "Value", "Flags", "Index", "Session", "Namespace",
                           "Partition"})


class Caller(Protocol):
    async def call(self, method: str, args: Mapping[str, Any]) -> Any: ...
    async def close(self) -> None: ...


class RemoteCaller:
    """Calls over one pipelined msgpack-RPC connection to ``host:port``."""

    def __init__(self, host: str, port: int, timeout: float | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.client = RPCClient(host, port, ssl=ssl_context)
        self.timeout = timeout

    async def call(self, method: str, args: Mapping[str, Any]) -> Any:
        try:
            return await self.client.call(method, args, self.timeout)
        except OverflowError:  # msgpack cannot encode it; the in-process server says which
            raise ValueError(f"{method}: an integer argument does not fit in 64 bits") from None

    async def close(self) -> None:
        await self.client.close()


class LocalCaller:
    """Calls a server's endpoints in-process (same code path as its RPC, without a socket)."""

    def __init__(self, server: Server, owned: bool = True) -> None:
        self.server = server
        self.owned = owned

    async def call(self, method: str, args: Mapping[str, Any]) -> Any:
        handler = self.server.handlers.get(method)
        if handler is None:
            raise RPCError(f"rpc: can't find method {method}")
        error, result = await invoke(method, handler, dict(args))
        if error is not None:
            raise RPCError(error)
        if isinstance(result, RawMsgpack):
            return msgpack.unpackb(result.data, raw=False, strict_map_key=False)
        return result

    async def close(self) -> None:
        if self.owned:
            await self.server.close()


def _key(key: str | bytes, name: str = "key") -> bytes:
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, bytes | bytearray | memoryview):
        return bytes(key)
    raise TypeError(f"{name} must be str or bytes, not {type(key).__name__}")


def _uint64(number: int, name: str) -> int:
    if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number < 1 << 64:
        raise ValueError(f"{name} must be an integer in 0..2**64-1, got {number!r}")
    return number


def _seconds(seconds: float, name: str) -> float:
    if (isinstance(seconds, bool) or not isinstance(seconds, int | float)
            or not 0 <= seconds < math.inf):  # also refuses NaN
        raise ValueError(f"{name} must be finite seconds >= 0, got {seconds!r}")
    return seconds


def _value(value: str | bytes | None) -> bytes:
    if value is None:
        return b""
    return _key(value, "value")


def _session(wire: Mapping[str, Any]) -> Session:
    return Session(wire["ID"], wire["Node"], wire["Name"], wire["LockDelay"], wire["Behavior"],
                   wire["TTL"], wire["CreateIndex"], wire["ModifyIndex"])


def _duration(seconds: float | str | None, name: str) -> str:
    """Go duration text from seconds (or text passed through)."""
    if seconds is None:
        return ""
    if isinstance(seconds, str):
        return seconds
    # fixed point: Go's ParseDuration has no exponent ("1e+06s" is refused)
    return f"{_seconds(seconds, name):.9f}".rstrip("0").rstrip(".") + "s"


class AsyncKV:
    """The asyncio API (see the module docstring)."""

    def __init__(self, caller: Caller, token: str = "") -> None:
        self.caller = caller
        self.token = token  # the ACL token secret sent with every call (Consul's Token)

    @property
    def server(self) -> Server | None:
        """The in-process server, for an embedded store; None for a remote one."""
        return self.caller.server if isinstance(self.caller, LocalCaller) else None

    async def call(self, method: str, args: Mapping[str, Any] | None = None) -> Any:
        """Any RPC method with Consul-shaped arguments; the raw reply.  The client's token
        goes as ``Token`` unless ``args`` names one."""
        if args is not None and not isinstance(args, Mapping):
            raise TypeError(f"args must be a mapping, not {type(args).__name__}")
        request = dict(args or {})
        if self.token:
            request.setdefault("Token", self.token)
        return await self.caller.call(method, request)

    async def close(self) -> None:
        await self.caller.close()

    async def __aenter__(self) -> AsyncKV:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -------------------------------------------------------------------------- helpers
    @staticmethod
    def _query(index: int, wait: float | None, consistency: str, dc: str | None) -> dict:
        if consistency not in CONSISTENCY_MODES:
            raise ValueError(f"consistency must be one of {CONSISTENCY_MODES}, got "
                             f"{consistency!r}")
        _uint64(index, "index")
        if wait is not None:
            _seconds(wait, "wait")
        args: dict[str, Any] = {"MinQueryIndex": index,
                                "AllowStale": consistency == "stale",
                                "RequireConsistent": consistency == "consistent"}
        if wait:
            args["MaxQueryTime"] = int(wait * NS_PER_SECOND)
        if dc:
            args["Datacenter"] = dc
        return args

    async def _apply(self, op: str, key: str | bytes, value: str | bytes | None = None, *,
                     flags: int = 0, index: int = 0, session: str | None = None,
                     dc: str | None = None) -> bool:
        args: dict[str, Any] = {"Op": op, "DirEnt": {"Key": _key(key), "Value": _value(value),
                                                     "Flags": _uint64(flags, "flags"),
                                                     "ModifyIndex": index,
                                                     "Session": session or ""}}
        if dc:
            args["Datacenter"] = dc
        return bool(await self.call("KVS.Apply", args))

    # ------------------------------------------------------------------------------- KV
    async def put(self, key: str | bytes, value: str | bytes | None = b"", *, flags: int = 0,
                  cas: int | None = None, acquire: str | None = None,
                  release: str | None = None, dc: str | None = None) -> bool:
        """Set ``key``; with ``cas`` only if its ModifyIndex is ``cas`` (0: only if absent);
        with ``acquire``/``release`` lock or unlock it for a session. True when it applied."""
        if sum(x is not None for x in (cas, acquire, release)) > 1:
            raise ValueError("use at most one of cas, acquire and release")
        if acquire is not None:
            return await self._apply("lock", key, value, flags=flags, session=acquire, dc=dc)
        if release is not None:
            return await self._apply("unlock", key, value, flags=flags, session=release, dc=dc)
        if cas is not None:
            return await self._apply("cas", key, value, flags=flags, index=_uint64(cas, "cas"),
                                     dc=dc)
        return await self._apply("set", key, value, flags=flags, dc=dc)

    async def delete(self, key: str | bytes, *, recurse: bool = False, cas: int | None = None,
                     dc: str | None = None) -> bool:
        """Delete ``key`` (every key under it with ``recurse``; only at index ``cas``)."""
        if recurse and cas is not None:
            raise ValueError("use at most one of recurse and cas")
        if recurse:
            return await self._apply("delete-tree", key, dc=dc)
        if cas is not None:
            return await self._apply("delete-cas", key, index=_uint64(cas, "cas"), dc=dc)
        return await self._apply("delete", key, dc=dc)

    async def get(self, key: str | bytes, *, index: int = 0, wait: float | None = None,
                  consistency: str = "default",
                  dc: str | None = None) -> tuple[int, DirEntry | None]:
        """``(index, entry or None)``; with ``index`` it blocks until the key changes past it
        or ``wait`` seconds pass."""
        return await self._read(*self._get_args(key, index, wait, consistency, dc))

    async def list(self, prefix: str | bytes = b"", *, index: int = 0,
                   wait: float | None = None, consistency: str = "default",
                   dc: str | None = None) -> tuple[int, list[DirEntry]]:
        """``(index, entries under prefix)`` in key order (Consul's ``?recurse``)."""
        return await self._read(*self._list_args(prefix, index, wait, consistency, dc))

    async def keys(self, prefix: str | bytes = b"", separator: str | bytes | None = None, *,
                   index: int = 0, wait: float | None = None, consistency: str = "default",
                   dc: str | None = None) -> tuple[int, builtins.list[bytes]]:
        """``(index, keys under prefix)``; with ``separator``, up to its first occurrence
        after the prefix (Consul's ``?keys&separator=``)."""
        return await self._read(*self._keys_args(prefix, separator, index, wait, consistency,
                                                 dc))

    # The three reads, as (method, arguments); an embedded store answers them in the
    # caller's thread when its server may answer at once (see ``_read_now``).
    def _get_args(self, key: str | bytes, index: int = 0, wait: float | None = None,
                  consistency: str = "default", dc: str | None = None) -> tuple[str, dict]:
        return "KVS.Get", {"Key": _key(key), **self._query(index, wait, consistency, dc)}

    def _list_args(self, prefix: str | bytes = b"", index: int = 0, wait: float | None = None,
                   consistency: str = "default", dc: str | None = None) -> tuple[str, dict]:
        return "KVS.List", {"Key": _key(prefix, "prefix"),
                            **self._query(index, wait, consistency, dc)}

    def _keys_args(self, prefix: str | bytes = b"", separator: str | bytes | None = None,
                   index: int = 0, wait: float | None = None, consistency: str = "default",
                   dc: str | None = None) -> tuple[str, dict]:
        return "KVS.ListKeys", {"Prefix": _key(prefix, "prefix"), "Seperator": _value(separator),
                                **self._query(index, wait, consistency, dc)}

    def _read_now(self, method: str, args: dict[str, Any]) -> tuple[int, Any] | None:
        """The read answered by the in-process server in this thread (no hop to its loop),
        or None when it must go the RPC way: a remote store, a consistent or blocking read,
        a read another server answers, or a refusal (the RPC way words it)."""
        server = self.server
        if server is None or server.closed:  # a closed store says so the RPC way
            return None
        if self.token:
            args = {**args, "Token": self.token}
        kvs = server.endpoints.kvs
        try:
            if method == "KVS.Get":
                entry = kvs.get_now(args)
                return None if entry is None else (entry.meta["Index"], entry.entry())
            if method == "KVS.List":
                listing = kvs.list_now(args)
                return None if listing is None else (listing.meta["Index"], listing.entries())
            keys = kvs.list_keys_now(args)
            return None if keys is None else (keys.meta["Index"], keys.keys)
        except (ValueError, TypeError, PermissionDenied, ACLNotFound):
            return None

    async def _read(self, method: str, args: dict[str, Any]) -> tuple[int, Any]:
        found = self._read_now(method, args)
        if found is not None:
            return found
        reply = await self.call(method, args)
        if method == "KVS.Get":
            entries = entries_from_pairs(reply.get("Entries") or ())
            return reply["Index"], (entries[0] if entries else None)
        if method == "KVS.List":
            return reply["Index"], entries_from_pairs(reply.get("Entries") or ())
        return reply["Index"], [bytes(k) for k in reply.get("Keys") or []]

    # ------------------------------------------------------------------------------ Txn
    @staticmethod
    def _txn_ops(ops: Sequence[Mapping[str, Any]]) -> builtins.list[dict[str, Any]]:
        """Accept Consul's ``{"KV": {...}}`` ops or their inner KV maps."""
        if isinstance(ops, str | bytes | Mapping) or not isinstance(ops, Sequence):
            raise TypeError(f"ops must be a list of operations, not {type(ops).__name__}")
        wire = []
        for position, op in enumerate(ops):
            inner = op.get("KV", op) if isinstance(op, Mapping) else op
            if not isinstance(inner, Mapping):
                raise TypeError(f"txn operation {position} must be a mapping, got "
                                f"{type(inner).__name__}")
            kv = dict(inner)
            unknown = sorted(set(kv) - TXN_KV_FIELDS)
            if unknown:  # a misspelt field would be ignored: "Valu" would write an empty value
                raise ValueError(f"txn operation {position}: unknown field(s) "
                                 f"{', '.join(map(str, unknown))} (fields: "
                                 f"{', '.join(sorted(TXN_KV_FIELDS))})")
            for name in ("Key", "Value"):
                if name in kv and isinstance(kv[name], str):
                    kv[name] = kv[name].encode()
            wire.append({"KV": kv})
        return wire

    @staticmethod
    def _txn_result(reply: Mapping[str, Any]) -> TxnResult:
        results = None
        if reply.get("Results") is not None:
            results = [
                DirEntry(bytes(kv["Key"]), bytes(kv["Value"] or b""), kv["Flags"],
                         kv["CreateIndex"], kv["ModifyIndex"], kv["LockIndex"],
                         kv["Session"] or None)
                for kv in (r["KV"] for r in reply["Results"])
            ]
        errors = [TxnError(e["OpIndex"], e["What"]) for e in reply.get("Errors") or []]
        return TxnResult(results, errors)

    async def txn(self, ops: Sequence[Mapping[str, Any]], *,
                  dc: str | None = None) -> TxnResult:
        """Apply up to 128 KV operations atomically (Consul's Txn: ``{"Verb": "set", "Key":
        ..., "Value": ...}`` each); ``result.ok`` tells whether it applied."""
        args: dict[str, Any] = {"Ops": self._txn_ops(ops)}
        if dc:
            args["Datacenter"] = dc
        return self._txn_result(await self.call("Txn.Apply", args))

    async def txn_read(self, ops: Sequence[Mapping[str, Any]], *,
                       consistency: str = "default", dc: str | None = None) -> TxnResult:
        """A read-only transaction (get, get-tree, check-* verbs), answered without Raft."""
        args = {"Ops": self._txn_ops(ops), **self._query(0, None, consistency, dc)}
        return self._txn_result(await self.call("Txn.Read", args))

    # ------------------------------------------------------------------------- sessions
    async def session_create(self, *, name: str = "", node: str | None = None,
                             ttl: float | str | None = None, lock_delay: float = 15.0,
                             behavior: str = "release", dc: str | None = None) -> str:
        """Create a session; returns its ID. ``ttl`` in seconds (10..86400) or Go text."""
        _seconds(lock_delay, "lock_delay")
        body = {"Name": name, "Node": node or "", "TTL": _duration(ttl, "ttl"),
                "LockDelay": int(lock_delay * NS_PER_SECOND), "Behavior": behavior}
        args: dict[str, Any] = {"Op": "create", "Session": body}
        if dc:
            args["Datacenter"] = dc
        return str(await self.call("Session.Apply", args))

    async def session_destroy(self, session_id: str, *, dc: str | None = None) -> bool:
        args: dict[str, Any] = {"Op": "destroy", "Session": {"ID": session_id}}
        if dc:
            args["Datacenter"] = dc
        await self.call("Session.Apply", args)
        return True

    async def session_renew(self, session_id: str, *, dc: str | None = None) -> Session | None:
        """Reset the session's TTL timer; None when the session no longer exists."""
        args: dict[str, Any] = {"SessionID": session_id}
        if dc:
            args["Datacenter"] = dc
        reply = await self.call("Session.Renew", args)
        found = reply.get("Sessions") or []
        return _session(found[0]) if found else None

    async def session_info(self, session_id: str, *, index: int = 0, wait: float | None = None,
                           consistency: str = "default",
                           dc: str | None = None) -> tuple[int, Session | None]:
        reply = await self.call("Session.Get", {"SessionID": session_id,
                                                **self._query(index, wait, consistency, dc)})
        found = reply.get("Sessions") or []
        return reply["Index"], (_session(found[0]) if found else None)

    async def session_list(self, *, index: int = 0, wait: float | None = None,
                           consistency: str = "default",
                           dc: str | None = None) -> tuple[int, builtins.list[Session]]:
        reply = await self.call("Session.List", self._query(index, wait, consistency, dc))
        return reply["Index"], [_session(s) for s in reply.get("Sessions") or []]

    async def session_node(self, node: str, *, index: int = 0, wait: float | None = None,
                           consistency: str = "default",
                           dc: str | None = None) -> tuple[int, builtins.list[Session]]:
        reply = await self.call("Session.NodeSessions",
                                {"Node": node, **self._query(index, wait, consistency, dc)})
        return reply["Index"], [_session(s) for s in reply.get("Sessions") or []]

    # ------------------------------------------------------------------ status, operator
    async def leader(self, *, dc: str | None = None) -> str:
        """The leader's server address, "" when there is none."""
        return str(await self.call("Status.Leader", {"Datacenter": dc} if dc else {}))

    async def peers(self, *, dc: str | None = None) -> builtins.list[str]:
        return list(await self.call("Status.Peers", {"Datacenter": dc} if dc else {}))

    async def raft_configuration(self, *, consistency: str = "default",
                                 dc: str | None = None) -> dict[str, Any]:
        """``{"Servers": [{"ID", "Node", "Address", "Leader", "Voter"}...], "Index"}``."""
        return dict(await self.call("Operator.RaftGetConfiguration",
                                    self._query(0, None, consistency, dc)))

    async def raft_remove_peer(self, *, id: str = "", address: str = "",
                               dc: str | None = None) -> None:
        args: dict[str, Any] = {"ID": id, "Address": address}
        if dc:
            args["Datacenter"] = dc
        await self.call("Operator.RaftRemovePeer", args)

    async def transfer_leader(self, id: str | None = None, *, dc: str | None = None) -> None:
        args: dict[str, Any] = {"ID": id or ""}
        if dc:
            args["Datacenter"] = dc
        await self.call("Operator.TransferLeader", args)


    # ------------------------------------------------------------------------- snapshot
    async def snapshot_save(self, *, consistency: str = "default",
                            dc: str | None = None) -> bytes:
        """The whole state as a snapshot stream (pykvs.fsm's format), pulled in chunks."""
        args = self._query(0, None, consistency, dc)
        saved = await self.call("Snapshot.Save", args)
        parts = []
        offset = 0
        while True:
            reply = await self.call("Snapshot.Read", {**args, "ID": saved["ID"],
                                                      "Offset": offset})
            parts.append(bytes(reply["Data"]))
            offset += len(reply["Data"])
            if reply["EOF"]:
                break
        body = b"".join(parts)
        if len(body) != saved["Size"]:
            raise RPCError(f"snapshot arrived with {len(body)} bytes, expected {saved['Size']}")
        return body


# ---------------------------------------------------------------------------- constructors
async def open_async(path: str, *, wait_leader: float = 30.0, token: str = "",
                     **options: Any) -> AsyncKV:
    """Start a server in this event loop over the data directory ``path``; by default a
    one-server cluster listening on 127.0.0.1 at a free port. ``options`` are
    :class:`ServerConfig` fields (``join``, ``bootstrap_expect``, ``node_name``,
    ``acl_enabled``...); ``token`` is the ACL token secret the calls carry."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(ServerConfig)})
    if unknown:
        raise TypeError(f"open() got unknown option(s) {', '.join(unknown)} (the options are "
                        f"ServerConfig's fields)")
    _seconds(wait_leader, "wait_leader")
    _check_token(token)
    options.setdefault("port", 0)
    options.setdefault("tick_interval", 0.02)
    server = Server(ServerConfig(data_dir=str(path), **options))
    await server.start()
    try:
        await server.wait_leader(wait_leader)
    except BaseException:
        await server.close()
        raise
    return AsyncKV(LocalCaller(server), token)


def _check_token(token: str) -> None:
    if not isinstance(token, str):
        raise TypeError(f"token must be a str (an ACL token secret), not {type(token).__name__}")


def _tls_context(tls: ssl.SSLContext | TLSConfig | None) -> ssl.SSLContext | None:
    if tls is None or isinstance(tls, ssl.SSLContext):
        return tls
    if isinstance(tls, TLSConfig):
        return tls.client_context()
    raise TypeError(f"tls must be an ssl.SSLContext or a TLSConfig, not {type(tls).__name__}")


async def connect_async(address: str = "127.0.0.1:8300", *, timeout: float | None = None,
                        tls: ssl.SSLContext | TLSConfig | None = None,
                        token: str = "") -> AsyncKV:
    """A client of the server at ``host:port`` over msgpack-RPC (dialled on first use). ``tls``
    (a context, e.g. from ``pykvs.server.tls.client_context``, or a TLSConfig) for a server
    that serves TLS."""
    from pykvs.netaddr import split_address

    if not isinstance(address, str):
        raise TypeError(f"address must be a 'host:port' str, not {type(address).__name__}")
    host, port = split_address(address)
    if not 0 < port < 65536:
        raise ValueError(f"address port must be in 1..65535, got {port}")
    _check_token(token)
    return AsyncKV(RemoteCaller(host, port, timeout, ssl_context=_tls_context(tls)), token)
