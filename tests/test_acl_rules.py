"""The ACL rule language: Consul's HCL and JSON forms, merging, and errors that say where."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pykvs.acl.authorizer import MANAGEMENT_RULES
from pykvs.acl.policy import GLOBAL_MANAGEMENT_POLICY
from pykvs.acl.rules import Rules, RulesError, merge_rules, parse_rules, takes_precedence

# The example of Consul's rules reference, in both of its forms.
DOC_HCL = """
# These control access to the key/value store.
key_prefix "" {
  policy = "read"
}
key_prefix "foo/" {
  policy = "write"
}
key_prefix "foo/private/" {
  policy = "deny"
}
# Or for exact key matches
key "foo/bar/secret" {
  policy = "deny"
}

# This controls access to cluster-wide Consul operator information.
operator = "read"
"""

DOC_JSON = """
{
  "key_prefix": {
    "": {"policy": "read"},
    "foo/": {"policy": "write"},
    "foo/private/": {"policy": "deny"}
  },
  "key": {
    "foo/bar/secret": {"policy": "deny"}
  },
  "operator": "read"
}
"""

DOC_RULES = Rules(
    key_exact={"foo/bar/secret": "deny"},
    key_prefix={"": "read", "foo/": "write", "foo/private/": "deny"},
    operator="read",
)


def test_consul_doc_example_parses_the_same_in_hcl_and_json():
    assert parse_rules(DOC_HCL) == DOC_RULES
    assert parse_rules(DOC_JSON) == DOC_RULES


def test_syntax_variants():
    text = """
    /* block comment
       over lines */
    key "a" { policy = "read" }, key "b" { policy = "write" }   // trailing comment
    key = { "c" = { policy = "deny" } }
    "session_prefix" "" { "policy" = "write" }
    session web-1 { policy = "read" }
    acl = "read"
    """
    assert parse_rules(text) == Rules(
        key_exact={"a": "read", "b": "write", "c": "deny"},
        session_exact={"web-1": "read"},
        session_prefix={"": "write"},
        acl="read",
    )
    # HCL's JSON form may give a resource as a list of objects.
    listed = '{"key": [{"a": {"policy": "read"}}, {"b": [{"policy": "list"}]}]}'
    assert parse_rules(listed) == Rules(key_exact={"a": "read", "b": "list"})
    escaped = r'key "t\"ab\\\u00e9\n" { policy = "read" }'
    assert parse_rules(escaped).key_exact == {'t"ab\\\u00e9\n': "read"}
    assert parse_rules("") == Rules()
    assert parse_rules("# only a comment\n") == Rules()
    assert parse_rules("{}") == Rules()


def test_resources_pykvs_does_not_serve_are_accepted_and_listed():
    rules = parse_rules(
        'node_prefix "" { policy = "read" }\n'
        'service "web" { policy = "write" intentions = "read" }\n'
        'keyring = "write"\n'
        'key "k" { policy = "read" }\n'
    )
    assert rules.key_exact == {"k": "read"}
    assert rules.ignored == ("keyring", "node_prefix", "service")


def test_global_management_policy_grants_everything_pykvs_serves():
    rules = GLOBAL_MANAGEMENT_POLICY.parsed_rules()
    assert rules.ignored  # Consul's text names resources pykvs does not serve
    assert Rules(**{**rules.__dict__, "ignored": ()}) == MANAGEMENT_RULES


def test_same_segment_twice_merges_most_restrictive_first():
    text = """
    key "k" { policy = "read" }
    key "k" { policy = "write" }
    key_prefix "p" { policy = "write" }
    key_prefix "p" { policy = "deny" }
    key_prefix "p" { policy = "read" }
    operator = "write"
    operator = "read"
    """
    assert parse_rules(text) == Rules(
        key_exact={"k": "write"}, key_prefix={"p": "deny"}, operator="write"
    )


def test_merge_rules_across_policies():
    a = parse_rules('key_prefix "" { policy = "write" }\nkey "x" { policy = "read" }')
    b = parse_rules('key_prefix "" { policy = "read" }\nkey "x" { policy = "list" }')
    c = parse_rules('key_prefix "secret/" { policy = "deny" }\noperator = "read"')
    merged = merge_rules([a, b, c])
    assert merged == Rules(
        key_exact={"x": "list"},
        key_prefix={"": "write", "secret/": "deny"},
        operator="read",
    )
    assert merge_rules([]) == Rules()
    order = ["deny", "write", "list", "read", None]
    for i, stronger in enumerate(order):
        for weaker in order[i + 1 :]:
            assert takes_precedence(stronger, weaker)
            assert not takes_precedence(weaker, stronger)


@pytest.mark.parametrize(
    ("text", "line", "column", "token", "says"),
    [
        ('key "foo" { policy = "red" }', 1, 22, '"red"', 'invalid key "foo" policy'),
        ('key "foo" {\n  polcy = "read"\n}', 2, 3, "polcy", 'unknown field "polcy"'),
        ('kye "x" { policy = "read" }', 1, 1, "kye", 'unknown resource "kye"'),
        ('key "x" { policy = "read" }\nkey "y"\n', 3, 1, "", "expected '=' or '{'"),
        ('key "a" {\n  policy = "read"\n', 3, 1, "", "expected '}' to close the block opened"),
        ("operator = read", 1, 12, "read", "must be a quoted string"),
        ('operator = "list"', 1, 12, '"list"', "invalid operator policy"),
        ('session "n" { policy = "list" }', 1, 24, '"list"', "invalid session"),
        ('acl = "manage"', 1, 7, '"manage"', "invalid acl policy"),
        ('key "a" {}', 1, 5, '"a"', 'key "a" has no policy'),
        ('key "a\\q" { policy = "read" }', 1, 7, "\\q", "invalid escape"),
        ('key "a\\u12" { policy = "read" }', 1, 7, "\\u12", "invalid escape"),
        ('key "\\U00110000" { policy = "read" }', 1, 6, "\\U00110000", "invalid escape"),
        ('key "abc\n" { policy = "read" }', 1, 5, '"abc', "unterminated string"),
        ('key "x" { policy = "read" } @', 1, 29, "@", "unexpected character '@'"),
        ("/* never closed", 1, 1, "/*", "unterminated /* comment"),
        ('key_prefix = "read"', 1, 14, '"read"', "key_prefix must be a block"),
        ('key "x" { policy = ["read"] }', 1, 20, "[", "must be a quoted string"),
        ('key "a" "b" = { }', 1, 13, "=", "expected '{' after key \"a\""),
        ('{"key": {"a": {"policy": "read"}}', 1, 34, "", "expected '}' to close the object"),
        ('{"operator": "read"} extra', 1, 22, "extra", "unexpected 'extra' after the rules"),
        ('operator = "read" }', 1, 19, "}", "expected a name"),
        ('key "x" { policy = }', 1, 20, "}", "expected a value"),
        ('key "x" { policy = ["read" "write"] }', 1, 28, '"write"', "expected ','"),
        (
            '\n\n   key "x" { policy = "write" }\n   key "y" { policy = "wrte" }',
            4,
            23,
            '"wrte"',
            "",
        ),
        (r'key "\ud83d" { policy = "read" }', 1, 5, r'"\ud83d"', "lone surrogate"),
    ],
)
def test_errors_name_line_column_and_token(text, line, column, token, says):
    with pytest.raises(RulesError) as caught:
        parse_rules(text)
    err = caught.value
    assert (err.line, err.column, err.token) == (line, column, token), str(err)
    assert says in str(err)
    assert str(err).startswith(f"Failed to parse ACL rules: line {line}, column {column}: ")


def test_rules_must_be_text():
    with pytest.raises(RulesError, match="rules must be a str, not bytes"):
        parse_rules(b'key "a" { policy = "read" }')  # type: ignore[arg-type]


# ------------------------------------------------------------------ round trip, both forms


def rules_strategy(alphabet: str, max_rules: int = 4) -> st.SearchStrategy[Rules]:
    """Random rules naming segments over ``alphabet`` (shared with test_acl_authorizer)."""
    segments = st.text(alphabet=alphabet, max_size=5)
    key_levels = st.sampled_from(["read", "list", "write", "deny"])
    other_levels = st.sampled_from(["read", "write", "deny"])
    return st.builds(
        Rules,
        key_exact=st.dictionaries(segments, key_levels, max_size=max_rules),
        key_prefix=st.dictionaries(segments, key_levels, max_size=max_rules),
        session_exact=st.dictionaries(segments, other_levels, max_size=3),
        session_prefix=st.dictionaries(segments, other_levels, max_size=3),
        operator=st.none() | other_levels,
        acl=st.none() | other_levels,
    )


_HCL_RESOURCES = (
    ("key", "key_exact"),
    ("key_prefix", "key_prefix"),
    ("session", "session_exact"),
    ("session_prefix", "session_prefix"),
)


def to_hcl(rules: Rules) -> str:
    lines = []
    for resource, attr in _HCL_RESOURCES:
        for segment, level in getattr(rules, attr).items():
            # json.dumps writes a string literal HCL also reads (\", \\, \n, \uXXXX).
            lines.append(f'{resource} {json.dumps(segment)} {{\n  policy = "{level}"\n}}')
    for name in ("operator", "acl"):
        if getattr(rules, name):
            lines.append(f'{name} = "{getattr(rules, name)}"')
    return "\n".join(lines)


def to_json(rules: Rules) -> str:
    body: dict = {}
    for resource, attr in _HCL_RESOURCES:
        table = getattr(rules, attr)
        if table:
            body[resource] = {seg: {"policy": level} for seg, level in table.items()}
    for name in ("operator", "acl"):
        if getattr(rules, name):
            body[name] = getattr(rules, name)
    return json.dumps(body, indent=1, ensure_ascii=False)


@settings(max_examples=150, deadline=None)
@given(rules_strategy('ab/"\\\u00e9\n\t'))
def test_hcl_and_json_round_trip(rules):
    assert parse_rules(to_hcl(rules)) == rules
    assert parse_rules(to_json(rules)) == rules


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='key_prefix "{}=:,[]#/*\n\\abéread', max_size=40))
def test_garbage_either_parses_or_raises_rules_error(text):
    try:
        parse_rules(text)
    except RulesError as err:
        assert err.line >= 1 and err.column >= 1
