"""Django: two private mechanisms the lean player path leans on.

- ``response._has_been_logged``: what ``django.utils.log.log_response`` checks
  before logging a 4xx/5xx a second time. Our request-log middleware writes
  the response's one log line itself, so it marks the response as logged.
- ``BaseHandler.load_middleware`` reads ``settings.MIDDLEWARE``: the lean
  handler builds its short chain by handing it another list while it runs
  (once, at start-up, before any request).
- ``BaseHandler._middleware_chain``: the chain ``load_middleware`` built,
  which the lean handler's ``get_response`` calls directly (Django's own
  ``get_response`` would first store the URLconf in a thread-local).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.handlers.base import BaseHandler
from django.http import HttpResponseBase


def mark_response_logged(response: HttpResponseBase) -> None:
    """Tell Django's ``log_response`` that this response has had its log line."""
    response._has_been_logged = True  # type: ignore[attr-defined]


def load_middleware_from(handler: BaseHandler, middleware: list[str], *, is_async: bool = False) -> None:
    """Build ``handler``'s middleware chain from ``middleware`` instead of ``settings.MIDDLEWARE``."""
    full: Any = settings.MIDDLEWARE
    settings.MIDDLEWARE = middleware
    try:
        BaseHandler.load_middleware(handler, is_async)
    finally:
        settings.MIDDLEWARE = full


def middleware_chain(handler: BaseHandler) -> Any:
    """The callable ``handler.load_middleware`` built: the middleware, then the view."""
    return handler._middleware_chain
