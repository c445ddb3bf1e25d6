"""What machine a figure was measured on.

Speeds differ several-fold between machines of the same name, so every speed figure the tools
and the training card write carries the CPU model and core count beside it.
"""
from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    """The CPU's model name and core count, e.g. ``AMD EPYC, 2 cores``."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            name = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} cores"


def usable_cpus() -> int:
    """The CPUs this process may use: those it may run on (``taskset``, a Slurm allocation, a
    cpuset), capped by its cgroup's CPU quota (``docker --cpus``, systemd's ``CPUQuota``), as
    a whole number, at least 1. ``os.cpu_count`` is the machine's: on 4 cores of a 64-core node
    a batch started 64 tasks, each with its own model in memory."""
    cpus = len(os.sched_getaffinity(0))
    try:
        with open("/proc/self/cgroup") as fh:
            group = next(line.split("::", 1)[1].strip() for line in fh if line.startswith("0::"))
        with open(f"/sys/fs/cgroup{group.rstrip('/')}/cpu.max") as fh:
            quota, period = fh.read().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(quota) // int(period)))
    except (OSError, StopIteration, ValueError):  # cgroup v1, or no quota file: the affinity alone
        pass
    return cpus
