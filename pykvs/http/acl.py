"""``/v1/acl/*``: Consul's agent/acl_endpoint.go over the server's ``ACL.*`` endpoints.

Bootstrap, policy and token CRUD with Consul's JSON shapes (pykvs.acl.policy), and how ACL
refusals map to HTTP as Consul's agent/http.go does: "Permission denied..." and "ACL not found"
are 403, "ACL support disabled" is 401, a second bootstrap is 403 "Permission denied: ACL
bootstrap no longer allowed (reset index: N)".
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pykvs.http.common import (
    HTTPError,
    json_response,
    meta_headers,
    query_args,
    read_body,
    server_of,
    unpack_reply,
    write_args,
)
from pykvs.http.jsonbody import JSONBodyError, load_json
from pykvs.server.acl import ACL_NOT_FOUND

MAX_ACL_BODY = 1 << 20  # a policy's rules are text; Consul reads bodies of this order


async def _body(request: web.Request, what: str) -> dict[str, Any]:
    data = await read_body(request, MAX_ACL_BODY)
    if data is None:
        raise HTTPError(413, f"Request body too large, max size: {MAX_ACL_BODY} bytes")
    try:
        body = load_json(data) if data.strip() else {}
    except JSONBodyError as exc:
        raise HTTPError(400, f"{what} decoding failed: {exc}") from None
    if not isinstance(body, dict):
        raise HTTPError(400, f"{what} decoding failed: expected a JSON object")
    return body


async def _call(request: web.Request, method: str, args: dict[str, Any]) -> Any:
    return unpack_reply(await server_of(request).calls[method](args))


async def _read(request: web.Request, method: str, field: str, extra: dict[str, Any]
                ) -> web.StreamResponse:
    reply = await _call(request, method, {**query_args(request), **extra})
    if reply.get(field) is None:
        raise HTTPError(403, ACL_NOT_FOUND)
    return json_response(reply[field], headers=meta_headers(reply))


def _path_id(request: web.Request, what: str) -> str:
    value = request.match_info.get("id", "")
    if not value:
        raise HTTPError(400, f"Missing {what} ID")
    return value


# ------------------------------------------------------------------------------- bootstrap
async def bootstrap(request: web.Request) -> web.StreamResponse:
    return json_response(await _call(request, "ACL.BootstrapTokens", write_args(request)))


# -------------------------------------------------------------------------------- policies
async def policy_create(request: web.Request) -> web.StreamResponse:
    body = await _body(request, "Policy")
    if body.get("ID"):
        raise HTTPError(400, "Cannot specify an ID when creating a policy")
    reply = await _call(request, "ACL.PolicySet", {**write_args(request), "Policy": body})
    return json_response(reply)


async def policy_endpoint(request: web.Request) -> web.StreamResponse:
    policy_id = _path_id(request, "policy")
    if request.method == "GET":
        return await _read(request, "ACL.PolicyRead", "Policy", {"PolicyID": policy_id})
    if request.method == "DELETE":
        args = {**write_args(request), "PolicyID": policy_id}
        return json_response(bool(await _call(request, "ACL.PolicyDelete", args)))
    body = await _body(request, "Policy")
    if body.get("ID") and body["ID"] != policy_id:
        raise HTTPError(400, "Policy Update Failed: Policy ID in URL and payload do not match")
    body["ID"] = policy_id
    reply = await _call(request, "ACL.PolicySet", {**write_args(request), "Policy": body})
    return json_response(reply)


async def policy_by_name(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("name", "")
    if not name:
        raise HTTPError(400, "Missing policy Name")
    return await _read(request, "ACL.PolicyRead", "Policy", {"PolicyName": name})


async def policy_list(request: web.Request) -> web.StreamResponse:
    reply = await _call(request, "ACL.PolicyList", query_args(request))
    return json_response(reply["Policies"], headers=meta_headers(reply))


# ---------------------------------------------------------------------------------- tokens
async def token_create(request: web.Request) -> web.StreamResponse:
    body = await _body(request, "Token")
    args = {**write_args(request), "ACLToken": body, "Create": True}
    return json_response(await _call(request, "ACL.TokenSet", args))


async def token_self(request: web.Request) -> web.StreamResponse:
    args = query_args(request)
    return await _read(request, "ACL.TokenRead", "Token",
                       {"TokenID": args.get("Token", ""), "TokenIDType": "secret"})


async def token_endpoint(request: web.Request) -> web.StreamResponse:
    accessor = _path_id(request, "token")
    if request.method == "GET":
        return await _read(request, "ACL.TokenRead", "Token", {"TokenID": accessor})
    if request.method == "DELETE":
        args = {**write_args(request), "TokenID": accessor}
        return json_response(bool(await _call(request, "ACL.TokenDelete", args)))
    body = await _body(request, "Token")
    if body.get("AccessorID") and body["AccessorID"] != accessor:
        raise HTTPError(400, "Token Accessor ID in URL and payload do not match")
    body["AccessorID"] = accessor
    args = {**write_args(request), "ACLToken": body, "Create": False}
    return json_response(await _call(request, "ACL.TokenSet", args))


async def token_list(request: web.Request) -> web.StreamResponse:
    extra = {"Policy": request.query.get("policy", "")}
    reply = await _call(request, "ACL.TokenList", {**query_args(request), **extra})
    return json_response(reply["Tokens"], headers=meta_headers(reply))


ROUTES = [
    ("/v1/acl/bootstrap", ("PUT",), bootstrap),
    ("/v1/acl/policy", ("PUT",), policy_create),
    ("/v1/acl/policy/name/{name}", ("GET",), policy_by_name),
    ("/v1/acl/policy/{id}", ("GET", "PUT", "DELETE"), policy_endpoint),
    ("/v1/acl/policies", ("GET",), policy_list),
    ("/v1/acl/token", ("PUT",), token_create),
    ("/v1/acl/token/self", ("GET",), token_self),
    ("/v1/acl/token/{id}", ("GET", "PUT", "DELETE"), token_endpoint),
    ("/v1/acl/tokens", ("GET",), token_list),
]
