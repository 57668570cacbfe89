"""The Host check of player requests (``DJANGO_ALLOWED_HOSTS``), without Django's parsing on every heartbeat.

The lean handler has no CommonMiddleware, so the request-log middleware asks
Django (``HttpRequest.get_host``) whether a player request's Host is allowed.
Players send the same few host names over and over, and Django splits and
matches the name against every pattern each time (a few microseconds per
heartbeat). So a ``Host`` header Django allowed is remembered, for that
``ALLOWED_HOSTS`` list only; any other name, and a host taken from
``X-Forwarded-Host``, goes through Django every time and gets the same
``DisallowedHost``.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, JsonResponse

# Host headers remembered per process: a deployment has a handful; with a
# wildcard in ALLOWED_HOSTS a client could send endless allowed names, which
# are then checked by Django as before.
REMEMBERED_HOSTS = 256


class AllowedHosts:
    """Checks a request's Host against ``settings.ALLOWED_HOSTS``, as ``HttpRequest.get_host`` does."""

    def __init__(self) -> None:
        # (the ALLOWED_HOSTS list the names were allowed by, those names), swapped as one value
        # so that a thread never pairs one list with another list's names.
        self._allowed: tuple[object, set[str]] = (None, set())

    def check(self, request: HttpRequest) -> None:
        """Return if the request's host is allowed; raise Django's ``DisallowedHost`` if not."""
        meta = request.META
        host = meta.get("HTTP_HOST")
        allowed_hosts = settings.ALLOWED_HOSTS
        if (
            host is None
            or not allowed_hosts  # Django then allows localhost names when DEBUG is on
            or ("HTTP_X_FORWARDED_HOST" in meta and settings.USE_X_FORWARDED_HOST)
        ):
            request.get_host()
            return
        owner, names = self._allowed
        if owner is not allowed_hosts:
            # Another list (override_settings, the test runner): start over.
            names = set()
            self._allowed = (allowed_hosts, names)
        if host in names:
            return
        request.get_host()
        if len(names) < REMEMBERED_HOSTS:
            names.add(host)


ALLOWED_HOSTS = AllowedHosts()


def invalid_host() -> JsonResponse:
    """400 for a Host header outside ``DJANGO_ALLOWED_HOSTS`` on a player path."""
    return JsonResponse(
        {"code": "invalid_host", "message": "This host name is not served here (see DJANGO_ALLOWED_HOSTS)."},
        status=400,
    )
