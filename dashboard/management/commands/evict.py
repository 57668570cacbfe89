"""Evict one session, or all sessions of a user (audited, with the cool-down)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from dashboard import actions
from dashboard.management.base import OperatorCommand, add_operator_argument, id_argument, isolate, operator_name


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
        parser.add_argument("--reason", default="", help="why, for the audit trail (optional, up to 200 characters)")
        add_operator_argument(parser)

    def handle(self, *args: Any, **options: Any) -> str:
        operator = operator_name(options)
        if options["all"]:
            evicted = actions.evict_all(operator, options["user"], options["reason"])
            listed = ", ".join(isolate(s) for s in evicted) or "none live"
            return f"Evicted {len(evicted)} session(s) of {isolate(options['user'])}: {listed}"
        user, session = isolate(options["user"]), isolate(options["session"])
        if actions.evict_session(operator, options["user"], options["session"], options["reason"]):
            return f"Evicted session {session} of {user}; its slot is free."
        return f"Session {session} of {user} is not live: nothing was evicted and no cool-down was set."
