"""How many CPUs this process may really use: its affinity and its cgroup's CPU quota.

``os.cpu_count()`` is the host's cores. In a container limited to one CPU on
a 16-core host that would start 17 gunicorn workers competing for one CPU's
worth of time; the quota (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` over
``cpu.cfs_period_us``) and the CPU affinity (``taskset``, ``--cpuset-cpus``)
are what the scheduler enforces.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def available_cpus(cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """The CPUs this process may use: the smaller of its affinity and its cgroup quota, rounded up; at least 1."""
    cpus = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota(cgroup_root, proc_self_cgroup)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """The CPU quota (in CPUs) of this process's cgroup and its parents, the strictest; None when unlimited."""
    try:
        memberships = proc_self_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in memberships:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            # cgroup v2: one tree; "max 100000" is unlimited, "150000 100000" is 1.5 CPUs.
            for folder in _self_and_parents(cgroup_root, path):
                fields = _read(folder / "cpu.max").split()
                if len(fields) == 2:
                    quotas += _ratio(*fields)
        elif "cpu" in controllers.split(","):
            # cgroup v1: the cpu controller's tree (mounted as cpu, or cpu,cpuacct); -1 is unlimited.
            for mount in (controllers, "cpu", "cpu,cpuacct"):
                base = cgroup_root / mount
                if base.is_dir():
                    break
            for folder in _self_and_parents(base, path):
                quotas += _ratio(_read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us"))
    return min(quotas) if quotas else None


def _self_and_parents(base: Path, path: str) -> list[Path]:
    # Inside a container the cgroup namespace makes the path "/", so this is the base alone.
    parts = [part for part in path.split("/") if part and part != ".."]
    return [base.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def _ratio(quota: str, period: str) -> list[float]:
    # "max" (v2) and -1 (v1) mean unlimited; anything unreadable counts as no quota.
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return []
    return [quota_us / period_us] if quota_us > 0 and period_us > 0 else []


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except (OSError, ValueError):
        return ""
