"""The player endpoints' base view: JSON only, DRF's request wrapping skipped, tokens checked, ids validated."""

from __future__ import annotations

from typing import Any

import structlog
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from rest_framework import status
from rest_framework.exceptions import ParseError, UnsupportedMediaType
from rest_framework.response import Response
from rest_framework.views import APIView

from heartbeat.api.auth import bearer_token, token_failure, token_mismatch
from heartbeat.api.body import declared_body_length, declared_content_type, log_body, read_ids
from heartbeat.api.errors import invalid_request
from heartbeat.api.rendering import JSONOnlyNegotiation, ORJSONRenderer, media_type_of, parse_json
from heartbeat.edge.request_body import MAX_BODY_BYTES
from heartbeat.limiter.ids import ID_FIELDS
from heartbeat.limiter.tokens import PlaybackClaims, TokenError
from heartbeat.services import get_verifier


class PlayerAPIView(APIView):
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

    def options(self, request: Any, *args: Any, **kwargs: Any) -> Response:
        """A bare 204; ``finalize_response`` adds ``Allow``. Nothing about the view (DRF would send its docstring).

        A CORS preflight from an allowed origin never gets here: heartbeat/edge/cors.py answers it.
        """
        return Response(status=status.HTTP_204_NO_CONTENT)

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
            structlog.contextvars.bind_contextvars(reqBody=log_body(getattr(error, "received", "")))
            raise
        structlog.contextvars.bind_contextvars(reqBody=log_body(data))
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
