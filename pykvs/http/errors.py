"""Exceptions of the endpoints as Consul's agent/http.go answers them (both fronts)."""

from __future__ import annotations

import logging

from pykvs.acl import ACLNotFound, PermissionDenied
from pykvs.http.common import HTTPError, Reply, text_reply
from pykvs.server.acl import ACL_DISABLED, ACL_NOT_FOUND, BOOTSTRAP_NOT_ALLOWED
from pykvs.server.rpc import RPCError

log = logging.getLogger("pykvs.http")


def acl_refusal(message: str) -> tuple[int, str] | None:
    """``(status, text)`` for a server refusal that is an ACL answer, else None."""
    if message.startswith("Permission denied") or message == ACL_NOT_FOUND:
        return 403, message
    if message.startswith(BOOTSTRAP_NOT_ALLOWED):
        return 403, f"Permission denied: {message}"
    if message == ACL_DISABLED:
        return 401, message
    return None


def error_reply(exc: BaseException, method: str, path_qs: str) -> Reply:
    """An endpoint's exception as Consul's agent/http.go answers it: a status code and a
    plain-text reason (both fronts answer errors through this)."""
    if isinstance(exc, HTTPError):
        return text_reply(exc.status, exc.reason, exc.headers)
    if isinstance(exc, PermissionDenied | ACLNotFound):  # Consul answers both 403
        return text_reply(403, str(exc))
    if isinstance(exc, RPCError):  # the server's refusal (No cluster leader, lock errors, ...)
        return text_reply(*(acl_refusal(exc.message) or (500, exc.message)))
    if isinstance(exc, ValueError | TypeError):  # bad arguments found by the endpoints
        return text_reply(400, str(exc))
    log.error("http: %s %s failed", method, path_qs, exc_info=exc)
    return text_reply(500, f"internal error: {exc!r}")
