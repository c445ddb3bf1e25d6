"""How the runner starts stage processes: spawned, or forked from a forkserver in the CLI.

A spawned stage process starts a fresh interpreter and imports numpy, OpenCV, pydantic and
fer-pipe: about 0.65 s of CPU, paid by every stage of every run (a 5-frame run of
``video_to_csv.yaml`` took 3.2 s, and 1.9 s with its stages forked: medians of five, README).
A process that is fer-pipe's own and runs one graph (the CLI) forks them instead from a
forkserver: a fresh interpreter too, that imports fer-pipe's modules and does nothing else (no
model, capture or camera), started by the run itself, so it has the run's environment, streams
and blocked stop signals, which the stages get from it as spawned ones would get them from the
runner.

Anywhere else (the Python API, in a host's process) the stages are spawned: the forkserver is
one per interpreter, so sharing it would give the host's forkserver processes fer-pipe's
blocked signals and a second run's stages the first run's environment.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
from multiprocessing import forkserver as server
from multiprocessing import resource_tracker
from multiprocessing.context import BaseContext

from .graph import Graph
from .stop_signals import STOP_SIGNALS


def server_pid() -> int | None:
    """The forkserver's process id, None before it starts. multiprocessing keeps it only on its
    one server object; the runner asks it to tell a dead server from a dead stage."""
    return getattr(server._forkserver, "_forkserver_pid", None)


def _most_fds_handed(graph: Graph) -> int:
    """The most file descriptors a stage process is handed at its start, with room to spare: two
    per queue it reads or writes, the control queue's two, the shared counters' arena and the
    server's own four. A forkserver refuses 256 (one source feeding two stages of 64 workers)."""
    workers = {name: len(spec.process_names()) for name, spec in graph.stages.items()}
    queues = max(sum(workers[i] for i in spec.inputs) + sum(workers[c] for c in graph.consumers(name))
                 for name, spec in graph.stages.items())
    return 2 * queues + 16


def context(graph: Graph, fork: bool) -> BaseContext:
    """The context that starts the graph's stage processes: with ``fork``, the forkserver's,
    started now; spawn without it, or where the server cannot start (its socket's path is
    longer than a Unix socket allows under a long TMPDIR, or there is no temporary folder) or
    cannot hand a stage all its queues."""
    if not fork or _most_fds_handed(graph) >= server.MAXFDS_TO_SEND:
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    # fer-pipe's own modules only: a plug-in's import runs in its stage's process, as when spawned
    ctx.set_forkserver_preload(["fer_pipe.worker", *sorted({s.cls.__module__ for s in graph.stages.values()
                                                             if s.cls.__module__.startswith("fer_pipe.")})])
    # The server's sys.path starts with the folder it starts in (it is a `python -c`), and a
    # csv.py there would stand in for the standard library's in every stage: it starts in /.
    # Its children go to the runner's working folder before they run.
    here = os.getcwd()
    resource_tracker.ensure_running()  # first: starting one unblocks SIGINT and SIGTERM
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # the server, and so the stages, keep it
    try:
        os.chdir("/")
        server.ensure_running()
    except OSError:
        return mp.get_context("spawn")
    finally:
        os.chdir(here)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    return ctx
