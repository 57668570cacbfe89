"""Media types the service's static files need that the usual tables get wrong.

``.ts`` is MPEG transport-stream video (``video/mp2t``) in whitenoise's and
nginx's tables, but the only ``.ts`` file served here is the player library's
TypeScript declarations (``player.d.ts``): a browser or editor given
``video/mp2t`` offers to play or download it instead of showing the text.
"""

from __future__ import annotations

import mimetypes

# TypeScript has no IANA-registered type; text/typescript shows as text in a
# browser tab, and a text/ type gets whitenoise's "; charset=utf-8".
STATIC_MEDIA_TYPES: dict[str, str] = {".ts": "text/typescript"}


def register_media_types() -> None:
    """Teach Python's ``mimetypes`` (used by Django's static view) the types above."""
    for extension, media_type in STATIC_MEDIA_TYPES.items():
        mimetypes.add_type(media_type, extension)
