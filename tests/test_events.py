"""Events in the activity shards' Redis streams, and ``manage.py export_events`` (heartbeat/limiter/event_log.py).

Heartbeats' events are noted in the activity buffer and written by its flush;
``session.ended`` ``expired`` by the flush's trim of the live index, in Lua;
staff actions' events at once. Everything on the real Redis, under the test's
own prefix; the MONITOR and kill -9 tests on a redis-server of their own.
"""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from django.core.management import call_command
from django.core.management.base import CommandError
from redis import Redis

from dashboard import actions
from heartbeat.limiter.event_reader import read_events
from heartbeat.limiter.events import STREAM_FIELD, Event, EventType, timestamp_of
from heartbeat.limiter.manager import StreamManager
from heartbeat.limiter.outcomes import Outcome
from heartbeat.services import get_stream_manager
from tests.redis_monitor import commands_seen

FAR_FUTURE_MS = 2**52


def recorded(manager: StreamManager) -> list[Event]:
    """Every event in the manager's streams, in time order (all shards merged)."""
    return [Event.from_json(e.raw) for e in read_events(manager.client, manager.keys, 0, FAR_FUTURE_MS)]


def of_type(events: list[Event], type_: EventType) -> list[Event]:
    return [e for e in events if e.type is type_]


@pytest.fixture
def events_manager(make_manager: Callable[..., StreamManager]) -> StreamManager:
    """A StreamManager with events on, limit 2, 4 activity shards."""
    return make_manager(default_limit=2, activity_shards=4, events_enabled=True)


# --- Each event type, with its fields --------------------------------------------------


def test_heartbeats_write_started_and_refused_with_the_inputs_decided_on_and_no_token(
    events_manager: StreamManager,
) -> None:
    m = events_manager
    m.admit("acct", "movie-1", "tv", device_name="Living room", network="192.0.2.0/24")
    m.admit("acct", "movie-1", "tv", network="192.0.2.0/24")  # a repeat heartbeat: no event
    m.admit("acct", "movie-2", "phone", network="198.51.100.0/24")
    refused = m.admit("acct", "movie-3", "laptop", device_name="Work", network="203.0.113.0/24")
    assert refused.outcome is Outcome.LIMIT_REACHED
    assert recorded(m) == []  # noted, not written: no round trip of its own
    m.flush_activity()
    events = recorded(m)
    assert [(e.type, e.data["sessionId"]) for e in events] == [
        (EventType.SESSION_STARTED, "tv"),
        (EventType.SESSION_STARTED, "phone"),
        (EventType.SESSION_REFUSED, "laptop"),
    ]
    assert events[0].data == {
        "userId": "acct",
        "sessionId": "tv",
        "streamId": "movie-1",
        "deviceName": "Living room",
        "network": "192.0.2.0/24",
        "activeSessions": 1,
        "limit": 2,
        "limitSource": "default",
    }
    assert events[2].data == {
        "userId": "acct",
        "sessionId": "laptop",
        "streamId": "movie-3",
        "deviceName": "Work",
        "network": "203.0.113.0/24",
        "activeSessions": 2,
        "limit": 2,
        "limitSource": "default",
        "code": "concurrency_limit_reached",
    }
    # Redis' clock of the admission stamps them; ids are unique.
    assert all(abs(e.at_ms - time.time() * 1000) < 60_000 for e in events)
    assert len({e.id for e in events}) == 3 and all(e.id.startswith("evt_") and len(e.id) == 36 for e in events)


def test_every_refusal_is_an_event_with_its_api_code(make_manager: Callable[..., StreamManager]) -> None:
    m = make_manager(default_limit=1, events_enabled=True)
    m.admit("acct", "movie", "a")
    for _ in range(25):  # more than the dashboard keeps (20): events keep every one
        m.admit("acct", "movie", "b")
    m.evict("acct", "a")
    m.admit("acct", "movie", "a")  # cooling down
    m.block_new_sessions("acct", 60)
    m.admit("acct", "movie", "c")
    m.flush_activity()
    codes = [e.data["code"] for e in of_type(recorded(m), EventType.SESSION_REFUSED)]
    assert codes == ["concurrency_limit_reached"] * 25 + ["session_evicted", "account_blocked"]


def test_ended_sessions_say_why_stopped_evicted_or_replaced(make_manager: Callable[..., StreamManager]) -> None:
    m = make_manager(default_limit=2, events_enabled=True, limit_policy="replace_oldest")
    for session in ("a", "b", "c"):  # c replaces a
        m.admit("acct", "movie", session)
    m.stop("acct", "b", from_other_screen=True)
    m.evict("acct", "c", actor="support-anna")
    m.stop("acct", "never-seen")  # not live: no event
    m.flush_activity()
    ended = [e.data for e in of_type(recorded(m), EventType.SESSION_ENDED)]
    assert ended == [
        {"userId": "acct", "sessionId": "a", "reason": "replaced", "bySessionId": "c"},
        {"userId": "acct", "sessionId": "b", "reason": "stopped", "fromOtherScreen": True},
        {"userId": "acct", "sessionId": "c", "reason": "evicted", "by": "support-anna"},
    ]


@pytest.mark.django_db
def test_staff_actions_write_account_events_at_once_naming_who_did_it(staff_user, settings) -> None:
    settings.EVENTS_ENABLED = True
    m = get_stream_manager()
    actions.block_new_sessions(staff_user, "acct", 30, "sharing")
    actions.unblock_new_sessions("cli:ops", "acct")
    actions.unblock_new_sessions("cli:ops", "acct")  # no block to lift: no event
    actions.set_limit(staff_user, "acct", 5)
    actions.set_limit("cli:ops", "acct", None)
    # policy.changed goes to shard 0's stream, the account's events to its own: across streams the
    # merge orders by the millisecond Redis appended them (docs/operators/events.md), so not the same one.
    time.sleep(0.002)
    m.emit_policy_changed("cli:ops", {"version": 7})
    events = recorded(m)  # no flush: written with the action
    assert [(e.type, e.data.get("by")) for e in events] == [
        (EventType.ACCOUNT_BLOCKED, "support"),
        (EventType.ACCOUNT_UNBLOCKED, "cli:ops"),
        (EventType.ACCOUNT_LIMIT_CHANGED, "support"),
        (EventType.ACCOUNT_LIMIT_CHANGED, "cli:ops"),
        (EventType.POLICY_CHANGED, "cli:ops"),
    ]
    blocked = events[0].data
    assert blocked["userId"] == "acct" and blocked["seconds"] == 1800
    until = Event.from_json(
        json.dumps({"id": "x", "type": "account.blocked", "timestamp": blocked["until"], "data": {}})
    )
    assert abs(until.at_ms - events[0].at_ms - 1_800_000) < 5_000
    assert [e.data["override"] for e in events[2:4]] == [5, None]
    assert events[4].data == {"version": 7, "by": "cli:ops"}


# --- Expired: once, within TTL + 5 s, with no further heartbeat ----------------------------


def test_an_expired_session_is_reported_once_within_the_ttl_plus_5_s_without_another_heartbeat(
    make_manager: Callable[..., StreamManager],
) -> None:
    ttl = 2
    # Two "processes" on one prefix, both flushing: the expiry is still reported once.
    first = make_manager(session_ttl_seconds=ttl, activity_flush_seconds=0.2, activity_shards=4, events_enabled=True)
    second = make_manager(session_ttl_seconds=ttl, activity_flush_seconds=0.2, activity_shards=4, events_enabled=True)
    first.admit("acct", "movie", "left-open")
    first.admit("acct", "movie", "stopped")
    second.admit("other", "movie", "x")
    first.stop("acct", "stopped")  # ended otherwise: never reported expired
    started = time.monotonic()
    expired: list[Event] = []
    while time.monotonic() - started < ttl + 5 and not expired:
        # Neither "process" hears anything more; only their flusher threads run.
        expired = [e for e in of_type(recorded(first), EventType.SESSION_ENDED) if e.data["reason"] == "expired"]
        time.sleep(0.1)
    took = time.monotonic() - started
    assert expired, f"no expired event within TTL + 5 s ({ttl + 5} s)"
    assert took <= ttl + 5
    time.sleep(ttl + 1.5)  # more flushes by both: nothing more
    ended = of_type(recorded(first), EventType.SESSION_ENDED)
    by_session = sorted((e.data["sessionId"], e.data["reason"]) for e in ended)
    assert by_session == [("left-open", "expired"), ("stopped", "stopped"), ("x", "expired")]
    [left_open] = [e for e in ended if e.data["sessionId"] == "left-open"]
    [start] = [e for e in recorded(first) if e.type is EventType.SESSION_STARTED and e.data["sessionId"] == "left-open"]
    # Stamped when it expired: its last heartbeat (Redis' clock, written in Lua) plus the TTL.
    assert left_open.data["lastHeartbeatAt"] == timestamp_of(start.at_ms)
    assert left_open.at_ms == start.at_ms + ttl * 1000
    assert left_open.data == {
        "userId": "acct",
        "sessionId": "left-open",
        "reason": "expired",
        "lastHeartbeatAt": timestamp_of(start.at_ms),
    }


@pytest.mark.parametrize("topology", ["cluster"], indirect=True)
def test_events_on_a_redis_cluster_each_in_its_shards_slot(make_manager: Callable[..., StreamManager]) -> None:
    # Every write (the flush's scripts, the end's, a staff action's pipeline) reaches the shard's node.
    m = make_manager(default_limit=1, session_ttl_seconds=2, activity_shards=8, events_enabled=True)
    users = [f"user-{n}" for n in range(8)]
    for user in users:
        m.admit(user, "movie", "a")
        m.admit(user, "movie", "b")  # refused
        m.stop(user, "a")
        m.set_limit_override(user, 2, actor="cli:ops")
    m.admit("late", "movie", "x")
    m.flush_activity()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not of_type(recorded(m), EventType.SESSION_ENDED)[len(users) :]:
        time.sleep(0.2)  # "late" expires: reported by the flusher's trim on its shard's node
    events = recorded(m)
    for user in users:
        assert [str(e.type) for e in events if e.data.get("userId") == user] == [
            "session.started",
            "session.refused",
            "session.ended",
            "account.limit_changed",
        ]
    late = [e.data for e in of_type(events, EventType.SESSION_ENDED) if e.data["userId"] == "late"]
    assert [d["reason"] for d in late] == ["expired"]
    assert len({m.keys.shard_number(u) for u in users}) > 2


def test_a_staff_action_during_a_flush_in_flight_keeps_the_accounts_events_in_order(
    make_manager: Callable[..., StreamManager],
) -> None:
    # The flusher thread runs every 5 ms: it often holds an account's session.started, taken but
    # not yet written, when a staff action writes the account's next events at once.
    m = make_manager(default_limit=1, activity_flush_seconds=0.005, activity_shards=4, events_enabled=True)
    users = [f"user-{n}" for n in range(500)]
    for user in users:
        m.admit(user, "movie", "a")
        m.admit(user, "movie", "b")  # refused
        m.set_limit_override(user, 2, actor="cli:ops")
    m.flush_activity()
    events = recorded(m)
    for user in users:
        assert [str(e.type) for e in events if e.data.get("userId") == user] == [
            "session.started",
            "session.refused",
            "account.limit_changed",
        ], user


def test_a_mass_expiry_is_reported_whole_a_thousand_per_call(make_manager: Callable[..., StreamManager]) -> None:
    m = make_manager(session_ttl_seconds=1, activity_flush_seconds=0.2, activity_shards=1, events_enabled=True)
    for n in range(2_500):
        m.admit(f"viewer-{n}", "movie", "s")
    m.flush_activity()
    started = time.monotonic()
    expired: list[Event] = []
    while time.monotonic() - started < 1 + 5 and len(expired) < 2_500:
        time.sleep(0.2)
        expired = [e for e in of_type(recorded(m), EventType.SESSION_ENDED) if e.data["reason"] == "expired"]
    # 1,000 a call (so three calls at least): every session reported, each once.
    assert sorted(e.data["userId"] for e in expired) == sorted(f"viewer-{n}" for n in range(2_500))
    assert len({e.id for e in expired}) == 2_500


# --- Order per account ----------------------------------------------------------------------


def test_an_accounts_events_are_in_the_order_they_happened(make_manager: Callable[..., StreamManager]) -> None:
    m = make_manager(default_limit=2, activity_shards=4, events_enabled=True)
    m.admit("acct", "movie", "a")
    m.admit("acct", "movie", "b")
    m.admit("acct", "movie", "c")  # refused
    m.stop("acct", "a")  # written at once, after the pending three
    m.admit("acct", "movie", "c")  # started, pending
    m.block_new_sessions("acct", 60, actor="cli:ops")  # at once, after it
    m.admit("acct", "movie", "d")  # refused: blocked, pending
    m.set_limit_override("acct", 3, actor="cli:ops")
    m.admit("acct", "movie", "b")  # a repeat: no event
    m.evict("acct", actor="cli:ops")
    m.flush_activity()
    got = [
        (str(e.type), e.data.get("sessionId", ""), e.data.get("reason") or e.data.get("code") or "")
        for e in recorded(m)
        if e.data["userId"] == "acct"
    ]
    # An eviction of every session ends them in the order evict.lua found them (oldest heartbeat first).
    assert sorted(got[8:]) == [("session.ended", "b", "evicted"), ("session.ended", "c", "evicted")]
    assert got[:8] == [
        ("session.started", "a", ""),
        ("session.started", "b", ""),
        ("session.refused", "c", "concurrency_limit_reached"),
        ("session.ended", "a", "stopped"),
        ("session.started", "c", ""),
        ("account.blocked", "", ""),
        ("session.refused", "d", "account_blocked"),
        ("account.limit_changed", "", ""),
    ]
    # One account, one stream.
    streams = {s.events for s in m.keys.shards if m.client.exists(s.events)}
    assert streams == {m.keys.shard_of("acct").events}


# --- Retention -------------------------------------------------------------------------------


def fill_with_old_events(client: Redis, stream: str, count: int, age_hours: float) -> None:
    """``count`` events appended ``age_hours`` ago (explicit stream ids in the past)."""
    at = int((time.time() - age_hours * 3600) * 1000)
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        event = Event(EventType.SESSION_REFUSED, at, {"userId": "old", "n": i})
        pipe.xadd(stream, {STREAM_FIELD: event.to_json()}, id=f"{at}-{i + 1}")
    pipe.execute()


def older_than(client: Redis, stream: str, hours: float) -> int:
    return len(client.xrange(stream, max=str(int((time.time() - hours * 3600) * 1000))))


def test_streams_are_trimmed_to_the_retention_approximately(make_manager: Callable[..., StreamManager]) -> None:
    m = make_manager(activity_shards=1, events_enabled=True, events_retention_hours=72)
    stream = m.keys.shards[0].events
    node_entries = int(m.client.config_get("stream-node-max-entries")["stream-node-max-entries"])
    for write in (
        lambda: (m.admit("acct", "movie", f"s-{uuid.uuid4().hex[:6]}"), m.flush_activity()),  # the flush's XADD
        lambda: m.block_new_sessions("acct", 60, actor="cli:ops"),  # a staff action's XADD
    ):
        m.client.delete(stream)
        fill_with_old_events(m.client, stream, 3 * node_entries, age_hours=73)
        fill_with_old_events(m.client, stream, 5, age_hours=71)  # within the retention: kept
        assert older_than(m.client, stream, 72) >= 3 * node_entries
        write()
        # MINID ~ drops whole internal nodes: at most one node's worth of older entries may stay.
        assert older_than(m.client, stream, 72) < node_entries
        assert older_than(m.client, stream, 70) - older_than(m.client, stream, 72) >= 5
    # A stream nobody writes to for a whole retention holds only expired events: it expires.
    assert 71 * 3_600_000 < m.client.pttl(stream) <= 72 * 3_600_000


# --- Events off cost nothing; on, a steady heartbeat adds no command -------------------------


def everything_a_service_does(m: StreamManager) -> None:
    """Heartbeats new, repeated and refused, a stop, an eviction, staff actions, flushes."""
    for session in ("a", "b", "c", "a", "b"):
        m.admit("acct", "movie", session, device_name="tv", network="192.0.2.0/24")
    m.stop("acct", "a", from_other_screen=True)
    m.evict("acct", "b", actor="cli:ops")
    m.block_new_sessions("acct", 60, actor="cli:ops")
    m.unblock_new_sessions("acct", actor="cli:ops")
    m.set_limit_override("acct", 4, actor="cli:ops")
    m.emit_policy_changed("cli:ops", {"version": 1})
    m.flush_activity()


def test_with_events_off_nothing_is_noted_or_written(own_redis, key_prefix: str) -> None:
    client = own_redis().client()
    m = StreamManager(
        client,
        key_prefix=key_prefix,
        default_limit=2,
        session_ttl_seconds=40,
        eviction_cooldown_seconds=300,
        events_enabled=False,
    )
    m.admit("warm", "movie", "up")  # scripts loaded
    seen = commands_seen(client, lambda: everything_a_service_does(m))
    assert len(seen) > 20  # the guard: MONITOR saw the service's work
    assert not [line for _, line in seen if "XADD" in line.upper() or ":events" in line]
    assert not m.activity.pending.take().events


def test_with_events_on_a_steady_repeat_heartbeat_adds_no_command(own_redis, key_prefix: str) -> None:
    client = own_redis().client()

    def steady(m: StreamManager) -> list[tuple[str, str]]:
        m.admit("acct", "movie", "tv")
        m.flush_activity()
        return commands_seen(client, lambda: ([m.admit("acct", "movie", "tv") for _ in range(5)], m.flush_activity()))

    def shape(seen: list[tuple[str, str]]) -> list[str]:
        # The command names and scripts run, not their arguments (keys hold the prefix).
        return sorted({line.split()[0] + (line.split()[1] if "EVALSHA" in line else "") for _, line in seen})

    common = {"key_prefix": key_prefix, "session_ttl_seconds": 40, "eviction_cooldown_seconds": 300}
    on = steady(StreamManager(client, default_limit=2, events_enabled=True, **common))
    off = steady(
        StreamManager(client, default_limit=2, events_enabled=False, **{**common, "key_prefix": key_prefix + "x"})
    )
    assert on and not [
        line for _, line in on if "XADD" in line.upper() or (":events" in line and "EVALSHA" not in line)
    ]
    assert shape([s for s in on if s[0] != "lua"]) == shape([s for s in off if s[0] != "lua"])
    # Inside the flush's script, only the expiry check replaces the trim: no write to the stream.
    assert not [line for source, line in on if source == "lua" and line.split()[0].strip('"').upper() == "XADD"]


# --- export_events -----------------------------------------------------------------------------


def export(*args: str) -> tuple[list[dict], str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("export_events", *args, stdout=out, stderr=err)
    return [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


@pytest.fixture
def service_with_events(settings) -> StreamManager:
    settings.EVENTS_ENABLED = True
    settings.ACTIVITY_SHARDS = 4
    return get_stream_manager()


def test_export_writes_every_shards_events_merged_in_time_order(service_with_events: StreamManager) -> None:
    m = service_with_events
    for n in range(12):
        m.admit(f"user-{n}", "movie", "s1")
        m.admit(f"user-{n}", "movie", "s2")
        m.flush_activity()
        m.stop(f"user-{n}", "s1")
    assert len({m.keys.shard_number(f"user-{n}") for n in range(12)}) > 1  # the merge has several streams
    lines, err = export("--since", "1h")
    # Entries appended in the same millisecond on two shards come out in shard order.
    stored = sorted(
        ((*(int(p) for p in raw_id.decode().split("-")), number), fields[STREAM_FIELD.encode()])
        for number, shard in enumerate(m.keys.shards)
        for raw_id, fields in m.client.xrange(shard.events)
    )
    assert [json.loads(raw)["id"] for _, raw in stored] == [line["id"] for line in lines]
    assert len(lines) == 36
    assert "export_events: 36 events between " in err  # stdout is no terminal: the progress lines
    # Every page of every shard is read (pages of 5 here) and merged the same.
    paged = [e.raw for e in read_events(m.client, m.keys, 0, FAR_FUTURE_MS, page=5)]
    assert [json.loads(raw)["id"] for raw in paged] == [line["id"] for line in lines]


def test_export_filters_by_type_and_window(service_with_events: StreamManager) -> None:
    m = service_with_events
    m.admit("acct", "movie", "s1")
    m.admit("acct", "movie", "s2")
    m.admit("acct", "movie", "s3")
    m.admit("acct", "movie", "s4")  # refused (limit 3)
    m.flush_activity()
    time.sleep(1.2)
    cut = time.time()
    time.sleep(0.2)
    m.stop("acct", "s1")
    lines, _ = export("--since", "1h", "--type", "session.refused", "--type", "session.ended")
    assert [(e["type"], e["data"]["sessionId"]) for e in lines] == [("session.refused", "s4"), ("session.ended", "s1")]
    until = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cut)) + f".{int(cut * 1000) % 1000:03d}+00:00"
    before, _ = export("--since", "1h", "--until", until)
    assert [e["type"] for e in before] == ["session.started"] * 3 + ["session.refused"]
    after, err = export("--since", "1s")
    assert [e["type"] for e in after] == ["session.ended"]
    assert "export_events: 1 event between " in err


def test_export_of_an_empty_window_says_so(service_with_events: StreamManager) -> None:
    service_with_events.admit("acct", "movie", "s1")
    service_with_events.flush_activity()
    lines, err = export("--since", "2026-01-01", "--until", "2026-01-02T00:00:00Z")
    assert lines == []
    assert err.strip() == "no events between 2026-01-01T00:00:00.000Z and 2026-01-02T00:00:00.000Z"
    lines, err = export("--since", "1h", "--type", "policy.changed")
    assert lines == [] and err.startswith("no events between ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "--since: 'yesterday' is neither a duration"),
        (["--since", "24x"], "--since: '24x' is neither a duration"),
        (["--since", "1h", "--until", "soon"], "--until: 'soon' is neither a duration"),
        (["--since", "1h", "--until", "2h"], "is before --since"),
    ],
)
def test_export_refuses_a_bad_window_with_a_command_error(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message.replace("'", ".")):
        call_command("export_events", *args, stdout=io.StringIO(), stderr=io.StringIO())


def test_export_refuses_an_unknown_type_naming_the_types(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"invalid choice: 'session\.paused'.*session\.started"):
        call_command("export_events", "--since", "1h", "--type", "session.paused", stdout=io.StringIO())


class CountingSink(io.TextIOBase):
    """A stdout that keeps nothing: counts lines, so memory measured is the export's own."""

    def __init__(self) -> None:
        self.lines = 0

    def write(self, text: str) -> int:
        self.lines += text.count("\n")
        return len(text)


def peak_memory_of_export(m: StreamManager, events: int) -> tuple[int, int]:
    """Fill the streams to ``events`` events, export them; (lines written, peak bytes allocated meanwhile)."""
    have = sum(m.client.xlen(s.events) for s in m.keys.shards)
    pipe = m.client.pipeline(transaction=False)
    for n in range(have, events):
        user = f"user-{n}"
        event = Event(EventType.SESSION_STARTED, int(time.time() * 1000), {"userId": user, "sessionId": "s"})
        pipe.xadd(m.keys.shard_of(user).events, {STREAM_FIELD: event.to_json()})
    pipe.execute()
    sink = CountingSink()
    tracemalloc.start()
    try:
        call_command("export_events", "--since", "1h", stdout=sink, stderr=io.StringIO())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return sink.lines, peak


def test_export_streams_in_constant_memory(service_with_events: StreamManager) -> None:
    small_lines, small_peak = peak_memory_of_export(service_with_events, 5_000)
    large_lines, large_peak = peak_memory_of_export(service_with_events, 40_000)
    assert (small_lines, large_lines) == (5_000, 40_000)
    # Eight times the events, about the same memory (pages of 1,000 per shard), not eight times it.
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)


# --- The loss bound: a worker killed with kill -9 under load -----------------------------------


def worker_pids(master_pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()]


def cpu_ticks(pid: int) -> int:
    """User and system CPU time a process has used so far (clock ticks, /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_a_killed_worker_loses_at_most_the_events_noted_since_its_last_flush(
    live_gunicorn, own_redis, run_output: Path
) -> None:
    redis = own_redis()
    flush_seconds = 1.0
    server = live_gunicorn(
        workers=2, REDIS_URL=redis.url, EVENTS_ENABLED="true", ACTIVITY_FLUSH_SECONDS=str(flush_seconds)
    )
    workers = worker_pids(server.process.pid)
    assert len(workers) == 2
    admitted: list[tuple[float, str]] = []  # (answered at, user id): every new session that got 200
    lock = threading.Lock()
    stop_at = time.monotonic() + 9.0

    def player(n: int) -> None:
        i = 0
        with requests.Session() as http:
            while time.monotonic() < stop_at:
                user = f"load-{n}-{i}"
                i += 1
                try:
                    answer = http.post(
                        f"{server.url}/heartbeat", json={"userId": user, "streamId": "m", "sessionId": "s"}, timeout=10
                    )
                except requests.RequestException:
                    continue  # the killed worker's connection: no answer, not counted as admitted
                if answer.status_code == 200:
                    with lock:
                        admitted.append((time.monotonic(), user))

    threads = [threading.Thread(target=player, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(4.0)
    # Kill the busier worker (keep-alive connections stick to one): the one whose loss is measured.
    before = {pid: cpu_ticks(pid) for pid in workers}
    time.sleep(1.0)
    busy = {pid: cpu_ticks(pid) - before[pid] for pid in workers}
    victim = max(busy, key=busy.__getitem__)
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    # An answer the worker wrote just before it died may still be read a moment later.
    read_by = time.monotonic() + 0.5
    for thread in threads:
        thread.join()
    time.sleep(3 * flush_seconds)  # the survivors (and the new worker) flush what they heard
    client = redis.client()
    started = set()
    for stream in client.scan_iter(match="*:events", count=1000):
        for _, fields in client.xrange(stream):
            event = Event.from_json(fields[STREAM_FIELD.encode()])
            if event.type is EventType.SESSION_STARTED:
                started.add(event.data["userId"])
    lost = [(at, user) for at, user in admitted if user not in started]
    # Slack for the flusher's start on a loaded machine (gevent schedules it between requests):
    # measured up to 0.7 s late on this shared 2-core machine.
    slack = 2.0
    in_window = [user for at, user in admitted if killed_at - flush_seconds - slack <= at <= read_by]
    (run_output / "events_kill9_loss.json").write_text(
        json.dumps(
            {
                "admitted": len(admitted),
                "without_session_started": len(lost),
                "admitted_in_the_last_flush_window_before_the_kill": len(in_window),
                "flush_seconds": flush_seconds,
                "cpu_ticks_of_the_workers_in_the_second_before_the_kill": sorted(busy.values()),
                "lost_seconds_before_kill": sorted(round(killed_at - at, 3) for at, _ in lost),
            }
        )
    )
    assert len(admitted) > 100 and busy[victim] > 0  # the guard: there was load, on the killed worker too
    # Every session whose event is missing was admitted within the last flush interval before the kill.
    assert all(killed_at - flush_seconds - slack <= at <= read_by for at, _ in lost), sorted(
        round(killed_at - at, 3) for at, _ in lost
    )
    # And the events of every session admitted otherwise are all there.
    assert len(started) >= len(admitted) - len(in_window)


def test_applying_a_policy_writes_policy_changed_with_its_version_who_and_why(events_manager: StreamManager) -> None:
    record = events_manager.policy_store.apply({"default": {"maxStreams": 2}}, applied_by="lead-ana", reason="trial")
    changed = [e for e in recorded(events_manager) if e.type is EventType.POLICY_CHANGED]
    assert [e.data for e in changed] == [{"version": record.version, "reason": "trial", "by": "lead-ana"}]


def test_a_sharing_flag_is_an_event_of_the_account(events_manager: StreamManager) -> None:
    events_manager.emit_sharing_flagged("acct", 82, ["5 networks in 7 days"])
    (flagged,) = recorded(events_manager)
    assert flagged.type is EventType.ACCOUNT_SHARING_FLAGGED
    assert flagged.data == {"userId": "acct", "score": 82, "evidence": ["5 networks in 7 days"]}
