"""CORS for the player paths: players on the streaming company's own site call StreamLimit.

A heartbeat is a JSON POST, often with ``Authorization``, so a page on another
origin sends a preflight ``OPTIONS`` first, and reads the answer only if it
carries ``Access-Control-Allow-Origin``. Only the origins listed in
``PLAYER_ALLOWED_ORIGINS`` get it (never ``*``): a site that is not the
streaming company's has no business driving its players' sessions. No
credentials (cookies) are involved: players authenticate with tokens.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse

PREFLIGHT_MAX_AGE_SECONDS = 600
ALLOWED_METHODS = "GET, POST, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type, X-Correlation-ID"


def parse_origins(raw: str) -> frozenset[str]:
    """``https://www.example.com,https://tv.example.com`` as a set of origins; raises ValueError."""
    origins = set()
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        parts = urlsplit(item)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query or parts.fragment:
            raise ValueError(f"each item must be an origin such as https://www.example.com (no path), got {item!r}")
        origins.add(f"{parts.scheme}://{parts.netloc.lower()}")
    return frozenset(origins)


def allowed_origin(request: HttpRequest) -> str | None:
    """The request's ``Origin`` when it is one of PLAYER_ALLOWED_ORIGINS, else None."""
    origin = request.META.get("HTTP_ORIGIN")
    if origin and origin.lower() in settings.PLAYER_ALLOWED_ORIGINS:
        return origin
    return None


def preflight(request: HttpRequest) -> HttpResponse | None:
    """204 for a CORS preflight from an allowed origin; None for any other request."""
    if request.method != "OPTIONS" or "HTTP_ACCESS_CONTROL_REQUEST_METHOD" not in request.META:
        return None
    origin = allowed_origin(request)
    if origin is None:
        return None
    response = HttpResponse(status=204)
    response["Access-Control-Allow-Methods"] = ALLOWED_METHODS
    response["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
    response["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE_SECONDS)
    return response


def add_headers(request: HttpRequest, response: HttpResponse) -> None:
    """Let an allowed origin read the answer (and its correlation id)."""
    origin = allowed_origin(request)
    if origin is not None:
        response["Access-Control-Allow-Origin"] = origin
        response["Access-Control-Expose-Headers"] = "X-Correlation-ID"
    # Caches must keep answers to different origins apart.
    if settings.PLAYER_ALLOWED_ORIGINS:
        response["Vary"] = ", ".join(filter(None, [response.get("Vary"), "Origin"]))
