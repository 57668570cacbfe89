"""Print an HS256 playback token signed with a configured key (tests, demos, support)."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from heartbeat.limiter.ids import QUALITIES, class_name_error, id_error, quality_error
from heartbeat.limiter.limits import MAX_LIMIT, MIN_LIMIT
from heartbeat.limiter.tokens import issue_token
from streamlimit.commands import OperatorCommand, add_json_argument

MAX_TTL_SECONDS = 30 * 86400


class Command(OperatorCommand):
    summary = "Print a playback token for USER, signed with an HS256 key of PLAYBACK_TOKEN_KEYS (the first, or --kid)."
    details = "Without --session it is an account token: it may stop any session of the account."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user", help="the account (the token's sub)")
        parser.add_argument("--session", help="bind the token to this sessionId (the sid claim)")
        limit = parser.add_mutually_exclusive_group()
        limit.add_argument("--plan", help="the plan claim (its limit comes from PLAN_LIMITS)")
        limit.add_argument("--max-streams", type=int, help="the maxStreams claim (1 to 50)")
        # The policy's inputs the back end vouches for: they win over the player's body (docs/operators/policies.md).
        parser.add_argument("--device-class", help="the deviceClass claim (a-z, 0-9, _ and -, 1 to 32)")
        parser.add_argument("--device-id", help="the deviceId claim (the id rule)")
        parser.add_argument("--quality", choices=QUALITIES, help="the quality claim")
        parser.add_argument("--pool", help="the pool claim (wins over the policy's streams patterns)")
        parser.add_argument("--ttl", type=int, default=3600, help="seconds until it expires (default 3600)")
        parser.add_argument("--kid", help="which key of PLAYBACK_TOKEN_KEYS signs it (default: the first)")
        add_json_argument(parser, "one JSON object (the token, its kid and expiry), for scripts")

    def handle(self, *args: Any, **options: Any) -> str | None:
        keys: dict[str, str] = settings.PLAYBACK_TOKEN_KEYS
        if not keys:
            raise CommandError("PLAYBACK_TOKEN_KEYS is empty: set kid=secret (a secret of 32 bytes or more) first.")
        kid = options["kid"] or next(iter(keys))
        if kid not in keys:
            raise CommandError(f"No key {kid!r} in PLAYBACK_TOKEN_KEYS (there are: {', '.join(keys)}).")
        for name, value in (("user", options["user"]), ("--session", options["session"])):
            if value is not None and (error := id_error(value)):
                raise CommandError(f"{name}: {error}")
        if options["max_streams"] is not None and not MIN_LIMIT <= options["max_streams"] <= MAX_LIMIT:
            raise CommandError(f"--max-streams must be between {MIN_LIMIT} and {MAX_LIMIT}.")
        if options["plan"] is not None and (error := id_error(options["plan"])):
            raise CommandError(f"--plan: {error}")
        claims = {}
        for flag, claim, rule in (
            ("--device-class", "deviceClass", class_name_error),
            ("--device-id", "deviceId", id_error),
            ("--quality", "quality", quality_error),
            ("--pool", "pool", class_name_error),
        ):
            value = options[flag[2:].replace("-", "_")]
            if value is not None:
                if error := rule(value):
                    raise CommandError(f"{flag}: {error}")
                claims[claim] = value
        if not 1 <= options["ttl"] <= MAX_TTL_SECONDS:
            raise CommandError(f"--ttl must be between 1 and {MAX_TTL_SECONDS} seconds.")
        now = time.time()
        token = issue_token(
            kid,
            keys[kid],
            options["user"],
            ttl_seconds=options["ttl"],
            session_id=options["session"],
            plan=options["plan"],
            max_streams=options["max_streams"],
            issuer=settings.PLAYBACK_TOKEN_ISSUER,
            audience=settings.PLAYBACK_TOKEN_AUDIENCE,
            now=now,
            extra_claims=claims,
        )
        if options["json"]:
            self.write_json({"token": token, "kid": kid, "expiresAt": int(now) + options["ttl"]})
            return None
        return token
