"""Events: what happened to sessions and accounts, for the company's other systems.

Each event is one JSON object shaped like a Standard Webhooks payload::

    {"id": "evt_<32 hex>", "type": "session.started", "timestamp": "2026-12-07T17:44:11.123Z",
     "data": {"userId": "...", ...}}

``id`` is unique and stable: the webhook's ``webhook-id``, so receivers can
de-duplicate. Events are appended to the Redis stream of the account's
activity shard (``ActivityShard.events``) as one field, ``e``, holding the JSON
bytes; an account's events are in one stream, in order. This module is the
contract between the writers (the heartbeat path, staff actions) and the
readers (the webhook delivery worker, exports, the simulator).
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

# The one field of a stream entry: the event's JSON.
STREAM_FIELD = "e"


class EventType(enum.StrEnum):
    """Every event type, by its wire name."""

    SESSION_STARTED = "session.started"
    SESSION_REFUSED = "session.refused"
    SESSION_ENDED = "session.ended"
    ACCOUNT_BLOCKED = "account.blocked"
    ACCOUNT_UNBLOCKED = "account.unblocked"
    ACCOUNT_LIMIT_CHANGED = "account.limit_changed"
    ACCOUNT_SHARING_FLAGGED = "account.sharing_flagged"
    POLICY_CHANGED = "policy.changed"


class EndReason(enum.StrEnum):
    """Why a session ended (``session.ended``'s ``data.reason``)."""

    STOPPED = "stopped"
    EXPIRED = "expired"
    EVICTED = "evicted"
    REPLACED = "replaced"
    HANDED_OFF = "handed_off"


def new_event_id() -> str:
    """A unique event id (128 random bits)."""
    return "evt_" + os.urandom(16).hex()


def timestamp_of(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, from epoch milliseconds (Redis' clock where there is one)."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclass(frozen=True)
class Event:
    """One event: its type, when it happened (epoch ms) and what it says."""

    type: EventType
    at_ms: int
    data: dict[str, Any]
    id: str = field(default_factory=new_event_id)

    def to_json(self) -> bytes:
        """The event's wire form (the stream entry's ``e`` field and the webhook body)."""
        return orjson.dumps(
            {"id": self.id, "type": str(self.type), "timestamp": timestamp_of(self.at_ms), "data": self.data}
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> Event:
        """Parse a wire form written by ``to_json``."""
        body = orjson.loads(raw)
        stamp = datetime.strptime(body["timestamp"], "%Y-%m-%dT%H:%M:%S.%f%z")
        return cls(EventType(body["type"]), round(stamp.timestamp() * 1000), body["data"], body["id"])
