"""JSON bodies for every error the API can answer, and the one exception handler."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import structlog
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response

from heartbeat.edge.paths import is_player_api_path
from heartbeat.limiter.metrics import HEARTBEATS_BY_OUTCOME

logger = structlog.get_logger(__name__)


def invalid_request(errors: dict[str, Any]) -> Response:
    """400 for a body the API cannot use; ``errors`` maps each field to what is wrong."""
    HEARTBEATS_BY_OUTCOME["invalid"].inc()
    return Response({"code": "invalid_request", "errors": errors}, status=status.HTTP_400_BAD_REQUEST)


def internal_error(request: Any) -> Response:
    """500 with the correlation id that finds the logged stack."""
    return Response(
        {"code": "internal_error", "correlationId": getattr(request, "correlation_id", None)},
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


def json_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's exception handler: every error as JSON, never Django's HTML 500 page."""
    request = context.get("request")
    if isinstance(exc, exceptions.ParseError):
        return invalid_request({"body": [str(exc.detail)]})
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return Response(
            {"code": "unsupported_media_type", "message": "Send the body as JSON (Content-Type: application/json)."},
            status=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        )
    if isinstance(exc, exceptions.MethodNotAllowed):
        allowed = ", ".join(getattr(context.get("view"), "allowed_methods", []))
        return Response(
            {"code": "method_not_allowed", "message": f"Use one of: {allowed}."},
            status=status.HTTP_405_METHOD_NOT_ALLOWED,
            headers={"Allow": allowed},
        )
    if isinstance(exc, exceptions.APIException):
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else "error"
        return Response({"code": code, "message": str(exc.detail)}, status=exc.status_code)
    logger.exception("unhandled error", error=type(exc).__name__)
    # DRF's Request wraps Django's; the player views' own methods get Django's directly.
    return internal_error(getattr(request, "_request", request))


def method_not_allowed(allowed: Iterable[str]) -> JsonResponse:
    """405 for a plain Django view (the probes), shaped like DRF's."""
    methods = ", ".join(allowed)
    response = JsonResponse({"code": "method_not_allowed", "message": f"Use one of: {methods}."}, status=405)
    response["Allow"] = methods
    return response


# Django's error handlers (``handler404`` ... in streamlimit/urls.py): JSON on
# the player paths and probes, Django's own pages for staff.


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """404: JSON on player paths and probes."""
    if is_player_api_path(request.path_info):
        body = {"code": "not_found", "message": "No such endpoint. Players POST to /heartbeat."}
        return JsonResponse(body, status=404)
    return defaults.page_not_found(request, exception)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """400 (a suspicious request Django refused): JSON on player paths and probes."""
    if is_player_api_path(request.path_info):
        return JsonResponse({"code": "bad_request", "message": "The request was refused."}, status=400)
    return defaults.bad_request(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """500 outside a view's own handling: JSON with the correlation id on player paths and probes."""
    if is_player_api_path(request.path_info):
        body = {"code": "internal_error", "correlationId": getattr(request, "correlation_id", None)}
        return JsonResponse(body, status=500)
    return defaults.server_error(request)
