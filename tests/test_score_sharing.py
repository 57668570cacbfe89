"""manage.py score_sharing, end to end over events the real StreamManager wrote."""

from __future__ import annotations

import io
import json
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from dashboard import actions
from dashboard.risk_window import DAY_MS, HOUR_MS, ScoredWindow, describe_span, scored_window
from heartbeat.limiter.event_reader import read_events
from heartbeat.limiter.events import Event, EventType
from heartbeat.limiter.manager import StreamManager
from heartbeat.services import get_risk_store, get_stream_manager

pytestmark = pytest.mark.django_db

NETWORKS = [f"10.{n}.0.0/24" for n in range(5)]
# 5 networks (3 over a household's 2: 30 points), 5 at once (4 extra: 80 points).
SHARER_SCORE = 3 * 10 + 4 * 20


@pytest.fixture
def service(settings) -> StreamManager:
    """The service's own StreamManager with events on (4 shards), limit 10, flag score 60."""
    settings.EVENTS_ENABLED = True
    settings.ACTIVITY_SHARDS = 4
    settings.MAX_CONCURRENT_STREAMS = 10
    settings.SHARING_FLAG_SCORE = 60
    return get_stream_manager()


def play_history(manager: StreamManager) -> None:
    """'sharer' on five networks at once; 'family' twice at home; written by the activity flush."""
    for n, network in enumerate(NETWORKS):
        assert manager.admit("sharer", "movie", f"s{n}", network=network).allowed
    for n in range(2):
        assert manager.admit("family", "movie", f"f{n}", network="192.0.2.0/24").allowed
    manager.flush_activity()


def score(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("score_sharing", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def flagged_events(manager: StreamManager) -> list[Event]:
    now_ms = int(time.time() * 1000)
    entries = read_events(
        manager.client, manager.keys, now_ms - HOUR_MS, now_ms + 1000, types=[EventType.ACCOUNT_SHARING_FLAGGED]
    )
    return [Event.from_json(entry.raw) for entry in entries]


def test_scores_are_kept_and_a_crossing_is_flagged_once(service: StreamManager) -> None:
    play_history(service)
    out, err = score("--json")
    report = json.loads(out)
    assert err == ""
    # The default --since 7d goes further back than the 72 hours the events are kept.
    assert report["window"]["span"] == "3 days" and report["window"]["cutByRetention"] is True
    assert report["events"] == 7 and report["accounts"] == 2
    assert report["atOrAboveFlagScore"] == 1
    sharer = {
        "userId": "sharer",
        "score": SHARER_SCORE,
        "evidence": ["5 networks in 3 days", report["scores"][0]["evidence"][1]],
    }
    assert report["newlyFlagged"] == [sharer]
    assert report["scores"][0] == sharer and sharer["evidence"][1].startswith("5 networks at once on ")
    assert [s["userId"] for s in report["scores"]] == ["sharer"]  # the household scores 0: not kept
    [event] = flagged_events(service)
    assert event.data == {"userId": "sharer", "score": SHARER_SCORE, "evidence": sharer["evidence"]}
    top, scored_at = get_risk_store().top()
    assert [(r.user_id, r.score) for r in top] == [("sharer", SHARER_SCORE)]
    assert scored_at is not None and abs(scored_at - time.time() * 1000) < 60_000

    # Scored again: still above the flag score, so no second event.
    assert json.loads(score("--json")[0])["newlyFlagged"] == []
    assert len(flagged_events(service)) == 1


def test_a_not_sharing_mark_lowers_the_score_and_clearing_it_flags_again(service: StreamManager) -> None:
    play_history(service)
    score()
    actions.mark_not_sharing("cli:lead", "sharer", "family of five, checked by phone")
    report = json.loads(score("--json")[0])
    [sharer] = report["scores"]
    assert sharer["score"] == round(SHARER_SCORE * 0.25) and sharer["score"] < 60
    assert sharer["evidence"][-1].startswith("marked not sharing by cli:lead on ")
    assert report["atOrAboveFlagScore"] == 0
    assert actions.clear_not_sharing_mark("cli:lead", "sharer")
    again = json.loads(score("--json")[0])
    assert [r["userId"] for r in again["newlyFlagged"]] == ["sharer"]
    assert len(flagged_events(service)) == 2


def test_the_text_answer_names_the_window_the_flagged_and_says_it_is_a_signal(service: StreamManager) -> None:
    play_history(service)
    out, _ = score("--since", "24h")
    lines = out.splitlines()
    assert lines[0].startswith("scored 2 accounts from 7 session events over the last 1 day (")
    assert "1 at or above SHARING_FLAG_SCORE 60; 1 newly flagged" in out
    assert f"\u2068sharer\u2069 {SHARER_SCORE}: 5 networks in 1 day; 5 networks at once on " in out
    assert "goes further back than the events are kept" not in out
    assert lines[-1] == "a score is a signal for support to look closer, not proof of sharing"


def test_an_empty_window_says_so_and_clears_the_old_scores(service: StreamManager) -> None:
    play_history(service)
    score()
    assert get_risk_store().top()[0] != []
    time.sleep(1.2)  # the history is now more than a second old
    out, err = score("--since", "1s")
    assert out == "" and "no session events between" in err and "nothing to score" in err
    assert get_risk_store().top()[0] == []
    assert flagged_events(service)[0].data["userId"] == "sharer"


def test_a_bad_since_is_a_command_error(service: StreamManager) -> None:
    with pytest.raises(CommandError, match="--since"):
        score("--since", "last tuesday")


def test_the_window_is_cut_to_the_retention_and_said_as_people_say_it() -> None:
    now = 1_796_000_000_000
    assert scored_window(now - 7 * DAY_MS, now, 72) == ScoredWindow(now - 3 * DAY_MS, "3 days", True)
    assert scored_window(now - DAY_MS, now, 72) == ScoredWindow(now - DAY_MS, "1 day", False)
    assert scored_window(now - 7 * DAY_MS, now, 168) == ScoredWindow(now - 7 * DAY_MS, "7 days", False)
    assert describe_span(36 * HOUR_MS) == "36 hours" and describe_span(HOUR_MS) == "1 hour"
    assert describe_span(45 * 60_000) == "45 minutes" and describe_span(1000) == "1 minute"
