"""The player library (static/streamlimit/player.js) in a real Chromium, against a live gunicorn.

The page's clock is Playwright's (``page.clock``): timers run only when the test
moves time on, so intervals, backoff and grace periods are checked exactly and
without sleeping. The answers are the service's own, from a real gunicorn and a
real Redis (a redis-server of the test's own where the test stops it). The
gunicorn serves player.js collected from this checkout (``live_browser``).

A heartbeat is sent in the same page task as the timer that fires it, so once
``run_for`` returns, whatever was due has been sent: a check that nothing was
sent needs no waiting, only a session that had finished with its last answer
before the clock moved (``idle``).
"""

from __future__ import annotations

import datetime
import http.server
import itertools
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from heartbeat.services import get_live_state, get_policy_store
from tests.conftest import make_token, needs_chromium

pytestmark = [pytest.mark.browser, needs_chromium]

INTERVAL = 7  # seconds; not the default, so following the answer is visible
SERVICE_ENV = {"HEARTBEAT_INTERVAL_SECONDS": str(INTERVAL), "SESSION_TTL_SECONDS": str(2 * INTERVAL)}

# Loads the module into the page, records every fetch and event with the page's
# (fake) clock, and starts a session. ``tokens``: what getToken returns, in turn.
SETUP = """async (options) => {
  const { StreamLimitSession } = await import('/static/streamlimit/player.js');
  window.events = []; window.calls = []; window.tokenCalls = 0;
  const realFetch = window.fetch.bind(window);
  window.fetch = (url, init) => {
    window.calls.push({ url: String(url), at: Date.now(), body: init && init.body });
    return realFetch(url, init);
  };
  if (options.accountToken) {
    const accountToken = options.accountToken;
    delete options.accountToken;
    options.getAccountToken = async () => accountToken;
  }
  if (options.tokens) {
    const tokens = options.tokens;
    delete options.tokens;
    options.getToken = async () => tokens[Math.min(window.tokenCalls++, tokens.length - 1)];
  }
  const handOff = options.handOff;
  delete options.handOff;
  const jitter = options.jitter ?? 0;
  delete options.jitter;
  const session = new StreamLimitSession({ timer: 'main', random: () => jitter, ...options });
  for (const type of ['allowed', 'refused', 'stopped', 'error', 'answer']) {
    session.on(type, (detail) => window.events.push({ type, at: Date.now(), detail }));
  }
  window.session = session;
  if (handOff) session.handOff(handOff);
  else session.start();
}"""


# The session has no request in flight: its next heartbeat waits on a timer, or the loop ended.
IDLE = "window.session.timerId !== null || ['idle', 'refused', 'stopped'].includes(window.session.state)"


def wait_until(condition, timeout: float, what: str) -> None:
    """Wait (real time, at most ``timeout`` s) until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not after {timeout} s: {what}")
        time.sleep(0.02)


class PagePlayer:
    """A page of the service's origin running one StreamLimitSession under a fake clock."""

    def __init__(
        self, browser, base_url: str, csp: str | None = None, routes: dict | None = None, **options: Any
    ) -> None:
        self.page = browser.new_page()
        start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
        self.page.clock.install(time=start)
        path = "/healthz"
        if csp is not None:
            # A page of the service's origin sent with this Content-Security-Policy (the player's page).
            path = "/player-page-with-csp"
            headers = {"Content-Type": "text/html", "Content-Security-Policy": csp}
            self.page.route(f"{base_url}{path}", lambda route: route.fulfill(headers=headers, body="<!doctype html>"))
        self.page.goto(f"{base_url}{path}")
        # Installed, the fake clock still flows with real time: from here on, only the test moves it.
        self.page.clock.pause_at(start + datetime.timedelta(minutes=1))
        for pattern, handler in (routes or {}).items():
            self.page.route(pattern, handler)
        self.page.evaluate(SETUP, options)

    def heartbeat_bodies(self) -> list[dict]:
        """The bodies of the heartbeat requests sent so far."""
        return [json.loads(c["body"]) for c in self.page.evaluate("window.calls") if c["url"].endswith("/heartbeat")]

    def events(self, kind: str | None = None) -> list[dict]:
        found = self.page.evaluate("window.events")
        return [e for e in found if kind is None or e["type"] == kind]

    def heartbeat_calls(self) -> list[int]:
        """Fake-clock times (ms) of the heartbeat requests sent so far."""
        return [c["at"] for c in self.page.evaluate("window.calls") if c["url"].endswith("/heartbeat")]

    def wait_for(self, kind: str, count: int = 1, timeout: float = 15) -> dict:
        """Wait (real time, bounded) until ``count`` events of ``kind`` happened; the last one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(kind)
            if len(found) >= count:
                return found[count - 1]
            time.sleep(0.05)
        raise AssertionError(f"no {count} {kind!r} events after {timeout} s: {self.events()}")

    def idle(self, timeout: float = 15) -> None:
        """Wait (real time, bounded) until the session is done with its last request.

        Done: its next heartbeat is on a timer (the page's clock), or the loop has ended.
        """
        wait_until(lambda: self.page.evaluate(IDLE), timeout, f"an idle session: {self.events()}")

    def run_for(self, ms: int) -> None:
        self.page.clock.run_for(ms)


def fetch_closing(route):
    """Send a routed request to the service now, on a connection closed after it; its answer.

    Playwright's own HTTP client would keep the connection open, and gunicorn's
    graceful stop would wait for it (its keep-alive, 5 s) at the end of the test.
    """
    return route.fetch(headers={**route.request.headers, "connection": "close"})


def post_heartbeat(base_url: str, body: dict, token: str) -> requests.Response:
    """A heartbeat from another screen of the account, outside the browser."""
    # Connection: close, else gunicorn's graceful stop waits for the idle connection (its keep-alive).
    headers = {"Authorization": f"Bearer {token}", "Connection": "close"}
    return requests.post(f"{base_url}/heartbeat", json=body, headers=headers, timeout=10)


def gaps(times: list[int]) -> list[int]:
    return [b - a for a, b in itertools.pairwise(times)]


def test_follows_the_heartbeat_interval_of_each_answer(live_browser, live_gunicorn) -> None:
    service = live_gunicorn(workers=2, **SERVICE_ENV)
    player = PagePlayer(live_browser, service.url, userId="acct", streamId="movie", deviceName="Kitchen")
    first = player.wait_for("allowed")["detail"]
    assert first["first"] is True and first["heartbeatInterval"] == INTERVAL
    player.run_for(INTERVAL * 1000 - 100)
    assert len(player.heartbeat_calls()) == 1  # not a moment early
    for n in range(2, 7):
        player.run_for(100 if n == 2 else INTERVAL * 1000)
        assert player.wait_for("allowed", n)["detail"]["first"] is False
    assert gaps(player.heartbeat_calls()) == [INTERVAL * 1000] * 5
    [session] = get_live_state().sessions("acct")
    assert (session.session_id, session.device_name) == (player.page.evaluate("window.session.sessionId"), "Kitchen")
    # Autoplay: the next heartbeat names the new stream, in the same slot; nothing is sent sooner.
    player.page.evaluate("window.session.changeStream('movie-2')")
    assert len(player.heartbeat_calls()) == 6
    player.run_for(INTERVAL * 1000)
    player.wait_for("allowed", 7)
    assert len(player.heartbeat_calls()) == 7
    [session] = get_live_state().sessions("acct")
    assert (session.session_id, session.stream_id) == (player.page.evaluate("window.session.sessionId"), "movie-2")


def test_refusal_stops_the_loop_and_lists_the_other_screens(live_browser, live_gunicorn, token_env) -> None:
    service = live_gunicorn(workers=2, **SERVICE_ENV, **token_env)
    token = make_token("family")
    for n in range(3):
        body = {"streamId": f"ep-{n}", "sessionId": f"tv-{n}", "deviceName": f"TV {n}"}
        answer = post_heartbeat(service.url, body, token)
        assert answer.status_code == 200
    player = PagePlayer(live_browser, service.url, streamId="movie", sessionId="phone", tokens=[token])
    refused = player.wait_for("refused")["detail"]
    assert refused["code"] == "concurrency_limit_reached" and refused["limit"] == 3
    assert sorted(s["deviceName"] for s in refused["sessions"]) == ["TV 0", "TV 1", "TV 2"]
    assert player.page.evaluate("window.session.state") == "refused"
    player.run_for(10 * 60 * 1000)
    assert len(player.heartbeat_calls()) == 1  # a refused player does not knock again by itself


def test_errors_keep_playing_back_off_with_jitter_report_after_the_grace_and_recover(
    live_browser, live_gunicorn, own_redis
) -> None:
    redis = own_redis()
    # No circuit breaker: the recovery below must not wait for its real-time pause.
    service = live_gunicorn(workers=1, REDIS_URL=redis.url, REDIS_BREAKER_SECONDS="0", **SERVICE_ENV)
    # jitter 0.5: each retry waits its backoff plus 10% (RETRY_JITTER 0.2 x 0.5).
    player = PagePlayer(live_browser, service.url, userId="acct", streamId="movie", jitter=0.5, maxRetrySeconds=30)
    player.wait_for("allowed")
    redis.stop()
    expected_waits = [INTERVAL * 1000, 7700, 15400, 30800, 33000, 33000]  # capped at 30 s (+10%)
    answers = 1
    for n, wait in enumerate(expected_waits):
        player.idle()
        player.run_for(wait - 1)
        assert len(player.heartbeat_calls()) == n + 1, f"retry {n} came early"
        player.run_for(1)
        answers += 1
        assert player.wait_for("answer", answers)["detail"]["status"] == 500
        assert player.page.evaluate("window.session.state") == "playing"
        errors = player.events("error")
        # The grace is 2 x interval (the service's default TTL): the third failed heartbeat, 14.7 s on.
        assert len(errors) == (0 if n < 1 else 1), (n, errors)
    error = player.events("error")[0]["detail"]
    assert error["code"] == "internal_error" and error["correlationId"]
    assert gaps(player.heartbeat_calls()) == expected_waits
    redis.start()
    player.run_for(33000)
    recovered = player.wait_for("allowed", 2)["detail"]
    assert recovered["recovered"] is True and recovered["first"] is False
    assert len(player.events("error")) == 1
    assert gaps(player.heartbeat_calls()) == [*expected_waits, 33000]


def test_a_service_that_does_not_answer_is_a_time_out_and_playback_goes_on(
    live_browser, live_gunicorn, own_redis
) -> None:
    redis = own_redis()
    service = live_gunicorn(workers=1, REDIS_URL=redis.url, REDIS_SOCKET_TIMEOUT="25", **SERVICE_ENV)
    player = PagePlayer(
        live_browser, service.url, userId="acct", streamId="movie", requestTimeoutSeconds=3, errorGraceSeconds=5
    )
    player.wait_for("allowed")
    redis.pause()
    try:
        player.run_for(INTERVAL * 1000)
        # Sent, and its time-out timer set, in the task that ran the heartbeat timer.
        assert len(player.heartbeat_calls()) == 2
        player.run_for(3000)  # the request's own time-out, on the page's clock
        error = player.wait_for("error")["detail"]
        assert error["code"] == "timeout" and error["failures"] == 1
        assert player.page.evaluate("window.session.state") == "playing"
    finally:
        redis.resume()


def test_network_errors_keep_playing_and_are_retried_at_the_interval(live_browser, live_gunicorn) -> None:
    service = live_gunicorn(workers=1, **SERVICE_ENV)
    player = PagePlayer(live_browser, service.url, userId="acct", streamId="movie")
    player.wait_for("allowed")
    service.stop()
    # Each failure schedules the next try from when it failed: interval, interval, 2 x interval.
    for step in (1, 1, 2):
        player.idle()
        player.run_for(step * INTERVAL * 1000)
    assert gaps(player.heartbeat_calls()) == [INTERVAL * 1000, INTERVAL * 1000, 2 * INTERVAL * 1000]
    assert player.events("error")[0]["detail"]["code"] == "network_error"
    assert player.page.evaluate("window.session.state") == "playing"


def test_a_retry_cap_below_the_interval_still_waits_the_interval(live_browser, live_gunicorn) -> None:
    service = live_gunicorn(workers=1, **SERVICE_ENV)
    # maxRetrySeconds under the interval: the cap may shorten the backoff, never the interval.
    player = PagePlayer(live_browser, service.url, userId="acct", streamId="movie", maxRetrySeconds=3)
    player.wait_for("allowed")
    service.stop()
    for n in range(2, 6):
        player.idle()
        player.run_for(INTERVAL * 1000 - 1)
        assert len(player.heartbeat_calls()) == n - 1, f"heartbeat {n} came early"
        player.run_for(1)
        assert len(player.heartbeat_calls()) == n
    assert gaps(player.heartbeat_calls()) == [INTERVAL * 1000] * 4
    assert player.page.evaluate("window.session.state") == "playing"


def test_stop_before_the_first_answer_frees_the_slot_the_service_gave(live_browser, live_gunicorn) -> None:
    service = live_gunicorn(workers=1, **SERVICE_ENV)
    # The first heartbeat reaches the service (which admits it) but its answer is held back:
    # the viewer stops while the player is still starting.
    held: list = []
    player = PagePlayer(
        live_browser, service.url, userId="acct", streamId="movie",
        routes={"**/heartbeat": lambda route: held.append((route, fetch_closing(route)))},
    )  # fmt: skip
    wait_until(lambda: player.page.evaluate("window.calls.length") == 1 and held, 15, "the first heartbeat held")
    [(_, answer)] = held
    assert answer.status == 200
    session_id = player.page.evaluate("window.session.sessionId")
    assert [s.session_id for s in get_live_state().sessions("acct")] == [session_id]
    assert player.page.evaluate("window.session.state") == "starting"

    player.page.evaluate("window.session.stop()")  # resolves once the service answered the stop
    assert get_live_state().sessions("acct") == []
    assert [(e["detail"]["code"], e["detail"]["local"]) for e in player.events("stopped")] == [
        ("stopped_locally", True)
    ]
    assert player.events("allowed") == []
    player.run_for(5 * 60 * 1000)
    assert len(player.heartbeat_calls()) == 1


def test_a_stop_that_lands_after_the_next_start_does_not_end_the_new_session(
    live_browser, live_gunicorn, holding_proxy
) -> None:
    service = live_gunicorn(workers=2, **SERVICE_ENV)
    # The page comes through a proxy that holds the stop back until the session played again.
    proxy = holding_proxy(service)
    player = PagePlayer(live_browser, proxy.url, userId="acct", streamId="movie")
    player.wait_for("allowed")
    stopped_id = player.page.evaluate("window.session.sessionId")
    proxy.hold("/heartbeat/stop")
    player.page.evaluate("window.stopping = window.session.stop(); window.session.start()")
    assert player.wait_for("allowed", 2)["detail"]["first"] is True
    wait_until(lambda: len(proxy.arrived) == 1, 15, "the stop at the proxy")
    assert json.loads(proxy.arrived[0][1])["sessionId"] == stopped_id
    proxy.release()
    player.page.evaluate("window.stopping")  # resolves once the service answered the stop
    new_id = player.page.evaluate("window.session.sessionId")
    assert [s.session_id for s in get_live_state().sessions("acct")] == [new_id]
    assert new_id != stopped_id


def test_an_expired_token_is_replaced_once_through_get_token(live_browser, live_gunicorn, token_env) -> None:
    service = live_gunicorn(workers=1, PLAYBACK_TOKEN_LEEWAY_SECONDS="0", **SERVICE_ENV, **token_env)
    expired, fresh = make_token("acct", expires_in=-60), make_token("acct")
    player = PagePlayer(live_browser, service.url, streamId="movie", tokens=[expired, fresh])
    player.wait_for("allowed")
    assert player.page.evaluate("window.tokenCalls") == 2
    assert [e["detail"]["status"] for e in player.events("answer")] == [401, 200]

    again = PagePlayer(live_browser, service.url, streamId="movie", sessionId="other", tokens=[expired, expired])
    refused = again.wait_for("refused")["detail"]
    assert refused["code"] == "token_expired" and refused["status"] == 401
    again.run_for(5 * 60 * 1000)
    assert again.page.evaluate("window.tokenCalls") == 2  # one refresh, not a loop
    assert len(again.heartbeat_calls()) == 2


def test_stop_frees_the_slot_and_stop_other_stops_another_screen(live_browser, live_gunicorn, token_env) -> None:
    service = live_gunicorn(workers=2, **SERVICE_ENV, **token_env)
    token = make_token("family")
    tv = {"streamId": "ep", "sessionId": "tv"}
    assert post_heartbeat(service.url, tv, token).ok
    player = PagePlayer(live_browser, service.url, streamId="movie", sessionId="laptop", tokens=[token])
    player.wait_for("allowed")
    assert {s.session_id for s in get_live_state().sessions("family")} == {"tv", "laptop"}

    listed = player.page.evaluate("window.session.listSessions()")
    assert (listed["limit"], sorted(s["sessionId"] for s in listed["sessions"])) == (3, ["laptop", "tv"])
    player.page.evaluate("window.session.stopOther('tv')")
    assert [s.session_id for s in get_live_state().sessions("family")] == ["laptop"]
    answer = post_heartbeat(service.url, tv, token)
    assert (answer.status_code, answer.json()["code"]) == (400, "session_stopped")

    player.page.evaluate("window.session.stop()")
    stopped = player.wait_for("stopped")["detail"]
    assert (stopped["code"], stopped["local"]) == ("stopped_locally", True)
    assert get_live_state().sessions("family") == []
    player.run_for(5 * 60 * 1000)
    assert len(player.heartbeat_calls()) == 1


def test_stop_other_with_a_session_token_is_refused_with_the_service_code(
    live_browser, live_gunicorn, token_env
) -> None:
    service = live_gunicorn(workers=1, **SERVICE_ENV, **token_env)
    player = PagePlayer(
        live_browser, service.url, streamId="movie", sessionId="laptop", tokens=[make_token("family", sid="laptop")]
    )
    player.wait_for("allowed")
    error = player.page.evaluate(
        "window.session.stopOther('tv').then(() => null, (e) => ({ name: e.name, code: e.code, status: e.status }))"
    )
    assert error == {"name": "StreamLimitError", "code": "token_mismatch", "status": 403}


def test_a_page_that_forbids_workers_still_sends_its_heartbeats(live_browser, live_gunicorn) -> None:
    service = live_gunicorn(workers=1, **SERVICE_ENV)
    # The page's scripts may run, but no Worker may be made from a blob: URL.
    player = PagePlayer(
        live_browser, service.url, csp="script-src 'self' 'unsafe-inline'; worker-src 'none'",
        userId="acct", streamId="movie", timer="worker",
    )  # fmt: skip
    player.wait_for("allowed")
    deadline = time.monotonic() + 5
    while player.page.evaluate("window.session.timer.kind") != "main" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert player.page.evaluate("window.session.timer.kind") == "main"
    # The page's own timer, on the page's clock, keeps the interval.
    for n in range(2, 4):
        player.run_for(INTERVAL * 1000)
        player.wait_for("allowed", n)
    assert gaps(player.heartbeat_calls()) == [INTERVAL * 1000, INTERVAL * 1000]


@pytest.fixture
def player_site() -> Iterator[str]:
    """A web site of the test's own on loopback (another origin than the service), serving a blank page."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<!doctype html><title>a player</title>")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://localhost:{server.server_port}"
    server.shutdown()
    server.server_close()


CROSS_ORIGIN_START = """async ([service, userId]) => {
  const { StreamLimitSession } = await import(service + '/static/streamlimit/player.js');
  const session = new StreamLimitSession({ endpoint: service, userId, streamId: 'movie', timer: 'main',
                                           errorGraceSeconds: 0 });
  return await new Promise((resolve) => {
    session.on('allowed', (detail) => resolve({ type: 'allowed', limit: detail.limit }));
    session.on('error', (detail) => resolve({ type: 'error', code: detail.code }));
    session.start();
  });
}"""


def test_a_player_on_another_site_needs_that_site_in_player_allowed_origins(
    live_browser, live_gunicorn, player_site
) -> None:
    allowing = live_gunicorn(workers=1, PLAYER_ALLOWED_ORIGINS=player_site, **SERVICE_ENV)
    closed = live_gunicorn(workers=1, **SERVICE_ENV)
    page = live_browser.new_page()
    page.goto(f"{player_site}/watch")
    # The module loads from the service whatever the site (static files allow every origin) ...
    assert page.evaluate(CROSS_ORIGIN_START, [allowing.url, "site-viewer"]) == {"type": "allowed", "limit": 3}
    assert len(get_live_state().sessions("site-viewer")) == 1
    # ... but only a service that lists the site lets its page call the API.
    assert page.evaluate(CROSS_ORIGIN_START, [closed.url, "other-viewer"]) == {"type": "error", "code": "network_error"}
    assert get_live_state().sessions("other-viewer") == []


# --- Policy inputs, refusals by a rule, hand-off (issue 20) ------------------------------------------------

# The family plan as every account's rules (players without tokens have no plan).
FAMILY_RULES = {"maxStreams": 4, "devices": {"mobile": 2, "tv": 3}, "weights": {"uhd": 2}}
FAMILY_FOR_ALL = {
    "default": FAMILY_RULES,
    "plans": {"family": FAMILY_RULES, "single": {"maxStreams": 1}},
    "sameDeviceTakeover": True,
    "deviceLabels": {"mobile": "phones", "tv": "TVs"},
}


@pytest.fixture
def family_policy(key_prefix: str) -> None:
    """FAMILY_FOR_ALL in force on the test's prefix, before any service of the test starts."""
    get_policy_store().apply(FAMILY_FOR_ALL, applied_by="test")


def test_the_device_id_is_one_per_browser_profile_and_goes_with_the_class_and_quality(
    live_browser, live_gunicorn, family_policy
) -> None:
    service = live_gunicorn(workers=1, **SERVICE_ENV)
    context = live_browser.new_context()
    tv = PagePlayer(
        context, service.url, userId="acct", streamId="movie", sessionId="tv", deviceClass="tv", quality="uhd"
    )
    tv.wait_for("allowed")
    device_id = tv.page.evaluate("window.session.deviceId")
    assert device_id and device_id == tv.page.evaluate("localStorage.getItem('streamlimit.deviceId')")
    [sent] = tv.heartbeat_bodies()
    assert (sent["deviceId"], sent["deviceClass"], sent["quality"]) == (device_id, "tv", "uhd")
    [live] = get_live_state().sessions("acct")
    assert (live.device_id, live.device_class, live.quality, live.slots) == (device_id, "tv", "uhd", 2)
    # Another profile has an id of its own; one given as an option is used as is; null sends none.
    other = PagePlayer(live_browser, service.url, userId="acct2", streamId="movie")
    other.wait_for("allowed")
    assert other.page.evaluate("window.session.deviceId") not in (None, device_id)
    given = PagePlayer(live_browser, service.url, userId="acct3", streamId="movie", deviceId="living-room-tv")
    given.wait_for("allowed")
    assert given.heartbeat_bodies()[0]["deviceId"] == "living-room-tv"
    none = PagePlayer(live_browser, service.url, userId="acct4", streamId="movie", deviceId=None)
    none.wait_for("allowed")
    assert set(none.heartbeat_bodies()[0]) == {"userId", "streamId", "sessionId"}
    # sameDeviceTakeover: a restarted player of the same profile (a new session id) takes its own slot.
    restarted = PagePlayer(context, service.url, userId="acct", streamId="movie", sessionId="tv-2", deviceClass="tv")
    assert restarted.wait_for("allowed")["detail"]["first"] is True
    assert [s.session_id for s in get_live_state().sessions("acct")] == ["tv-2"]
    tv.run_for(INTERVAL * 1000)
    assert tv.wait_for("stopped")["detail"]["code"] == "session_replaced"
    context.close()


def test_a_refusal_by_a_rule_brings_the_rule_its_words_and_the_decision_id(
    live_browser, live_gunicorn, family_policy
) -> None:
    service = live_gunicorn(workers=1, **SERVICE_ENV)
    for n in range(2):
        body = {"userId": "acct", "streamId": "movie", "sessionId": f"phone-{n}", "deviceClass": "mobile",
                "deviceId": f"phone-{n}"}  # fmt: skip
        assert requests.post(f"{service.url}/heartbeat", json=body, headers={"Connection": "close"}, timeout=10).ok
    player = PagePlayer(live_browser, service.url, userId="acct", streamId="movie", deviceClass="mobile")
    refused = player.wait_for("refused")["detail"]
    assert refused["code"] == "concurrency_limit_reached" and refused["status"] == 400
    assert refused["rule"] == {"name": "devices.mobile", "limit": 2, "active": 2}
    assert "already playing on 2 phones" in refused["message"]
    assert refused["decisionId"] == refused["body"]["decisionId"] and len(refused["decisionId"]) == 16


def test_hand_off_moves_playback_in_one_step_and_the_other_screen_is_told_where(
    live_browser, live_gunicorn, token_env, family_policy
) -> None:
    service = live_gunicorn(workers=2, **SERVICE_ENV, **token_env)
    # A plan of one slot: the account is full, and the hand-off still plays at once.
    phone = PagePlayer(
        live_browser, service.url, streamId="movie", sessionId="phone", deviceName="Phone",
        tokens=[make_token("acct", sid="phone", plan="single")],
    )  # fmt: skip
    phone.wait_for("allowed")
    tv = PagePlayer(
        live_browser, service.url, streamId="movie", sessionId="tv", deviceName="Living room TV",
        tokens=[make_token("acct", sid="tv", plan="single")], accountToken=make_token("acct", plan="single"),
    )  # fmt: skip
    assert tv.wait_for("refused")["detail"]["code"] == "concurrency_limit_reached"
    tv.page.evaluate("window.session.handOff('phone')")
    assert tv.wait_for("allowed")["detail"]["first"] is True
    assert [s.session_id for s in get_live_state().sessions("acct")] == ["tv"]
    phone.run_for(INTERVAL * 1000)
    told = phone.wait_for("stopped")["detail"]
    assert (told["code"], told["message"], told["local"]) == (
        "session_handed_off",
        "Playback moved to Living room TV.",
        False,
    )
    assert phone.page.evaluate("window.session.state") == "stopped"
    # Only the heartbeat that handed off names it, with the account token; the next ones are the session's own.
    tv.run_for(INTERVAL * 1000)
    tv.wait_for("allowed", 2)
    assert [b.get("replaces") for b in tv.heartbeat_bodies()] == [None, "phone", None]
    assert [s.session_id for s in get_live_state().sessions("acct")] == ["tv"]


def test_a_hand_off_the_service_refuses_ends_nothing_and_says_why(live_browser, live_gunicorn, family_policy) -> None:
    service = live_gunicorn(workers=1, **SERVICE_ENV)
    other = {"userId": "someone-else", "streamId": "movie", "sessionId": "theirs"}
    assert requests.post(f"{service.url}/heartbeat", json=other, headers={"Connection": "close"}, timeout=10).ok
    player = PagePlayer(live_browser, service.url, userId="acct", streamId="movie", handOff="theirs")
    refused = player.wait_for("refused")["detail"]
    assert (refused["code"], refused["status"], refused["replaces"]) == ("replace_not_allowed", 403, "theirs")
    assert [s.session_id for s in get_live_state().sessions("someone-else")] == ["theirs"]
    assert get_live_state().sessions("acct") == []
    # A playing session hands nothing off (the service reads `replaces` at a first heartbeat only).
    playing = PagePlayer(live_browser, service.url, userId="acct", streamId="movie")
    playing.wait_for("allowed")
    error = playing.page.evaluate("window.session.handOff('theirs').then(() => null, (e) => e.message)")
    assert error.startswith("handOff: this session is already playing")
