"""The CPUs a container may use: its cgroup quota (v1 and v2) and CPU affinity (streamlimit/cpus.py).

The cgroup trees are built in a temporary folder, laid out as the kernel lays
them out; the machine's own affinity is changed with ``taskset`` in
tests/test_gunicorn_settings.py.
"""

from __future__ import annotations

import os
from pathlib import Path

from streamlimit.cpus import available_cpus, cgroup_cpu_quota

HOST_CPUS = len(os.sched_getaffinity(0))


def cgroup_tree(tmp_path: Path, membership: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A fake /sys/fs/cgroup with ``files`` and a fake /proc/self/cgroup with ``membership``."""
    root = tmp_path / "cgroup"
    for relative, content in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(content + "\n")
    root.mkdir(exist_ok=True)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(membership + "\n")
    return root, proc


def test_a_v2_container_with_one_and_a_half_cpus_may_use_two(tmp_path: Path) -> None:
    root, proc = cgroup_tree(tmp_path, "0::/", {"cpu.max": "150000 100000"})
    assert cgroup_cpu_quota(root, proc) == 1.5
    assert available_cpus(root, proc) == min(HOST_CPUS, 2)


def test_a_v2_container_with_half_a_cpu_gets_one(tmp_path: Path) -> None:
    root, proc = cgroup_tree(tmp_path, "0::/", {"cpu.max": "50000 100000"})
    assert available_cpus(root, proc) == 1


def test_an_unlimited_v2_cgroup_leaves_the_affinity(tmp_path: Path) -> None:
    root, proc = cgroup_tree(tmp_path, "0::/", {"cpu.max": "max 100000"})
    assert cgroup_cpu_quota(root, proc) is None
    assert available_cpus(root, proc) == HOST_CPUS


def test_a_quota_on_a_parent_v2_cgroup_applies(tmp_path: Path) -> None:
    root, proc = cgroup_tree(
        tmp_path,
        "0::/kubepods/pod-1/container-1",
        {
            "kubepods/cpu.max": "max 100000",
            "kubepods/pod-1/cpu.max": "100000 100000",
            "kubepods/pod-1/container-1/cpu.max": "max 100000",
        },
    )
    assert cgroup_cpu_quota(root, proc) == 1.0
    assert available_cpus(root, proc) == 1


def test_a_v1_cfs_quota_counts(tmp_path: Path) -> None:
    root, proc = cgroup_tree(
        tmp_path,
        "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc",
        {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "100000", "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000"},
    )
    assert cgroup_cpu_quota(root, proc) == 1.0
    assert available_cpus(root, proc) == 1


def test_a_v1_quota_of_minus_one_is_unlimited(tmp_path: Path) -> None:
    root, proc = cgroup_tree(tmp_path, "2:cpu:/", {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"})
    assert cgroup_cpu_quota(root, proc) is None
    assert available_cpus(root, proc) == HOST_CPUS


def test_unreadable_or_missing_cgroup_files_mean_no_quota(tmp_path: Path) -> None:
    root, proc = cgroup_tree(tmp_path, "0::/", {"cpu.max": "garbage"})
    assert cgroup_cpu_quota(root, proc) is None
    assert cgroup_cpu_quota(root, tmp_path / "no-such-file") is None
