"""The worker model of gunicorn.conf.py under slow clients and a stalled Redis, on a real gunicorn.

These tests time requests because the issue asks them to show a bound; the
bounds are generous (bench/slow_clients.py measures the real numbers).
"""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.slow_clients import SlowClients, probe
from tests.tcp_state import ESTABLISHED, sockets_on, wait_for


def test_heartbeats_and_healthz_stay_fast_while_200_clients_trickle_a_byte_a_second(live_gunicorn) -> None:
    server = live_gunicorn(workers=3)
    # Every worker has booted once a few requests have been answered.
    for _ in range(10):
        assert requests.get(f"{server.url}/healthz", timeout=30).status_code == 200
    slow = SlowClients(server.port, 200).start()
    try:
        # Accepted (the accept queue is empty) and being read (no byte waits unread on the server's side).
        wait_for("every slow client accepted and read", lambda: all(s.rx_queue == 0 for s in sockets_on(server.port)))
        results = probe(server.port, seconds=8, clients=4, timeout=5)
        # Those still in their headers are cut off after keepalive (5 s), those
        # sending a body after REQUEST_BODY_TIMEOUT_SECONDS (5 s, with a 408).
        deadline = time.monotonic() + 20
        while any(open_by_kind := slow.still_open_by_kind()) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        slow.stop()
    for kind, latencies in results.items():
        assert len(latencies.samples) >= 20, kind
        assert latencies.failed == 0, (kind, latencies.summary())
        assert latencies.percentile(99) < 1000, (kind, latencies.summary())
    assert open_by_kind == (0, 0)


def test_healthz_answers_fast_while_redis_is_paused_under_heartbeats(live_gunicorn, own_redis) -> None:
    redis = own_redis()
    # A long time-out keeps the heartbeats waiting on Redis while /healthz is asked.
    server = live_gunicorn(workers=2, REDIS_URL=redis.url, REDIS_SOCKET_TIMEOUT="10")
    body = {"userId": "paused", "streamId": "movie", "sessionId": "tv"}
    # The first request may wait for a worker to boot (seconds on a busy machine): a bound, not a speed.
    assert requests.post(f"{server.url}/heartbeat", json=body, timeout=60).status_code == 200
    # Every worker reads the policy version in force once before Redis freezes (a worker that has
    # never read it asks once, and its other heartbeats wait for that answer, not on Redis).
    with ThreadPoolExecutor(8) as pool:
        warm = list(
            pool.map(
                lambda i: requests.post(f"{server.url}/heartbeat", json={**body, "sessionId": f"w{i}"}, timeout=60),
                range(16),
            )
        )
    assert {r.status_code for r in warm} <= {200, 400}
    statuses: list[int] = []

    def heartbeat(i: int) -> None:
        payload = {"userId": f"paused-{i}", "streamId": "movie", "sessionId": "tv"}
        statuses.append(requests.post(f"{server.url}/heartbeat", json=payload, timeout=60).status_code)

    in_flight = [threading.Thread(target=heartbeat, args=(i,)) for i in range(20)]
    redis.pause()
    try:
        for thread in in_flight:
            thread.start()
        # Every heartbeat waits on Redis: 20 connections to it hold a command the frozen server has not read.
        wait_for(
            "20 heartbeats waiting on the paused Redis",
            lambda: len([s for s in sockets_on(redis.port) if s.state == ESTABLISHED and s.rx_queue]) == 20,
        )
        timings = []
        for _ in range(20):
            started = time.perf_counter()
            response = requests.get(f"{server.url}/healthz", timeout=10)
            timings.append(time.perf_counter() - started)
            assert response.status_code == 200
            time.sleep(0.05)
        still_waiting = sum(thread.is_alive() for thread in in_flight)
    finally:
        redis.resume()
    for thread in in_flight:
        thread.join(timeout=60)
    assert still_waiting == 20, "the heartbeats should still have been waiting on the paused Redis"
    # /healthz takes milliseconds (bench/slow_clients.py); held up by the heartbeats it would wait for the
    # resume, after all 20. The bounds leave more than 5x to a busy machine.
    assert statistics.median(timings) < 0.5 and max(timings) < 2.5, timings
    # The pause was shorter than REDIS_SOCKET_TIMEOUT: they were all answered once Redis woke up.
    assert statuses == [200] * 20
