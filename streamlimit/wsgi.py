"""WSGI entry point for gunicorn: ``streamlimit.wsgi:application``.

Player paths (the heartbeat endpoints and the probes, existing or not) go to
the lean handler (``heartbeat/edge/handler.py``: ``PLAYER_API_MIDDLEWARE``
only, no request signals); every other path goes through Django's full
``MIDDLEWARE``. Both read each request body within
``REQUEST_BODY_TIMEOUT_SECONDS`` (``heartbeat/edge/body_deadline.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streamlimit.settings")

full_application = get_wsgi_application()

from django.conf import settings  # noqa: E402  (after Django is set up)

from heartbeat.edge.body_deadline import with_body_deadline  # noqa: E402
from heartbeat.edge.handler import PlayerAPIHandler  # noqa: E402
from heartbeat.edge.paths import is_player_api_path  # noqa: E402
from heartbeat.edge.request_body import MAX_BODY_BYTES, read_chunked_body  # noqa: E402

player_api_application = PlayerAPIHandler()


def _body_timeout() -> float:
    return settings.REQUEST_BODY_TIMEOUT_SECONDS


# Each body is read within REQUEST_BODY_TIMEOUT_SECONDS before the handler
# runs, or answered 408 (heartbeat/edge/body_deadline.py); as far as each
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
