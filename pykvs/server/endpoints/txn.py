"""Txn.Apply and Txn.Read: Consul's agent/consul/txn_endpoint.go for KV operations.

All or nothing: every op is checked against the token first (Consul's preCheck) and the
refusals are the reply's Errors; a read-only transaction runs against the current state and
is never proposed.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pykvs import fsm
from pykvs.acl import Authorizer, check_txn_ops, filter_entries
from pykvs.server.args import (
    check_key_size,
    check_session_ref,
    check_size,
    field_bytes,
    field_map,
    field_str,
    field_uint,
)
from pykvs.server.endpoints.common import raise_if_error
from pykvs.server.endpoints.kvs import check_value_size
from pykvs.state.txn import TXN_VERBS, TxnOp, TxnResult

if TYPE_CHECKING:
    from pykvs.server.seam import ServerCore

__all__ = ["MAX_TXN_OPS", "TXN_READ_VERBS", "TXN_VERBS", "Txn", "txn_result_to_wire"]

TXN_READ_VERBS = ("get", "get-tree", "check-index", "check-session", "check-not-exists")
MAX_TXN_OPS = 128
MAX_TXN_BYTES = 512 * 1024  # Consul's txn_max_req_len default


def txn_result_to_wire(result: TxnResult) -> dict[str, Any]:
    results = None
    if result.results is not None:
        results = [
            {
                "KV": {
                    "Key": entry.key,
                    "Value": entry.value,
                    "Flags": entry.flags,
                    "CreateIndex": entry.create_index,
                    "ModifyIndex": entry.modify_index,
                    "LockIndex": entry.lock_index,
                    "Session": entry.session or "",
                }
            }
            for entry in result.results
        ]
    errors = [{"OpIndex": err.op_index, "What": err.what} for err in result.errors] or None
    return {"Results": results, "Errors": errors}


def _filtered(authz: Authorizer, result: TxnResult) -> TxnResult:
    """A transaction's get/get-tree results without the keys the token may not read."""
    if result.results is None:
        return result
    kept, _ = filter_entries(authz, result.results)
    return TxnResult(kept, result.errors)


def _denied(authz: Authorizer, ops: list[TxnOp]) -> dict[str, Any] | None:
    """Consul's Txn preCheck: every op the token may not run, as the reply's Errors."""
    errors = check_txn_ops(authz, ops)
    if not errors:
        return None
    return {"Results": None, "Errors": [{"OpIndex": i, "What": what} for i, what in errors]}


class Txn:
    """The Txn.* endpoints of one server."""

    def __init__(self, core: ServerCore) -> None:
        self.core = core

    def table(self) -> dict[str, Any]:
        return {"Txn.Apply": self.apply, "Txn.Read": self.read}

    def _ops(self, args: dict[str, Any]) -> list[TxnOp]:
        raw_ops = args.get("Ops")
        if not isinstance(raw_ops, list) or not raw_ops:
            raise ValueError("Ops must be a non-empty list of operations")
        if len(raw_ops) > MAX_TXN_OPS:
            raise ValueError(
                f"Transaction contains too many operations ({len(raw_ops)} > {MAX_TXN_OPS})"
            )
        ops = []
        for position, raw in enumerate(raw_ops):
            try:
                ops.append(self._op(raw))
            except ValueError as exc:
                raise ValueError(f"operation {position}: {exc}") from None
        # Consul's txn_max_req_len (or kv_max_value_size when larger), on the keys and values
        # themselves: an HTTP body under it (base64 values) always fits.
        limit = max(MAX_TXN_BYTES, self.core.config.max_value_size)
        check_size("Transaction", sum(len(op.key) + len(op.value) for op in ops), limit)
        return ops

    def _op(self, raw: Any) -> TxnOp:
        if not isinstance(raw, dict):
            raise ValueError("must be a map with a KV field")
        kv = field_map(raw, "KV", required=True)
        verb = field_str(kv, "Verb")
        if verb not in TXN_VERBS:
            raise ValueError(f"unknown KV verb {verb!r}")
        value = field_bytes(kv, "Value")
        check_value_size(self.core, value)
        key = field_bytes(kv, "Key")
        check_key_size(key)
        session = field_str(kv, "Session") or None
        check_session_ref(session)
        return TxnOp(verb, key, value, field_uint(kv, "Flags"), field_uint(kv, "Index"), session)

    async def apply(self, args: dict[str, Any]) -> Any:
        forwarded, reply = await self.core.forward("Txn.Apply", args, read=False)
        if forwarded:
            return reply
        ops = self._ops(args)
        authz = self.core.authorize(args)
        denied = _denied(authz, ops)
        if denied is not None:
            return denied
        may_delete = any(op.verb.startswith("delete") for op in ops)
        command = fsm.txn_command(ops, ts=time.time_ns())
        result = raise_if_error(await self.core.raft_apply(command, may_delete=may_delete))
        return txn_result_to_wire(_filtered(authz, result))

    async def read(self, args: dict[str, Any]) -> Any:
        forwarded, reply = await self.core.forward("Txn.Read", args, read=True)
        if forwarded:
            return reply
        ops = self._ops(args)
        for position, op in enumerate(ops):
            if op.verb not in TXN_READ_VERBS:
                raise ValueError(f"operation {position}: {op.verb!r} is not a read-only verb")
        authz = self.core.authorize(args)
        denied = _denied(authz, ops)
        state = self.core.state
        meta = self.core.query_meta(state.index)
        if denied is not None:
            return {**denied, **meta}
        await self.core.prepare_read(args)
        result = state.begin().txn(state.index, ops, time.time_ns())  # never committed
        return {**txn_result_to_wire(_filtered(authz, result)), **meta}
