"""How long a staff login lasts: ``STAFF_SESSION_HOURS`` at most, ``STAFF_SESSION_IDLE_MINUTES`` idle.

Django's session cookie age alone cannot do both: a session written on each
request (to note the last request) would get a new full age each time. So the
login time and the last request's time are kept in the session, and this
middleware logs out a session past either limit, or a privileged one without
the second factor ``STAFF_REQUIRE_2FA`` asks for (a login from before the
setting was turned on).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from django.conf import settings
from django.contrib.auth import logout
from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest, HttpResponse

from dashboard.second_factor import needs_second_factor

logger = structlog.get_logger(__name__)

LOGIN_AT = "staff_login_at"
SEEN_AT = "staff_seen_at"
# The last request's time is written at most once a minute: writing the session
# on every page costs a database write, and the idle limit is counted in minutes.
SEEN_PRECISION_SECONDS = 60


def stamp_login(sender: object, request: HttpRequest, user: AbstractBaseUser, **kwargs: object) -> None:
    """``user_logged_in`` receiver: a new login starts both clocks."""
    now = time.time()
    request.session[LOGIN_AT] = now
    request.session[SEEN_AT] = now


def end_reason(request: HttpRequest, now: float) -> str | None:
    """Why the logged-in session of ``request`` must end now, or None."""
    login_at, seen_at = request.session.get(LOGIN_AT), request.session.get(SEEN_AT)
    if not isinstance(login_at, float | int) or not isinstance(seen_at, float | int):
        return "no_login_time"  # a session from before these limits
    if now - login_at >= settings.STAFF_SESSION_HOURS * 3600:
        return "lifetime"
    if now - seen_at >= settings.STAFF_SESSION_IDLE_MINUTES * 60:
        return "idle"
    if needs_second_factor(request.user) and not request.user.is_verified():
        return "second_factor_required"
    return None


class StaffSessionMiddleware:
    """Log out a staff session past its lifetime or idle time; note each request's time otherwise."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # Without a session cookie there is no login to check: reading request.user would load the
        # session and make every answer vary on Cookie, players' and probes' included.
        if settings.SESSION_COOKIE_NAME in request.COOKIES and request.user.is_authenticated:
            now = time.time()
            reason = end_reason(request, now)
            if reason:
                logger.info("staff_session_ended", user=request.user.get_username(), reason=reason)
                # The page then answers as to anyone logged out: the login form, with `next`.
                logout(request)
            elif now - request.session[SEEN_AT] >= SEEN_PRECISION_SECONDS:
                request.session[SEEN_AT] = now
        return self.get_response(request)
