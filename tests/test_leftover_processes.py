"""tests/leftover_processes.py: the end-of-run check finds what the run started and left running."""

from __future__ import annotations

import os
import subprocess
import sys

from tests import leftover_processes

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def test_a_child_still_running_is_found_and_one_that_ended_is_not() -> None:
    marker = os.environ[leftover_processes.RUN_MARKER]
    child = subprocess.Popen(SLEEPER)
    try:
        found = leftover_processes.started_by_this_run(marker)
        assert [p.pid for p in found if p.pid == child.pid] == [child.pid]
        assert [p.command for p in found if p.pid == child.pid] == [" ".join(SLEEPER)]
    finally:
        child.kill()
        child.wait(timeout=10)
    assert child.pid not in [p.pid for p in leftover_processes.started_by_this_run(marker)]


def test_an_orphan_whose_parent_exited_is_found_by_the_marker_in_its_environment() -> None:
    marker = os.environ[leftover_processes.RUN_MARKER]
    # The shell starts the sleeper in the background and exits: the sleeper is reparented away from pytest.
    shell = subprocess.run(
        ["bash", "-c", f"{' '.join(SLEEPER[:2])} '{SLEEPER[2]}' >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
    )
    orphan = int(shell.stdout)
    try:
        [found] = [p for p in leftover_processes.started_by_this_run(marker) if p.pid == orphan]
        # Not by descent: its parent is now init (or a subreaper), no longer anything under pytest.
        assert found.ppid != os.getpid() and found.command == " ".join(SLEEPER)
    finally:
        leftover_processes.kill([leftover_processes.LiveProcess(orphan, 0, "")])


def test_a_process_started_without_the_marker_and_outside_the_run_is_not_found() -> None:
    marker = os.environ[leftover_processes.RUN_MARKER]
    environment = {k: v for k, v in os.environ.items() if k != leftover_processes.RUN_MARKER}
    shell = subprocess.run(
        ["bash", "-c", f"{' '.join(SLEEPER[:2])} '{SLEEPER[2]}' >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
        env=environment,
    )
    stranger = int(shell.stdout)
    try:
        assert stranger not in [p.pid for p in leftover_processes.started_by_this_run(marker)]
    finally:
        leftover_processes.kill([leftover_processes.LiveProcess(stranger, 0, "")])
