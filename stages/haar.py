"""``haar``: frontal faces with OpenCV's Haar cascade, found on a downscaled grey frame.

Why the frame is shrunk by default: the cascade scans windows of its native 24 px and grows
them by ``scale_factor`` until they cover the frame, so every face smaller than ``min_size``
is work thrown away. Shrinking the grey frame until a ``min_size`` face is exactly 24 px
finds the same faces on far fewer pixels (at 640x480 with ``min_size: 64``, a 240x180
frame) and maps the boxes back to full-frame pixels.

``every_n`` > 1 runs the cascade on every Nth frame of each source only (by frame index, so
several workers of the stage agree on which frames those are). On the frames it skips,
``faces`` is ``[]`` and ``extra["detected"]`` is False, so a ``track`` stage downstream
carries its predicted boxes onto them; ``extra["detected"]`` is True otherwise.
"""
from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np
from pydantic import Field

from fer_pipe.errors import InputError
from fer_pipe.messages import FACES, FRAME, Face, Packet
from fer_pipe.preprocess import to_gray
from fer_pipe.stage import Stage, StageParams

WINDOW = 24
"""Side of the frontal-face cascades' training window: the smallest face they can find."""

Box = tuple[int, int, int, int]


class HaarParams(StageParams):
    cascade: str = Field("haarcascade_frontalface_default.xml",
                         description="cascade file: a name in cv2.data.haarcascades, or a path")
    scale_factor: float = Field(1.2, gt=1.0, le=2.0, description="image pyramid step between scales")
    min_neighbors: int = Field(5, ge=0, le=50, description="overlapping hits needed to keep a face")
    min_size: int = Field(64, ge=8, le=4096,
                          description="smallest face side, in pixels of the full frame (the "
                                      "classifier's input is 48 px; 48 finds smaller faces at 1.5x "
                                      "the detector's cost)")
    detect_width: int = Field(0, ge=0, le=8192,
                              description="shrink frames wider than this before detecting; 0: shrink "
                                          "so a min_size face is the cascade's 24 px window (finds "
                                          "the same faces); the frame width or more: never shrink")
    equalize: bool = Field(False, description="equalize the grey histogram before detecting")
    every_n: int = Field(1, ge=1, le=1000,
                         description="detect on every Nth frame of each source only (a track stage "
                                     "carries the boxes across the frames in between)")
    threads: int = Field(0, ge=0, le=64,
                         description="OpenCV threads for the cascade (0: OpenCV's default, one per core)")


def detection_scale(width: int, min_size: int, detect_width: int) -> float:
    """The factor (at most 1) by which a frame ``width`` pixels wide is shrunk before detecting."""
    if detect_width:
        return min(1.0, detect_width / width)
    return min(1.0, WINDOW / min_size)


class HaarDetector(Stage):
    """The cascade is loaded once per process; boxes are mapped back to full-frame pixels."""

    Params = HaarParams
    params: HaarParams
    reads = FRAME
    writes = FACES
    parallel = True

    def open(self) -> None:
        name = self.params.cascade
        path = name if "/" in name else cv2.data.haarcascades + name
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise InputError(f"cascade {path}: cannot load a Haar cascade from it")
        if self.params.threads:
            cv2.setNumThreads(self.params.threads)

    def detect(self, image: np.ndarray) -> list[Box]:
        gray = to_gray(image)
        height, width = gray.shape[:2]
        scale = detection_scale(width, self.params.min_size, self.params.detect_width)
        if scale < 1.0:
            gray = cv2.resize(gray, (max(1, round(width * scale)), max(1, round(height * scale))),
                              interpolation=cv2.INTER_AREA)
        if self.params.equalize:
            gray = cv2.equalizeHist(gray)
        side = max(1, round(self.params.min_size * scale))
        found = self._cascade.detectMultiScale(gray, scaleFactor=self.params.scale_factor,
                                               minNeighbors=self.params.min_neighbors,
                                               minSize=(side, side))
        inv = 1.0 / scale
        return [(round(x * inv), round(y * inv), round(w * inv), round(h * inv)) for x, y, w, h in found]

    def process(self, packet: Packet) -> Iterable[Packet]:
        detected = packet.index % self.params.every_n == 0
        packet.faces = [Face(box) for box in self.detect(packet.pixels())] if detected else []
        packet.extra["detected"] = detected
        return (packet,)
