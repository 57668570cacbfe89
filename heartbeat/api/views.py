"""The player handlers: parse and validate (``PlayerAPIView``), call the StreamManager, shape the answer."""

from __future__ import annotations

import time
from typing import Any

import structlog
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from drf_spectacular.utils import extend_schema
from redis.exceptions import RedisError
from rest_framework import status
from rest_framework.response import Response

from heartbeat.api import schema
from heartbeat.api.auth import token_failure, token_mismatch
from heartbeat.api.base import PlayerAPIView
from heartbeat.api.body import json_response
from heartbeat.api.errors import internal_error
from heartbeat.api.rendering import ORJSONParser, PlainTextJSONParser
from heartbeat.edge.client_network import client_network
from heartbeat.limiter import metrics
from heartbeat.limiter.decisions import SessionInputs
from heartbeat.limiter.manager import HeartbeatResult, StopFromOtherNetworkError
from heartbeat.limiter.outcomes import ROWS
from heartbeat.limiter.read_models import SessionInfo
from heartbeat.limiter.tokens import PlaybackClaims
from heartbeat.services import get_live_state, get_stream_manager, get_verifier
from heartbeat.store.breaker import CircuitOpenError

logger = structlog.get_logger(__name__)


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


# The body fields a policy decides with (docs/operators/policies.md), and the claims that win over them.
POLICY_INPUT_FIELDS = ("deviceClass", "deviceId", "quality", "replaces")
_CLAIMED_INPUTS = (("deviceClass", "device_class"), ("deviceId", "device_id"), ("quality", "quality"))


def session_inputs(
    ids: dict[str, str], claims: PlaybackClaims | None, request: HttpRequest
) -> tuple[SessionInputs | None, HttpResponse | None]:
    """The heartbeat's policy inputs (a token's claims win over the body), or the 403 to send instead.

    A body that contradicts a claim is refused: a player must not dodge its
    cap by calling its phone a TV.
    """
    if not any(field in ids for field in POLICY_INPUT_FIELDS) and not (claims and claims.has_policy_inputs):
        return None, None
    values = {field: ids.get(field, "") for field, _ in _CLAIMED_INPUTS}
    for field, attribute in _CLAIMED_INPUTS:
        claimed = getattr(claims, attribute, None) if claims else None
        if claimed is None:
            continue
        if values[field] and values[field] != claimed:
            return None, token_mismatch(f"The token names another {field} than the body's.")
        values[field] = claimed
    replaces = ids.get("replaces", "")
    if not replaces:
        proof = ""
    elif claims is None:
        proof = "network"  # no token: only the network that plays the session may hand it off, as for stops
    elif claims.is_account_token:
        proof = ""
    elif claims.device_id:
        proof = f"device:{claims.device_id}"
    else:
        return None, token_mismatch("A session token hands off only a session of its own device: it needs deviceId.")
    return (
        SessionInputs(
            values["deviceClass"],
            values["deviceId"],
            values["quality"],
            (claims.pool or "") if claims else "",
            replaces,
            proof,
        ),
        None,
    )


class HeartbeatView(PlayerAPIView):
    """``POST /heartbeat``: 200 keep playing, 400 stop (limit reached, evicted, stopped or replaced)."""

    parser_classes = (ORJSONParser,)
    optional_fields = ("deviceName", *POLICY_INPUT_FIELDS)

    @extend_schema(**schema.HEARTBEAT)
    def post(self, request: HttpRequest) -> HttpResponseBase:
        ids, error = self.parsed_ids(request)
        if error:
            return error
        claims = self.claims
        inputs, error = session_inputs(ids, claims, request)
        if error:
            return error
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
                # Anonymous players only: a verified token already proves the account.
                limit_new_sessions_of_network=claims is None,
                inputs=inputs,
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
        row = ROWS[result.outcome]
        body["code"] = row.api_code
        body["message"] = result.message or row.player_message.format(
            limit=result.limit, device=result.handed_off_to or "another screen"
        )
        if result.rule is not None:
            body["rule"] = result.rule.as_json()
            body["decisionId"] = result.decision_id
            # The request's log line carries it too: support finds the decision a viewer reads out.
            structlog.contextvars.bind_contextvars(decisionId=result.decision_id, rule=result.rule.name)
        if sessions is not None:
            body["sessions"] = sessions
        response = json_response(body, status=row.http_status)
        if result.retry_after_seconds is not None:
            response["Retry-After"] = str(result.retry_after_seconds)
        return response

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


class StopView(PlayerAPIView):
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


class SessionsView(PlayerAPIView):
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
            sessions = get_live_state().sessions(claims.user_id)
        except RedisError as exc:
            log_redis_failure("sessions", exc)
            return internal_error(request)
        return json_response({"limit": limit.limit, "limitSource": limit.source, "sessions": session_list(sessions)})
