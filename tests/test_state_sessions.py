"""Session records, Consul's validation rules, Go durations and lock-delay bookkeeping."""

from __future__ import annotations

import pytest

from pykvs.goformat import DurationError, go_quote, parse_go_duration
from pykvs.state.entry import DirEntry, decode_entry, encode_entry
from pykvs.state.sessions import (
    MAX_LOCK_DELAY_NS,
    NS_PER_SECOND,
    LockDelays,
    Session,
    SessionError,
    validate_session,
)


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("10s", 10 * NS_PER_SECOND),
        ("1m30s", 90 * NS_PER_SECOND),
        ("1.5h", 5400 * NS_PER_SECOND),
        ("300ms", 300_000_000),
        ("2us", 2_000),
        ("2\u00b5s", 2_000),
        ("-5s", -5 * NS_PER_SECOND),
        ("+24h", 24 * 3600 * NS_PER_SECOND),
        (".5s", NS_PER_SECOND // 2),
    ],
)
def test_go_durations(text: str, ns: int) -> None:
    assert parse_go_duration(text) == ns


@pytest.mark.parametrize("text", ["", "10", "s", "1x", "-", "1.s.", "10 s"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(DurationError):
        parse_go_duration(text)


def test_session_validation_uses_consuls_rules_and_words() -> None:
    ok = validate_session(Session("id-1", node="n1", behavior="", ttl="15s"))
    assert ok.behavior == "release"
    assert validate_session(Session("id", node="n", ttl="0s")).ttl == "0s"
    with pytest.raises(SessionError, match="Missing session ID"):
        validate_session(Session("", node="n"))
    with pytest.raises(SessionError, match="Must provide Node"):
        validate_session(Session("id", node=""))
    with pytest.raises(SessionError, match="Invalid Behavior setting 'explode'"):
        validate_session(Session("id", node="n", behavior="explode"))
    with pytest.raises(SessionError, match=r"Invalid Session TTL '5000000000', must be between"):
        validate_session(Session("id", node="n", ttl="5s"))
    with pytest.raises(SessionError, match="must be between"):
        validate_session(Session("id", node="n", ttl="25h"))
    with pytest.raises(SessionError, match="Session TTL 'soon' invalid"):
        validate_session(Session("id", node="n", ttl="soon"))


def test_session_record_round_trip() -> None:
    s = Session("abc", "node-1", "name", 7, "delete", "30s", 4, 5)
    assert Session.decode("abc", s.encode()) == s


def test_entry_codec_round_trip_and_layout() -> None:
    data = encode_entry(b"\x00val", 42, 3, 9, 2, "sess")
    assert decode_entry(b"k", data) == DirEntry(b"k", b"\x00val", 42, 3, 9, 2, "sess")
    # The documented stored layout: msgpack array of six, Session nil when unset.
    assert encode_entry(b"", 0, 1, 1, 0, "") == bytes([0x96, 0xC4, 0x00, 0, 1, 1, 0, 0xC0])
    with pytest.raises(ValueError, match="not a msgpack array of 6"):
        decode_entry(b"k", b"\x93\x01\x02\x03")


def test_lock_delays_cap_expire_and_prune() -> None:
    delays = LockDelays()
    delays.set(b"a", 1_000, 10 * 60 * NS_PER_SECOND)  # capped at 60s like Consul
    assert delays.expiry(b"a") == 1_000 + MAX_LOCK_DELAY_NS
    assert delays.blocks(b"a", 1_000 + MAX_LOCK_DELAY_NS - 1)
    assert not delays.blocks(b"a", 1_000 + MAX_LOCK_DELAY_NS)
    delays.set(b"b", 0, 0)  # no delay configured: nothing recorded
    assert len(delays) == 1
    delays.prune(2_000 + MAX_LOCK_DELAY_NS)
    assert len(delays) == 0


def test_go_quote_matches_go() -> None:
    assert go_quote(b'a"b\\c') == '"a\\"b\\\\c"'
    assert go_quote(b"x\ny\x01") == '"x\\ny\\x01"'
    assert go_quote("caf\u00e9") == '"caf\u00e9"'
