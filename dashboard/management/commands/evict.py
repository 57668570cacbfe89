"""Evict one session, or all sessions of a user (audited, with the cool-down)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from dashboard import actions
from dashboard.management.base import OperatorCommand, add_operator_argument, operator_name


class Command(OperatorCommand):
    help = (
        "Evict a session (--session ID) or every session of a user (--all). The evicted player is "
        "refused with session_evicted for EVICTION_COOLDOWN_SECONDS; the audit trail names the operator."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user", help="the user id (exact)")
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--session", help="the session id to evict")
        target.add_argument("--all", action="store_true", help="evict every live session of the user")
        add_operator_argument(parser)

    def handle(self, *args: Any, **options: Any) -> str:
        operator = operator_name(options)
        if options["all"]:
            evicted = actions.evict_all(operator, options["user"])
            return f"Evicted {len(evicted)} session(s) of {options['user']}: {', '.join(evicted) or 'none live'}"
        was_live = actions.evict_session(operator, options["user"], options["session"])
        state = "was live" if was_live else "was not live; it is blocked for the cool-down anyway"
        return f"Evicted session {options['session']} of {options['user']} ({state})."
