"""OpenAPI descriptions of the player endpoints (drf-spectacular).

The serializers here describe the bodies for the schema; the views check ids
with ``heartbeat.validation`` directly, which is the same rule and a fraction
of a serializer's cost on the hot path.
"""

from __future__ import annotations

from django.core.validators import RegexValidator
from drf_spectacular.utils import OpenApiExample, OpenApiResponse
from rest_framework import serializers

from heartbeat.validation import MAX_ID_LENGTH

# The same rule as heartbeat.validation, in a form JSON Schema can state.
_NO_CONTROL_CHARACTERS = RegexValidator(r"^[^\u0000-\u001F\u007F-\u009F]*$")
_ID = {
    "min_length": 1,
    "max_length": MAX_ID_LENGTH,
    "trim_whitespace": False,
    "validators": [_NO_CONTROL_CHARACTERS],
}


class HeartbeatRequestSerializer(serializers.Serializer):
    """A player's heartbeat."""

    userId = serializers.CharField(help_text="The account.", **_ID)  # noqa: N815
    streamId = serializers.CharField(help_text="The video now playing; may change within a session.", **_ID)  # noqa: N815
    sessionId = serializers.CharField(help_text="One player instance; a session holds one slot.", **_ID)  # noqa: N815


class AllowedSerializer(serializers.Serializer):
    """200: keep playing."""

    allowed = serializers.BooleanField()
    activeSessions = serializers.IntegerField(allow_null=True, help_text="Null only when degraded.")  # noqa: N815
    limit = serializers.IntegerField()
    heartbeatInterval = serializers.IntegerField(help_text="Seconds until the next heartbeat.")  # noqa: N815
    degraded = serializers.BooleanField(
        required=False, help_text="Present and true when Redis is down and the service fails open."
    )


class HeartbeatBadRequestSerializer(serializers.Serializer):
    """400 from /heartbeat: stop playing (limit reached, or evicted), or fix the body (invalid_request)."""

    code = serializers.ChoiceField(choices=["concurrency_limit_reached", "session_evicted", "invalid_request"])
    allowed = serializers.BooleanField(required=False, help_text="false when the player must stop.")
    activeSessions = serializers.IntegerField(required=False)  # noqa: N815
    limit = serializers.IntegerField(required=False)
    heartbeatInterval = serializers.IntegerField(required=False)  # noqa: N815
    message = serializers.CharField(required=False, help_text="Plain words a player can show.")
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="invalid_request only: what is wrong, by field.",
    )


class InvalidRequestSerializer(serializers.Serializer):
    """400: the body cannot be used."""

    code = serializers.ChoiceField(choices=["invalid_request"])
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))


class ErrorSerializer(serializers.Serializer):
    """405, 413 and 415."""

    code = serializers.CharField()
    message = serializers.CharField()


class InternalErrorSerializer(serializers.Serializer):
    """500: look the correlation id up in the logs."""

    code = serializers.ChoiceField(choices=["internal_error"])
    correlationId = serializers.CharField(allow_null=True)  # noqa: N815


_REQUEST_EXAMPLE = OpenApiExample(
    "Heartbeat",
    value={"userId": "account-42", "streamId": "movie-1138", "sessionId": "tv-living-room"},
    request_only=True,
)
_INVALID = OpenApiResponse(
    InvalidRequestSerializer,
    description="Invalid request",
    examples=[
        OpenApiExample(
            "Invalid request",
            value={"code": "invalid_request", "errors": {"sessionId": ["This field is required."]}},
            response_only=True,
            status_codes=["400"],
        )
    ],
)
_COMMON = {
    405: OpenApiResponse(ErrorSerializer, description="Method not allowed"),
    413: OpenApiResponse(ErrorSerializer, description="Body larger than 16 KiB"),
    415: OpenApiResponse(ErrorSerializer, description="Body not sent as JSON"),
    500: OpenApiResponse(
        InternalErrorSerializer,
        description="Internal error (Redis unreachable)",
        examples=[
            OpenApiExample(
                "Internal error",
                value={"code": "internal_error", "correlationId": "0b6f0c1e-9f8a-4c1e-9d55-2f1f9b1c3a77"},
                response_only=True,
                status_codes=["500"],
            )
        ],
    ),
}

HEARTBEAT = {
    "operation_id": "heartbeat",
    "summary": "Send a heartbeat",
    "description": "Every 20 seconds while playing. 200: keep playing. 400 with `allowed: false`: stop "
    "(the account's limit is reached, or support evicted this session). 400 `invalid_request`: fix the body.",
    "request": HeartbeatRequestSerializer,
    "examples": [_REQUEST_EXAMPLE],
    "responses": {
        200: OpenApiResponse(
            AllowedSerializer,
            description="Keep playing",
            examples=[
                OpenApiExample(
                    "Allowed",
                    value={"allowed": True, "activeSessions": 2, "limit": 3, "heartbeatInterval": 20},
                    response_only=True,
                    status_codes=["200"],
                )
            ],
        ),
        400: OpenApiResponse(
            description="Refused (stop playing), or an invalid request",
            response=HeartbeatBadRequestSerializer,
            examples=[
                OpenApiExample(
                    "Limit reached",
                    value={
                        "allowed": False,
                        "code": "concurrency_limit_reached",
                        "activeSessions": 3,
                        "limit": 3,
                        "heartbeatInterval": 20,
                        "message": "This account is already playing on 3 screens, the most its plan allows. "
                        "Stop a video on another screen to watch here.",
                    },
                    response_only=True,
                    status_codes=["400"],
                ),
                OpenApiExample(
                    "Invalid request",
                    value={"code": "invalid_request", "errors": {"userId": ["Must not be empty."]}},
                    response_only=True,
                    status_codes=["400"],
                ),
            ],
        ),
        **_COMMON,
    },
}

STOP = {
    "operation_id": "heartbeat_stop",
    "summary": "Stop a session",
    "description": "The player stopped: its slot is freed at once. Idempotent: 204 for an unknown "
    "session too. Accepts the JSON body as `text/plain`, as `navigator.sendBeacon` sends it.",
    "request": {"application/json": HeartbeatRequestSerializer, "text/plain": HeartbeatRequestSerializer},
    "examples": [_REQUEST_EXAMPLE],
    "responses": {204: OpenApiResponse(description="Slot freed"), 400: _INVALID, **_COMMON},
}
