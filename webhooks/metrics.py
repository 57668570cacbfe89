"""Prometheus metrics of the delivery workers (``deliver_events --metrics-port`` serves them).

Labelled by endpoint id, never by URL: a URL may carry a token, and ids keep the label set small.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

EMITTED = Counter(
    "streamlimit_webhook_events_emitted",
    "Events taken up for an endpoint (of its types), once each, by type and endpoint id.",
    ["type", "endpoint"],
)
DELIVERED = Counter(
    "streamlimit_webhook_events_delivered",
    "Events an endpoint answered 2xx to, by type and endpoint id.",
    ["type", "endpoint"],
)
FAILED = Counter(
    "streamlimit_webhook_events_failed",
    "Failed delivery attempts, by type, endpoint id and reason "
    "(3xx, 4xx, 5xx, timeout, connect, bad_response, refused_target).",
    ["type", "endpoint", "reason"],
)
DEAD = Counter(
    "streamlimit_webhook_events_dead",
    "Events moved to dead letters after WEBHOOK_MAX_AGE_HOURS, by type and endpoint id.",
    ["type", "endpoint"],
)
TRUNCATED = Counter(
    "streamlimit_webhook_answers_truncated",
    "Answers whose body was longer than WEBHOOK_MAX_RESPONSE_BYTES (the rest was not read), by endpoint id.",
    ["endpoint"],
)
OLDEST_UNDELIVERED = Gauge(
    "streamlimit_webhook_oldest_undelivered_seconds",
    "Age of the oldest event not yet delivered to the endpoint (0: none waiting), by endpoint id.",
    ["endpoint"],
)
BACKLOG = Gauge(
    "streamlimit_webhook_backlog_events",
    "Events waiting for the endpoint (read and pending, or not read yet), by endpoint id.",
    ["endpoint"],
)
