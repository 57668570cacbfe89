"""The heartbeat API: thin views over the StreamManager."""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from redis.exceptions import RedisError
from rest_framework import status
from rest_framework.exceptions import ParseError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from heartbeat import metrics, schema
from heartbeat.breaker import CircuitOpenError
from heartbeat.errors import internal_error, invalid_request
from heartbeat.rendering import JSONOnlyNegotiation, ORJSONParser, ORJSONRenderer, PlainTextJSONParser
from heartbeat.request_body import MAX_BODY_BYTES
from heartbeat.services import get_stream_manager
from heartbeat.stream_manager import HeartbeatResult, Outcome
from heartbeat.validation import ID_FIELDS, id_error

logger = structlog.get_logger(__name__)

# Logged as ``reqBody``: only the fields the API reads, each cut short, so a
# client cannot flood the logs through the body.
_LOGGED_FIELD_LENGTH = 160

REFUSAL_MESSAGES = {
    Outcome.LIMIT_REACHED: (
        "concurrency_limit_reached",
        "This account is already playing on {limit} screens, the most its plan allows. "
        "Stop a video on another screen to watch here.",
    ),
    Outcome.EVICTED: (
        "session_evicted",
        "Playback on this screen was stopped by support. Start it again in a few minutes, "
        "or contact support if this keeps happening.",
    ),
}


def json_response(body: dict[str, Any], status: int = 200) -> HttpResponse:
    """The answer to a heartbeat, rendered once with orjson.

    The hot path skips DRF's Response, whose template-response machinery and
    renderer lookup cost more than building the bytes; the body is the same.
    """
    return HttpResponse(orjson.dumps(body), content_type="application/json", status=status)


def read_ids(data: Any, fields: tuple[str, ...]) -> tuple[dict[str, str] | None, dict[str, list[str]]]:
    """Pick and check ``fields`` from a parsed body: (the ids, {}) or (None, errors by field)."""
    if not isinstance(data, dict):
        return None, {"body": ["Must be a JSON object."]}
    errors: dict[str, list[str]] = {}
    for name in fields:
        if name not in data:
            errors[name] = ["This field is required."]
        elif error := id_error(data[name]):
            errors[name] = [error]
    if errors:
        return None, errors
    return {name: data[name] for name in fields}, {}


def log_redis_failure(operation: str, exc: RedisError) -> None:
    """Log and count a Redis failure of a player request.

    A call the open breaker refused never reached Redis: one warning line
    without a stack, so a Redis outage does not flood the logs with the same
    trace once per heartbeat.
    """
    if isinstance(exc, CircuitOpenError):
        metrics.REDIS_ERRORS.labels("breaker_open").inc()
        logger.warning(f"{operation} failed", reason="redis_breaker_open")
        return
    metrics.REDIS_ERRORS.labels(operation).inc()
    logger.error(f"{operation} failed", reason="redis_error", error=f"{type(exc).__name__}: {exc}", exc_info=exc)


def _log_body(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: str(data[k])[:_LOGGED_FIELD_LENGTH] for k in ID_FIELDS if k in data}
    return str(data)[:_LOGGED_FIELD_LENGTH]


class _PlayerAPIView(APIView):
    """Shared set-up of the player endpoints: JSON only, no auth, no throttles.

    Players are not Django users, and DRF's throttles are not atomic, so none of
    that machinery runs on the heartbeat path.
    """

    authentication_classes = ()
    permission_classes = ()
    throttle_classes = ()
    renderer_classes = (ORJSONRenderer,)
    content_negotiation_class = JSONOnlyNegotiation

    def perform_authentication(self, request: Request) -> None:
        """Skip DRF's eager authentication: players are not Django users.

        DRF's docs give this override for views that never read
        ``request.user``; without it every heartbeat builds an AnonymousUser.
        """

    def parsed_ids(self, request: Request) -> tuple[dict[str, str] | None, Response | None]:
        """The validated ids, or the 4xx response to send instead."""
        if not request.content_type:
            # DRF would read a body without Content-Type as empty form data.
            return None, Response(
                {
                    "code": "unsupported_media_type",
                    "message": "Send the body as JSON (Content-Type: application/json).",
                },
                status=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            )
        try:
            length = int(request._request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY_BYTES:
            return None, Response(
                {"code": "payload_too_large", "message": f"The body must be at most {MAX_BODY_BYTES} bytes."},
                status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            )
        if request.stream is None:
            return None, invalid_request({"body": ["The body is empty: send a JSON object."]})
        try:
            data = request.data
        except ParseError as error:
            # Operators still see what was sent (cut short), not just that it failed.
            structlog.contextvars.bind_contextvars(reqBody=_log_body(getattr(error, "received", "")))
            raise
        structlog.contextvars.bind_contextvars(reqBody=_log_body(data))
        ids, errors = read_ids(data, ID_FIELDS)
        return ids, (invalid_request(errors) if errors else None)


class HeartbeatView(_PlayerAPIView):
    """``POST /heartbeat``: 200 keep playing, 400 stop (limit reached or evicted)."""

    parser_classes = (ORJSONParser,)

    @extend_schema(**schema.HEARTBEAT)
    def post(self, request: Request) -> Response:
        ids, error = self.parsed_ids(request)
        if error:
            return error
        try:
            with metrics.HEARTBEAT_SECONDS.time():
                result = get_stream_manager().admit(ids["userId"], ids["streamId"], ids["sessionId"])
        except RedisError as exc:
            log_redis_failure("heartbeat", exc)
            metrics.HEARTBEATS_BY_OUTCOME["error"].inc()
            if settings.STREAMLIMIT_FAIL_OPEN:
                return Response(self._degraded_body())
            return internal_error(request._request)
        metrics.HEARTBEATS_BY_OUTCOME[result.outcome.value].inc()
        return self._answer(result)

    @staticmethod
    def _answer(result: HeartbeatResult) -> Response:
        body: dict[str, Any] = {
            "allowed": result.allowed,
            "activeSessions": result.active_sessions,
            "limit": result.limit,
            "heartbeatInterval": settings.HEARTBEAT_INTERVAL_SECONDS,
        }
        if result.allowed:
            return json_response(body)
        code, message = REFUSAL_MESSAGES[result.outcome]
        body["code"] = code
        body["message"] = message.format(limit=result.limit)
        return json_response(body, status=status.HTTP_400_BAD_REQUEST)

    @staticmethod
    def _degraded_body() -> dict[str, Any]:
        # Fail-open: the operator chose never to interrupt a viewer while Redis is down.
        return {
            "allowed": True,
            "degraded": True,
            "activeSessions": None,
            "limit": settings.MAX_CONCURRENT_STREAMS,
            "heartbeatInterval": settings.HEARTBEAT_INTERVAL_SECONDS,
        }


class StopView(_PlayerAPIView):
    """``POST /heartbeat/stop``: the player stopped; free its slot now (204, idempotent)."""

    parser_classes = (ORJSONParser, PlainTextJSONParser)

    @extend_schema(**schema.STOP)
    def post(self, request: Request) -> Response:
        ids, error = self.parsed_ids(request)
        if error:
            return error
        try:
            get_stream_manager().stop(ids["userId"], ids["sessionId"])
        except RedisError as exc:
            log_redis_failure("stop", exc)
            return internal_error(request._request)
        return Response(status=status.HTTP_204_NO_CONTENT)
