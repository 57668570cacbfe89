"""manage.py policy validate / apply / show, on a real Redis (call_command, and once from the shell)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from heartbeat.services import get_policy_store
from tests.conftest import ROOT
from tests.test_policy import FAMILY

pytestmark = pytest.mark.django_db


def run(*args: str, stdin: str | None = None, monkeypatch: pytest.MonkeyPatch | None = None) -> str:
    out = io.StringIO()
    if stdin is not None and monkeypatch is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def family_file(tmp_path: Path) -> Path:
    path = tmp_path / "family.json"
    path.write_text(json.dumps(FAMILY, indent=2))
    return path


@pytest.fixture
def bad_file(tmp_path: Path) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"default": {"maxStreams": 0}, "plans": {"basic": {"maxStreams": 1, "screens": 2}}}))
    return path


def test_validate_names_the_plans_of_a_valid_file(family_file: Path) -> None:
    assert run("policy", "validate", str(family_file)) == "valid: default maxStreams 3; plans: basic, family\n"
    assert get_policy_store().current_version() == 0  # validate applies nothing


def test_validate_lists_every_error_with_its_path(bad_file: Path) -> None:
    with pytest.raises(CommandError) as raised:
        run("policy", "validate", str(bad_file))
    message = str(raised.value)
    assert message.splitlines() == [
        f"{bad_file} is not a valid policy (2 errors); fix every error listed",
        "  $.default.maxStreams: must be a whole number from 1 to 50",
        "  $.plans.basic.screens: unknown rule (expected one of maxStreams, devices, pools, weights, maxNetworks, "
        "networkRule)",
    ]


def test_validate_gives_the_line_and_column_of_a_json_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"default": {"maxStreams": 3},\n  "plans": {"basic": {"maxStreams": 1,}}}')
    with pytest.raises(CommandError, match=r"not valid JSON: .* at line 2, column 39"):
        run("policy", "validate", str(path))


def test_a_file_that_cannot_be_read_or_is_too_big_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"cannot read .*missing\.json: No such file or directory"):
        run("policy", "validate", str(tmp_path / "missing.json"))
    big = tmp_path / "big.json"
    big.write_text(json.dumps({**FAMILY, "description": "x" * 70_000}))
    with pytest.raises(CommandError, match="more than the 65,536 allowed"):
        run("policy", "validate", str(big))


def test_apply_stores_a_version_with_who_and_why_and_prints_it(family_file: Path, monkeypatch) -> None:
    monkeypatch.setenv("SUDO_USER", "alice")
    out = run("policy", "apply", str(family_file), "--reason", "family plan launch")
    assert out.startswith("applied version 1 (was none: the settings decided) as cli:alice;")
    record = get_policy_store().current()
    assert (record.version, record.applied_by, record.reason, record.document) == (
        1,
        "cli:alice",
        "family plan launch",
        FAMILY,
    )
    answer = json.loads(run("policy", "apply", str(family_file), "--by", "bob", "--json"))
    assert answer["version"] == 2 and answer["previousVersion"] == 1 and answer["appliedBy"] == "cli:bob"
    assert answer["reason"] == "" and answer["document"] == FAMILY


def test_apply_reads_stdin(monkeypatch) -> None:
    out = run("policy", "apply", "-", "--operator", "carol", stdin=json.dumps(FAMILY), monkeypatch=monkeypatch)
    assert "applied version 1" in out and get_policy_store().current().applied_by == "cli:carol"


def test_an_invalid_file_is_never_applied(family_file: Path, bad_file: Path) -> None:
    run("policy", "apply", str(family_file))
    with pytest.raises(CommandError, match=r"not a valid policy \(2 errors\); nothing was applied"):
        run("policy", "apply", str(bad_file))
    assert get_policy_store().current_version() == 1 and get_policy_store().load(2) is None


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--reason", "x\u202eevil"], "--reason: "),
        (["--reason", "r" * 201], "--reason: "),
        (["--by", ""], "--by: empty"),
        (["--by", "a\nb"], "--by: "),
    ],
)
def test_bad_free_text_applies_nothing(family_file: Path, flags: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run("policy", "apply", str(family_file), *flags)
    assert get_policy_store().current_version() == 0


def test_show_without_a_policy_says_the_settings_decide(settings) -> None:
    settings.MAX_CONCURRENT_STREAMS = 2
    settings.PLAN_LIMITS = {"premium": 5}
    out = run("policy", "show")
    assert out.splitlines()[0] == "no policy applied: MAX_CONCURRENT_STREAMS and PLAN_LIMITS decide"
    assert json.loads(out.split("\n", 1)[1]) == {"default": {"maxStreams": 2}, "plans": {"premium": {"maxStreams": 5}}}
    assert json.loads(run("policy", "show", "--json")) == {
        "version": 0,
        "applied": False,
        "document": {"default": {"maxStreams": 2}, "plans": {"premium": {"maxStreams": 5}}},
    }


def test_show_prints_the_version_in_force_or_an_earlier_one(family_file: Path, tmp_path: Path) -> None:
    run("policy", "apply", str(family_file), "--by", "alice", "--reason", "launch")
    second = tmp_path / "second.json"
    second.write_text('{"default": {"maxStreams": 2}}')
    run("policy", "apply", str(second), "--by", "bob")
    out = run("policy", "show")
    assert out.startswith("version 2, in force; applied ") and out.splitlines()[0].endswith(" by cli:bob")
    assert json.loads(out.split("\n", 1)[1]) == {"default": {"maxStreams": 2}}
    earlier = run("policy", "show", "--version", "1")
    assert earlier.splitlines()[0].startswith("version 1, not in force (version 2 is); applied ")
    assert earlier.splitlines()[0].endswith(" by cli:alice: launch")
    shown = json.loads(run("policy", "show", "--version", "1", "--json"))
    assert (shown["version"], shown["inForce"], shown["applied"], shown["document"]) == (1, False, True, FAMILY)
    with pytest.raises(CommandError, match=r"there is no version 3 \(versions 1 to 2\)"):
        run("policy", "show", "--version", "3")
    with pytest.raises(CommandError, match="versions start at 1"):
        run("policy", "show", "--version", "0")


def test_apply_logs_the_change_once(family_file: Path, json_log_lines) -> None:
    run("policy", "apply", str(family_file))
    assert [line["message"] for line in json_log_lines()].count("policy applied") == 1


def test_from_the_shell_errors_go_to_stderr_with_exit_one(bad_file: Path, key_prefix: str) -> None:
    env = {**os.environ, "REDIS_KEY_PREFIX": key_prefix}
    done = subprocess.run(
        [sys.executable, "manage.py", "policy", "validate", str(bad_file)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert "CommandError: " in done.stderr and "  $.default.maxStreams: must be a whole number" in done.stderr
    usage = subprocess.run(
        [sys.executable, "manage.py", "policy", "show", "--version", "x"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert usage.returncode == 2 and "CommandError: argument --version: invalid int value: 'x'" in usage.stderr


def test_with_redis_down_validate_still_works_and_apply_fails_cleanly(family_file: Path, settings) -> None:
    caches = {**settings.CACHES}
    caches["default"] = {**caches["default"], "LOCATION": "redis://127.0.0.1:1/0"}
    settings.CACHES = caches
    # validate reads only the file: it checks a document where Redis is out of reach.
    assert run("policy", "validate", str(family_file)).startswith("valid:")
    for args in (["apply", str(family_file)], ["show"]):
        with pytest.raises(CommandError, match="Redis is unreachable or failed"):
            run("policy", *args)
