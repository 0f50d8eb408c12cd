"""Errors the state store hands back to writers, worded as Consul words them."""

from __future__ import annotations


class StateError(Exception):
    """A write that Consul refuses with an error (not a plain False)."""
