"""The processes below one, from /proc: the benchmarks sum their memory or CPU time, since a
run's stages (and Ray's workers) are its descendants, not only its children."""
from __future__ import annotations

import os


def process_tree(root: int) -> dict[int, list[str]]:
    """``root`` and every process below it, each with its ``/proc/PID/stat`` fields after the
    command name (``[0]`` is the state, ``[1]`` the parent, ``[11]`` and ``[12]`` user and system
    ticks); processes that end while it reads are left out."""
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", errors="replace") as fh:  # a name may be any bytes
                    stats[int(entry)] = fh.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, fields in stats.items():
            if int(fields[1]) == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    return {pid: stats[pid] for pid in tree if pid in stats}
