"""Evict one session, or all sessions of a user (audited, with the cool-down)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from dashboard import actions
from heartbeat.limiter.ids import free_text_error
from heartbeat.limiter.limits import MAX_REASON_LENGTH
from streamlimit.commands import (
    OperatorCommand,
    add_json_argument,
    add_operator_argument,
    id_argument,
    isolate,
    operator_name,
)


class Command(OperatorCommand):
    summary = "Evict a session (--session ID) or every session of a user (--all), or lift a block (--unblock)."
    details = (
        "The evicted player is refused with session_evicted for EVICTION_COOLDOWN_SECONDS; "
        "the audit trail names the operator."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user", type=id_argument, help="the user id (exact)")
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--session", type=id_argument, help="the session id to evict")
        target.add_argument("--all", action="store_true", help="evict every live session of the user")
        target.add_argument("--unblock", action="store_true", help="lift a block on the user's new sessions")
        parser.add_argument(
            "--block-minutes",
            type=int,
            default=0,
            help="with --all: also refuse the user's new sessions for this many minutes (1 to 10080)",
        )
        parser.add_argument(
            "--reason", default="", help=f"why, for the audit trail (optional, up to {MAX_REASON_LENGTH} characters)"
        )
        add_operator_argument(parser)
        add_json_argument(parser)

    def handle(self, *args: Any, **options: Any) -> str | None:
        if error := free_text_error(options["reason"]):
            raise CommandError(f"--reason: {error}")
        if options["block_minutes"] and not options["all"]:
            raise CommandError("--block-minutes goes with --all.")
        if not 0 <= options["block_minutes"] <= 7 * 24 * 60:
            raise CommandError("--block-minutes must be 1 to 10080 (a week).")
        answer, data = self._act(operator_name(options), options)
        if options["json"]:
            self.write_json({"userId": options["user"], **data})
            return None
        return answer

    @staticmethod
    def _act(operator: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Do what the options say; the text answer and the JSON one."""
        user_id = options["user"]
        if options["unblock"]:
            lifted = actions.unblock_new_sessions(operator, user_id)
            text = f"New sessions of {isolate(user_id)} {'may start again' if lifted else 'were not blocked'}."
            return text, {"unblocked": lifted}
        if options["all"]:
            evicted = actions.evict_all(operator, user_id, options["reason"])
            listed = ", ".join(isolate(s) for s in evicted) or "none live"
            text = f"Evicted {len(evicted)} session(s) of {isolate(user_id)}: {listed}"
            data: dict[str, Any] = {"evicted": list(evicted), "blockedUntil": None}
            if options["block_minutes"]:
                until = actions.block_new_sessions(operator, user_id, options["block_minutes"], options["reason"])
                text += f"; new sessions refused until {until:%Y-%m-%d %H:%M} UTC"
                data["blockedUntil"] = until.isoformat()
            return text, data
        user, session = isolate(user_id), isolate(options["session"])
        if actions.evict_session(operator, user_id, options["session"], options["reason"]):
            return f"Evicted session {session} of {user}; its slot is free.", {"evicted": [options["session"]]}
        text = f"Session {session} of {user} is not live: nothing was evicted and no cool-down was set."
        return text, {"evicted": []}
