"""JSON bodies for every error the API can answer, and the one exception handler."""

from __future__ import annotations

from typing import Any

import structlog
from rest_framework import exceptions, status
from rest_framework.response import Response

from heartbeat.metrics import HEARTBEATS_BY_OUTCOME

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
    return internal_error(request._request if request is not None else None)
