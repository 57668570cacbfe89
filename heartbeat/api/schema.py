"""OpenAPI descriptions of the player endpoints (drf-spectacular).

The serializers here describe the bodies for the schema; the views check ids
with ``heartbeat.limiter.ids`` directly, which is the same rule and a fraction
of a serializer's cost on the hot path.

A little over 300 lines of declarations, one per answer of the API; the
enums of codes and limit sources are read from ``heartbeat.limiter.outcomes``.
"""

from __future__ import annotations

from django.core.validators import RegexValidator
from drf_spectacular.utils import OpenApiExample, OpenApiResponse
from rest_framework import serializers

from heartbeat.limiter.ids import MAX_DEVICE_NAME_LENGTH, MAX_ID_LENGTH, NAME_PATTERN, QUALITIES
from heartbeat.limiter.outcomes import LIMIT_SOURCES, REFUSALS

# The same rule as heartbeat.limiter.ids, in a form JSON Schema can state.
_NO_CONTROL_CHARACTERS = RegexValidator(r"^[^\u0000-\u001F\u007F-\u009F]*$")
_ID = {
    "min_length": 1,
    "max_length": MAX_ID_LENGTH,
    "trim_whitespace": False,
    "validators": [_NO_CONTROL_CHARACTERS],
}


class HeartbeatRequestSerializer(serializers.Serializer):
    """A player's heartbeat."""

    userId = serializers.CharField(  # noqa: N815
        help_text="The account. With playback tokens on it may be left out; when given it must be the token's sub.",
        **_ID,
    )
    streamId = serializers.CharField(help_text="The video now playing; may change within a session.", **_ID)  # noqa: N815
    sessionId = serializers.CharField(  # noqa: N815
        help_text="One player instance; a session holds one slot. Must be the token's sid when it has one.", **_ID
    )
    deviceName = serializers.CharField(  # noqa: N815
        required=False,
        help_text="A name the viewer knows this screen by (shown in session lists).",
        **{**_ID, "max_length": MAX_DEVICE_NAME_LENGTH},
    )
    deviceClass = serializers.RegexField(  # noqa: N815
        NAME_PATTERN.pattern,
        required=False,
        help_text="The device's class as the policy names it (mobile, tv, ...): its own cap under a policy. "
        "A token's deviceClass claim wins; a body that contradicts it gets 403 token_mismatch.",
    )
    deviceId = serializers.CharField(  # noqa: N815
        required=False,
        help_text="A stable id of the device (the player library keeps one): a restarted player on the same "
        "device takes its own session's place (sameDeviceTakeover). A token's deviceId claim wins.",
        **_ID,
    )
    quality = serializers.ChoiceField(
        choices=list(QUALITIES),
        required=False,
        help_text="The playback quality: a session takes the policy's weights[quality] slots (1 when absent).",
    )
    replaces = serializers.CharField(
        required=False,
        help_text="A hand-off: the session (of this account) that this one takes over in one step, even when "
        "the account is full; it is told session_handed_off. Needs an account token, or a session token "
        "of the same device; without tokens the session must play on the same network.",
        **_ID,
    )


class RuleSerializer(serializers.Serializer):
    """The policy rule that refused a new session."""

    name = serializers.CharField(help_text="maxStreams, devices.<class>, pools.<pool> or networks.")
    limit = serializers.IntegerField()
    active = serializers.IntegerField(help_text="What the rule counted when it refused.")


class StopRequestSerializer(serializers.Serializer):
    """A player (or another screen of the account) stops a session."""

    userId = serializers.CharField(help_text="The account; may be left out with a token.", **_ID)  # noqa: N815
    sessionId = serializers.CharField(  # noqa: N815
        help_text="The session to stop: the token's sid, or any session of the account with an account token.",
        **_ID,
    )
    streamId = serializers.CharField(required=False, help_text="Ignored.", **_ID)  # noqa: N815
    token = serializers.CharField(
        required=False,
        help_text="The playback token, for navigator.sendBeacon, which cannot send the Authorization header.",
    )


class SessionSerializer(serializers.Serializer):
    """One live session of the account."""

    sessionId = serializers.CharField()  # noqa: N815
    streamId = serializers.CharField()  # noqa: N815
    deviceName = serializers.CharField(allow_null=True)  # noqa: N815
    startedAt = serializers.DateTimeField(help_text="ISO 8601, UTC.")  # noqa: N815
    lastHeartbeatAt = serializers.DateTimeField(help_text="ISO 8601, UTC.")  # noqa: N815


class SessionsSerializer(serializers.Serializer):
    """200 from /sessions: the account's limit and live sessions."""

    limit = serializers.IntegerField()
    limitSource = serializers.ChoiceField(choices=list(LIMIT_SOURCES))  # noqa: N815
    sessions = SessionSerializer(many=True)


class AllowedSerializer(serializers.Serializer):
    """200: keep playing."""

    allowed = serializers.BooleanField()
    activeSessions = serializers.IntegerField(allow_null=True, help_text="Null only when degraded.")  # noqa: N815
    limit = serializers.IntegerField()
    limitSource = serializers.ChoiceField(  # noqa: N815
        choices=list(LIMIT_SOURCES), help_text="Where the limit comes from."
    )
    heartbeatInterval = serializers.IntegerField(help_text="Seconds until the next heartbeat.")  # noqa: N815
    degraded = serializers.BooleanField(
        required=False, help_text="Present and true when Redis is down and the service fails open."
    )


class HeartbeatBadRequestSerializer(serializers.Serializer):
    """400 from /heartbeat: stop playing (limit reached, evicted, stopped, replaced), or fix the body."""

    code = serializers.ChoiceField(
        choices=[*(row.api_code for row in REFUSALS if row.http_status == 400), "invalid_request"]
    )
    allowed = serializers.BooleanField(required=False, help_text="false when the player must stop.")
    activeSessions = serializers.IntegerField(required=False)  # noqa: N815
    limit = serializers.IntegerField(required=False)
    limitSource = serializers.ChoiceField(choices=list(LIMIT_SOURCES), required=False)  # noqa: N815
    sessions = SessionSerializer(
        many=True,
        required=False,
        help_text="concurrency_limit_reached with a valid token only: the account's live sessions.",
    )
    heartbeatInterval = serializers.IntegerField(required=False)  # noqa: N815
    message = serializers.CharField(required=False, help_text="Plain words a player can show.")
    rule = RuleSerializer(
        required=False, help_text="concurrency_limit_reached under a policy document: the rule that refused."
    )
    decisionId = serializers.CharField(  # noqa: N815
        required=False, help_text="With rule: the id support finds this decision by in the logs."
    )
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="invalid_request only: what is wrong, by field.",
    )


class RetryLaterSerializer(serializers.Serializer):
    """429 from /heartbeat: not now; try again after ``Retry-After`` seconds."""

    code = serializers.ChoiceField(choices=[row.api_code for row in REFUSALS if row.retry_later])
    allowed = serializers.BooleanField(help_text="false: this session did not start.")
    activeSessions = serializers.IntegerField()  # noqa: N815
    limit = serializers.IntegerField()
    limitSource = serializers.ChoiceField(choices=list(LIMIT_SOURCES))  # noqa: N815
    heartbeatInterval = serializers.IntegerField()  # noqa: N815
    message = serializers.CharField(help_text="Plain words a player can show.")


class InvalidRequestSerializer(serializers.Serializer):
    """400: the body cannot be used."""

    code = serializers.ChoiceField(choices=["invalid_request"])
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))


class ErrorSerializer(serializers.Serializer):
    """405, 413 and 415."""

    code = serializers.CharField()
    message = serializers.CharField()


class TokenErrorSerializer(serializers.Serializer):
    """401 (no usable token) and 403 (token and body disagree)."""

    code = serializers.ChoiceField(
        choices=["token_required", "invalid_token", "token_expired", "token_mismatch", "tokens_disabled"]
    )
    message = serializers.CharField()


class HeartbeatForbiddenSerializer(serializers.Serializer):
    """403 from /heartbeat: the token and the body disagree, or a hand-off may not end the session it names."""

    code = serializers.ChoiceField(
        choices=["token_mismatch", *(row.api_code for row in REFUSALS if row.http_status == 403)]
    )
    message = serializers.CharField()
    allowed = serializers.BooleanField(required=False)
    activeSessions = serializers.IntegerField(required=False)  # noqa: N815
    limit = serializers.IntegerField(required=False)
    limitSource = serializers.ChoiceField(choices=list(LIMIT_SOURCES), required=False)  # noqa: N815
    heartbeatInterval = serializers.IntegerField(required=False)  # noqa: N815


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
# Tokens are optional for the service (off unless keys are configured): "{}" says so.
PLAYBACK_TOKEN_AUTH = [{"playbackToken": []}, {}]
_TOKEN_ERRORS = {
    401: OpenApiResponse(
        TokenErrorSerializer,
        description="Tokens on, and the token is missing (token_required), invalid (invalid_token) or "
        "expired (token_expired). Sent with WWW-Authenticate: Bearer.",
    ),
    403: OpenApiResponse(
        TokenErrorSerializer, description="token_mismatch: the body's userId or sessionId is not the token's."
    ),
}
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
    "auth": PLAYBACK_TOKEN_AUTH,
    "responses": {
        200: OpenApiResponse(
            AllowedSerializer,
            description="Keep playing",
            examples=[
                OpenApiExample(
                    "Allowed",
                    value={
                        "allowed": True,
                        "activeSessions": 2,
                        "limit": 3,
                        "limitSource": "default",
                        "heartbeatInterval": 20,
                    },
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
                        "limitSource": "default",
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
        429: OpenApiResponse(
            RetryLaterSerializer,
            description="too_many_new_sessions (anonymous players only): the client's network started "
            "NEW_SESSIONS_PER_NETWORK_PER_MINUTE new sessions this minute. Retry-After: seconds to wait.",
        ),
        **_TOKEN_ERRORS,
        403: OpenApiResponse(
            HeartbeatForbiddenSerializer,
            description="token_mismatch: the body's userId, sessionId, deviceClass, deviceId or quality is not "
            "the token's. replace_not_allowed: `replaces` names no live session of the account, or one this "
            "player may not end (nothing was ended).",
        ),
        **_COMMON,
    },
}

STOP = {
    "operation_id": "heartbeat_stop",
    "summary": "Stop a session",
    "description": "The player stopped: its slot is freed at once. Idempotent: 204 for an unknown "
    "session too. Accepts the JSON body as `text/plain`, as `navigator.sendBeacon` sends it; the token "
    "may then be the body's `token` field. With an account token (no `sid`), any session of the account "
    "may be stopped; that session is then refused (`session_stopped`) for a session TTL. Without a token, "
    "a live session is stopped only from the client network (IPv4 /24, IPv6 /56) of its latest heartbeat: "
    "from another, 403 `stop_from_other_network` and the session plays on.",
    "request": {"application/json": StopRequestSerializer, "text/plain": StopRequestSerializer},
    "examples": [_REQUEST_EXAMPLE],
    "auth": PLAYBACK_TOKEN_AUTH,
    "responses": {
        204: OpenApiResponse(description="Slot freed"),
        400: _INVALID,
        **_TOKEN_ERRORS,
        403: OpenApiResponse(
            TokenErrorSerializer,
            description="token_mismatch: the body's userId or sessionId is not the token's. "
            "stop_from_other_network: no token, and the session plays on another client network.",
        ),
        **_COMMON,
    },
}

SESSIONS = {
    "operation_id": "sessions",
    "summary": "List the account's live sessions",
    "description": "For a player's devices screen: the account's limit, where it comes from, and its live "
    "sessions, oldest first. Needs a playback token (the account is its sub); 401 `tokens_disabled` when "
    "the service runs without tokens.",
    "auth": [{"playbackToken": []}],
    "responses": {
        200: OpenApiResponse(SessionsSerializer, description="The account's sessions"),
        401: OpenApiResponse(
            TokenErrorSerializer,
            description="token_required, invalid_token or token_expired; tokens_disabled when the service "
            "runs without tokens (no token can be valid then).",
        ),
        500: _COMMON[500],
    },
}
