"""``video_writer``: the window's overlay written to a video file, for servers and the demo."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
from pydantic import Field

from fer_pipe.errors import InputError
from fer_pipe.messages import EXPRESSIONS, Packet
from fer_pipe.native_stderr import StderrCapture
from fer_pipe.output_files import check_writable, open_claimed
from fer_pipe.stage import Sink
from fer_pipe.stages.overlay import FpsMeter, OverlayParams, draw

WRITE_FAILED = b"Failed to write frame"
"""OpenCV's FFmpeg writer's warning for a frame it could not write (a full disk, a vanished
mount), its only report of one: seen, the run fails at that frame instead of warning on every
frame after it. Should a later OpenCV word it otherwise, the read-back at close still fails the
run, only later."""
CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
"""Codecs the OpenCV wheels can write on every platform, and stock players read (MPEG-4 part 2, MJPEG)."""


class VideoWriterParams(OverlayParams):
    path: str = Field(description="video file to write: .mp4 (MPEG-4) or .avi (MJPEG)")
    fps: float = Field(25.0, gt=0, le=240, description="frame rate written into the file")
    show_fps: bool = Field(False, description="draw the pipeline's frames per second in a corner")


class VideoWriterSink(Sink):
    """Writes the frames with the window's overlay (boxes, labels, probabilities) to a video file.

    The file is opened at the first frame, whose size it takes; every frame must have that size.
    """

    Params = VideoWriterParams
    params: VideoWriterParams
    reads = EXPRESSIONS
    output_paths = ("path",)

    @classmethod
    def preflight(cls, params: VideoWriterParams) -> None:
        path = Path(params.path)
        if path.suffix.lower() not in CODECS:
            raise InputError(f"video_writer {path}: the name must end in {' or '.join(CODECS)}")
        check_writable(path, "video_writer")

    def open(self) -> None:
        self.preflight(self.params)
        self._lock = open_claimed(self.params.path, "video_writer", truncate=False)
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] = (0, 0)
        self._fps = FpsMeter()
        self._stderr = StderrCapture()
        self._failed = False
        self.written = 0

    def _start(self, width: int, height: int) -> None:
        path = Path(self.params.path)
        fourcc = cv2.VideoWriter_fourcc(*CODECS[path.suffix.lower()])
        self._writer = cv2.VideoWriter(str(path), fourcc, self.params.fps, (width, height))
        if not self._writer.isOpened():
            raise InputError(f"video_writer {path}: OpenCV cannot write this file")
        self._size = (width, height)

    def consume(self, packet: Packet) -> None:
        fps = self._fps.tick()
        image = draw(packet, self.params.show_probs, fps if self.params.show_fps else None)
        height, width = image.shape[:2]
        if self._writer is None:
            self._start(width, height)
        elif (width, height) != self._size:
            raise ValueError(f"video_writer {self.params.path}: {packet.source} frame {packet.index} is "
                             f"{width}x{height}, the file is {self._size[0]}x{self._size[1]}")
        with self._stderr.capturing():
            self._writer.write(image)
        said = self._stderr.take()
        if WRITE_FAILED in said:
            self._failed = True
            raise OSError(f"video_writer {self.params.path}: OpenCV could not write this frame "
                          f"({_free_mib(self.params.path)} MiB free on its disk)")
        if said:
            os.write(2, said)  # anything else OpenCV said goes where it would have gone
        self.written += 1

    def close(self) -> None:
        if self._writer is not None:
            with self._stderr.capturing():
                self._writer.release()
            said = self._stderr.take()
            if not self._failed:
                if said:
                    os.write(2, said)
                self._check_written()
        self._stderr.close()
        os.close(self._lock)

    def _check_written(self) -> None:
        """Raise unless the file reads back with every frame given to it.

        OpenCV's writer reports a failed write (a full disk, a vanished mount) only as a
        warning on stderr, once per frame, and an MP4 whose index could not be written at the
        end does not open at all; without this check such a run ended with exit 0.
        """
        path = Path(self.params.path)
        capture = cv2.VideoCapture(str(path))
        held = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        capture.release()
        if held < self.written:
            raise OSError(f"video_writer {path}: the file holds {held} of the {self.written} frames given "
                          f"to it ({_free_mib(path)} MiB free on its disk)")


def _free_mib(path: str | Path) -> int:
    room = os.statvfs(Path(path).parent)
    return room.f_bavail * room.f_frsize // 2**20
