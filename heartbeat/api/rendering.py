"""orjson parser and renderer, and a content negotiation that does not negotiate.

The heartbeat endpoint speaks only JSON, so DRF's negotiation over Accept
headers is work done on every request for nothing.
"""

from __future__ import annotations

from typing import Any

import orjson
from rest_framework.exceptions import ParseError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer

from heartbeat.limiter.limits import LOGGED_FIELD_LENGTH


def parse_json(raw: bytes) -> Any:
    """A JSON body parsed with orjson; raises DRF's ParseError, carrying what was received for the log line."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        error = ParseError(f"The body is not valid JSON: {exc}")
        # For the request's log line: what was sent, as text.
        error.received = raw[:LOGGED_FIELD_LENGTH].decode(errors="replace")  # type: ignore[attr-defined]
        raise error from None


def media_type_of(content_type: str) -> str:
    """The media type of a ``Content-Type`` value, without parameters, in lower case."""
    return content_type.split(";", 1)[0].strip().lower()


class ORJSONParser(BaseParser):
    """Parses a JSON body with orjson."""

    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        return parse_json(stream.read() if stream is not None else b"")


class PlainTextJSONParser(ORJSONParser):
    """JSON sent as ``text/plain``, as ``navigator.sendBeacon`` does on page unload."""

    media_type = "text/plain"


class ORJSONRenderer(BaseRenderer):
    """Renders with orjson."""

    media_type = "application/json"
    format = "json"
    charset = None

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return b"" if data is None else orjson.dumps(data)


class JSONOnlyNegotiation(BaseContentNegotiation):
    """Picks the view's first renderer and the parser matching Content-Type, nothing more."""

    def select_parser(self, request: Any, parsers: list[BaseParser]) -> BaseParser | None:
        wanted = media_type_of(request.content_type)
        for parser in parsers:
            if parser.media_type == wanted:
                return parser
        return None

    def select_renderer(self, request: Any, renderers: list[BaseRenderer], format_suffix: str | None = None) -> Any:
        renderer = renderers[0]
        return renderer, renderer.media_type
