"""Readiness from the shell: Redis, the Lua scripts, the database."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import CommandError
from django.db import connection
from django.db.utils import DatabaseError
from redis.exceptions import RedisError

from dashboard.management.base import OperatorCommand
from heartbeat.services import get_live_state, get_stream_manager


class Command(OperatorCommand):
    help = (
        "Check that the service can reach Redis and its database, that its Lua scripts are loaded "
        "(loading them if Redis lost them) and that Redis takes the heartbeat's writes (a canary "
        "admission on a probe key); print Redis' version and mode. Exits non-zero with the reason "
        "when not ready."
    )

    def handle(self, *args: Any, **options: Any) -> str:
        manager = get_stream_manager()
        problems = []
        readiness = manager.check_ready()
        if readiness.ready:
            info = get_live_state().server_info()
            self.stdout.write(
                f"redis: ok (version {info['redis_version']}, mode {info['redis_mode']}; "
                f"{settings.REDIS_TOPOLOGY.describe()})"
            )
            if readiness.scripts_reloaded:
                self.stdout.write("scripts: were not in Redis' cache; loaded them")
            self.stdout.write("scripts: loaded")
            self.stdout.write("writes: ok (a canary admission ran)")
            try:
                policy = manager.client.config_get("maxmemory-policy").get("maxmemory-policy", "unknown")
            except RedisError as exc:  # CONFIG may be renamed or denied by an ACL
                policy = f"unknown ({exc})"
            if policy not in ("noeviction", b"noeviction"):
                self.stdout.write(f"warning: maxmemory-policy is {policy}; an evicting policy can drop live sessions")
        else:
            problems.append(readiness.detail)
        try:
            connection.ensure_connection()
            self.stdout.write(f"database: ok ({connection.vendor})")
        except DatabaseError as exc:
            problems.append(f"the database does not answer: {exc}")
        if problems:
            raise CommandError("not ready: " + "; ".join(problems))
        return "ready"
