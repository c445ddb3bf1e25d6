"""How a stage process takes the stop signals: SIGTERM stops it, wherever it is, through its
``close``; SIGINT and SIGHUP are the runner's, which drains the graph instead.

SIGTERM from the runner (or the process group's, from ``systemctl stop``) raises ``Terminated``
in the stage's main thread, so ``close`` still runs and files are flushed; a sink holds it
(``HOLD``) until the frame it is writing is whole. A stage whose runner died is stopped the same
way (``follow_parent``).
"""
from __future__ import annotations

import ctypes
import math
import multiprocessing as mp
import numbers
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from multiprocessing.connection import wait
from types import FrameType
from typing import Any

from .errors import ConfigError

PR_SET_PDEATHSIG = 1
RESEND_S = 0.5
"""How often a stop by SIGTERM is said again, to a stage that has not ended (see ``follow_parent``
and the runner)."""
GRACE_S = 3.0
"""How long a stage asked to stop has, beyond what its ``closing_s`` says its close needs, before
the runner kills it."""
ORPHAN_GRACE_S = 15.0
"""The same for a stage whose runner is gone, which then ends itself (``follow_parent``): longer,
as nobody waits on it but a caller's shell, and one ended at 3 s on a loaded machine (a CI run
beside two others) had not yet removed the run's rings and the API's folder, which its close
and its end do."""
DYING_S = 0.5
"""How long a spawned stage stopped by SIGTERM waits for its runner's process to finish dying
(``runner_gone``)."""


STILL_S = 5.0
"""A gap this long between two looks of a stall watch means it was not running either: the
machine or the VM was paused, or its clock jumped. The stall clocks restart, as at SIGCONT."""


def check_stall_timeout(value: object, where: str) -> None:
    """ConfigError unless ``value`` is seconds a stall timeout can be: "120" (from an environment
    variable) failed a run at its first stall check, -1 was taken for none, and NaN made every call
    a stall."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
        raise ConfigError(f"{where}: stall_timeout: expected seconds, a finite number of at least 0 (0: none), "
                          f"got {value!r}")


class Terminated(BaseException):
    """Raised in a stage process on SIGTERM: unwinds to ``close`` like an exception would."""


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
"""Blocked while the runner starts the stage processes, which inherit the mask: each unblocks
them once its own handlers are in, so a signal sent to the process group meanwhile neither kills
a half-started stage nor is lost."""


class _SigtermHold:
    """While held, a SIGTERM is noted and raised as ``Terminated`` when the hold ends: a sink
    writes and counts a frame whole or not at all.

    Not ``pthread_sigmask``, which blocks the signal in the calling thread only: the kernel then
    hands it to another thread of the process (numpy's, a queue's feeder), and Python runs the
    handler in the main thread at its next line anyway, inside the frame.
    """

    def __init__(self) -> None:
        self.active = False
        self.pending: int | None = None

    def __enter__(self) -> None:
        self.active = True

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self.active = False
        if self.pending is not None and kind is None:
            raise Terminated(self.pending)


HOLD = _SigtermHold()
_sigterm_seen = False
_sigterm_ignored = False
_spawned_by: int | None = None  # the runner's pid, for a stage it spawned (its parent) rather than forked
_runner_stopping: Callable[[], bool] = bool  # whether the runner has asked the stages to stop (see follow_parent)


def terminate(signum: int, frame: object) -> None:
    """The first SIGTERM stops the stage; later ones are ignored, so that reporting and closing
    are not cut short. They do come: a SIGTERM to the whole process group (``systemctl stop``)
    reaches the stage, and the runner, or ``follow_parent`` once the runner is gone, says it
    again every RESEND_S until the stage ends (a spawned stage also gets the kernel's
    parent-death signal)."""
    global _sigterm_seen
    if _sigterm_ignored:
        return
    ignore_sigterm()
    _sigterm_seen = True
    if HOLD.active:
        HOLD.pending = signum
        return
    raise Terminated(signum)


def ignore_sigterm() -> None:
    """From here on a SIGTERM does nothing. The handler stays and returns, rather than being
    replaced by SIG_IGN: CPython prints "Signal 15 ignored due to race condition" with a
    traceback when a SIGTERM that came while a Python handler was in place finds SIG_IGN by the
    time Python runs it (seen after the runner was killed, with two SIGTERMs)."""
    global _sigterm_ignored
    _sigterm_ignored = True


def follow_parent(closing_s: float, before_exit: Callable[[], None], stopping: Callable[[], bool]) -> None:
    """Be stopped as by a SIGTERM when the runner dies, even by SIGKILL or the OOM killer: a
    stage blocked on a queue would otherwise wait for ever, orphaned.

    A thread waits on the parent's sentinel, a pipe the runner holds open and so ready once it
    is gone, then signals the main thread (which unwinds through ``close``) until it stops, and
    ends the process (``before_exit`` first) after ``closing_s`` and ``ORPHAN_GRACE_S``, as the
    runner would have killed it: a
    close that never returns, or a ``Terminated`` raised just as a queue's lock was taken,
    which left it taken, and the process waited for it at exit for ever, ignoring SIGTERM and
    holding the caller's output open (once in 18 stops of an API script). A
    forked stage's parent is the forkserver, which lives as long as its children, so the pipe is
    its only way. A spawned stage's parent is the runner, and the kernel's parent-death signal
    also covers a runner whose process forked a child that holds the pipe too (a host's
    ``multiprocessing`` pool beside the Python API). ``stopping``: whether the runner has asked
    the stages to stop, as it does before each SIGTERM of its own (``runner_gone``).
    """
    global _spawned_by, _runner_stopping
    _runner_stopping = stopping
    parent = mp.parent_process()
    if parent is None:
        return
    if os.getppid() == parent.pid:
        _spawned_by = parent.pid
    if sys.platform.startswith("linux") and _spawned_by is not None:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent.pid:  # it died before prctl took effect: stop when unblocked
            signal.raise_signal(signal.SIGTERM)
    main = threading.main_thread().ident

    def watch() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # the group's signals are the main thread's
        wait([parent.sentinel])
        deadline = time.monotonic() + closing_s + ORPHAN_GRACE_S
        while time.monotonic() < deadline:  # again and again, as the runner sends them: CPython 3.11 can leave one unhandled
            signal.pthread_kill(main, signal.SIGTERM)
            time.sleep(RESEND_S)
        before_exit()
        os._exit(1)  # nobody is left to report to

    threading.Thread(target=watch, name="fer-pipe:follow-parent", daemon=True).start()


def runner_gone() -> bool:
    """Whether the runner that started this stage process has died: the pipe it held open is
    ready (see ``follow_parent``), or, for a stage it spawned, the stage has another parent now.
    A child that the host of the Python API forked during the run holds that pipe open too, and
    the killed host's rings stayed in /dev/shm.

    The parent-death signal comes as the thread that spawned the stage exits, which in a killed
    host is before its last thread has closed the pipe: a stage that closed quickly asked then,
    was told the host lived, and left its folder and rings (1 run in 20 of a SIGTERM to an API
    script). So a spawned stage stopped by a SIGTERM that its runner did not send (it asks the
    stages to stop first) waits a moment for its parent's exit; one the runner stopped does not,
    which made every failed API run end 0.8 s later."""
    parent = mp.parent_process()
    if parent is None:
        return False
    if _spawned_by is not None and _sigterm_seen and not _runner_stopping():
        wait([parent.sentinel], timeout=DYING_S)
    return not parent.is_alive() or (_spawned_by is not None and os.getppid() != _spawned_by)


def sigterm_seen() -> bool:
    """Whether a SIGTERM came: an error raised after it is the stop, not a failure (a library
    turns the ``Terminated`` raised inside it into its own error)."""
    return _sigterm_seen


@contextmanager
def handling(signals: Collection[int], handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """``handler`` on ``signals`` for a while, the handlers before put back after. Each is kept
    before it is replaced, inside the ``try``: a stop as one was installed left it installed for
    good (the collector's, which took every Ctrl-C after)."""
    previous: dict[int, Any] = {}
    try:
        for sig in signals:
            before = signal.getsignal(sig)
            if before is not None:  # one set from C cannot be put back: left as it is
                previous[sig] = before
                signal.signal(sig, handler)
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)


@contextmanager
def signals_held(signals: Collection[int]) -> Iterator[list[int]]:
    """Note ``signals`` while the block runs, rather than act on them, listing those that came
    for the caller to act on after. A handler that notes rather than a blocked signal: the
    kernel hands a signal blocked in this thread to another (TensorFlow's, Ray's), and Python
    then runs the handler here. An ignored signal stays so."""
    came: list[int] = []
    with handling([sig for sig in signals if signal.getsignal(sig) is not signal.SIG_IGN],  # None: handling's
                  lambda signum, _: came.append(signum)):
        yield came
