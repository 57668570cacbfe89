"""Reading the event streams back in time order: every activity shard's stream, merged.

Each shard's stream is read in pages (``XRANGE ... COUNT``), and the pages are
merged by stream id (the time Redis appended the entry, then its sequence), so
memory stays one page per shard however many events the window holds.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from redis import Redis
from redis.cluster import RedisCluster

from heartbeat.limiter.events import STREAM_FIELD
from heartbeat.limiter.keys import KeyLayout

# Entries per XRANGE: one page per shard is all the reader holds.
PAGE_SIZE = 1000
_FIELD = STREAM_FIELD.encode()


@dataclass(frozen=True, order=True)
class StreamEntry:
    """One event as stored: when Redis appended it (ms, sequence), its shard, and its JSON."""

    appended_ms: int
    sequence: int
    shard: int
    raw: bytes


def _entry_id(raw_id: bytes | str) -> tuple[int, int]:
    text = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq)


def _shard_entries(
    client: Redis | RedisCluster, stream: str, shard: int, since_ms: int, until_ms: int, page: int
) -> Iterator[StreamEntry]:
    """One shard's entries appended in [since_ms, until_ms], oldest first, read a page at a time."""
    start = f"{since_ms}-0"
    while True:
        entries = client.xrange(stream, min=start, max=str(until_ms), count=page)
        for raw_id, fields in entries:
            ms, seq = _entry_id(raw_id)
            raw = fields.get(_FIELD, fields.get(STREAM_FIELD))
            if raw is not None:
                yield StreamEntry(ms, seq, shard, raw if isinstance(raw, bytes) else raw.encode())
        if len(entries) < page:
            return
        # Exclusive from the last id read ("(" needs Redis 6.2).
        last = entries[-1][0]
        start = "(" + (last.decode() if isinstance(last, bytes) else last)


def read_events(
    client: Redis | RedisCluster,
    keys: KeyLayout,
    since_ms: int,
    until_ms: int,
    *,
    types: Collection[str] = (),
    page: int = PAGE_SIZE,
) -> Iterator[StreamEntry]:
    """Every event appended between ``since_ms`` and ``until_ms`` (inclusive), over all shards, in time order.

    ``types``: only events of these types (all when empty). Events of one
    account are in one stream, so they come out in the order they were written.
    """
    streams = [_shard_entries(client, shard.events, n, since_ms, until_ms, page) for n, shard in enumerate(keys.shards)]
    wanted = set(types)
    for entry in heapq.merge(*streams):
        if wanted and orjson.loads(entry.raw).get("type") not in wanted:
            continue
        yield entry


_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}


def parse_moment(text: str, now_ms: int) -> int:
    """A moment as epoch ms: a duration back from now (``90s``, ``30m``, ``24h``, ``7d``, ``2w``),
    ``now``, or an ISO 8601 date or time (UTC unless it names an offset). Raises ValueError."""
    found = _DURATION.match(text)
    if found:
        return now_ms - int(found.group(1)) * _UNIT_MS[found.group(2)]
    if text.strip().lower() == "now":
        return now_ms
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (90s, 30m, 24h, 7d, 2w), 'now', nor an ISO 8601 time "
            "(2026-12-07 or 2026-12-07T18:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def parse_window(since: str, until: str, now_ms: int) -> tuple[int, int]:
    """``--since`` and ``--until`` as epoch ms (see ``parse_moment``); ValueError naming the flag that is wrong."""
    bounds = []
    for flag, text in (("--since", since), ("--until", until)):
        try:
            bounds.append(parse_moment(text, now_ms))
        except ValueError as exc:
            raise ValueError(f"{flag}: {exc}") from None
    since_ms, until_ms = bounds
    if until_ms < since_ms:
        raise ValueError(f"--until ({until}) is before --since ({since}).")
    return since_ms, until_ms
