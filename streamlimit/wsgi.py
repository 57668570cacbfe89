"""WSGI entry point for gunicorn: ``streamlimit.wsgi:application``.

Player traffic (the heartbeat endpoints and the probes) is most of the load,
and it needs none of the session, CSRF, auth, messages or static-file
middleware the staff pages need; they cost about a quarter of a heartbeat's
time (see bench/README.md). So those paths go to a second Django handler built
with ``PLAYER_API_MIDDLEWARE`` only (django-structlog's request logging); every
other path goes through the full ``MIDDLEWARE``.

That handler also skips Django's ``request_started`` and ``request_finished``
signals. Their receivers reset database query logs and close old database and
cache connections; player paths use neither Django's database nor its caches
(Redis is reached through the StreamManager's own pool), and sending the two
signals cost about 5% of a heartbeat. And it resolves each player path once
(they are a handful of fixed strings), not on every request.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from django.core.handlers.wsgi import WSGIHandler, get_script_name
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest
from django.urls import ResolverMatch, get_resolver, set_script_prefix

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streamlimit.settings")

full_application = get_wsgi_application()

from django.conf import settings  # noqa: E402  (after Django is set up)

from heartbeat.adapters.django import load_middleware_from  # noqa: E402
from heartbeat.edge.paths import is_player_api_path  # noqa: E402
from heartbeat.edge.request_body import MAX_BODY_BYTES, read_chunked_body  # noqa: E402
from streamlimit.body_deadline import with_body_deadline  # noqa: E402


class PlayerAPIHandler(WSGIHandler):
    """A Django handler whose middleware chain is ``settings.PLAYER_API_MIDDLEWARE``, without request signals."""

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        # Django's WSGIHandler.__call__, less request_started and the
        # request_finished that the response's close() would send (see above).
        set_script_prefix(get_script_name(environ))
        read_chunked_body(environ)
        request = self.request_class(environ)
        try:
            response = self.get_response(request)
            if response.streaming:
                return response  # closes itself, signal included; no player path streams
            if not response.has_header("Content-Length"):
                # As CommonMiddleware does on the full chain. Without a length
                # gunicorn sends the body as a chunk and then an end-of-body
                # chunk: one more write (a system call and a packet) per answer.
                response.headers["Content-Length"] = str(len(response.content))
            headers = [*response.items(), *(("Set-Cookie", c.output(header="")) for c in response.cookies.values())]
            start_response(f"{response.status_code} {response.reason_phrase}", headers)
            return [response.content]
        finally:
            request.close()

    # (the URL resolver, {path: its match}), swapped as one value when the URLconf changes.
    _resolved: tuple[object, dict[str, ResolverMatch]] = (None, {})

    def resolve_request(self, request: HttpRequest) -> ResolverMatch:
        """Django's URL resolution, remembered for the exact paths of ``PLAYER_API_PATHS``.

        Resolving ``/heartbeat`` builds two ResolverMatch objects per request
        (about 2% of a heartbeat); the answer for a fixed path and URLconf
        never changes. Other paths (unknown ones, a request's own urlconf)
        are resolved by Django every time.
        """
        path = request.path_info
        if hasattr(request, "urlconf") or path not in settings.PLAYER_API_PATHS:
            return super().resolve_request(request)
        resolver = get_resolver()
        owner, matches = self._resolved
        if owner is not resolver:
            matches = {}
            self._resolved = (resolver, matches)
        match = matches.get(path)
        if match is None:
            match = matches[path] = resolver.resolve(path)
        request.resolver_match = match
        return match

    def load_middleware(self, is_async: bool = False) -> None:
        """Build the chain from ``settings.PLAYER_API_MIDDLEWARE`` (once, at start-up)."""
        load_middleware_from(self, settings.PLAYER_API_MIDDLEWARE, is_async=is_async)


player_api_application = PlayerAPIHandler()


def _body_timeout() -> float:
    return settings.REQUEST_BODY_TIMEOUT_SECONDS


# Each body is read within REQUEST_BODY_TIMEOUT_SECONDS before the handler
# runs, or answered 408 (streamlimit/body_deadline.py); as far as each
# handler reads bodies (player paths refuse more than MAX_BODY_BYTES).
_player_api_within_deadline = with_body_deadline(
    player_api_application, _body_timeout, MAX_BODY_BYTES, read_chunked_body
)
_full_within_deadline = with_body_deadline(full_application, _body_timeout, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Route player paths (existing or not) to the lean handler, everything else to the full one."""
    if is_player_api_path(environ.get("PATH_INFO", "")):
        return _player_api_within_deadline(environ, start_response)
    return _full_within_deadline(environ, start_response)
