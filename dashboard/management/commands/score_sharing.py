"""Score each account's sharing risk from the recorded session events; keep the scores; flag the crossings."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from dashboard.actions import not_sharing_marks
from dashboard.risk_window import scored_window
from heartbeat.limiter.event_reader import StreamEntry, parse_window, read_events
from heartbeat.limiter.events import Event, EventType, timestamp_of
from heartbeat.limiter.risk import RiskReport, score_accounts
from heartbeat.services import get_risk_store, get_stream_manager
from streamlimit.commands import OperatorCommand, add_json_argument, isolate

SESSION_EVENTS = (EventType.SESSION_STARTED, EventType.SESSION_REFUSED, EventType.SESSION_ENDED)
# The highest scores the text answer lists (--json and the dashboard have all of them).
TOP_SHOWN = 10


class _Counted:
    """The events of the window, parsed, counted as score_accounts reads them (it reads them once)."""

    def __init__(self, entries: Iterable[StreamEntry]) -> None:
        self.entries = entries
        self.count = 0

    def __iter__(self) -> Iterator[Event]:
        for entry in self.entries:
            self.count += 1
            yield Event.from_json(entry.raw)


def _line(report: RiskReport) -> str:
    return f"  {isolate(report.user_id)} {report.score}: " + "; ".join(report.evidence)


class Command(OperatorCommand):
    summary = (
        "Score each account's sharing risk from the recorded session events, keep the scores for the dashboard's "
        "risk view, and flag the accounts that cross SHARING_FLAG_SCORE."
    )
    details = (
        "Each account that reaches SHARING_FLAG_SCORE since the last run gets one account.sharing_flagged event. "
        "Support's 'not sharing' marks lower their accounts' scores. The events go back at most "
        "EVENTS_RETENTION_HOURS, whatever --since says: the evidence names the window really scored. "
        "The score is a signal for support to look closer, not proof. Run it on a schedule (hourly, say)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--since",
            default="7d",
            help="start of the window: 7d (the default), 24h, or an ISO 8601 time; at most EVENTS_RETENTION_HOURS back",
        )
        add_json_argument(parser, "one JSON object: the window, the counts, the newly flagged and every score")

    def handle(self, *args: Any, **options: Any) -> str | None:
        now_ms = int(time.time() * 1000)
        try:
            asked_since_ms, _ = parse_window(options["since"], "now", now_ms)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        window = scored_window(asked_since_ms, now_ms, settings.EVENTS_RETENTION_HOURS)
        manager = get_stream_manager()
        events = _Counted(read_events(manager.client, manager.keys, window.since_ms, now_ms, types=SESSION_EVENTS))
        reports = score_accounts(events, not_sharing_marks(), window=window.span)
        flag_score = settings.SHARING_FLAG_SCORE
        crossed = get_risk_store().save(reports, flag_score, now_ms)
        for report in crossed:
            manager.emit_sharing_flagged(report.user_id, report.score, report.evidence)
        flagged = [r for r in reports if r.score >= flag_score]
        if events.count == 0:
            off = "" if settings.EVENTS_ENABLED else " (EVENTS_ENABLED is false: nothing is recorded)"
            self.stderr.write(
                f"no session events between {timestamp_of(window.since_ms)} and {timestamp_of(now_ms)}{off}: "
                "nothing to score; the risk view now shows no scores"
            )
        if options["json"]:
            self.write_json(
                {
                    "window": {
                        "since": timestamp_of(window.since_ms),
                        "until": timestamp_of(now_ms),
                        "span": window.span,
                        "cutByRetention": window.cut_by_retention,
                    },
                    "events": events.count,
                    "accounts": len(reports),
                    "flagScore": flag_score,
                    "atOrAboveFlagScore": len(flagged),
                    "newlyFlagged": [r.as_json() for r in crossed],
                    "scores": [r.as_json() for r in reports if r.score > 0],
                }
            )
            return None
        if events.count == 0:
            return None
        lines = [
            f"scored {len(reports)} accounts from {events.count} session events over the last {window.span} "
            f"({timestamp_of(window.since_ms)} to {timestamp_of(now_ms)})",
        ]
        if window.cut_by_retention:
            lines.append(
                f"  --since {options['since']} goes further back than the events are kept "
                f"(EVENTS_RETENTION_HOURS={settings.EVENTS_RETENTION_HOURS}): scored {window.span}"
            )
        lines.append(
            f"{len(flagged)} at or above SHARING_FLAG_SCORE {flag_score}; {len(crossed)} newly flagged "
            f"(one account.sharing_flagged event each)" + (":" if crossed else "")
        )
        lines += [_line(r) for r in crossed]
        top = [r for r in reports if r.score > 0][:TOP_SHOWN]
        if top:
            lines.append(f"highest scores (the dashboard's risk view has all {sum(r.score > 0 for r in reports)}):")
            lines += [_line(r) for r in top]
        lines.append("a score is a signal for support to look closer, not proof of sharing")
        return "\n".join(lines)
