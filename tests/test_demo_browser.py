"""The demo player (/demo/) in real Chromium tabs, against a live gunicorn and a real Redis.

Each tab is one screen of the account (its own sessionStorage, so its own
session id). The service runs with a short heartbeat interval so that the
tests see several heartbeats in a few seconds; the page's timers are real.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from heartbeat.limiter.manager import StreamManager
from heartbeat.services import get_live_state, get_stream_manager
from tests.conftest import needs_chromium
from tests.live_state_helpers import reader_of

pytestmark = [pytest.mark.browser, needs_chromium]

OUTPUT = Path(__file__).resolve().parent.parent / "test-output" / "screenshots"
INTERVAL = 2  # seconds between heartbeats in these tests
FAST_SERVICE = {"STREAMLIMIT_DEMO": "true", "HEARTBEAT_INTERVAL_SECONDS": str(INTERVAL), "SESSION_TTL_SECONDS": "6"}


# Script errors of the pages a test opened: none is allowed (see no_page_errors).
PAGE_ERRORS: list[str] = []


@pytest.fixture(autouse=True)
def no_page_errors() -> Iterator[None]:
    PAGE_ERRORS.clear()
    yield
    assert PAGE_ERRORS == []


def open_screen(context, base_url: str, account: str, device: str):
    """A new tab playing the demo as ``device`` of ``account``."""
    page = context.new_page()
    page.on("pageerror", lambda error: PAGE_ERRORS.append(f"{device}: {error}"))
    page.goto(f"{base_url}/demo/?account={quote(account)}&device={quote(device)}&autoplay=1")
    return page


def wait_until(condition: Callable[[], bool], timeout: float = 15, what: str = "condition") -> None:
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


@pytest.mark.parametrize("required", [True, False], ids=["tokens required", "tokens optional (make run)"])
def test_fourth_tab_is_refused_lists_the_others_and_stop_this_one_lets_it_play(
    chromium, live_gunicorn, token_env, required: bool
) -> None:
    service = live_gunicorn(workers=2, **FAST_SERVICE, **token_env, PLAYBACK_TOKENS_REQUIRED=str(required).lower())
    context = chromium.new_context(viewport={"width": 1100, "height": 900})
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
    OUTPUT.mkdir(parents=True, exist_ok=True)
    fourth.screenshot(path=str(OUTPUT / "demo-refused.png"), full_page=True)

    second_session = screens[1].inner_text("#session-id")
    fourth.locator(f'#screen-list li[data-session="{second_session}"] button.stop-other').click()
    fourth.wait_for_selector("#status[data-state=playing]")
    assert fourth.locator("#screens").is_hidden()
    # It plays like any screen: Stop works, Play is not offered twice.
    assert fourth.is_enabled("#stop") and fourth.is_disabled("#play")
    # The stopped screen hears it on its next heartbeat.
    screens[1].wait_for_selector("#status[data-state=stopped]", timeout=3 * INTERVAL * 1000)
    assert "session_stopped" in screens[1].inner_text("#status")
    assert "stopped from another screen" in screens[1].inner_text("#message").lower()
    assert live_devices("family-7") == ["Screen 1", "Screen 3", "Screen 4"]
    screens[1].screenshot(path=str(OUTPUT / "demo-stopped-from-another-screen.png"), full_page=True)
    # The answers are shown as they come.
    assert fourth.locator("#answers li").count() >= 2
    context.close()


@pytest.mark.parametrize("tokens", [True, False], ids=["tokens-on", "tokens-off"])
def test_closing_a_tab_frees_its_slot_at_once(chromium, live_gunicorn, token_env, tokens: bool) -> None:
    # A long TTL: the slot frees because of the beacon, not because it expired.
    env = {**FAST_SERVICE, "SESSION_TTL_SECONDS": "300", **(token_env if tokens else {})}
    service = live_gunicorn(workers=2, **env)
    context = chromium.new_context()
    kept = open_screen(context, service.url, "family-8", "Kept")
    closed = open_screen(context, service.url, "family-8", "Closed")
    for page in (kept, closed):
        page.wait_for_selector("#status[data-state=playing]")
    assert live_devices("family-8") == ["Closed", "Kept"]
    closed.close()
    wait_until(lambda: live_devices("family-8") == ["Kept"], timeout=5, what="the closed tab's slot freed")
    context.close()


def test_a_reloaded_tab_plays_on_in_its_own_slot(chromium, live_gunicorn, token_env) -> None:
    # The tab's own stop (on pagehide) uses its session token, which does not block the session.
    service = live_gunicorn(workers=2, **FAST_SERVICE, **token_env)
    context = chromium.new_context()
    page = open_screen(context, service.url, "family-11", "Reloaded")
    page.wait_for_selector("#status[data-state=playing]")
    session_id = page.inner_text("#session-id")
    page.reload()
    page.wait_for_selector("#status[data-state=playing]")
    assert page.inner_text("#session-id") == session_id  # sessionStorage keeps the tab's id
    assert [s.session_id for s in get_live_state().sessions("family-11")] == [session_id]
    context.close()


def test_an_eviction_shows_stopped_in_the_evicted_tab(chromium, live_gunicorn) -> None:
    service = live_gunicorn(workers=2, **FAST_SERVICE)
    context = chromium.new_context()
    evicted = open_screen(context, service.url, "family-9", "Evicted")
    other = open_screen(context, service.url, "family-9", "Other")
    for page in (evicted, other):
        page.wait_for_selector("#status[data-state=playing]")
    assert get_stream_manager().evict("family-9", evicted.inner_text("#session-id"))
    evicted.wait_for_selector("#status[data-state=stopped]", timeout=3 * INTERVAL * 1000)
    assert "session_evicted" in evicted.inner_text("#status")
    assert "stopped by support" in evicted.inner_text("#message")
    time.sleep(INTERVAL + 0.5)
    assert state(other) == "playing"
    evicted.screenshot(path=str(OUTPUT / "demo-evicted.png"), full_page=True)
    context.close()


def test_a_redis_outage_keeps_the_tabs_playing_then_they_recover_never_faster_than_the_interval(
    chromium, live_gunicorn, own_redis, key_prefix
) -> None:
    redis = own_redis()
    service = live_gunicorn(workers=2, REDIS_URL=redis.url, REDIS_BREAKER_SECONDS="1", **FAST_SERVICE)
    context = chromium.new_context()
    tabs = [open_screen(context, service.url, "family-10", f"Tab {n}") for n in (1, 2)]
    sent: dict[int, list[float]] = {0: [], 1: []}
    for n, page in enumerate(tabs):
        page.on("request", lambda request, n=n: request.url.endswith("/heartbeat") and sent[n].append(time.monotonic()))
        page.wait_for_selector("#status[data-state=playing]")

    redis.stop()
    # The grace is 2 x interval; then the page says so and goes on playing.
    for page in tabs:
        page.wait_for_selector("#status[data-state=error]", timeout=4 * INTERVAL * 1000)
        assert page.evaluate("window.streamlimitDemo.session.state") == "playing"
    tabs[0].screenshot(path=str(OUTPUT / "demo-redis-down.png"), full_page=True)
    time.sleep(3)
    redis.start()
    for page in tabs:
        page.wait_for_selector("#status[data-state=playing]", timeout=30_000)
    for n, times in sent.items():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(times) >= 3, times  # during the outage and after it
        # Never faster than the interval (a little slack for when the browser reports each request).
        assert min(gaps) >= INTERVAL - 0.05, (n, gaps)
    on_own_redis = StreamManager(
        redis.client(), key_prefix=key_prefix, default_limit=3, session_ttl_seconds=6, eviction_cooldown_seconds=0
    )
    assert sorted(s.device_name for s in reader_of(on_own_redis).sessions("family-10")) == ["Tab 1", "Tab 2"]
    context.close()
