"""The heartbeat API: thin views over the StreamManager."""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
import structlog
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from drf_spectacular.utils import extend_schema
from redis.exceptions import RedisError
from rest_framework import status
from rest_framework.exceptions import ParseError, UnsupportedMediaType
from rest_framework.response import Response
from rest_framework.views import APIView

from heartbeat import metrics, schema
from heartbeat.breaker import CircuitOpenError
from heartbeat.errors import internal_error, invalid_request
from heartbeat.live_state import SessionInfo
from heartbeat.rendering import (
    JSONOnlyNegotiation,
    ORJSONParser,
    ORJSONRenderer,
    PlainTextJSONParser,
    media_type_of,
    parse_json,
)
from heartbeat.request_body import MAX_BODY_BYTES
from heartbeat.services import get_stream_manager
from heartbeat.stream_manager import HeartbeatResult, Outcome, StopFromOtherNetworkError
from heartbeat.tokens import PlaybackClaims, TokenError, get_verifier
from heartbeat.validation import ID_FIELDS, device_name_error, id_error
from streamlimit.client_network import client_network

logger = structlog.get_logger(__name__)

# Logged as ``reqBody``: only the fields the API reads, each cut short, so a
# client cannot flood the logs through the body.
_LOGGED_FIELD_LENGTH = 160
# A JWT's first segment (base64url of its header) followed by a dot: what is
# cut from logged bodies. A token cut before its first dot has no signature.
_JWT_LIKE = re.compile(r"[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_.-]*")

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
    Outcome.STOPPED: (
        "session_stopped",
        "Playback on this screen was stopped from another screen of this account.",
    ),
    Outcome.REPLACED: (
        "session_replaced",
        "This account started playing on another screen, which took this screen's place.",
    ),
    Outcome.BLOCKED: (
        "account_blocked",
        "Support has paused new playback on this account for a while. Contact support if you do not know why.",
    ),
}

# How a field of the body is checked; absent optional fields are fine.
_FIELD_RULES = {
    "userId": id_error,
    "streamId": id_error,
    "sessionId": id_error,
    "deviceName": device_name_error,
    # Checked for its type even with tokens off, so a client learns its mistake early.
    "token": lambda value: None if isinstance(value, str) else "Must be a string.",
}


def json_response(body: dict[str, Any], status: int = 200) -> HttpResponse:
    """The answer to a heartbeat, rendered once with orjson.

    The hot path skips DRF's Response, whose template-response machinery and
    renderer lookup cost more than building the bytes; the body is the same.
    """
    return HttpResponse(orjson.dumps(body), content_type="application/json", status=status)


def read_ids(
    data: Any, fields: tuple[str, ...], optional: tuple[str, ...] = ()
) -> tuple[dict[str, str] | None, dict[str, list[str]]]:
    """Pick and check ``fields`` (and ``optional``, when present) from a parsed body.

    Returns (the ids, {}) or (None, errors by field).
    """
    if not isinstance(data, dict):
        return None, {"body": ["Must be a JSON object."]}
    errors: dict[str, list[str]] = {}
    ids: dict[str, str] = {}
    for name in (*fields, *optional):
        if name not in data:
            if name not in optional:
                errors[name] = ["This field is required."]
        elif error := _FIELD_RULES[name](data[name]):
            errors[name] = [error]
        else:
            ids[name] = data[name]
    if errors:
        return None, errors
    return ids, {}


def token_failure(code: str, reason: str, message: str) -> HttpResponse:
    """401 for a missing or unusable token, with the ``WWW-Authenticate`` challenge of RFC 6750."""
    metrics.TOKEN_FAILURES.labels(reason).inc()
    metrics.HEARTBEATS_BY_OUTCOME["unauthorized"].inc()
    challenge = 'Bearer realm="streamlimit"'
    if code in ("invalid_token", "token_expired"):
        challenge += ', error="invalid_token"'
    response = json_response({"code": code, "message": message}, status=status.HTTP_401_UNAUTHORIZED)
    response["WWW-Authenticate"] = challenge
    return response


def token_mismatch(message: str) -> HttpResponse:
    """403: the token is valid, but for another account or session than the body names."""
    metrics.TOKEN_FAILURES.labels("mismatch").inc()
    metrics.HEARTBEATS_BY_OUTCOME["unauthorized"].inc()
    return json_response({"code": "token_mismatch", "message": message}, status=status.HTTP_403_FORBIDDEN)


def bearer_token(request: HttpRequest) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; "" for another scheme; None when absent."""
    header = request.META.get("HTTP_AUTHORIZATION")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def session_list(sessions: list[SessionInfo]) -> list[dict[str, Any]]:
    """An account's live sessions as players see them (times in ISO 8601, UTC)."""
    return [
        {
            "sessionId": s.session_id,
            "streamId": s.stream_id,
            "deviceName": s.device_name,
            "startedAt": s.started_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "lastHeartbeatAt": s.last_heartbeat_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        for s in sessions
    ]


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
    """What the log line shows of a body: the ids only (never ``token``), or the start of a non-object body.

    A body that is not a JSON object may still hold a token (a broken beacon
    body): anything shaped like a JWT is cut out of it.
    """
    if isinstance(data, dict):
        return {k: str(data[k])[:_LOGGED_FIELD_LENGTH] for k in ID_FIELDS if k in data}
    return _JWT_LIKE.sub("[token removed]", str(data)[:_LOGGED_FIELD_LENGTH])


def declared_content_type(meta: dict[str, Any]) -> str:
    """The ``Content-Type`` a request declares, read as DRF reads it ("" when absent)."""
    return meta.get("CONTENT_TYPE", meta.get("HTTP_CONTENT_TYPE", ""))


def declared_body_length(meta: dict[str, Any]) -> int:
    """The body length a request declares, read as DRF reads it (0, so no body, when absent or not a number)."""
    try:
        return int(meta.get("CONTENT_LENGTH", meta.get("HTTP_CONTENT_LENGTH", 0)))
    except (ValueError, TypeError):
        return 0


class _PlayerAPIView(APIView):
    """Shared set-up of the player endpoints: JSON only, no auth, no throttles.

    Players are not Django users, and DRF's throttles are not atomic, so none of
    that machinery runs on the heartbeat path. The view's own methods
    (``answered_methods``) get Django's request, not DRF's (see ``dispatch``);
    the parser and renderer classes below still say what DRF answers for the
    other methods and what the OpenAPI schema lists.
    """

    authentication_classes = ()
    permission_classes = ()
    throttle_classes = ()
    renderer_classes = (ORJSONRenderer,)
    content_negotiation_class = JSONOnlyNegotiation
    # The ids the body must carry (userId may be left out in token mode), and may carry.
    required_fields: tuple[str, ...] = ID_FIELDS
    optional_fields: tuple[str, ...] = ()
    # /heartbeat/stop: navigator.sendBeacon cannot set headers, so the body may carry the token.
    token_in_body = False
    # The verified token of this request (None when tokens are off); a view instance serves one request.
    claims: PlaybackClaims | None = None
    # The methods the view answers itself, with Django's request; DRF answers the others (OPTIONS, 405).
    answered_methods: frozenset[str] = frozenset({"POST"})

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        """Answer ``answered_methods`` without DRF's request wrapping; any other method through DRF.

        DRF's dispatch wraps the request, negotiates the renderer, and runs
        authentication, permissions and throttles, none of which these views
        have (one renderer, JSON bodies read in ``parsed_ids``): a tenth of
        the instructions of a heartbeat in Django (bench/README.md), for
        nothing. Exceptions still go through
        DRF's ``handle_exception`` (our JSON exception handler), and every
        answer through ``finalize_response`` (the ``Allow`` header, rendering
        of DRF ``Response`` bodies), so each answer is the one DRF would send.
        """
        if request.method not in self.answered_methods:
            return super().dispatch(request, *args, **kwargs)
        self.args = args
        self.kwargs = kwargs
        self.headers = self.default_response_headers
        self.format_kwarg = self.get_format_suffix(**kwargs)
        try:
            response = getattr(self, request.method.lower())(request, *args, **kwargs)
        except Exception as exc:
            response = self.handle_exception(exc)
        self.response = self.finalize_response(request, response, *args, **kwargs)
        return self.response

    @property
    def default_response_headers(self) -> dict[str, str]:
        """DRF's headers for every answer (``Allow``), worked out once per view class.

        DRF lists the view's methods again for every request (about 1% of a
        heartbeat); they never change. Read after ``setup``, which adds
        ``head`` to views with ``get``, as DRF reads them.
        """
        cls = type(self)
        headers = cls.__dict__.get("_response_headers")
        if headers is None:
            headers = super().default_response_headers
            cls._response_headers = headers
        return dict(headers)  # finalize_response takes Vary out of its copy

    def perform_authentication(self, request: Any) -> None:
        """Skip DRF's eager authentication: players are not Django users.

        DRF's docs give this override for views that never read
        ``request.user``; without it every OPTIONS or refused method would
        build an AnonymousUser.
        """

    def read_body(self, request: HttpRequest) -> Any:
        """The JSON body, read as DRF's parsers would (raises UnsupportedMediaType or ParseError)."""
        content_type = declared_content_type(request.META)
        wanted = media_type_of(content_type)
        if not any(parser.media_type == wanted for parser in self.parser_classes):
            raise UnsupportedMediaType(content_type)
        # Read as a stream, as DRF's parsers read it.
        return parse_json(request.read())

    def parsed_ids(self, request: HttpRequest) -> tuple[dict[str, str] | None, HttpResponseBase | None]:
        """The validated ids, or the 4xx response to send instead."""
        meta = request.META
        if not declared_content_type(meta):
            # DRF would read a body without Content-Type as empty form data.
            return None, Response(
                {
                    "code": "unsupported_media_type",
                    "message": "Send the body as JSON (Content-Type: application/json).",
                },
                status=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            )
        length = declared_body_length(meta)
        if length > MAX_BODY_BYTES:
            return None, Response(
                {"code": "payload_too_large", "message": f"The body must be at most {MAX_BODY_BYTES} bytes."},
                status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            )
        if length == 0:
            return None, invalid_request({"body": ["The body is empty: send a JSON object."]})
        try:
            data = self.read_body(request)
        except ParseError as error:
            # Operators still see what was sent (cut short), not just that it failed.
            structlog.contextvars.bind_contextvars(reqBody=_log_body(getattr(error, "received", "")))
            raise
        structlog.contextvars.bind_contextvars(reqBody=_log_body(data))
        return self.authorized_ids(request, data)

    def authenticate_player(self, request: HttpRequest, data: Any = None) -> HttpResponse | None:
        """Verify the playback token (when tokens are on) and keep its claims; or the 401 to send.

        Runs before any id of the body is used and before Redis is touched.
        """
        verifier = get_verifier()
        if not verifier.enabled:
            return None
        token = bearer_token(request)
        if token is None and self.token_in_body and isinstance(data, dict):
            token = data.get("token")
        if token is None:
            if not settings.PLAYBACK_TOKENS_REQUIRED:
                return None  # served as with tokens off (see PLAYBACK_TOKENS_REQUIRED)
            return token_failure("token_required", "missing", "Send the playback token: Authorization: Bearer <token>.")
        try:
            self.claims = verifier.verify(token)
        except TokenError as error:
            return token_failure(error.code, error.reason, error.message)
        return None

    def authorized_ids(self, request: HttpRequest, data: Any) -> tuple[dict[str, str] | None, HttpResponse | None]:
        """The token checked, then the body's ids, then that they agree with the token."""
        if failure := self.authenticate_player(request, data):
            return None, failure
        claims = self.claims
        if claims is None:
            ids, errors = read_ids(data, self.required_fields, self.optional_fields)
            return ids, (invalid_request(errors) if errors else None)
        # In token mode the account is the token's sub; the body may leave userId out.
        required = tuple(f for f in self.required_fields if f != "userId")
        ids, errors = read_ids(data, required, ("userId", *self.optional_fields))
        if errors:
            return None, invalid_request(errors)
        if ids.setdefault("userId", claims.user_id) != claims.user_id:
            return None, token_mismatch("The token is for another account than the body's userId.")
        if claims.session_id is not None and ids["sessionId"] != claims.session_id:
            return None, token_mismatch("The token is for another session than the body's sessionId.")
        return ids, None


class HeartbeatView(_PlayerAPIView):
    """``POST /heartbeat``: 200 keep playing, 400 stop (limit reached, evicted, stopped or replaced)."""

    parser_classes = (ORJSONParser,)
    optional_fields = ("deviceName",)

    @extend_schema(**schema.HEARTBEAT)
    def post(self, request: HttpRequest) -> HttpResponseBase:
        ids, error = self.parsed_ids(request)
        if error:
            return error
        claims = self.claims
        manager = get_stream_manager()
        started = time.perf_counter()
        try:
            result = manager.admit(
                ids["userId"],
                ids["streamId"],
                ids["sessionId"],
                device_name=ids.get("deviceName"),
                max_streams=claims.max_streams if claims else None,
                plan=claims.plan if claims else None,
                # Only a verified account may see who is watching on it.
                list_sessions_when_full=claims is not None,
                network=client_network(request),
            )
        except RedisError as exc:
            seconds = time.perf_counter() - started
            log_redis_failure("heartbeat", exc)
            # Counted at once (an outage must show in the next scrape); its duration with the others.
            metrics.HEARTBEATS_BY_OUTCOME["error"].inc()
            metrics.HEARTBEAT_TALLY.record(None, None, seconds)
            if settings.STREAMLIMIT_FAIL_OPEN:
                return Response(self._degraded_body(claims))
            return internal_error(request)
        metrics.HEARTBEAT_TALLY.record(result.outcome.value, result.limit_source, time.perf_counter() - started)
        return self._answer(result, None if result.sessions is None else session_list(result.sessions))

    @staticmethod
    def _answer(result: HeartbeatResult, sessions: list[dict[str, Any]] | None) -> HttpResponse:
        body: dict[str, Any] = {
            "allowed": result.allowed,
            "activeSessions": result.active_sessions,
            "limit": result.limit,
            "limitSource": result.limit_source,
            "heartbeatInterval": settings.HEARTBEAT_INTERVAL_SECONDS,
        }
        if result.allowed:
            return json_response(body)
        code, message = REFUSAL_MESSAGES[result.outcome]
        body["code"] = code
        body["message"] = message.format(limit=result.limit)
        if sessions is not None:
            body["sessions"] = sessions
        return json_response(body, status=status.HTTP_400_BAD_REQUEST)

    @staticmethod
    def _degraded_body(claims: PlaybackClaims | None) -> dict[str, Any]:
        # Fail-open: the operator chose never to interrupt a viewer while Redis is down.
        limit, source = get_stream_manager().asked_limit(
            claims.max_streams if claims else None, claims.plan if claims else None
        )
        return {
            "allowed": True,
            "degraded": True,
            "activeSessions": None,
            "limit": limit,
            "limitSource": source,
            "heartbeatInterval": settings.HEARTBEAT_INTERVAL_SECONDS,
        }


class StopView(_PlayerAPIView):
    """``POST /heartbeat/stop``: the player stopped; free its slot now (204, idempotent).

    With an account token (no ``sid``) it stops any session of the account,
    which is then refused (``session_stopped``) for a session TTL.
    """

    parser_classes = (ORJSONParser, PlainTextJSONParser)
    required_fields = ("userId", "sessionId")
    optional_fields = ("streamId", "token")
    token_in_body = True

    @extend_schema(**schema.STOP)
    def post(self, request: HttpRequest) -> HttpResponseBase:
        ids, error = self.parsed_ids(request)
        if error:
            return error
        try:
            get_stream_manager().stop(
                ids["userId"],
                ids["sessionId"],
                from_other_screen=self.claims is not None and self.claims.is_account_token,
                # Without a token nothing proves who stops: only the network that plays the session may.
                network=client_network(request) if self.claims is None else "",
            )
        except StopFromOtherNetworkError:
            return json_response(
                {
                    "code": "stop_from_other_network",
                    "message": "This session plays on another network: without a playback token, "
                    "a session can only be stopped from the network that plays it.",
                },
                status=status.HTTP_403_FORBIDDEN,
            )
        except RedisError as exc:
            log_redis_failure("stop", exc)
            return internal_error(request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SessionsView(_PlayerAPIView):
    """``GET /sessions``: the account's limit and live sessions, for a player's "devices" screen.

    Only with a valid token: without tokens, anyone could list who watches on any account.
    """

    answered_methods = frozenset({"GET", "HEAD"})

    @extend_schema(**schema.SESSIONS)
    def get(self, request: HttpRequest) -> HttpResponseBase:
        if not get_verifier().enabled:
            return token_failure(
                "tokens_disabled", "tokens_disabled", "Session lists need playback tokens, which are off here."
            )
        if failure := self.authenticate_player(request):
            return failure
        claims = self.claims
        if claims is None:  # tokens optional, and none sent
            return token_failure("token_required", "missing", "Send the playback token: Authorization: Bearer <token>.")
        manager = get_stream_manager()
        try:
            limit = manager.limit_for(claims.user_id, claims.max_streams, claims.plan)
            sessions = manager.reads.sessions(claims.user_id)
        except RedisError as exc:
            log_redis_failure("sessions", exc)
            return internal_error(request)
        return json_response({"limit": limit.limit, "limitSource": limit.source, "sessions": session_list(sessions)})
