"""How many frames an AVI's video stream plays, read from its index.

An AVI's header counts every chunk of its video stream. FFmpeg, writing a variable-rate source
at a constant rate, puts an empty chunk (a "drop frame") in each gap, which decodes to nothing:
a whole file that plays 143 frames counted 192, and was called truncated. Its index (``idx1``,
at the end) lists each chunk with its size, so the empty ones can be left out.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

MAX_HEADER = 1 << 20
"""The stream headers take a few hundred bytes; a larger ``hdrl`` list is not read."""
MAX_INDEX = 64 << 20
"""16 bytes a chunk: hours of video and audio take a few MiB; a larger index is not read."""


def frames_in_index(path: str | Path) -> int | None:
    """The non-empty chunks of the first video stream in the AVI's ``idx1`` index, or None: not
    an AVI, or one without that index (cut short before it, still being written, or an OpenDML
    file past 1 GiB that indexes itself elsewhere)."""
    sizes = _video_chunk_sizes(path)
    return None if sizes is None else sum(1 for size in sizes if size)


def has_drop_frames(path: str | Path) -> bool:
    """Whether the AVI's index lists an empty chunk of its video stream. OpenCV's frame numbers
    count them, so its seek to frame 20 lands on the 19th frame that decodes while saying 20: an
    ordinary ``ffmpeg -c:v mjpeg`` AVI writes one."""
    sizes = _video_chunk_sizes(path)
    return sizes is not None and not all(sizes)


def _video_chunk_sizes(path: str | Path) -> list[int] | None:
    """The size of each chunk of the first video stream in the ``idx1`` index, or None where
    there is none to read (see ``frames_in_index``)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"AVI ":
                return None
            end = 8 + struct.unpack("<I", head[4:8])[0]
            fh.seek(end + (end & 1))
            if fh.read(4) == b"RIFF":  # an OpenDML file's next part (AVIX): idx1 covers the first alone
                return None
            stream, index = _stream_and_index(fh, end)
    except OSError:
        return None
    if stream is None or index is None:
        return None
    ids = (b"%02ddc" % stream, b"%02ddb" % stream)
    whole = len(index) - len(index) % 16
    return [size for kind, _, _, size in struct.iter_unpack("<4sIII", index[:whole]) if kind in ids]


def _stream_and_index(fh: BinaryIO, end: int) -> tuple[int | None, bytes | None]:
    """The number of the first video stream (from ``hdrl``) and the ``idx1`` chunk's bytes,
    walking the chunks of the first RIFF list."""
    stream = index = None
    pos = 12
    while pos + 8 <= end:
        fh.seek(pos)
        header = fh.read(8)
        if len(header) < 8:
            break
        kind, length = struct.unpack("<4sI", header)
        if kind == b"LIST" and length <= MAX_HEADER and fh.read(4) == b"hdrl":
            stream = _video_stream(fh.read(length - 4))
        elif kind == b"idx1" and length <= MAX_INDEX:
            index = fh.read(length)
        pos += 8 + length + (length & 1)
    return stream, index


def _video_stream(hdrl: bytes) -> int | None:
    """Which ``strl`` list, counting from 0, holds the first stream whose ``strh`` says ``vids``."""
    number, pos = 0, 0
    while pos + 12 <= len(hdrl):
        kind, length = struct.unpack("<4sI", hdrl[pos:pos + 8])
        if kind == b"LIST" and hdrl[pos + 8:pos + 12] == b"strl":
            if hdrl[pos + 12:pos + 16] == b"strh" and hdrl[pos + 20:pos + 24] == b"vids":
                return number
            number += 1
        pos += 8 + length + (length & 1)
    return None
