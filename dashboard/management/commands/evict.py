"""Evict one session, or all sessions of a user (audited, with the cool-down)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from dashboard import actions
from dashboard.management.base import OperatorCommand, add_operator_argument, id_argument, isolate, operator_name
from heartbeat.validation import free_text_error


class Command(OperatorCommand):
    help = (
        "Evict a session (--session ID) or every session of a user (--all). The evicted player is "
        "refused with session_evicted for EVICTION_COOLDOWN_SECONDS; the audit trail names the operator."
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
        parser.add_argument("--reason", default="", help="why, for the audit trail (optional, up to 200 characters)")
        add_operator_argument(parser)

    def handle(self, *args: Any, **options: Any) -> str:
        operator = operator_name(options)
        if options["unblock"]:
            lifted = actions.unblock_new_sessions(operator, options["user"])
            return f"New sessions of {isolate(options['user'])} {'may start again' if lifted else 'were not blocked'}."
        if error := free_text_error(options["reason"]):
            raise CommandError(f"--reason: {error}")
        if options["block_minutes"] and not options["all"]:
            raise CommandError("--block-minutes goes with --all.")
        if not 0 <= options["block_minutes"] <= 7 * 24 * 60:
            raise CommandError("--block-minutes must be 1 to 10080 (a week).")
        if options["all"]:
            evicted = actions.evict_all(operator, options["user"], options["reason"])
            listed = ", ".join(isolate(s) for s in evicted) or "none live"
            answer = f"Evicted {len(evicted)} session(s) of {isolate(options['user'])}: {listed}"
            if options["block_minutes"]:
                until = actions.block_new_sessions(
                    operator, options["user"], options["block_minutes"], options["reason"]
                )
                answer += f"; new sessions refused until {until:%Y-%m-%d %H:%M} UTC"
            return answer
        user, session = isolate(options["user"]), isolate(options["session"])
        if actions.evict_session(operator, options["user"], options["session"], options["reason"]):
            return f"Evicted session {session} of {user}; its slot is free."
        return f"Session {session} of {user} is not live: nothing was evicted and no cool-down was set."
