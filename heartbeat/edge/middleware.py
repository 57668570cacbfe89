"""Request logging: django-structlog's middleware, with a lean path for player requests.

A heartbeat is a few hundred microseconds of work, and django-structlog's
general-purpose middleware (request-start line, user binding, four signals)
would add a fifth to it. Player paths get the same ``request_finished`` line,
fields and levels from a few direct calls; every other path goes through
django-structlog unchanged.
"""

from __future__ import annotations

import logging

import structlog
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse
from django_structlog.middlewares import RequestMiddleware

from heartbeat.adapters.django import mark_response_logged
from heartbeat.edge import cors
from heartbeat.edge.hosts import ALLOWED_HOSTS, invalid_host
from heartbeat.edge.logging_context import CORRELATION_HEADER, correlation_id_for
from heartbeat.edge.metrics_access import metrics_allowed
from heartbeat.edge.paths import is_player_api_path

logger = structlog.get_logger("django_structlog.middlewares.request")

_LEVELS = {2: logging.INFO, 4: logging.WARNING, 5: logging.ERROR}


# What every player and probe answer carries: no content sniffing, no caching.
# The answers are JSON about one account at one moment; a shared cache must
# not keep them, and a browser must not read them as anything but JSON.
NOSNIFF = ("X-Content-Type-Options", "nosniff")
NO_STORE = ("Cache-Control", "no-store")
# The response attribute where the lean handler finds the correlation id of the
# headers it adds itself (see PlayerRequestLogMiddleware).
LEAN_HEADERS_ATTRIBUTE = "streamlimit_correlation_id"


def add_player_headers(response: HttpResponse) -> None:
    """Add ``NOSNIFF`` and, unless the answer has its own, ``NO_STORE``."""
    response[NOSNIFF[0]] = NOSNIFF[1]
    response.setdefault(*NO_STORE)


def logged_url(request: HttpRequest) -> str:
    """``request.get_full_path()``, without escaping again the fixed paths of the player API.

    Those are plain ASCII: escaped, a heartbeat's path is itself (escaping it
    cost about 1% of a heartbeat).
    """
    path = request.path
    if path in settings.PLAYER_API_PATHS and not request.META.get("QUERY_STRING"):
        return path
    return request.get_full_path()


class RequestLogMiddleware(RequestMiddleware):
    """django-structlog's RequestMiddleware; player paths take ``log_player_request``."""

    def __call__(self, request: HttpRequest) -> HttpResponse:  # type: ignore[override]
        if is_player_api_path(request.path_info):
            return self.log_player_request(request)
        response = super().__call__(request)
        # django-structlog's request_finished line is this response's log line
        # (see log_player_request): no second, id-less "Not Found: ..." line.
        mark_response_logged(response)
        return response

    def log_player_request(self, request: HttpRequest) -> HttpResponse:
        """Bind the correlation id and URL, answer, log one line by outcome, echo the id."""
        correlation_id = correlation_id_for(request)
        request.correlation_id = correlation_id  # type: ignore[attr-defined]
        structlog.contextvars.bind_contextvars(correlationId=correlation_id, url=logged_url(request))
        try:
            try:
                # The lean handler has no CommonMiddleware to check the Host
                # header: DJANGO_ALLOWED_HOSTS holds on player paths too.
                ALLOWED_HOSTS.check(request)
            except DisallowedHost:
                if request.path_info == "/metrics" and metrics_allowed(request):
                    # Prometheus scrapes each replica by its address, and cannot
                    # set Host; the network or token decides, and /metrics builds
                    # no URL from the Host header.
                    response = self.get_response(request)
                else:
                    logger.warning("disallowed host", host=request.META.get("HTTP_HOST", "")[:160])
                    response = invalid_host()
            else:
                response = cors.preflight(request) or self.get_response(request)
                cors.add_headers(request, response)
            logger.log(
                _LEVELS.get(response.status_code // 100, logging.INFO),
                "request_finished",
                request=f"{request.method} {request.path_info}",
                status=response.status_code,
            )
            self.add_headers(response, correlation_id)
            # This line is the response's log line: Django would add its own
            # "Bad Request: /heartbeat" for every 4xx (a refusal included), after
            # the correlation id is unbound, through the slower stdlib path.
            mark_response_logged(response)
            return response
        finally:
            structlog.contextvars.clear_contextvars()

    @staticmethod
    def add_headers(response: HttpResponse, correlation_id: str) -> None:
        """The correlation id and the player headers, set on the response."""
        response[CORRELATION_HEADER] = correlation_id
        add_player_headers(response)


class PlayerRequestLogMiddleware(RequestLogMiddleware):
    """The request-log middleware of the lean handler (``PLAYER_API_MIDDLEWARE``): every request is a player's.

    ``streamlimit/wsgi.py`` sends only player paths to that handler, so the
    path is not checked a second time. The correlation id and the player
    headers are left to the lean handler, which appends them as raw pairs to
    the answer's headers (``heartbeat/edge/handler.py``): setting them on the
    response runs Django's header checks (encoding, line breaks) on constant
    strings, about 2% of a heartbeat (bench/README.md). The answer's bytes
    are the same.
    """

    def __call__(self, request: HttpRequest) -> HttpResponse:  # type: ignore[override]
        return self.log_player_request(request)

    @staticmethod
    def add_headers(response: HttpResponse, correlation_id: str) -> None:
        """Leave the correlation id and the player headers to the lean handler (``LEAN_HEADERS_ATTRIBUTE``)."""
        setattr(response, LEAN_HEADERS_ATTRIBUTE, correlation_id)
