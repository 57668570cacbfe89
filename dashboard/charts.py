"""A server-rendered SVG chart of the last hour (no JavaScript, no CDN)."""

from __future__ import annotations

from dataclasses import dataclass

from heartbeat.stream_manager import MinuteActivity

WIDTH, HEIGHT, PAD = 600, 140, 4


@dataclass(frozen=True)
class Series:
    """One line of the chart: its points and its top value."""

    points: str
    maximum: int


def series(values: list[int]) -> Series:
    """Scale ``values`` (one per minute, oldest first) into an SVG polyline."""
    top = max(values, default=0) or 1
    step = (WIDTH - 2 * PAD) / max(len(values) - 1, 1)
    points = " ".join(
        f"{PAD + i * step:.1f},{HEIGHT - PAD - (value / top) * (HEIGHT - 2 * PAD):.1f}"
        for i, value in enumerate(values)
    )
    return Series(points, max(values, default=0))


def hour_chart(minutes: list[MinuteActivity]) -> dict:
    """Template context for the overview's chart of active sessions and refusals."""
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "sessions": series([m.peak_sessions for m in minutes]),
        "refusals": series([m.refused for m in minutes]),
        "start": minutes[0].minute if minutes else None,
        "end": minutes[-1].minute if minutes else None,
    }
