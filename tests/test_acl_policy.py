"""ACL policies and tokens (wire and JSON forms), the token resolver, and the list filters."""

from __future__ import annotations

import struct
from operator import itemgetter
from typing import NamedTuple

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pykvs.acl import (
    ANONYMOUS_TOKEN,
    ANONYMOUS_TOKEN_ID,
    GLOBAL_MANAGEMENT_POLICY,
    GLOBAL_MANAGEMENT_POLICY_ID,
    ACLNotFound,
    Authorizer,
    Policy,
    PolicyLink,
    Resolver,
    RulesError,
    Token,
    bootstrap_token,
    check_txn_ops,
    filter_entries,
    filter_key_list,
    filter_keys,
    filter_packed,
    filter_sessions,
    parse_rules,
)
from pykvs.radix import Tree
from pykvs.state.entry import DirEntry
from pykvs.state.sessions import Session


class TxnOp(NamedTuple):
    """The two fields of the state layer's TxnOp that the checks read."""

    verb: str
    key: bytes


# ------------------------------------------------------------------------ wire and JSON forms

text = st.text(max_size=12)
policies = st.builds(
    Policy,
    id=text,
    name=text,
    description=text,
    rules=text,
    datacenters=st.lists(text, max_size=3).map(tuple),
    create_index=st.integers(0, 2**64 - 1),
    modify_index=st.integers(0, 2**64 - 1),
)
tokens = st.builds(
    Token,
    accessor_id=text,
    secret_id=text,
    description=text,
    policies=st.lists(st.builds(PolicyLink, text, text), max_size=3).map(tuple),
    local=st.booleans(),
    create_time_ns=st.integers(0, 2**63 - 1),
    expiration_time_ns=st.none() | st.integers(0, 2**63 - 1),
    create_index=st.integers(0, 2**64 - 1),
    modify_index=st.integers(0, 2**64 - 1),
)


@settings(max_examples=100, deadline=None)
@given(policies, tokens)
def test_wire_round_trip(policy, token):
    assert Policy.from_wire(policy.to_wire()) == policy
    assert Policy.decode(policy.encode()) == policy
    assert Token.from_wire(token.to_wire()) == token
    assert Token.decode(token.encode()) == token
    # What msgpack hands back (lists, not tuples) decodes too.
    assert Token.from_wire(msgpack.unpackb(msgpack.packb(token.to_wire()))) == token


@pytest.mark.parametrize(
    ("wire", "says"),
    [
        ([], "policy wire form must be a sequence of 7 items"),
        (["id", "n", "d", "r", "dc", 0, 0], "bad Datacenters"),
        (["id", "n", "d", "r", [1], 0, 0], "bad Datacenters"),
        (["id", "n", "d", "r", [], -0.5, 0], "bad CreateIndex"),
        (["id", "n", "d", "r", [], True, 0], "bad CreateIndex"),
        ([None, "n", "d", "r", [], 0, 0], "bad ID"),
    ],
)
def test_bad_policy_wire_is_named(wire, says):
    with pytest.raises(ValueError, match=says):
        Policy.from_wire(wire)


@pytest.mark.parametrize(
    ("wire", "says"),
    [
        ("abc", "token wire form must be a sequence of 9 items"),
        (["a", "s", "d", [["id"]], False, 0, None, 0, 0], "bad policy link"),
        (["a", "s", "d", [], 1, 0, None, 0, 0], "bad Local"),
        (["a", "s", "d", [], False, 0, "soon", 0, 0], "bad ExpirationTime"),
        (["a", b"s", "d", [], False, 0, None, 0, 0], "bad SecretID"),
    ],
)
def test_bad_token_wire_is_named(wire, says):
    with pytest.raises(ValueError, match=says):
        Token.from_wire(wire)


def test_policy_json_and_validation():
    policy = Policy.from_json(
        {"Name": "kv-reader", "Description": "reads", "Rules": 'key_prefix "" { policy = "read" }'},
        policy_id="pid",
    ).validate()
    body = policy.to_json()
    assert body["ID"] == "pid" and body["Name"] == "kv-reader" and body["Datacenters"] is None
    assert set(body) == {
        "ID", "Name", "Description", "Rules", "Datacenters", "Hash", "CreateIndex", "ModifyIndex"
    }  # fmt: skip
    assert body["Hash"] == policy.hash != Policy("pid", "other", rules=policy.rules).hash
    with pytest.raises(ValueError, match="Invalid Policy: invalid Name 'bad name'"):
        Policy("x", "bad name").validate()
    with pytest.raises(RulesError, match="line 1, column 1: unknown resource"):
        Policy("x", "ok", rules='nope = "read"').validate()
    with pytest.raises(ValueError, match="policy Rules must be a string"):
        Policy.from_json({"Name": "n", "Rules": 5})
    with pytest.raises(ValueError, match="Datacenters must be a list of strings"):
        Policy.from_json({"Name": "n", "Datacenters": "dc1"})
    with pytest.raises(ValueError, match="must be a JSON object, not list"):
        Policy.from_json([])  # type: ignore[arg-type]
    GLOBAL_MANAGEMENT_POLICY.validate()


def test_token_json():
    now = 1_700_000_000_123_456_789
    token = Token.from_json(
        {
            "Description": "ci",
            "Policies": [{"ID": "p1"}, {"Name": "kv-reader"}],
            "ExpirationTTL": "1h",
        },
        now_ns=now,
    )
    assert token.policies == (PolicyLink("p1"), PolicyLink("", "kv-reader"))
    assert token.expiration_time_ns == now + 3600 * 10**9
    assert token.accessor_id != token.secret_id and len(token.secret_id) == 36
    body = token.to_json()
    assert body["CreateTime"] == "2023-11-14T22:13:20.123456789Z"
    assert body["ExpirationTime"] == "2023-11-14T23:13:20.123456789Z"
    assert body["Policies"] == [{"ID": "p1", "Name": ""}, {"ID": "", "Name": "kv-reader"}]
    assert token.to_json(show_secret=False)["SecretID"] == "<hidden>"
    chosen = Token.from_json(
        {"AccessorID": "acc", "SecretID": "sec", "ExpirationTime": "2030-01-01T00:00:00.5+01:00"}
    )
    assert (chosen.accessor_id, chosen.secret_id) == ("acc", "sec")
    assert chosen.expiration_time_ns == 1893452400 * 10**9 + 500_000_000
    assert "ExpirationTime" not in Token("a", "s", create_time_ns=10**9).to_json()
    assert Token("a", "s", create_time_ns=10**9).to_json()["CreateTime"] == "1970-01-01T00:00:01Z"
    for body, says in [
        ({"Policies": [{}]}, "needs an ID or a Name"),
        ({"Policies": [{"ID": 3}]}, "must be strings"),
        ({"ExpirationTTL": "1h", "ExpirationTime": "2030-01-01T00:00:00Z"}, "cannot both be set"),
        ({"ExpirationTTL": "-1s"}, "must be positive"),
        ({"ExpirationTTL": 60}, "ExpirationTTL must be Go duration text"),
        ({"ExpirationTTL": "soon"}, 'invalid duration "soon"'),
        ({"ExpirationTime": "tomorrow"}, "invalid RFC 3339 time 'tomorrow'"),
        ({"SecretID": 7}, "token SecretID must be a string"),
    ]:
        with pytest.raises(ValueError, match=says):
            Token.from_json(body)


# ----------------------------------------------------------------------------------- resolver


class Tables:
    """Token and policy tables as plain dicts, standing where the state store will."""

    def __init__(self) -> None:
        self.tokens: dict[str, Token] = {}
        self.policies: dict[str, Policy] = {GLOBAL_MANAGEMENT_POLICY_ID: GLOBAL_MANAGEMENT_POLICY}
        self.now_ns = 1_000

    def add_policy(self, policy_id: str, rules: str) -> None:
        self.policies[policy_id] = Policy(policy_id, policy_id, rules=rules)

    def add_token(self, secret: str, *policy_ids: str, expires: int | None = None) -> Token:
        token = Token(
            f"acc-{secret}",
            secret,
            policies=tuple(PolicyLink(pid) for pid in policy_ids),
            expiration_time_ns=expires,
        )
        self.tokens[secret] = token
        return token

    def resolver(self, default_allow: bool = False, cache_size: int = 8) -> Resolver:
        return Resolver(
            default_allow,
            self.tokens.get,
            self.policies.get,
            cache_size=cache_size,
            clock_ns=lambda: self.now_ns,
        )


def test_resolver_tokens_policies_and_defaults():
    tables = Tables()
    tables.add_policy("reader", 'key_prefix "" { policy = "read" }')
    tables.add_policy(
        "app", 'key_prefix "app/" { policy = "write" }\nsession_prefix "" { policy = "write" }'
    )
    tables.add_policy("no-secrets", 'key_prefix "app/secret/" { policy = "deny" }')
    root_token = bootstrap_token()
    tables.tokens[root_token.secret_id] = root_token
    tables.add_token("dev", "reader", "app", "no-secrets", "deleted-policy")
    tables.add_token("old", "reader", expires=500)
    resolver = tables.resolver()

    root = resolver.resolve(root_token.secret_id)
    assert root.is_management and root.snapshot() and root.key_write_prefix(b"")
    dev = resolver.resolve("dev")
    assert dev.accessor_id == "acc-dev"
    assert dev.key_read(b"other") and not dev.key_write(b"other")
    assert dev.key_write(b"app/x") and not dev.key_read(b"app/secret/x")
    assert not dev.key_write_prefix(b"app/") and dev.key_write_prefix(b"app/public/")
    assert dev.session_write("node1") and not dev.operator_read() and not dev.is_management
    for secret in ("made-up", "old"):  # unknown, expired
        with pytest.raises(ACLNotFound, match=r"^ACL not found$"):
            resolver.resolve(secret)
    # No token: the anonymous token, with no policies, so the default decides.
    for missing in (None, ""):
        anonymous = resolver.resolve(missing)
        assert anonymous.accessor_id == ANONYMOUS_TOKEN_ID and not anonymous.key_read(b"k")
    assert tables.resolver(default_allow=True).resolve(None).key_write(b"k")
    assert resolver.token(None) is ANONYMOUS_TOKEN
    # A stored anonymous token (given policies by an operator) wins over the built-in one.
    tables.tokens["anonymous"] = Token(
        ANONYMOUS_TOKEN_ID, "anonymous", policies=(PolicyLink("reader"),)
    )
    assert resolver.resolve(None).key_read(b"k") and resolver.resolve("anonymous").key_read(b"k")
    with pytest.raises(TypeError, match="token secret must be str, not bytes"):
        resolver.resolve(b"dev")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cache_size must be at least 1"):
        tables.resolver(cache_size=0)


def test_resolver_shares_compiled_rules_and_sees_policy_updates():
    tables = Tables()
    tables.add_policy("p", 'key "k" { policy = "read" }')
    tables.add_token("t1", "p")
    tables.add_token("t2", "p")
    resolver = tables.resolver(cache_size=2)
    one, two = resolver.resolve("t1"), resolver.resolve("t2")
    assert one.rules is two.rules and (one.accessor_id, two.accessor_id) == ("acc-t1", "acc-t2")
    assert one.key_read(b"k") and not one.key_write(b"k")
    tables.add_policy("p", 'key "k" { policy = "write" }')  # updated in place
    assert resolver.resolve("t1").key_write(b"k")
    # More policy sets than the cache holds: old ones are evicted and rebuilt when needed.
    for n in range(12):  # also past the point where unused parsed rules are dropped
        tables.add_policy(f"q{n}", f'key "q{n}" {{ policy = "write" }}')
        tables.add_token(f"s{n}", f"q{n}")
        assert resolver.resolve(f"s{n}").key_write(f"q{n}".encode())
    assert resolver.resolve("t1").key_write(b"k") and not resolver.resolve("s0").key_write(b"k")


# ------------------------------------------------------------------------------------ filters

RULES = Authorizer(
    parse_rules(
        'key_prefix "" { policy = "read" }\n'
        'key_prefix "private/" { policy = "deny" }\n'
        'key "a/hidden" { policy = "deny" }\n'
        'session_prefix "web" { policy = "read" }\n'
    ),
    default_allow=False,
)


def test_filter_entries_keys_and_sessions():
    entries = [DirEntry(k) for k in (b"a/1", b"a/hidden", b"b", b"private/x")]
    kept, filtered = filter_entries(RULES, entries)
    assert [e.key for e in kept] == [b"a/1", b"b"] and filtered
    kept, filtered = filter_entries(RULES, entries[:1] + entries[2:3])
    assert len(kept) == 2 and not filtered
    tuples = [(b"a/1", b"v", 3), (b"a/hidden", b"v", 4)]
    assert filter_entries(RULES, tuples, key=itemgetter(0)) == ([tuples[0]], True)
    # The prefix fast path hands the input back whole when everything under it is readable.
    assert filter_entries(RULES, iter(entries[2:3]), prefix=b"b") == (entries[2:3], False)
    assert filter_keys(RULES, [b"a/1", b"private/"]) == ([b"a/1"], True)
    assert filter_keys(RULES, [b"b/1", b"b/2"], prefix=b"b/") == ([b"b/1", b"b/2"], False)
    sessions = [Session("s1", node="web-1"), Session("s2", node="db-1")]
    assert filter_sessions(RULES, sessions) == ([sessions[0]], True)
    assert filter_sessions(RULES, sessions[:1]) == (sessions[:1], False)


def naive_list_keys(authz, keys, prefix, separator):
    """Consul's KVS.ListKeys loop: filter entries, then fold each at the first separator."""
    out, seen = [], set()
    readable = [k for k in keys if authz.key_read(k)]
    for key in readable:
        after = key[len(prefix) :]
        if separator and separator in after:
            folded = key[: len(prefix) + after.index(separator) + len(separator)]
            if folded not in seen:
                seen.add(folded)
                out.append(folded)
        else:
            out.append(key)
    return out, len(readable) != len(keys)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text(alphabet="ap/ivrte", max_size=8), max_size=12, unique=True),
    st.sampled_from(["", "a", "a/", "p", "private/"]),
    st.sampled_from(["", "/", "i"]),
)
def test_filter_key_list_matches_consuls_list_keys(texts, prefix, separator):
    keys = sorted(t.encode() for t in texts if t.startswith(prefix))
    got = filter_key_list(RULES, keys, prefix.encode(), separator.encode())
    assert got == naive_list_keys(RULES, keys, prefix.encode(), separator.encode())


def test_filter_key_list_hides_a_folded_directory_with_nothing_readable():
    keys = [b"a/hidden", b"b/x", b"private/1", b"private/2"]
    assert filter_key_list(RULES, keys, b"", b"/") == ([b"b/"], True)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([b"a/1", b"a/hidden", b"b", b"private/x", b"", b"c"]), st.binary(max_size=6)
    )
)
def test_filter_packed_keeps_exactly_the_readable_records(items):
    txn = Tree().txn()
    for n, (key, value) in enumerate(items.items()):
        txn.insert(key, value, n + 1)
    tree, _ = txn.commit()
    packed = tree.list_prefix_packed(b"")
    kept, filtered = filter_packed(RULES, packed)
    readable = [(k, v, i) for k, v, i in tree.list_prefix(b"") if RULES.key_read(k)]
    expected = b"".join(struct.pack("<IIQ", len(k), len(v), i) + k + v for k, v, i in readable)
    assert kept == expected
    assert filtered == (len(readable) != len(items))
    if not filtered:
        assert kept is packed  # nothing copied


def test_filter_packed_refuses_a_truncated_listing():
    record = struct.pack("<IIQ", 3, 2, 7) + b"abcde"
    with pytest.raises(ValueError, match="record at byte 0 runs past the end"):
        filter_packed(RULES, record[:-1])
    with pytest.raises(ValueError, match="record header at byte 21"):
        filter_packed(RULES, record + b"\x00")
    assert filter_packed(RULES, b"") == (b"", False)


def test_txn_ops_are_checked_one_by_one():
    authz = Authorizer(
        parse_rules(
            'key_prefix "app/" { policy = "write" }\n'
            'key "app/locked" { policy = "read" }\n'
            'key_prefix "ro/" { policy = "read" }\n'
        ),
        default_allow=False,
        accessor_id="acc",
    )
    ops = [
        TxnOp("set", b"app/a"),  # allowed
        TxnOp("set", b"ro/a"),  # write on read-only
        TxnOp("get", b"secret"),  # gets pass (their results are filtered)
        TxnOp("get-tree", b""),
        TxnOp("check-index", b"ro/a"),  # read is enough
        TxnOp("check-session", b"secret"),  # needs read
        TxnOp("check-not-exists", b"ro/b"),  # Consul asks write for this one
        TxnOp("delete-tree", b"app/"),  # app/locked is only read
        TxnOp("delete-tree", b"app/sub/"),  # allowed
        TxnOp("delete-cas", b"app/locked"),
        TxnOp("lock", b"app/b"),
    ]
    errors = check_txn_ops(authz, ops)
    assert [index for index, _ in errors] == [1, 5, 6, 7, 9]
    assert errors[0][1] == (
        "Permission denied: token with AccessorID 'acc' lacks permission 'key:write' on \"ro/a\""
    )
    assert "'key:read' on \"secret\"" in errors[1][1]
    assert "'key:write' on \"app/\"" in errors[3][1]
    assert check_txn_ops(authz, [op for n, op in enumerate(ops) if n not in (1, 5, 6, 7, 9)]) == []
