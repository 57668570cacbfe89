"""The rules for ids sent by players, shared by the API, the dashboard and the commands."""

from __future__ import annotations

import re

MAX_ID_LENGTH = 128
MAX_DEVICE_NAME_LENGTH = 64
ID_FIELDS = ("userId", "streamId", "sessionId")

# C0 and C1 control characters, DEL, and lone surrogates (which cannot be
# encoded as UTF-8 for Redis).
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def id_error(value: object, max_length: int = MAX_ID_LENGTH) -> str | None:
    """Why ``value`` is not a valid id, or None when it is one.

    Any non-empty string of at most 128 characters without control characters
    is valid, braces, colons, spaces and non-ASCII letters included.
    """
    if not isinstance(value, str):
        return "Must be a string."
    if not value:
        return "Must not be empty."
    if len(value) > max_length:
        return f"Must be at most {max_length} characters."
    if _FORBIDDEN.search(value):
        return "Must not contain control characters."
    return None


class InvalidIdError(ValueError):
    """Raised by the StreamManager when an id breaks the rules above."""


def require_id(value: object, name: str) -> str:
    """Return ``value`` if it is a valid id, else raise ``InvalidIdError`` naming ``name``."""
    error = id_error(value)
    if error:
        raise InvalidIdError(f"{name}: {error}")
    return value  # type: ignore[return-value]


def device_name_error(value: object) -> str | None:
    """Why ``value`` is not a valid ``deviceName`` (the id rule, at most 64 characters), or None."""
    return id_error(value, MAX_DEVICE_NAME_LENGTH)


def require_device_name(value: object) -> str:
    """Return ``value`` if it is a valid device name, else raise ``InvalidIdError``."""
    error = device_name_error(value)
    if error:
        raise InvalidIdError(f"deviceName: {error}")
    return value  # type: ignore[return-value]
