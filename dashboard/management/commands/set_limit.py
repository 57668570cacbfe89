"""Set or clear a user's limit override (audited)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from dashboard import actions
from heartbeat.limiter.limits import MAX_LIMIT, MIN_LIMIT
from streamlimit.commands import (
    OperatorCommand,
    add_json_argument,
    add_operator_argument,
    id_argument,
    isolate,
    operator_name,
)


class Command(OperatorCommand):
    summary = f"Set a user's limit override ({MIN_LIMIT} to {MAX_LIMIT}) or clear it with --clear."
    details = "Lowering a limit never cuts a live session; it only refuses newcomers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user", type=id_argument, help="the user id (exact)")
        parser.add_argument("limit", nargs="?", type=int, help="the new limit")
        parser.add_argument("--clear", action="store_true", help="remove the override: back to the default")
        add_operator_argument(parser)
        add_json_argument(parser)

    def handle(self, *args: Any, **options: Any) -> str | None:
        if options["clear"] == (options["limit"] is not None):
            raise CommandError("Give either a limit or --clear.")
        result = actions.set_limit(
            operator_name(options), options["user"], None if options["clear"] else options["limit"]
        )
        if options["json"]:
            self.write_json({"userId": options["user"], "limit": result.limit, "source": result.source})
            return None
        return f"Limit of {isolate(options['user'])} is now {result.limit} ({result.source})."
