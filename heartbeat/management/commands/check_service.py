"""Readiness from the shell: Redis, the Lua scripts, the database."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser
from django.db import connection
from django.db.utils import DatabaseError
from redis.exceptions import RedisError

from heartbeat.services import get_live_state, get_stream_manager
from streamlimit.commands import OperatorCommand, add_json_argument


class Command(OperatorCommand):
    summary = "Check that the service can reach Redis and its database and that Redis takes its writes."
    details = (
        "Loads the Lua scripts if Redis lost them, runs a canary admission on a probe key, and prints Redis' "
        "version and mode. Exits non-zero with the reason when not ready."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_json_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        manager = get_stream_manager()
        problems = []
        report: dict[str, Any] = {}
        readiness = manager.check_ready()
        if readiness.ready:
            info = get_live_state().server_info()
            report["redis"] = {
                "version": info["redis_version"],
                "mode": info["redis_mode"],
                "topology": settings.REDIS_TOPOLOGY.describe(),
            }
            report["scriptsReloaded"] = readiness.scripts_reloaded
            try:
                policy = manager.client.config_get("maxmemory-policy").get("maxmemory-policy", "unknown")
            except RedisError as exc:  # CONFIG may be renamed or denied by an ACL
                policy = f"unknown ({exc})"
            report["maxmemoryPolicy"] = policy.decode() if isinstance(policy, bytes) else policy
        else:
            problems.append(readiness.detail)
        try:
            connection.ensure_connection()
            report["database"] = connection.vendor
        except DatabaseError as exc:
            problems.append(f"the database does not answer: {exc}")
        if problems:
            # Nothing on stdout: a script reading it sees no half report.
            raise CommandError("not ready: " + "; ".join(problems))
        if options["json"]:
            self.write_json({"status": "ready", **report})
            return
        redis = report["redis"]
        self.stdout.write(f"redis: ok (version {redis['version']}, mode {redis['mode']}; {redis['topology']})")
        if readiness.scripts_reloaded:
            self.stdout.write("scripts: were not in Redis' cache; loaded them")
        self.stdout.write("scripts: loaded")
        self.stdout.write("writes: ok (a canary admission ran)")
        if report["maxmemoryPolicy"] != "noeviction":
            self.stdout.write(
                f"warning: maxmemory-policy is {report['maxmemoryPolicy']}; an evicting policy can drop live sessions"
            )
        self.stdout.write(f"database: ok ({report['database']})")
        self.stdout.write("ready")
