"""The dashboard through the real stack, in headless Chromium (Debian's `chromium`, driven by
Playwright through `executable_path`: Playwright's own browser download is not reachable here)."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from fleet_server import FleetServer, strict_client, write_config

playwright = pytest.importorskip("playwright.sync_api")

ADMIN_KEY = "sk-admin-dashboard-0123456789"
BEARER = {"Authorization": f"Bearer {ADMIN_KEY}"}
# The closed network refuses Chromium's background connections; these flags stop it making them.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 30_000
playwright.expect.set_options(timeout=WAIT_MS)  # page changes wait on polls and loads (a busy 2-core box)


def chromium_path() -> str | None:
    candidates = [os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome",
                  "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome"]
    return next((found for c in candidates if c and (found := shutil.which(c) or (c if Path(c).is_file() else None))),
                None)


def broken_copy(model: Path, target: Path) -> Path:
    """The model with an architecture no library knows: its load fails."""
    shutil.copytree(model, target)
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, "model_type": "no_such_architecture"}))
    return target


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_lm: Path) -> Iterator[FleetServer]:
    root = tmp_path_factory.mktemp("dashboard")
    models = {"tiny": tiny_lm, "broken": broken_copy(tiny_lm, root / "broken")}
    config = write_config(root / "fleet.toml", models, f'[server]\nadmin_key = "{ADMIN_KEY}"\n')
    fleet = FleetServer(config, root / "state").wait_ready()
    yield fleet
    fleet.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium found (./run installs Debian's chromium on Linux; CHROMIUM=path names one)")
    with playwright.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser, server: FleetServer) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=server.base_url)
    context.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    context.on("weberror", lambda e: errors.append(str(e.error)))
    yield context.new_page()
    context.close()
    assert not errors, errors  # no script error on the page


def sign_in(page, key: str = ADMIN_KEY) -> None:
    page.goto("/")
    page.get_by_label("Admin key").fill(key)
    page.keyboard.press("Enter")


def status(server: FleetServer) -> dict:
    r = httpx.get(f"{server.base_url}/admin/models/status", headers=BEARER, timeout=30)
    r.raise_for_status()
    return {m["id"]: m for m in r.json()["models"]}


def chat(server: FleetServer, api_key: str = "none") -> None:
    r = strict_client(server.base_url, api_key).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=3)
    assert r.choices[0].finish_reason == "length"


def test_a_wrong_key_is_refused(page) -> None:
    sign_in(page, "sk-not-the-admin-key")
    playwright.expect(page.locator("#sign-in-error")).to_have_text("That is not the admin key.")
    assert page.locator("#panels").is_hidden()
    assert not page.context.cookies()


def test_sign_in_watch_the_fleet_unload_and_see_requests(page, server: FleetServer, tmp_path: Path) -> None:
    sign_in(page)
    row = page.locator('#fleet-table tr[data-model="tiny"]')
    playwright.expect(row).to_be_visible()
    cookie = page.context.cookies()[0]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0

    chat(server)
    playwright.expect(row.locator(".state")).to_have_text("ready")
    recent = page.locator("#recent-table tbody tr").filter(has_text="tiny")
    playwright.expect(recent.first).to_be_visible()
    segment = page.locator('#budget-bar span[data-model="tiny"]')
    playwright.expect(segment).to_have_count(1)
    used_before = int(page.locator("#budget-bar").get_attribute("data-used"))
    assert int(segment.get_attribute("data-bytes")) > 0 and used_before > 0

    page.screenshot(path=tmp_path / "dashboard.png", full_page=True)
    if target := os.environ.get("DASHBOARD_SCREENSHOT"):  # the README's picture: bursts over a few minutes
        for i in range(45):
            for _ in range(i % 5):
                chat(server)
            page.wait_for_timeout(3500)
        page.screenshot(path=target, full_page=True)

    unload = page.get_by_role("button", name="Unload tiny", exact=True)
    unload.focus()
    page.wait_for_timeout(2000)  # a poll or two: rows update in place, so the focus stays
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Unload tiny"
    page.keyboard.press("Enter")
    playwright.expect(row.locator(".state")).to_have_text("stopped")
    playwright.expect(page.locator("#action-result")).to_contain_text("tiny: drained and ended")
    playwright.expect(segment).to_have_count(0)
    page.wait_for_function(f"Number(document.getElementById('budget-bar').dataset.used) < {used_before}")
    assert status(server)["tiny"]["state"] == "stopped"


def test_load_pins_the_page_fits_a_phone_and_force_unload_ends_it(page, server: FleetServer) -> None:
    sign_in(page)
    page.get_by_role("button", name="Load tiny", exact=True).click()
    playwright.expect(page.locator("#action-result")).to_contain_text("tiny: loaded and pinned")
    row = page.locator('#fleet-table tr[data-model="tiny"]')
    playwright.expect(row.locator(".state")).to_have_text("ready")
    assert status(server)["tiny"]["pinned"] is True
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(300)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert row.locator('td[data-label="State"]').is_visible()
    page.get_by_role("button", name="Force unload tiny", exact=True).click()
    playwright.expect(page.locator("#action-result")).to_contain_text("tiny: ended at once")
    playwright.expect(row.locator(".state")).to_have_text("stopped")


def test_another_site_cannot_use_the_session(page, server: FleetServer) -> None:
    """The browser's own rules and the server's: a page on another origin (localhost is another
    site than 127.0.0.1) posts an unload with the signed-in user's browser; the model stays loaded."""
    chat(server)
    sign_in(page)
    playwright.expect(page.locator('#fleet-table tr[data-model="tiny"] .state')).to_have_text("ready")
    other = page.context.new_page()
    other.goto(server.base_url.replace("127.0.0.1", "localhost") + "/health")  # a page without our CSP
    # The fetch resolves (opaque) once the server has answered: the request did reach it.
    other.evaluate("""url => fetch(url, {method: "POST", mode: "no-cors", credentials: "include"})""",
                   f"{server.base_url}/admin/models/unload/tiny?force=true")
    assert status(server)["tiny"]["state"] == "ready"


def test_an_open_loopback_server_shows_the_page_without_signing_in(browser, tmp_path: Path, tiny_lm: Path) -> None:
    server = FleetServer(write_config(tmp_path / "fleet.toml", {"tiny": tiny_lm}), tmp_path / "state").wait_ready()
    context = browser.new_context(base_url=server.base_url)
    try:
        page = context.new_page()
        page.goto("/dashboard")
        playwright.expect(page.locator('#fleet-table tr[data-model="tiny"] .state')).to_have_text("stopped")
        assert page.locator("#sign-in").is_hidden() and page.locator("#sign-out").is_hidden()
        page.get_by_role("button", name="Load tiny", exact=True).click()
        playwright.expect(page.locator("#action-result")).to_contain_text("tiny: loaded and pinned")
    finally:
        context.close()
        server.stop()


def test_state_changing_calls_need_the_session_its_token_and_this_origin(server: FleetServer) -> None:
    url = server.base_url
    unload = f"{url}/admin/models/unload/nope"
    assert httpx.post(unload).status_code == 401  # no session, no key
    with httpx.Client(base_url=url) as browser_like:
        r = browser_like.post("/dashboard/session", json={"key": "wrong"})
        assert r.status_code == 401 and not browser_like.cookies
        assert browser_like.post("/dashboard/session", json={"key": ADMIN_KEY},
                                 headers={"Origin": "http://evil.example"}).status_code == 403
        r = browser_like.post("/dashboard/session", json={"key": ADMIN_KEY})
        assert r.status_code == 200 and "httponly" in r.headers["set-cookie"].lower()
        assert "samesite=strict" in r.headers["set-cookie"].lower()
        csrf = r.json()["csrf"]
        assert browser_like.get("/admin/models/status").status_code == 200  # reading needs no token
        r = browser_like.post(unload)
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_token_invalid"
        r = browser_like.post(unload, headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "cross_origin_refused"
        r = browser_like.post(unload, headers={"X-CSRF-Token": csrf, "Origin": url})
        assert r.status_code == 404  # past the guard: the model is unknown
        assert browser_like.delete("/dashboard/session").status_code == 200
        assert browser_like.get("/admin/models/status").status_code == 401
    assert httpx.post(unload, headers=BEARER).status_code == 404  # the Bearer path is as it was



@pytest.fixture(scope="module")
def catalog_server(tmp_path_factory: pytest.TempPathFactory, tiny_lm: Path) -> Iterator[FleetServer]:
    """A server with one configured model and one found by scanning a folder."""
    root = tmp_path_factory.mktemp("dashboard-catalog")
    shutil.copytree(tiny_lm, root / "scan" / "found-model")
    extra = f'[server]\nadmin_key = "{ADMIN_KEY}"\n[catalog]\nscan = ["{root / "scan"}"]\nhf_cache = false\n'
    fleet = FleetServer(write_config(root / "fleet.toml", {"tiny": tiny_lm}, extra), root / "state").wait_ready()
    yield fleet
    fleet.stop()


def test_a_discovered_model_has_its_row_and_loads_from_it(browser, catalog_server: FleetServer) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=catalog_server.base_url)
    context.set_default_timeout(WAIT_MS)
    try:
        page = context.new_page()
        sign_in(page)
        row = page.locator('#fleet-table tr[data-model="found-model"]')
        playwright.expect(row.locator(".state")).to_have_text("stopped")
        playwright.expect(row.locator(".pin")).to_contain_text("scan")
        page.get_by_role("button", name="Load found-model", exact=True).click()
        playwright.expect(page.locator("#action-result")).to_contain_text("found-model: loaded and pinned")
        playwright.expect(row.locator(".state")).to_have_text("ready")
    finally:
        context.close()


def test_recent_requests_and_ttft_come_from_the_usage_records(page, server: FleetServer) -> None:
    sign_in(page)
    playwright.expect(page.locator("#traffic-source")).to_have_text("from the usage records")
    chat(server)
    row = page.locator("#recent-table tbody tr").filter(has_text="tiny").first
    playwright.expect(row.locator('td[data-label="Endpoint"]')).to_have_text("chat")
    playwright.expect(row.locator('td[data-label="Status"]')).to_have_text("200")
    playwright.expect(row.locator('td[data-label="TTFT"]')).to_have_text(re.compile(r"^\d+ ms$"))
    playwright.expect(page.locator("#ttft-figure")).to_be_visible()
    playwright.expect(page.locator("#chart-ttft path.line")).to_have_count(2)
    # the prompt cache per model: every prompt token of the hour's tiny requests, and the share cached
    cache = page.locator("#cache-table tbody tr").filter(has_text="tiny")
    playwright.expect(cache.locator('td[data-label="Prompt tokens"]')).to_have_text(re.compile(r"^[1-9]\d*$"))
    playwright.expect(cache.locator('td[data-label="Hit ratio"]')).to_have_text(re.compile(r"^\d+ %$"))


def test_logs_follow_a_model_and_diagnose_a_failed_load(page, server: FleetServer) -> None:
    with pytest.raises(openai.APIStatusError):
        strict_client(server.base_url).completions.create(model="broken", prompt="hi", max_tokens=2)
    sign_in(page)
    playwright.expect(page.locator("#logs")).to_be_visible()
    page.locator("#logs-model").select_option("broken")
    diagnosis = page.locator("#logs-diagnosis")
    playwright.expect(diagnosis.locator(".summary")).to_contain_text("broken: failed")
    playwright.expect(diagnosis.locator(".reason")).to_contain_text("Last failed load")
    playwright.expect(diagnosis.locator(".traceback")).to_contain_text("no_such_architecture")
    playwright.expect(page.locator("#logs-lines")).not_to_be_empty()


def test_keys_create_copy_list_and_revoke(page, server: FleetServer) -> None:
    sign_in(page)
    page.get_by_label("Name").fill("ci-runner")
    for scope in ("completions", "embeddings", "responses", "messages"):
        page.get_by_label(scope, exact=True).uncheck()
    page.get_by_role("button", name="Create key").click()
    token = page.locator("#key-token")
    playwright.expect(token).to_have_text(re.compile(r"\S{20,}"))
    row = page.locator("#keys-table tbody tr").filter(has_text="ci-runner")
    playwright.expect(row.locator('td[data-label="Scopes"]')).to_have_text("chat")
    chat(server, token.inner_text())
    page.get_by_role("button", name="Copy").click()
    playwright.expect(page.locator("#key-result")).to_have_text(re.compile("Copied|Selected"))
    secret = token.inner_text()
    # Another key stays, so that /v1 still wants one (with no key at all it is open).
    keeper = httpx.post(f"{server.base_url}/admin/keys", json={"name": "keeper"}, headers=BEARER).json()
    try:
        page.get_by_role("button", name="Revoke ci-runner").click()
        playwright.expect(row).to_have_count(0)
        with pytest.raises(openai.AuthenticationError):
            chat(server, secret)
    finally:
        httpx.delete(f"{server.base_url}/admin/keys/{keeper['id']}", headers=BEARER).raise_for_status()
