"""The bounds the service holds everywhere, and the parsing of plan limits.

Each bound is written once: the API, the dashboard's forms, the commands,
token verification and the settings check read it from here.
"""

from __future__ import annotations

# An account's limit, from an override, a token's maxStreams or a plan.
MIN_LIMIT = 1
MAX_LIMIT = 50
# The longest block support may put on an account's new sessions (7 days).
MAX_BLOCK_SECONDS = 7 * 86_400
# An audit reason (the database column's length).
MAX_REASON_LENGTH = 200
# How much of each body field a log line keeps, so a client cannot flood the logs.
LOGGED_FIELD_LENGTH = 160
LIMIT_POLICIES = ("reject_new", "replace_oldest")


class LimitOutOfRangeError(ValueError):
    """Raised when a limit is not a whole number within MIN_LIMIT..MAX_LIMIT."""


def check_limit(limit: object) -> int:
    """``limit`` when it is a whole number within the bounds; raises ``LimitOutOfRangeError`` otherwise."""
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise LimitOutOfRangeError("The limit must be a whole number.")
    if not MIN_LIMIT <= limit <= MAX_LIMIT:
        raise LimitOutOfRangeError(f"The limit must be between {MIN_LIMIT} and {MAX_LIMIT}.")
    return limit


def parse_plan_limits(raw: str) -> dict[str, int]:
    """``basic=1,premium=4`` as a dict of limits (MIN_LIMIT to MAX_LIMIT). Raises ValueError."""
    plans: dict[str, int] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        plan, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not plan:
            raise ValueError(f"{item!r} must be plan=limit")
        try:
            limit = int(value)
        except ValueError:
            raise ValueError(f"the limit of plan {plan!r} must be a whole number, got {value!r}") from None
        if not MIN_LIMIT <= limit <= MAX_LIMIT:
            raise ValueError(f"the limit of plan {plan!r} must be between {MIN_LIMIT} and {MAX_LIMIT}, got {limit}")
        plans[plan] = limit
    return plans
