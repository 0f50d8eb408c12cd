"""The C transcoder (pykvs.transcode) against plain-Python references of Consul's output.

Consul writes its KV bodies with Go's ``json.Marshal``: HTML-safe escaping, U+2028/U+2029
escaped, each byte of invalid UTF-8 as ``\\ufffd`` (Go's utf8.DecodeRune consumes one byte),
``\\b`` and ``\\f`` as short escapes (Go >= 1.22), ``[]byte`` as padded standard base64.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
from collections.abc import Sequence

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pykvs.transcode import (
    pack_key_list,
    pack_kv_listing_msgpack,
    pack_listing,
    render_keys_json,
    render_kv_entry_json,
    render_kv_json,
    render_packed_keys_json,
)

U64_MAX = 2**64 - 1

# ---- plain-Python references -----------------------------------------------------------

_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r"}
_SHORT_ESCAPES["\t"] = "\\t"


def _go_runes(data: bytes) -> list[str | None]:
    """Decodes like Go's utf8.DecodeRune in a loop: a character, or None for one bad byte."""
    runes: list[str | None] = []
    i = 0
    while i < len(data):
        for width in (1, 2, 3, 4):
            try:
                text = data[i : i + width].decode("utf-8")
            except UnicodeDecodeError:
                continue
            if len(text) == 1:
                runes.append(text)
                i += width
                break
        else:
            runes.append(None)
            i += 1
    return runes


def go_json_string(data: bytes) -> str:
    """``json.Marshal(string(data))`` as Go writes it."""
    out = ['"']
    for rune in _go_runes(data):
        if rune is None:
            out.append("\\ufffd")
        elif rune in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[rune])
        elif rune < " " or rune in "<>&\u2028\u2029":
            out.append(f"\\u{ord(rune):04x}")
        else:
            out.append(rune)
    out.append('"')
    return "".join(out)


def go_decoded(data: bytes) -> str:
    """What a JSON decoder reads back from Go's encoding of ``data``."""
    return "".join("\ufffd" if rune is None else rune for rune in _go_runes(data))


Entry = tuple[bytes, int, int, int, int, "str | None"]


def reference_object(key: bytes, entry: Entry) -> str:
    value, flags, create, modify, lock, session = entry
    fields = [
        f'"LockIndex":{lock}',
        f'"Key":{go_json_string(key)}',
        f'"Flags":{flags}',
        '"Value":' + (f'"{base64.b64encode(value).decode()}"' if value else "null"),
    ]
    if session:
        fields.append(f'"Session":{go_json_string(session.encode("utf-8", "surrogatepass"))}')
    fields += [f'"CreateIndex":{create}', f'"ModifyIndex":{modify}']
    return "{" + ",".join(fields) + "}"


def reference_kv_json(records: Sequence[tuple[bytes, Entry]]) -> bytes:
    objects = [reference_object(key, entry) for key, entry in records]
    return ("[" + ",".join(objects) + "]").encode()


def reference_dicts(records: Sequence[tuple[bytes, Entry]]) -> list[dict[str, object]]:
    """The plain-Python way: dicts with base64 values, as json.loads should read our output."""
    dicts = []
    for key, (value, flags, create, modify, lock, session) in records:
        d: dict[str, object] = {
            "LockIndex": lock,
            "Key": go_decoded(key),
            "Flags": flags,
            "Value": base64.b64encode(value).decode() if value else None,
        }
        if session:
            d["Session"] = session
        d["CreateIndex"] = create
        d["ModifyIndex"] = modify
        dicts.append(d)
    return dicts


def stored(entry: Entry) -> bytes:
    return msgpack.packb(list(entry), use_bin_type=True)


def listing(records: Sequence[tuple[bytes, Entry]]) -> bytes:
    return pack_listing((key, stored(entry), entry[3]) for key, entry in records)


# ---- exact bytes, hand-written from Go's encoding/json rules ------------------------------


def test_the_documented_example() -> None:
    packed = listing([(b"a/b", (b"bar", 0, 5, 7, 0, None))])
    assert render_kv_json(packed) == (
        b'[{"LockIndex":0,"Key":"a/b","Flags":0,"Value":"YmFy","CreateIndex":5,"ModifyIndex":7}]'
    )


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (b"plain/key-1.txt", b'"plain/key-1.txt"'),
        (b'q"b\\', b'"q\\"b\\\\"'),
        (b"\b\f\n\r\t", b'"\\b\\f\\n\\r\\t"'),
        (b"\x00\x01\x0b\x1f\x7f", b'"\\u0000\\u0001\\u000b\\u001f\x7f"'),
        (b"<a href='x'>&amp;", b"\"\\u003ca href='x'\\u003e\\u0026amp;\""),
        ("é/日本/🙂".encode(), '"é/日本/🙂"'.encode()),
        ("\u2028\u2029\u2027".encode(), b'"\\u2028\\u2029\xe2\x80\xa7"'),
        (b"\xff", b'"\\ufffd"'),
        (b"a\xe2\x82", b'"a\\ufffd\\ufffd"'),  # cut short: one \ufffd per byte, as Go
        (b"\xc0\xaf", b'"\\ufffd\\ufffd"'),  # overlong
        (b"\xed\xa0\x80", b'"\\ufffd\\ufffd\\ufffd"'),  # a surrogate
        (b"\xf4\x90\x80\x80", b'"\\ufffd\\ufffd\\ufffd\\ufffd"'),  # above U+10FFFF
        (b"\xef\xbf\xbd", b'"\xef\xbf\xbd"'),  # a real U+FFFD stays as it is
        (b"", b'""'),
    ],
)
def test_keys_are_escaped_as_go_escapes_them(key: bytes, expected: bytes) -> None:
    packed = listing([(key, (b"", 0, 1, 1, 0, None))])
    body = render_kv_json(packed)
    assert body == b'[{"LockIndex":0,"Key":' + expected + b',"Flags":0,"Value":null,' + (
        b'"CreateIndex":1,"ModifyIndex":1}]'
    )
    assert render_keys_json([key]) == b"[" + expected + b"]"


def test_every_field_with_session_and_extreme_numbers() -> None:
    session = "adf4238a-882b-9ddc-4a9d-5b6758e4159e"
    records = [
        (b"k1", (b"\x00", U64_MAX, 1, U64_MAX, 3, session)),
        (b"k2", (b"\xfb\xff", 42, 0, 0, 0, "")),  # "" is omitted like nil (omitempty)
        (b"k3", (b"abcd", 0, 9, 10, 0, "<s&>")),
    ]
    assert render_kv_json(listing(records)) == (
        b'[{"LockIndex":3,"Key":"k1","Flags":18446744073709551615,"Value":"AA==",'
        b'"Session":"adf4238a-882b-9ddc-4a9d-5b6758e4159e",'
        b'"CreateIndex":1,"ModifyIndex":18446744073709551615},'
        b'{"LockIndex":0,"Key":"k2","Flags":42,"Value":"+/8=","CreateIndex":0,"ModifyIndex":0},'
        b'{"LockIndex":0,"Key":"k3","Flags":0,"Value":"YWJjZA==",'
        b'"Session":"\\u003cs\\u0026\\u003e","CreateIndex":9,"ModifyIndex":10}]'
    )


def test_empty_inputs() -> None:
    assert render_kv_json(b"") == b"[]"
    assert render_keys_json([]) == b"[]"
    assert pack_kv_listing_msgpack(b"") == b"\x90"


def test_single_entry_is_a_one_element_array() -> None:
    entry = (b"hello", 7, 3, 4, 1, "sess")
    body = render_kv_entry_json(b"a/<b>", stored(entry))
    assert body == reference_kv_json([(b"a/<b>", entry)])
    assert body.startswith(b'[{"LockIndex":1,"Key":"a/\\u003cb\\u003e",')


def test_inputs_may_be_bytearray_or_memoryview() -> None:
    packed = listing([(b"k", (b"v", 0, 1, 2, 0, None))])
    expected = render_kv_json(packed)
    assert render_kv_json(bytearray(packed)) == expected
    assert render_kv_json(memoryview(packed)) == expected
    assert render_kv_json(memoryview(b"xx" + packed)[2:]) == expected


# ---- round trips against the references (hypothesis) ----------------------------------

u64 = st.integers(min_value=0, max_value=U64_MAX)
entries = st.tuples(
    st.binary(max_size=300),
    u64,
    u64,
    u64,
    u64,
    st.none() | st.text(max_size=40),
)
keyed_entries = st.lists(st.tuples(st.binary(max_size=60), entries), max_size=20)


@settings(max_examples=300, deadline=None)
@given(records=keyed_entries)
def test_kv_json_matches_the_references(records: list[tuple[bytes, Entry]]) -> None:
    body = render_kv_json(listing(records))
    assert body == reference_kv_json(records)
    decoded = json.loads(body)
    assert decoded == reference_dicts(records)
    assert [list(d) for d in decoded] == [list(d) for d in reference_dicts(records)]


@settings(max_examples=200, deadline=None)
@given(records=keyed_entries)
def test_msgpack_reply_embeds_the_stored_entries(records: list[tuple[bytes, Entry]]) -> None:
    reply = pack_kv_listing_msgpack(listing(records))
    assert msgpack.unpackb(reply) == [[key, list(entry)] for key, entry in records]
    assert reply == msgpack.packb([[key, list(entry)] for key, entry in records])


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.binary(max_size=60), max_size=30))
def test_keys_json_matches_the_reference(keys: list[bytes]) -> None:
    body = render_keys_json(keys)
    assert body == ("[" + ",".join(go_json_string(k) for k in keys) + "]").encode()
    assert json.loads(body) == [go_decoded(k) for k in keys]
    assert render_packed_keys_json(pack_key_list(keys)) == body


@settings(max_examples=200, deadline=None)
@given(key=st.binary(max_size=60), entry=entries)
def test_single_entry_matches_the_listing_form(key: bytes, entry: Entry) -> None:
    assert render_kv_entry_json(key, stored(entry)) == render_kv_json(listing([(key, entry)]))


# ---- other valid msgpack encodings of the same entry ------------------------------------


def _uint_forms(n: int) -> list[bytes]:
    """Every msgpack encoding of the non-negative int n (unsigned and signed)."""
    forms = [b"\xcf" + struct.pack(">Q", n)]
    if n < 2**63:
        forms.append(b"\xd3" + struct.pack(">q", n))
    for tag, signed_tag, fmt, signed_fmt, limit in (
        (b"\xce", b"\xd2", ">I", ">i", 2**32),
        (b"\xcd", b"\xd1", ">H", ">h", 2**16),
        (b"\xcc", b"\xd0", ">B", ">b", 2**8),
    ):
        if n < limit:
            forms.append(tag + struct.pack(fmt, n))
        if n < limit // 2:
            forms.append(signed_tag + struct.pack(signed_fmt, n))
    if n < 128:
        forms.append(bytes([n]))
    return forms


@st.composite
def non_canonical_entries(draw: st.DrawFn) -> tuple[bytes, Entry]:
    value = draw(st.binary(max_size=70))
    numbers = [draw(u64) for _ in range(4)]
    session = draw(st.none() | st.text(max_size=40))
    header = draw(st.sampled_from([b"\x96", b"\xdc\x00\x06", b"\xdd\x00\x00\x00\x06"]))
    bin_width = draw(st.sampled_from([1, 2, 4]))
    out = header + {1: b"\xc4", 2: b"\xc5", 4: b"\xc6"}[bin_width]
    out += len(value).to_bytes(bin_width, "big") + value
    for n in numbers:
        out += draw(st.sampled_from(_uint_forms(n)))
    if session is None:
        out += b"\xc0"
    else:
        raw = session.encode()
        width = draw(st.sampled_from([w for w in (0, 1, 2, 4) if w or len(raw) < 32]))
        if width == 0:
            out += bytes([0xA0 | len(raw)])
        else:
            out += {1: b"\xd9", 2: b"\xda", 4: b"\xdb"}[width] + len(raw).to_bytes(width, "big")
        out += raw
    flags, create, modify, lock = numbers
    return out, (value, flags, create, modify, lock, session)


@settings(max_examples=300, deadline=None)
@given(key=st.binary(max_size=20), encoded=non_canonical_entries())
def test_any_valid_encoding_of_an_entry_renders_the_same(
    key: bytes, encoded: tuple[bytes, Entry]
) -> None:
    raw, entry = encoded
    assert msgpack.unpackb(raw) == list(entry)  # the hand encoding is right
    packed = pack_listing([(key, raw, entry[3])])
    assert render_kv_json(packed) == reference_kv_json([(key, entry)])
    reply = pack_kv_listing_msgpack(packed)
    assert reply.endswith(raw)  # embedded as stored, not re-encoded
    assert msgpack.unpackb(reply) == [[key, list(entry)]]


def test_session_bytes_that_are_not_utf8_are_escaped_like_keys() -> None:
    raw = b"\x96\xc4\x00\x00\x01\x02\x00" + b"\xa3a\xff<"
    body = render_kv_entry_json(b"k", raw)
    assert b'"Session":"a\\ufffd\\u003c"' in body


def test_large_listings_values_and_keys_use_the_wide_headers() -> None:
    many = [(b"k%05d" % i, (b"", 0, i, i, 0, None)) for i in range(70_000)]
    reply = pack_kv_listing_msgpack(listing(many))
    assert reply[:1] == b"\xdd"  # array 32
    assert len(msgpack.unpackb(reply)) == 70_000
    some = many[:20]
    assert pack_kv_listing_msgpack(listing(some))[:1] == b"\xdc"  # array 16
    big = [(b"x" * 300, (bytes(range(256)) * 300, 1, 2, 3, 4, "s" * 70_000))]
    assert render_kv_json(listing(big)) == reference_kv_json(big)
    assert msgpack.unpackb(pack_kv_listing_msgpack(listing(big))) == [[b"x" * 300, list(big[0][1])]]
    huge_key = b"y" * 70_000
    assert msgpack.unpackb(pack_kv_listing_msgpack(listing([(huge_key, big[0][1])])))[0][0] == (
        huge_key
    )


# ---- malformed input -------------------------------------------------------------------

GOOD = stored((b"v", 0, 1, 2, 0, None))


def _one_record(entry: bytes, key: bytes = b"the/key") -> bytes:
    return listing([(b"first", (b"", 0, 1, 1, 0, None))]) + pack_listing([(key, entry, 1)])


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (b"", "not a msgpack array of 6 items"),
        (msgpack.packb([b"v", 0, 1, 2, 0]), "not a msgpack array of 6 items"),
        (msgpack.packb({"a": 1}), "not a msgpack array of 6 items"),
        (b"\xdc\x00", "not a msgpack array of 6 items"),
        (msgpack.packb(["v", 0, 1, 2, 0, None]), "Value (entry item 0) is not msgpack bin"),
        (msgpack.packb([None, 0, 1, 2, 0, None]), "Value (entry item 0) is not msgpack bin"),
        (msgpack.packb([b"v", -1, 1, 2, 0, None]), "Flags (entry item 1) is not a non-negative"),
        (msgpack.packb([b"v", 0, 1.5, 2, 0, None]), "CreateIndex (entry item 2) is not"),
        (msgpack.packb([b"v", 0, 1, -(2**63), 0, None]), "ModifyIndex (entry item 3) is not"),
        (msgpack.packb([b"v", 0, 1, 2, True, None]), "LockIndex (entry item 4) is not"),
        (msgpack.packb([b"v", 0, 1, 2, 0, b"s"]), "Session (entry item 5) is not msgpack str"),
        (msgpack.packb([b"v", 0, 1, 2, 0, 7]), "Session (entry item 5) is not msgpack str"),
        (GOOD[:2], "Value (entry item 0) runs past the end of the stored entry"),
        (b"\x96\xc4\x05abc", "Value (entry item 0) runs past the end"),
        (b"\x96\xc4\x00\xcf\x00\x00", "Flags (entry item 1) runs past the end"),
        (b"\x96\xc4\x00\x00\x00\x00\x00", "Session (entry item 5) runs past the end"),
        (b"\x96\xc4\x00\x00\x00\x00\x00\xd9", "Session (entry item 5) runs past the end"),
        (b"\x96\xc4\x00\x00\x00\x00\x00\xa5ab", "Session (entry item 5) runs past the end"),
        (GOOD + b"\x00", "bytes follow the 6-item array"),
    ],
)
def test_a_bad_stored_entry_is_refused_naming_record_key_and_item(
    entry: bytes, message: str
) -> None:
    packed = _one_record(entry)
    offset = len(listing([(b"first", (b"", 0, 1, 1, 0, None))]))
    for render in (render_kv_json, pack_kv_listing_msgpack):
        with pytest.raises(ValueError, match="record 1") as caught:
            render(packed)
        assert message in str(caught.value)
        assert f"at byte {offset}" in str(caught.value)
        assert "b'the/key'" in str(caught.value)
    with pytest.raises(ValueError, match="entry for key b'the/key'") as caught:
        render_kv_entry_json(b"the/key", entry)
    assert message in str(caught.value)


def test_a_truncated_listing_is_refused() -> None:
    first = listing([(b"a", (b"v", 0, 1, 2, 0, None))])
    packed = first + listing([(b"b", (b"w", 0, 1, 2, 0, None))])
    for cut in set(range(1, len(packed))) - {len(first)}:
        with pytest.raises(
            ValueError, match=r"record [01] at byte \d+: (truncated header|key_len)"
        ):
            render_kv_json(packed[:cut])
    with pytest.raises(ValueError, match=r"record 2 at byte \d+: truncated header \(3 bytes left"):
        render_kv_json(packed + b"abc")
    with pytest.raises(ValueError, match="key_len 4294967295 \\+ value_len 0 run past the end"):
        render_kv_json(struct.pack("<IIQ", 2**32 - 1, 0, 0) + b"abc")


def test_truncated_packed_keys_are_refused() -> None:
    packed = pack_key_list([b"abc", b"de"])
    for cut in set(range(1, len(packed))) - {len(pack_key_list([b"abc"]))}:
        with pytest.raises(ValueError, match=r"packed_keys: key [01] at byte \d+: "):
            render_packed_keys_json(packed[:cut])
    with pytest.raises(ValueError, match=r"key_len 5 runs past the end \(2 bytes left"):
        render_packed_keys_json(b"\x05\x00\x00\x00ab")


def test_wrong_argument_types_name_the_argument() -> None:
    with pytest.raises(TypeError, match="packed must be bytes, not str"):
        render_kv_json("abc")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="packed must be bytes, not NoneType"):
        pack_kv_listing_msgpack(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key must be bytes, not str"):
        render_kv_entry_json("k", GOOD)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="entry must be bytes, not list"):
        render_kv_entry_json(b"k", [])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"keys\[1\] must be bytes, not str"):
        render_keys_json([b"a", "b"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"records\[0\] value must be bytes"):
        pack_listing([(b"k", "v", 1)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"records\[0\] index must be an int"):
        pack_listing([(b"k", b"v", -1)])


@settings(max_examples=500, deadline=None)
@given(garbage=st.binary(max_size=200))
def test_garbage_is_refused_or_rendered_never_crashes(garbage: bytes) -> None:
    for render in (render_kv_json, pack_kv_listing_msgpack, render_packed_keys_json):
        try:
            body = render(garbage)
        except ValueError as error:
            assert "at byte" in str(error)
            continue
        if render is pack_kv_listing_msgpack:
            msgpack.unpackb(body)
        else:
            json.loads(body)
    try:
        json.loads(render_kv_entry_json(garbage[:8], garbage[8:]))
    except ValueError as error:
        assert "entry for key" in str(error)


def test_outputs_of_every_size_and_from_many_threads_are_right() -> None:
    # Sizes around the per-thread scratch buffer's growth steps and its limit (1 MiB).
    sizes = [0, 10, 3_000, 5_000, 700_000, 900_000, 2_000_000, 20]
    records = [[(b"k", (bytes(n), 1, 2, 3, 4, None))] for n in sizes]
    expected = [reference_kv_json(r) for r in records]
    packed = [listing(r) for r in records]
    assert [render_kv_json(p) for p in packed] == expected

    failures: list[int] = []

    def render_all(rounds: int) -> None:
        for _ in range(rounds):
            for i, p in enumerate(packed):
                if render_kv_json(p) != expected[i]:
                    failures.append(i)

    threads = [threading.Thread(target=render_all, args=(3,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
