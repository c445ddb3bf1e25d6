"""How the runner starts stage processes: forked from a forkserver that has fer-pipe loaded.

A spawned stage process starts a fresh interpreter and imports numpy, OpenCV, pydantic and
fer-pipe: about 0.65 s of CPU, paid by every stage of every run (a 5-frame run of a four-stage
graph spent 2.3 of its 3.3 s there). A forkserver is a fresh interpreter too, started once per
runner process with those modules imported and nothing else done (no model, no capture, no
thread pool in use), so no state leaks across the fork; its children start in milliseconds.

Two things a spawned process would get from the runner as they are at that moment come from the
forkserver's start instead, and ``Inherited`` hands them over: the environment and the standard
output and error. They differ when one process runs several graphs (the Python API in a
notebook, pytest capturing each test's output).
"""
from __future__ import annotations

import multiprocessing as mp
import os
from multiprocessing import reduction
from typing import Any

from .graph import Graph

STREAMS = (1, 2)


def context(graph: Graph) -> Any:
    """The forkserver context, with the runner's worker and the graph's stage modules to load
    when the forkserver starts (at the first run in this process; later runs import theirs)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["fer_pipe.worker", *sorted({s.cls.__module__ for s in graph.stages.values()})])
    return ctx


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


class Inherited:
    """The runner's environment and standard streams, made the stage process's by ``apply``.

    The streams travel as file descriptors while the process starts (``DupFd``), so this is
    pickled only by ``Process.start``.
    """

    def __init__(self) -> None:
        self.environ = dict(os.environ)
        self._fds: dict[int, int] = {}

    def __getstate__(self) -> dict:
        return {"environ": self.environ,
                "streams": {fd: reduction.DupFd(fd) for fd in STREAMS if _is_open(fd)}}

    def __setstate__(self, state: dict) -> None:
        self.environ = state["environ"]
        self._fds = {fd: dup.detach() for fd, dup in state["streams"].items()}

    def apply(self) -> None:
        if os.environ != self.environ:
            os.environ.clear()
            os.environ.update(self.environ)
        for target, fd in self._fds.items():
            os.dup2(fd, target)
            os.close(fd)
        self._fds = {}
