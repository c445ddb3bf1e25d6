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
