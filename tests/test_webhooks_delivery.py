"""deliver_events end to end: real worker processes, real Redis streams, real HTTP receivers on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict

import orjson

from heartbeat.limiter.events import EventType
from tests.conftest import ROOT, free_port
from tests.webhook_fixtures import metric, query, scrape, wait_for
from webhooks.signing import new_secret


def in_order_per_account(events: list[dict]) -> dict[str, list[int]]:
    """Each account's sequence numbers in the order they first arrived."""
    seen: set[str] = set()
    order: dict[str, list[int]] = defaultdict(list)
    for event in events:
        if event["id"] in seen:
            continue
        seen.add(event["id"])
        order[event["data"]["userId"]].append(event["data"]["seq"])
    return order


def test_events_arrive_signed_and_the_shipped_receiver_verifies_them(sqlite_database, deployment) -> None:
    secret = new_secret()
    site = deployment(sqlite_database)
    port = free_port()
    receiver = subprocess.Popen(
        [sys.executable, "-m", "devtools.webhook_receiver", "--secret", secret, "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    site.processes.append(receiver)
    site.add_endpoint(f"http://127.0.0.1:{port}/hook", secret, events="session.started,session.ended")
    site.start_worker("w1")
    written = site.write_events(["acct-a", "acct-b"], 3)
    site.write_events(["acct-a"], 2, EventType.SESSION_REFUSED)  # not subscribed: never sent
    lines = []
    deadline = time.monotonic() + 30
    while len(lines) < len(written) and time.monotonic() < deadline:
        lines.append(orjson.loads(receiver.stdout.readline()))
    assert [line["webhook-id"] for line in lines] == [line["event"]["id"] for line in lines]
    assert all(line["verified"] for line in lines)
    assert sorted(line["event"]["id"] for line in lines) == sorted(event.id for event in written)
    assert {line["event"]["type"] for line in lines} == {"session.started"}


def test_answers_3xx_4xx_5xx_garbage_and_a_10_mb_body_are_handled_and_counted(sqlite_database, deployment, receivers):
    secret = new_secret()
    site = deployment(sqlite_database)
    trap = receivers(secret)  # where the redirect points: must never be asked
    modes = {"redirect": "3xx", "status:404": "4xx", "status:503": "5xx", "garbage": "bad_response"}
    started = {mode: receivers(secret, mode=mode, redirect_to=trap.url) for mode in [*modes, "big"]}
    ids = {mode: site.add_endpoint(receiver.url, secret) for mode, receiver in started.items()}
    metrics_port = free_port()
    worker = site.start_worker("w1", METRICS_PORT=str(metrics_port))
    site.write_events(["acct-a"], 2)
    wait_for(lambda: len(started["big"].ids()) == 2, 30, "the 10 MB answerer got both events")
    wait_for(lambda: all(len(started[mode].ids()) >= 2 for mode in modes), 30, "every failing endpoint retried")

    def counted() -> bool:
        text = scrape(metrics_port)
        failures = all(
            metric(text, "streamlimit_webhook_events_failed_total", endpoint=str(ids[mode]), reason=reason) >= 2
            for mode, reason in modes.items()
        )
        big = str(ids["big"])
        delivered = metric(text, "streamlimit_webhook_events_delivered_total", endpoint=big) == 2
        return failures and delivered and metric(text, "streamlimit_webhook_answers_truncated_total", endpoint=big) == 2

    wait_for(counted, 30, "the failures by reason, and the big answer delivered and counted as cut")
    assert trap.ids() == []  # redirects are not followed
    assert worker.poll() is None
    text = scrape(metrics_port)
    assert "127.0.0.1" not in text  # endpoint ids, never URLs
    for mode in modes:
        assert metric(text, "streamlimit_webhook_events_delivered_total", endpoint=str(ids[mode])) == 0


def test_a_receiver_down_for_a_while_gets_every_event_afterwards_in_order(sqlite_database, deployment, receivers):
    # "Down for 10 minutes", scaled: the retry schedule runs a hundred times faster (WEBHOOK_RETRY_SCALE=0.01),
    # so 6 s down stands for 10 minutes, over the same retries (5 s, 30 s, 2 min, 5 min, 10 min scaled).
    secret = new_secret()
    site = deployment(sqlite_database)
    receiver = receivers(secret)
    receiver.stop()
    site.add_endpoint(receiver.url, secret)
    site.start_worker("w1")
    accounts = [f"acct-{n}" for n in range(8)]
    written = []
    for second in range(6):  # events keep coming while it is down
        written += site.write_events(accounts, 2, start=2 * second)
        time.sleep(1)
    receiver.start()
    wait_for(lambda: {event["id"] for event in receiver.events()} >= {e.id for e in written}, 60, "every event")
    order = in_order_per_account(receiver.events())
    assert order == {account: list(range(12)) for account in accounts}


def test_a_hanging_receiver_does_not_hold_back_another_endpoint(sqlite_database, deployment, receivers):
    secret = new_secret()
    site = deployment(sqlite_database, WEBHOOK_TIMEOUT_SECONDS="10", WEBHOOK_LEASE_SECONDS="30")
    hanging = receivers(secret, mode="hang")
    healthy = receivers(secret)
    endpoint_ids = [site.add_endpoint(hanging.url, secret), site.add_endpoint(healthy.url, secret)]
    site.start_worker("w1")
    # The worker up and holding every stream of both endpoints first: the 8 s below are for delivery, not for
    # starting a process (which alone can take that long on a loaded machine).
    leases = [shard.webhook_lease(endpoint_id) for endpoint_id in endpoint_ids for shard in site.layout.shards]
    wait_for(lambda: site.redis.exists(*leases) == len(leases), 60, "the worker holding every stream")
    written = site.write_events([f"acct-{n}" for n in range(10)], 3)
    # Within the 10 s the hanging endpoint holds its requests, the other got everything.
    wait_for(lambda: len(set(healthy.ids())) == len(written), 8, "the healthy endpoint's events")
    assert hanging.ids()  # it was asked, and is still hanging


def test_a_worker_killed_mid_batch_loses_nothing(sqlite_database, deployment, receivers, redis_client):
    secret = new_secret()
    site = deployment(sqlite_database, WEBHOOK_CONCURRENCY="2", WEBHOOK_LEASE_SECONDS="5")
    receiver = receivers(secret, mode="slow", delay=0.02)
    endpoint_id = site.add_endpoint(receiver.url, secret)
    first = site.start_worker("first")
    written = site.write_events([f"acct-{n}" for n in range(20)], 15)
    wait_for(lambda: len(receiver.ids()) >= 40, 30, "the first worker under way")
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    group = f"webhook-{endpoint_id}"
    pending = sum(redis_client.xpending(shard.events, group)["pending"] for shard in site.layout.shards)
    assert pending > 0  # killed mid-batch: read, not all acknowledged
    assert len(set(receiver.ids())) < len(written)
    site.start_worker("second")
    wait_for(lambda: set(receiver.ids()) >= {e.id for e in written}, 60, "every event, through the second worker")
    order = in_order_per_account(receiver.events())
    assert all(seqs == sorted(seqs) for seqs in order.values())
    wait_for(
        lambda: sum(redis_client.xpending(s.events, group)["pending"] for s in site.layout.shards) == 0,
        10,
        "nothing pending",
    )


def test_several_workers_deliver_each_event_once(any_database, deployment, receivers):
    secret = new_secret()
    site = deployment(any_database)
    receiver = receivers(secret)
    site.add_endpoint(receiver.url, secret)
    workers = [site.start_worker(f"w{n}") for n in range(3)]
    time.sleep(3)  # all three registered: each holds its share of the streams
    written = site.write_events([f"acct-{n}" for n in range(30)], 20)
    wait_for(lambda: len(receiver.ids()) >= len(written), 60, "every event")
    time.sleep(1)
    assert sorted(receiver.ids()) == sorted(event.id for event in written)  # each once, none lost
    order = in_order_per_account(receiver.events())
    assert order == {f"acct-{n}": list(range(20)) for n in range(30)}
    assert all(worker.poll() is None for worker in workers)
    # The endpoint and its audit record are in this database (SQLite or PostgreSQL).
    assert query(any_database, "SELECT url FROM webhooks_endpoint") == [(receiver.url,)]
    assert query(any_database, "SELECT action, actor_name FROM dashboard_auditrecord") == [
        ("webhook_add", "manage.py webhooks")
    ]


def test_private_targets_are_refused_unless_allowed(sqlite_database, deployment, receivers):
    secret = new_secret()
    site = deployment(sqlite_database)
    receiver = receivers(secret)
    refused = site.manage(
        "webhooks", "add", receiver.url, "--secret", secret, env={"WEBHOOK_ALLOW_PRIVATE_TARGETS": ""}
    )
    assert refused.returncode == 1 and "loopback" in refused.stderr
    endpoint_id = site.add_endpoint(receiver.url, secret)  # allowed when added...
    metrics_port = free_port()
    site.start_worker("w1", WEBHOOK_ALLOW_PRIVATE_TARGETS="false", METRICS_PORT=str(metrics_port))
    site.write_events(["acct-a"], 1)
    wait_for(
        lambda: (
            metric(
                scrape(metrics_port),
                "streamlimit_webhook_events_failed_total",
                endpoint=str(endpoint_id),
                reason="refused_target",
            )
            >= 1
        ),
        30,
        "the refusal counted",
    )
    assert receiver.ids() == []  # ...but a worker without the setting never connects


def test_too_old_events_become_dead_letters_and_retry_sends_them(any_database, deployment, receivers):
    secret = new_secret()
    # Dead after 1.8 s (0.0005 h) instead of a day: the same path, shorter.
    site = deployment(any_database, WEBHOOK_MAX_AGE_HOURS="0.0005")
    receiver = receivers(secret, mode="status:500")
    endpoint_id = site.add_endpoint(receiver.url, secret)
    site.start_worker("w1")
    written = site.write_events(["acct-a", "acct-b"], 2)

    def dead() -> list[tuple]:
        return query(any_database, "SELECT event_id, attempts, last_error FROM webhooks_deadletter ORDER BY event_id")

    wait_for(lambda: len(dead()) == 4, 30, "four dead letters")
    assert sorted(row[0] for row in dead()) == sorted(event.id for event in written)
    assert all(row[1] >= 1 and row[2].startswith("5xx") for row in dead())
    # What the dashboard's "retry" writes (tests/test_webhooks_admin.py clicks it); a worker sends it once.
    receiver.mode = "ok"
    target = written[0].id
    asked_before = receiver.ids().count(target)  # its failed attempts
    query(
        any_database,
        "UPDATE webhooks_deadletter SET retry_requested_at = CURRENT_TIMESTAMP WHERE event_id = %s",
        target,
    )
    wait_for(lambda: receiver.ids().count(target) == asked_before + 1, 30, "the retried event, once")
    wait_for(lambda: len(dead()) == 3, 10, "its dead letter gone")
    assert query(any_database, "SELECT COUNT(*) FROM webhooks_endpoint WHERE id = %s", endpoint_id) == [(1,)]


def test_the_shipped_receiver_answers_401_to_a_bad_signature_and_204_to_a_good_one() -> None:
    import requests

    from tests.conftest import wait_for_port
    from webhooks.signing import Signer

    secret, port = new_secret(), free_port()
    receiver = subprocess.Popen(
        [sys.executable, "-m", "devtools.webhook_receiver", "--secret", secret, "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, receiver)
        body = b'{"id":"evt_1","type":"session.started","timestamp":"2026-12-07T00:00:00.000Z","data":{}}'
        url = f"http://127.0.0.1:{port}/"
        forged = requests.post(url, data=body, headers=Signer([new_secret()]).headers("evt_1", body), timeout=5)
        assert forged.status_code == 401
        good = requests.post(url, data=body, headers=Signer([new_secret(), secret]).headers("evt_1", body), timeout=5)
        assert good.status_code == 204
    finally:
        receiver.terminate()
        out, err = receiver.communicate(timeout=10)
    [line] = out.splitlines()
    assert orjson.loads(line)["event"]["id"] == "evt_1"
    assert "refused evt_1: bad signature" in err


def test_a_rotated_secret_signs_with_both_until_the_old_one_is_dropped(sqlite_database, deployment, receivers):
    from standardwebhooks.webhooks import Webhook

    old, new = new_secret(), new_secret()
    site = deployment(sqlite_database)
    receiver = receivers(old)  # a receiver that has not moved to the new secret yet
    site.add_endpoint(receiver.url, old)
    site.start_worker("w1")
    site.write_events(["acct-a"], 1)
    wait_for(lambda: len(receiver.arrivals) == 1, 30, "the first event")
    # What the admin's form saves for a new secret: the old one kept as the previous one.
    query(sqlite_database, "UPDATE webhooks_endpoint SET secret = %s, previous_secret = %s", new, old)
    time.sleep(3)  # the worker re-reads its endpoints every 2 s
    site.write_events(["acct-a"], 1, start=1)
    wait_for(lambda: len(receiver.arrivals) == 2, 30, "the second event")
    rotated = receiver.arrivals[1]
    assert rotated.verified  # the old secret still verifies...
    assert Webhook(new).verify(rotated.body, rotated.headers)  # ...and so does the new one
    assert rotated.headers["webhook-signature"].count("v1,") == 2
    assert receiver.arrivals[0].headers["webhook-signature"].count("v1,") == 1
