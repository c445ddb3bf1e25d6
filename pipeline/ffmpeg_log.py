"""FFmpeg's own log, which OpenCV lets through to stderr."""
from __future__ import annotations

import os


def quiet_ffmpeg() -> None:
    """Silence FFmpeg's messages, which the stages that read through it say in their own lines:
    a damaged file logs each bad packet, dozens of lines around fer-pipe's one, and a camera
    that is down logs each failed connection, one line an attempt (8,600 a day at the longest
    backoff) where the rtsp source says its reason every 300 s. A user's own
    OPENCV_FFMPEG_LOGLEVEL (16 shows the messages) is kept. OpenCV reads the variable when its
    FFmpeg backend opens its first file or stream, so each such stage calls this as it is
    imported."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
