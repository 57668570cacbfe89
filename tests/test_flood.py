"""A flood of made-up accounts against a real gunicorn and a 64 MB Redis (issue 19, item 2).

Anonymous players: one client inventing accounts as fast as it can. From one
network it is cut off by NEW_SESSIONS_PER_NETWORK_PER_MINUTE (429 with
Retry-After); from many networks (forwarded addresses behind the proxy, as a
botnet would come) it gets through, and then the analytics' memory budget
keeps Redis from filling: afterwards a real viewer still plays, and Redis'
memory is within the budget plus the live sessions.
"""

from __future__ import annotations

import json
import random
import threading
import time

import requests

from heartbeat.limiter.keys import KeyLayout

# 1 MB keeps about 1,500 accounts: a flood this machine's clients can send in a minute goes past it.
BUDGET_MB = 1
FLOOD_SECONDS = 60
# What one live session costs in Redis (its account's keys and the live index); bench/memory.py measures
# about 885 bytes: 1,500 allows for a made-up account's longer ids.
LIVE_SESSION_BYTES = 1_500


def flood(url: str, seconds: float, networks: bool, results: dict[int, int], stop: threading.Event) -> None:
    """Made-up accounts, each with one new session, one request after another (keep-alive), until ``seconds``."""
    session = requests.Session()
    rng = random.Random()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stop.is_set():
        account = f"fake-{rng.getrandbits(64):016x}"
        forwarded = f"10.{rng.randrange(256)}.{rng.randrange(256)}.9" if networks else "203.0.113.9"
        body = {"userId": account, "streamId": "movie", "sessionId": "s0"}
        try:
            status = session.post(f"{url}/heartbeat", json=body, headers={"X-Forwarded-For": forwarded}, timeout=10)
            code = status.status_code
        except requests.RequestException:
            code = 0
        results[code] = results.get(code, 0) + 1


def run_flood(url: str, seconds: float, *, networks: bool, clients: int = 8) -> dict[int, int]:
    per_client: list[dict[int, int]] = [{} for _ in range(clients)]
    stop = threading.Event()
    threads = [
        threading.Thread(target=flood, args=(url, seconds, networks, per_client[n], stop), daemon=True)
        for n in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    stop.set()
    total: dict[int, int] = {}
    for counts in per_client:
        for code, n in counts.items():
            total[code] = total.get(code, 0) + n
    return total


def test_a_flood_of_made_up_accounts_leaves_room_for_a_real_viewer(
    live_gunicorn, own_redis, tmp_path, key_prefix: str
) -> None:
    redis = own_redis("--maxmemory", "64mb", "--maxmemory-policy", "noeviction")
    client = redis.client()
    baseline = client.info("memory")["used_memory"]
    server = live_gunicorn(
        workers=3,
        REDIS_URL=redis.url,
        DJANGO_BEHIND_PROXY="true",
        ACTIVITY_MEMORY_BUDGET_MB=str(BUDGET_MB),
        # The flood's events (a session.started each) live under a budget of their own.
        EVENTS_MEMORY_BUDGET_MB=str(BUDGET_MB),
        NEW_SESSIONS_PER_NETWORK_PER_MINUTE="120",
    )

    # One network: past 120 new sessions in its minute, 429 with Retry-After, and nothing kept of them.
    answers = []
    with requests.Session() as session:
        for n in range(130):
            answers.append(
                session.post(
                    f"{server.url}/heartbeat",
                    json={"userId": f"fake-one-{n}", "streamId": "movie", "sessionId": "s0"},
                    headers={"X-Forwarded-For": "203.0.113.9"},
                    timeout=10,
                )
            )
    statuses = [a.status_code for a in answers]
    assert set(statuses) == {200, 429}, statuses
    # 120 a minute: the last ten are refused, unless the minute turned meanwhile (then fewer).
    assert statuses[:120].count(200) == 120 or statuses.count(429) < 10, statuses
    refused = answers[-1] if statuses[-1] == 429 else next(a for a in answers if a.status_code == 429)
    assert refused.json()["code"] == "too_many_new_sessions" and 1 <= int(refused.headers["Retry-After"]) <= 60
    layout = KeyLayout(key_prefix)
    refused_ids = [f"fake-one-{n}" for n, status in enumerate(statuses) if status == 429]
    assert [u for u in refused_ids if client.zscore(layout.user(u).sessions, "s0") is not None] == []

    # Many networks for a minute: the flood gets through, and the budget keeps the analytics in bounds.
    many = run_flood(server.url, FLOOD_SECONDS, networks=True)
    admitted = many.get(200, 0)
    assert many.get(500, 0) == many.get(0, 0) == 0, many
    assert admitted > 0, many

    viewer = requests.post(
        f"{server.url}/heartbeat",
        json={"userId": "real-viewer", "streamId": "movie", "sessionId": "tv"},
        headers={"X-Forwarded-For": "198.51.100.7"},
        timeout=10,
    )
    assert viewer.status_code == 200 and viewer.json()["allowed"] is True

    time.sleep(2)  # the workers' last activity batches
    used = client.info("memory")["used_memory"]
    live = sum(client.zcard(key) for key in client.scan_iter(match="*:u:*:sessions", count=1000))
    # Both budgets (analytics and events), and the live sessions themselves.
    bound = baseline + 2 * BUDGET_MB * 1024 * 1024 + live * LIVE_SESSION_BYTES
    measured = {"flood": {str(k): v for k, v in many.items()}, "used": used, "live": live, "bound": bound}
    (tmp_path / "flood.json").write_text(json.dumps(measured))
    print("flood:", measured)
    assert used <= bound, measured
    seen = sum(client.zcard(key) for key in client.scan_iter(match="*:seen", count=1000))
    assert seen <= BUDGET_MB * 1024 * 1024 // 700, measured
