"""Exceptions of the endpoints as Consul's agent/http.go answers them (both fronts), and
the HTTP logs kept free of token secrets.

Consul logs a request's URL with every ``?token=`` value replaced by ``<hidden>``. Here every
record of the HTTP loggers (pykvs's and aiohttp's, whose parse errors quote the offending
request line or header) passes ``SecretsFilter``, which hides ``token=`` values and the values
of ``X-Consul-Token`` and ``Authorization`` headers wherever they appear, the text of the
traceback included.
"""

from __future__ import annotations

import logging
import re

from pykvs.acl import ACLNotFound, PermissionDenied
from pykvs.http.common import HTTPError, Reply, text_reply
from pykvs.server.acl import ACL_DISABLED, ACL_NOT_FOUND, BOOTSTRAP_NOT_ALLOWED
from pykvs.server.rpc import RPCError

log = logging.getLogger("pykvs.http")
HTTP_LOGGERS = ("pykvs.http", "aiohttp.server", "aiohttp.web", "aiohttp.access",
                "aiohttp.internal")
HIDDEN = "<hidden>"
_SECRETS = (  # a token= value; an X-Consul-Token or Authorization header's value, to its end
    re.compile(r"""(\btoken=)[^\s&'"\\,;}]+""", re.IGNORECASE),
    re.compile(r"""(\bx-consul-token['"]?\s*[:=,]\s*['"]?)[^\s'"\\,;}]+""", re.IGNORECASE),
    re.compile(r"""(\bauthorization['"]?\s*[:=,]\s*['"]?)[^\r\n'"\\,;}]+""", re.IGNORECASE),
)


def redact(text: str) -> str:
    """``text`` with token secrets replaced by ``<hidden>``, as Consul logs URLs."""
    for pattern in _SECRETS:
        text = pattern.sub(rf"\1{HIDDEN}", text)
    return text


class SecretsFilter(logging.Filter):
    """Hides token secrets in a record's message and traceback before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.exc_info = None  # formatters print exc_text: the exception's text, redacted
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_FILTER = SecretsFilter()


def hide_secrets_in_logs() -> None:
    """Put the filter on every HTTP logger (once; the agent's start calls it)."""
    for name in HTTP_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


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
    log.error("http: %s %s failed", method, redact(path_qs), exc_info=exc)
    return text_reply(500, f"internal error: {exc!r}")
