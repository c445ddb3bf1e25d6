"""A stage's process, not the runner, is what the kernel kills when memory runs out.

Out of memory, the kernel killed the process it scored highest, the runner, the largest (it
holds the model for its preflight): exit 137 and not a line, the CSV cut short. Any
process may raise its own score, and each stage's does, so a stage is killed, and the runner
names it and keeps what was done.
"""
from __future__ import annotations

import os
from pathlib import Path

from .machine import cgroup_folders


RUNNER_BYTES = 256 << 20
"""What the runner is taken to hold at most (some 100 MB measured: the model and OpenCV, for
its preflight), which a stage's out-of-memory score is raised past."""


def oom_raise() -> int:
    """How far a stage raises its ``oom_score_adj``: the share of memory ``RUNNER_BYTES`` is,
    in the kernel's thousandths, and 50 more. A flat 500 made a stage the whole machine's first
    choice, ahead of any program under half its memory; this is some 60 on 24 GB,
    and the most in a container of under 256 MB."""
    memory = memory_bytes()
    return 1000 if memory is None else min(1000, -(-RUNNER_BYTES * 1000 // memory) + 50)


def memory_bytes(cgroups: Path = Path("/proc/self/cgroup"), mount: Path = Path("/sys/fs/cgroup")) -> int | None:
    """This process's memory: the machine's, or the least limit of its cgroup and the groups
    above it, where less (the OOM killer scores against the limit of the group that ran out):
    a systemd slice's ``MemoryMax=`` over its scopes, and a container's group, which cgroup v1
    shows it at the mount's root while ``/proc/self/cgroup`` names the host's path, were missed."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None
    for folder, v2 in cgroup_folders("memory", cgroups, mount):
        try:
            text = (folder / ("memory.max" if v2 else "memory.limit_in_bytes")).read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if text.isdigit():  # "max" is none
            memory = min(memory, int(text))
    return memory


def first_for_the_oom_killer() -> None:
    """Raises this process's ``oom_score_adj`` by ``oom_raise()`` (see the module)."""
    try:
        with open("/proc/self/oom_score_adj", "r+") as adj:
            raised = min(1000, int(adj.read()) + oom_raise())
            adj.seek(0)
            adj.write(str(raised))
    except (OSError, ValueError):  # not Linux, or a /proc that is read-only here
        pass


def oom_kills(cgroups: Path = Path("/proc/self/cgroup"), mount: Path = Path("/sys/fs/cgroup")) -> int | None:
    """How many processes the out-of-memory killer has ended: in this process's cgroup and those
    above it (``oom_kill`` of cgroup v2's ``memory.events``, which counts each group's whole
    subtree, or of v1's ``memory.oom_control``), the most any of them says, else on the whole
    machine (/proc/vmstat, which counts every container's); None where nothing says. The
    machine's count alone took another container's kill for a stage's."""
    counts = []
    for folder, v2 in cgroup_folders("memory", cgroups, mount):
        try:
            text = (folder / ("memory.events" if v2 else "memory.oom_control")).read_text(encoding="ascii")
        except OSError:
            continue
        counts += [int(line.split()[1]) for line in text.splitlines() if line.startswith("oom_kill ")]
    if counts:
        return max(counts)
    try:
        with open("/proc/vmstat", encoding="ascii") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("oom_kill "))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
