"""The JSON log lines' timestamp: ISO 8601 in UTC, exactly as structlog's TimeStamper wrote it."""

from __future__ import annotations

import datetime
import random

from streamlimit.logging import iso_utc


def isoformat_utc(epoch_ns: int) -> str:
    """structlog's TimeStamper(fmt="iso", utc=True) for the same instant, to the microsecond."""
    moment = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(microseconds=epoch_ns // 1000)
    return moment.isoformat().replace("+00:00", "Z")


def test_the_timestamp_matches_isoformat_to_the_microsecond() -> None:
    rng = random.Random(8)
    for _ in range(5000):
        epoch_ns = rng.randrange(0, 4_102_444_800 * 10**9)  # 1970 to 2100
        assert iso_utc(epoch_ns) == isoformat_utc(epoch_ns)


def test_consecutive_times_across_seconds_and_a_whole_second() -> None:
    start = 1_796_000_000 * 10**9
    for epoch_ns in [start - 1000, start, start + 1, start + 999_999_999, start + 10**9, start - 1000]:
        assert iso_utc(epoch_ns) == isoformat_utc(epoch_ns)
    assert iso_utc(start) == "2026-11-30T00:53:20Z"
    assert iso_utc(start + 1000) == "2026-11-30T00:53:20.000001Z"
