"""The lean WSGI handler of the player paths and probes (``streamlimit/wsgi.py`` routes to it).

Player traffic is most of the load, and it needs none of the session, CSRF,
auth, messages or static-file middleware the staff pages need (about a
quarter of a heartbeat's time, bench/README.md): this handler runs
``settings.PLAYER_API_MIDDLEWARE`` only. It also skips Django's
``request_started`` and ``request_finished`` signals (their receivers reset
database query logs and close database and cache connections, which player
paths never use; about 5% of a heartbeat), and resolves each player path
once, not on every request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler, get_script_name
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.urls import ResolverMatch, get_resolver, set_script_prefix
from django.utils.log import log_response

from heartbeat.adapters.django import load_middleware_from, middleware_chain
from heartbeat.edge.logging_context import CORRELATION_HEADER
from heartbeat.edge.middleware import LEAN_HEADERS_ATTRIBUTE, NO_STORE, NOSNIFF, RequestLogMiddleware
from heartbeat.edge.request_body import read_chunked_body


class PlayerAPIHandler(WSGIHandler):
    """A Django handler whose middleware chain is ``settings.PLAYER_API_MIDDLEWARE``, without request signals."""

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        # Django's WSGIHandler.__call__, less request_started and the
        # request_finished that the response's close() would send (see above).
        script_name = get_script_name(environ)
        if script_name:
            # Without one, the prefix is "/", which is also what Django reads
            # when none was set; setting it costs a lock in asgiref's Local
            # (about 2% of a heartbeat). The script name is the deployment's,
            # the same for every request of a process.
            set_script_prefix(script_name)
        read_chunked_body(environ)
        request = self.request_class(environ)
        try:
            response = self.get_response(request)
            if response.streaming:
                return response  # closes itself, signal included; no player path streams
            headers = [*response.items()]
            names = {name.lower() for name, _ in headers}
            correlation_id = getattr(response, LEAN_HEADERS_ATTRIBUTE, None)
            if correlation_id is not None:
                if "x-correlation-id" in names or "x-content-type-options" in names:
                    # Never so far: an answer with one of them already gets them the usual way (which replaces).
                    RequestLogMiddleware.add_headers(response, correlation_id)
                    headers = [*response.items()]
                    names = {name.lower() for name, _ in headers}
                else:
                    headers += player_headers(names, correlation_id)
            if "content-length" not in names:
                # As CommonMiddleware does on the full chain. Without a length
                # gunicorn sends the body as a chunk and then an end-of-body
                # chunk: one more write (a system call and a packet) per answer.
                headers.append(("Content-Length", str(len(response.content))))
            headers += [("Set-Cookie", c.output(header="")) for c in response.cookies.values()]
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

    def get_response(self, request: HttpRequest) -> HttpResponseBase:
        """Django's ``get_response``, less ``set_urlconf(settings.ROOT_URLCONF)``.

        That call stores the URLconf in asgiref's thread-local, behind a lock
        (about 2% of a heartbeat), only for Django to read it back as the
        default: ``resolve_request`` here asks ``get_resolver()`` for
        ``settings.ROOT_URLCONF`` itself, and no player path sets a
        request's own URLconf. The request is closed by ``__call__``.
        """
        response = middleware_chain(self)(request)
        if response.status_code >= 400:
            # A no-op for answers the request-log middleware logged (all of them); as Django does otherwise.
            log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)
        return response

    def load_middleware(self, is_async: bool = False) -> None:
        """Build the chain from ``settings.PLAYER_API_MIDDLEWARE`` (once, at start-up)."""
        load_middleware_from(self, settings.PLAYER_API_MIDDLEWARE, is_async=is_async)


def player_headers(names: set[str], correlation_id: str) -> list[tuple[str, str]]:
    """The correlation id and the player headers as raw pairs, in the order the request-log middleware sets them.

    ``names``: the answer's header names, in lower case. The values need none
    of Django's header checks: the id is a UUID or matched the sane-id rule
    (``heartbeat/edge/logging_context.py``), the others are constants.
    """
    if "cache-control" in names:  # the answer's own Cache-Control stays
        return [(CORRELATION_HEADER, correlation_id), NOSNIFF]
    return [(CORRELATION_HEADER, correlation_id), NOSNIFF, NO_STORE]
