"""The one table of what a heartbeat can get, and where each limit comes from.

Each outcome is written once, here: the number the admit script returns for
it, the HTTP status and API ``code`` the player gets, the words a player shows,
the label support staff read, and the metric label. The API answers, the
dashboard, the metrics and the OpenAPI schema all read this table
(``tests/test_outcomes.py`` checks that each outcome reaches each of them).
To add an outcome: one row here, its number in ``admit.lua``, and nothing else.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Outcome(enum.Enum):
    """What a heartbeat got."""

    ALLOWED = "allowed"
    LIMIT_REACHED = "limit_reached"
    EVICTED = "evicted"
    STOPPED = "stopped"
    REPLACED = "replaced"
    BLOCKED = "blocked"
    TOO_MANY_NEW_SESSIONS = "too_many_new_sessions"
    HANDED_OFF = "handed_off"
    REPLACE_REFUSED = "replace_refused"


@dataclass(frozen=True)
class OutcomeRow:
    """Everything said about one outcome, to players, staff and operators."""

    outcome: Outcome
    # The numbers admit.lua returns for it (0: a repeat heartbeat, 1: a new session).
    script_codes: tuple[int, ...]
    http_status: int
    # The API's ``code`` and message: None for an allowed heartbeat, which carries neither.
    api_code: str | None
    player_message: str | None
    staff_label: str | None

    @property
    def metric_label(self) -> str:
        """The ``outcome`` label of ``streamlimit_heartbeats_total``."""
        return self.outcome.value

    @property
    def retry_later(self) -> bool:
        """Whether the player may try again by itself (429: ``Retry-After`` says when), not stop for good."""
        return self.http_status == 429

    @property
    def refusal(self) -> bool:
        """Whether the player must stop."""
        return self.outcome is not Outcome.ALLOWED


OUTCOMES: tuple[OutcomeRow, ...] = (
    OutcomeRow(Outcome.ALLOWED, (0, 1), 200, None, None, None),
    OutcomeRow(
        Outcome.LIMIT_REACHED,
        (2,),
        400,
        "concurrency_limit_reached",
        "This account is already playing on {limit} screens, the most its plan allows. "
        "Stop a video on another screen to watch here.",
        "the account was already playing on all its screens",
    ),
    OutcomeRow(
        Outcome.EVICTED,
        (3,),
        400,
        "session_evicted",
        "Playback on this screen was stopped by support. Start it again in a few minutes, "
        "or contact support if this keeps happening.",
        "support had evicted this screen (cool-down)",
    ),
    OutcomeRow(
        Outcome.STOPPED,
        (4,),
        400,
        "session_stopped",
        "Playback on this screen was stopped from another screen of this account.",
        "stopped from another of the account's screens",
    ),
    OutcomeRow(
        Outcome.REPLACED,
        (5,),
        400,
        "session_replaced",
        "This account started playing on another screen, which took this screen's place.",
        "a newer screen took its place",
    ),
    OutcomeRow(
        Outcome.BLOCKED,
        (6,),
        400,
        "account_blocked",
        "Support has paused new playback on this account for a while. Contact support if you do not know why.",
        "support had blocked the account's new sessions",
    ),
    OutcomeRow(
        Outcome.TOO_MANY_NEW_SESSIONS,
        (7,),
        429,
        "too_many_new_sessions",
        "Too many videos were started from this network in the last minute. Try again in a minute.",
        "its network had started too many new sessions that minute (anonymous players)",
    ),
    OutcomeRow(
        Outcome.HANDED_OFF,
        (8,),
        400,
        "session_handed_off",
        "Playback moved to {device}.",
        "playback was moved to another screen (hand-off)",
    ),
    OutcomeRow(
        Outcome.REPLACE_REFUSED,
        (9,),
        403,
        "replace_not_allowed",
        "This player may not take over that session: it is not playing on this account, "
        "or it plays on another device or network than this player can prove.",
        "a hand-off named a session it could not end (nothing was ended)",
    ),
)

ROWS: dict[Outcome, OutcomeRow] = {row.outcome: row for row in OUTCOMES}
# admit.lua's reply code -> outcome.
BY_SCRIPT_CODE: dict[int, Outcome] = {code: row.outcome for row in OUTCOMES for code in row.script_codes}
# The one refusal whose reply may list the account's sessions (admit.lua's ARGV[8]).
LIMIT_REACHED_CODE = ROWS[Outcome.LIMIT_REACHED].script_codes[0]
NEW_SESSION_CODE = 1
TOO_MANY_NEW_SESSIONS_CODE = ROWS[Outcome.TOO_MANY_NEW_SESSIONS].script_codes[0]
HANDED_OFF_CODE = ROWS[Outcome.HANDED_OFF].script_codes[0]
REFUSALS: tuple[OutcomeRow, ...] = tuple(row for row in OUTCOMES if row.refusal)
# Heartbeats the API answers before (or instead of) the limiter deciding: counted under these metric labels.
ANSWERED_WITHOUT_DECISION = ("invalid", "unauthorized", "error")
METRIC_LABELS: tuple[str, ...] = (*(row.metric_label for row in OUTCOMES), *ANSWERED_WITHOUT_DECISION)


class LimitSource(enum.Enum):
    """Where an account's limit came from, strongest first."""

    OVERRIDE = "override"
    TOKEN = "token"  # noqa: S105  (a limit source, not a secret)
    PLAN = "plan"
    DEFAULT = "default"


LIMIT_SOURCES: tuple[str, ...] = tuple(source.value for source in LimitSource)


def staff_label(outcome_value: str) -> str:
    """How the dashboard names a refusal (``code: what happened``), from its outcome's value."""
    row = ROWS[Outcome(outcome_value)]
    return f"{row.api_code}: {row.staff_label}"
