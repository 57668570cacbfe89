"""System checks of the heartbeat app (``manage.py check --deploy``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def playback_tokens_configured(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """Warn when the player API runs without playback tokens."""
    if settings.PLAYBACK_TOKEN_KEYS or settings.PLAYBACK_TOKEN_JWKS:
        if settings.PLAYBACK_TOKENS_REQUIRED:
            return []
        return [
            Warning(
                "Playback tokens are optional (PLAYBACK_TOKENS_REQUIRED=false): requests without one are served, "
                "so anyone who knows an account id can still lock that account out or stop its sessions.",
                hint="Set PLAYBACK_TOKENS_REQUIRED=true once every player sends its token.",
                id="streamlimit.W002",
            )
        ]
    return [
        Warning(
            "Playback tokens are off: anyone who knows an account id can lock that account out or stop its sessions.",
            hint="Set PLAYBACK_TOKEN_KEYS (HS256 kid=secret pairs) or PLAYBACK_TOKEN_JWKS_FILE: gunicorn refuses "
            "to start without them unless PLAYER_AUTH=anonymous (anyone can then stop anyone).",
            id="streamlimit.W001",
        )
    ]
