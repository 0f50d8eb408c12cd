"""Compiled authorizers: what one token may do, answered in O(length of the name).

:class:`Authorizer` is built once from a token's merged :class:`~pykvs.acl.rules.Rules` and the
agent's default policy, then asked many times.  Its checks mirror Consul's ``acl.Authorizer``
for what pykvs serves (Consul name in brackets):

==========================  ==========================================================
``key_read(key)``           [KeyRead] read one key (GET, recurse listings entry by entry)
``key_list(prefix)``        [KeyList] list keys under a prefix (``list`` disposition)
``key_write(key)``          [KeyWrite] set, cas, lock, unlock, delete, delete-cas
``key_write_prefix(p)``     [KeyWritePrefix] delete-tree: write on ``p`` and no rule under
                            ``p`` that withholds write
``session_read(node)``      [SessionRead] read sessions of a node
``session_write(node)``     [SessionWrite] create, renew, destroy sessions of a node
``agent_read(node)``        [AgentRead] read an agent's own description (/v1/agent/self)
``operator_read()``         [OperatorRead] / ``operator_write()`` [OperatorWrite]
``acl_read()``              [ACLRead] / ``acl_write()`` [ACLWrite]; ``snapshot()`` [Snapshot]
                            needs ``acl = "write"``, as in Consul (snapshots hold secrets)
==========================  ==========================================================

Each ``require_*`` twin raises :class:`PermissionDenied` with Consul's message instead of
returning False.  ``key_read_prefix(prefix)`` (not in Consul) says whether *every* key under
``prefix`` is readable, so a listing can skip per-key filtering.

Precedence, as Consul's policy authorizer: an exact rule (``key``) on the name wins; otherwise
the longest prefix rule (``key_prefix``) that is a prefix of the name; otherwise the default
policy.  ``write`` grants list and read, ``list`` grants read, ``deny`` grants nothing.  When
several policies name the same segment the most restrictive wins (see ``merge_rules``); that
merge happens before compiling.  The default policy (``allow`` or ``deny``) never grants ACL
management: with ``allow`` a token without rules may do everything but ACLs and snapshots.

How it is fast: the rule segments of a resource form a compressed trie (a radix tree whose edges
hold whole runs of bytes).  Every node stores its answers precomputed with the default folded
in: a bit mask of granted access for the name ending there and for names passing through, and
the delete-tree and read-everything answers for prefixes ending at, inside or off the node.  A
check walks from the root comparing edge labels with ``startswith``: it touches each byte of the
name at most once and makes one Python step per trie node on the path, so its cost is O(key
length) whatever the number of rules.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from pykvs.acl.rules import DENY, LIST, READ, WRITE, Rules
from pykvs.goformat import go_quote

__all__ = [
    "ALLOW_ALL",
    "ANONYMOUS_TOKEN_ID",
    "DENY_ALL",
    "MANAGEMENT_RULES",
    "MANAGE_ALL",
    "ACLNotFound",
    "Authorizer",
    "PermissionDenied",
]

ANONYMOUS_TOKEN_ID = "00000000-0000-0000-0000-000000000002"

_R, _L, _W = 1, 2, 4  # access bits: read, list, write
_MASK = {READ: _R, LIST: _R | _L, WRITE: _R | _L | _W, DENY: 0}
_ALL = _R | _L | _W
_LEVEL_NAME = {_R: "read", _L: "list", _W: "write"}

Name = TypeVar("Name", bytes, str)


class PermissionDenied(PermissionError):
    """An ACL refused a request; ``str()`` is Consul's message (the HTTP layer answers 403)."""

    def __init__(
        self,
        accessor_id: str = "",
        resource: str = "",
        access: str = "",
        name: bytes | str | None = None,
    ) -> None:
        self.accessor_id = accessor_id
        self.resource = resource
        self.access = access
        self.name = name
        super().__init__(self._message())

    def _message(self) -> str:
        if not self.resource:
            return "Permission denied"
        anonymous = self.accessor_id == ANONYMOUS_TOKEN_ID
        who = "anonymous token" if anonymous else f"token with AccessorID '{self.accessor_id}'"
        text = f"Permission denied: {who} lacks permission '{self.resource}:{self.access}'"
        if self.name is not None:
            text += f" on {go_quote(self.name)}"
        if anonymous:
            text += (
                ". The anonymous token is used implicitly when a request does not specify a token."
            )
        return text


class ACLNotFound(PermissionError):
    """The token named by a request does not exist (or has expired); Consul answers 403."""

    def __init__(self) -> None:
        super().__init__("ACL not found")


# ----------------------------------------------------------------------------- compiled trie


class _Node(Generic[Name]):
    """A node of the compressed trie of one resource's rule segments.

    ``label`` is the run of bytes (or characters) on the edge into this node; the node stands
    for the concatenation of the labels from the root.  ``exact``/``prefix`` are the rules on
    exactly that string (build time only).  The answers below are filled in by ``_finish``.
    """

    __slots__ = (
        "at",
        "below",
        "children",
        "exact",
        "label",
        "prefix",
        "rp_at",
        "rp_mid",
        "rp_off",
        "wp_at",
        "wp_mid",
        "wp_off",
    )

    def __init__(self, label: Name) -> None:
        self.label: Name = label
        self.children: dict[object, _Node[Name]] = {}
        self.exact: str | None = None
        self.prefix: str | None = None
        self.at = self.below = 0  # masks for a name ending here / going on past here
        # key_write_prefix / key_read_prefix for a prefix that ends at this node, ends inside
        # the edge into this node, or leaves the trie right after this node.
        self.wp_at = self.wp_mid = self.wp_off = False
        self.rp_at = self.rp_mid = self.rp_off = False


def _insert(root: _Node[Name], segment: Name) -> _Node[Name]:
    """The node standing for ``segment``, splitting an edge or adding a leaf when needed."""
    node, pos, end = root, 0, len(segment)
    while pos < end:
        child = node.children.get(segment[pos])
        if child is None:
            leaf = _Node(segment[pos:])
            node.children[segment[pos]] = leaf
            return leaf
        label = child.label
        common = 1
        limit = min(len(label), end - pos)
        while common < limit and label[common] == segment[pos + common]:
            common += 1
        if common == len(label):
            node, pos = child, pos + common
            continue
        middle = _Node(label[:common])
        child.label = label[common:]
        middle.children[child.label[0]] = child
        node.children[segment[pos]] = middle
        if pos + common == end:
            return middle
        leaf = _Node(segment[pos + common :])
        middle.children[leaf.label[0]] = leaf
        return leaf
    return node


def _write_prefix(base: str | None, subtree_all_write: bool, default_allow: bool) -> bool:
    """Consul's KeyWritePrefix folded with the default: base is the governing prefix rule."""
    if base is not None and base != WRITE:
        return False
    if not subtree_all_write:
        return False
    return True if base is not None else default_allow


def _compile(
    exact: dict[str, str], prefix: dict[str, str], default_allow: bool, as_bytes: bool
) -> _Node:
    root: _Node = _Node(b"" if as_bytes else "")
    for rules, attr in ((exact, "exact"), (prefix, "prefix")):
        for segment, level in rules.items():
            name = segment.encode("utf-8", "surrogatepass") if as_bytes else segment
            setattr(_insert(root, name), attr, level)
    default_mask = _ALL if default_allow else 0
    # Top-down: each node learns the prefix rule that governs it (its own or an ancestor's).
    order: list[tuple[_Node, str | None]] = []
    stack: list[tuple[_Node, str | None]] = [(root, None)]
    while stack:
        node, inherited = stack.pop()
        order.append((node, inherited))
        own = node.prefix if node.prefix is not None else inherited
        stack.extend((child, own) for child in node.children.values())
    # Bottom-up (reverse of a pre-order): whether every rule in a subtree grants write / read.
    all_write: dict[int, bool] = {}
    all_read: dict[int, bool] = {}
    for node, inherited in reversed(order):
        levels = [lvl for lvl in (node.exact, node.prefix) if lvl is not None]
        sub_w = all(lvl == WRITE for lvl in levels) and all(
            all_write[id(c)] for c in node.children.values()
        )
        sub_r = all(_MASK[lvl] & _R for lvl in levels) and all(
            all_read[id(c)] for c in node.children.values()
        )
        all_write[id(node)], all_read[id(node)] = sub_w, sub_r
        own = node.prefix if node.prefix is not None else inherited
        node.below = _MASK[own] if own is not None else default_mask
        node.at = _MASK[node.exact] if node.exact is not None else node.below
        inherited_mask = _MASK[inherited] if inherited is not None else default_mask
        node.wp_at = _write_prefix(own, sub_w, default_allow)
        node.wp_mid = _write_prefix(inherited, sub_w, default_allow)
        node.wp_off = _write_prefix(own, True, default_allow)
        node.rp_at = bool(node.below & _R) and sub_r
        node.rp_mid = bool(inherited_mask & _R) and sub_r
        node.rp_off = bool(node.below & _R)
    return root


def _mask(root: _Node, name: bytes | str) -> int:
    """Access bits granted on ``name``: the walk that every point check makes."""
    node, pos, end = root, 0, len(name)
    while pos < end:
        child = node.children.get(name[pos])
        if child is None or not name.startswith(child.label, pos):
            return node.below
        pos += len(child.label)
        node = child
    return node.at


def _prefix_answer(root: _Node, prefix: bytes | str, write: bool) -> bool:
    """key_write_prefix (``write``) or key_read_prefix for ``prefix``."""
    node, pos, end = root, 0, len(prefix)
    while pos < end:
        child = node.children.get(prefix[pos])
        if child is None:
            break
        label = child.label
        if prefix.startswith(label, pos):
            pos += len(label)
            node = child
            continue
        if label.startswith(prefix[pos:]):  # the prefix ends inside this edge
            return child.wp_mid if write else child.rp_mid
        break
    else:
        return node.wp_at if write else node.rp_at
    return node.wp_off if write else node.rp_off


def _as_key(key: object) -> bytes:
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, bytearray | memoryview):
        return bytes(key)
    raise TypeError(f"key must be bytes or str, not {type(key).__name__}")


def _not_node(node: object) -> None:
    if not isinstance(node, str):
        raise TypeError(f"node must be str, not {type(node).__name__}")


# ------------------------------------------------------------------------------- authorizer


class Authorizer:
    """What one token may do: compiled from its merged rules and the default policy.

    Build with ``Authorizer(rules, default_allow)``; ``with_accessor(id)`` gives a copy that
    shares the compiled tries and names the token in :class:`PermissionDenied` messages (so
    one compiled authorizer can serve every token holding the same policies).  Keys are
    ``bytes`` (``str`` is encoded as UTF-8); node names are ``str``.
    """

    __slots__ = ("_acl", "_agents", "_keys", "_operator", "_sessions", "accessor_id",
                 "default_allow", "rules")

    def __init__(self, rules: Rules, default_allow: bool, accessor_id: str = "") -> None:
        if not isinstance(rules, Rules):
            raise TypeError(f"rules must be Rules, not {type(rules).__name__}")
        self.rules = rules
        self.default_allow = bool(default_allow)
        self.accessor_id = accessor_id
        self._keys = _compile(rules.key_exact, rules.key_prefix, self.default_allow, True)
        self._sessions = _compile(
            rules.session_exact, rules.session_prefix, self.default_allow, False
        )
        self._agents = _compile(rules.agent_exact, rules.agent_prefix, self.default_allow, False)
        default_mask = _ALL if self.default_allow else 0
        self._operator = _MASK[rules.operator] if rules.operator else default_mask
        # The default policy never grants ACL management (Consul's allowAll has no manage).
        self._acl = _MASK[rules.acl] if rules.acl else 0

    def with_accessor(self, accessor_id: str) -> Authorizer:
        """This authorizer, naming token ``accessor_id`` in its denials."""
        clone = object.__new__(Authorizer)
        for slot in Authorizer.__slots__:
            setattr(clone, slot, getattr(self, slot))
        clone.accessor_id = accessor_id
        return clone

    def __repr__(self) -> str:
        default = "allow" if self.default_allow else "deny"
        return f"Authorizer(accessor_id={self.accessor_id!r}, default={default})"

    # ------------------------------------------------------------------------------- keys
    def key_read(self, key: bytes) -> bool:
        if key.__class__ is not bytes:
            key = _as_key(key)
        return _mask(self._keys, key) & _R != 0

    def key_list(self, prefix: bytes) -> bool:
        if prefix.__class__ is not bytes:
            prefix = _as_key(prefix)
        return _mask(self._keys, prefix) & _L != 0

    def key_write(self, key: bytes) -> bool:
        if key.__class__ is not bytes:
            key = _as_key(key)
        return _mask(self._keys, key) & _W != 0

    def key_write_prefix(self, prefix: bytes) -> bool:
        """Delete-tree: write on ``prefix`` and no rule under it that withholds write."""
        if prefix.__class__ is not bytes:
            prefix = _as_key(prefix)
        return _prefix_answer(self._keys, prefix, True)

    def key_read_prefix(self, prefix: bytes) -> bool:
        """Whether every key under ``prefix`` is readable (False may be conservative)."""
        if prefix.__class__ is not bytes:
            prefix = _as_key(prefix)
        return _prefix_answer(self._keys, prefix, False)

    # ---------------------------------------------------------------------------- sessions
    def session_read(self, node: str) -> bool:
        if node.__class__ is not str:
            _not_node(node)
        return _mask(self._sessions, node) & _R != 0

    def session_write(self, node: str) -> bool:
        if node.__class__ is not str:
            _not_node(node)
        return _mask(self._sessions, node) & _W != 0

    def agent_read(self, node: str) -> bool:
        """Consul's AgentRead: reading the agent named ``node`` (``/v1/agent/self``)."""
        if node.__class__ is not str:
            _not_node(node)
        return _mask(self._agents, node) & _R != 0

    # ---------------------------------------------------------------- operator, acl, snapshot
    def operator_read(self) -> bool:
        return self._operator & _R != 0

    def operator_write(self) -> bool:
        return self._operator & _W != 0

    def acl_read(self) -> bool:
        return self._acl & _R != 0

    def acl_write(self) -> bool:
        return self._acl & _W != 0

    def snapshot(self) -> bool:
        return self._acl & _W != 0

    @property
    def is_management(self) -> bool:
        """Whether the token may manage ACLs (Consul's management tokens)."""
        return self._acl & _W != 0

    # ------------------------------------------------------------- the raising twins
    def _deny(self, resource: str, bit: int, name: bytes | str | None) -> PermissionDenied:
        return PermissionDenied(self.accessor_id, resource, _LEVEL_NAME[bit], name)

    def require_key_read(self, key: bytes) -> None:
        if not self.key_read(key):
            raise self._deny("key", _R, key)

    def require_key_list(self, prefix: bytes) -> None:
        if not self.key_list(prefix):
            raise self._deny("key", _L, prefix)

    def require_key_write(self, key: bytes) -> None:
        if not self.key_write(key):
            raise self._deny("key", _W, key)

    def require_key_write_prefix(self, prefix: bytes) -> None:
        if not self.key_write_prefix(prefix):
            raise self._deny("key", _W, prefix)

    def require_session_read(self, node: str) -> None:
        if not self.session_read(node):
            raise self._deny("session", _R, node)

    def require_session_write(self, node: str) -> None:
        if not self.session_write(node):
            raise self._deny("session", _W, node)

    def require_agent_read(self, node: str) -> None:
        if not self.agent_read(node):
            raise self._deny("agent", _R, node)

    def require_operator_read(self) -> None:
        if not self.operator_read():
            raise self._deny("operator", _R, None)

    def require_operator_write(self) -> None:
        if not self.operator_write():
            raise self._deny("operator", _W, None)

    def require_acl_read(self) -> None:
        if not self.acl_read():
            raise self._deny("acl", _R, None)

    def require_acl_write(self) -> None:
        if not self.acl_write():
            raise self._deny("acl", _W, None)

    def require_snapshot(self) -> None:
        # Consul names the acl resource: snapshots need acl = "write".
        if not self.snapshot():
            raise self._deny("acl", _W, None)


MANAGEMENT_RULES = Rules(
    key_prefix={"": WRITE}, session_prefix={"": WRITE}, agent_prefix={"": WRITE}, operator=WRITE,
    acl=WRITE,
)
"""What the built-in global-management policy grants, for the resources pykvs serves."""

ALLOW_ALL = Authorizer(Rules(), default_allow=True)
"""Everything but ACL management and snapshots (the ``allow`` default with no rules)."""
DENY_ALL = Authorizer(Rules(), default_allow=False)
"""Nothing at all."""
MANAGE_ALL = Authorizer(MANAGEMENT_RULES, default_allow=True)
"""Everything, ACLs included: the global-management policy (and what to use when ACLs are off)."""
