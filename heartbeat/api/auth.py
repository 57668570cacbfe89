"""Playback tokens at the door: the bearer token of a request, and the 401/403 answers when it will not do."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from rest_framework import status

from heartbeat.api.body import json_response
from heartbeat.limiter import metrics


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
