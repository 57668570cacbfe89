"""The rules for ids sent by players, shared by the API, the dashboard and the commands.

An id is shown to support staff, so it must not be able to lie about itself:
no control characters, no invisible or direction-changing format characters
(``evil\\u202egnp.exe`` would show as "evilexe.png", ``demo\\u200b`` as "demo"),
no line or paragraph separators, no private-use, surrogate or unassigned code
points, and no pile of combining marks drawn over the lines around it. Letters
of every script, digits, spaces, punctuation and symbols (emoji included) stay
valid. Free text staff write (an audit reason) and names players or tokens
send (a device name, a plan) follow the same rule with their own length.
"""

from __future__ import annotations

import re
import unicodedata

from heartbeat.limiter.limits import MAX_REASON_LENGTH

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
# Combining marks stack on the character before them. Real words need a few in
# a row (Vietnamese two, some Indic and Tibetan clusters three or four); more is
# "Zalgo" text that paints over the rows above and below, and one at the very
# start has no character of its own and attaches to the text before the field.
_COMBINING_CATEGORIES = frozenset({"Mn", "Me"})
MAX_COMBINING_RUN = 4


def forbidden_character(value: str) -> str | None:
    """Describe the first character ``value`` may not hold, with its position (1-based), or None."""
    if value.isascii():
        found = _ASCII_CONTROL.search(value)
        return _describe(found.group(), found.start(), _FORBIDDEN_CATEGORIES["Cc"]) if found else None
    run = 0
    for position, char in enumerate(value):
        category = unicodedata.category(char)
        if category in _FORBIDDEN_CATEGORIES:
            return _describe(char, position, _FORBIDDEN_CATEGORIES[category])
        if category not in _COMBINING_CATEGORIES:
            run = 0
            continue
        if position == 0:
            return _describe(char, position, "a combining mark with no character before it")
        run += 1
        if run > MAX_COMBINING_RUN:
            return _describe(char, position, f"more than {MAX_COMBINING_RUN} combining marks in a row")
    return None


def _describe(char: str, position: int, kind: str) -> str:
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


# Device classes and pools: the operator's names, short and plain (rule names and metric labels).
NAME_PATTERN = re.compile(r"[a-z0-9_-]{1,32}")
QUALITIES = ("sd", "hd", "uhd")


def class_name_error(value: object) -> str | None:
    """Why ``value`` is not a valid ``deviceClass`` (or pool), or None."""
    if not isinstance(value, str):
        return "Must be a string."
    if not NAME_PATTERN.fullmatch(value):
        return "Must be 1 to 32 characters of a-z, 0-9, '_' and '-'."
    return None


def quality_error(value: object) -> str | None:
    """Why ``value`` is not a valid ``quality``, or None."""
    if value not in QUALITIES:
        return f"Must be one of {', '.join(QUALITIES)}."
    return None


def free_text_error(value: object, max_length: int = MAX_REASON_LENGTH) -> str | None:
    """Why optional free text staff write (an audit reason) breaks the id rule, or None; "" is fine."""
    if value == "":
        return None
    return id_error(value, max_length)
