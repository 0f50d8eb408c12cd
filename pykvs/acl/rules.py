"""Consul's ACL rule language, for the resources pykvs serves.

A policy's ``Rules`` text is HCL (version 1, the dialect Consul accepts) or its JSON form::

    key_prefix "" { policy = "read" }           # every key: read
    key_prefix "foo/" { policy = "write" }      # longest prefix wins
    key "foo/bar/secret" { policy = "deny" }    # an exact rule beats any prefix rule
    session_prefix "" { policy = "write" }      # sessions, by node name
    agent_prefix "" { policy = "read" }         # agents, by node name (/v1/agent/self)
    operator = "read"
    acl = "write"                               # ACL management (and snapshots)

or ``{"key_prefix": {"": {"policy": "read"}}, "operator": "read"}``.

``parse_rules(text)`` returns :class:`Rules`; a mistake raises :class:`RulesError`, which names
the line, the column and the offending token.  Resources Consul knows but pykvs does not serve
(``node``, ``service``, ``event``, ``query``, ``keyring``, ``mesh``, ...) are accepted
and listed in ``Rules.ignored``, so a policy written for Consul still loads; any other resource
name is an error.

Several rules on the same resource and segment (in one policy, or across the policies of a
token) merge as Consul merges them: deny beats write, write beats list, list beats read
(:func:`merge_rules`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

__all__ = [
    "ACCESS_LEVELS",
    "DENY",
    "LIST",
    "READ",
    "WRITE",
    "Rules",
    "RulesError",
    "merge_rules",
    "parse_rules",
    "takes_precedence",
]

READ = "read"
LIST = "list"
WRITE = "write"
DENY = "deny"
ACCESS_LEVELS = (READ, LIST, WRITE, DENY)

_RANK = {READ: 1, LIST: 2, WRITE: 3, DENY: 4}

# Which dispositions each served resource accepts (Consul allows "list" only on keys).
_KEY_LEVELS = (READ, LIST, WRITE, DENY)
_OTHER_LEVELS = (READ, WRITE, DENY)

_SEGMENTED = {
    "key": "key_exact",
    "key_prefix": "key_prefix",
    "session": "session_exact",
    "session_prefix": "session_prefix",
    "agent": "agent_exact",
    "agent_prefix": "agent_prefix",
}
_SCALAR = ("operator", "acl")

# Consul resources pykvs does not serve: accepted (so Consul policies load), not enforced.
_IGNORED = frozenset(
    {
        "event",
        "event_prefix",
        "identity",
        "identity_prefix",
        "keyring",
        "mesh",
        "namespace",
        "namespace_prefix",
        "node",
        "node_prefix",
        "partition",
        "partition_prefix",
        "peering",
        "query",
        "query_prefix",
        "service",
        "service_prefix",
    }
)


def takes_precedence(a: str | None, b: str | None) -> bool:
    """Whether disposition ``a`` wins over ``b`` when two rules name the same thing."""
    return _RANK.get(a or "", 0) > _RANK.get(b or "", 0)


class RulesError(ValueError):
    """ACL rules that do not parse or do not validate.

    ``line`` and ``column`` are 1-based (0 when the mistake has no place, as for a wrong type
    passed in); ``token`` is the offending text as written.
    """

    def __init__(self, message: str, line: int = 0, column: int = 0, token: str = "") -> None:
        where = f"line {line}, column {column}: " if line else ""
        super().__init__(f"Failed to parse ACL rules: {where}{message}")
        self.line = line
        self.column = column
        self.token = token


@dataclass(frozen=True)
class Rules:
    """The rules of one policy (or of several, merged), by resource.

    Segments are the strings the rules name (key prefixes, node names); values are
    dispositions (``read``, ``list``, ``write``, ``deny``).  ``operator`` and ``acl`` are
    ``None`` when no rule names them.
    """

    key_exact: dict[str, str] = field(default_factory=dict)
    key_prefix: dict[str, str] = field(default_factory=dict)
    session_exact: dict[str, str] = field(default_factory=dict)
    session_prefix: dict[str, str] = field(default_factory=dict)
    agent_exact: dict[str, str] = field(default_factory=dict)
    agent_prefix: dict[str, str] = field(default_factory=dict)
    operator: str | None = None
    acl: str | None = None
    ignored: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        return not (
            self.key_exact
            or self.key_prefix
            or self.session_exact
            or self.session_prefix
            or self.agent_exact
            or self.agent_prefix
            or self.operator
            or self.acl
        )


def merge_rules(all_rules: Iterable[Rules]) -> Rules:
    """One :class:`Rules` holding every rule of ``all_rules``, merged as Consul merges policies."""
    tables: dict[str, dict[str, str]] = {name: {} for name in _SEGMENTED.values()}
    scalars: dict[str, str | None] = dict.fromkeys(_SCALAR)
    ignored: set[str] = set()
    for rules in all_rules:
        for attr, merged in tables.items():
            for segment, level in getattr(rules, attr).items():
                if takes_precedence(level, merged.get(segment)):
                    merged[segment] = level
        for name in _SCALAR:
            level = getattr(rules, name)
            if takes_precedence(level, scalars[name]):
                scalars[name] = level
        ignored.update(rules.ignored)
    return Rules(
        **tables,
        operator=scalars["operator"],
        acl=scalars["acl"],
        ignored=tuple(sorted(ignored)),
    )


# --------------------------------------------------------------------------------- tokenizer

_PUNCT = "{}[]=:,"
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "ident", "string", "number", "punct", "eof"
    value: str
    line: int
    column: int
    text: str  # as written, for error messages

    def describe(self) -> str:
        return "end of input" if self.kind == "eof" else repr(self.text)


def _name(token: _Token) -> str:
    """A name token as a message shows it: always double-quoted."""
    return token.text if token.kind == "string" else f'"{token.value}"'


def _error(message: str, token: _Token) -> RulesError:
    return RulesError(message, token.line, token.column, token.text)


def _tokenize(text: str) -> Iterator[_Token]:
    pos, line, line_start, end = 0, 1, 0, len(text)
    while pos < end:
        ch = text[pos]
        column = pos - line_start + 1
        if ch == "\n":
            pos += 1
            line, line_start = line + 1, pos
        elif ch in " \t\r\ufeff":
            pos += 1
        elif ch == "#" or text.startswith("//", pos):
            nl = text.find("\n", pos)
            pos = end if nl < 0 else nl
        elif text.startswith("/*", pos):
            close = text.find("*/", pos + 2)
            if close < 0:
                raise RulesError("unterminated /* comment", line, column, "/*")
            line += text.count("\n", pos, close)
            if "\n" in text[pos:close]:
                line_start = text.rfind("\n", pos, close) + 1
            pos = close + 2
        elif ch in _PUNCT:
            yield _Token("punct", ch, line, column, ch)
            pos += 1
        elif ch == '"':
            start = pos
            value, pos = _read_string(text, pos, line, column, line_start)
            yield _Token("string", value, line, column, text[start:pos])
        elif ch.isalpha() or ch == "_":
            start = pos
            while pos < end and (text[pos].isalnum() or text[pos] in "_-."):
                pos += 1
            word = text[start:pos]
            yield _Token("ident", word, line, column, word)
        elif ch.isdigit() or (ch == "-" and pos + 1 < end and text[pos + 1].isdigit()):
            start = pos
            pos += 1
            while pos < end and (text[pos].isalnum() or text[pos] in ".+-"):
                pos += 1
            yield _Token("number", text[start:pos], line, column, text[start:pos])
        else:
            bad = text[pos:].split(None, 1)[0][:20] if not ch.isspace() else ch
            raise RulesError(f"unexpected character {ch!r}", line, column, bad)
    yield _Token("eof", "", line, pos - line_start + 1, "")


def _read_string(text: str, pos: int, line: int, column: int, line_start: int) -> tuple[str, int]:
    """Read the string literal starting at the quote at ``pos``; return (value, position after)."""
    out: list[str] = []
    i, end = pos + 1, len(text)
    while True:
        if i >= end or text[i] == "\n":
            raise RulesError("unterminated string", line, column, text[pos:i][:40])
        ch = text[i]
        if ch == '"':
            value = "".join(out)
            lone = next((c for c in value if "\ud800" <= c <= "\udfff"), None)
            if lone is not None:
                raise RulesError(
                    f"lone surrogate \\u{ord(lone):04x} in string", line, column, text[pos : i + 1]
                )
            return value, i + 1
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        esc = text[i + 1 : i + 2]
        if esc in _ESCAPES:
            out.append(_ESCAPES[esc])
            i += 2
        elif esc in ("u", "U"):
            width = 4 if esc == "u" else 8
            digits = text[i + 2 : i + 2 + width]
            hex_run = len(digits) - len(digits.lstrip("0123456789abcdefABCDEF"))
            code = int(digits, 16) if hex_run == width else -1
            if not 0 <= code <= 0x10FFFF:
                bad = text[i : i + 2 + (hex_run if hex_run < width else width)]
                raise RulesError(f"invalid escape {bad!r} in string", line, i - line_start + 1, bad)
            if 0xDC00 <= code <= 0xDFFF and out and "\ud800" <= out[-1] <= "\udbff":
                # The second half of a JSON surrogate pair: join the two.
                code = 0x10000 + ((ord(out.pop()) - 0xD800) << 10) + (code - 0xDC00)
            out.append(chr(code))
            i += 2 + width
        else:
            bad = text[i : i + 2]
            raise RulesError(f"invalid escape {bad!r} in string", line, i - line_start + 1, bad)


# ------------------------------------------------------------------------------------ parser


@dataclass(frozen=True, slots=True)
class _Node:
    """A parsed HCL/JSON value: a scalar (``items`` is None) or an object (list of members)."""

    token: _Token  # where it starts
    items: list[tuple[_Token, _Node]] | None = None  # object members: (name token, value)
    elements: list[_Node] | None = None  # list elements


class _Parser:
    def __init__(self, text: str) -> None:
        self._tokens = _tokenize(text)
        self.tok = next(self._tokens)

    def advance(self) -> _Token:
        tok, self.tok = self.tok, next(self._tokens)
        return tok

    def at(self, punct: str) -> bool:
        return self.tok.kind == "punct" and self.tok.value == punct

    def expect(self, punct: str, context: str) -> _Token:
        if not self.at(punct):
            raise _error(f"expected {punct!r} {context}, found {self.tok.describe()}", self.tok)
        return self.advance()

    def document(self) -> _Node:
        start = self.tok
        if self.at("{"):  # the JSON form (or HCL wrapped in braces)
            self.advance()
            members = self.members(closing="}")
            self.expect(
                "}", f"to close the object opened at line {start.line}, column {start.column}"
            )
        else:
            members = self.members(closing=None)
        if self.tok.kind != "eof":
            raise _error(f"unexpected {self.tok.describe()} after the rules", self.tok)
        return _Node(start, items=members)

    def members(self, closing: str | None) -> list[tuple[_Token, _Node]]:
        members: list[tuple[_Token, _Node]] = []
        while True:
            while self.at(","):
                self.advance()
            if self.tok.kind == "eof" or (closing and self.at(closing)):
                return members
            members.append(self.member())

    def member(self) -> tuple[_Token, _Node]:
        if self.tok.kind not in ("ident", "string"):
            raise _error(f"expected a name, found {self.tok.describe()}", self.tok)
        names = [self.advance()]
        while self.tok.kind in ("ident", "string"):
            names.append(self.advance())
        if self.at("=") or self.at(":"):
            if len(names) > 1:
                raise _error(
                    f"expected '{{' after {names[0].text} {names[1].text}, found "
                    f"{self.tok.describe()}",
                    self.tok,
                )
            self.advance()
            value = self.value()
        elif self.at("{"):
            value = self.object()
        else:
            after = " ".join(n.text for n in names)
            raise _error(
                f"expected '=' or '{{' after {after}, found {self.tok.describe()}", self.tok
            )
        # `key "a" { ... }` is shorthand for `key = { "a" = { ... } }`.
        for name in reversed(names[1:]):
            value = _Node(name, items=[(name, value)])
        return names[0], value

    def object(self) -> _Node:
        start = self.expect("{", "to open a block")
        members = self.members(closing="}")
        self.expect("}", f"to close the block opened at line {start.line}, column {start.column}")
        return _Node(start, items=members)

    def value(self) -> _Node:
        tok = self.tok
        if self.at("{"):
            return self.object()
        if self.at("["):
            self.advance()
            elements: list[_Node] = []
            while not self.at("]"):
                if self.tok.kind == "eof":
                    raise _error(
                        f"expected ']' to close the list opened at line {tok.line}, "
                        f"column {tok.column}, found end of input",
                        self.tok,
                    )
                elements.append(self.value())
                if not self.at("]"):
                    self.expect(",", "between list elements")
            self.advance()
            return _Node(tok, elements=elements)
        if tok.kind in ("string", "number", "ident"):
            return _Node(self.advance())
        raise _error(f"expected a value, found {tok.describe()}", tok)


# ------------------------------------------------------------------------------- validation


def _objects(node: _Node, what: str) -> Iterator[tuple[_Token, _Node]]:
    """The members of an object value, also accepting a list of objects (HCL's JSON form)."""
    if node.items is not None:
        yield from node.items
    elif node.elements is not None:
        for element in node.elements:
            yield from _objects(element, what)
    else:
        raise _error(f"{what} must be a block, found {node.token.describe()}", node.token)


def _disposition(node: _Node, what: str, allowed: tuple[str, ...]) -> str:
    tok = node.token
    if node.items is not None or node.elements is not None or tok.kind != "string":
        raise _error(f"{what} must be a quoted string, found {tok.describe()}", tok)
    if tok.value not in allowed:
        choices = ", ".join(f'"{level}"' for level in allowed)
        raise _error(f"invalid {what} {tok.text}: must be one of {choices}", tok)
    return tok.value


def parse_rules(text: str) -> Rules:
    """Parse a policy's rules (HCL or JSON); raise :class:`RulesError` naming the mistake."""
    if not isinstance(text, str):
        raise RulesError(f"rules must be a str, not {type(text).__name__}")
    root = _Parser(text).document()
    assert root.items is not None
    tables: dict[str, dict[str, str]] = {name: {} for name in _SEGMENTED.values()}
    scalars: dict[str, str | None] = dict.fromkeys(_SCALAR)
    ignored: set[str] = set()
    for name_tok, value in root.items:
        resource = name_tok.value
        if resource in _SEGMENTED:
            levels = _KEY_LEVELS if resource.startswith("key") else _OTHER_LEVELS
            table = tables[_SEGMENTED[resource]]
            for seg_tok, body in _objects(value, resource):
                what = f"{resource} {_name(seg_tok)}"
                level = _block_policy(body, seg_tok, what, levels)
                if takes_precedence(level, table.get(seg_tok.value)):
                    table[seg_tok.value] = level
        elif resource in _SCALAR:
            level = _disposition(value, f"{resource} policy", _OTHER_LEVELS)
            if takes_precedence(level, scalars[resource]):
                scalars[resource] = level
        elif resource in _IGNORED:
            ignored.add(resource)
        else:
            raise _error(f"unknown resource {_name(name_tok)}", name_tok)
    return Rules(
        **tables,
        operator=scalars["operator"],
        acl=scalars["acl"],
        ignored=tuple(sorted(ignored)),
    )


def _block_policy(body: _Node, seg_tok: _Token, what: str, levels: tuple[str, ...]) -> str:
    level: str | None = None
    for field_tok, field_value in _objects(body, what):
        if field_tok.value != "policy":
            raise _error(f"unknown field {_name(field_tok)} in {what} (expected policy)", field_tok)
        chosen = _disposition(field_value, f"{what} policy", levels)
        if takes_precedence(chosen, level):
            level = chosen
    if level is None:
        raise _error(f"{what} has no policy", seg_tok)
    return level
