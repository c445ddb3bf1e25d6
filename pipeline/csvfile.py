"""CSV outputs that keep what they wrote: every row is flushed as its line ends.

Sinks write through here so that a crash or a kill elsewhere in the pipeline never loses a
row already written, and so that a bad output path fails the same way for every sink.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import IO, Any

from .errors import InputError


def open_csv(path: str | Path, what: str, header: list[str]) -> tuple[IO[str], Any]:
    """A line-buffered file and a ``csv.writer`` on it, with ``header`` written; InputError if not."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{what} {path}: folder {path.parent} does not exist")
    try:
        file = open(path, "w", newline="", buffering=1, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot write: {exc.strerror}") from None
    writer = csv.writer(file)
    writer.writerow(header)
    return file, writer
