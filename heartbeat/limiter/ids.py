"""The rules for ids sent by players, shared by the API, the dashboard and the commands.

An id is shown to support staff, so it must not be able to lie about itself:
no control characters, no invisible or direction-changing format characters
(``evil\\u202egnp.exe`` would show as "evilexe.png", ``demo\\u200b`` as "demo"),
no line or paragraph separators, no private-use, surrogate or unassigned code
points. Letters of every script, digits, spaces, punctuation and symbols
(emoji included) stay valid.
"""

from __future__ import annotations

import re
import unicodedata

MAX_ID_LENGTH = 128
MAX_DEVICE_NAME_LENGTH = 64
ID_FIELDS = ("userId", "streamId", "sessionId")

# Unicode general categories an id may not hold, and how the error names them.
_FORBIDDEN_CATEGORIES = {
    "Cc": "a control character",
    "Cf": "an invisible formatting character",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
    "Co": "a private-use character",
    "Cs": "a surrogate",
    "Cn": "an unassigned code point",
}
# In ASCII only the control characters are forbidden: most ids are ASCII, and
# one regular expression is much cheaper than a category lookup per character.
_ASCII_CONTROL = re.compile("[\x00-\x1f\x7f]")


def forbidden_character(value: str) -> str | None:
    """Describe the first character ``value`` may not hold, with its position (1-based), or None."""
    if value.isascii():
        found = _ASCII_CONTROL.search(value)
        return _describe(found.group(), found.start()) if found else None
    for position, char in enumerate(value):
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            return _describe(char, position)
    return None


def _describe(char: str, position: int) -> str:
    kind = _FORBIDDEN_CATEGORIES[unicodedata.category(char)]
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}{' ' + name if name else ''} ({kind}) at character {position + 1}"


def id_error(value: object, max_length: int = MAX_ID_LENGTH) -> str | None:
    """Why ``value`` is not a valid id, or None when it is one.

    Any non-empty string of at most ``max_length`` characters without the
    characters above is valid: braces, colons, slashes, spaces and letters of
    any script included.
    """
    if not isinstance(value, str):
        return "Must be a string."
    if not value:
        return "Must not be empty."
    if len(value) > max_length:
        return f"Must be at most {max_length} characters."
    forbidden = forbidden_character(value)
    if forbidden:
        return f"Must not contain {forbidden}."
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
