"""ACLs over the HTTP API of a real ``pykvs agent --acl-enabled --acl-default-policy deny``:
bootstrap once, policy/token CRUD with Consul's shapes, the three ways to send a token, every
endpoint family with an allowed, a denied, no and a made-up token (Consul's codes and texts),
the filtered-results header, snapshot save/restore keeping the ACL tables, and py-consul with
``token=``.  One agent serves the module."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from test_cli_consul import AgentProcess

MADE_UP = "5e1c0b5e-0000-4000-8000-000000000000"


class HTTP:
    def __init__(self, agent: AgentProcess) -> None:
        self.base = f"http://{agent.http}"

    def __call__(self, method: str, path: str, body: Any = None, token: str = "",
                 how: str = "header", raw: bytes | None = None) -> tuple[int, dict, Any]:
        headers = {}
        if token and how == "header":
            headers["X-Consul-Token"] = token
        elif token and how == "bearer":
            headers["Authorization"] = f"Bearer {token}"
        elif token and how == "query":
            path += ("&" if "?" in path else "?") + f"token={token}"
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                payload = resp.read()
                status, hdrs = resp.status, dict(resp.headers)
        except urllib.error.HTTPError as exc:
            text = exc.read().decode()
            if "json" in exc.headers.get("Content-Type", ""):
                return exc.code, dict(exc.headers), json.loads(text)
            return exc.code, dict(exc.headers), text
        ctype = hdrs.get("Content-Type", "")
        return status, hdrs, json.loads(payload) if "json" in ctype else payload


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    agent = AgentProcess(tmp_path_factory.mktemp("acl-http"), "ah1", "--acl-enabled",
                         "--acl-default-policy", "deny")
    try:
        agent.wait_leader()
        http = HTTP(agent)
        status, _, root = http("PUT", "/v1/acl/bootstrap")
        assert status == 200 and root["Description"] == "Bootstrap Token (Global Management)"
        admin = root["SecretID"]
        status, _, policy = http("PUT", "/v1/acl/policy", {
            "Name": "web", "Description": "web app",
            "Rules": 'key_prefix "web/" { policy = "write" }\n'
                     'key_prefix "web/private/" { policy = "deny" }\n'
                     'session_prefix "" { policy = "write" }'}, admin)
        assert status == 200, policy
        status, _, token = http("PUT", "/v1/acl/token", {
            "Description": "web token", "Policies": [{"Name": "web"}]}, admin)
        assert status == 200, token
        for key in ("web/a", "web/b", "web/private/p", "other/o"):
            assert http("PUT", f"/v1/kv/{key}", raw=b"v", token=admin)[0] == 200
        yield {"agent": agent, "http": http, "admin": admin, "policy": policy, "token": token,
               "web": token["SecretID"]}
    finally:
        agent.stop()


def test_bootstrap_only_once_with_consuls_text(env: dict[str, Any]) -> None:
    status, _, text = env["http"]("PUT", "/v1/acl/bootstrap")
    assert status == 403
    assert text.startswith("Permission denied: ACL bootstrap no longer allowed (reset index: ")


def test_policy_and_token_crud_shapes(env: dict[str, Any]) -> None:
    http, admin, policy = env["http"], env["admin"], env["policy"]
    assert set(policy) >= {"ID", "Name", "Description", "Rules", "Hash", "CreateIndex",
                           "ModifyIndex"}
    status, _, read = http("GET", f"/v1/acl/policy/{policy['ID']}", token=admin)
    assert status == 200 and read["Rules"] == policy["Rules"]
    status, _, listed = http("GET", "/v1/acl/policies", token=admin)
    assert {p["Name"] for p in listed} == {"global-management", "web"}
    assert all("Rules" not in p for p in listed)
    # Update, conflicting names, bad rules: Consul's refusals.
    status, _, updated = http("PUT", f"/v1/acl/policy/{policy['ID']}", {
        "Name": "web", "Description": "changed", "Rules": policy["Rules"]}, admin)
    assert status == 200 and updated["Description"] == "changed"
    assert updated["CreateIndex"] == policy["CreateIndex"]
    status, _, text = http("PUT", "/v1/acl/policy", {"Name": "web"}, admin)
    assert status == 500 and "already exists" in text
    status, _, text = http("PUT", "/v1/acl/policy", {"Name": "bad", "Rules": "key {"}, admin)
    assert "Failed to parse ACL rules" in text
    # Tokens: create with a chosen secret, read (secret shown to acl:write), self, delete.
    status, _, text = http("PUT", "/v1/acl/token", {
        "Description": "temp", "SecretID": "not-a-uuid", "Policies": [{"ID": policy["ID"]}]},
        admin)
    assert (status, text) == (400, "Invalid Token: SecretID is not a valid UUID")
    chosen = "0b8e9a8c-6b4f-4f1e-9a53-2f2c1d6e7a10"
    status, _, made = http("PUT", "/v1/acl/token", {
        "Description": "temp", "SecretID": chosen,
        "Policies": [{"ID": policy["ID"]}]}, admin)
    assert status == 200 and made["SecretID"] == chosen
    assert made["Policies"] == [{"ID": policy["ID"], "Name": "web"}]
    status, _, read = http("GET", f"/v1/acl/token/{made['AccessorID']}", token=admin)
    assert read["SecretID"] == chosen
    status, _, me = http("GET", "/v1/acl/token/self", token=chosen, how="bearer")
    assert status == 200 and me["AccessorID"] == made["AccessorID"]
    status, _, tokens = http("GET", "/v1/acl/tokens", token=admin)
    assert made["AccessorID"] in {t["AccessorID"] for t in tokens}
    assert http("DELETE", f"/v1/acl/token/{made['AccessorID']}", token=admin)[2] is True
    status, _, text = http("GET", "/v1/acl/token/self", token=chosen)
    assert (status, text) == (403, "ACL not found")
    # The ACL API needs acl rights: the web token has none.
    status, _, text = http("GET", "/v1/acl/policies", token=env["web"])
    assert status == 403 and "lacks permission 'acl:read'" in text
    status, _, text = http("GET", "/v1/acl/policy/nope", token=admin)
    assert (status, text) == (403, "ACL not found")


@pytest.mark.parametrize("how", ["header", "query", "bearer"])
def test_token_from_header_query_and_bearer(env: dict[str, Any], how: str) -> None:
    status, _, body = env["http"]("GET", "/v1/kv/web/a", token=env["web"], how=how)
    assert status == 200 and body[0]["Key"] == "web/a"


def test_kv_with_allowed_denied_missing_and_made_up_tokens(env: dict[str, Any]) -> None:
    http, web = env["http"], env["web"]
    # Reads.
    assert http("GET", "/v1/kv/web/a", token=web)[0] == 200
    status, _, text = http("GET", "/v1/kv/other/o", token=web)
    assert status == 403 and text.startswith("Permission denied: token with AccessorID")
    assert "'key:read' on \"other/o\"" in text
    status, _, text = http("GET", "/v1/kv/web/a")
    assert status == 403 and "anonymous token" in text
    assert http("GET", "/v1/kv/web/a", token=MADE_UP)[:3:2] == (403, "ACL not found")
    # Listings: filtered, with the header only when a token was sent.
    status, headers, entries = http("GET", "/v1/kv/?recurse", token=web)
    assert [e["Key"] for e in entries] == ["web/a", "web/b"]
    assert headers.get("X-Consul-Results-Filtered-By-ACLs") == "true"
    status, headers, entries = http("GET", "/v1/kv/web/a?recurse", token=web)
    assert "X-Consul-Results-Filtered-By-ACLs" not in headers
    status, headers, _ = http("GET", "/v1/kv/?recurse")
    assert status == 404 and "X-Consul-Results-Filtered-By-ACLs" not in headers
    status, _, keys = http("GET", "/v1/kv/?keys&separator=/", token=web)
    assert keys == ["web/"]
    status, _, keys = http("GET", "/v1/kv/web/?keys&separator=/", token=web)
    assert keys == ["web/a", "web/b"]
    # Writes and delete-tree.
    assert http("PUT", "/v1/kv/web/c", raw=b"x", token=web)[2] is True
    status, _, text = http("PUT", "/v1/kv/other/c", raw=b"x", token=web)
    assert status == 403 and "'key:write' on \"other/c\"" in text
    assert http("PUT", "/v1/kv/web/c", raw=b"x")[0] == 403
    assert http("PUT", "/v1/kv/web/c", raw=b"x", token=MADE_UP)[0] == 403
    status, _, text = http("DELETE", "/v1/kv/web/?recurse", token=web)
    assert status == 403  # web/private/ is denied: no write on the whole prefix
    assert http("DELETE", "/v1/kv/web/c", token=web)[2] is True


def test_txn_sessions_operator_snapshot(env: dict[str, Any]) -> None:
    http, web, admin = env["http"], env["web"], env["admin"]
    ops = [{"KV": {"Verb": "set", "Key": "web/t", "Value": "MQ=="}},
           {"KV": {"Verb": "set", "Key": "other/t", "Value": "MQ=="}}]
    status, _, body = http("PUT", "/v1/txn", ops, web)
    assert status == 409 and [e["OpIndex"] for e in body["Errors"]] == [1]
    assert http("GET", "/v1/kv/web/t", token=admin)[0] == 404
    status, _, body = http("PUT", "/v1/txn", [{"KV": {"Verb": "get-tree", "Key": "web/"}}],
                           web)
    assert status == 200 and [r["KV"]["Key"] for r in body["Results"]] == ["web/a", "web/b"]
    # Sessions.
    status, _, created = http("PUT", "/v1/session/create", {"Name": "s"}, web)
    assert status == 200
    assert http("PUT", "/v1/session/create", {"Name": "s"})[0] == 403
    assert http("GET", "/v1/session/list")[2] == []
    assert [s["ID"] for s in http("GET", "/v1/session/list", token=web)[2]] == [created["ID"]]
    assert http("PUT", f"/v1/session/destroy/{created['ID']}")[0] == 403
    assert http("PUT", f"/v1/session/destroy/{created['ID']}", token=web)[2] is True
    # Operator and snapshots need operator / acl rights; status answers anyone.
    status, _, text = http("GET", "/v1/operator/raft/configuration", token=web)
    assert status == 403 and "operator:read" in text
    assert http("GET", "/v1/operator/raft/configuration", token=admin)[0] == 200
    assert http("GET", "/v1/status/leader")[0] == 200
    assert http("GET", "/v1/snapshot", token=web)[0] == 403
    status, _, archive = http("GET", "/v1/snapshot", token=admin)
    assert status == 200 and len(archive) > 0
    # A restore brings back the ACL tables of the snapshot: a token made after it is gone.
    _, _, later = http("PUT", "/v1/acl/token", {"Description": "later"}, admin)
    assert http("PUT", "/v1/snapshot", raw=archive, token=web)[0] == 403
    assert http("PUT", "/v1/snapshot", raw=archive, token=admin)[0] == 200
    assert http("GET", "/v1/kv/web/a", token=later["SecretID"])[2] == "ACL not found"
    assert http("GET", "/v1/kv/web/a", token=web)[0] == 200


def test_py_consul_with_token(env: dict[str, Any]) -> None:
    consul = pytest.importorskip("consul")
    agent = env["agent"]
    web = consul.Consul(host=agent.host, port=agent.port, token=env["web"])
    assert web.kv.put("web/pc", "1") is True
    assert web.kv.get("web/pc")[1]["Value"] == b"1"
    _, keys = web.kv.get("", keys=True)
    assert "other/o" not in keys and "web/pc" in keys
    with pytest.raises(consul.ACLPermissionDenied):
        web.kv.put("other/pc", "1")
    anonymous = consul.Consul(host=agent.host, port=agent.port)
    with pytest.raises(consul.ACLPermissionDenied):
        anonymous.kv.get("web/pc")
