"""Whether a video file ends before its container says it does: the mark of a copy or upload
cut short, whatever the frame count is worth.

A frame count alone cannot tell: OpenCV's count is an estimate for many formats, and an AVI
re-encoded from a variable-rate source counts the empty "drop" frames FFmpeg writes into its
gaps, which decode to nothing. The container's own sizes can: an AVI's RIFF chunks and an MP4's
top-level boxes each say how long they are, and a cut file ends inside one of them.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO


def ends_early(path: str | Path) -> bool:
    """True when the file is an AVI or ISO media file (MP4, MOV) whose chunks or boxes run past
    its end; False for a whole file, another format, or one that cannot be read."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(12)
            if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
                return _runs_past(fh, size, riff=True)
            return _runs_past(fh, size, riff=False)
    except OSError:
        return False


def _runs_past(fh: BinaryIO, size: int, riff: bool) -> bool:
    """Walk the top-level chunks (RIFF: the ``RIFF`` lists of an OpenDML AVI, an id then a
    little-endian size, padded to even) or boxes (ISO: a big-endian size then a type; a 64-bit
    size after ``1``, ``0`` for one that runs to the end of the file)."""
    pos = 0
    while pos + 8 <= size:
        fh.seek(pos)
        if riff:
            kind, length = struct.unpack("<4sI", fh.read(8))
        else:
            length, kind = struct.unpack(">I4s", fh.read(8))
        if not kind.isalnum() and not (riff and kind == b"JUNK"):
            return False  # not a container of ours, or its tail is not chunked: nothing to say
        start = 8
        if not riff and length == 1:
            large = fh.read(8)
            if len(large) < 8:
                return True
            length, start = struct.unpack(">Q", large)[0], 16
        elif not riff and length == 0:
            return False  # the last box runs to the end of the file, wherever that is
        if riff:
            length += 8 + (length & 1)
        if length < start:
            return False
        if pos + length > size:
            return True
        pos += length
    return False
