"""From a request's token secret to a compiled :class:`~pykvs.acl.authorizer.Authorizer`.

The resolver is pure logic over two look-ups the caller supplies (the server wires them to the
ACL tables of its state store): ``token_by_secret(secret)`` and ``policy_by_id(id)``.  As
Consul's resolver:

- no secret (``None`` or ``""``) means the anonymous token (the stored one if there is one,
  else the built-in one, which holds no policies);
- a secret that names no token, or an expired token, raises :class:`ACLNotFound`
  ("ACL not found", answered 403);
- links to deleted policies are skipped;
- the token's policies merge (deny > write > list > read on the same segment), then compile
  together with the default policy.

Compiled authorizers are cached by the exact policy contents (id and rules text), so a policy
update takes effect at the next request and every token holding the same policies shares one
compiled trie.  The cache is bounded (least recently used goes first).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from pykvs.acl.authorizer import ACLNotFound, Authorizer
from pykvs.acl.policy import ANONYMOUS_TOKEN, ANONYMOUS_TOKEN_SECRET, Policy, Token
from pykvs.acl.rules import Rules, merge_rules

__all__ = ["Resolver"]

TokenLookup = Callable[[str], Token | None]
PolicyLookup = Callable[[str], Policy | None]


class Resolver:
    """Resolve token secrets to authorizers; see the module docstring."""

    def __init__(
        self,
        default_allow: bool,
        token_by_secret: TokenLookup,
        policy_by_id: PolicyLookup,
        *,
        cache_size: int = 1024,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, got {cache_size}")
        self.default_allow = bool(default_allow)
        self._token_by_secret = token_by_secret
        self._policy_by_id = policy_by_id
        self._clock_ns = clock_ns
        self._cache_size = cache_size
        self._compiled: OrderedDict[tuple[tuple[str, str], ...], Authorizer] = OrderedDict()
        self._parsed: dict[tuple[str, str], Rules] = {}
        self._lock = threading.Lock()

    def token(self, secret: str | None) -> Token:
        """The token a request names (anonymous when none); ACLNotFound if unknown or expired."""
        if not secret:
            return self._token_by_secret(ANONYMOUS_TOKEN_SECRET) or ANONYMOUS_TOKEN
        if not isinstance(secret, str):
            raise TypeError(f"token secret must be str, not {type(secret).__name__}")
        token = self._token_by_secret(secret)
        if token is None and secret == ANONYMOUS_TOKEN_SECRET:
            token = ANONYMOUS_TOKEN
        if token is None or token.expired(self._clock_ns()):
            raise ACLNotFound()
        return token

    def resolve(self, secret: str | None) -> Authorizer:
        """The authorizer for the token with this secret (see :meth:`token`)."""
        return self.authorizer_for(self.token(secret))

    def authorizer_for(self, token: Token) -> Authorizer:
        """The authorizer for a token already looked up."""
        ids = dict.fromkeys(link.id for link in token.policies)  # once each, in order
        policies = [policy for policy in map(self._policy_by_id, ids) if policy is not None]
        key = tuple(sorted((p.id, p.rules) for p in policies))
        with self._lock:  # the event loop and an embedded store's reader threads share it
            compiled = self._compiled.get(key)
            if compiled is None:
                compiled = self._compile(key, policies)
            else:
                self._compiled.move_to_end(key)
        return compiled.with_accessor(token.accessor_id)

    def _compile(self, key: tuple[tuple[str, str], ...], policies: list[Policy]) -> Authorizer:
        rules = merge_rules(self._rules_of(p) for p in policies)
        compiled = Authorizer(rules, self.default_allow)
        self._compiled[key] = compiled
        if len(self._compiled) > self._cache_size:
            self._compiled.popitem(last=False)
        if len(self._parsed) > 4 * self._cache_size:  # parsed rules no cached set uses
            live = {pair for cached in self._compiled for pair in cached}
            self._parsed = {k: v for k, v in self._parsed.items() if k in live}
        return compiled

    def _rules_of(self, policy: Policy) -> Rules:
        key = (policy.id, policy.rules)
        rules = self._parsed.get(key)
        if rules is None:
            rules = self._parsed[key] = policy.parsed_rules()
        return rules
