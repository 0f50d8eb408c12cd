"""ACL policies and tokens, as Consul's API shapes them, with a wire form for Raft and snapshots.

``Policy`` and ``Token`` are plain frozen records with Consul's fields in snake_case
(``accessor_id`` is Consul's ``AccessorID``); ``to_json()`` / ``from_json()`` use Consul's exact
JSON names for the HTTP layer, ``to_wire()`` / ``from_wire()`` give a tuple of primitives for
msgpack (``encode()`` / ``decode()`` pack it), which is what the FSM logs and snapshots carry.

Built in, as in Consul: the ``global-management`` policy (fixed ID ...0001, all rights) and the
anonymous token (AccessorID ...0002, SecretID ``anonymous``), used when a request names none.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

import msgpack

from pykvs.acl.authorizer import ANONYMOUS_TOKEN_ID
from pykvs.acl.rules import Rules, parse_rules
from pykvs.goformat import format_rfc3339, parse_go_duration, parse_rfc3339

__all__ = [
    "ANONYMOUS_TOKEN",
    "ANONYMOUS_TOKEN_ID",
    "ANONYMOUS_TOKEN_SECRET",
    "GLOBAL_MANAGEMENT_POLICY",
    "GLOBAL_MANAGEMENT_POLICY_ID",
    "Policy",
    "PolicyLink",
    "Token",
    "bootstrap_token",
]

GLOBAL_MANAGEMENT_POLICY_ID = "00000000-0000-0000-0000-000000000001"
ANONYMOUS_TOKEN_SECRET = "anonymous"

_POLICY_NAME = re.compile(r"^[A-Za-z0-9\-_]{1,128}$")  # Consul's validPolicyName


def _field(wire: Any, index: int, name: str, kind: type | tuple[type, ...]) -> Any:
    value = wire[index]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"bad {name} in wire form: {value!r}")
    return value


def _wire_items(wire: Any, count: int, what: str) -> Any:
    if not isinstance(wire, list | tuple) or len(wire) != count:
        raise ValueError(f"{what} wire form must be a sequence of {count} items, got {wire!r}")
    return wire


def _hash(*parts: object) -> str:
    digest = hashlib.blake2b(digest_size=32)
    digest.update(msgpack.packb(parts, use_bin_type=True))
    return base64.b64encode(digest.digest()).decode()


@dataclass(frozen=True, slots=True)
class Policy:
    """A named set of rules (Consul's ACLPolicy)."""

    id: str
    name: str
    description: str = ""
    rules: str = ""
    datacenters: tuple[str, ...] = ()
    create_index: int = 0
    modify_index: int = 0

    def parsed_rules(self) -> Rules:
        """The rules, parsed (raises RulesError if the text is not valid)."""
        return parse_rules(self.rules)

    def validate(self) -> Policy:
        """Raise ValueError (RulesError for the rules) if Consul would refuse this policy."""
        if not _POLICY_NAME.match(self.name):
            raise ValueError(f"Invalid Policy: invalid Name {self.name!r}")
        self.parsed_rules()
        return self

    @property
    def hash(self) -> str:
        return _hash(self.name, self.description, self.rules, list(self.datacenters))

    def to_wire(self) -> tuple[str, str, str, str, list[str], int, int]:
        return (
            self.id,
            self.name,
            self.description,
            self.rules,
            list(self.datacenters),
            self.create_index,
            self.modify_index,
        )

    @classmethod
    def from_wire(cls, wire: Any) -> Policy:
        _wire_items(wire, 7, "policy")
        datacenters = _field(wire, 4, "Datacenters", (list, tuple))
        if not all(isinstance(dc, str) for dc in datacenters):
            raise ValueError(f"bad Datacenters in wire form: {datacenters!r}")
        return cls(
            _field(wire, 0, "ID", str),
            _field(wire, 1, "Name", str),
            _field(wire, 2, "Description", str),
            _field(wire, 3, "Rules", str),
            tuple(datacenters),
            _field(wire, 5, "CreateIndex", int),
            _field(wire, 6, "ModifyIndex", int),
        )

    def encode(self) -> bytes:
        return msgpack.packb(self.to_wire(), use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes) -> Policy:
        return cls.from_wire(msgpack.unpackb(data, raw=False))

    def to_json(self) -> dict[str, Any]:
        """Consul's JSON for the policy (``GET /v1/acl/policy/:id``)."""
        return {
            "ID": self.id,
            "Name": self.name,
            "Description": self.description,
            "Rules": self.rules,
            "Datacenters": list(self.datacenters) or None,
            "Hash": self.hash,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }

    @classmethod
    def from_json(cls, body: dict[str, Any], policy_id: str = "") -> Policy:
        """A policy from a create/update request body; ``policy_id`` wins over ``body["ID"]``."""
        if not isinstance(body, dict):
            raise ValueError(f"policy body must be a JSON object, not {type(body).__name__}")
        fields = {"ID": str, "Name": str, "Description": str, "Rules": str}
        for name, kind in fields.items():
            if body.get(name) is not None and not isinstance(body[name], kind):
                raise ValueError(f"policy {name} must be a string")
        datacenters = body.get("Datacenters") or []
        if not isinstance(datacenters, list) or not all(isinstance(d, str) for d in datacenters):
            raise ValueError("policy Datacenters must be a list of strings")
        return cls(
            id=policy_id or body.get("ID") or "",
            name=body.get("Name") or "",
            description=body.get("Description") or "",
            rules=body.get("Rules") or "",
            datacenters=tuple(datacenters),
        )


@dataclass(frozen=True, slots=True)
class PolicyLink:
    """A token's reference to a policy (Consul's ACLTokenPolicyLink): by ID, name for show."""

    id: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class Token:
    """A bearer secret and the policies it holds (Consul's ACLToken).

    Times are Unix nanoseconds; ``expiration_time_ns`` is None for a token that never expires.
    """

    accessor_id: str
    secret_id: str
    description: str = ""
    policies: tuple[PolicyLink, ...] = ()
    local: bool = False
    create_time_ns: int = 0
    expiration_time_ns: int | None = None
    create_index: int = 0
    modify_index: int = 0

    @classmethod
    def new(
        cls,
        policies: tuple[PolicyLink, ...] | list[PolicyLink] = (),
        description: str = "",
        *,
        local: bool = False,
        ttl_ns: int | None = None,
        now_ns: int | None = None,
    ) -> Token:
        """A fresh token with random AccessorID and SecretID (make it before proposing it)."""
        now = time.time_ns() if now_ns is None else now_ns
        return cls(
            accessor_id=str(uuid.uuid4()),
            secret_id=str(uuid.uuid4()),
            description=description,
            policies=tuple(policies),
            local=local,
            create_time_ns=now,
            expiration_time_ns=None if ttl_ns is None else now + ttl_ns,
        )

    def expired(self, now_ns: int) -> bool:
        return self.expiration_time_ns is not None and now_ns >= self.expiration_time_ns

    @property
    def is_anonymous(self) -> bool:
        return self.accessor_id == ANONYMOUS_TOKEN_ID

    @property
    def hash(self) -> str:
        links = [[link.id, link.name] for link in self.policies]
        return _hash(self.description, links, self.local)

    def with_indexes(self, create_index: int, modify_index: int) -> Token:
        return replace(self, create_index=create_index, modify_index=modify_index)

    def to_wire(self) -> tuple[Any, ...]:
        return (
            self.accessor_id,
            self.secret_id,
            self.description,
            [[link.id, link.name] for link in self.policies],
            self.local,
            self.create_time_ns,
            self.expiration_time_ns,
            self.create_index,
            self.modify_index,
        )

    @classmethod
    def from_wire(cls, wire: Any) -> Token:
        _wire_items(wire, 9, "token")
        links = _field(wire, 3, "Policies", (list, tuple))
        policies = []
        for link in links:
            if (
                not isinstance(link, list | tuple)
                or len(link) != 2
                or not all(isinstance(part, str) for part in link)
            ):
                raise ValueError(f"bad policy link in wire form: {link!r}")
            policies.append(PolicyLink(link[0], link[1]))
        expiration = wire[6]
        if expiration is not None:
            expiration = _field(wire, 6, "ExpirationTime", int)
        return cls(
            accessor_id=_field(wire, 0, "AccessorID", str),
            secret_id=_field(wire, 1, "SecretID", str),
            description=_field(wire, 2, "Description", str),
            policies=tuple(policies),
            local=_field(wire, 4, "Local", bool),
            create_time_ns=_field(wire, 5, "CreateTime", int),
            expiration_time_ns=expiration,
            create_index=_field(wire, 7, "CreateIndex", int),
            modify_index=_field(wire, 8, "ModifyIndex", int),
        )

    def encode(self) -> bytes:
        return msgpack.packb(self.to_wire(), use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes) -> Token:
        return cls.from_wire(msgpack.unpackb(data, raw=False))

    def to_json(self, *, show_secret: bool = True) -> dict[str, Any]:
        """Consul's JSON for the token; ``show_secret=False`` redacts SecretID as Consul does."""
        body: dict[str, Any] = {
            "AccessorID": self.accessor_id,
            "SecretID": self.secret_id if show_secret else "<hidden>",
            "Description": self.description,
            "Policies": [{"ID": link.id, "Name": link.name} for link in self.policies] or None,
            "Local": self.local,
            "CreateTime": format_rfc3339(self.create_time_ns),
            "Hash": self.hash,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }
        if self.expiration_time_ns is not None:
            body["ExpirationTime"] = format_rfc3339(self.expiration_time_ns)
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any], *, now_ns: int | None = None) -> Token:
        """A token from a create/update body.

        AccessorID and SecretID are kept when given (Consul lets a caller choose them) and
        generated otherwise.  ``Policies`` links may name a policy by ID or by Name only; the
        caller resolves names to IDs against the policy table.  ``ExpirationTTL`` (Go duration
        text) or ``ExpirationTime`` (RFC 3339) set the expiry.
        """
        if not isinstance(body, dict):
            raise ValueError(f"token body must be a JSON object, not {type(body).__name__}")
        for name in ("AccessorID", "SecretID", "Description"):
            if body.get(name) is not None and not isinstance(body[name], str):
                raise ValueError(f"token {name} must be a string")
        links = []
        for link in body.get("Policies") or []:
            if not isinstance(link, dict) or not (link.get("ID") or link.get("Name")):
                raise ValueError(f"token policy link needs an ID or a Name: {link!r}")
            if not all(isinstance(link.get(k) or "", str) for k in ("ID", "Name")):
                raise ValueError(f"token policy link ID and Name must be strings: {link!r}")
            links.append(PolicyLink(link.get("ID") or "", link.get("Name") or ""))
        ttl, expires = body.get("ExpirationTTL"), body.get("ExpirationTime")
        if ttl and expires:
            raise ValueError("Token Expiration TTL and Expiration Time cannot both be set")
        if ttl and not isinstance(ttl, str):
            raise ValueError('token ExpirationTTL must be Go duration text such as "1h"')
        ttl_ns = parse_go_duration(ttl) if ttl else None
        if ttl_ns is not None and ttl_ns <= 0:
            raise ValueError(f"Token Expiration TTL must be positive, got {ttl!r}")
        token = cls.new(
            links,
            body.get("Description") or "",
            local=bool(body.get("Local")),
            ttl_ns=ttl_ns,
            now_ns=now_ns,
        )
        if expires:
            if not isinstance(expires, str):
                raise ValueError("token ExpirationTime must be RFC 3339 text")
            token = replace(token, expiration_time_ns=parse_rfc3339(expires))
        return replace(
            token,
            accessor_id=body.get("AccessorID") or token.accessor_id,
            secret_id=body.get("SecretID") or token.secret_id,
        )


GLOBAL_MANAGEMENT_RULES_TEXT = """\
acl = "write"
agent_prefix "" {
  policy = "write"
}
event_prefix "" {
  policy = "write"
}
key_prefix "" {
  policy = "write"
}
keyring = "write"
node_prefix "" {
  policy = "write"
}
operator = "write"
mesh = "write"
peering = "write"
query_prefix "" {
  policy = "write"
}
service_prefix "" {
  policy = "write"
  intentions = "write"
}
session_prefix "" {
  policy = "write"
}
"""

GLOBAL_MANAGEMENT_POLICY = Policy(
    id=GLOBAL_MANAGEMENT_POLICY_ID,
    name="global-management",
    description="Builtin Policy that grants unlimited access",
    rules=GLOBAL_MANAGEMENT_RULES_TEXT,
)

ANONYMOUS_TOKEN = Token(
    accessor_id=ANONYMOUS_TOKEN_ID,
    secret_id=ANONYMOUS_TOKEN_SECRET,
    description="Anonymous Token",
)


def bootstrap_token(now_ns: int | None = None) -> Token:
    """A fresh management token, as ``PUT /v1/acl/bootstrap`` creates it (once per cluster)."""
    link = PolicyLink(GLOBAL_MANAGEMENT_POLICY_ID, GLOBAL_MANAGEMENT_POLICY.name)
    return Token.new([link], "Bootstrap Token (Global Management)", now_ns=now_ns)
