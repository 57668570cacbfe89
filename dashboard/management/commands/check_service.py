"""Readiness from the shell: Redis, the Lua scripts, the database."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError
from django.db import connection
from django.db.utils import DatabaseError
from redis.exceptions import RedisError

from dashboard.management.base import OperatorCommand
from heartbeat.services import get_stream_manager


class Command(OperatorCommand):
    help = (
        "Check that the service can reach Redis and its database and that its Lua scripts are loaded "
        "(loading them if Redis lost them); print Redis' version and mode. Exits non-zero with the "
        "reason when not ready."
    )

    def handle(self, *args: Any, **options: Any) -> str:
        manager = get_stream_manager()
        problems = []
        try:
            manager.ping()
            info = manager.server_info()
            self.stdout.write(f"redis: ok (version {info['redis_version']}, mode {info['redis_mode']})")
            if not manager.scripts_loaded():
                manager.load_scripts()
                self.stdout.write("scripts: were not in Redis' cache; loaded them")
            self.stdout.write("scripts: loaded" if manager.scripts_loaded() else "scripts: NOT loaded")
            policy = manager.client.config_get("maxmemory-policy").get("maxmemory-policy", "unknown")
            if policy not in ("noeviction", b"noeviction"):
                self.stdout.write(f"warning: maxmemory-policy is {policy}; an evicting policy can drop live sessions")
        except RedisError as exc:
            problems.append(f"Redis does not answer: {exc}")
        try:
            connection.ensure_connection()
            self.stdout.write(f"database: ok ({connection.vendor})")
        except DatabaseError as exc:
            problems.append(f"the database does not answer: {exc}")
        if problems:
            raise CommandError("not ready: " + "; ".join(problems))
        return "ready"
