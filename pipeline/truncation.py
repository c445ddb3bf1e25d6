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

from .mp4 import box_header


ISO_BOXES = frozenset({b"ftyp", b"styp", b"moov", b"mdat", b"moof", b"mfra", b"sidx", b"free", b"skip",
                       b"wide", b"pnot", b"uuid", b"meta", b"prft", b"emsg", b"pdin"})
"""Top-level boxes of an MP4 or QuickTime file: the walk stops, saying nothing, at any other
(a Y4M or NUT header, bytes appended after the last box), which could read as a huge size."""
UNKNOWN_SIZES = (0, 0xFFFFFFFF)
"""What a RIFF writer that could not seek back (a pipe) leaves in a chunk's size."""


def ends_early(path: str | Path) -> bool:
    """True when the file is an AVI or ISO media file (MP4, MOV) whose chunks or boxes run past
    its end; False for a whole file, another format, or one that cannot be read."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(12)
            if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
                return _riff_runs_past(fh, size)
            return _boxes_run_past(fh, size)
    except OSError:
        return False


def _riff_runs_past(fh: BinaryIO, size: int) -> bool:
    """The ``RIFF`` lists of an AVI (an OpenDML one has several), each an id, a little-endian
    size and that many bytes, padded to even."""
    pos = 0
    while pos + 8 <= size:
        fh.seek(pos)
        kind, length = struct.unpack("<4sI", fh.read(8))
        if kind != b"RIFF" or length in UNKNOWN_SIZES:
            return False
        if pos + 8 + length > size:
            return True
        pos += 8 + length + (length & 1)
    return False


def _boxes_run_past(fh: BinaryIO, size: int) -> bool:
    """The top-level boxes of an ISO media file, each a big-endian size and a type (a 64-bit
    size after a size of 1; 0 for one that runs to the end of the file)."""
    pos = 0
    while pos + 8 <= size:
        fh.seek(pos)
        header = box_header(fh)
        if header is None:
            return True  # the file ends inside a 64-bit size
        kind, length, start = header
        if kind not in ISO_BOXES or length < start:  # 0 among them: a box that runs to the end
            return False
        if pos + length > size:
            return True
        pos += length
    return False
