"""Totals now: live users, sessions, users at their limit, and Redis memory of the service's keys."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandParser

from heartbeat.services import get_live_state, get_stream_manager
from streamlimit.commands import OperatorCommand


class Command(OperatorCommand):
    summary = "Show live users, live sessions, users at their limit, and the keys and memory the service uses in Redis."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="one JSON object, for scripts")

    def handle(self, *args: Any, **options: Any) -> None:
        manager = get_stream_manager()
        stats = get_live_state().stats()
        keys, memory = get_live_state().key_count_and_memory()
        data = {
            "liveUsers": stats.live_users,
            "liveSessions": stats.live_sessions,
            "usersAtLimit": stats.users_at_limit,
            "defaultLimit": manager.default_limit,
            "keys": keys,
            "memoryBytes": memory,
            "keyPrefix": manager.keys.prefix,
        }
        if options["json"]:
            self.stdout.write(json.dumps(data))
            return
        self.stdout.write(
            f"live users:      {stats.live_users}\n"
            f"live sessions:   {stats.live_sessions}\n"
            f"users at limit:  {stats.users_at_limit}\n"
            f"default limit:   {manager.default_limit}\n"
            f"keys under '{manager.keys.prefix}:': {keys}, using {memory / 1024:.1f} KiB of Redis memory"
        )
