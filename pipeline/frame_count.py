"""How many frames a video file plays, as the video source reads it: batch cuts its chunks by
the same count, so that no chunk starts past a file's end, whatever its header says."""
from __future__ import annotations

import cv2

from .avi import frames_in_index
from .mp4 import frames_played
from .truncation import matroska_lead

UNKNOWN_COUNT = 2**30
"""OpenCV's count for an AVI whose header was never filled in (written to a pipe): no count.
Taken as one, every such file was "truncated", and batch planned a billion frames' chunks."""
FALLBACK_FPS = 30.0
"""The frame rate taken where the container reports none, for timestamps and the frames it plays."""


def frames_in(capture: cv2.VideoCapture, path: str) -> int:
    """Frames the video source reads from ``capture`` of ``path`` (0: unknown). Batch cuts its
    chunks by this too, so it must be the one count: see ``fer_pipe.mp4.frames_played``, and
    ``fer_pipe.avi`` for an AVI's empty drop frames, which its header counts."""
    listed = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    listed = 0 if listed >= UNKNOWN_COUNT else listed
    indexed = frames_in_index(path)
    if indexed is not None:
        return min(listed, indexed) if listed else indexed
    fps = capture.get(cv2.CAP_PROP_FPS) or FALLBACK_FPS
    if listed:  # a Matroska file's counted from time 0: a later segment of a recording starts after it
        listed = max(0, listed - round(matroska_lead(path) * fps))
    return frames_played(path, listed, fps)
