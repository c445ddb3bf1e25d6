"""CSV outputs that keep what they wrote: every row is flushed as its line ends.

Sinks write through here so that a crash or a kill elsewhere in the pipeline never loses a
row already written, and so that a bad output path fails the same way for every sink.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import IO, Any

from .errors import InputError


def open_csv(path: str | Path, what: str, header: list[str], append: bool = False) -> tuple[IO[str], Any]:
    """A line-buffered file and a ``csv.writer`` on it, the header written when the file is new;
    InputError if not.

    ``append`` continues a file already there, so a restarted collector (systemd, a container)
    keeps what it wrote before; a file with other columns is refused rather than mixed.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{what} {path}: folder {path.parent} does not exist")
    if append and path.is_file() and path.stat().st_size:
        with open(path, newline="", encoding="utf-8") as existing:
            if next(csv.reader(existing), []) != header:
                raise InputError(f"{what} {path}: exists with other columns; give a new file")
    try:
        file = open(path, "a" if append else "w", newline="", buffering=1, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot write: {exc.strerror}") from None
    writer = csv.writer(file)
    if not file.tell():
        writer.writerow(header)
    return file, writer
