"""Reading a player's JSON body: the ids it must carry, each checked, and what the log line may show of it."""

from __future__ import annotations

import re
from typing import Any

import orjson
from django.http import HttpResponse

from heartbeat.limiter.ids import ID_FIELDS, class_name_error, device_name_error, id_error, quality_error
from heartbeat.limiter.limits import LOGGED_FIELD_LENGTH

# A JWT's first segment (base64url of its header) followed by a dot: what is
# cut from logged bodies. A token cut before its first dot has no signature.
_JWT_LIKE = re.compile(r"[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_.-]*")

# How a field of the body is checked; absent optional fields are fine.
_FIELD_RULES = {
    "userId": id_error,
    "streamId": id_error,
    "sessionId": id_error,
    "deviceName": device_name_error,
    # The policy's inputs (docs/operators/policies.md).
    "deviceClass": class_name_error,
    "deviceId": id_error,
    "quality": quality_error,
    "replaces": id_error,
    # Checked for its type even with tokens off, so a client learns its mistake early.
    "token": lambda value: None if isinstance(value, str) else "Must be a string.",
}


def json_response(body: dict[str, Any], status: int = 200) -> HttpResponse:
    """The answer to a heartbeat, rendered once with orjson.

    The hot path skips DRF's Response, whose template-response machinery and
    renderer lookup cost more than building the bytes; the body is the same.
    """
    return HttpResponse(orjson.dumps(body), content_type="application/json", status=status)


def read_ids(
    data: Any, fields: tuple[str, ...], optional: tuple[str, ...] = ()
) -> tuple[dict[str, str] | None, dict[str, list[str]]]:
    """Pick and check ``fields`` (and ``optional``, when present) from a parsed body.

    Returns (the ids, {}) or (None, errors by field).
    """
    if not isinstance(data, dict):
        return None, {"body": ["Must be a JSON object."]}
    errors: dict[str, list[str]] = {}
    ids: dict[str, str] = {}
    for name in (*fields, *optional):
        if name not in data:
            if name not in optional:
                errors[name] = ["This field is required."]
        elif error := _FIELD_RULES[name](data[name]):
            errors[name] = [error]
        else:
            ids[name] = data[name]
    if errors:
        return None, errors
    return ids, {}


def log_body(data: Any) -> Any:
    """What the log line shows of a body: the ids only (never ``token``), or the start of a non-object body.

    A body that is not a JSON object may still hold a token (a broken beacon
    body): anything shaped like a JWT is cut out of it.
    """
    if isinstance(data, dict):
        return {k: str(data[k])[:LOGGED_FIELD_LENGTH] for k in ID_FIELDS if k in data}
    return _JWT_LIKE.sub("[token removed]", str(data)[:LOGGED_FIELD_LENGTH])


def declared_content_type(meta: dict[str, Any]) -> str:
    """The ``Content-Type`` a request declares, read as DRF reads it ("" when absent)."""
    return meta.get("CONTENT_TYPE", meta.get("HTTP_CONTENT_TYPE", ""))


def declared_body_length(meta: dict[str, Any]) -> int:
    """The body length a request declares, read as DRF reads it (0, so no body, when absent or not a number)."""
    try:
        return int(meta.get("CONTENT_LENGTH", meta.get("HTTP_CONTENT_LENGTH", 0)))
    except (ValueError, TypeError):
        return 0
