"""bench/players (``make bench-players``) at a tiny scale against a live gunicorn: the result's shape and counts.

Speed is not checked here (benchmarks show it, in docs/developers/performance.md):
only that the tool sends what it says, that every request got the answer a
player would get, that its numbers add up, and that it writes its files.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

ACCOUNTS = 100  # about 210 sessions: the wheel turns more than once in the run, so churned sessions come back
SHARES = (0.5, 0.8, 1.0)
KINDS = ("repeat", "first", "stop", "refused")


def run_tool(server, redis_server, key_prefix: str, out) -> subprocess.CompletedProcess[str]:
    """The tool, as `make bench-players` runs it, but against the test's gunicorn and redis-server."""
    return subprocess.run(
        [
            sys.executable, "-m", "bench.players",
            "--url", server.url, "--redis-url", redis_server.url, "--key-prefix", key_prefix,
            "--server-pid", str(server.process.pid), "--own-redis", "--no-lock",
            "--accounts", str(ACCOUNTS), "--session-ttl", "600",
            # Many churned sessions, so that every kind of request is sent in a few seconds.
            "--churn-share", "0.05", "--refused-share", "0.1",
            "--connections", "8", "--capacity-connections", "4",
            "--warmup-seconds", "0.5", "--capacity-seconds", "2", "--level-seconds", "3", "--drain-seconds", "20",
            "--levels", ",".join(str(share) for share in SHARES),
            "--out", str(out),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def check_counts(entry: dict) -> None:
    """What one level sent, got back and failed adds up."""
    assert entry["errors"] == 0 and entry["unanswered"] == 0, entry
    assert entry["sent"] == entry["answered"] + entry["unanswered"] + entry["errors"]
    assert sum(entry["statuses"].values()) == entry["answered"]
    assert sum(kind["sent"] for kind in entry["by_kind"].values()) == entry["sent"]
    for name, kind in entry["by_kind"].items():
        # Every request got the answer a player would: repeats and first heartbeats 200, stops 204, refusals 400.
        assert kind["unexpected_answer"] == 0, (name, entry)
        assert kind["expected_answer"] == kind["sent"], (name, entry)
    by_kind = entry["by_kind"]
    assert entry["statuses"].get("200", 0) == by_kind["repeat"]["sent"] + by_kind["first"]["sent"]
    assert entry["statuses"].get("204", 0) == by_kind["stop"]["sent"]
    assert entry["statuses"].get("400", 0) == by_kind["refused"]["sent"]
    latency = entry["latency_ms"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["p99_9"] <= latency["max"]
    redis_cost = entry["cost"]["redis"]
    # One EVALSHA per heartbeat or stop, plus the workers' activity flushes (also scripts).
    assert redis_cost["evalsha_calls"] >= entry["answered"]
    assert redis_cost["evalsha_usec"] > 0 and redis_cost["usec_per_evalsha"] > 0
    assert redis_cost["commands_by_name_per_request"]["evalsha"] == round(
        redis_cost["evalsha_calls"] / entry["answered"], 3
    )
    assert redis_cost["commands_per_request"] > redis_cost["evalsha_per_request"]  # the scripts' own commands too
    assert entry["cost"]["gunicorn_cpu_ms_per_request"] > 0


def test_players_bench_at_a_tiny_scale(live_gunicorn, own_redis, key_prefix, tmp_path):
    redis_server = own_redis()
    server = live_gunicorn(workers=3, REDIS_URL=redis_server.url, SESSION_TTL_SECONDS="600")
    out = tmp_path / "players"

    done = run_tool(server, redis_server, key_prefix, out)

    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    population = result["population"]
    assert population["accounts"] == ACCOUNTS
    assert sum(population["accounts_by_sessions"].values()) == ACCOUNTS
    assert population["sessions"] == sum(int(n) * count for n, count in population["accounts_by_sessions"].items())
    assert population["seeded"]["sessions"] == population["seeded"]["new"] == population["sessions"]
    assert result["server"]["redis_stats"] == "own redis-server"

    capacity = result["capacity"]
    assert capacity["mode"] == "closed" and capacity["rps"] > 0
    check_counts(capacity)
    levels = result["levels"]
    assert [level["share_of_capacity"] for level in levels] == list(SHARES)
    for level in levels:
        assert level["mode"] == "open"
        check_counts(level)
        # Open loop: it sent what it offered (the rate, capped so that no account is heard twice in a second).
        assert level["sent"] == int(level["offered_rps"] * 3) or abs(level["sent"] - level["offered_rps"] * 3) <= 1
        assert level["offered_rps"] <= level["share_of_capacity"] * capacity["rps"] + 0.1
        assert level["min_seconds_between_requests_of_one_account"] >= 1 or not level["offered_rps"]
    sent = {kind: sum(level["by_kind"][kind]["sent"] for level in levels) for kind in KINDS}
    assert all(sent.values()), sent  # every kind of request was sent
    # A stopped session's successor is heard one turn of the wheel later: never more firsts than stops.
    assert sent["first"] <= sent["stop"] + capacity["by_kind"]["stop"]["sent"]
