"""What machine a figure was measured on.

Speeds differ several-fold between machines of the same name, so every speed figure the tools
and the training card write carries the CPU model and core count beside it.
"""
from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from pathlib import Path, PurePosixPath


#: The widest vector instructions first: int8 inference runs about four times faster with
#: AVX-512 VNNI than with AVX2 alone on the same family of EPYC (the shipped model, README).
_VECTOR_UNITS = (("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"), ("avx512f", "AVX-512"),
                 ("avx2", "AVX2"))


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name, family and model numbers, core count and widest vector unit, e.g.
    ``AMD EPYC (family 25, model 1), 2 cores, AVX2``: one model name covers CPUs whose speeds at
    a figure differ fourfold."""
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo) as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if not key.strip():
                    break  # the first CPU's block ends; the others repeat it
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    flags = set(fields.get("flags", "").split())
    units = [shown for flag, shown in _VECTOR_UNITS if flag in flags][:1]
    return ", ".join([name, f"{os.cpu_count()} cores", *units])


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
