"""Frame rings left in /dev/shm by a run that was killed, found and removed by the next run.

The runner unlinks its rings when its stages have ended, but a runner killed with SIGKILL (a
service manager's stop timeout, the OOM killer) cannot. Its stages, which see it go, remove
them (``remove_orphaned``); where none could (the whole process group killed), /dev/shm, which
is memory, would keep about a hundred MiB per 1080p run until the machine reboots. So each run holds
an exclusive ``flock`` on a lock file named after its run id for as long as it lives; the
kernel drops the lock when the runner dies, however it dies. A run starting later takes every
lock it can get: those rings' owner is gone, and they are removed with the lock file.

The runner and each of its stage processes hold the lock shared; a sweep takes it whole or
not at all. Held by the runner alone, a run restarted at once after a SIGKILL of its runner
(``Restart=always``) removed the semaphores of the old run's stages while they still drained,
and the resource tracker that outlived them said "No such file or directory" for each, 55
lines of warnings in the old run's log.

A lock, not the process id in the name, because a pid says nothing across the PID namespaces
of containers that share one /dev/shm, and pids are reused.

The run's queues leave their POSIX semaphores there too (``sem.*``, a page of memory each, three
a queue: 12 for four stages of one process each): Python's resource tracker unlinks them when the runner dies alone, but it dies
with the group. ``semaphores_named`` names them after the run, so the same sweep removes them;
a service in a crash loop under Docker's 64 MiB /dev/shm would otherwise fill it.
"""
from __future__ import annotations

import fcntl
import hashlib
import multiprocessing
import os
import re
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import frames

PREFIX = "fp"
LOCK_SUFFIX = ".lock"
LOCK_NAME = re.compile(r"fp([0-9a-f]{6})\.lock")
"""A run's lock file: its run id is ``secrets.token_hex(3)``."""
SEMAPHORE_INFIX = "_sem"
"""After the run id in its semaphores' names."""
SEMAPHORES = "/dev/shm"
"""Where Linux keeps a semaphore ``/NAME``, as sem.NAME, whatever folder the rings are in."""


class RingLease:
    """A run's id and the lock that marks its rings as in use; ``release`` at the run's end."""

    def __init__(self, shm: str = frames.SHM) -> None:
        self.run_id = secrets.token_hex(3)
        self._fd: int | None = None
        self._path = Path(shm, f"{PREFIX}{self.run_id}{LOCK_SUFFIX}")
        if not Path(shm).is_dir():
            return  # no /dev/shm, so no frame ring either (frames.FrameRing fails on its first frame)
        # locked under a name no sweep looks at, then renamed: a sweep never meets it unlocked
        draft = os.fspath(self._path.with_name(f".{self._path.name}"))
        fd = -1
        try:
            fd = os.open(draft, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_SH)
            os.rename(draft, self._path)
        except BaseException:  # a Ctrl-C too: the draft, which no sweep removes, stayed in /dev/shm (s60b 5)
            for name in (draft, self._path):
                try:
                    os.unlink(name)
                except FileNotFoundError:
                    pass
            if fd >= 0:
                os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """End the lease, removing every ring of this run: the runner calls it once every stage
        process has ended, so none can read a frame any more."""
        if self._fd is None:
            return
        _remove_rings(self._path.parent, self.run_id)
        self._path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


_held: list[int] = []
"""This stage process's descriptor of its run's lock, open until it exits, when the kernel
drops the lock."""


def hold(run: str, shm: str = frames.SHM) -> None:
    """Hold run ``run``'s lock, shared with its runner and its other stages, for the rest of
    this process. Where it cannot be (no /dev/shm, or the runner gone and its lock swept
    already), the stage runs without, as its rings are then gone too."""
    try:
        fd = os.open(Path(shm, f"{PREFIX}{run}{LOCK_SUFFIX}"), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a sweep holds it only while it removes the run's files
    except OSError:
        os.close(fd)
        return
    _held.append(fd)


def sweep_abandoned(shm: str = frames.SHM, semaphores: str = SEMAPHORES) -> tuple[int, int]:
    """Remove the rings of every run whose lock nobody holds in ``shm``, and those runs'
    semaphores; returns (rings, bytes) removed."""
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
                continue  # its runner or one of its stages is alive
            removed, freed = _remove_rings(folder, named.group(1))
            _unlink_all(Path(semaphores), f"sem.{PREFIX}{named.group(1)}{SEMAPHORE_INFIX}-*")  # the run is gone
            rings, size = rings + removed, size + freed
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return rings, size


@contextmanager
def semaphores_named(run: str) -> Iterator[None]:
    """Name the semaphores made in the block (a run's queues and events) after ``run``, which
    ``sweep_abandoned`` finds by. multiprocessing takes their names' prefix from the process's
    ``_config["semprefix"]`` ("/mp" by default), private but read the same way since Python 3.4;
    where it is missing, the names stay as they were and only the sweep of them is lost."""
    config = getattr(multiprocessing.current_process(), "_config", None)
    if not isinstance(config, dict) or "semprefix" not in config:
        yield
        return
    before, config["semprefix"] = config["semprefix"], f"/{PREFIX}{run}{SEMAPHORE_INFIX}"
    try:
        yield
    finally:
        config["semprefix"] = before


STAGE_NAME_BYTES = 64
"""Of a stage's name in its rings' names; a longer one is given as a digest of it."""


def segment_prefix(run: str, stage: str) -> str:
    """The start of the names of a run's rings made by one of its stages. A file name is 255
    bytes at most, and a source named with 123 accented letters passed validate, then failed its
    run once every stage had started, "File name too long"; one named ``Kamera_東口``
    failed under a Latin-1 locale, whose file names cannot hold it."""
    if len(stage.encode()) > STAGE_NAME_BYTES or not stage.isascii():
        stage = hashlib.sha256(stage.encode()).hexdigest()[:16]
    return f"{PREFIX}{run}_{stage}"


def remove_orphaned(run: str) -> None:
    """Remove a run's rings from a stage process whose runner has died (SIGKILL, the OOM killer):
    every stage is stopping, so none will map a ring it has not mapped yet, and /dev/shm, which
    is memory, would otherwise keep them until the same user runs again. Any stage does it,
    not only the source, which may have read its whole file and ended before the runner died."""
    _remove_rings(Path(frames.SHM), run)


def _remove_rings(folder: Path, run: str) -> tuple[int, int]:
    """Unlink a run's rings; how many rings (a file per slot: ``PREFIX<run>_<stage>_<slot>_<token>``)
    and their bytes."""
    removed, size = _unlink_all(folder, f"{PREFIX}{run}_*")
    return len({name.rsplit("_", 2)[0] for name in removed}), size


def _unlink_all(folder: Path, pattern: str) -> tuple[list[str], int]:
    """Unlink the files matching ``pattern``, as shm_unlink and sem_unlink do on Linux; their
    names and bytes."""
    removed, size = [], 0
    for found in folder.glob(pattern):
        try:
            freed = found.stat().st_size
            found.unlink()
        except OSError:  # gone since the listing, or another user's
            continue
        removed.append(found.name)
        size += freed
    return removed, size
