"""export_limits and import_limits: limit overrides out of Redis and back, on a real Redis."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from dashboard.limit_backups import BackupFormatError, LimitOverride, parse_lines
from dashboard.models import AuditRecord
from heartbeat.services import get_live_state, get_stream_manager
from tests.manage_runner import run_manage

pytestmark = pytest.mark.django_db

# Ids that stress the key layout: braces and % are escaped inside the hash tag.
ODD_IDS = ["plain", "brace{in}side", "100%", "%7B", "tv:living room", "zoë", "}{"]


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def set_overrides(limits: dict[str, int]) -> None:
    for user_id, limit in limits.items():
        get_stream_manager().set_limit_override(user_id, limit)


def overrides_now() -> dict[str, int]:
    return dict(get_live_state().limit_overrides())


def test_export_writes_every_override_as_json_lines() -> None:
    limits = {user_id: n + 1 for n, user_id in enumerate(ODD_IDS)}
    set_overrides(limits)
    get_stream_manager().admit("no-override", "movie", "s0")  # live, but on the default limit
    lines = run("export_limits").splitlines()
    assert [json.loads(line) for line in lines] == [
        {"userId": user_id, "limit": limits[user_id]} for user_id in sorted(limits)
    ]


def test_export_ignores_other_prefixes(redis_client, key_prefix) -> None:
    set_overrides({"alice": 5})
    redis_client.set(f"{key_prefix}-other:u:{{bob}}:limit", 9, ex=60)
    redis_client.set(f"{key_prefix}:u:{{carol}}:limit:copy", 9, ex=60)
    assert overrides_now() == {"alice": 5}


def test_export_to_a_file_and_import_into_an_empty_prefix_restores_them(tmp_path: Path, settings, redis_client) -> None:
    limits = {user_id: 50 - n for n, user_id in enumerate(ODD_IDS)}
    set_overrides(limits)
    backup = tmp_path / "limits.jsonl"
    assert f"Exported {len(limits)} limit override(s)" in run("export_limits", "--output", str(backup))

    settings.REDIS_KEY_PREFIX = settings.REDIS_KEY_PREFIX + "-restored"  # a fresh, empty Redis
    try:
        assert overrides_now() == {}
        out = run("import_limits", str(backup), "--operator", "restore")
        assert f"{len(limits)} override(s) set, 0 already" in out
        assert overrides_now() == limits
        assert get_live_state().get_limit("brace{in}side").limit == limits["brace{in}side"]
        # The dashboard's mirror of the overrides is written too (it counts users at their limit).
        mirror = redis_client.hgetall(get_stream_manager().keys.limit_overrides)
        assert {k.decode(): int(v) for k, v in mirror.items()} == limits
        records = AuditRecord.objects.filter(actor_name="cli:restore", action="set_limit")
        assert sorted(r.stream_user_id for r in records) == sorted(limits)
    finally:
        get_stream_manager().purge()


def test_import_twice_changes_nothing_the_second_time(tmp_path: Path) -> None:
    backup = tmp_path / "limits.jsonl"
    backup.write_text('{"userId": "alice", "limit": 7}\n{"userId": "bob", "limit": 2}\n')
    set_overrides({"bob": 2})
    assert "1 override(s) set, 1 already as in the file" in run("import_limits", str(backup))
    assert "0 override(s) set, 2 already as in the file" in run("import_limits", str(backup))
    assert overrides_now() == {"alice": 7, "bob": 2}
    assert AuditRecord.objects.count() == 1


def test_import_keeps_overrides_that_are_not_in_the_file(tmp_path: Path) -> None:
    set_overrides({"carol": 9})
    backup = tmp_path / "limits.jsonl"
    backup.write_text('{"userId": "alice", "limit": 7}\n')
    run("import_limits", str(backup))
    assert overrides_now() == {"alice": 7, "carol": 9}


def test_dry_run_says_what_would_change_and_writes_nothing(tmp_path: Path) -> None:
    backup = tmp_path / "limits.jsonl"
    backup.write_text('{"userId": "alice", "limit": 7}\n{"userId": "bob", "limit": 2}\n')
    set_overrides({"bob": 2})
    out = run("import_limits", str(backup), "--dry-run")
    assert "would set alice to 7" in out and "bob" not in out.split("Dry run")[0]
    assert "1 override(s) would be set, 1 already" in out
    assert overrides_now() == {"bob": 2} and AuditRecord.objects.count() == 0


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"userId": "alice", "limit": 7}\nnot json\n', "line 2: not JSON"),
        ('["alice", 7]\n', "line 1: expected an object"),
        ('{"userId": "alice"}\n', "line 1: expected exactly the fields userId and limit, got userId"),
        ('{"userId": "alice", "limit": 7, "x": 1}\n', "got limit, userId, x"),
        ('{"userId": "", "limit": 7}\n', "line 1: userId: Must not be empty."),
        ('{"userId": "a\\u0000b", "limit": 7}\n', "userId: Must not contain U+0000 (a control character)"),
        ('{"userId": 42, "limit": 7}\n', "userId: Must be a string."),
        ('{"userId": "alice", "limit": 0}\n', "limit: must be between 1 and 50, got 0"),
        ('{"userId": "alice", "limit": 51}\n', "got 51"),
        ('{"userId": "alice", "limit": "7"}\n', "limit: must be a whole number"),
        ('{"userId": "alice", "limit": 7.5}\n', "limit: must be a whole number"),
        ('{"userId": "alice", "limit": true}\n', "limit: must be a whole number"),
        ('{"userId": "a", "limit": 2}\n{"userId": "a", "limit": 3}\n', "line 2: 'a' already has limit 2 on line 1"),
    ],
)
def test_a_bad_line_refuses_the_whole_file(tmp_path: Path, content: str, reason: str) -> None:
    backup = tmp_path / "limits.jsonl"
    backup.write_text(content)
    with pytest.raises(CommandError, match="nothing was imported") as raised:
        call_command("import_limits", str(backup), stdout=io.StringIO())
    assert reason in str(raised.value)
    assert overrides_now() == {} and AuditRecord.objects.count() == 0


def test_parse_lines_reports_every_bad_line_and_accepts_blank_lines_and_repeats() -> None:
    with pytest.raises(BackupFormatError) as raised:
        parse_lines(["{}", "", "[]", '{"userId": "a", "limit": 99}'])
    assert [error.split(":")[0] for error in raised.value.errors] == ["line 1", "line 3", "line 4"]
    good = ['{"userId": "a", "limit": 2}', "", '{"userId": "a", "limit": 2}', '{"userId": "b", "limit": 3}']
    assert parse_lines(good) == [LimitOverride("a", 2), LimitOverride("b", 3)]


def test_import_of_a_missing_file_is_a_clear_error() -> None:
    with pytest.raises(CommandError, match=r"Cannot read /nonexistent/limits\.jsonl: No such file"):
        call_command("import_limits", "/nonexistent/limits.jsonl")


def test_export_to_an_unwritable_place_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    set_overrides({"alice": 5})
    with pytest.raises(CommandError, match="Cannot write"):
        call_command("export_limits", "--output", str(tmp_path / "missing-dir" / "limits.jsonl"))
    assert not list(tmp_path.iterdir())


def test_export_then_import_through_the_shell_with_stdin(key_prefix: str, tmp_path: Path) -> None:
    set_overrides({"alice": 5, "zoë": 6})
    env = {**os.environ, "REDIS_KEY_PREFIX": key_prefix, "DATABASE_URL": f"sqlite:///{tmp_path / 'audit.sqlite3'}"}
    run_manage(["migrate", "-v0"], env=env, check=True)
    exported = run_manage(["export_limits"], env=env)
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout == '{"userId": "alice", "limit": 5}\n{"userId": "zoë", "limit": 6}\n'
    assert "Exported 2 limit override(s)." in exported.stderr

    restored_env = {**env, "REDIS_KEY_PREFIX": key_prefix + "-restored"}
    try:
        imported = run_manage(["import_limits", "-", "--operator", "ops"], env=restored_env, input=exported.stdout)
        assert imported.returncode == 0, imported.stderr
        assert "Imported: 2 override(s) set, 0 already as in the file." in imported.stdout
    finally:
        run_manage(["purge", "--yes"], env=restored_env, check=True)


def test_import_of_a_bad_file_exits_non_zero_without_a_traceback(key_prefix: str, tmp_path: Path) -> None:
    backup = tmp_path / "limits.jsonl"
    backup.write_text('{"userId": "alice", "limit": 500}\n')
    result = run_manage(["import_limits", str(backup)], env={**os.environ, "REDIS_KEY_PREFIX": key_prefix})
    assert result.returncode == 1
    assert "line 1: limit: must be between 1 and 50, got 500" in result.stderr
    assert "Traceback" not in result.stderr


def test_commands_say_redis_is_down_in_one_line(settings, tmp_path: Path) -> None:
    caches = {**settings.CACHES}
    caches["default"] = {**caches["default"], "LOCATION": "redis://127.0.0.1:1/0"}
    settings.CACHES = caches
    with pytest.raises(CommandError, match="Redis is unreachable"):
        call_command("export_limits", stdout=io.StringIO())
    backup = tmp_path / "limits.jsonl"
    backup.write_text('{"userId": "alice", "limit": 5}\n')
    with pytest.raises(CommandError, match="Redis is unreachable"):
        call_command("import_limits", str(backup), stdout=io.StringIO())


@pytest.mark.parametrize("command", ["export_limits", "import_limits"])
def test_backup_commands_have_help(command: str) -> None:
    result = run_manage([command, "--help"])
    assert result.returncode == 0 and "usage:" in result.stdout
