"""SIGHUP, the terminal closed (a shell that exits, an SSH session that drops, hands it to
its jobs): the run drains and closes as on Ctrl-C, exit 129, so the files it writes stay
whole. A write to a hung-up terminal fails with EIO, so the standard streams that were on it
are moved to /dev/null first: a progress bar or a warning then cannot cut the closing short.
Under ``nohup`` (SIGHUP ignored) nothing changes: the run goes on."""
from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Callable, Collection, Iterable
from multiprocessing import resource_tracker
from typing import Any, TextIO


def terminal_fds() -> tuple[int, ...]:
    """The standard streams on a terminal, asked before any hangup: after one, ``isatty`` is
    false, since the terminal answers no more ioctls."""
    return tuple(fd for fd in (0, 1, 2) if os.isatty(fd))


def to_devnull(fds: tuple[int, ...]) -> None:
    """Point ``fds`` at /dev/null: standard streams whose terminal or reader is gone, so that
    later writes, and the interpreter's last flush, cannot fail."""
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in fds:
            os.dup2(devnull, fd)
    finally:
        os.close(devnull)


GONE = frozenset({errno.EIO, errno.EPIPE, errno.ENOSPC, errno.EDQUOT})
"""A log's reader or room gone: a hung-up terminal (EIO), the reader of a pipe (``2>&1 | tee``
or a logger that died: EPIPE), a log file's full disk (ENOSPC, EDQUOT)."""


class GuardedStream:
    """A standard stream that can lose its reader while a run goes on: a write that fails for
    one of ``gone`` moves the stream to /dev/null, as a hangup does, and is dropped. A camera's
    reconnection notice, a skipped frame's line or a status line then cannot end an unattended
    run: a status line to a ``tee`` that had died killed every stage, unclosed, exit 0."""

    def __init__(self, stream: TextIO, gone: Collection[int] = GONE) -> None:
        self._stream, self._gone = stream, gone

    def write(self, text: str) -> int:
        self._guarded(self._stream.write, text)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._guarded(self._stream.flush)

    def _guarded(self, call: Callable[..., Any], *args: Any) -> None:
        try:
            call(*args)
        except OSError as exc:
            if exc.errno not in self._gone:
                raise
            to_devnull((self._stream.fileno(),))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def guard_standard_streams(ttys: tuple[int, ...], stdout_is_a_log: bool = False) -> None:
    """Wrap ``sys.stderr`` in a GuardedStream, and ``sys.stdout`` where it is on a terminal
    (``ttys``, asked with ``terminal_fds`` before any hangup), for a process that must outlive
    them. Standard output in a pipe is left to fail: ``fer-pipe stages | head`` ends there;
    unless it is a log (``train``'s progress), which is guarded as stderr is."""
    if not isinstance(sys.stderr, GuardedStream):
        sys.stderr = GuardedStream(sys.stderr)
    if (stdout_is_a_log or 1 in ttys) and not isinstance(sys.stdout, GuardedStream):
        sys.stdout = GuardedStream(sys.stdout, GONE if stdout_is_a_log else {errno.EIO})


def ignored() -> bool:
    """Whether SIGHUP is ignored, as ``nohup`` leaves it (and a child inherits)."""
    return signal.getsignal(signal.SIGHUP) == signal.SIG_IGN


def start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker (if it is not running) with SIGHUP ignored. It
    shares the run's process group and ignores SIGINT and SIGTERM, but a SIGHUP killed it: the
    stages that then told it of a shared-memory segment failed, and it left a traceback and
    "leaked" warnings. An ignored signal stays ignored across exec; a handler would not.
    Main thread only, as signal handlers are."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        resource_tracker.ensure_running()
    finally:
        signal.signal(signal.SIGHUP, previous)
