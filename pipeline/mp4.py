"""How long an MP4 or QuickTime file's video track plays, and whether OpenCV's seek by frame
number lands where it says, read from its header.

A trim made without re-encoding (``ffmpeg -ss 4.5 -c copy``, LosslessCut, a camera app) keeps
the samples back to the previous key frame and hides the extra ones with an edit list. OpenCV's
frame count is the sample count, so such a file decodes fewer frames than OpenCV lists, which
the video source would otherwise take for a truncated file. The track header's duration is the
edit list's, so it gives the frames the file really plays. Only the boxes on the way to it are
read; anything unexpected gives None, and the caller keeps OpenCV's count.
"""
from __future__ import annotations

import bisect
import io
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

MAX_MOOV = 256 * 2**20
"""A larger header is not read (hours of video have a few MiB)."""


def _boxes(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(type, body) of each box in ``data``; stops at the first malformed one."""
    fh, end = io.BytesIO(data), len(data)  # BytesIO shares the bytes until written to
    while (header := box_header(fh)) is not None:
        kind, size, length = header
        pos = fh.tell() - length
        size = size or end - pos  # 0: the box runs to the end
        if size < length or pos + size > end:
            return
        yield kind, data[pos + length:pos + size]
        fh.seek(pos + size)


def _child(body: bytes, kind: bytes) -> bytes | None:
    return next((b for k, b in _boxes(body) if k == kind), None)


def box_header(fh: BinaryIO) -> tuple[bytes, int, int] | None:
    """The type, size and header length of the box at ``fh``'s position (a 64-bit size follows
    a size of 1; a size of 0 runs to the end of the file), or None where the file ends inside
    the header."""
    head = fh.read(8)
    if len(head) < 8:
        return None
    size, kind = struct.unpack(">I4s", head)
    if size != 1:
        return kind, size, 8
    large = fh.read(8)
    return (kind, struct.unpack(">Q", large)[0], 16) if len(large) == 8 else None


def _moov(path: Path) -> bytes | None:
    """The file's ``moov`` box, found by walking the top-level boxes (it may follow the media)."""
    with open(path, "rb") as fh:
        while (header := box_header(fh)) is not None:
            kind, size, start = header
            if not kind.isalnum():
                return None  # not an ISO media file (AVI starts with RIFF and a little-endian size)
            if kind == b"moov":
                return fh.read(size - start) if 0 < size - start <= MAX_MOOV else None
            if size < start:  # 0: the box runs to the end of the file, without a moov after it
                return None
            fh.seek(size - start, 1)
    return None


def _video_track(moov: bytes) -> tuple[bytes, bytes] | None:
    """The first video track's ``trak`` and ``mdia`` boxes."""
    for kind, trak in _boxes(moov):
        mdia = _child(trak, b"mdia") if kind == b"trak" else None
        hdlr = mdia and _child(mdia, b"hdlr")
        if hdlr and hdlr[8:12] == b"vide":
            return trak, mdia
    return None


def _header(path: str | Path) -> bytes | None:
    try:
        return _moov(Path(path))
    except OSError:
        return None


def video_seconds(path: str | Path) -> float | None:
    """Seconds the first video track plays (after its edit list), or None when unknown."""
    moov = _header(path)
    mvhd = moov and _child(moov, b"mvhd")
    at = 20 if mvhd and mvhd[0] == 1 else 12  # version 1 has 64-bit times before the timescale
    if not mvhd or len(mvhd) < at + 4:
        return None
    timescale = struct.unpack_from(">I", mvhd, at)[0]
    track = _video_track(moov)
    tkhd = track and _child(track[0], b"tkhd")
    if tkhd and len(tkhd) >= 36:
        fmt, at = (">Q", 28) if tkhd[0] == 1 else (">I", 20)
        duration = struct.unpack_from(fmt, tkhd, at)[0]
        unknown = duration in (0, 2 ** (8 * struct.calcsize(fmt)) - 1)
        return None if unknown or not timescale else duration / timescale
    return None


def frames_played(path: str | Path, listed: int, fps: float) -> int:
    """OpenCV's frame count ``listed`` (0: unknown), lowered to the video track's duration at
    ``fps`` where the header says it plays fewer; an estimate either way, by a frame or two."""
    seconds = video_seconds(path)
    if not seconds or fps <= 0:
        return listed
    return min(listed, round(seconds * fps)) if listed > 0 else round(seconds * fps)


OFF_BY = 0.5
"""Frames by which a key frame's time at the average rate may miss its number before OpenCV
names it as another frame (it rounds)."""


def numbered_by_time(path: str | Path) -> bool:
    """Whether each key frame of the video track is where its number puts it at the track's
    average rate. OpenCV's seek by frame number goes to that time, back to a key frame, names
    that frame from its time, and counts on from it; so in a file of variable frame rate (a
    phone's, in low light) a ``start`` of 70 read the file's frames from 94 on, numbered from 70.
    True where the file is not an MP4 or QuickTime file, or its tables cannot be read."""
    moov = _header(path)
    track = moov and _video_track(moov)
    minf = track and _child(track[1], b"minf")
    stbl = minf and _child(minf, b"stbl")
    runs = stbl and _table(stbl, b"stts", ">II")  # (frames, ticks each)
    if not runs:
        return True
    # the average rate from the frames' start times: a last frame that lasts longer than the
    # others (as many files' does) is no variable rate, and OpenCV's seek lands right in them
    frames, ticks = sum(n for n, _ in runs), sum(n * d for n, d in runs) - runs[-1][1]
    if frames < 2 or ticks <= 0:
        return True
    rate = (frames - 1) / ticks
    synced = _table(stbl, b"stss", ">I")  # the key frames, numbered from 1; without it, every frame is one
    keys = sorted(k - 1 for (k,) in synced or [])
    number = time = 0
    for n, d in runs:
        if synced:
            inside = [k - number for k in keys[bisect.bisect_left(keys, number):bisect.bisect_left(keys, number + n)]]
        else:
            inside = [0, n - 1]  # within a run the miss changes linearly: its ends are its extremes
        if any(abs((time + k * d) * rate - (number + k)) >= OFF_BY for k in inside):
            return False
        number, time = number + n, time + n * d
    return True


def _table(stbl: bytes, kind: bytes, fmt: str) -> list[tuple[int, ...]] | None:
    """The entries of a sample table box (after its version, flags and entry count)."""
    box = _child(stbl, kind)
    if not box or len(box) < 8:
        return None
    count, size = struct.unpack_from(">I", box, 4)[0], struct.calcsize(fmt)
    if len(box) < 8 + size * count:
        return None
    return list(struct.iter_unpack(fmt, box[8:8 + size * count]))
