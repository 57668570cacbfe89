"""``/``: where things are on this service; ``/favicon.ico``: its icon."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_safe

# Read once: served at the fixed path browsers ask for, outside the hashed
# static names, so it is cached for a day rather than for good.
FAVICON = (Path(__file__).resolve().parent / "static" / "home" / "favicon.ico").read_bytes()


@require_safe
def landing_page(request: HttpRequest) -> HttpResponse:
    """Links to the demo (when it is on), the dashboard, the API docs, the probes and the player library."""
    return render(
        request,
        "home/index.html",
        {"demo_on": settings.STREAMLIMIT_DEMO, "version": settings.STREAMLIMIT_VERSION},
    )


@require_safe
@cache_control(public=True, max_age=86400)
def favicon(request: HttpRequest) -> HttpResponse:
    """The icon browsers ask for at ``/favicon.ico``."""
    return HttpResponse(FAVICON, content_type="image/x-icon")
