"""The compiled authorizer: Consul's precedence table, and agreement with a naive reference."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_acl_rules import rules_strategy

from pykvs.acl.authorizer import (
    ALLOW_ALL,
    ANONYMOUS_TOKEN_ID,
    DENY_ALL,
    MANAGE_ALL,
    Authorizer,
    PermissionDenied,
)
from pykvs.acl.rules import Rules, merge_rules, parse_rules

# Consul's rules reference example (docs: "ACL Rules", key/value rules).
DOC_RULES = """
key_prefix "" { policy = "read" }
key_prefix "foo/" { policy = "write" }
key_prefix "foo/private/" { policy = "deny" }
key "foo/bar/secret" { policy = "deny" }
operator = "read"
"""

# Consul's acl/policy_authorizer_test.go, case "Prefer Exact Matches" (keys and sessions).
EXACT_RULES = """
key "foo" { policy = "write" }
key "football" { policy = "deny" }
key_prefix "foot" { policy = "read" }
key_prefix "fo" { policy = "read" }
session "foo" { policy = "write" }
session "football" { policy = "deny" }
session_prefix "foot" { policy = "read" }
session_prefix "fo" { policy = "read" }
"""

# The list disposition (docs: "List Policy for Keys").
LIST_RULES = """
key_prefix "" { policy = "deny" }
key_prefix "bar" { policy = "list" }
key_prefix "baz" { policy = "read" }
"""

A, D = True, False  # allowed, denied

PRECEDENCE = [
    # rules, default allow?, check, name, expected
    (DOC_RULES, False, "key_read", "bar", A),  # key_prefix "" read
    (DOC_RULES, False, "key_write", "bar", D),
    (DOC_RULES, False, "key_list", "bar", D),  # read does not grant list
    (DOC_RULES, False, "key_read", "foo/x", A),  # longest prefix: foo/ write
    (DOC_RULES, False, "key_write", "foo/x", A),
    (DOC_RULES, False, "key_list", "foo/x", A),  # write grants list
    (DOC_RULES, False, "key_read", "foo/private/x", D),  # longer prefix: deny
    (DOC_RULES, False, "key_write", "foo/private/x", D),
    (DOC_RULES, False, "key_read", "foo/private", A),  # not under foo/private/
    (DOC_RULES, False, "key_read", "foo/bar/secret", D),  # exact deny beats prefix write
    (DOC_RULES, False, "key_write", "foo/bar/secret", D),
    (DOC_RULES, False, "key_write", "foo/bar/secret2", A),  # exact matches only itself
    (DOC_RULES, False, "key_write", "foo/bar/secre", A),
    (DOC_RULES, False, "key_write", "foo", D),  # "foo" is not under "foo/"
    (DOC_RULES, True, "key_write", "other", D),  # a rule applies, so no default
    (DOC_RULES, False, "key_write_prefix", "foo/", D),  # deny rules under it
    (DOC_RULES, False, "key_write_prefix", "foo/bar/", D),  # the exact deny is under it
    (DOC_RULES, False, "key_write_prefix", "foo/bar/secret", D),
    (DOC_RULES, False, "key_write_prefix", "foo/baz/", A),  # write, nothing withheld below
    (DOC_RULES, False, "key_write_prefix", "foo/priv", D),  # foo/private/ deny is under it
    (DOC_RULES, False, "key_write_prefix", "", D),  # key_prefix "" is only read
    (DOC_RULES, False, "key_write_prefix", "zzz", D),
    (DOC_RULES, False, "operator_read", None, A),
    (DOC_RULES, False, "operator_write", None, D),
    (DOC_RULES, False, "acl_read", None, D),
    (DOC_RULES, True, "acl_read", None, D),  # the default never grants ACLs
    (DOC_RULES, True, "session_write", "node1", A),  # no session rules: default
    (DOC_RULES, False, "session_read", "node1", D),
    (EXACT_RULES, False, "key_read", "fo", A),
    (EXACT_RULES, False, "key_write", "fo", D),
    (EXACT_RULES, False, "key_read", "for", A),
    (EXACT_RULES, False, "key_write", "for", D),
    (EXACT_RULES, False, "key_read", "foo", A),
    (EXACT_RULES, False, "key_write", "foo", A),
    (EXACT_RULES, False, "key_read", "foot", A),
    (EXACT_RULES, False, "key_write", "foot", D),
    (EXACT_RULES, False, "key_read", "foot2", A),
    (EXACT_RULES, False, "key_write", "foot2", D),
    (EXACT_RULES, False, "key_read", "food", A),
    (EXACT_RULES, False, "key_write", "food", D),
    (EXACT_RULES, False, "key_read", "football", D),
    (EXACT_RULES, False, "key_write", "football", D),
    (EXACT_RULES, True, "key_read", "f", A),  # no rule covers "f": default
    (EXACT_RULES, False, "key_read", "f", D),
    (EXACT_RULES, False, "session_read", "fo", A),
    (EXACT_RULES, False, "session_write", "fo", D),
    (EXACT_RULES, False, "session_read", "foo", A),
    (EXACT_RULES, False, "session_write", "foo", A),
    (EXACT_RULES, False, "session_read", "foot2", A),
    (EXACT_RULES, False, "session_write", "foot2", D),
    (EXACT_RULES, False, "session_read", "football", D),
    (EXACT_RULES, False, "session_write", "football", D),
    (EXACT_RULES, True, "session_write", "x", A),
    (EXACT_RULES, True, "operator_write", None, A),  # allow default: operator too
    (EXACT_RULES, False, "operator_read", None, D),
    (LIST_RULES, True, "key_list", "bar/", A),
    (LIST_RULES, True, "key_read", "bar/x", A),  # list grants read
    (LIST_RULES, True, "key_write", "bar/x", D),
    (LIST_RULES, True, "key_list", "baz/", D),  # read does not grant list
    (LIST_RULES, True, "key_read", "baz/x", A),
    (LIST_RULES, True, "key_read", "qux", D),
    (LIST_RULES, True, "key_write_prefix", "bar", D),
    ("", True, "key_write_prefix", "any/", A),  # no rules: the default decides
    ("", False, "key_write_prefix", "any/", D),
    ('key "a/b" { policy = "write" }', False, "key_write_prefix", "a/", D),  # exact write only
    ('key "a/b" { policy = "write" }', True, "key_write_prefix", "a/", A),
    ('key "a/b" { policy = "read" }', True, "key_write_prefix", "a/", D),
    ('key_prefix "a/" { policy = "write" }', False, "key_write_prefix", "a/b/", A),
    ('key_prefix "a/" { policy = "write" }', False, "key_write_prefix", "a", D),
    ('key_prefix "a/" { policy = "write" }', True, "key_write_prefix", "a", A),
    ('key_prefix "a/" { policy = "read" }', True, "key_write_prefix", "a", D),
    ('key "" { policy = "write" }', False, "key_write", "", A),  # the empty key
    ('key "" { policy = "write" }', False, "key_write", "x", D),
    ('operator = "write"', False, "operator_read", None, A),
    ('acl = "read"', False, "acl_read", None, A),
    ('acl = "read"', False, "acl_write", None, D),
    ('acl = "read"', False, "snapshot", None, D),
    ('acl = "write"', False, "snapshot", None, A),
]


@pytest.mark.parametrize(("text", "default_allow", "check", "name", "expected"), PRECEDENCE)
def test_precedence_table(text, default_allow, check, name, expected):
    authz = Authorizer(parse_rules(text), default_allow)
    args = () if name is None else (name if check.startswith("session") else name.encode(),)
    assert getattr(authz, check)(*args) is expected
    require = getattr(authz, f"require_{check}", None)
    if require is not None:
        if expected:
            require(*args)
        else:
            with pytest.raises(PermissionDenied):
                require(*args)


def test_policies_merge_before_precedence():
    # One policy grants write everywhere, another denies a subtree and reads one key.
    merged = merge_rules(
        [
            parse_rules('key_prefix "" { policy = "write" }'),
            parse_rules('key_prefix "app/secret/" { policy = "deny" }'),
            parse_rules('key_prefix "" { policy = "read" }\nkey "app/x" { policy = "read" }'),
        ]
    )
    authz = Authorizer(merged, default_allow=False)
    assert authz.key_write(b"app/y")  # write beats read on the same segment ""
    assert not authz.key_read(b"app/secret/k")  # the longer prefix denies
    assert authz.key_read(b"app/x") and not authz.key_write(b"app/x")  # exact read
    assert not authz.key_write_prefix(b"app/")


def test_static_authorizers():
    for check in ("key_read", "key_list", "key_write", "key_write_prefix", "key_read_prefix"):
        assert getattr(ALLOW_ALL, check)(b"k") and getattr(MANAGE_ALL, check)(b"k")
        assert not getattr(DENY_ALL, check)(b"k")
    assert ALLOW_ALL.session_write("n") and ALLOW_ALL.operator_write()
    assert not (ALLOW_ALL.acl_read() or ALLOW_ALL.snapshot() or ALLOW_ALL.is_management)
    assert not (DENY_ALL.session_read("n") or DENY_ALL.operator_read() or DENY_ALL.acl_read())
    assert MANAGE_ALL.acl_write() and MANAGE_ALL.snapshot() and MANAGE_ALL.is_management
    assert MANAGE_ALL.key_write_prefix(b"") and MANAGE_ALL.session_write("")


def test_str_keys_are_utf8_and_bad_types_are_named():
    authz = Authorizer(parse_rules('key_prefix "caf\u00e9/" { policy = "write" }'), False)
    assert authz.key_write("caf\u00e9/x") and authz.key_write("caf\u00e9/x".encode())
    assert authz.key_write(bytearray(b"caf\xc3\xa9/x"))
    assert not authz.key_write(b"caf\xc3/x")  # a cut character is another key
    with pytest.raises(TypeError, match="key must be bytes or str, not int"):
        authz.key_read(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="node must be str, not bytes"):
        authz.session_read(b"node1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="rules must be Rules, not str"):
        Authorizer("key", True)  # type: ignore[arg-type]


def test_permission_denied_messages_are_consuls():
    authz = Authorizer(Rules(), False, accessor_id="6a1253d2-1785-24fd-91c2-f8e78c745511")
    with pytest.raises(PermissionDenied) as caught:
        authz.require_key_write(b'a"b')
    assert str(caught.value) == (
        "Permission denied: token with AccessorID '6a1253d2-1785-24fd-91c2-f8e78c745511' "
        'lacks permission \'key:write\' on "a\\"b"'
    )
    assert (caught.value.resource, caught.value.access) == ("key", "write")
    anonymous = authz.with_accessor(ANONYMOUS_TOKEN_ID)
    with pytest.raises(PermissionDenied) as caught:
        anonymous.require_operator_read()
    assert str(caught.value) == (
        "Permission denied: anonymous token lacks permission 'operator:read'. The anonymous "
        "token is used implicitly when a request does not specify a token."
    )
    with pytest.raises(PermissionDenied, match="lacks permission 'key:list' on \"p/\""):
        authz.require_key_list(b"p/")
    with pytest.raises(PermissionDenied, match="lacks permission 'session:write' on \"n1\""):
        authz.require_session_write("n1")
    with pytest.raises(PermissionDenied, match=r"lacks permission 'acl:write'$"):
        authz.require_snapshot()
    assert str(PermissionDenied()) == "Permission denied"
    # The copy shares the compiled rules and leaves the original alone.
    assert authz.accessor_id.startswith("6a12") and anonymous.rules is authz.rules


# --------------------------------------------------------- the naive reference (Consul's code)

GRANTS = {"read": {"read"}, "list": {"read", "list"}, "write": {"read", "list", "write"}}


def ref_level(exact: dict, prefix: dict, name):
    """Consul's getPolicy: the exact rule, else the longest prefix rule, else None."""
    if name in exact:
        return exact[name]
    best = max((seg for seg in prefix if name.startswith(seg)), key=len, default=None)
    return None if best is None else prefix[best]


def ref_allowed(level, need: str, default_allow: bool) -> bool:
    if level is None:
        return default_allow
    return need in GRANTS.get(level, set())


def ref_write_prefix(exact: dict, prefix: dict, name, default_allow: bool) -> bool:
    """Consul's KeyWritePrefix, chained with the default authorizer."""
    base = max((seg for seg in prefix if name.startswith(seg)), key=len, default=None)
    if base is not None and prefix[base] != "write":
        return False
    under = [lvl for table in (exact, prefix) for seg, lvl in table.items() if seg.startswith(name)]
    if any(lvl != "write" for lvl in under):
        return False
    return True if base is not None else default_allow


def ref_read_prefix(exact: dict, prefix: dict, name, default_allow: bool) -> bool:
    """Every key under ``name`` readable: the governing prefix rule and every rule under it."""
    base = max((seg for seg in prefix if name.startswith(seg)), key=len, default=None)
    if not ref_allowed(None if base is None else prefix[base], "read", default_allow):
        return False
    under = [lvl for table in (exact, prefix) for seg, lvl in table.items() if seg.startswith(name)]
    return all("read" in GRANTS.get(lvl, set()) for lvl in under)


def ref_merge(tables: list[dict]) -> dict:
    rank = {"read": 1, "list": 2, "write": 3, "deny": 4}
    merged: dict = {}
    for table in tables:
        for seg, lvl in table.items():
            if rank[lvl] > rank.get(merged.get(seg), 0):
                merged[seg] = lvl
    return merged


segment = st.text(alphabet="ab/\u00e9", max_size=4)
policy_rules = rules_strategy("ab/\u00e9", max_rules=5)
# Names drawn from the same alphabet, so they often hit, extend and cut rule segments.
names = st.lists(segment | st.text(alphabet="ab/", max_size=7), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(policy_rules, min_size=1, max_size=3), st.booleans(), names, st.binary(max_size=5))
def test_compiled_authorizer_agrees_with_naive_reference(policies, default_allow, texts, raw):
    authz = Authorizer(merge_rules(policies), default_allow)
    key_exact = {s.encode(): lvl for s, lvl in ref_merge([p.key_exact for p in policies]).items()}
    key_prefix = {s.encode(): lvl for s, lvl in ref_merge([p.key_prefix for p in policies]).items()}
    sess_exact = ref_merge([p.session_exact for p in policies])
    sess_prefix = ref_merge([p.session_prefix for p in policies])
    keys = [t.encode() for t in texts] + [raw]
    keys += [seg[:cut] for seg in list(key_exact) + list(key_prefix) for cut in (-1, None)]
    for key in keys:
        lvl = ref_level(key_exact, key_prefix, key)
        assert authz.key_read(key) == ref_allowed(lvl, "read", default_allow), key
        assert authz.key_list(key) == ref_allowed(lvl, "list", default_allow), key
        assert authz.key_write(key) == ref_allowed(lvl, "write", default_allow), key
        assert authz.key_write_prefix(key) == ref_write_prefix(
            key_exact, key_prefix, key, default_allow
        ), key
        assert authz.key_read_prefix(key) == ref_read_prefix(
            key_exact, key_prefix, key, default_allow
        ), key
    for node in texts:
        lvl = ref_level(sess_exact, sess_prefix, node)
        assert authz.session_read(node) == ref_allowed(lvl, "read", default_allow), node
        assert authz.session_write(node) == ref_allowed(lvl, "write", default_allow), node


@settings(max_examples=100, deadline=None)
@given(policy_rules, st.booleans(), st.text(alphabet="ab/", max_size=3), names)
def test_read_prefix_true_means_every_key_under_it_is_readable(rules, default_allow, prefix, tails):
    authz = Authorizer(rules, default_allow)
    if authz.key_read_prefix(prefix.encode()):
        for tail in tails:
            assert authz.key_read((prefix + tail).encode())
    if authz.key_write_prefix(prefix.encode()):
        for tail in tails:
            assert authz.key_write((prefix + tail).encode())
