"""``pykvs acl bootstrap | policy create|list|read|delete | token create|list|read|delete``:
the consul CLI's ACL commands (same flags, same pretty output, ``-format json``) over the HTTP
API, with the HTTP flags of the other commands (``-http-addr``, ``-token``...)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from pykvs.cli.command import CommandError, command, group, positional
from pykvs.cli.flags import flag
from pykvs.cli.http_client import client_from


def _format_flag(p: argparse.ArgumentParser) -> None:
    flag(p, "format", default="pretty", choices=("pretty", "json"),
         help="output format (default: pretty)")


def _show(ns: argparse.Namespace, out: TextIO, record: Any, pretty: str) -> int:
    if ns.format == "json":
        out.write(json.dumps(record, indent=4) + "\n")
    else:
        out.write(pretty)
    return 0


POLICY_WIDTH, TOKEN_WIDTH = 14, 18  # consul's label columns ("Description:  ", ...)


def _rows(rows: list[tuple[str, str]], width: int, indent: str = "") -> str:
    return "".join(f"{indent}{(name + ':').ljust(width)}{value}".rstrip() + "\n"
                   for name, value in rows)


def format_policy(policy: dict[str, Any]) -> str:
    text = _rows([("ID", policy["ID"]), ("Name", policy["Name"]),
                  ("Description", policy.get("Description", "")),
                  ("Datacenters", ", ".join(policy.get("Datacenters") or []))], POLICY_WIDTH)
    return text + "Rules:\n" + policy.get("Rules", "") + "\n"


def format_token(token: dict[str, Any]) -> str:
    rows = [("AccessorID", token["AccessorID"]), ("SecretID", token["SecretID"]),
            ("Description", token.get("Description", "")),
            ("Local", str(token.get("Local", False)).lower()),
            ("Create Time", token.get("CreateTime", ""))]
    if token.get("ExpirationTime"):
        rows.append(("Expiration Time", token["ExpirationTime"]))
    text = _rows(rows, TOKEN_WIDTH)
    links = token.get("Policies") or []
    if links:
        text += "Policies:\n" + "".join(f"   {p['ID']} - {p['Name']}\n" for p in links)
    return text


def _rules(text: str) -> str:
    """-rules: the text, ``@file`` for a file's contents, ``-`` for stdin (as consul)."""
    if text == "-":
        return sys.stdin.read()
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as f:
                return f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"Error loading rules: {exc}") from None
    return text


def _policy_id(ns: argparse.Namespace) -> str:
    """-id, or the ID of the policy named by -name."""
    if ns.id:
        return str(ns.id)
    if not ns.name:
        raise CommandError("Must specify either the -id or -name parameters")
    policy = client_from(ns).json("GET", f"/v1/acl/policy/name/{ns.name}", read=True)
    if policy is None:
        raise CommandError(f"Error finding policy: no policy named {ns.name!r}")
    return str(policy["ID"])


def _call(ns: argparse.Namespace, failure: str, method: str, path: str,
          body: dict[str, Any] | None = None, *, read: bool = False) -> Any:
    """``method path`` on the agent (``body`` as JSON); a failure is reported as
    ``failure: <why>``, as the consul CLI words it."""
    data = json.dumps(body).encode() if body is not None else None
    try:
        return client_from(ns).json(method, path, body=data, read=read)
    except CommandError as exc:
        raise CommandError(f"{failure}: {exc}") from None


# ----------------------------------------------------------------------------- commands
def acl_bootstrap(ns: argparse.Namespace, out: TextIO) -> int:
    positional(ns, 0)
    token = _call(ns, "Failed ACL bootstrapping", "PUT", "/v1/acl/bootstrap")
    return _show(ns, out, token, format_token(token))


def policy_create(ns: argparse.Namespace, out: TextIO) -> int:
    positional(ns, 0)
    if not ns.name:
        raise CommandError("Missing required '-name' flag")
    body = {"Name": ns.name, "Description": ns.description, "Rules": _rules(ns.rules)}
    policy = _call(ns, "Failed to create new policy", "PUT", "/v1/acl/policy", body)
    return _show(ns, out, policy, format_policy(policy))


def policy_list(ns: argparse.Namespace, out: TextIO) -> int:
    positional(ns, 0)
    policies = _call(ns, "Failed to retrieve the policy list", "GET", "/v1/acl/policies",
                     read=True) or []
    pretty = "".join(
        f"{p['Name']}:\n" + _rows([("ID", p["ID"]), ("Description", p.get("Description", "")),
                                   ("Datacenters", ", ".join(p.get("Datacenters") or []))],
                                  POLICY_WIDTH, "   ")
        for p in policies)
    return _show(ns, out, policies, pretty)


def policy_read(ns: argparse.Namespace, out: TextIO) -> int:
    positional(ns, 0)
    policy_id = _policy_id(ns)
    policy = _call(ns, f"Error reading policy {policy_id!r}", "GET",
                   f"/v1/acl/policy/{policy_id}", read=True)
    return _show(ns, out, policy, format_policy(policy))


def policy_delete(ns: argparse.Namespace, out: TextIO) -> int:
    positional(ns, 0)
    policy_id = _policy_id(ns)
    _call(ns, f"Error deleting policy {policy_id!r}", "DELETE", f"/v1/acl/policy/{policy_id}")
    out.write(f"Policy {policy_id!r} deleted successfully\n")
    return 0


def token_create(ns: argparse.Namespace, out: TextIO) -> int:
    positional(ns, 0)
    links = [{"ID": pid} for pid in ns.policy_id] + [{"Name": n} for n in ns.policy_name]
    body: dict[str, Any] = {"Description": ns.description, "Policies": links,
                            "Local": ns.local}
    if ns.accessor:
        body["AccessorID"] = ns.accessor
    if ns.secret:
        body["SecretID"] = ns.secret
    if ns.expires_ttl:
        body["ExpirationTTL"] = ns.expires_ttl
    token = _call(ns, "Failed to create new token", "PUT", "/v1/acl/token", body)
    return _show(ns, out, token, format_token(token))


def token_list(ns: argparse.Namespace, out: TextIO) -> int:
    positional(ns, 0)
    tokens = _call(ns, "Failed to retrieve the token list", "GET", "/v1/acl/tokens",
                   read=True) or []
    return _show(ns, out, tokens, "\n".join(format_token(t) for t in tokens))


def token_read(ns: argparse.Namespace, out: TextIO) -> int:
    positional(ns, 0)
    if not ns.id and not ns.self:
        raise CommandError("Must specify the -id parameter")
    path = "/v1/acl/token/self" if ns.self else f"/v1/acl/token/{ns.id}"
    token = _call(ns, f"Error reading token {ns.id or 'self'!r}", "GET", path, read=True)
    return _show(ns, out, token, format_token(token))


def token_delete(ns: argparse.Namespace, out: TextIO) -> int:
    positional(ns, 0)
    if not ns.id:
        raise CommandError("Must specify the -id parameter")
    _call(ns, f"Error deleting token {ns.id!r}", "DELETE", f"/v1/acl/token/{ns.id}")
    out.write(f"Token {ns.id!r} deleted successfully\n")
    return 0


# -------------------------------------------------------------------------------- flags
def _policy_create_flags(p: argparse.ArgumentParser) -> None:
    flag(p, "name", default="", help="the new policy's name (required)")
    flag(p, "description", default="", help="a description of the policy")
    flag(p, "rules", default="", help="the rules: text, @file, or - for stdin")
    _format_flag(p)


def _policy_pick_flags(p: argparse.ArgumentParser) -> None:
    flag(p, "id", default="", help="the policy's ID")
    flag(p, "name", default="", help="the policy's name")
    _format_flag(p)


def _token_create_flags(p: argparse.ArgumentParser) -> None:
    flag(p, "description", default="", help="a description of the token")
    flag(p, "policy-id", action="append", default=[], help="a policy ID (repeatable)")
    flag(p, "policy-name", action="append", default=[], help="a policy name (repeatable)")
    flag(p, "accessor", default="", help="the AccessorID (default: random)")
    flag(p, "secret", default="", help="the SecretID (default: random)")
    flag(p, "local", action="store_true", help="a datacenter-local token")
    flag(p, "expires-ttl", default="", help="a duration after which the token expires")
    _format_flag(p)


def _token_pick_flags(p: argparse.ArgumentParser) -> None:
    flag(p, "id", default="", help="the token's AccessorID")
    flag(p, "self", action="store_true", help="read the token given with -token")
    _format_flag(p)


def register(subparsers: Any) -> None:
    """Add ``acl`` to the ``pykvs`` command's subparsers."""
    acl_sub = group(subparsers, "acl", "pykvs acl bootstrap|policy|token")
    command(acl_sub, "bootstrap", acl_bootstrap, "Bootstrap Consul's ACL system",
            _format_flag)
    policy_sub = group(acl_sub, "policy", "create|list|read|delete")
    command(policy_sub, "create", policy_create, "Create an ACL policy", _policy_create_flags)
    command(policy_sub, "list", policy_list, "List ACL policies", _format_flag)
    command(policy_sub, "read", policy_read, "Read an ACL policy", _policy_pick_flags)
    command(policy_sub, "delete", policy_delete, "Delete an ACL policy", _policy_pick_flags)
    token_sub = group(acl_sub, "token", "create|list|read|delete")
    command(token_sub, "create", token_create, "Create an ACL token", _token_create_flags)
    command(token_sub, "list", token_list, "List ACL tokens", _format_flag)
    command(token_sub, "read", token_read, "Read an ACL token", _token_pick_flags)
    command(token_sub, "delete", token_delete, "Delete an ACL token", _token_pick_flags)
