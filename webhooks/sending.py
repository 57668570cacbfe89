"""One signed request to one endpoint, outside the streams: the admin's test event and dead-letter retries."""

from __future__ import annotations

import time

import orjson
from django.conf import settings

from heartbeat.limiter.events import new_event_id, timestamp_of
from webhooks.models import Endpoint
from webhooks.signing import Signer
from webhooks.targets import BadUrlError, parse_url
from webhooks.transport import Answer, Poster

TEST_EVENT_TYPE = "webhook.test"


def poster_for(url: str) -> Poster:
    """A Poster with the configured timeouts, body cap and SSRF rule."""
    return Poster(
        parse_url(url),
        timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
        max_body_bytes=settings.WEBHOOK_MAX_RESPONSE_BYTES,
        allow_private=settings.WEBHOOK_ALLOW_PRIVATE_TARGETS,
    )


def send_once(endpoint: Endpoint, event_id: str, body: bytes) -> Answer:
    """Sign and POST ``body`` once (a fresh connection, closed after)."""
    try:
        poster = poster_for(endpoint.url)
    except BadUrlError as exc:
        return Answer(0, "bad_url", str(exc))
    try:
        return poster.post(body, Signer(endpoint.secrets()).headers(event_id, body))
    finally:
        poster.close()


def test_event_body(endpoint: Endpoint) -> tuple[str, bytes]:
    """A ``webhook.test`` event for ``endpoint``: its id and body."""
    event_id = new_event_id()
    body = orjson.dumps(
        {
            "id": event_id,
            "type": TEST_EVENT_TYPE,
            "timestamp": timestamp_of(int(time.time() * 1000)),
            "data": {"endpointId": endpoint.pk, "message": "a test event sent from the StreamLimit admin"},
        }
    )
    return event_id, body


def describe_answer(answer: Answer) -> str:
    """One line on what an attempt came to."""
    if answer.delivered:
        return f"delivered: HTTP {answer.status}" + (" (answer body cut at the cap)" if answer.truncated else "")
    return f"failed ({answer.reason}): {answer.detail}"
