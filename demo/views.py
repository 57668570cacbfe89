"""The demo player page and the demo-only token endpoint.

The token endpoint signs a playback token for any account it is asked for,
which is exactly what a real service must never offer: so both views exist
only when ``STREAMLIMIT_DEMO`` is on (``make run``), and answer 404 otherwise
(the Docker image's default).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from heartbeat.limiter.ids import id_error
from heartbeat.limiter.tokens import issue_token
from heartbeat.services import get_verifier

# Demo tokens are short-lived; the page asks for one per play.
DEMO_TOKEN_TTL_SECONDS = 600
MIN_DEMO_TOKEN_TTL_SECONDS = 1
MAX_DEMO_TOKEN_BODY_BYTES = 1024


def demo_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """404 unless the demo is on."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not settings.STREAMLIMIT_DEMO:
            raise Http404("The demo is off (STREAMLIMIT_DEMO).")
        return view(request, *args, **kwargs)

    return wrapper


def tokens_mode() -> str:
    """ "off" (no keys), "hs256" (the demo can sign), or "jwks-only" (it cannot)."""
    verifier = get_verifier()
    if not verifier.enabled:
        return "off"
    return "hs256" if verifier.hs256_kids else "jwks-only"


@require_GET
@demo_only
@never_cache
def player_page(request: HttpRequest) -> HttpResponse:
    """The demo player: a generated test pattern, the answers as they come, the screens on refusal."""
    return render(request, "demo/player.html", {"tokens_mode": tokens_mode()})


# No cookie or session is read, nothing is changed: a cross-site form could make
# a token, but could not read it (no CORS), so there is nothing for CSRF to guard.
@csrf_exempt
@require_POST
@demo_only
@never_cache
def demo_token(request: HttpRequest) -> HttpResponse:
    """``POST /demo/token`` ``{"userId", "sessionId"?, "plan"?, "ttlSeconds"?}``: a token signed with the HS256 key.

    With ``sessionId``, a session token (``sid``) for the tab's own heartbeats
    and stop; without, an account token for "stop this one" and "move here".
    With ``plan``, the token's ``plan`` claim: the account plays under that
    plan's rules of the policy in force (``?plan=family`` on the page).
    """
    if tokens_mode() != "hs256":
        return JsonResponse(
            {"code": "tokens_unavailable", "message": "Tokens are off, or there is no HS256 key to sign with."},
            status=409,
        )
    if len(request.body) > MAX_DEMO_TOKEN_BODY_BYTES:
        return JsonResponse({"code": "payload_too_large", "message": "The body is too large."}, status=413)
    try:
        data = json.loads(request.body or b"null")
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return _invalid({"body": ["Send a JSON object."]})
    user_id = data.get("userId")
    if error := id_error(user_id):
        return _invalid({"userId": [error]})
    session_id = data.get("sessionId")
    if session_id is not None and (error := id_error(session_id)):
        return _invalid({"sessionId": [error]})
    plan = data.get("plan")
    if plan is not None and (error := id_error(plan)):
        return _invalid({"plan": [error]})
    ttl = data.get("ttlSeconds", DEMO_TOKEN_TTL_SECONDS)
    valid_ttl = isinstance(ttl, int) and not isinstance(ttl, bool)
    if not valid_ttl or not MIN_DEMO_TOKEN_TTL_SECONDS <= ttl <= DEMO_TOKEN_TTL_SECONDS:
        return _invalid({"ttlSeconds": [f"Must be a whole number from 1 to {DEMO_TOKEN_TTL_SECONDS}."]})
    kid = get_verifier().hs256_kids[0]
    token = issue_token(
        kid,
        settings.PLAYBACK_TOKEN_KEYS[kid],
        user_id,
        ttl_seconds=ttl,
        session_id=session_id,
        plan=plan,
        issuer=settings.PLAYBACK_TOKEN_ISSUER,
        audience=settings.PLAYBACK_TOKEN_AUDIENCE,
        now=time.time(),
    )
    return JsonResponse({"token": token, "expiresIn": ttl})


def _invalid(errors: dict[str, list[str]]) -> JsonResponse:
    return JsonResponse({"code": "invalid_request", "errors": errors}, status=400)
