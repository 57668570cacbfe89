"""Redis time per heartbeat, admission and activity flush together, before and after, in one run.

Starts a redis-server of its own on a free loopback port (INFO commandstats then
counts this run's commands only; CONFIG RESETSTAT and FLUSHALL touch no one
else's), and for each code checkout given (``--code NAME=DIR``; default: this
checkout) and each mix, in alternated rounds, runs a child process that imports
that checkout's ``StreamManager`` and drives it in-process:

- ``steady``: ``bench/heartbeat.lua``'s mix: 20,000 accounts (``--steady-accounts``)
  with 1, 2 or 3 sessions (40/35/25%), every session seeded live; then each
  request is a repeat heartbeat of a session drawn at random, or (5%) a new
  session of an account already playing 3, refused;
- ``players``: ``bench/players/population.py``'s wheel: 50,000 accounts
  (``--player-accounts``, about 105,000 sessions) with 1, 2 or 3 sessions
  (25/40/35%), each session heard once per turn of the wheel, the sessions of
  one account a third of a turn apart, 1% of the ticks a stop and a new
  session in its place, 5% new sessions of full accounts (refused): no account
  is heard twice in one activity batch.

The manager is built as ``heartbeat/services.py`` builds it from the default
settings (16 activity shards, events on, the analytics memory budget), with
anonymous players from one network (the new-session rate off, as
``make bench`` and ``make bench-players`` run). Its activity batch is written
every ``--flush-every`` heartbeats (800: one of 3 gunicorn workers' one-second
batch at 2,400 heartbeats/s), by ``flush_activity`` as the flusher thread does.
Session TTL 3600 s, so that no session expires mid-run whatever the machine's
speed (the expiry trim runs, finding nothing, as in a steady state).

Redis time is ``usec`` of ``cmdstat_evalsha`` (a script's time includes the
commands it runs) plus the commands sent outside scripts (counted on the
client's connections: the policy check's GET), over the run, divided by the
heartbeats the service admitted. Each command's calls and usec per admitted
heartbeat are split into what the requests cost (admit, stop) and what the
activity flushes cost, from commandstats snapshots around every flush.

Run:  .venv/bin/python -m bench.redis_time [--code before=DIR --code after=.] [--rounds 3]
      [--heartbeats 40000] [--mixes steady,players] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
# Commands the bench itself sends (never the service's).
OWN = {"info", "config|resetstat", "config", "flushall", "ping", "client|setinfo", "hello", "select", "dbsize"}


def say(message: str) -> None:
    """A progress line on stderr."""
    print(f"[redis-time] {message}", file=sys.stderr, flush=True)


# --- The child: one mix, one checkout -----------------------------------------------------------


def commandstats(client: Any) -> dict[str, tuple[int, int]]:
    """INFO commandstats as command -> (calls, usec)."""
    return {
        name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
        for name, v in client.info("commandstats").items()
    }


def minus(after: dict[str, tuple[int, int]], before: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """The commands run between two snapshots."""
    out = {}
    for name, (calls, usec) in after.items():
        c0, u0 = before.get(name, (0, 0))
        if calls - c0:
            out[name] = (calls - c0, usec - u0)
    return out


def child(options: argparse.Namespace) -> int:
    """Measure one mix with the checkout on sys.path; print one JSON line."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streamlimit.settings")
    import django

    django.setup()
    import orjson
    from django.conf import settings
    from redis import Connection, ConnectionPool, Redis

    from bench.players.population import FIRST, REFUSED, REPEAT, STOP, Population
    from bench.players.seed import LOOPBACK_NETWORK, seed
    from heartbeat.limiter.manager import StreamManager
    from streamlimit.logging import SINK

    SINK.target = open(os.devnull, "wb")  # noqa: SIM115  (a log line per admission would dominate the run)
    sent: Counter[str] = Counter()

    class CountingConnection(Connection):
        """Counts the commands the service sends outside scripts (EVALSHA included, by name)."""

        def pack_command(self, *args: Any) -> Any:
            name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
            sent[name.split()[0].lower()] += 1
            return super().pack_command(*args)

    url = f"redis://127.0.0.1:{options.port}/0"
    bench = Redis(host="127.0.0.1", port=options.port)
    bench.flushall()
    prefix = f"rt-{options.mix}"
    rng = random.Random(7)
    if options.mix == "players":
        population = Population(options.player_accounts, churn_share=0.01, refused_share=0.05)
        sessions = population.seeded_sessions()
    else:
        counts = []
        for _ in range(options.steady_accounts):
            pick = rng.random()
            counts.append(1 if pick < 0.40 else 2 if pick < 0.75 else 3)
        sessions = [
            (f"user-{n:06d}", f"title-{n * 7 % 400:04d}", f"session-{n:06d}-{k}-4b1e0c")
            for n, c in enumerate(counts)
            for k in range(c)
        ]
        full = [n for n, c in enumerate(counts) if c == 3]
    seeded = seed(url, prefix, sessions, limit=3, session_ttl_seconds=options.session_ttl)
    client = Redis(
        connection_pool=ConnectionPool(host="127.0.0.1", port=options.port, connection_class=CountingConnection)
    )
    manager = StreamManager(
        client,
        key_prefix=prefix,
        default_limit=3,
        session_ttl_seconds=options.session_ttl,
        eviction_cooldown_seconds=settings.EVICTION_COOLDOWN_SECONDS,
        activity_flush_seconds=10.0,
        activity_shards=settings.ACTIVITY_SHARDS,
        activity_memory_budget_mb=settings.ACTIVITY_MEMORY_BUDGET_MB,
        new_sessions_per_network_per_minute=0,
        events_enabled=True,
        events_retention_hours=settings.EVENTS_RETENTION_HOURS,
        events_memory_budget_mb=settings.EVENTS_MEMORY_BUDGET_MB,
    )
    # This bench writes the batches itself, every --flush-every heartbeats: no flusher thread.
    from heartbeat.limiter.activity import FLUSHER

    manager.activity._flusher_forks = FLUSHER.forks
    # A worker that has run for a while has written each account's "seen" entries within the last
    # SEEN_REFRESH_MS (10 min), at a moment spread over those ten minutes: so a run of a few seconds
    # refreshes a few percent of them, as a long-running worker does, not every one.
    refresh = getattr(sys.modules["heartbeat.limiter.activity_writer"], "SEEN_REFRESH_MS", 0)
    if refresh and hasattr(manager.activity, "_seen_written"):
        seconds, micros = bench.time()
        now_ms = seconds * 1000 + micros // 1000
        spread = random.Random(11)
        for user in {user for user, _, _ in sessions}:
            manager.activity._seen_written[user] = now_ms - spread.randrange(refresh)
    # Warm up: the policy check, the scripts loaded, a few batches (not measured).
    tally: Counter[str] = Counter()

    def requests():
        if options.mix == "players":
            while True:
                request = population.next()
                body = orjson.loads(request.body)
                yield request.kind, body["userId"], body["streamId"], body["sessionId"]
        else:
            serial = 0
            while True:
                if rng.random() < 0.05:
                    n = rng.choice(full)
                    serial += 1
                    yield (
                        REFUSED,
                        f"user-{n:06d}",
                        f"title-{n * 7 % 400:04d}",
                        f"fresh-{serial}-{rng.getrandbits(32):08x}",
                    )
                else:
                    user, stream, session = sessions[rng.randrange(len(sessions))]
                    yield REPEAT, user, stream, session

    def send(kind: str, user: str, stream: str, session: str) -> None:
        if kind == STOP:
            manager.stop(user, session, network=LOOPBACK_NETWORK)
            tally["stops"] += 1
            return
        result = manager.admit(user, stream, session, network=LOOPBACK_NETWORK, limit_new_sessions_of_network=True)
        tally["heartbeats"] += 1
        tally["admitted"] += result.allowed
        tally["new"] += result.new_session
        expected = kind in (REPEAT, FIRST)
        tally["unexpected"] += result.allowed != expected

    stream_of = requests()
    for _ in range(options.flush_every * 3):
        send(*next(stream_of))
    manager.flush_activity()
    tally.clear()
    sent.clear()
    flushes: dict[str, tuple[int, int]] = {}
    bench.config_resetstat()
    if options.callgrind_pid:
        subprocess.run(["callgrind_control", "-z", str(options.callgrind_pid)], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-i", "on", str(options.callgrind_pid)], check=True, capture_output=True)
    started = time.monotonic()
    cpu_before = float(bench.info("cpu")["used_cpu_user"]) + float(bench.info("cpu")["used_cpu_sys"])
    since_flush = 0
    while tally["heartbeats"] < options.heartbeats:
        kind, user, stream, session = next(stream_of)
        send(kind, user, stream, session)
        since_flush += kind != STOP
        if since_flush >= options.flush_every and options.callgrind_pid:
            manager.flush_activity()  # no INFO between: callgrind would count it
            since_flush = 0
        elif since_flush >= options.flush_every:
            before = commandstats(bench)
            manager.flush_activity()
            for name, (calls, usec) in minus(commandstats(bench), before).items():
                c, u = flushes.get(name, (0, 0))
                flushes[name] = (c + calls, u + usec)
            since_flush = 0
    before = commandstats(bench)
    manager.flush_activity()
    for name, (calls, usec) in minus(commandstats(bench), before).items():
        c, u = flushes.get(name, (0, 0))
        flushes[name] = (c + calls, u + usec)
    seconds = time.monotonic() - started
    instructions = 0
    if options.callgrind_pid:
        pid = str(options.callgrind_pid)
        subprocess.run(["callgrind_control", "-i", "off", pid], check=True, capture_output=True)
        earlier = set(Path(options.callgrind_dir).glob("cg.out.*"))
        subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not instructions:
            for dump in set(Path(options.callgrind_dir).glob("cg.out.*")) - earlier:
                for line in dump.read_text().splitlines():
                    if line.startswith("totals:"):
                        instructions = int(line.split()[1])
            time.sleep(0.5)
        if not instructions:
            print(f"no callgrind dump in {options.callgrind_dir}", file=sys.stderr)
    cpu = float(bench.info("cpu")["used_cpu_user"]) + float(bench.info("cpu")["used_cpu_sys"]) - cpu_before
    total = {name: v for name, v in commandstats(bench).items() if name not in OWN}
    flushes = {name: v for name, v in flushes.items() if name not in OWN}
    admitted = tally["admitted"]
    # Commands sent outside scripts (all but EVALSHA): their time at that command's mean per call.
    outside = {name: calls for name, calls in sent.items() if name not in ("evalsha", "script") and name not in OWN}
    outside_usec = sum(
        calls * total[name][1] / max(1, total[name][0]) for name, calls in outside.items() if name in total
    )
    evalsha = total.get("evalsha", (0, 0))
    flush_evalsha = flushes.get("evalsha", (0, 0))
    result = {
        "mix": options.mix,
        "code": options.code_name,
        "seeded": seeded,
        **tally,
        "seconds": round(seconds, 2),
        "flush_every": options.flush_every,
        "redis_usec_per_admitted": round((evalsha[1] + outside_usec) / admitted, 2),
        "requests_usec_per_admitted": round((evalsha[1] - flush_evalsha[1] + outside_usec) / admitted, 2),
        "flush_usec_per_admitted": round(flush_evalsha[1] / admitted, 2),
        "evalsha_usec_per_call": round(evalsha[1] / max(1, evalsha[0]), 2),
        "redis_cpu_usec_per_admitted": round(cpu * 1e6 / admitted, 2),
        "redis_instructions_per_admitted": round(instructions / admitted) if instructions else None,
        "commands_per_admitted": round(sum(c for n, (c, _) in total.items() if n != "evalsha") / admitted, 2),
        "outside_scripts": dict(outside),
        "by_command": {
            name: {
                "calls": round(calls / admitted, 3),
                "usec": round(usec / admitted, 3),
                "flush_calls": round(flushes.get(name, (0, 0))[0] / admitted, 3),
                "flush_usec": round(flushes.get(name, (0, 0))[1] / admitted, 3),
            }
            for name, (calls, usec) in sorted(total.items(), key=lambda kv: -kv[1][1])
        },
    }
    print("RESULT " + json.dumps(result), flush=True)
    SINK.target.close()
    SINK.target = None
    return 0


# --- The parent: own Redis, alternated rounds ------------------------------------------------------


def run_child(code: Path, name: str, mix: str, port: int, options: argparse.Namespace) -> dict[str, Any]:
    """One child run of ``mix`` with checkout ``code``; its result."""
    env = {**os.environ, "PYTHONPATH": str(code), "PYTHONHASHSEED": "0"}
    command = [
        str(HERE / ".venv" / "bin" / "python"),
        str(Path(__file__).resolve()),
        "--child",
        "--code-name",
        name,
        "--mix",
        mix,
        "--port",
        str(port),
        "--heartbeats",
        str(options.heartbeats),
        "--flush-every",
        str(options.flush_every),
        "--steady-accounts",
        str(options.steady_accounts),
        "--player-accounts",
        str(options.player_accounts),
        "--session-ttl",
        str(options.session_ttl),
        "--callgrind-pid",
        str(options.callgrind_pid),
        "--callgrind-dir",
        options.callgrind_dir,
    ]
    done = subprocess.run(command, cwd=code, env=env, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{name}/{mix} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


def start_under_callgrind(binary: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    """A redis-server under valgrind's callgrind, counting nothing until a child switches it on."""
    import tempfile

    from bench.slow_clients import free_port

    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="redis-time-callgrind-"))
    process = subprocess.Popen(
        [
            "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={workdir}/cg.out",
            binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
            "--dir", str(workdir), "--maxmemory-policy", "noeviction",
            # serverCron once a second, not ten times: its work is no heartbeat's, and under valgrind it is slow
            # enough to blur the counts.
            "--hz", "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    from redis import Redis

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if Redis(host="127.0.0.1", port=port).ping():
                return process, port, workdir
        time.sleep(0.2)
    process.kill()
    sys.exit("redis-server did not start under valgrind")


def parent(options: argparse.Namespace) -> int:
    """Start a Redis, run every (checkout, mix) in alternated rounds, print the medians."""
    sys.path.insert(0, str(HERE))
    from bench.machine import bench_lock, loadavg
    from devtools.with_redis import find_redis_server, start_redis

    codes = [spec.split("=", 1) for spec in options.code] or [["this", str(HERE)]]
    codes = [(name, Path(path).resolve()) for name, path in codes]
    mixes = options.mixes.split(",")
    binary = find_redis_server()
    if binary is None:
        sys.exit("no redis-server binary (install redis-server)")
    results: list[dict[str, Any]] = []
    with bench_lock():
        if options.callgrind:
            process, port, workdir = start_under_callgrind(binary)
        else:
            process, port, workdir = start_redis(binary)
        options.callgrind_pid = process.pid if options.callgrind else 0
        options.callgrind_dir = str(workdir)
        try:
            # Redis' own clock counts the time it was preempted too: ask for the CPU first when allowed.
            with contextlib.suppress(PermissionError):
                os.setpriority(os.PRIO_PROCESS, process.pid, -10)
            from redis import Redis

            version = Redis(host="127.0.0.1", port=port).info("server")["redis_version"]
            load_before = loadavg()
            for round_number in range(options.rounds):
                order = codes if round_number % 2 == 0 else codes[::-1]
                for mix in mixes:
                    for name, code in order:
                        say(f"round {round_number + 1}: {name} {mix}")
                        result = run_child(code, name, mix, port, options)
                        result["round"] = round_number + 1
                        results.append(result)
                        say(
                            f"  {result['redis_usec_per_admitted']} us per admitted heartbeat "
                            f"(requests {result['requests_usec_per_admitted']}, "
                            f"flush {result['flush_usec_per_admitted']}), "
                            f"{result['commands_per_admitted']} commands"
                        )
            load_after = loadavg()
        finally:
            process.terminate()
            process.wait(timeout=10)
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"redis-server {version} (own, loopback), {options.rounds} rounds, {options.heartbeats:,} heartbeats per run, "
        f"a batch every {options.flush_every}; load average {load_before} -> {load_after}"
    )
    print(
        f"{'mix':<8} {'code':<8} {'us/admitted':>11} {'requests':>9} {'flush':>7} {'cmds':>6} "
        f"{'EVALSHA us/call':>15}  rounds"
    )
    for mix in mixes:
        for name, _ in codes:
            rows = [r for r in results if r["mix"] == mix and r["code"] == name]
            instr = [r["redis_instructions_per_admitted"] for r in rows if r.get("redis_instructions_per_admitted")]
            cpu = statistics.median(r["redis_cpu_usec_per_admitted"] for r in rows)
            med = {
                k: statistics.median(r[k] for r in rows)
                for k in (
                    "redis_usec_per_admitted",
                    "requests_usec_per_admitted",
                    "flush_usec_per_admitted",
                    "commands_per_admitted",
                    "evalsha_usec_per_call",
                )
            }
            print(
                f"{mix:<8} {name:<8} {med['redis_usec_per_admitted']:>11.1f} {med['requests_usec_per_admitted']:>9.1f} "
                f"{med['flush_usec_per_admitted']:>7.1f} {med['commands_per_admitted']:>6.2f} "
                f"{med['evalsha_usec_per_call']:>15.1f}  {', '.join(str(r['redis_usec_per_admitted']) for r in rows)}"
                f"; Redis CPU {cpu:.1f} us" + (f"; {statistics.median(instr):,.0f} instructions" if instr else "")
            )
    for mix in mixes:
        for name, _ in codes:
            last = [r for r in results if r["mix"] == mix and r["code"] == name][-1]
            print(f"\n{mix} / {name}, last round, per admitted heartbeat (calls, usec; of which the flush):")
            for command, v in last["by_command"].items():
                print(
                    f"  {command:<18} {v['calls']:>7.3f} calls {v['usec']:>7.2f} us"
                    f"   flush {v['flush_calls']:>7.3f} calls {v['flush_usec']:>7.2f} us"
                )
    if options.json:
        Path(options.json).write_text(json.dumps({"redis": version, "results": results}, indent=1) + "\n")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", action="append", default=[], metavar="NAME=DIR", help="a checkout to measure")
    parser.add_argument("--mixes", default="steady,players")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--heartbeats", type=int, default=40_000)
    parser.add_argument("--flush-every", type=int, default=800)
    parser.add_argument("--steady-accounts", type=int, default=20_000)
    parser.add_argument("--player-accounts", type=int, default=50_000)
    parser.add_argument("--session-ttl", type=int, default=3600)
    parser.add_argument("--json", help="write every run's result here")
    parser.add_argument(
        "--callgrind", action="store_true", help="run Redis under callgrind: instructions per heartbeat, not noise"
    )
    parser.add_argument("--callgrind-pid", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--callgrind-dir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--code-name", default="this", help=argparse.SUPPRESS)
    parser.add_argument("--mix", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    return child(options) if options.child else parent(options)


if __name__ == "__main__":
    raise SystemExit(main())
