"""A player in a hidden tab keeps its pace: the library's Worker timer against Chrome's throttling.

Headless Chromium reports every page as visible, and Playwright keeps the pages
it drives visible too, so this test runs Debian's Chromium with a window, on an
Xvfb display of its own, without Playwright: one window, three tabs; the first
(blank) is in front, the demo player and a probe page behind it are hidden.
Chrome wakes the chained timers of a hidden tab only on whole seconds (and,
after minutes hidden, once a minute: docs/background-tabs.md has the
measurement); the probe shows it. The library's default Worker timer keeps the
interval. The heartbeats are read from the live gunicorn's request lines; the
gunicorn serves the demo and player.js collected from this checkout.

Throttled, a chained timer of INTERVAL seconds fires about INTERVAL + 1 s apart
(whole-second wake-ups); kept, INTERVAL plus a request's round trip (a few
hundredths of a second). The pace checks draw the line halfway, INTERVAL +
0.5 s: five times a round trip of 0.1 s, which only a very busy machine reaches.
"""

from __future__ import annotations

import datetime
import http.server
import itertools
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import CHROMIUM, needs_chromium

XVFB = shutil.which("Xvfb")
# Where X servers put their sockets (a fixed path of X11, not a temporary file of ours).
X11_SOCKETS = Path("/tmp/.X11-unix")  # noqa: S108
INTERVAL = 2
# Halfway between a kept pace (INTERVAL + a round trip) and a throttled one (INTERVAL + about 1 s).
THROTTLED_FROM = INTERVAL + 0.5
HEARTBEATS_WANTED = 14

pytestmark = [
    pytest.mark.browser,
    needs_chromium,
    pytest.mark.skipif(
        XVFB is None, reason="needs Xvfb for a windowed Chromium: apt-get install xvfb (make test does)"
    ),
]


@pytest.fixture
def x_display() -> Iterator[str]:
    """An Xvfb display of this test's own (":N"), stopped after."""
    number = next(n for n in range(90, 200) if not (X11_SOCKETS / f"X{n}").exists())
    process = subprocess.Popen(
        [XVFB, f":{number}", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not (X11_SOCKETS / f"X{number}").exists():
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            pytest.fail("Xvfb did not start")
        time.sleep(0.05)
    yield f":{number}"
    process.terminate()
    process.wait(timeout=10)


def request_times(service, request: str, match: Callable[[dict], bool]) -> list[float]:
    """When the service answered each request line ``request`` that ``match`` accepts (seconds)."""
    times = []
    for line in service.log_lines():
        if line.get("message") == "request_finished" and line.get("request") == request and match(line):
            stamp = datetime.datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
            times.append(stamp.timestamp())
    return times


# A page that reports, every 2 s from a plain chained setTimeout, whether it is
# hidden: the proof that the tabs behind the first one are hidden and throttled.
PROBE_PAGE = b"""<!doctype html><script>
function tick() { fetch("/tick/" + document.visibilityState, { method: "POST" }); setTimeout(tick, %d); }
tick();
</script>""" % (INTERVAL * 1000)


@pytest.fixture
def visibility_probe() -> Iterator[tuple[str, list[tuple[float, str]]]]:
    """A loopback HTTP server of the test's own serving PROBE_PAGE; yields its URL and the ticks it heard."""
    ticks: list[tuple[float, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(PROBE_PAGE)

        def do_POST(self) -> None:
            ticks.append((time.monotonic(), self.path.rsplit("/", 1)[-1]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/", ticks
    server.shutdown()
    server.server_close()


def test_a_hidden_tab_keeps_the_heartbeat_interval_with_the_worker_timer(
    live_gunicorn, static_from_source, x_display, visibility_probe
) -> None:
    probe_url, probe_ticks = visibility_probe
    service = live_gunicorn(
        workers=2, STREAMLIMIT_DEMO="true", HEARTBEAT_INTERVAL_SECONDS=str(INTERVAL), SESSION_TTL_SECONDS="6"
    )
    profile = tempfile.mkdtemp(prefix="streamlimit-test-chromium-")
    chromium = subprocess.Popen(
        [CHROMIUM, "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
         "about:blank", f"{service.url}/demo/?autoplay=1&account=hidden-tab", probe_url],
        env={**os.environ, "DISPLAY": x_display},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def heartbeats() -> list[float]:
        return request_times(
            service, "POST /heartbeat", lambda line: line.get("reqBody", {}).get("userId") == "hidden-tab"
        )

    try:
        # About 30 s of heartbeats and a few of start-up: a bound five times that.
        deadline = time.monotonic() + 5 * (HEARTBEATS_WANTED * INTERVAL + 5)
        while time.monotonic() < deadline and len(heartbeats()) < HEARTBEATS_WANTED:
            time.sleep(0.5)
    finally:
        chromium.terminate()
        chromium.wait(timeout=20)
        shutil.rmtree(profile, ignore_errors=True)
    hidden_probe = [at for at, state in probe_ticks if state == "hidden"]
    visible_probe = [at for at, state in probe_ticks if state != "hidden"]
    probe = [b - a for a, b in itertools.pairwise(hidden_probe)]
    # The startup (Chromium, the page, its token) may delay the first beats: judge the pace after it.
    player = [b - a for a, b in itertools.pairwise(heartbeats())][3:]
    assert len(player) >= 10, player
    # The tabs behind the first were hidden, and Chrome throttled the probe's plain timer to
    # whole-second wake-ups (3 s for a 2 s period) ...
    assert len(hidden_probe) >= 5 and not visible_probe, (hidden_probe, visible_probe)
    assert statistics.median(probe) >= THROTTLED_FROM, probe
    # ... while the player's Worker timer kept the interval (a median, so that one slow moment
    # of a busy machine is not the verdict) ...
    assert statistics.median(player) < THROTTLED_FROM, player
    # ... and never came sooner. Not a race: the service logs a heartbeat before it answers,
    # the player waits the interval after the answer, and the next line is logged after the
    # next heartbeat came, so each gap is the interval plus two parts of a round trip.
    assert min(player) >= INTERVAL, player
