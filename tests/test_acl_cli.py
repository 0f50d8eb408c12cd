"""``pykvs acl ...`` against a real ``pykvs agent --acl-enabled`` (default deny): bootstrap once,
policy and token create/list/read/delete with the consul CLI's flags and output, ``-format
json``, and the token flags of the other commands."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_cli_consul import AgentProcess, cli_runner, running_agent


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    yield from running_agent(tmp_path_factory.mktemp("acl-cli"), "ac1", "--acl-enabled",
                             "--acl-default-policy", "deny")


@pytest.fixture
def run(agent: AgentProcess, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> Any:
    return cli_runner(agent, capsys, monkeypatch)


def test_acl_commands_end_to_end(run: Any, tmp_path: Path) -> None:
    code, out, err = run("acl", "bootstrap", "-format", "json")
    assert code == 0, err
    root = json.loads(out)
    admin = root["SecretID"]
    code, out, err = run("acl", "bootstrap")
    assert code == 1 and "Failed ACL bootstrapping" in err
    assert "ACL bootstrap no longer allowed" in err

    rules = tmp_path / "web.hcl"
    rules.write_text('key_prefix "web/" { policy = "write" }\n')
    code, out, err = run("acl", "policy", "create", "-token", admin, "-name", "web",
                         "-description", "web app", "-rules", f"@{rules}")
    assert code == 0, err
    assert out.startswith("ID:") and "Name:         web\n" in out
    assert 'Rules:\nkey_prefix "web/" { policy = "write" }' in out
    code, out, _ = run("acl", "policy", "list", "-token", admin)
    assert "global-management:\n   ID:" in out and "web:\n" in out
    code, out, _ = run("acl", "policy", "read", "-token", admin, "-name", "web",
                       "-format", "json")
    policy = json.loads(out)
    assert policy["Description"] == "web app"

    code, out, err = run("acl", "token", "create", "-token", admin, "-description", "w",
                         "-policy-name", "web", "-format", "json")
    assert code == 0, err
    token = json.loads(out)
    assert token["Policies"] == [{"ID": policy["ID"], "Name": "web"}]
    code, out, _ = run("acl", "token", "read", "-token", admin, "-id", token["AccessorID"])
    assert f"AccessorID:       {token['AccessorID']}\n" in out
    assert f"   {policy['ID']} - web\n" in out
    code, out, _ = run("acl", "token", "read", "-token", token["SecretID"], "-self")
    assert code == 0 and token["AccessorID"] in out
    code, out, _ = run("acl", "token", "list", "-token", admin, "-format", "json")
    assert {t["Description"] for t in json.loads(out)} >= {"w", "Anonymous Token"}

    # The token works with the other commands; without it, 403 with Consul's message.
    assert run("kv", "put", "-token", token["SecretID"], "web/a", "1")[0] == 0
    code, _, err = run("kv", "put", "-token", token["SecretID"], "other/a", "1")
    assert code == 1 and "403" in err and "Permission denied" in err
    code, _, err = run("kv", "get", "web/a")
    assert code == 1 and "anonymous token" in err
    code, _, err = run("acl", "policy", "list", "-token", token["SecretID"])
    assert code == 1 and "acl:read" in err

    code, out, _ = run("acl", "token", "delete", "-token", admin, "-id", token["AccessorID"])
    assert code == 0 and "deleted successfully" in out
    code, _, err = run("kv", "get", "-token", token["SecretID"], "web/a")
    assert code == 1 and "ACL not found" in err
    code, out, _ = run("acl", "policy", "delete", "-token", admin, "-name", "web")
    assert code == 0 and "deleted successfully" in out
    code, _, err = run("acl", "policy", "delete", "-token", admin, "-id",
                       "00000000-0000-0000-0000-000000000001")
    assert code == 1 and "builtin" in err
