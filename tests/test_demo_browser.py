"""The demo player (/demo/) in real Chromium tabs, against a live gunicorn and a real Redis.

Each tab is one screen of the account (its own sessionStorage, so its own
session id). The service runs with a short heartbeat interval so that the
tests see several heartbeats in a few seconds; the page's timers are real, so
the tests wait on conditions (bounded), never for a fixed time. The gunicorn
serves the demo and player.js collected from this checkout (``live_browser``);
screenshots go to this run's pytest temporary folder (``screenshots``).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from urllib.parse import quote

import pytest

from heartbeat.limiter.manager import StreamManager
from heartbeat.services import get_live_state, get_stream_manager
from tests.conftest import needs_chromium
from tests.live_state_helpers import reader_of

pytestmark = [pytest.mark.browser, needs_chromium]

INTERVAL = 2  # seconds between heartbeats in these tests
FAST_SERVICE = {"STREAMLIMIT_DEMO": "true", "HEARTBEAT_INTERVAL_SECONDS": str(INTERVAL), "SESSION_TTL_SECONDS": "6"}


# Script errors of the pages a test opened: none is allowed (see no_page_errors).
PAGE_ERRORS: list[str] = []


@pytest.fixture(autouse=True)
def no_page_errors() -> Iterator[None]:
    PAGE_ERRORS.clear()
    yield
    assert PAGE_ERRORS == []


# Records, in each page, when the player sent each heartbeat (ms, the page's own monotonic clock).
RECORD_HEARTBEATS = """
window.heartbeatsSent = [];
const realFetch = window.fetch.bind(window);
window.fetch = (url, init) => {
  if (String(url).endsWith('/heartbeat')) window.heartbeatsSent.push(performance.now());
  return realFetch(url, init);
};
"""


def open_screen(context, base_url: str, account: str, device: str):
    """A new tab playing the demo as ``device`` of ``account``."""
    page = context.new_page()
    page.add_init_script(RECORD_HEARTBEATS)
    page.on("pageerror", lambda error: PAGE_ERRORS.append(f"{device}: {error}"))
    page.goto(f"{base_url}/demo/?account={quote(account)}&device={quote(device)}&autoplay=1")
    return page


def wait_until(condition: Callable[[], bool], timeout: float = 15, what: str = "condition") -> None:
    """Wait (real time, at most ``timeout`` s) until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not met after {timeout} s")


def state(page) -> str:
    return page.get_attribute("#status", "data-state")


def live_devices(account: str) -> list[str | None]:
    return sorted(s.device_name for s in get_live_state().sessions(account))


def live_session_ids(account: str) -> list[str]:
    return sorted(s.session_id for s in get_live_state().sessions(account))


def answers_shown(page) -> int:
    return page.locator("#answers li").count()


@pytest.mark.parametrize("required", [True, False], ids=["tokens required", "tokens optional (make run)"])
def test_fourth_tab_is_refused_lists_the_others_and_stop_this_one_lets_it_play(
    live_browser, live_gunicorn, token_env, screenshots, required: bool
) -> None:
    service = live_gunicorn(workers=2, **FAST_SERVICE, **token_env, PLAYBACK_TOKENS_REQUIRED=str(required).lower())
    context = live_browser.new_context(viewport={"width": 1100, "height": 900})
    screens = [open_screen(context, service.url, "family-7", f"Screen {n}") for n in (1, 2, 3)]
    for page in screens:
        page.wait_for_selector("#status[data-state=playing]")
    fourth = open_screen(context, service.url, "family-7", "Screen 4")
    fourth.wait_for_selector("#status[data-state=refused]")
    assert "already playing on 3 screens" in fourth.inner_text("#message")
    listed = fourth.locator("#screen-list li")
    assert sorted(listed.all_inner_texts()[n].split(" — ")[0] for n in range(3)) == ["Screen 1", "Screen 2", "Screen 3"]
    # Each screen shows the account's count as of its last answer, out of the limit.
    assert all("of 3 screens" in page.inner_text("#status") for page in screens)
    fourth.screenshot(path=str(screenshots / f"demo-refused-{required=}.png"), full_page=True)

    second_session = screens[1].inner_text("#session-id")
    fourth.locator(f'#screen-list li[data-session="{second_session}"] button.stop-other').click()
    fourth.wait_for_selector("#status[data-state=playing]")
    assert fourth.locator("#screens").is_hidden()
    # It plays like any screen: Stop works, Play is not offered twice.
    assert fourth.is_enabled("#stop") and fourth.is_disabled("#play")
    # The stopped screen hears it on its next heartbeat.
    screens[1].wait_for_selector("#status[data-state=stopped]", timeout=5 * INTERVAL * 1000)
    assert "session_stopped" in screens[1].inner_text("#status")
    assert "stopped from another screen" in screens[1].inner_text("#message").lower()
    assert live_devices("family-7") == ["Screen 1", "Screen 3", "Screen 4"]
    screens[1].screenshot(path=str(screenshots / f"demo-stopped-from-another-screen-{required=}.png"), full_page=True)
    # The answers are shown as they come.
    assert fourth.locator("#answers li").count() >= 2
    context.close()


@pytest.mark.parametrize("tokens", [True, False], ids=["tokens-on", "tokens-off"])
def test_closing_a_tab_frees_its_slot_at_once(live_browser, live_gunicorn, token_env, tokens: bool) -> None:
    # A long TTL: the slot frees because of the beacon, not because it expired.
    env = {**FAST_SERVICE, "SESSION_TTL_SECONDS": "300", **(token_env if tokens else {})}
    service = live_gunicorn(workers=2, **env)
    context = live_browser.new_context()
    kept = open_screen(context, service.url, "family-8", "Kept")
    closed = open_screen(context, service.url, "family-8", "Closed")
    for page in (kept, closed):
        page.wait_for_selector("#status[data-state=playing]")
    assert live_devices("family-8") == ["Closed", "Kept"]
    closed.close()
    # The beacon's round trip takes milliseconds; the TTL (300 s) and the next heartbeats are far off.
    wait_until(lambda: live_devices("family-8") == ["Kept"], timeout=15, what="the closed tab's slot freed")
    context.close()


def test_a_reloaded_tab_plays_on_though_the_old_page_s_stop_arrives_after_its_first_heartbeat(
    live_browser, live_gunicorn, token_env, holding_proxy
) -> None:
    # The tab's own stop (on pagehide) uses its session token, which does not block the session.
    service = live_gunicorn(workers=2, **FAST_SERVICE, **token_env)
    proxy = holding_proxy(service)
    context = live_browser.new_context()
    page = open_screen(context, proxy.url, "family-11", "Reloaded")
    page.wait_for_selector("#status[data-state=playing]")
    old_session = page.inner_text("#session-id")
    # The old page's stop beacon is held back until the reloaded page plays: the race, made certain.
    proxy.hold("/heartbeat/stop")
    page.reload()
    page.wait_for_selector("#status[data-state=playing]")
    new_session = page.inner_text("#session-id")
    wait_until(lambda: len(proxy.arrived) == 1, what="the old page's stop beacon")
    assert json.loads(proxy.arrived[0][1])["sessionId"] == old_session
    proxy.release()
    wait_until(lambda: ("/heartbeat/stop", 204) in proxy.answered, what="the late stop answered")
    # The late stop ended the old page's session, not the one that replaced it.
    assert live_session_ids("family-11") == [new_session]
    assert new_session != old_session
    shown = answers_shown(page)
    wait_until(lambda: answers_shown(page) > shown, timeout=5 * INTERVAL, what="the next heartbeat's answer")
    assert state(page) == "playing"
    assert live_session_ids("family-11") == [new_session]
    context.close()


def test_a_reload_on_a_full_account_waits_for_the_old_page_s_stop_and_plays(
    live_browser, live_gunicorn, token_env, holding_proxy
) -> None:
    service = live_gunicorn(workers=2, **FAST_SERVICE, **token_env)
    proxy = holding_proxy(service)
    context = live_browser.new_context()
    screens = [open_screen(context, proxy.url, "family-12", f"Screen {n}") for n in (1, 2, 3)]
    for page in screens:
        page.wait_for_selector("#status[data-state=playing]")
    reloaded = screens[0]
    old_session = reloaded.inner_text("#session-id")
    proxy.hold("/heartbeat/stop")
    reloaded.reload()
    wait_until(lambda: len(proxy.arrived) == 1, what="the old page's stop beacon")
    # Until the old page's stop frees its slot, the account is full: the reloaded page asks
    # again (its old page sent a stop a moment ago) rather than showing a refusal.
    wait_until(lambda: answers_shown(reloaded) >= 2, what="two refusals of the reloaded page")
    assert state(reloaded) == "starting"
    assert reloaded.inner_text("#answers").count("concurrency_limit_reached") == answers_shown(reloaded)
    proxy.release()
    reloaded.wait_for_selector("#status[data-state=playing]")
    new_session = reloaded.inner_text("#session-id")
    assert new_session != old_session
    assert live_devices("family-12") == ["Screen 1", "Screen 2", "Screen 3"]
    assert new_session in live_session_ids("family-12")
    assert old_session not in live_session_ids("family-12")
    context.close()


def test_an_eviction_shows_stopped_in_the_evicted_tab(live_browser, live_gunicorn, screenshots) -> None:
    service = live_gunicorn(workers=2, **FAST_SERVICE)
    context = live_browser.new_context()
    evicted = open_screen(context, service.url, "family-9", "Evicted")
    other = open_screen(context, service.url, "family-9", "Other")
    for page in (evicted, other):
        page.wait_for_selector("#status[data-state=playing]")
    assert get_stream_manager().evict("family-9", evicted.inner_text("#session-id"))
    evicted.wait_for_selector("#status[data-state=stopped]", timeout=5 * INTERVAL * 1000)
    assert "session_evicted" in evicted.inner_text("#status")
    assert "stopped by support" in evicted.inner_text("#message")
    # The other tab's next heartbeat after the eviction is still allowed.
    shown = answers_shown(other)
    wait_until(lambda: answers_shown(other) > shown, timeout=5 * INTERVAL, what="the other tab's next answer")
    assert state(other) == "playing"
    assert live_devices("family-9") == ["Other"]
    evicted.screenshot(path=str(screenshots / "demo-evicted.png"), full_page=True)
    context.close()


def test_a_redis_outage_keeps_the_tabs_playing_then_they_recover_never_faster_than_the_interval(
    live_browser, live_gunicorn, own_redis, key_prefix, screenshots
) -> None:
    redis = own_redis()
    service = live_gunicorn(workers=2, REDIS_URL=redis.url, REDIS_BREAKER_SECONDS="1", **FAST_SERVICE)
    context = live_browser.new_context()
    tabs = [open_screen(context, service.url, "family-10", f"Tab {n}") for n in (1, 2)]
    for page in tabs:
        page.wait_for_selector("#status[data-state=playing]")

    redis.stop()
    # The grace is 2 x interval; then the page says so and goes on playing.
    for page in tabs:
        page.wait_for_selector("#status[data-state=error]", timeout=4 * INTERVAL * 1000)
        assert page.evaluate("window.streamlimitDemo.session.state") == "playing"
    tabs[0].screenshot(path=str(screenshots / "demo-redis-down.png"), full_page=True)
    redis.start()
    for page in tabs:
        page.wait_for_selector("#status[data-state=playing]", timeout=30_000)
    for n, page in enumerate(tabs):
        times = page.evaluate("window.heartbeatsSent")
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(times) >= 4, times  # before, during and after the outage
        # Never sooner than the interval. Measured where the player runs (its page's clock):
        # each heartbeat is sent at least the interval after the previous answer came, which
        # itself came after that heartbeat was sent.
        assert min(gaps) >= INTERVAL * 1000, (n, gaps)
    on_own_redis = StreamManager(
        redis.client(), key_prefix=key_prefix, default_limit=3, session_ttl_seconds=6, eviction_cooldown_seconds=0
    )
    assert sorted(s.device_name for s in reader_of(on_own_redis).sessions("family-10")) == ["Tab 1", "Tab 2"]
    context.close()
