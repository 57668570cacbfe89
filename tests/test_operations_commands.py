"""Operator commands through call_command, on a real Redis."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from dashboard.models import AuditRecord
from heartbeat.services import get_live_state, get_stream_manager
from tests.conftest import ROOT
from tests.manage_runner import run_manage

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def play(user: str, sessions: int) -> None:
    for i in range(sessions):
        get_stream_manager().admit(user, f"movie-{i}", f"s{i}")
    # The listings read the shared activity keys, written by the activity flush.
    get_stream_manager().flush_activity()


def test_live_users_lists_users_and_sessions() -> None:
    play("alice", 2)
    play("bob", 1)
    out = run("live_users")
    assert "2 live users" in out and "\u2068alice\u2069  (2 of 3 sessions, limit from default)" in out
    assert "stream=\u2068movie-1\u2069" in out


def test_live_users_shows_device_names_and_limit_sources(settings) -> None:
    settings.PLAN_LIMITS = {"premium": 4}
    get_stream_manager().admit("alice", "movie", "tv", device_name="Living room TV", plan="premium")
    get_stream_manager().flush_activity()
    data = json.loads(run("live_users", "--json"))
    [alice] = data["users"]
    assert (alice["limit"], alice["limitSource"]) == (4, "plan")
    assert alice["sessions"][0]["deviceName"] == "Living room TV"
    assert "device=\u2068Living room TV\u2069" in run("live_users") and "limit from plan" in run("live_users")


def test_issue_token_prints_a_token_the_service_accepts(token_keys, settings) -> None:
    from heartbeat.limiter.tokens import PlaybackClaims
    from heartbeat.services import get_verifier

    token = run("issue_token", "alice", "--session", "tv", "--max-streams", "2", "--ttl", "60").strip()
    assert get_verifier().verify(token) == PlaybackClaims("alice", "tv", 2, None)
    token = run("issue_token", "alice", "--plan", "premium", "--kid", "k2").strip()
    assert get_verifier().verify(token) == PlaybackClaims("alice", None, None, "premium")
    import jwt

    assert jwt.get_unverified_header(token)["kid"] == "k2"
    settings.PLAYBACK_TOKEN_ISSUER = "https://auth.example"
    settings.PLAYBACK_TOKEN_AUDIENCE = "streamlimit"
    assert get_verifier().verify(run("issue_token", "alice").strip()).user_id == "alice"


@pytest.mark.parametrize(
    "args",
    [
        ("alice", "--kid", "nope"),
        ("alice", "--max-streams", "0"),
        ("alice", "--max-streams", "51"),
        ("alice", "--ttl", "0"),
        ("x" * 129,),
        ("alice", "--session", ""),
    ],
)
def test_issue_token_refuses_bad_input_with_a_message(token_keys, args: tuple[str, ...]) -> None:
    with pytest.raises(CommandError):
        call_command("issue_token", *args, stdout=io.StringIO())


def test_issue_token_needs_hs256_keys(settings) -> None:
    settings.PLAYBACK_TOKEN_KEYS = {}
    with pytest.raises(CommandError, match="PLAYBACK_TOKEN_KEYS"):
        call_command("issue_token", "alice", stdout=io.StringIO())


def test_live_users_json_is_for_scripts() -> None:
    play("alice", 2)
    data = json.loads(run("live_users", "--json", "--limit", "10"))
    assert data["liveUsers"] == 1
    [alice] = data["users"]
    assert alice["userId"] == "alice" and [s["sessionId"] for s in alice["sessions"]] == ["s0", "s1"]


def test_live_users_for_one_user() -> None:
    play("alice", 1)
    play("bob", 3)
    data = json.loads(run("live_users", "--user", "bob", "--json"))
    assert [u["userId"] for u in data["users"]] == ["bob"] and len(data["users"][0]["sessions"]) == 3


def test_evict_one_session_is_audited_with_the_operator() -> None:
    play("alice", 3)
    out = run("evict", "alice", "--session", "s1", "--operator", "oncall-ann")
    assert "Evicted session \u2068s1\u2069 of \u2068alice\u2069; its slot is free." in out
    assert [s.session_id for s in get_live_state().sessions("alice")] == ["s0", "s2"]
    record = AuditRecord.objects.get()
    assert (record.actor_name, record.action, record.session_id) == ("cli:oncall-ann", "evict_session", "s1")


def test_evict_all_sessions() -> None:
    play("alice", 3)
    assert "Evicted 3 session(s)" in run("evict", "alice", "--all")
    assert get_live_state().sessions("alice") == []
    assert AuditRecord.objects.get().action == "evict_all"


def test_evict_needs_a_target() -> None:
    with pytest.raises(CommandError):
        call_command("evict", "alice")


def test_set_and_clear_a_limit() -> None:
    assert "now 7 (override)" in run("set_limit", "alice", "7")
    assert get_live_state().get_limit("alice").override == 7
    assert "now 3 (default)" in run("set_limit", "alice", "--clear")
    assert [r.action for r in AuditRecord.objects.order_by("id")] == ["set_limit", "clear_limit"]


@pytest.mark.parametrize("args", [("alice", "0"), ("alice", "51"), ("alice",), ("alice", "5", "--clear")])
def test_bad_limits_are_refused_with_a_message(args: tuple[str, ...]) -> None:
    with pytest.raises(CommandError):
        call_command("set_limit", *args)
    assert get_live_state().get_limit("alice").override is None


def test_invalid_user_id_gives_a_message_not_a_traceback() -> None:
    with pytest.raises(CommandError, match="userId"):
        call_command("evict", "x" * 129, "--all")


def test_stats_counts_users_sessions_limits_and_memory(redis_client, key_prefix) -> None:
    play("alice", 3)
    play("bob", 1)
    data = json.loads(run("stats", "--json"))
    assert (data["liveUsers"], data["liveSessions"], data["usersAtLimit"]) == (2, 4, 1)
    # The keys under this test's prefix and their MEMORY USAGE, asked of Redis here, one by one.
    keys = list(redis_client.scan_iter(match=f"{key_prefix}:*"))
    assert (data["keys"], data["memoryBytes"]) == (len(keys), sum(redis_client.memory_usage(k) for k in keys))
    assert "users at limit:  1" in run("stats")


def test_check_service_reports_redis_and_loads_scripts(own_redis, use_redis) -> None:
    redis = own_redis()
    use_redis(redis.url)
    redis.client().script_flush()  # our own server: the shared one's scripts are never flushed
    out = run("check_service")
    assert "redis: ok (version" in out and "mode standalone" in out
    assert "scripts: loaded" in out and "database: ok" in out
    assert get_stream_manager().scripts_loaded()


def test_check_service_fails_with_a_reason_when_redis_is_down(settings) -> None:
    caches = {**settings.CACHES}
    caches["default"] = {**caches["default"], "LOCATION": "redis://127.0.0.1:1/0"}
    settings.CACHES = caches
    with pytest.raises(CommandError, match="not ready: Redis does not answer"):
        call_command("check_service", stdout=io.StringIO())


def test_purge_with_yes_deletes_only_this_prefix(redis_client, key_prefix) -> None:
    play("alice", 2)
    redis_client.set("someone-else:key", "1", ex=60)
    assert "Deleted" in run("purge", "--yes")
    assert list(redis_client.scan_iter(match=f"{key_prefix}:*")) == []
    assert redis_client.get("someone-else:key") == b"1"


def test_purge_without_yes_and_without_a_terminal_refuses() -> None:
    play("alice", 1)
    with pytest.raises(CommandError, match="--yes"):
        call_command("purge")
    assert len(get_live_state().sessions("alice")) == 1


def test_commands_exit_non_zero_with_a_plain_message_from_the_shell(key_prefix) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "set_limit", "alice", "99"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "REDIS_KEY_PREFIX": key_prefix},
    )
    assert result.returncode == 1
    assert "CommandError: The limit must be between 1 and 50." in result.stderr
    assert "Traceback" not in result.stderr


def test_commands_answer_on_stdout_and_log_on_stderr(key_prefix, tmp_path) -> None:
    env = {**os.environ, "REDIS_KEY_PREFIX": key_prefix, "DATABASE_URL": f"sqlite:///{tmp_path / 'audit.sqlite3'}"}
    run_manage(["migrate", "-v0"], env=env, check=True)
    # A plain `python manage.py`, as an operator starts it (the rest of the module forks them: run_manage).
    result = subprocess.run(
        [sys.executable, "manage.py", "set_limit", "alice", "5", "--operator", "ops"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert not [line for line in result.stdout.splitlines() if line.startswith("{")], result.stdout
    assert "alice" in result.stdout
    logged = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert [line["message"] for line in logged] == ["limit override set"]


@pytest.mark.parametrize("command", ["live_users", "evict", "set_limit", "stats", "check_service", "purge"])
def test_every_command_has_help(command: str) -> None:
    result = run_manage([command, "--help"])
    assert result.returncode == 0 and "usage:" in result.stdout


def test_fill_live_users_admits_simulated_users_and_lists_them_at_once() -> None:
    out = run("fill_live_users", "20", "--seed", "1", "--threads", "2")
    assert out.startswith("Admitted ") and "for 20 users" in out and "{" not in out
    listed = json.loads(run("live_users", "--json"))
    assert listed["liveUsers"] == 20
    assert sum(len(user["sessions"]) for user in listed["users"]) == int(out.split()[1])


def test_evicting_a_session_that_is_not_live_from_the_shell_says_so() -> None:
    play("alice", 1)
    assert "is not live: nothing was evicted and no cool-down was set" in run("evict", "alice", "--session", "gone")
    assert get_stream_manager().admit("alice", "movie", "gone").allowed


def test_ids_copied_from_the_output_with_their_isolates_are_accepted() -> None:
    play("alice", 2)
    out = run("evict", "\u2068alice\u2069", "--session", "\u2068s0\u2069")
    assert "its slot is free" in out
    assert [s.session_id for s in get_live_state().sessions("alice")] == ["s1"]


def test_evict_from_the_shell_keeps_the_reason() -> None:
    play("alice", 1)
    run("evict", "alice", "--session", "s0", "--reason", "fraud check")
    assert AuditRecord.objects.get().reason == "fraud check"


def test_evict_all_from_the_shell_can_block_and_unblock_new_sessions() -> None:
    play("alice", 1)
    assert "new sessions refused until" in run("evict", "alice", "--all", "--block-minutes", "30")
    assert get_live_state().blocked_until("alice") is not None
    assert "may start again" in run("evict", "alice", "--unblock")
    assert get_live_state().blocked_until("alice") is None
    with pytest.raises(CommandError, match="goes with --all"):
        run("evict", "alice", "--session", "s0", "--block-minutes", "5")


# --- Every command from the shell: one line on stderr and a non-zero exit when it fails ----------

# For each command: arguments it refuses, and the exit status (1: a CommandError; 2: a usage error).
BAD_INPUT = {
    "check_service": (["--bogus"], 2),
    "evict": (["alice", "--all", "--block-minutes", "99999"], 1),
    "export_events": (["--since", "yesterday"], 1),
    "export_limits": (["--output", "/nonexistent-folder/limits.jsonl"], 1),
    "fill_live_users": (["0"], 1),
    "import_limits": (["/nonexistent-folder/limits.jsonl"], 1),
    "issue_token": (["alice", "--ttl", "0"], 1),
    "live_users": (["--limit", "0"], 1),
    "live_users --limit x": (["--limit", "x"], 2),
    "purge": ([], 1),  # no --yes, and stdin is not a terminal
    "set_limit": (["alice", "99"], 1),
    "stats": (["--bogus"], 2),
}
# For each command: arguments it takes; with Redis stopped, every one that needs Redis must fail cleanly.
GOOD_INPUT = {
    "check_service": [],
    "evict": ["alice", "--all"],
    "export_events": ["--since", "1h"],
    "export_limits": [],
    "fill_live_users": ["2", "--threads", "1"],
    "import_limits": ["{backup}"],
    "live_users": [],
    "purge": ["--yes"],
    "set_limit": ["alice", "5"],
    "stats": [],
}


def manage(command: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """``manage.py <command> <args>`` as an operator runs it, in a process of its own, stdin not a terminal."""
    return run_manage([command.split()[0], *args], env={**os.environ, **env}, timeout=60)


def assert_one_line_error(result: subprocess.CompletedProcess, status: int) -> None:
    assert result.returncode == status, (result.returncode, result.stderr)
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("CommandError: ")


@pytest.mark.parametrize("command", sorted(BAD_INPUT))
def test_bad_input_is_one_error_line_and_a_non_zero_exit(command: str, key_prefix: str, token_env) -> None:
    args, status = BAD_INPUT[command]
    result = manage(command, args, {"REDIS_KEY_PREFIX": key_prefix, **token_env})
    assert_one_line_error(result, status)
    if status == 2:
        assert result.stderr.startswith("CommandError: unrecognized arguments: --bogus (see manage.py ") or (
            result.stderr.startswith("CommandError: argument --limit: invalid int value: 'x'")
        )


@pytest.mark.parametrize("command", sorted(GOOD_INPUT))
def test_with_redis_down_every_command_fails_with_one_line(command: str, own_redis, key_prefix, tmp_path) -> None:
    redis = own_redis()
    redis.stop()
    backup = tmp_path / "limits.jsonl"
    backup.write_text('{"userId": "alice", "limit": 4}\n')
    args = [arg.format(backup=backup) for arg in GOOD_INPUT[command]]
    result = manage(command, args, {"REDIS_URL": redis.url, "REDIS_KEY_PREFIX": key_prefix})
    assert_one_line_error(result, 1)
    assert "Redis" in result.stderr


def test_issue_token_needs_no_redis(own_redis, token_env) -> None:
    redis = own_redis()
    redis.stop()
    result = manage("issue_token", ["alice", "--json"], {"REDIS_URL": redis.url, **token_env})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["kid"] == "k1"


# --- --json on every command that prints data --------------------------------------------------


def test_set_limit_and_evict_answer_json() -> None:
    assert json.loads(run("set_limit", "alice", "4", "--json")) == {"userId": "alice", "limit": 4, "source": "override"}
    play("alice", 2)
    assert json.loads(run("evict", "alice", "--session", "s0", "--json")) == {"userId": "alice", "evicted": ["s0"]}
    assert json.loads(run("evict", "alice", "--session", "gone", "--json")) == {"userId": "alice", "evicted": []}
    data = json.loads(run("evict", "alice", "--all", "--block-minutes", "5", "--json"))
    assert data["evicted"] == ["s1"] and data["blockedUntil"].endswith("+00:00")
    assert json.loads(run("evict", "alice", "--unblock", "--json")) == {"userId": "alice", "unblocked": True}


def test_check_service_answers_json(own_redis, use_redis) -> None:
    redis = own_redis()
    use_redis(redis.url)
    data = json.loads(run("check_service", "--json"))
    assert data["status"] == "ready" and data["redis"]["mode"] == "standalone"
    assert data["maxmemoryPolicy"] == "noeviction" and data["database"] == "sqlite"


def test_purge_fill_and_import_answer_json(tmp_path, key_prefix) -> None:
    filled = json.loads(run("fill_live_users", "3", "--seed", "1", "--threads", "1", "--json"))
    listed = json.loads(run("live_users", "--json"))["users"]
    assert filled["users"] == 3 and filled["admitted"] == sum(len(user["sessions"]) for user in listed)
    backup = tmp_path / "limits.jsonl"
    backup.write_text('{"userId": "alice", "limit": 4}\n{"userId": "bob", "limit": 2}\n')
    run("set_limit", "bob", "2")
    assert json.loads(run("import_limits", str(backup), "--dry-run", "--json")) == {
        "dryRun": True,
        "set": [{"userId": "alice", "limit": 4}],
        "unchanged": 1,
    }
    assert get_live_state().get_limit("alice").override is None
    assert json.loads(run("import_limits", str(backup), "--json"))["set"] == [{"userId": "alice", "limit": 4}]
    assert get_live_state().get_limit("alice").override == 4
    purged = json.loads(run("purge", "--yes", "--json"))
    assert purged["keyPrefix"] == key_prefix and purged["deleted"] > 0


def test_existing_json_output_is_unchanged() -> None:
    # stats and live_users had --json before the commands shared one base: byte for byte as then.
    play("alice", 1)
    stats = run("stats", "--json")
    assert stats.startswith('{"liveUsers": 1, "liveSessions": 1, ') and stats.endswith("}\n")
    listed = run("live_users", "--json")
    assert listed.startswith('{\n  "liveUsers": 1,\n  "users": [\n    {\n      "userId": "alice",')


def test_with_debug_logs_stdout_is_the_json_answer_alone(key_prefix) -> None:
    # LOG_LEVEL=DEBUG lets the libraries' stdlib loggers speak too (redis-py's among them):
    # all of it goes to stderr, so that a script can read stdout as one JSON document.
    result = manage("stats", ["--json"], {"REDIS_KEY_PREFIX": key_prefix, "LOG_LEVEL": "DEBUG"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["keyPrefix"] == key_prefix
    assert all(json.loads(line) for line in result.stderr.splitlines())
