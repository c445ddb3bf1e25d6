"""Output files: checked before a run starts, and written by one process at a time.

The graph check stops two stages of one config writing one file, but not two shards started
on one host with the same output path, nor a run started over a running one, whose truncation
would wipe what the first had written. A writer holds an exclusive ``flock`` on its file for as
long as it writes; the kernel drops it when the process ends, however it ends.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import select
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from .errors import UNUSABLE_PATH, InputError, OutputError, UserError


LOCK = ".fer-pipe.lock"
"""The file a batch locks in its results folder while it runs, and a training in its --out."""

STREAMS = {"/dev/stdout": 1, "/dev/stderr": 2}
DESCRIPTOR = re.compile(r"/(?:dev/fd|proc/self/fd)/(\d+)")
CLOSED_AT_START: set[int] = set()
"""The standard streams fer-pipe was started without (``>&-``), which the CLI gave /dev/null:
output meant for one of them would go nowhere."""


def descriptor_of(path: str | Path) -> int | None:
    """The descriptor of fer-pipe's own process that ``path`` names (/dev/stdout, /dev/fd/3),
    if it names one. Opened by name, such a path is opened anew in the stage's process: a
    stdout redirected to a file was emptied (every run but the last of a loop into one file was
    lost), and other descriptors are not passed to the stage processes at all."""
    name = os.path.normpath(str(path))
    named = DESCRIPTOR.fullmatch(name)
    return STREAMS.get(name, int(named.group(1)) if named else None)


def readers_gone(fds: Iterable[int]) -> tuple[int, ...]:
    """Those of ``fds`` that are a pipe or socket nobody reads now (POLLERR; POLLHUP for a
    socket: Node's child_process pipes, journald's): a broken pipe there is the reader having
    what it wanted (``| head``). A broken pipe anywhere else is a failure."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLOUT)
    return tuple(fd for fd, events in poller.poll(0) if events & (select.POLLERR | select.POLLHUP))


def make_folder(folder: Path, what: str) -> None:
    """Create ``folder`` (and its parents) or raise one line naming it: these are paths the user
    typed, so a file in the way or a read-only place is bad input, not a crash."""
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{what} {folder}: is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{what} {folder}: cannot create the folder ({exc.strerror})") from None


def cannot_write(what: str, path: str | Path, exc: OSError) -> UserError:
    """The one line for an output that cannot be written: bad input (exit 2) where the path
    cannot be used, a failed output (exit 1) where it could but the disk is full or failing,
    as a full disk mid-run is, so a wrapper that gives up on bad input retries it."""
    if exc.errno == errno.EISDIR:  # the words check_writable says it in (collect --csv FOLDER)
        return InputError(f"{what} {path}: is a folder, not a file")
    kind = InputError if exc.errno in UNUSABLE_PATH else OutputError
    return kind(f"{what} {path}: cannot write: {exc.strerror}")


DRAFT_NAME_BYTES = 255 - len(".12345678.tmp") - 1
"""The bytes of a file's name its draft's name holds: Linux's 255, less what the draft adds."""


def replace_whole(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: a new file renamed over the old, and no new file left
    where that fails (an OSError) or a stop comes. The new file's name is unguessable and it is
    made only where no file or link is (``x``): a fixed name beside a collector's CSV, in a folder
    another user could write, let them plant a link there that the write followed over any file
    the collector could write (s66b 4). Each process writes a temporary file of its own: two
    writing one path at once (two ``fer-pipe demo`` fetching the clips) each rename a whole file."""
    # as much of the name as fits beside the 14 bytes added: a name that worked before the draft's
    # random part came (a collector's CSV of 225 characters) must not fail for it (s66d 3); whole
    # UTF-8 characters only, which a file system that checks names takes (s66e 6)
    name = os.fsencode(path.name)[:DRAFT_NAME_BYTES].decode("utf-8", "ignore")
    temp = os.fspath(path.with_name(f".{name}.{secrets.token_hex(4)}.tmp"))
    try:
        with open(temp, "xb") as file:
            file.write(data)
        os.replace(temp, path)
    except BaseException:  # a stop too (a batch's Ctrl-C): its .tmp was left in the results folder
        with suppress(FileNotFoundError):  # os.unlink of a str, as check_writable's probe is removed
            os.unlink(temp)
        raise


def write_whole(path: Path, data: str | bytes, what: str) -> None:
    """``replace_whole``, text as UTF-8, where a failure is one line naming ``path`` (a write's
    own error names no file)."""
    try:
        replace_whole(path, data.encode() if isinstance(data, str) else data)
    except OSError as exc:
        raise cannot_write(what, path, exc) from None


@contextmanager
def held_folder(folder: Path, what: str, command: str) -> Iterator[None]:
    """Hold ``folder`` for this run of ``command`` alone, by an exclusive ``flock`` on its
    ``.fer-pipe.lock``: two batches into one results folder removed each other's work and
    temporary files, and the first to end marked the folder complete (two trainings replaced
    each other's checkpoints). A file, not the folder itself, so that the lock
    holds on NFS too, where a lock needs a descriptor open for writing. A file system without
    locks is written unguarded."""
    lock = folder / LOCK
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise cannot_write(what, lock, exc) from None
    try:
        claim(fd, lock, what, busy=f"{what} {folder}: another fer-pipe {command} is writing into it; wait for it to "
                                  "end, or give this one another folder")
        yield
    finally:
        os.close(fd)


def check_folder_of(path: Path, what: str) -> None:
    """InputError unless the folder ``path`` goes in is one: it may not exist, or be a file."""
    if not path.parent.is_dir():
        problem = "is a file, not a folder" if path.parent.exists() else "does not exist"
        raise InputError(f"{what} {path}: folder {path.parent} {problem}")


def check_writable(path: str | Path, what: str) -> None:
    """Try the file in the parent, so an unwritable or busy path fails before any stage starts
    (permission bits alone do not tell, e.g. for root or on a read-only mount).

    A FIFO or device is not opened: opening a FIFO would block with no reader, and closing it
    would give its reader an end of file before the stage wrote a line. A symbolic link is
    followed, so the probe removes the file it made, not the link."""
    fd = descriptor_of(path)
    if fd in (1, 2):  # written through the stage's own copy of the stream, as is (open_claimed)
        _refuse_closed(fd, path, what)
        try:
            os.fstat(fd)
        except OSError as exc:
            raise cannot_write(what, path, exc) from None
        return
    if fd is not None:
        raise InputError(f"{what} {path}: a descriptor of the shell's, which fer-pipe's stage processes do not "
                         "have; give a file, /dev/stdout, or a named pipe (mkfifo)")
    path = Path(path)
    check_folder_of(path, what)
    if path.is_dir():
        raise InputError(f"{what} {path}: is a folder, not a file")
    if path.exists() and not path.is_file():
        if not os.access(path, os.W_OK):
            raise InputError(f"{what} {path}: cannot write: Permission denied")
        return
    existed = path.exists()
    # a file made by the probe is removed where it was made: through a dangling link, at its
    # target (an existing file is opened as given, so /dev/stdout on a file stays that file)
    target = os.fspath(path) if existed else os.path.realpath(path)
    try:
        with open(target, "a", encoding="utf-8") as probe:
            claim(probe.fileno(), path, what)
    except OSError as exc:
        raise cannot_write(what, path, exc) from None
    finally:  # also where a stop cuts the probe short: its file was left, an empty video no player opens
        if not existed:
            # os.unlink of a str, as no Path.unlink: a stop runs at a Python call's first line,
            # and one landing in Path's before its unlink left the file (s60b 1)
            try:
                os.unlink(target)
            except FileNotFoundError:
                pass


def _refuse_closed(fd: int | None, path: str | Path, what: str) -> None:
    """A stream fer-pipe was started without takes nothing: the CLI put /dev/null there for its
    own lines, and the stage processes a read-only one ("Bad file descriptor" at the first row)."""
    if fd in CLOSED_AT_START:
        raise InputError(f"{what} {path}: fer-pipe was started with its {('stdout', 'stderr')[fd - 1]} closed "
                         f"({fd}>&-, as a daemon's may be), so the rows would go nowhere; give a file")


def open_claimed(path: str | Path, what: str, truncate: bool) -> int:
    """A write-only descriptor of ``path`` (created if need be, appending), locked for this
    process; InputError if it cannot be opened or another process holds it. ``truncate``
    empties a regular file only once it is ours, so another writer's data stays. /dev/stdout and
    /dev/stderr are the stage's own streams, the run's, written where the shell has got to in
    them and never emptied: `{ echo a; fer-pipe run ...; echo b; } > f` keeps all three, in
    order. A file behind them is locked as any output file is (runs sharing the one stream hold
    the lock together) and appended to, so a copytruncate of it starts it again."""
    stream = descriptor_of(path)
    _refuse_closed(stream, path, what)
    try:
        fd = os.dup(stream) if stream in (1, 2) else os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    except OSError as exc:
        raise cannot_write(what, path, exc) from None
    try:
        regular = claim(fd, path, what)
        if regular and stream in (1, 2):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
        elif regular and truncate:
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def claim(fd: int, path: str | Path, what: str, busy: str = "") -> bool:
    """Lock the open file ``fd`` for this process alone; whether it is a regular file (pipes
    and devices such as /dev/stdout are shared on purpose and are not locked). ``busy``: the
    line when another process holds it, if not the one for an output file."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise InputError(busy or f"{what} {path}: another process is writing it (a second run or shard "
                                 "with the same path?); give each its own file") from None
    except OSError:
        pass  # a file system without locks (some network mounts): written unguarded
    return True
