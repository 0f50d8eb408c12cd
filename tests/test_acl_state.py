"""The replicated ACL tables (pykvs.state.acl) through the FSM: commands, refusals, snapshots."""

from __future__ import annotations

import io
import struct
import zlib

import msgpack
import pytest

from pykvs.acl import (
    ANONYMOUS_TOKEN_ID,
    GLOBAL_MANAGEMENT_POLICY_ID,
    Policy,
    PolicyLink,
    Token,
    bootstrap_token,
)
from pykvs.fsm import FSM, SNAPSHOT_MAGIC, SnapshotError, acl_command, kv_command
from pykvs.state.acl import ACLError


class Log:
    def __init__(self) -> None:
        self.fsm = FSM()
        self.index = 0

    def __call__(self, command: bytes) -> object:
        self.index += 1
        return self.fsm.apply(self.index, command)

    @property
    def acl(self):  # type: ignore[no-untyped-def]
        return self.fsm.store.snapshot().acl


def policy(name: str, rules: str = 'key_prefix "" { policy = "read" }', pid: str = "") -> Policy:
    return Policy(id=pid or f"id-{name}", name=name, rules=rules)


def populated() -> tuple[Log, Token, Token]:
    log = Log()
    root = bootstrap_token(now_ns=1)
    assert log(acl_command("bootstrap", token=root.to_wire())).accessor_id == root.accessor_id
    log(acl_command("policy-set", policy=policy("readers").to_wire()))
    reader = Token.new([PolicyLink("id-readers", "readers")], "reader", now_ns=2)
    log(acl_command("token-set", token=reader.to_wire()))
    log(kv_command("set", b"k", b"v"))
    return log, root, reader


def test_bootstrap_once_installs_builtins_and_is_refused_after() -> None:
    log, root, reader = populated()
    acl = log.acl
    assert acl.bootstrap_index == 1
    assert acl.token_by_secret(root.secret_id).accessor_id == root.accessor_id
    assert acl.token(ANONYMOUS_TOKEN_ID) is not None
    assert acl.policy(GLOBAL_MANAGEMENT_POLICY_ID).name == "global-management"
    assert acl.policy_by_name("readers").create_index == 2
    assert acl.token(reader.accessor_id).modify_index == 3
    again = log(acl_command("bootstrap", token=bootstrap_token().to_wire()))
    assert isinstance(again, ACLError)
    assert str(again) == "ACL bootstrap no longer allowed (reset index: 1)"


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (acl_command("policy-set", policy=policy("readers", pid="other").to_wire()),
         "A Policy with Name 'readers' already exists"),
        (acl_command("policy-set", policy=policy("bad", rules='key "x" { polcy = "read" }')
                     .to_wire()), "Failed to parse ACL rules"),
        (acl_command("policy-set", policy=policy("bad name!").to_wire()), "invalid Name"),
        (acl_command("policy-delete", id=GLOBAL_MANAGEMENT_POLICY_ID), "builtin"),
        (acl_command("token-delete", id=ANONYMOUS_TOKEN_ID), "anonymous token"),
        (acl_command("token-set", token=Token.new([PolicyLink("nope")]).to_wire()),
         "No such policy with ID: nope"),
    ],
)
def test_refused_writes_change_nothing(command: bytes, message: str) -> None:
    log, _, _ = populated()
    before = (log.acl.policies(), log.acl.tokens())
    result = log(command)
    assert isinstance(result, ACLError) and message in str(result)
    assert (log.acl.policies(), log.acl.tokens()) == before


def test_update_keeps_create_index_and_secret_and_renames() -> None:
    log, _, reader = populated()
    renamed = Policy(id="id-readers", name="lookers", rules='key "k" { policy = "write" }')
    stored = log(acl_command("policy-set", policy=renamed.to_wire()))
    assert (stored.create_index, stored.modify_index) == (2, 5)
    assert log.acl.policy_by_name("readers") is None
    assert log.acl.policy_by_name("lookers").rules == renamed.rules
    changed = Token(reader.accessor_id, "another-secret")
    assert "SecretID" in str(log(acl_command("token-set", token=changed.to_wire())))
    assert log(acl_command("token-delete", id=reader.accessor_id)) is True
    assert log.acl.token_by_secret(reader.secret_id) is None
    assert log(acl_command("policy-delete", id="id-readers")) is True
    assert log.acl.policies_index == 8 and log.acl.tokens_index == 7


def test_snapshot_round_trip_keeps_acl_tables() -> None:
    log, _root, reader = populated()
    fresh = FSM()
    fresh.restore(log.fsm.snapshot(term=3).to_bytes())
    acl = fresh.store.snapshot().acl
    assert acl.tokens() == log.acl.tokens() and acl.policies() == log.acl.policies()
    assert acl.token_by_secret(reader.secret_id) == log.acl.token(reader.accessor_id)
    assert acl.bootstrap_index == 1
    refused = fresh.apply(10, acl_command("bootstrap", token=bootstrap_token().to_wire()))
    assert isinstance(refused, ACLError)


def _as_format_1(stream: bytes) -> bytes:
    """A format-2 stream without ACL records rewritten as the format-1 writer wrote it."""
    body = io.BytesIO(stream)
    assert body.read(len(SNAPSHOT_MAGIC)) == SNAPSHOT_MAGIC
    (length,) = struct.unpack("<I", body.read(4))
    header = msgpack.unpackb(body.read(length))
    header["format"] = 1
    packed = msgpack.packb(header)
    out = [SNAPSHOT_MAGIC, struct.pack("<I", len(packed)), packed]
    while True:
        tag, size = struct.unpack("<BI", body.read(5))
        payload = body.read(size)
        if tag == 0:
            counts = msgpack.unpackb(payload)
            assert all(counts.pop(name) == 0 for name in list(counts) if name.startswith("acl"))
            payload = msgpack.packb(counts)
        out.append(struct.pack("<BI", tag, len(payload)) + payload)
        if tag == 0:
            break
    data = b"".join(out)
    return data + struct.pack("<I", zlib.crc32(data))


def test_format_1_stream_restores_with_empty_acl_tables() -> None:
    log = Log()
    log(kv_command("set", b"a", b"1"))
    old = _as_format_1(log.fsm.snapshot(term=1).to_bytes())
    fresh = FSM()
    assert fresh.restore(old).format == 1
    assert fresh.store.kv_get(b"a")[1].value == b"1"
    acl = fresh.store.snapshot().acl
    assert acl.tokens() == [] and acl.bootstrap_index == 0


def test_unknown_format_is_refused_clearly() -> None:
    stream = bytearray(FSM().snapshot().to_bytes())
    header = msgpack.packb({"format": 9, "index": 0, "term": 0})
    bad = SNAPSHOT_MAGIC + struct.pack("<I", len(header)) + header + bytes(stream[-10:])
    with pytest.raises(SnapshotError, match="snapshot format 9 is not supported"):
        FSM().restore(bad)


def test_restore_command_replaces_tables() -> None:
    log, root, _reader = populated()
    other = Policy(id="p2", name="p2")
    tok = Token.new([PolicyLink("p2", "p2")])
    result = log(acl_command("restore", policies=[other.to_wire()], tokens=[tok.to_wire()],
                             bootstrap=0))
    assert result is True
    assert [p.id for p in log.acl.policies()] == ["p2"]
    assert log.acl.token_by_secret(root.secret_id) is None
    assert log.acl.token_by_secret(tok.secret_id) == tok
    assert log.acl.bootstrap_index == 0
