"""Whether a video file ends before its container says it does: the mark of a copy or upload
cut short, whatever the frame count is worth.

A frame count alone cannot tell: OpenCV's count is an estimate for many formats, and an AVI
re-encoded from a variable-rate source counts the empty "drop" frames FFmpeg writes into its
gaps, which decode to nothing. The container's own sizes can: an AVI's RIFF chunks, an MP4's
top-level boxes and a Matroska file's top-level elements each say how long they are, and a cut
file ends inside one of them.
"""
from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .container_streams import HEAD_BYTES, streams_in
from .mp4 import box_header


ISO_BOXES = frozenset({b"ftyp", b"styp", b"moov", b"mdat", b"moof", b"mfra", b"sidx", b"free", b"skip",
                       b"wide", b"pnot", b"uuid", b"meta", b"prft", b"emsg", b"pdin"})
"""Top-level boxes of an MP4 or QuickTime file: the walk stops, saying nothing, at any other
(a Y4M or NUT header, bytes appended after the last box), which could read as a huge size."""
UNKNOWN_SIZES = (0, 0xFFFFFFFF)
"""What a RIFF writer that could not seek back (a pipe) leaves in a chunk's size."""
EBML_MAGIC = b"\x1a\x45\xdf\xa3"
"""The EBML header's id, which starts every Matroska and WebM file."""
SEGMENT, TRACKS, CLUSTER = b"\x18\x53\x80\x67", b"\x16\x54\xae\x6b", b"\x1f\x43\xb6\x75"
TRACK_ENTRY, TRACK_TYPE = b"\xae", b"\x83"
INFO, TIMECODE_SCALE, MUXING_APP, CLUSTER_TIMECODE = b"\x15\x49\xa9\x66", b"\x2a\xd7\xb1", b"\x4d\x80", b"\xe7"
"""Matroska element ids: the Segment holds the Info (its TimecodeScale, the MuxingApp that wrote
it) and the Tracks before the first Cluster of frames, whose Timecode dates it; every TrackEntry
says its TrackType."""
EBML_TOP_LEVEL = frozenset({EBML_MAGIC, SEGMENT, b"\xec", b"\xbf"})
"""Top-level elements of a Matroska file: the EBML header, a Segment, Void and CRC-32."""


def ends_early(path: str | Path) -> bool:
    """True when the file is an AVI, ISO media (MP4, MOV), Matroska or FLV file whose chunks,
    boxes, elements or last tag run past its end; False for a whole file, another format, or
    one that cannot be read."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(12)
            if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
                return _riff_runs_past(fh, size)
            if head[:4] == EBML_MAGIC:
                return _elements_run_past(fh, size)
            if head[:3] == b"FLV":
                return _flv_tag_runs_past(fh, size)
            return _boxes_run_past(fh, size)
    except OSError:
        return False


def counted_by_duration(path: str | Path) -> bool:
    """True for a Matroska or WebM file: it holds no frame count, and OpenCV's is its duration
    at the nominal frame rate, which a variable-rate recording plays fewer frames of."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == EBML_MAGIC
    except OSError:
        return False


def count_is_a_ceiling(path: str | Path) -> bool:
    """True for a file that keeps no frame count and holds a stream besides the video OpenCV
    reads (audio, subtitles, a second video): Matroska and WebM, MPEG-TS, MPEG-PS, FLV and Ogg
    (``container_streams``). OpenCV counts its frames from its duration, its longest stream's,
    and a recording's audio often runs on past its last frame (2.4 s of video with 9 s of audio
    counted 271 frames, not 72). So the count is at most what the video plays, never evidence of
    frames missing. A Matroska file whose tracks cannot be read is taken as such a one."""
    try:
        with open(path, "rb") as fh:
            if fh.read(4) == EBML_MAGIC:
                types = _track_types(fh)
                return types is None or len(types) > 1
            fh.seek(0)
            streams = streams_in(fh.read(HEAD_BYTES))
    except (OSError, IndexError, ValueError):  # a file that is not what its head looks like
        return False
    return streams is not None and streams > 1


def _flv_tag_runs_past(fh: BinaryIO, size: int) -> bool:
    """An FLV file ends with the size of its last tag (an 11-byte header and its data), so a
    whole one's last four bytes lead back to a tag header that says as much. Its count comes
    from its metadata's duration, which a copy cut short keeps: with its audio's stream making
    the count a ceiling, a cut FLV passed as whole (s64g 1)."""
    if size <= 13:  # the header and the first previous-tag size: no tag at all
        return False
    fh.seek(size - 4)
    last = int.from_bytes(fh.read(4), "big")
    if last < 11 or last > size - 17:
        return True
    fh.seek(size - 4 - last)
    header = fh.read(11)
    return header[0] & 0x1F not in (8, 9, 18) or int.from_bytes(header[1:4], "big") != last - 11


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
    size after a size of 1; 0 for one that runs to the end of the file). A recorder writes its
    ``mdat`` so, with its index (``moov``) after it once it closes: one killed or still
    recording has an ``mdat`` running to the end and no index, and OpenCV cannot open it."""
    pos, indexed = 0, False
    while pos + 8 <= size:
        fh.seek(pos)
        header = box_header(fh)
        if header is None:
            return True  # the file ends inside a 64-bit size
        kind, length, start = header
        if kind in ISO_BOXES and length == 0:
            return kind == b"mdat" and not indexed
        if kind not in ISO_BOXES or length < start:
            return False
        indexed = indexed or kind in (b"moov", b"moof")
        if pos + length > size:
            return True
        pos += length
    return False


def _elements_run_past(fh: BinaryIO, size: int) -> bool:
    """The top-level EBML elements of a Matroska file, each an id and a size, both variable-length
    integers; a size of all ones is unknown (a live recording that never went back to set it)."""
    pos = 0
    while pos < size:
        fh.seek(pos)
        element = _vint(fh)
        length = _vint(fh)
        if element is None or length is None:
            return True  # the file ends inside an element's header
        if element[1] not in EBML_TOP_LEVEL or length[0] == (1 << 7 * len(length[1])) - 1:
            return False
        pos = fh.tell() + length[0]
    return pos > size


def _vint(fh: BinaryIO) -> tuple[int, bytes] | None:
    """An EBML variable-length integer: its value (the length marker taken off) and its bytes;
    None where the file ends inside it or its first byte is not one (zero)."""
    first = fh.read(1)
    if not first or first[0] == 0:
        return None
    width = 9 - first[0].bit_length()
    rest = fh.read(width - 1)
    if len(rest) < width - 1:
        return None
    raw = first + rest
    return int.from_bytes(raw, "big") & ((1 << 7 * width) - 1), raw


def matroska_lead(path: str | Path) -> float:
    """Seconds before a Matroska or WebM file's first frames (its first Cluster's Timecode) that
    its Duration counts: 0 for a file that starts at 0, or that is not one. Every segment but the
    first of a recording cut into files (``ffmpeg -f segment``) starts later, and FFmpeg's muxer
    writes the Duration up to the last frame's time from 0, which OpenCV's count (the Duration at
    the frame rate) takes whole: a whole 5 s segment from 5 s on was "decoding stopped at frame
    120 of 242 (truncated or corrupt file)". mkvmerge writes the span from the first
    frame, and its count is right as it is (a cut copy passed as whole where the start was taken
    off it too): so only a file whose MuxingApp is FFmpeg's (``Lavf``) has a lead."""
    scale, muxer = 1_000_000, b""  # TimecodeScale's default, in nanoseconds
    try:
        with open(path, "rb") as fh:
            if fh.read(4) != EBML_MAGIC:
                return 0.0
            for element, length in _segment_head(fh):
                if element == INFO:
                    body = fh.tell()
                    info = dict(_children(fh.read(min(length, 1 << 16))))
                    scale = int.from_bytes(info.get(TIMECODE_SCALE, b""), "big") or scale
                    muxer = info.get(MUXING_APP, b"")
                    fh.seek(body + length)
                elif element == CLUSTER:
                    if not muxer.startswith(b"Lavf"):
                        return 0.0
                    return next((int.from_bytes(v, "big") * scale / 1e9 for k, v in _children(fh.read(64))
                                 if k == CLUSTER_TIMECODE), 0.0)
                else:
                    fh.seek(length, os.SEEK_CUR)
    except OSError:
        pass
    return 0.0


def _track_types(fh: BinaryIO) -> list[int] | None:
    """The TrackType of each track (1 video, 2 audio, 17 subtitles), or None where the Tracks
    element is not found before the frames (or the file is not as expected)."""
    for element, length in _segment_head(fh):
        if element == TRACKS:
            return _types_in(fh.read(min(length, 1 << 20)))
        if element == CLUSTER:
            return None
        fh.seek(length, os.SEEK_CUR)
    return None


def _segment_head(fh: BinaryIO) -> Iterator[tuple[bytes, int]]:
    """(id, size) of each element of a Matroska file's Segment up to its first Cluster, with
    ``fh`` at the element's body; the caller reads or skips it. SeekHead, Info, Tracks, Tags,
    Void... come before the Clusters in any real file, so 64 are enough."""
    fh.seek(0)
    for expected in (EBML_MAGIC, SEGMENT):
        element, length = _vint(fh), _vint(fh)
        if element is None or length is None or element[1] != expected:
            return
        if expected == EBML_MAGIC:
            fh.seek(length[0], os.SEEK_CUR)
    for _ in range(64):
        element, length = _vint(fh), _vint(fh)
        if element is None or length is None:
            return
        yield element[1], length[0]
        if element[1] == CLUSTER:
            return


def _types_in(tracks: bytes) -> list[int]:
    return [int.from_bytes(value, "big") for kind, entry in _children(tracks) if kind == TRACK_ENTRY
            for field, value in _children(entry) if field == TRACK_TYPE]


def _children(body: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(id, body) of each element in ``body``; stops at the first one cut short."""
    stream = io.BytesIO(body)
    while (element := _vint(stream)) is not None and (length := _vint(stream)) is not None:
        yield element[1], stream.read(length[0])
