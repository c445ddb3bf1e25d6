"""CSV outputs that keep what they wrote, and never end in half a row.

Sinks write through here so that a crash or a kill elsewhere in the pipeline never loses a row
already written, so that a full disk leaves a file every CSV reader takes, so that a bad
output path fails the same way for every sink, and so that two runs never write one file
(``output_files``).
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import os
import stat
import sys
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from .errors import InputError, OutputError, printable
from .output_files import cannot_write, check_folder_of, descriptor_of, open_claimed


APPEND_HELP = ("continue the file, whose columns must match, instead of starting it anew: for a live run a "
               "supervisor restarts")
"""What ``append`` does, for the sinks that take it."""


LINE_END = b"\r\n"
"""How the csv module ends each row."""
TAIL_READ = 2**20
"""How far back from its end a file to continue is searched for its last line end."""
BINARY_PEEK = 4096
"""How much of a file a new CSV would replace is read to tell binary data (a NUL byte) from text."""


def _end_with_a_whole_line(fd: int, path: Path, what: str) -> None:
    """Make the file to be continued end with a whole record, so that the first new row is not
    glued to the end of the last: a run cut off by a power loss or a killed machine can leave a
    row in part, and a header written by hand may lack its line end (the rows then went on the
    header's line, exit 0). A part row is cut off, with a warning, and so is a whole last row
    that lacks its line end (an editor may drop it), as nothing tells it from a part row whose
    last field was cut; a lone header without its line end, or the end's last byte, gets it.

    A row's line end is one outside quotes: a source id or a file name may hold a line break,
    and a cut inside such a quoted field left it open, so every row after it was read as part of
    that field. The quotes are counted to tell: those of the last MiB, where no row is that long,
    and only where that holds one, the whole file's (0.4 s a GB on a 2-core Xeon, once per
    append), as a field may have opened before it. ``fd`` is the file's claimed descriptor, open
    for writing only."""
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode) or not status.st_size:
        return
    size = status.st_size
    tail, quotes = _tail_and_quotes(path, size)
    if quotes % 2 == 0 and tail.endswith(b"\n"):
        return
    if quotes % 2 == 0 and (tail.endswith(b"\r") or b"\n" not in tail and size <= TAIL_READ):
        os.write(fd, b"\n" if tail.endswith(b"\r") else LINE_END)  # a whole row or header, but for its line end
        return
    end = _last_record_end(tail, quotes)
    if end is None:
        raise InputError(f"{what} {path}: its last {TAIL_READ // 2**20} MiB hold no line end outside quotes, so "
                         "it is no CSV this can continue; give a new file")
    cut = size - len(tail) + end
    os.ftruncate(fd, cut)
    print(f"fer-pipe: WARNING: {what} {path}: its last row has no line end, so it is taken as cut short (a run "
          "stopped mid-row, or an editor that drops a file's last line end?): "
          f"{size - cut} bytes dropped before continuing it", file=sys.stderr)


def _tail_and_quotes(path: Path, size: int) -> tuple[bytes, int]:
    """The file's last MiB (of its first ``size`` bytes), and how many quote characters the file
    holds: those of the tail, and only where that holds one, the whole file's."""
    with open(path, "rb") as file:
        file.seek(max(0, size - TAIL_READ))
        tail = file.read(size - file.tell())
        quotes = tail.count(b'"')
        if quotes and size > len(tail):
            file.seek(0)
            quotes = sum(chunk.count(b'"') for chunk in iter(partial(file.read, TAIL_READ), b""))
    return tail, quotes


def _last_record_end(tail: bytes, quotes: int) -> int | None:
    """Where in ``tail``, the end of a file holding ``quotes`` quote characters, the last line
    end outside quotes is (just after it), or None."""
    end = len(tail)
    while (newline := tail.rfind(b"\n", 0, end)) >= 0:
        quotes -= tail.count(b'"', newline + 1, end)
        if quotes % 2 == 0:
            return newline + 1
        end = newline
    return None


def check_columns(path: str | Path, what: str, header: Sequence[str]) -> None:
    """InputError unless the file at ``path``, to be continued, is missing, empty or a CSV of
    ``header``'s columns: rows of other columns mixed into it are refused. Sinks call it in
    ``preflight`` too, through ``check_existing``, so that the line comes before any stage
    process starts."""
    path = Path(path)
    if not (path.is_file() and path.stat().st_size):
        return
    try:
        columns = _first_columns(path)
    except (UnicodeDecodeError, csv.Error) as exc:  # another program's file (Latin-1, UTF-16)
        raise InputError(f"{what} {path}: exists and is not a CSV this can continue ({exc}); "
                         "give a new file") from None
    if columns != list(header):
        raise InputError(f"{what} {path}: exists with other columns ({_column_change(columns, header)}); "
                         "give a new file")


def check_existing(path: str | Path, what: str, header: Sequence[str], append: bool) -> None:
    """InputError where the file at ``path`` is none a sink's CSV may continue (``append``) or
    replace; sinks call it in ``preflight``, so that the line comes before any stage starts."""
    if append:
        check_columns(path, what, header)
    else:
        _refuse_binary(path, what)


def _refuse_binary(path: str | Path, what: str) -> None:
    """InputError where the file at ``path``, to be replaced by a new CSV, holds binary data: a
    video given as the CSV's path by a slip (``csv.path=clip.mp4``, a tab-completed name) was
    replaced without a word, as an earlier run's CSV there is. A file whose first line is text
    is taken for an earlier CSV and replaced, also where a power loss left zeros after it (s62d
    5), and so is one of zeros alone; a NUL in the first line is binary (every video and image
    format has one)."""
    if descriptor_of(path) is not None or not Path(path).is_file():
        return
    try:
        with open(path, "rb") as file:
            head = file.read(BINARY_PEEK)
    except OSError:  # the open for writing says what is wrong
        return
    if head.strip(b"\0") and b"\0" in head.split(b"\n", 1)[0]:
        raise InputError(f"{what} {path}: exists and holds binary data (a video? an image?), which a new CSV would "
                         "replace; give another path, or remove the file first")


def _start_a_line(fd: int, path: Path, what: str) -> None:
    """End a last row left in part in a CSV the run's stdout continues, so that the first new row
    is not glued to it: its line end, after a closing quote where it was cut inside a quoted
    field (a source id holding a comma is quoted), or the ``\n`` of a ``\r\n`` cut between the
    two. Nothing is cut, as ``append`` cuts a file of its own: other runs may be
    writing the same stream, and a frame of theirs seen half-written here (one over a page) was
    cut under them. The row left in part stays, a record of its own."""
    size = os.fstat(fd).st_size
    if not size:
        return
    with open(path, "rb") as file:
        file.seek(size - 1)
        if file.read(1) == b"\n":  # a whole last row, as nearly every such file ends: its quotes, which
            return  # may take the whole file's reading (1.2 s for 1.5 GB), are not counted on every run
    tail, quotes = _tail_and_quotes(path, size)
    os.write(fd, b'"' + LINE_END if quotes % 2 else b"\n" if tail.endswith(b"\r") else LINE_END)
    print(f"fer-pipe: WARNING: {what} {path}: its last row has no line end (a run stopped mid-row?); the rows "
          "go on from a line of their own after it", file=sys.stderr)


def _first_columns(path: Path) -> list[str]:
    """The fields of the file's first line, its header, read alone: what follows may be a row
    left in part."""
    with open(path, "rb") as existing:
        first = existing.readline(TAIL_READ)
    return next(csv.reader([first.decode("utf-8-sig")]), [])  # Excel's "CSV UTF-8" starts with a BOM


def _column_change(columns: Sequence[str], header: Sequence[str]) -> str:
    """How a file's columns differ from a sink's, so the user can tell a forgotten ``extra``
    key from another program's file."""
    lacking = [c for c in header if c not in columns]
    besides = [c for c in columns if c not in header]
    said = ([f"it lacks {_some(lacking)}"] if lacking else []) + ([f"it has {_some(besides)} besides"] if besides else [])
    return "; ".join(said) or "the same ones in another order"


def _some(names: list[str]) -> str:
    """The first five names, quoted."""
    return ", ".join(map(repr, names[:5])) + (" and more" if len(names) > 5 else "")


def _gone(folder: Path) -> bool:
    """Whether ``folder`` was removed: a working folder removed under the run still stats as a
    folder, with no link left to it, and a relative path's "cannot write" passed for bad input."""
    try:
        return os.stat(folder).st_nlink == 0
    except OSError:
        return True


def _continued_stream(path: Path, what: str, header: Sequence[str]) -> bool:
    """Whether the run's own stdout (or stderr), a file the shell has begun, is a CSV with the
    sink's columns (a loop of runs into one file), whose last row a killed run may have left in
    part (``_start_a_line``). Any other lines are the shell's (`{ echo before; fer-pipe run ...;
    } > f`): the rows go on after them, with a warning where they are a CSV of other columns (an
    episodes CSV appended with `>>` to a frames CSV was mixed in, exit 0)."""
    if not (path.is_file() and path.stat().st_size):
        return False
    try:
        columns = _first_columns(path)
    except (UnicodeDecodeError, csv.Error):
        return False
    if columns == list(header):
        return True
    if len(columns) > 1:
        print(f"fer-pipe: WARNING: {what} {path}: the file the run's output goes on in is a CSV with other "
              f"columns ({_column_change(columns, header)}); its rows go on after them, mixed", file=sys.stderr)
    return False


def _remove_if_left_empty(path: Path) -> None:
    """Remove the empty file at ``path`` that an open cut short made, unless another run holds it
    (it made the file between this one's look and its open): taking its lock says which."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_size == 0 and os.path.samestat(os.fstat(fd), os.stat(path)):
            os.unlink(path)
    except OSError:  # held by another run, or gone
        pass
    finally:
        os.close(fd)


class CsvOutput:
    """A CSV file written a group of rows at a time (a frame's faces, an episode, an event).

    Each group goes out in one unbuffered write, so it is in the file as soon as ``write``
    returns. If the disk fills part-way through one, the file is cut back to the end of the
    group before and the error is raised: a reader never meets a half row or half a frame.
    The file is opened for appending (``O_APPEND``), so every group lands at its current end:
    logrotate's ``copytruncate`` can empty it under a run that lasts days, and the next group
    starts the file again, after the header, instead of landing behind a hole of zero bytes.
    When the file is moved away or deleted instead (logrotate's ``create`` mode, a tmp
    cleaner), the next group reopens the path, as ``logging.handlers.WatchedFileHandler`` does.
    """

    def __init__(self, path: str | Path, what: str, header: Sequence[str], append: bool = False) -> None:
        """Open ``path``, writing ``header`` when the file is new; InputError if it cannot be.

        ``append`` continues a file already there, so a restarted collector (systemd, a
        container) keeps what it wrote before; a file with other columns is refused rather
        than mixed.
        """
        path = Path(path)
        check_folder_of(path, what)
        continued = not append and descriptor_of(path) in (1, 2) and _continued_stream(path, what, header)
        if append:
            check_columns(path, what, header)
        created = not os.path.lexists(path)
        fd = -1
        try:
            fd = open_claimed(path, what, truncate=not append)
            self._opened(fd, path, what, header, append, continued)
        except BaseException as exc:  # the lock goes with the descriptor: the API, run_stage and a
            if getattr(self, "_file", None) is not None:  # Ray worker try again in the same process,
                self._file.close()  # and were refused
            elif fd >= 0:  # (a file object made as a stop landed was closed as it went)
                with contextlib.suppress(OSError):
                    os.close(fd)
            if created and not isinstance(exc, InputError):  # a stop before the header: no empty file left
                _remove_if_left_empty(path)
            raise

    def _opened(self, fd: int, path: Path, what: str, header: Sequence[str], append: bool, continued: bool) -> None:
        """The output's state once ``fd`` holds its file, and the header written where it is new."""
        if append:
            _end_with_a_whole_line(fd, path, what)
        elif continued:
            _start_a_line(fd, path, what)
        self._file = open(fd, "ab", buffering=0)
        self._path, self._what = path, what
        self._text = io.StringIO()
        self._writer = csv.writer(self._text)
        self._header = header
        self._pipe_started = False
        self._terminal = os.isatty(fd)
        try:
            self.write([])
        except BrokenPipeError:  # its reader left already (| head -n 0): the first frame's write stops the run,
            pass  # as a reader that leaves later does, where this failed it, exit 1
        except OSError as exc:  # a full disk, /dev/full: said with the file, as a failed open is
            raise cannot_write(what, path, exc) from None

    def _status(self) -> os.stat_result | None:
        """The open file's status, or None for a pipe. A file that was moved away or deleted
        is replaced first by a new one at the path: rows written on to it go where nobody looks."""
        if not self._file.seekable():
            return None
        mine = os.fstat(self._file.fileno())
        try:
            there = os.stat(self._path)
            if (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino):
                return mine
        except FileNotFoundError:
            pass
        try:
            fd = open_claimed(self._path, self._what, truncate=False)
        except InputError:
            if not _gone(self._path.parent):
                raise
            raise OutputError(f"{self._what} {self._path}: cannot write: its folder {self._path.parent} is gone "
                              "(removed, renamed or unmounted during the run); the rows before went with "
                              "it") from None
        self._file.close()
        self._file = open(fd, "ab", buffering=0)
        return os.fstat(fd)

    def write(self, rows: Iterable[Sequence[Any]]) -> None:
        status = self._status()
        self._text.seek(0)
        self._text.truncate()
        # the header goes first in a new or emptied file, or in the first write to a pipe
        headed = not (self._pipe_started if status is None else status.st_size)
        if headed:
            self._writer.writerow(self._header)
        if self._terminal:  # a network peer's source id, a file's name: their escape codes acted on the
            rows = [[printable(v) if isinstance(v, str) else v for v in row] for row in rows]  # terminal
        self._writer.writerows(rows)
        data = self._text.getvalue().encode("utf-8")
        self._put(data)
        if not headed and status is not None and os.fstat(self._file.fileno()).st_size == len(data):
            # emptied (logrotate's copytruncate) between the look at its size and the write: the
            # rows began the file with no header, and every restart that appends refused it
            self._file.truncate(0)
            self._text.seek(0)
            self._text.truncate()
            self._writer.writerow(self._header)
            self._put(self._text.getvalue().encode("utf-8") + data)
        self._pipe_started = True

    def _put(self, data: bytes) -> None:
        """``data`` at the file's end, whole or not at all where the file can be cut back."""
        written = 0
        view = memoryview(data)
        try:
            while written < len(data):
                written += self._file.write(view[written:])
        except OSError as exc:
            if written and self._file.seekable():  # a pipe cannot take back what it passed on
                self._file.truncate(os.fstat(self._file.fileno()).st_size - written)
            # a write's error names no file: a full disk's line named the sink and not which of
            # its outputs filled it (s62e 9); kept an OSError for those that catch one
            exc.filename = os.fspath(self._path)
            raise

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> CsvOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
