"""What native libraries (OpenCV, LiteRT) print on file descriptor 2, which Python's
``sys.stderr`` never sees: sent elsewhere for the length of one call, to be dropped or read."""
from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import BinaryIO


_SWAPPING = threading.RLock()
"""One swap of fd 2 at a time in a process: two threads of a host calling the API at once (each
run checks its model and cascade in the caller) each saved the other's /dev/null as the stderr
to restore, and the host's stderr stayed on /dev/null for good."""


@contextmanager
def stderr_to(fd: int) -> Iterator[None]:
    """File descriptor 2 points at ``fd`` for the duration, and back after, also on error. A
    host started with none (``2>&-``: ``sys.stderr`` is None) has nothing to point elsewhere:
    every check of a run failed there, said as the stage's own check failing (s64f 5)."""
    with _SWAPPING:
        if sys.stderr is not None:
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:
            saved = -1
        if saved < 0:
            yield
            return
        try:
            os.dup2(fd, 2)
            yield
        finally:
            try:
                os.dup2(saved, 2)
            finally:  # a stop as dup2 returned: the duplicate was left open, one a capture
                os.close(saved)


@contextmanager
def stderr_dropped() -> Iterator[None]:
    """File descriptor 2 goes nowhere for the duration: for a native library's lines that say
    nothing fer-pipe does not say itself (its errors still arrive as Python exceptions)."""
    with open(os.devnull, "wb") as null, stderr_to(null.fileno()):
        yield


@contextmanager
def output_shown_on_failure() -> Iterator[None]:
    """File descriptors 1 and 2 go to a scratch file for the duration, whose text is written to
    stderr only if the block raises: for a library that prints pages on every call that works
    (TensorFlow's converter: a "Saved artifact" listing of 90 tensors, its own warnings), and
    whose words matter only when it fails (raises: a native abort, such as TensorFlow's on a
    CPU it was not built for, ends the process with them unsaid; a Ctrl-C is no failure of its)."""
    with _memory_file() as scratch:
        try:
            with _output_to(scratch.fileno()):
                yield
        except Exception:
            scratch.seek(0)
            sys.stderr.write(scratch.read().decode("utf-8", "replace"))
            raise


@contextmanager
def _output_to(fd: int) -> Iterator[None]:
    """File descriptors 1 and 2 point at ``fd`` for the duration."""
    sys.stdout.flush()
    with stderr_to(fd):
        saved = os.dup(1)
        try:
            os.dup2(fd, 1)
            yield
        finally:
            try:
                try:
                    sys.stdout.flush()
                finally:  # a stop as the flush returned left fd 1 in the scratch file for good
                    os.dup2(saved, 1)
            finally:
                os.close(saved)


class StderrCapture:
    """Captures fd 2 during call after call into one scratch file, read and emptied by ``take``.

    OpenCV's video writer reports a failed write only as a warning printed there; capturing
    it per call is how a caller learns which call failed. Five system calls per capture. The
    file is in memory: in $TMPDIR, on the disk that a full disk filled, the warning of a write
    that failed for it could not be written either, and the run went on recording nothing.
    """

    def __init__(self) -> None:
        self._scratch = _memory_file()
        self._fd = self._scratch.fileno()

    def capturing(self) -> AbstractContextManager[None]:
        return stderr_to(self._fd)

    def take(self) -> bytes:
        """What was printed since the last ``take``."""
        said = os.pread(self._fd, os.fstat(self._fd).st_size, 0)
        if said:
            os.ftruncate(self._fd, 0)
            os.lseek(self._fd, 0, os.SEEK_SET)  # shared with the duplicate that was fd 2
        return said

    def close(self) -> None:
        self._scratch.close()


def _memory_file() -> BinaryIO:
    """A scratch file in memory (Linux's memfd), else an unnamed one in $TMPDIR."""
    if hasattr(os, "memfd_create"):
        return open(os.memfd_create("fer-pipe-stderr"), "w+b")
    return tempfile.TemporaryFile()
