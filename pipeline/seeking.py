"""Whether OpenCV can seek in a video by frame number.

OpenCV's seek (``CAP_PROP_POS_FRAMES``) goes by timestamps. In an MPEG transport stream (.ts,
.mts, .m2ts: DVRs, camcorders, broadcast captures) no frame decodes after it, even after a seek
back to frame 0. In an MPEG program stream (.mpg, .vob) it lands, but files of both kinds may
be joined end to end (``cat`` of a recorder's segments), each part starting its timestamps
again: OpenCV counts the first part's frames only, and reads after a seek stop at the join. So
in these files fer-pipe never seeks: the video source reads its way to a start frame, and
batch reads such a file whole rather than in chunks. The container is told by its first bytes,
not its name: a camera's ``.mp4`` may be either. (Where a seek does nothing at all, in a file
with no index, OpenCV says so, and the video source reads its way there too.) Nor in an MP4 of
variable frame rate, where OpenCV's frame numbers come from times (``fer_pipe.mp4``).
"""
from __future__ import annotations

from pathlib import Path

from .avi import has_drop_frames
from .mp4 import numbered_by_time

TS_SYNC = 0x47
"""The byte that starts every packet of a transport stream."""
TS_PACKET, M2TS_PACKET = 188, 192
"""A transport stream's packet, and a Blu-ray/AVCHD one (.m2ts, .mts): 4 bytes of time first."""
SYNCS = 5
"""Sync bytes a packet apart that tell a transport stream, wherever in its first packet they
begin (a stream cut at any byte, or with bytes before it, is read as one by FFmpeg too)."""
PACK_START = b"\x00\x00\x01\xba"
"""The pack header that starts an MPEG program stream."""


def seeks_by_frame(path: str | Path) -> bool:
    """False for an MPEG transport or program stream and for an AVI with empty "drop" chunks,
    True for any other file (and for one that cannot be read: its reader says why)."""
    return not why_no_seek(path)


def why_no_seek(path: str | Path) -> str:
    """What makes OpenCV's seek by frame number miss in ``path``, as batch says it; empty where
    it does not. An AVI's index may list empty "drop" chunks (``fer_pipe.avi.has_drop_frames``:
    an ordinary ``ffmpeg -c:v mjpeg`` AVI has one), which OpenCV's frame numbers count: its seek
    to frame 20 landed on the 19th frame that decodes while saying 20, and a ``start`` run
    numbered every frame one too high."""
    if not numbered_by_time(path):
        return ("a video of variable frame rate, read as one task: OpenCV names a frame by its time at the average "
                "rate, so its seek lands on another frame than it names")
    if has_drop_frames(path):
        return ("an AVI with empty drop frames, read as one task: OpenCV's frame numbers count them, so its "
                "seek lands short of the frame it names")
    try:
        with open(path, "rb") as fh:
            head = fh.read((SYNCS + 1) * M2TS_PACKET)
    except OSError:
        return ""
    if head.startswith(PACK_START) or any(
            all(head[first + k * size] == TS_SYNC for k in range(SYNCS))
            for size in (TS_PACKET, M2TS_PACKET) for first in range(min(size, len(head) - (SYNCS - 1) * size))):
        return ("an MPEG stream, read as one task: OpenCV cannot seek in one by frame number (no frame decodes "
                "after a seek in a transport stream, and joined recordings start their times again)")
    return ""
