"""``haar``: frontal faces with OpenCV's Haar cascade, found on a downscaled grey frame."""
from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np
from pydantic import Field

from fer_pipe.errors import InputError
from fer_pipe.messages import FACES, FRAME, Face, Packet
from fer_pipe.preprocess import to_gray
from fer_pipe.stage import Stage, StageParams


class HaarParams(StageParams):
    cascade: str = Field("haarcascade_frontalface_default.xml",
                         description="cascade file: a name in cv2.data.haarcascades, or a path")
    scale_factor: float = Field(1.1, gt=1.0, le=2.0, description="image pyramid step between scales")
    min_neighbors: int = Field(5, ge=0, le=50, description="overlapping hits needed to keep a face")
    min_size: int = Field(40, ge=8, le=4096, description="smallest face side, in pixels of the full frame")
    detect_width: int = Field(320, ge=0, le=8192,
                              description="downscale frames wider than this before detecting (0: never)")
    equalize: bool = Field(False, description="equalize the grey histogram before detecting")


class HaarDetector(Stage):
    """The cascade is loaded once per process; boxes are mapped back to full-frame pixels."""

    Params = HaarParams
    params: HaarParams
    reads = FRAME
    writes = FACES

    def open(self) -> None:
        name = self.params.cascade
        path = name if "/" in name else cv2.data.haarcascades + name
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise InputError(f"cascade {path}: cannot load a Haar cascade from it")

    def detect(self, image: np.ndarray) -> list[tuple[int, int, int, int]]:
        gray = to_gray(image)
        height, width = gray.shape[:2]
        scale = 1.0
        if self.params.detect_width and width > self.params.detect_width:
            scale = self.params.detect_width / width
            gray = cv2.resize(gray, (self.params.detect_width, max(1, round(height * scale))),
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
        packet.faces = [Face(box) for box in self.detect(packet.pixels())]
        return (packet,)
