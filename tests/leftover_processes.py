"""Find the processes a test run started that are still alive, from /proc (Linux).

A process counts as the run's when it descends from the pytest process, or
when its environment carries the run's marker (``RUN_MARKER``): a child that
was orphaned (its parent killed) is reparented away from pytest but keeps the
environment it was started with. Processes started before the run (the
redis-server of ``devtools.with_redis``) have neither.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

RUN_MARKER = "STREAMLIMIT_TEST_RUN"
# Python's own helper of a process that used multiprocessing (a test that ran a load in a process of
# its own): it lives as long as the pytest process that started it, and ends with it.
INTERPRETER_HELPERS = ("from multiprocessing.resource_tracker import main",)
PROC = Path("/proc")


@dataclass(frozen=True)
class LiveProcess:
    """A live (not zombie) process: its pid, parent pid and command line."""

    pid: int
    ppid: int
    command: str


def mark_this_run() -> str:
    """Put a marker of this process' own in its environment, inherited by every child it starts; return it."""
    marker = f"{uuid.uuid4().hex}-{os.getpid()}"
    os.environ[RUN_MARKER] = marker
    return marker


def _live_processes() -> list[LiveProcess]:
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # it ended while we looked
            continue
        # The command name in parentheses may hold spaces: the fields after the last ")" are fixed.
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if state != "Z":
            found.append(LiveProcess(int(entry.name), int(ppid), command))
    return found


def _carries(pid: int, marker: str) -> bool:
    try:
        environ = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return False
    return f"{RUN_MARKER}={marker}".encode() in environ.split(b"\0")


def started_by_this_run(marker: str, root: int | None = None) -> list[LiveProcess]:
    """The live descendants of ``root`` (this process) and the live processes carrying ``marker``."""
    root = os.getpid() if root is None else root
    processes = _live_processes()
    children: dict[int, list[LiveProcess]] = {}
    for process in processes:
        children.setdefault(process.ppid, []).append(process)
    descendants: dict[int, LiveProcess] = {}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            descendants[child.pid] = child
            stack.append(child.pid)
    marked = {p.pid: p for p in processes if p.pid != root and p.pid not in descendants and _carries(p.pid, marker)}
    found = {**descendants, **marked}.values()
    return sorted((p for p in found if not any(h in p.command for h in INTERPRETER_HELPERS)), key=lambda p: p.pid)


def leftovers_after_grace(marker: str, grace_seconds: float = 10) -> list[LiveProcess]:
    """What ``started_by_this_run`` still finds after giving stopping processes ``grace_seconds`` to end."""
    deadline = time.monotonic() + grace_seconds
    while (left := started_by_this_run(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def kill(processes: list[LiveProcess]) -> None:
    """SIGKILL each (SIGCONT first, for a paused one), so that a failed run leaves nothing behind."""
    for process in processes:
        for signum in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(process.pid, signum)
            except ProcessLookupError:
                break
