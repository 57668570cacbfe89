"""The dashboard in a real headless Chromium (Debian's `chromium` package), via Playwright."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import requests

from heartbeat.services import get_stream_manager
from tests.conftest import make_staff

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
OUTPUT = Path(__file__).resolve().parent.parent / "test-output" / "screenshots"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package: apt-get install chromium"),
]

# As root in a sandbox, with no network but loopback (see the README).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser(monkeypatch):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own
    # database calls are still plain synchronous ones.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def send_heartbeat(base_url: str, user: str, session: str, stream: str) -> int:
    body = {"userId": user, "streamId": stream, "sessionId": session}
    return requests.post(f"{base_url}/heartbeat", json=body, timeout=10).status_code


@pytest.mark.django_db(transaction=True)
def test_staff_find_a_busy_account_evict_a_session_and_see_it_gone(live_server, browser, django_user_model) -> None:
    make_staff(django_user_model, "support", "Support agent")
    statuses = [send_heartbeat(live_server.url, "family-42", f"tv-{i}", f"episode-{i}") for i in range(4)]
    assert statuses == [200, 200, 200, 400]
    send_heartbeat(live_server.url, "<b>odd</b>", "s", "m")
    # live_server answers in this process: write its pending activity now rather than within a second.
    get_stream_manager().flush_activity()
    OUTPUT.mkdir(parents=True, exist_ok=True)

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{live_server.url}/dashboard/")
    assert "/admin/login/" in page.url
    page.fill("#id_username", "support")
    page.fill("#id_password", "support-pass-123")
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/dashboard/")
    assert page.inner_text("#stat-live-sessions") == "4"
    assert page.inner_text("#stat-at-limit") == "1"
    page.screenshot(path=str(OUTPUT / "overview.png"), full_page=True)

    page.fill("#id_id", "family-42")
    page.click("text=Show sessions")
    assert page.inner_text("#user-id") == "family-42"
    assert page.locator("#sessions tbody tr[data-session]").count() == 3
    page.screenshot(path=str(OUTPUT / "user.png"), full_page=True)

    page.locator('tr[data-session="tv-1"] input.evict').click()
    page.click("#confirm-evict")
    page.wait_for_selector("text=Session tv-1 was evicted")
    sessions = page.locator("#sessions tbody tr[data-session]")
    assert sessions.count() == 2
    assert page.locator('tr[data-session="tv-1"]').count() == 0
    assert "Evicted a session" in page.inner_text("#audit")
    page.screenshot(path=str(OUTPUT / "user-after-eviction.png"), full_page=True)

    assert send_heartbeat(live_server.url, "family-42", "tv-1", "episode-1") == 400
    assert send_heartbeat(live_server.url, "family-42", "tv-3", "episode-3") == 200

    page.goto(f"{live_server.url}/dashboard/users/")
    assert page.locator("#live-users").inner_text().count("family-42") == 1
    assert "<b>odd</b>" in page.inner_text("#live-users")  # shown as text, not markup
    assert page.locator("#live-users b").count() == 0
