"""The window a sharing score really covers: what was asked, cut to how long the events are kept."""

from __future__ import annotations

from dataclasses import dataclass

from heartbeat.limiter.risk import count_of

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class ScoredWindow:
    """From when the events are read (epoch ms), the span as the evidence says it, and whether retention cut it."""

    since_ms: int
    span: str
    cut_by_retention: bool


def describe_span(ms: int) -> str:
    """A span as evidence lines say it: "3 days", "36 hours", "45 minutes"."""

    if ms >= DAY_MS and ms % DAY_MS == 0:
        return count_of(ms // DAY_MS, "day")
    if ms >= HOUR_MS:
        return count_of(round(ms / HOUR_MS), "hour")
    return count_of(max(1, round(ms / 60_000)), "minute")


def scored_window(asked_since_ms: int, now_ms: int, retention_hours: int) -> ScoredWindow:
    """The window to score: from ``asked_since_ms``, but never before the oldest event kept.

    Events older than EVENTS_RETENTION_HOURS are trimmed, so "--since 7d" with
    the default 72 hours scores 3 days, and the evidence must say "in 3 days".
    """
    kept_since_ms = now_ms - retention_hours * HOUR_MS
    since_ms = max(asked_since_ms, kept_since_ms)
    return ScoredWindow(since_ms, describe_span(now_ms - since_ms), asked_since_ms < kept_since_ms)
