"""The ``fer-pipe`` command's entry point, which imports the command itself: a Ctrl-C in that
first tenth of a second was a KeyboardInterrupt traceback of 14 to 62 lines and exit 1,
where one in the rest of its loading exits 130 with nothing printed (``cli.main``)."""
from __future__ import annotations

import os
import signal
from types import FrameType


def main() -> int:
    if os.getpid() == 1 and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminated)
    try:
        from .cli import main as command
    except KeyboardInterrupt:
        return 130
    return command()


def _terminated(signum: int, frame: FrameType | None) -> None:
    """SIGTERM's default action, for a process that is PID 1 (a container's, without an init):
    the kernel gives such a process no signal left at its default, so a ``docker stop`` or pod
    deletion in the command's first half second, before it sets its own handlers, was dropped,
    and the run went on to its end, killed at the grace period's end without a drain."""
    raise SystemExit(128 + signum)
