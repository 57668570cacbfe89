"""Whether this service may serve players as it is configured (PLAYER_AUTH).

Without playback tokens anyone who knows an account id can lock the account
out (three heartbeats with made-up session ids) or stop a viewer who plays. A
warning at start-up was not enough to make anyone set keys, so gunicorn now
refuses to start that way: the one way past it in production is to say so,
``PLAYER_AUTH=anonymous``. ``DJANGO_DEBUG`` (development) and ``make run``
(which sets a development key) start as before.
"""

from __future__ import annotations

from typing import Any

HOW_TO_CONFIGURE = (
    "PLAYER_AUTH=tokens (the default) needs keys: set PLAYBACK_TOKEN_KEYS=<kid>=<secret of 32+ bytes> "
    "or PLAYBACK_TOKEN_JWKS_FILE=<file> (see .env.example), or PLAYER_AUTH=anonymous to serve players "
    "without tokens (anyone can then stop anyone)"
)


def refusal_to_serve(settings: Any) -> str | None:
    """The one line gunicorn stops with when players would be served without tokens unasked; else None."""
    if settings.PLAYER_AUTH == "anonymous" or settings.DEBUG:
        return None
    if settings.PLAYBACK_TOKEN_KEYS or settings.PLAYBACK_TOKEN_JWKS:
        return None
    return HOW_TO_CONFIGURE
