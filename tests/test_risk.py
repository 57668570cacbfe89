"""Sharing risk: each point of a score comes with its evidence; a crossing of the flag score is reported once."""

from __future__ import annotations

from datetime import UTC, datetime

from heartbeat.limiter.events import Event, EventType
from heartbeat.limiter.risk import NotSharingMark, RiskStore, score_accounts
from heartbeat.services import get_risk_store

T0 = 1_796_000_000_000  # Monday 2026-11-30 00:53:20 UTC


def started(at_s: int, user: str, sid: str, network: str, device: str = "") -> Event:
    data = {"userId": user, "sessionId": sid, "network": network, "deviceId": device}
    return Event(EventType.SESSION_STARTED, T0 + at_s * 1000, data)


def ended(at_s: int, user: str, sid: str, reason: str = "stopped") -> Event:
    return Event(EventType.SESSION_ENDED, T0 + at_s * 1000, {"userId": user, "sessionId": sid, "reason": reason})


def refused(at_s: int, user: str, sid: str) -> Event:
    data = {"userId": user, "sessionId": sid, "code": "concurrency_limit_reached"}
    return Event(EventType.SESSION_REFUSED, T0 + at_s * 1000, data)


def sharer() -> list[Event]:
    """Five networks over the week, three of them at once, six devices, four refusals."""
    events = [started(n * 3600, "shared", f"s{n}", f"10.{n}.0.0/24", f"d{n}") for n in range(3)]
    events += [ended(4 * 3600, "shared", "s0"), ended(4 * 3600, "shared", "s1"), ended(4 * 3600, "shared", "s2")]
    events += [started(5 * 3600 + n, "shared", f"t{n}", f"10.{3 + n % 2}.0.0/24", f"d{3 + n}") for n in range(3)]
    events += [refused(6 * 3600 + n, "shared", f"r{n}") for n in range(4)]
    return events


def household() -> list[Event]:
    """One home network, a phone network, three devices: nothing to see."""
    return [
        started(0, "family", "a", "192.0.2.0/24", "tv"),
        started(10, "family", "b", "192.0.2.0/24", "tablet"),
        ended(3600, "family", "b"),
        started(7200, "family", "c", "198.51.100.0/24", "phone"),
    ]


def test_a_sharing_account_scores_with_a_line_of_evidence_for_each_signal() -> None:
    reports = score_accounts(sharer() + household())
    assert [r.user_id for r in reports] == ["shared", "family"]
    top = reports[0]
    # 5 networks (3 over a household's 2: 30), 6 devices (1 over 5: 4), 3 networks at once (40), 4 refusals (8).
    assert top.score == 30 + 4 + 40 + 8
    assert top.evidence == [
        "5 networks in 7 days",
        "6 devices in 7 days",
        "3 networks at once on Monday 02:53 UTC",
        "4 sessions refused for a limit",
    ]
    assert reports[1].score == 20 and reports[1].evidence == ["2 networks at once on Monday 02:53 UTC"]


def test_a_not_sharing_mark_lowers_the_score_and_says_who_set_it() -> None:
    mark = NotSharingMark("lead-ana", datetime(2026, 12, 1, tzinfo=UTC))
    report = score_accounts(sharer(), {"shared": mark})[0]
    assert report.score == round((30 + 4 + 40 + 8) * 0.25)
    assert report.evidence[-1] == "marked not sharing by lead-ana on 2026-12-01"


def test_a_crossing_of_the_flag_score_is_reported_once_until_the_score_falls_back() -> None:
    store: RiskStore = get_risk_store()
    first = store.save(score_accounts(sharer() + household()), flag_score=60, scored_at_ms=T0)
    assert [r.user_id for r in first] == ["shared"]
    assert store.save(score_accounts(sharer()), flag_score=60, scored_at_ms=T0 + 1) == []
    assert store.save(score_accounts(household()), flag_score=60, scored_at_ms=T0 + 2) == []
    again = store.save(score_accounts(sharer()), flag_score=60, scored_at_ms=T0 + 3)
    assert [r.user_id for r in again] == ["shared"]
    top, scored_at = store.top()
    assert [(r.user_id, r.score) for r in top] == [("shared", 82)] and scored_at == T0 + 3
    assert top[0].evidence[0] == "5 networks in 7 days"


def test_one_refusal_or_takeover_is_said_in_the_singular() -> None:
    events = [started(0, "one", "a", "192.0.2.0/24"), refused(10, "one", "b"), ended(20, "one", "a", "replaced")]
    assert score_accounts(events)[0].evidence == [
        "1 session refused for a limit",
        "1 session replaced or handed off",
    ]
