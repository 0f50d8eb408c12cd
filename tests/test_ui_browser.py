"""The web UI at /ui/, driven in headless Chromium (Playwright) against a real ``pykvs agent``
process. "Another client" is a plain HTTP request from the test; every change the page makes is
checked through the HTTP API too, and every page condition is awaited with a deadline.

Needs Debian's ``chromium`` (or PYKVS_CHROMIUM=/path/to/chrome); the module skips without it.
PYKVS_UI_SCREENSHOTS=1 rewrites docs/ui-folder.png, ui-key.png, ui-conflict.png, ui-cluster.png.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("PYKVS_CHROMIUM") or shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("the UI tests need Chromium: apt-get install chromium (or set PYKVS_CHROMIUM)",
                allow_module_level=True)

from playwright.sync_api import BrowserContext, Page, expect, sync_playwright  # noqa: E402
from test_cli_consul import AgentProcess as Agent  # noqa: E402

DOCS = Path(__file__).resolve().parent.parent / "docs"
SCREENSHOTS = os.environ.get("PYKVS_UI_SCREENSHOTS") == "1"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
MAX_VALUE_SIZE = 1024  # small, so a 413 is easy to provoke from the page
TIMEOUT_MS = 15_000  # for every wait on the page

expect.set_options(timeout=TIMEOUT_MS)


def base(agent: Agent) -> str:
    return f"http://{agent.http}"


def start_agent(root: Path, name: str) -> Agent:
    started = Agent(root, name, "--max-value-size", str(MAX_VALUE_SIZE))
    try:
        started.wait_leader()
    except BaseException:
        started.stop()
        raise
    return started


def http(agent: Agent, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    """Another client: one request to the agent's HTTP API, ``(status, body)``."""
    request = urllib.request.Request(base(agent) + path, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def put(agent: Agent, key: str, value: bytes) -> None:
    assert http(agent, "PUT", f"/v1/kv/{key}", value) == (200, b"true")


def stored(agent: Agent, key: str) -> dict[str, Any] | None:
    """The entry as the API holds it (Value decoded to bytes), or None."""
    status, body = http(agent, "GET", f"/v1/kv/{key}")
    if status == 404:
        return None
    assert status == 200, body
    [entry] = json.loads(body)
    entry["Value"] = base64.b64decode(entry["Value"] or "")
    return entry


def value(agent: Agent, key: str) -> bytes | None:
    entry = stored(agent, key)
    return None if entry is None else entry["Value"]


def modify_index(agent: Agent, key: str) -> int:
    entry = stored(agent, key)
    assert entry is not None, f"{key} is not stored"
    return int(entry["ModifyIndex"])


def keys_under(agent: Agent, prefix: str) -> list[str]:
    status, body = http(agent, "GET", f"/v1/kv/{prefix}?keys")
    return [] if status == 404 else json.loads(body)


def screenshot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        page.screenshot(path=str(DOCS / f"ui-{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    started = start_agent(tmp_path_factory.mktemp("ui-agent"), "ui1")
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh --user-data-dir
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1100, "height": 700})
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    """A fresh tab (its own sessionStorage); fails the test if the page threw an error."""
    tab = browser.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield tab
    finally:
        tab.close()
    assert errors == [], errors


def open_view(page: Page, agent: Agent, hash_path: str) -> None:
    page.goto(f"{base(agent)}/ui/#{hash_path}")
    # A marker that survives only while the page is not reloaded.
    page.evaluate("window.sameDocument = true")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.sameDocument === true"), "the page was reloaded"


def row(page: Page, key: str) -> Any:
    return page.locator(f'#folder-list li[data-key="{key}"]')


def test_root_redirects_to_the_page_which_loads_nothing_from_elsewhere(
        page: Page, agent: Agent) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(base(agent) + "/")
    expect(page).to_have_url(f"{base(agent)}/ui/")
    expect(page.locator("#status")).to_contain_text("dc1 · agent ui1 · leader 127.0.0.1:")
    expect(page.locator("#folder-footer")).to_contain_text("live")
    assert requested and all(url.startswith(base(agent) + "/") for url in requested), requested


def test_create_a_key_and_see_it_in_the_folder_and_key_views(page: Page, agent: Agent) -> None:
    put(agent, "create/other", b"plain text")
    open_view(page, agent, "/kv/create/")
    expect(row(page, "create/other")).to_be_visible()
    page.click("#create-button")
    page.fill("#key-name", "settings.json")
    page.fill("#value-input", '{"replicas": 3, "zones": ["a", "b"]}')
    page.fill("#flags-input", "42")
    page.click("#save-button")
    expect(page.locator("#notice")).to_have_text("Created key create/settings.json.")
    expect(row(page, "create/settings.json")).to_be_visible()
    entry = stored(agent, "create/settings.json")
    assert entry is not None
    assert entry["Value"] == b'{"replicas": 3, "zones": ["a", "b"]}' and entry["Flags"] == 42
    # a folder made from the same form is a key ending in "/", with an empty value
    page.click("#create-button")
    page.fill("#key-name", "nested/")
    page.click("#save-button")
    expect(page.locator(".crumbs .here")).to_have_text("nested")
    assert value(agent, "create/nested/") == b""
    page.click('.crumbs a[href="#/kv/create/"]')
    expect(row(page, "create/nested/")).to_be_visible()
    screenshot(page, "folder")

    page.click("text=settings.json")
    expect(page.locator("#key-title")).to_have_text("create/settings.json")
    expect(page.locator("#value-kind")).to_have_text("JSON, 36 bytes")
    expect(page.locator("#value")).to_have_text(
        '{\n  "replicas": 3,\n  "zones": [\n    "a",\n    "b"\n  ]\n}')
    expect(page.locator("#key-flags")).to_have_text("42")
    expect(page.locator("#key-modify-index")).to_have_text(str(entry["ModifyIndex"]))
    screenshot(page, "key")

    # creating a key that exists is refused: the form never overwrites
    open_view(page, agent, "/create/create/")
    page.fill("#key-name", "other")
    page.fill("#value-input", "would overwrite")
    page.click("#save-button")
    expect(page.locator("#error")).to_contain_text(
        "create/other already exists: open it to edit it instead.")
    assert value(agent, "create/other") == b"plain text"


def test_values_show_as_text_json_or_hex(page: Page, agent: Agent) -> None:
    put(agent, "values/bin", b"\x00\x01\xffabc")
    put(agent, "values/text", "grüße\nline two".encode())
    open_view(page, agent, "/kv/values/bin")
    expect(page.locator("#value-kind")).to_have_text("binary (hex), 6 bytes")
    expect(page.locator("#value")).to_have_text(
        "00000000  00 01 ff 61 62 63" + " " * 31 + "|...abc|")
    # a binary value is edited as hex, and hex is written back as bytes
    page.click("#edit-button")
    expect(page.locator("#value-mode")).to_have_value("hex")
    page.fill("#value-input", "de ad be ef 00")
    page.click("#save-button")
    expect(page.locator("#value-kind")).to_have_text("binary (hex), 5 bytes")
    assert value(agent, "values/bin") == b"\xde\xad\xbe\xef\x00"
    open_view(page, agent, "/kv/values/text")
    expect(page.locator("#value-kind")).to_have_text("text, 16 bytes")
    expect(page.locator("#value")).to_have_text("grüße\nline two")


def test_key_view_shows_the_session_holding_the_key(page: Page, agent: Agent) -> None:
    status, body = http(agent, "PUT", "/v1/session/create", b'{"Name": "deployer", "TTL": "60s"}')
    assert status == 200, body
    session = json.loads(body)["ID"]
    assert http(agent, "PUT", f"/v1/kv/locks/deploy?acquire={session}", b"me") == (200, b"true")
    open_view(page, agent, "/kv/locks/deploy")
    expect(page.locator("#key-session")).to_have_text(
        f'{session} — "deployer" on node ui1, behavior release, TTL 60s')
    assert http(agent, "PUT", f"/v1/kv/locks/deploy?release={session}") == (200, b"true")
    expect(page.locator("#key-session")).to_have_text("none")


def test_keys_with_url_special_characters(page: Page, agent: Agent) -> None:
    name = "a b?c#d%e+f&g"
    open_view(page, agent, "/create/odd/")
    page.fill("#key-name", name)
    page.fill("#value-input", "odd")
    page.click("#save-button")
    expect(row(page, f"odd/{name}")).to_be_visible()
    status, body = http(agent, "GET", "/v1/kv/odd/?keys")
    assert (status, json.loads(body)) == (200, [f"odd/{name}"])
    page.click(f'#folder-list li[data-key="odd/{name}"] a')
    expect(page.locator("#key-title")).to_have_text(f"odd/{name}")
    expect(page.locator("#value")).to_have_text("odd")


def test_edit_a_key_and_see_changes_by_another_client_without_reloading(
        page: Page, agent: Agent) -> None:
    put(agent, "live/a", b"one")
    index = modify_index(agent, "live/a")
    # after the first read, the page waits on the server: a blocking query from that index
    with page.expect_request(lambda r: "/v1/kv/live/a?" in r.url and f"index={index}&" in r.url
                             and "wait=60s" in r.url):
        open_view(page, agent, "/kv/live/a")
    expect(page.locator("#value")).to_have_text("one")
    page.click("#edit-button")
    page.fill("#value-input", "two")
    page.click("#save-button")
    expect(page.locator("#notice")).to_have_text("Saved live/a.")
    expect(page.locator("#value")).to_have_text("two")
    assert value(agent, "live/a") == b"two"

    # the open key follows another client's writes (a blocking query), and its deletion
    put(agent, "live/a", b"three, from elsewhere")
    expect(page.locator("#value")).to_have_text("three, from elsewhere")
    index = modify_index(agent, "live/a")
    expect(page.locator("#key-modify-index")).to_have_text(str(index))
    assert http(agent, "DELETE", "/v1/kv/live/a") == (200, b"true")
    expect(page.locator("#key-missing")).to_contain_text("does not exist")
    assert_not_reloaded(page)

    # the open folder follows keys appearing and going away
    put(agent, "live/b", b"x")
    open_view(page, agent, "/kv/live/")
    expect(row(page, "live/b")).to_be_visible()
    put(agent, "live/c", b"x")
    put(agent, "live/sub/d", b"x")
    expect(row(page, "live/c")).to_be_visible()
    expect(row(page, "live/sub/")).to_be_visible()
    assert http(agent, "DELETE", "/v1/kv/live/b") == (200, b"true")
    expect(row(page, "live/b")).to_have_count(0)
    expect(page.locator("#folder-footer")).to_contain_text("1 key, 1 folder")
    assert_not_reloaded(page)


def test_search_box_lists_a_prefix_and_follows_it(page: Page, agent: Agent) -> None:
    for key in ("search/apple", "search/apricot", "search/banana", "search/ap/x"):
        put(agent, key, b"x")
    open_view(page, agent, "/kv/search/")
    expect(page.locator("#folder-list li")).to_have_count(4)
    page.fill("#search", "ap")
    expect(page.locator("#folder-list li")).to_have_count(3)
    expect(row(page, "search/banana")).to_have_count(0)
    expect(page).to_have_url(re.compile(r"#/kv/search/\?prefix=ap$"))
    put(agent, "search/apex", b"x")
    expect(row(page, "search/apex")).to_be_visible()
    page.fill("#search", "zz")
    expect(page.locator("#folder-list li.empty")).to_have_text("No keys under search/zz")


def test_a_long_folder_shows_its_first_rows_and_says_so(page: Page, agent: Agent) -> None:
    keys = [f"long/{i:04d}" for i in range(1001)]
    for start in range(0, len(keys), 64):  # a Consul txn holds at most 64 operations
        ops = [{"KV": {"Verb": "set", "Key": key, "Value": ""}} for key in keys[start:start + 64]]
        assert http(agent, "PUT", "/v1/txn", json.dumps(ops).encode())[0] == 200
    open_view(page, agent, "/kv/long/")
    expect(page.locator("#folder-footer")).to_contain_text("1001 keys, 0 folders")
    expect(page.locator("#folder-list li.key-row")).to_have_count(1000)
    expect(page.locator("#folder-list li.empty")).to_have_text(
        "Showing the first 1000 of 1001: type a prefix in the filter to narrow the list.")


def test_a_stale_edit_is_refused_and_shown(page: Page, agent: Agent) -> None:
    put(agent, "conflict/app.conf", b"workers = 4")
    open_view(page, agent, "/kv/conflict/app.conf")
    expect(page.locator("#value")).to_have_text("workers = 4")
    base = modify_index(agent, "conflict/app.conf")
    page.click("#edit-button")
    page.fill("#value-input", "workers = 8")
    put(agent, "conflict/app.conf", b"workers = 16")  # someone else, while we edit
    expect(page.locator("#conflict")).to_contain_text("changed by someone else")
    page.click("#save-button")
    theirs = stored(agent, "conflict/app.conf")
    assert theirs is not None
    expect(page.locator("#conflict")).to_have_text(
        f"Not saved: someone else changed conflict/app.conf after you began editing (you "
        f"edited the version at ModifyIndex {base}; it is now at {theirs['ModifyIndex']}). "
        "Your text is kept below and the current value is shown above. Save again to "
        "replace it, or Cancel to keep theirs.")
    expect(page.locator("#value")).to_have_text("workers = 16")
    expect(page.locator("#value-input")).to_have_value("workers = 8")
    assert theirs["Value"] == b"workers = 16"
    screenshot(page, "conflict")
    # a second Save is a deliberate overwrite of the version now shown
    page.click("#save-button")
    expect(page.locator("#notice")).to_have_text("Saved conflict/app.conf.")
    expect(page.locator("#value")).to_have_text("workers = 8")
    assert value(agent, "conflict/app.conf") == b"workers = 8"


def test_delete_a_folder_behind_a_confirmation(page: Page, agent: Agent) -> None:
    for key in ("gone/a", "gone/b/c", "gone/b/d", "gonex/keep"):
        put(agent, key, b"x")
    open_view(page, agent, "/kv/gone/")
    expect(row(page, "gone/b/")).to_be_visible()
    page.click("#delete-folder")
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-text")).to_have_text(
        "Delete the folder gone/ and all 3 keys under it? This cannot be undone.")
    page.click("#confirm-cancel")
    expect(page.locator("#confirm")).to_be_hidden()
    assert keys_under(agent, "gone/") == ["gone/a", "gone/b/c", "gone/b/d"]

    # a subfolder from its row, then the folder itself
    row(page, "gone/b/").locator("button").click()
    expect(page.locator("#confirm-text")).to_contain_text("the folder gone/b/ and all 2 keys")
    page.click("#confirm-ok")
    expect(row(page, "gone/b/")).to_have_count(0)
    assert keys_under(agent, "gone/") == ["gone/a"]
    page.click("#delete-folder")
    page.click("#confirm-ok")
    expect(page.locator("#notice")).to_have_text("Deleted folder gone/ (1 key).")
    expect(page.locator(".crumbs .here")).to_have_count(0)  # back at the root folder
    expect(row(page, "gone/")).to_have_count(0)
    assert keys_under(agent, "gone/") == [] and keys_under(agent, "gonex/") == ["gonex/keep"]

    # a single key, from its own view
    open_view(page, agent, "/kv/gonex/keep")
    page.click("#delete-button")
    page.click("#confirm-ok")
    expect(page.locator("#notice")).to_have_text("Deleted key gonex/keep.")
    assert stored(agent, "gonex/keep") is None


def test_api_errors_are_shown_as_readable_messages(page: Page, agent: Agent) -> None:
    open_view(page, agent, "/create/errors/")
    page.fill("#key-name", "big")
    page.fill("#value-input", "x" * (MAX_VALUE_SIZE + 1))
    page.click("#save-button")
    expect(page.locator("#error-text")).to_have_text(
        f"Creating key errors/big failed (413 Request Entity Too Large): Request body"
        f"({MAX_VALUE_SIZE + 1} bytes) too large, max size: {MAX_VALUE_SIZE} bytes. See "
        "https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size.")
    assert stored(agent, "errors/big") is None
    page.click("#error-close")
    expect(page.locator("#error")).to_be_hidden()
    # input the page can judge itself is refused before any request
    page.select_option("#value-mode", "hex")
    page.fill("#value-input", "abc")
    page.click("#save-button")
    expect(page.locator("#error-text")).to_contain_text("The value is not valid hex")
    page.select_option("#value-mode", "text")
    page.fill("#flags-input", "-1")
    page.click("#save-button")
    expect(page.locator("#error-text")).to_have_text(
        'Flags must be a whole number from 0 to 18446744073709551615, not "-1".')
    assert stored(agent, "errors/big") is None
    open_view(page, agent, "/nowhere")
    expect(page.locator("main")).to_have_text("There is no page at #/nowhere. Go to Key/Value")


def test_cluster_panel(page: Page, agent: Agent) -> None:
    put(agent, "cluster/x", b"x")
    status, body = http(agent, "GET", "/v1/operator/raft/configuration")
    assert status == 200, body
    [server] = json.loads(body)["Servers"]
    open_view(page, agent, "/cluster")
    expect(page.locator("#cluster-dc")).to_have_text("dc1")
    expect(page.locator("#cluster-agent")).to_have_text("ui1 (Leader)")
    expect(page.locator("#cluster-leader")).to_have_text(server["Address"])
    expect(page.locator("#cluster-known-leader")).to_have_text("yes")
    expect(page.locator("#cluster-last-contact")).to_have_text("0 ms")
    peer = page.locator('#peers tr[data-node="ui1"] td')
    expect(peer).to_have_text(["ui1", server["ID"], server["Address"], "leader", "yes"])
    # the current index follows writes (the panel re-reads these endpoints; Refresh does now)
    put(agent, "cluster/y", b"y")
    index = modify_index(agent, "cluster/y")
    page.click("#cluster-refresh")
    expect(page.locator("#cluster-kv-index")).to_have_text(str(index))
    screenshot(page, "cluster")


def test_token_is_sent_as_x_consul_token_and_kept_for_the_session(
        page: Page, agent: Agent) -> None:
    open_view(page, agent, "/kv/")
    expect(page.locator("#folder-footer")).to_contain_text("live")
    with page.expect_request(lambda r: "/v1/kv/" in r.url
                             and r.headers.get("x-consul-token") == "s3cret"):
        page.fill("#token", "s3cret")
        page.click("#token-form button")
    expect(page.locator("#notice")).to_contain_text("Token set")
    page.reload()
    expect(page.locator("#token")).to_have_value("s3cret")
    assert page.evaluate("sessionStorage.getItem('pykvs.token')") == "s3cret"
    page.fill("#token", "")
    page.click("#token-form button")
    expect(page.locator("#notice")).to_contain_text("Token cleared")
    assert page.evaluate("sessionStorage.getItem('pykvs.token')") is None


def test_an_agent_that_goes_away_is_reported_not_a_blank_page(
        page: Page, tmp_path: Path) -> None:
    lone = start_agent(tmp_path, "ui2")
    try:
        put(lone, "k", b"v")
        open_view(page, lone, "/kv/k")
        expect(page.locator("#value")).to_have_text("v")
    finally:
        lone.stop()
    expect(page.locator("#error-text")).to_contain_text(
        "Reading k failed: cannot reach the pykvs agent at")
    expect(page.locator("#key-title")).to_have_text("k")  # the last view stays


def test_with_acls_on_a_403_is_explained_and_a_token_opens_the_key(
        page: Page, tmp_path: Path) -> None:
    guarded = Agent(tmp_path, "ui3", "--acl-enabled", "--acl-default-policy", "deny")
    try:
        guarded.wait_leader()
        status, body = http(guarded, "PUT", "/v1/acl/bootstrap")
        assert status == 200, body
        secret = json.loads(body)["SecretID"]
        request = urllib.request.Request(f"{base(guarded)}/v1/kv/secret/k", data=b"hidden",
                                         method="PUT", headers={"X-Consul-Token": secret})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.read() == b"true"
        assert http(guarded, "GET", "/v1/kv/secret/k")[0] == 403  # no token: refused

        open_view(page, guarded, "/kv/secret/k")
        expect(page.locator("#error-text")).to_contain_text("permission denied (403")
        expect(page.locator("#error-text")).to_contain_text("ACL token")
        page.fill("#token", secret)
        page.click("#token-form button")
        expect(page.locator("#value")).to_have_text("hidden")
        assert_not_reloaded(page)
    finally:
        guarded.stop()
