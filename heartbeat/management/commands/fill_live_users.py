"""Fill Redis with simulated live users, through the StreamManager, for demos and benchmarks."""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.core.management.base import CommandError, CommandParser

from heartbeat.services import get_stream_manager
from streamlimit.commands import OperatorCommand, add_json_argument
from streamlimit.logging import SINK


class Command(OperatorCommand):
    summary = "Send first heartbeats for N simulated users through the StreamManager, as real players would."
    details = "Each user gets 1 to --max-sessions sessions; they expire after SESSION_TTL_SECONDS like any other."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("users", type=int, help="how many users to simulate")
        parser.add_argument("--max-sessions", type=int, default=3, help="sessions per user, at most (default 3)")
        parser.add_argument("--user-prefix", default="demo-user-", help="user ids are this prefix plus a number")
        parser.add_argument("--threads", type=int, default=8, help="parallel Redis connections (default 8)")
        parser.add_argument("--seed", type=int, default=None, help="random seed, for repeatable fills")
        add_json_argument(parser)

    def handle(self, *args: Any, **options: Any) -> str | None:
        users, max_sessions = options["users"], options["max_sessions"]
        if users < 1 or max_sessions < 1 or options["threads"] < 1:
            raise CommandError("users, --max-sessions and --threads must be at least 1")
        manager = get_stream_manager()
        rng = random.Random(options["seed"])  # noqa: S311 (simulation, not security)
        plan = [(f"{options['user_prefix']}{n}", rng.randint(1, max_sessions)) for n in range(users)]

        def play(user: tuple[str, int]) -> int:
            user_id, sessions = user
            return sum(manager.admit(user_id, f"stream-{s % 7}", f"session-{s}").allowed for s in range(sessions))

        started = time.monotonic()
        # One "allow stream request" line per simulated session would bury the summary.
        logs, SINK.target = SINK.target, open(os.devnull, "wb")  # noqa: SIM115 (closed below)
        try:
            with ThreadPoolExecutor(options["threads"]) as pool:
                admitted = sum(pool.map(play, plan, chunksize=256))
            manager.flush_activity()  # the dashboard's lists see them now, not a second later
        finally:
            SINK.target.close()
            SINK.target = logs
        elapsed = time.monotonic() - started
        if options["json"]:
            self.write_json({"admitted": admitted, "users": users, "seconds": round(elapsed, 3)})
            return None
        return f"Admitted {admitted} sessions for {users} users in {elapsed:.1f} s."
