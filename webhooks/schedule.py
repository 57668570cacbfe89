"""The retry schedule: how long after a failed attempt the next one is made."""

from __future__ import annotations

# After the 1st, 2nd, ... failed attempt; then every 4 hours until WEBHOOK_MAX_AGE_HOURS.
# docs/operators/webhooks.md prints this table.
RETRY_DELAYS_SECONDS = (5, 30, 120, 300, 600, 1800, 3600, 7200, 14400)


def delay_after(failed_attempts: int, scale: float = 1.0) -> float:
    """Seconds to wait after ``failed_attempts`` (1 or more) failures, times ``scale`` (WEBHOOK_RETRY_SCALE)."""
    index = min(max(failed_attempts, 1), len(RETRY_DELAYS_SECONDS)) - 1
    return RETRY_DELAYS_SECONDS[index] * scale
