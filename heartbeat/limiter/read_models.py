"""What the read model answers: a live session, an account's limit, live users, totals, activity, signals.

Plain frozen dataclasses, and the builders that make them from Redis replies
(the admit script's list of sessions included, which the StreamManager reads
when it refuses a heartbeat for the limit).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from heartbeat.store.helpers import as_text, batched, ms_to_datetime


@dataclass(frozen=True)
class SessionInfo:
    """One live session of a user, as the dashboard shows it."""

    session_id: str
    stream_id: str
    started_at: datetime
    last_heartbeat_at: datetime
    expires_in_seconds: float
    device_name: str | None = None
    # What the policy decided it with (its first heartbeat), and the network it plays from now.
    device_class: str = ""
    device_id: str = ""
    quality: str = ""
    pool: str = ""
    slots: int = 1
    counted: bool = True
    network: str = ""

    def with_policy_inputs(self, packed: str | None, network: str | None) -> SessionInfo:
        """This session with admit.lua's "p:<session>" (tab-separated inputs) and "n:<session>" read in."""
        if packed is None and network is None:
            return self
        fields = (packed or "").split("\t")
        if len(fields) < 6:
            return dataclasses.replace(self, network=network or "")
        # admit.lua's order; a seventh field, the network the session started from, is not shown.
        device_class, device_id, quality, pool, slots, counted = fields[:6]
        return dataclasses.replace(
            self,
            device_class=device_class,
            device_id=device_id,
            quality=quality,
            pool=pool,
            slots=int(slots) if slots.isdigit() else 1,
            counted=counted != "0",
            network=network or "",
        )


# Fields per session in the admit script's list of live sessions (a refusal for the limit).
ADMIT_REPLY_SESSION_FIELDS = 5


def sessions_from_admit_reply(now: int, session_ttl_ms: int, fields: list[Any]) -> list[SessionInfo]:
    """The live sessions the admit script listed with a refusal, oldest first, as ``sessions()`` gives them.

    ``fields`` holds, per session: id, last heartbeat (ms), stream id,
    started (ms), device name ("" for none).
    """
    rows = (
        (as_text(sid), float(last), as_text(stream), float(started), as_text(device) or None)
        for sid, last, stream, started, device in batched(iter(fields), ADMIT_REPLY_SESSION_FIELDS)
    )
    return session_infos(now, session_ttl_ms, rows)


def session_infos(
    now: int, session_ttl_ms: int, rows: Iterable[tuple[str, float, str, float, str | None]]
) -> list[SessionInfo]:
    """``SessionInfo``s, oldest first, from (id, last heartbeat ms, stream id, started ms, device name) rows."""
    found = [
        SessionInfo(
            session_id=sid,
            stream_id=stream,
            started_at=ms_to_datetime(started),
            last_heartbeat_at=ms_to_datetime(last),
            expires_in_seconds=max(0.0, (last + session_ttl_ms - now) / 1000),
            device_name=device,
        )
        for sid, last, stream, started, device in rows
    ]
    found.sort(key=lambda s: s.started_at)
    return found


@dataclass(frozen=True)
class UserLimit:
    """A user's limit and where it comes from (``source``: override, token, plan or default).

    Without an override, the limit is what the user's latest allowed heartbeat
    asked for (its token's maxStreams or plan), while a session is live.
    """

    limit: int
    override: int | None
    default: int
    source: str = "default"


@dataclass(frozen=True)
class LiveUser:
    """One row of the live-user list."""

    user_id: str
    last_heartbeat_at: datetime
    active_sessions: int
    limit: int


@dataclass(frozen=True)
class ServiceStats:
    """Totals across all users, now."""

    live_users: int
    live_sessions: int
    users_at_limit: int


@dataclass(frozen=True)
class MinuteActivity:
    """Activity counters of one minute."""

    minute: datetime
    heartbeats: int
    refused: int
    evicted: int
    peak_sessions: int


@dataclass(frozen=True)
class FoundUser:
    """An account found by its id's prefix among those heard in the last day."""

    user_id: str
    last_heartbeat_at: datetime
    watching: bool


@dataclass(frozen=True)
class RecentRefusal:
    """A refused heartbeat of an account, newest first on its page."""

    at: datetime
    session_id: str
    stream_id: str
    device_name: str
    code: str
    rule: str = ""  # under a policy: the rule that refused (maxStreams, devices.<class>, ...)
    decision_id: str = ""


@dataclass(frozen=True)
class AccountSignal:
    """An account and its count on a sharing signal (refusals, or distinct sessions, in a day)."""

    user_id: str
    count: int


def user_limit(
    override: bytes | int | None, asked: bytes | None, source: bytes | None, default_limit: int
) -> UserLimit:
    """The override, else what the latest heartbeat asked for (kept in the details hash), else the default."""
    if override is not None:
        return UserLimit(int(override), int(override), default_limit, "override")
    if asked is not None and source is not None:
        return UserLimit(int(asked), None, default_limit, as_text(source))
    return UserLimit(default_limit, None, default_limit, "default")
