"""Server-rendered SVG charts of the last hour, with axes and a grid (no JavaScript, no CDN)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from heartbeat.limiter.read_models import MinuteActivity

WIDTH, HEIGHT = 640, 170
# Room for the value labels on the left and the time labels below.
LEFT, RIGHT, TOP, BOTTOM = 48, 20, 8, 22


@dataclass(frozen=True)
class Tick:
    """One labelled grid line: where it is drawn and what it says."""

    position: float
    label: str


@dataclass(frozen=True)
class Chart:
    """One series over the hour, ready for ``dashboard/chart.html``."""

    title: str
    css_class: str
    points: str
    maximum: int
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right_edge: int = WIDTH - RIGHT
    top: int = TOP
    bottom_edge: int = HEIGHT - BOTTOM


def nice_top(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``value`` (at least 1)."""
    if value <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def _y(value: float, top: int) -> float:
    return HEIGHT - BOTTOM - (value / top) * (HEIGHT - BOTTOM - TOP)


def _x(index: int, count: int) -> float:
    return LEFT + index * (WIDTH - LEFT - RIGHT) / max(count - 1, 1)


def chart(title: str, css_class: str, values: list[int], minutes: list[datetime]) -> Chart:
    """A line of ``values`` (one per minute, oldest first) with its axes."""
    top = nice_top(max(values, default=0))
    points = " ".join(f"{_x(i, len(values)):.1f},{_y(v, top):.1f}" for i, v in enumerate(values))
    # As many grid lines as keep every label a whole number: 5 for 5, 10, 50, ...; 2 for 2.
    divisions = next(n for n in (5, 4, 2, 1) if top % n == 0)
    y_ticks = [Tick(round(_y(top * i / divisions, top), 1), f"{top * i // divisions:,}") for i in range(divisions + 1)]
    # A time label every 15 minutes, on the minutes that fall on a quarter hour.
    x_ticks = [
        Tick(round(_x(i, len(minutes)), 1), minute.strftime("%H:%M"))
        for i, minute in enumerate(minutes)
        if minute.minute % 15 == 0
    ]
    return Chart(title, css_class, points, max(values, default=0), y_ticks, x_ticks)


def hour_charts(minutes: list[MinuteActivity]) -> list[Chart]:
    """The overview's charts: active sessions (the peak of each minute) and refusals per minute."""
    times = [m.minute for m in minutes]
    return [
        chart("Active sessions (peak of each minute)", "line-sessions", [m.peak_sessions for m in minutes], times),
        chart("Refusals per minute", "line-refusals", [m.refused for m in minutes], times),
    ]
