"""What a level cost: Redis' commands and CPU (INFO of the bench's own redis-server), and the machine's CPU.

Only ever read from a redis-server the benchmark started itself (or a test's
own): INFO commandstats counts every client's commands, so on a shared Redis
the figures would include other people's work. Nothing is reset; a level's
figures are differences of two snapshots.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import redis

from bench.machine import CORES, MachineCpu, loadavg, process_seconds, tree_seconds

# Commands the benchmark itself sends while measuring; not the service's.
OWN_COMMANDS = {"info"}


@dataclass(frozen=True)
class Snapshot:
    """Counters at one moment."""

    at: float
    commands: dict[str, tuple[int, int]]  # command -> (calls, usec)
    redis_cpu: float
    machine: MachineCpu
    server_cpu: float | None
    own_cpu: float

    @classmethod
    def take(cls, client: redis.Redis | None, server_pid: int | None) -> Snapshot:
        """Read every counter now."""
        commands: dict[str, tuple[int, int]] = {}
        redis_cpu = 0.0
        if client is not None:
            for name, stat in client.info("commandstats").items():
                commands[name.removeprefix("cmdstat_")] = (int(stat["calls"]), int(stat["usec"]))
            cpu = client.info("cpu")
            redis_cpu = float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])
        return cls(
            time.monotonic(),
            commands,
            redis_cpu,
            MachineCpu.now(),
            tree_seconds(server_pid) if server_pid else None,
            process_seconds(os.getpid()),
        )


def cost(before: Snapshot, after: Snapshot, requests: int, redis_measured: bool) -> dict[str, object]:
    """Per-request costs between two snapshots; ``requests``: the requests the server answered in between."""
    seconds = after.at - before.at
    per = max(requests, 1)
    out: dict[str, object] = {"seconds": round(seconds, 2), "load_average": loadavg()}
    busy = after.machine.busy_since(before.machine)
    redis_cpu = after.redis_cpu - before.redis_cpu
    server_cpu = None if after.server_cpu is None else after.server_cpu - before.server_cpu
    own_cpu = after.own_cpu - before.own_cpu
    others = busy - own_cpu - (server_cpu or 0) - (redis_cpu if redis_measured else 0)
    out["cpu_percent_of_one_core"] = {
        "gunicorn": None if server_cpu is None else round(100 * server_cpu / seconds, 1),
        "redis": round(100 * redis_cpu / seconds, 1) if redis_measured else None,
        "generator": round(100 * own_cpu / seconds, 1),
        "everything_else": round(100 * others / seconds, 1),
        "steal": round(100 * (after.machine.steal - before.machine.steal) / seconds, 1),
        "cores": CORES,
    }
    out["gunicorn_cpu_ms_per_request"] = None if server_cpu is None else round(1000 * server_cpu / per, 3)
    out["generator_cpu_ms_per_request"] = round(1000 * own_cpu / per, 3)
    if not redis_measured:
        out["redis"] = None
        return out
    delta: dict[str, tuple[int, int]] = {}
    for name, (calls, usec) in after.commands.items():
        if name in OWN_COMMANDS:
            continue
        was_calls, was_usec = before.commands.get(name, (0, 0))
        if calls - was_calls:
            delta[name] = (calls - was_calls, usec - was_usec)
    evalsha_calls, evalsha_usec = delta.get("evalsha", (0, 0))
    # Commands run by scripts are counted too (as themselves), beside the EVALSHA that ran them.
    by_name = {name: calls for name, (calls, _) in delta.items()}
    out["redis"] = {
        "evalsha_calls": evalsha_calls,
        "evalsha_usec": evalsha_usec,
        "usec_per_evalsha": round(evalsha_usec / evalsha_calls, 2) if evalsha_calls else None,
        "evalsha_usec_per_request": round(evalsha_usec / per, 2),
        "evalsha_per_request": round(evalsha_calls / per, 3),
        "commands_per_request": round(sum(calls for calls, _ in delta.values()) / per, 2),
        "commands_by_name_per_request": {name: round(calls / per, 3) for name, calls in sorted(by_name.items())},
        "cpu_usec_per_request": round(1e6 * redis_cpu / per, 1),
    }
    return out
