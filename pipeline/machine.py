"""What machine a figure was measured on.

Speeds differ several-fold between machines of the same name, so every speed figure the tools
and the training card write carries the CPU model and core count beside it.
"""
from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from pathlib import Path, PurePosixPath


def cpu_model() -> str:
    """The CPU's model name and core count, e.g. ``AMD EPYC, 2 cores``."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            name = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} cores"


def cgroup_folders(controller: str, cgroups: Path = Path("/proc/self/cgroup"),
                   mount: Path = Path("/sys/fs/cgroup")) -> Iterator[tuple[Path, bool]]:
    """The folders of this process's cgroup for ``controller`` and of each group above it up to
    the mount's root, each with whether it is cgroup v2's: a limit may be set on any of them (a
    systemd slice's over its scopes), and a container's group, on cgroup v1, shows at the
    mount's root while ``/proc/self/cgroup`` names the host's path. Nothing without cgroups."""
    try:
        lines = cgroups.read_text(encoding="utf-8").splitlines()
    except OSError:
        return
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one tree
            root, v2 = mount, True
        elif controller in controllers.split(","):
            root, v2 = mount / controller, False
        else:
            continue
        parts = PurePosixPath(path).parts[1:]
        for depth in range(len(parts) + 1):
            yield root.joinpath(*parts[:depth]), v2


def usable_cpus(cgroups: Path = Path("/proc/self/cgroup"), mount: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may use: those it may run on (``taskset``, a Slurm allocation, a
    cpuset), capped by the least CPU quota of its cgroup and those above it (``docker --cpus``,
    systemd's ``CPUQuota``, on cgroup v2 or v1), as a whole number, at least 1.
    ``os.cpu_count`` is the machine's: on 4 cores of a 64-core node a batch started 64 tasks,
    each with its own model in memory."""
    cpus = len(os.sched_getaffinity(0))
    for folder, v2 in cgroup_folders("cpu", cgroups, mount):
        try:
            if v2:
                quota, period = (folder / "cpu.max").read_text(encoding="utf-8").split()
            else:
                quota, period = ((folder / name).read_text(encoding="utf-8").strip()
                                 for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us"))
            if quota not in ("max", "-1"):  # none
                cpus = min(cpus, max(1, int(quota) // int(period)))
        except (OSError, ValueError):  # no quota file at this level
            continue
    return cpus
