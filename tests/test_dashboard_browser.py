"""The dashboard in a real headless Chromium (Debian's `chromium` package), via Playwright."""

from __future__ import annotations

import pytest
import requests

from heartbeat.services import get_live_state, get_stream_manager
from tests.conftest import CHROMIUM, make_staff

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package: apt-get install chromium"),
]


@pytest.fixture
def browser(chromium):
    """Debian's headless Chromium (conftest's ``chromium``)."""
    return chromium


def send_heartbeat(base_url: str, user: str, session: str, stream: str) -> int:
    body = {"userId": user, "streamId": stream, "sessionId": session}
    return requests.post(f"{base_url}/heartbeat", json=body, timeout=10).status_code


@pytest.mark.django_db(transaction=True)
def test_staff_find_a_busy_account_evict_a_session_and_see_it_gone(
    live_server, browser, django_user_model, screenshots
) -> None:
    make_staff(django_user_model, "support", "Support agent")
    statuses = [send_heartbeat(live_server.url, "family-42", f"tv-{i}", f"episode-{i}") for i in range(4)]
    assert statuses == [200, 200, 200, 400]
    send_heartbeat(live_server.url, "<b>odd</b>", "s", "m")
    # live_server answers in this process: write its pending activity now rather than within a second.
    get_stream_manager().flush_activity()

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{live_server.url}/dashboard/")
    assert "/admin/login/" in page.url
    page.fill("#id_username", "support")
    page.fill("#id_password", "support-pass-123")
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/dashboard/")
    assert page.inner_text("#stat-live-sessions") == "4"
    assert page.inner_text("#stat-at-limit") == "1"
    page.screenshot(path=str(screenshots / "overview.png"), full_page=True)

    # The caller gives the start of the account id: the prefix search lists it.
    page.fill("#id_id", "fam")
    page.click("input[value=Find]")
    assert "family-42" in page.inner_text("#found")
    page.screenshot(path=str(screenshots / "find.png"), full_page=True)
    page.click("#found >> text=family-42")
    assert page.inner_text("#user-id") == "family-42"
    assert page.locator("#sessions tbody tr[data-session]").count() == 3
    # Why could the caller not watch? The refusal is listed with its reason.
    assert "tv-3" in page.inner_text("#refusals") and "concurrency_limit_reached" in page.inner_text("#refusals")
    page.screenshot(path=str(screenshots / "user.png"), full_page=True)

    page.locator('tr[data-session="tv-1"] input.evict').click()
    page.click("#confirm-evict")
    page.wait_for_selector("text=Session tv-1 was evicted")
    sessions = page.locator("#sessions tbody tr[data-session]")
    assert sessions.count() == 2
    assert page.locator('tr[data-session="tv-1"]').count() == 0
    assert "Evicted a session" in page.inner_text("#audit")
    page.screenshot(path=str(screenshots / "user-after-eviction.png"), full_page=True)

    assert send_heartbeat(live_server.url, "family-42", "tv-1", "episode-1") == 400
    assert send_heartbeat(live_server.url, "family-42", "tv-3", "episode-3") == 200

    page.goto(f"{live_server.url}/dashboard/users/")
    assert page.locator("#live-users").inner_text().count("family-42") == 1
    assert "<b>odd</b>" in page.inner_text("#live-users")  # shown as text, not markup
    assert page.locator("#live-users b").count() == 0


def log_in(browser, base_url: str, username: str):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{base_url}/dashboard/")
    page.fill("#id_username", username)
    page.fill("#id_password", f"{username}-pass-123")
    page.click("input[type=submit]")
    return page


@pytest.mark.django_db(transaction=True)
def test_a_support_viewer_sees_sessions_but_no_buttons_and_cannot_evict(
    live_server, browser, django_user_model, screenshots
):
    make_staff(django_user_model, "viewer", "Support viewer")
    for i in range(2):
        send_heartbeat(live_server.url, "family-7", f"tv-{i}", "movie")
    get_stream_manager().flush_activity()
    page = log_in(browser, live_server.url, "viewer")
    page.goto(f"{live_server.url}/dashboard/user/?id=family-7")
    assert page.locator("#sessions tbody tr[data-session]").count() == 2
    assert page.locator("input.evict").count() == 0 and page.locator("form.limit-form").count() == 0
    page.screenshot(path=str(screenshots / "user-as-viewer.png"), full_page=True)
    response = page.goto(f"{live_server.url}/dashboard/user/evict/?id=family-7&session=tv-0")
    assert response.status == 403 and page.locator("#forbidden").is_visible()
    assert len(get_live_state().sessions("family-7")) == 2


@pytest.mark.django_db(transaction=True)
def test_staff_without_a_role_get_the_not_allowed_page(live_server, browser, django_user_model, screenshots):
    make_staff(django_user_model, "newcomer", None)
    page = log_in(browser, live_server.url, "newcomer")
    assert page.locator("#forbidden").is_visible()
    assert "Support viewer" in page.inner_text("#forbidden")
    page.screenshot(path=str(screenshots / "forbidden.png"), full_page=True)


@pytest.mark.django_db(transaction=True)
def test_the_sharing_page_links_to_the_accounts(live_server, browser, django_user_model, screenshots):
    make_staff(django_user_model, "agent", "Support agent")
    for i in range(5):
        send_heartbeat(live_server.url, "shared-account", f"device-{i}", "movie")
    get_stream_manager().flush_activity()
    page = log_in(browser, live_server.url, "agent")
    page.click("text=Sharing signals")
    assert "shared-account" in page.inner_text(".refused-most")
    page.screenshot(path=str(screenshots / "sharing.png"), full_page=True)
    page.click(".refused-most >> text=shared-account")
    assert page.inner_text("#user-id") == "shared-account"
    assert page.locator("#refusals tbody tr").count() == 2


@pytest.mark.django_db(transaction=True)
def test_the_overview_refreshes_itself_when_asked_and_remembers_it(live_server, browser, django_user_model):
    make_staff(django_user_model, "agent", "Support agent")
    page = log_in(browser, live_server.url, "agent")
    page.clock.install()
    page.reload()
    page.check("#auto-refresh")
    send_heartbeat(live_server.url, "late-viewer", "tv", "movie")
    get_stream_manager().flush_activity()
    with page.expect_navigation():
        page.clock.run_for(11_000)
    assert page.is_checked("#auto-refresh")  # remembered across the reload
    assert page.inner_text("#stat-live-sessions") == "1"
    page.uncheck("#auto-refresh")
    page.evaluate("window.notReloaded = true")  # a reload would forget it
    page.clock.run_for(30_000)
    assert page.evaluate("window.notReloaded === true")
