"""Binds the request fields operators group by to every log line of a request.

Hooks django-structlog's signals: the correlation id (the caller's
``X-Correlation-ID`` or ``X-Request-ID`` when it is a sane value, else a new
UUID) and the URL at the start, the status at the end, and the id is echoed
in the ``X-Correlation-ID`` response header.
"""

from __future__ import annotations

import os
import re
from typing import Any

import structlog
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django_structlog import signals

CORRELATION_HEADER = "X-Correlation-ID"
# Caller-chosen ids end up in logs and headers: keep them short and plain.
_SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def new_correlation_id() -> str:
    """A random UUID (version 4) as text, like ``str(uuid.uuid4())`` at a third of its cost.

    Every player request without an id of its own gets one: building a
    ``uuid.UUID`` object only to print it cost about 1% of a heartbeat.
    """
    h = os.urandom(16).hex()
    # Version 4 in the 13th digit; the RFC 4122 variant (binary 10xx) in the 17th.
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def correlation_id_for(request: HttpRequest, fresh_id: str | None = None) -> str:
    """The caller's correlation id when it is sane, else ``fresh_id`` or a new UUID."""
    for header in ("HTTP_X_CORRELATION_ID", "HTTP_X_REQUEST_ID"):
        value = request.META.get(header)
        if value and _SANE_ID.fullmatch(value):
            return value
    return fresh_id or new_correlation_id()


@receiver(signals.bind_extra_request_metadata)
def _bind_request(request: HttpRequest, logger: Any, log_kwargs: dict[str, Any], **_: Any) -> None:
    # django-structlog has just bound a fresh UUID as request_id: it becomes the
    # correlation id when the caller sent none, so the line carries one id.
    fresh_id = structlog.contextvars.get_contextvars().get("request_id")
    request.correlation_id = correlation_id_for(request, fresh_id)  # type: ignore[attr-defined]
    structlog.contextvars.unbind_contextvars("request_id")
    structlog.contextvars.bind_contextvars(correlationId=request.correlation_id, url=request.get_full_path())


@receiver(signals.bind_extra_request_finished_metadata)
def _bind_response(request: HttpRequest, response: HttpResponse, log_kwargs: dict[str, Any], **_: Any) -> None:
    log_kwargs["status"] = response.status_code
    log_kwargs.pop("code", None)
    response[CORRELATION_HEADER] = getattr(request, "correlation_id", "")


@receiver(signals.bind_extra_request_failed_metadata)
def _bind_failure(request: HttpRequest, log_kwargs: dict[str, Any], **_: Any) -> None:
    log_kwargs["status"] = 500
    log_kwargs.pop("code", None)


@receiver(signals.update_failure_response)
def _tag_failure_response(request: HttpRequest, response: HttpResponse, **_: Any) -> None:
    response[CORRELATION_HEADER] = getattr(request, "correlation_id", "")
