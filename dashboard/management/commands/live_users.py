"""List live users and their sessions."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandError, CommandParser

from heartbeat.services import get_live_state
from streamlimit.commands import OperatorCommand, id_argument, isolate


class Command(OperatorCommand):
    summary = "List live users (most recent heartbeat first) and their live sessions."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", type=id_argument, help="show only this user id (exact)")
        parser.add_argument("--limit", type=int, default=50, help="how many users at most (default 50)")
        parser.add_argument("--json", action="store_true", help="one JSON document, for scripts")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["limit"] < 1:
            raise CommandError("--limit must be at least 1.")
        if options["user"] is not None:
            user_ids = [options["user"]]
            total = 1
        else:
            total, rows = get_live_state().live_users(offset=0, count=options["limit"])
            user_ids = [row.user_id for row in rows]
        users = []
        for user_id in user_ids:
            limit = get_live_state().get_limit(user_id)
            sessions = get_live_state().sessions(user_id)
            users.append(
                {
                    "userId": user_id,
                    "limit": limit.limit,
                    "limitSource": limit.source,
                    "limitOverride": limit.override,
                    "sessions": [
                        {
                            "sessionId": s.session_id,
                            "streamId": s.stream_id,
                            "deviceName": s.device_name,
                            "startedAt": s.started_at.isoformat(),
                            "lastHeartbeatAt": s.last_heartbeat_at.isoformat(),
                            "expiresInSeconds": round(s.expires_in_seconds, 1),
                        }
                        for s in sessions
                    ],
                }
            )
        if options["json"]:
            self.stdout.write(json.dumps({"liveUsers": total, "users": users}, ensure_ascii=False, indent=2))
            return
        if options["user"] is None:
            self.stdout.write(f"{total} live users; showing {len(users)}, most recent heartbeat first.")
        for user in users:
            self.stdout.write(
                f"{isolate(user['userId'])}  ({len(user['sessions'])} of {user['limit']} sessions, "
                f"limit from {user['limitSource']})"
            )
            for s in user["sessions"]:
                device = f"  device={isolate(s['deviceName'])}" if s["deviceName"] is not None else ""
                self.stdout.write(
                    f"  {isolate(s['sessionId'])}  stream={isolate(s['streamId'])}{device}  started={s['startedAt']}  "
                    f"last={s['lastHeartbeatAt']}  expires_in={s['expiresInSeconds']}s"
                )
