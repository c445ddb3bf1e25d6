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
from collections.abc import Callable, Iterable
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


class TerminalStream:
    """A standard stream on a terminal that can go away with no SIGHUP reaching this process (a
    job the shell was told to ``disown``, its window then closed): a write that fails with EIO
    moves the stream to /dev/null, as a hangup does, and is dropped. A camera's reconnection
    notice or a skipped frame's line then cannot end an unattended run."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

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
            if exc.errno != errno.EIO:
                raise
            to_devnull((self._stream.fileno(),))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def guard_terminal_streams(ttys: tuple[int, ...]) -> None:
    """Wrap ``sys.stdout`` and ``sys.stderr`` in a TerminalStream where they are among ``ttys``
    (asked with ``terminal_fds`` before any hangup), for a process that must outlive its terminal."""
    for name, fd in (("stdout", 1), ("stderr", 2)):
        if fd in ttys and not isinstance(getattr(sys, name), TerminalStream):
            setattr(sys, name, TerminalStream(getattr(sys, name)))


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
