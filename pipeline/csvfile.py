"""CSV outputs that keep what they wrote, and never end in half a row.

Sinks write through here so that a crash or a kill elsewhere in the pipeline never loses a row
already written, so that a full disk leaves a file every CSV reader takes, and so that a bad
output path fails the same way for every sink.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .errors import InputError


class CsvOutput:
    """A CSV file written a group of rows at a time (a frame's faces, an episode, an event).

    Each group goes out in one unbuffered write, so it is in the file as soon as ``write``
    returns. If the disk fills part-way through one, the file is cut back to the end of the
    group before and the error is raised: a reader never meets a half row or half a frame.
    """

    def __init__(self, path: str | Path, what: str, header: list[str], append: bool = False) -> None:
        """Open ``path``, writing ``header`` when the file is new; InputError if it cannot be.

        ``append`` continues a file already there, so a restarted collector (systemd, a
        container) keeps what it wrote before; a file with other columns is refused rather
        than mixed.
        """
        path = Path(path)
        if not path.parent.is_dir():
            raise InputError(f"{what} {path}: folder {path.parent} does not exist")
        if append and path.is_file() and path.stat().st_size:
            with open(path, newline="", encoding="utf-8") as existing:
                if next(csv.reader(existing), []) != header:
                    raise InputError(f"{what} {path}: exists with other columns; give a new file")
        try:
            self._file = open(path, "ab" if append else "wb", buffering=0)
        except OSError as exc:
            raise InputError(f"{what} {path}: cannot write: {exc.strerror}") from None
        self._end = self._file.seek(0, io.SEEK_END) if self._file.seekable() else 0  # a pipe: 0
        self._text = io.StringIO()
        self._writer = csv.writer(self._text)
        if not self._end:
            self.write([header])

    def write(self, rows: Iterable[Sequence[Any]]) -> None:
        self._text.seek(0)
        self._text.truncate()
        self._writer.writerows(rows)
        data = memoryview(self._text.getvalue().encode("utf-8"))
        written = 0
        try:
            while written < len(data):
                written += self._file.write(data[written:])
        except OSError:
            if self._file.seekable():
                self._file.truncate(self._end)
                self._file.seek(self._end)
            raise
        self._end += written

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> CsvOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
