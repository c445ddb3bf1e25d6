"""Frame rings left in /dev/shm by a run that was killed, found and removed by the next run.

The runner unlinks its rings when its stages have ended, but a run killed with SIGKILL (a
service manager's stop timeout, the OOM killer) cannot, and /dev/shm is memory: every such
kill of a 1080p run would keep about a hundred MiB until the machine reboots. So each run holds
an exclusive ``flock`` on a lock file named after its run id for as long as it lives; the
kernel drops the lock when the runner dies, however it dies. A run starting later takes every
lock it can get: those rings' owner is gone, and they are removed with the lock file.

A lock, not the process id in the name, because a pid says nothing across the PID namespaces
of containers that share one /dev/shm, and pids are reused.
"""
from __future__ import annotations

import fcntl
import os
import re
import secrets
import stat
from pathlib import Path

from . import frames

PREFIX = "fp"
LOCK_SUFFIX = ".lock"
LOCK_NAME = re.compile(r"fp([0-9a-f]{6})\.lock")
"""A run's lock file: its run id is ``secrets.token_hex(3)``."""


class RingLease:
    """A run's id and the lock that marks its rings as in use; ``release`` at the run's end."""

    def __init__(self, shm: str = frames.SHM) -> None:
        self.run_id = secrets.token_hex(3)
        self._fd: int | None = None
        self._path = Path(shm, f"{PREFIX}{self.run_id}{LOCK_SUFFIX}")
        if not Path(shm).is_dir():
            return  # not Linux: SharedMemory keeps its segments elsewhere, and nothing to sweep
        # locked under a name no sweep looks at, then renamed: a sweep never meets it unlocked
        draft = self._path.with_name(f".{self._path.name}")
        self._fd = os.open(draft, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        os.rename(draft, self._path)

    def segment_prefix(self, stage: str) -> str:
        return f"{PREFIX}{self.run_id}_{stage}"

    def release(self) -> None:
        """End the lease, removing any ring of this run still there: one a source made but was
        killed before announcing, or every ring of a run whose stages never all started."""
        if self._fd is None:
            return
        _remove_rings(self._path.parent, self.run_id)
        self._path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


def sweep_abandoned(shm: str = frames.SHM) -> tuple[int, int]:
    """Remove the rings of every run whose lock nobody holds; returns (rings, bytes) removed."""
    rings = size = 0
    folder = Path(shm)
    if not folder.is_dir():
        return 0, 0
    for lock in folder.iterdir():
        named = LOCK_NAME.fullmatch(lock.name)  # a file any user made in /dev/shm, fp*.lock, is not a run's
        if named is None:
            continue
        try:  # not blocking: opening a FIFO planted under such a name waited for ever
            fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue  # its run ended or another sweep took it since the listing, or another user's
        try:
            found = os.fstat(fd)
            if not stat.S_ISREG(found.st_mode) or found.st_uid != os.geteuid():
                continue  # another user's run, or a file planted to make every run fail on it
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its run is alive
            removed, freed = _remove_rings(folder, named.group(1))
            rings, size = rings + removed, size + freed
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return rings, size


def _remove_rings(folder: Path, run: str) -> tuple[int, int]:
    rings = size = 0
    for segment in folder.glob(f"{PREFIX}{run}_*"):
        try:
            freed = segment.stat().st_size
            segment.unlink()  # what shm_unlink does on Linux
        except OSError:  # gone since the listing, or another user's
            continue
        rings, size = rings + 1, size + freed
    return rings, size
