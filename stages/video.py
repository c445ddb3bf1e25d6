"""``video``: frames of any file OpenCV reads, with the container's frame index and timestamp."""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import cv2
from pydantic import Field

from fer_pipe.errors import InputError
from fer_pipe.messages import Packet
from fer_pipe.stage import Source, StageParams


class VideoParams(StageParams):
    path: str = Field(description="video file to read")
    source_id: str = Field("", description="name carried by every result (default: the stage name)")
    start: int = Field(0, ge=0, description="first frame index to read")
    max_frames: int = Field(0, ge=0, description="stop after this many frames (0: the whole file)")
    realtime: bool = Field(False, description="replay at the file's own fps as a live source "
                                              "(drops oldest frames instead of blocking)")


class VideoSource(Source):
    """A finite source: it blocks when the pipeline is busy, so every frame is processed once."""

    Params = VideoParams
    params: VideoParams

    def open(self) -> None:
        path = Path(self.params.path)
        if not path.is_file():
            raise InputError(f"video {path}: no such file")
        if path.stat().st_size == 0:
            raise InputError(f"video {path}: the file is empty")
        self._cap = cv2.VideoCapture(str(path))
        if not self._cap.isOpened():
            raise InputError(f"video {path}: OpenCV cannot open it (not a video, or a codec it lacks)")
        self.fps = self._cap.get(cv2.CAP_PROP_FPS) or 30.0
        self._count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if self.params.start:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, self.params.start)

    @property
    def live(self) -> bool:
        return self.params.realtime

    def length(self) -> int | None:
        if self._count <= 0:
            return None
        remaining = max(0, self._count - self.params.start)
        return min(remaining, self.params.max_frames) if self.params.max_frames else remaining

    def frames(self) -> Iterator[Packet]:
        source = self.params.source_id or self.name
        index = self.params.start
        started = time.monotonic()
        read = 0
        while not self.params.max_frames or read < self.params.max_frames:
            ok, image = self._cap.read()
            if not ok:
                if read == 0:
                    raise InputError(f"video {self.params.path}: no frame could be decoded "
                                     "(truncated or corrupt file)")
                return
            timestamp = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if self.params.realtime:
                delay = started + read / self.fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            yield Packet(source, index, timestamp, image, captured=time.monotonic())
            index += 1
            read += 1

    def close(self) -> None:
        self._cap.release()
