"""Sockets that send headers announcing a body and then nothing (issue 19, item 1), on a real gunicorn.

A body must arrive within REQUEST_BODY_TIMEOUT_SECONDS (408 JSON, socket
closed), and past GUNICORN_WORKER_CONNECTIONS a worker sheds its oldest idle
connections (streamlimit/gevent_worker.py), so probes and players keep
answering through 10,000 such sockets from this machine. Latency figures go
to test-output/idle_bodies.json; the suite asserts answers, not speed
(``bench/idle_bodies.py`` prints the p99s).
"""

from __future__ import annotations

import json
import select
import socket
import time
from pathlib import Path

import pytest
import requests

from bench.idle_bodies import IdleBodyAttack, raise_open_file_limit
from bench.slow_clients import probe

pytestmark = pytest.mark.live_server_gunicorn

MEASURED = Path(__file__).resolve().parent.parent / "test-output" / "idle_bodies.json"
BODY = b'{"userId": "idle", "streamId": "movie", "sessionId": "tv"}'


def headers_only(port: int, length: int = len(BODY)) -> socket.socket:
    """A connection that sent ``POST /heartbeat`` headers announcing ``length`` bytes of body, and no body."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(
        f"POST /heartbeat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n".encode()
    )
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (fails after the socket's time-out)."""
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received


def warm(url: str) -> None:
    # Every worker has booted once a few requests have been answered.
    for _ in range(10):
        assert requests.get(f"{url}/healthz", timeout=60).status_code == 200


def test_a_body_that_does_not_arrive_in_time_gets_408_json_and_the_socket_is_closed(live_gunicorn) -> None:
    server = live_gunicorn(workers=1, REQUEST_BODY_TIMEOUT_SECONDS="1")
    warm(server.url)
    started = time.monotonic()
    with headers_only(server.port) as sock:
        answer = read_until_closed(sock)  # returns only once the server closed it
    waited = time.monotonic() - started
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer
    assert b"Content-Type: application/json" in head
    assert json.loads(body)["code"] == "request_body_timeout"
    assert waited >= 1.0  # not before the time-out


def test_the_deadline_is_for_the_whole_body_not_each_byte(live_gunicorn) -> None:
    server = live_gunicorn(workers=1, REQUEST_BODY_TIMEOUT_SECONDS="1")
    warm(server.url)
    with headers_only(server.port) as sock:
        # A byte every 0.2 s: each read gets something, the body as a whole is late.
        for byte in BODY[:-1]:
            if select.select([sock], [], [], 0.2)[0]:
                break  # the server answered (or closed)
            sock.sendall(bytes([byte]))
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer


def test_a_body_sent_in_time_is_served(live_gunicorn) -> None:
    server = live_gunicorn(workers=1, REQUEST_BODY_TIMEOUT_SECONDS="5")
    warm(server.url)
    with headers_only(server.port) as sock:
        time.sleep(0.5)
        sock.sendall(BODY)
        sock.settimeout(30)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 200 "), answer


def test_past_the_cap_the_oldest_idle_connections_are_shed_and_healthz_answers(live_gunicorn) -> None:
    # A long body time-out: only shedding can free the slots here.
    server = live_gunicorn(workers=1, GUNICORN_WORKER_CONNECTIONS="20", REQUEST_BODY_TIMEOUT_SECONDS="120")
    warm(server.url)
    idle = []
    for _ in range(40):
        idle.append(headers_only(server.port))
        time.sleep(0.02)  # accepted in this order
    for _ in range(5):
        assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
    time.sleep(1)
    # Read before the sockets close below (the ones still waiting then see a short body, and are answered).
    heartbeats_served = [line for line in server.log_lines() if line.get("request") == "POST /heartbeat"]
    closed = []
    for sock in idle:
        sock.setblocking(False)
        try:
            closed.append(sock.recv(1, socket.MSG_PEEK) == b"")
        except BlockingIOError:
            closed.append(False)
        except OSError:
            closed.append(True)
        sock.close()
    # The oldest were shed, the newest still wait (20 per worker at most).
    assert all(closed[:15]), closed
    assert not any(closed[-15:]), closed
    # A shed connection is closed unanswered: the application never ran for its missing body.
    assert heartbeats_served == [], heartbeats_served


def test_ten_thousand_idle_body_sockets_do_not_stop_healthz_or_heartbeats(live_gunicorn) -> None:
    limit = raise_open_file_limit(20_000)
    if limit < 15_000:
        pytest.fail(f"the open-file limit is {limit}: raise the hard limit (ulimit -Hn) to 20000 for this test")
    server = live_gunicorn(workers=3)
    warm(server.url)
    attack = IdleBodyAttack(server.port, 10_000).start()
    try:
        # Once more sockets than the workers' pools hold (3 x 1,000) have connected, the
        # old worker answered nothing more until the attacker let go.
        deadline = time.monotonic() + 90
        while attack.connected < 3_500 and time.monotonic() < deadline:
            time.sleep(0.2)
        reached = attack.connected
        during = probe(server.port, seconds=15, clients=2, timeout=5)
    finally:
        report = attack.stop()
    MEASURED.parent.mkdir(exist_ok=True)
    MEASURED.write_text(
        json.dumps(
            {
                kind: {"p50_ms": lat.percentile(50), "p99_ms": lat.percentile(99), "requests": len(lat.samples)}
                for kind, lat in during.items()
            }
            | {"attack": report.__dict__, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            indent=2,
        )
    )
    assert reached >= 3_500, f"the attack reached only {reached} sockets: {report.summary()}"
    for kind, latencies in during.items():
        assert len(latencies.samples) >= 10, (kind, latencies.summary())
        # Every answer within the 5 s time-out, and the right one (200; 400 for a full account).
        assert latencies.failed == 0, (kind, latencies.summary(), report.summary())
