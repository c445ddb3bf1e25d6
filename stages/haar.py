"""``haar``: frontal faces with OpenCV's Haar cascade, found on a downscaled grey frame.

Why the frame is shrunk by default: the cascade scans windows of its native 24 px and grows
them by ``scale_factor`` until they cover the frame, so every face smaller than ``min_size``
is work thrown away. Shrinking the grey frame until a ``min_size`` face is exactly 24 px
finds nearly the same faces on far fewer pixels (at 640x480 with ``min_size: 64``, a 240x180
frame) and maps the boxes back to full-frame pixels; a frame is not shrunk narrower than that
(``MIN_SHRUNK_WIDTH``).

Why two passes: most of the cascade's time goes on scanning the whole frame at every step of
the pyramid, though faces cover a small part of it. A coarse pass (pyramid step
``coarse_factor``, keeping whatever two windows agree on) finds where faces may be; the fine
pass (``scale_factor``, ``min_neighbors``) then scans only a neighbourhood of each candidate,
at sizes around the candidate's. The fine pass decides what is a face, so the coarse one can
be loose. On the benchmark clips this took a quarter off the detector's time at 1280x720 and
a fifth at 640x480, and found as many or more of the faces a full-frame search finds; it also
finds faces whose size falls between two coarse steps, which a plain coarser pyramid misses.

``every_n`` > 1 runs the cascade on every Nth frame of each source only (by frame index, so
several workers of the stage agree on which frames those are). On the frames it skips,
``faces`` is ``[]`` and ``extra["detected"]`` is False, so a ``track`` stage downstream
carries its predicted boxes onto them; ``extra["detected"]`` is True otherwise.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Collection, Iterable
from pathlib import Path

import cv2
import numpy as np
from pydantic import Field, model_validator

from fer_pipe.boxes import Box, iou_matrix
from fer_pipe.errors import InputError
from fer_pipe.input_files import file_problem
from fer_pipe.messages import FACES, FRAME, Face, Packet
from fer_pipe.native_stderr import stderr_dropped
from fer_pipe.opencv_names import opencv_name
from fer_pipe.preprocess import to_gray
from fer_pipe.stage import Stage, StageParams

WINDOW = 24
"""Side of the frontal-face cascades' training window: the smallest face they can find."""
COARSE_NEIGHBORS = 1
"""A coarse candidate needs two agreeing windows: a face between two coarse steps often gets
no more, and the fine pass rejects what is not a face."""
NEIGHBOURHOOD = 0.3
"""The fine pass looks this share of a candidate's side beyond each of its edges."""
SIZE_BAND = 1.35
"""The fine pass looks for faces from 1/SIZE_BAND to SIZE_BAND times a candidate's side."""
DUPLICATE_IOU = 0.5
"""Two fine boxes overlapping this much (from neighbouring candidates) are one face."""


class HaarParams(StageParams):
    cascade: str = Field("haarcascade_frontalface_default.xml",
                         description="cascade file: a name in cv2.data.haarcascades, or else a path")
    scale_factor: float = Field(1.2, gt=1.0, le=2.0, description="image pyramid step between scales")
    min_neighbors: int = Field(5, ge=0, le=50, description="overlapping hits needed to keep a face")
    min_size: int = Field(64, ge=8, le=4096,
                          description="smallest face side, in pixels of the full frame, from the "
                                      "cascade's window up (24 px; 20 for the alt cascades); the "
                                      "classifier's input is 48 px; 48 finds smaller faces at 1.5x the "
                                      "detector's cost")
    detect_width: int = Field(0, ge=0, le=8192,
                              description="shrink frames wider than this before detecting, which "
                                          "raises the smallest face found to the cascade's window in "
                                          "the shrunk frame; 0: shrink so a min_size face is the cascade's 24 px "
                                          "window, to no less than 240 px wide; the frame width or "
                                          "more: never shrink")
    equalize: bool = Field(False, description="equalize the grey histogram before detecting")
    coarse_factor: float = Field(1.35, ge=1.0, le=2.0,
                                 description="pyramid step of a first pass over the whole frame "
                                             "that finds candidates, searched then at "
                                             "scale_factor around each; at or below "
                                             "scale_factor (1, say): one pass over the whole frame")
    every_n: int = Field(1, ge=1, le=1000,
                         description="detect on every Nth frame of each source only (a track stage "
                                     "carries the boxes across the frames in between)")
    threads: int = Field(0, ge=0, le=64,
                         description="OpenCV threads for the cascade (0: OpenCV's default, one per core)")

    @model_validator(mode="after")
    def _min_size_finds_faces(self) -> HaarParams:
        problem = window_problem(self.min_size, self.cascade)
        if problem:
            raise ValueError(problem)
        return self


MIN_SHRUNK_WIDTH = 240
"""The default shrink stops here (a 640 px frame's, with the default min_size). Below it the
cascade's smallest windows scan a frame only a few of them high, and missed faces it finds
unshrunk: a camera's 256x144 substream lost 22% of its frames' faces."""


def detection_scale(width: int, min_size: int, detect_width: int) -> float:
    """The factor (at most 1) by which a frame ``width`` pixels wide is shrunk before detecting."""
    if detect_width:
        return min(1.0, detect_width / width)
    return min(1.0, max(WINDOW / min_size, MIN_SHRUNK_WIDTH / width))


def window_problem(min_size: int, cascade: str) -> str | None:
    """Why ``min_size`` finds no face, or None: the frame is never enlarged, so the cascade
    finds no face smaller than its window (24 px; 20 for OpenCV's alt cascades), and a smaller
    min_size acted as the window. A cascade that does not load is said by ``preflight``."""
    window = _window(cascade)
    if window is None or min_size >= window:
        return None
    return (f"min_size {min_size} is below the {window} px window of cascade {cascade}, the smallest "
            f"face it finds; give {window} or more")


@functools.lru_cache(maxsize=16)
def _window(cascade: str) -> int | None:
    """Its window; ``~`` is expanded here, as the params are checked before the config expands
    file params: a ``~/`` cascade passed validate and was refused by run."""
    try:
        return min(load_cascade(os.path.expanduser(cascade)).getOriginalWindowSize())
    except (InputError, OSError, ValueError):  # no such file, a name no file can have: said by the path checks
        return None


def cascade_path(name: str) -> Path:
    """Where cascade ``name`` is: one of OpenCV's own, or else a file at that path."""
    shipped = Path(cv2.data.haarcascades, name)
    return shipped if "/" not in name and shipped.exists() else Path(name)


def load_cascade(name: str) -> cv2.CascadeClassifier:
    """The cascade ``name``: one of OpenCV's own, or else a file at that path (a bare name is
    then in the working folder); InputError naming the file if it cannot be loaded. OpenCV says
    why only on file descriptor 2, and for some files raises a SystemError, so the file is
    checked here and OpenCV's own words are dropped."""
    if not hasattr(cv2, "CascadeClassifier"):  # pip put another OpenCV wheel's files over opencv-python's
        raise InputError(f"the OpenCV installed here ({getattr(cv2, '__version__', 'no version')}) has no Haar "
                         "cascades: OpenCV 5, or a second OpenCV wheel (opencv-python-headless, another package's "
                         "dependency) written over opencv-python's cv2 folder; pip uninstall every opencv-* wheel, "
                         "then pip install --force-reinstall 'opencv-python<5'")
    path = cascade_path(name)
    problem = file_problem(str(path))
    if problem == "is a folder":
        raise InputError(f"cascade {path}: is a folder, not a cascade file")
    if problem:
        among = "" if "/" in name or os.path.lexists(path) else (f" (nor is it one of OpenCV's cascades, in "
                                                                  f"{cv2.data.haarcascades})")
        raise InputError(f"cascade {path}: {problem}{among}")
    try:
        with stderr_dropped():
            cascade = cv2.CascadeClassifier(opencv_name(path, "cascade"))
    except (cv2.error, SystemError):
        cascade = None
    if cascade is None or cascade.empty():
        raise InputError(f"cascade {path}: not a Haar cascade OpenCV can load")
    return cascade


class HaarDetector(Stage):
    """Finds frontal faces with OpenCV's Haar cascade, on a downscaled grey copy of the frame.

    The cascade is loaded once per process; boxes are mapped back to full-frame pixels.
    """

    Params = HaarParams
    params: HaarParams
    reads = FRAME
    writes = FACES
    version = 2  # 2: the default shrink stops at 240 px wide, and frames under 640 wide get other boxes
    input_paths = ("cascade",)

    @classmethod
    def read_path(cls, param: str, value: str) -> str:
        return str(cascade_path(value))
    thread_params = ("threads",)
    parallel = True

    @classmethod
    def preflight(cls, params: HaarParams) -> None:
        load_cascade(params.cascade)  # a wrong file is one line before any stage process starts
        problem = window_problem(params.min_size, params.cascade)  # a cascade given as ~/...: expanded now
        if problem:
            raise InputError(problem)

    def open(self) -> None:
        self._cascade = load_cascade(self.params.cascade)
        if self.params.threads:
            cv2.setNumThreads(self.params.threads)

    def detect(self, image: np.ndarray) -> list[Box]:
        """Faces in full-frame pixels, left to right (sorted by x, then y): OpenCV's threads hand
        back boxes in an order that varies from run to run, and the same video must give the
        same CSV."""
        gray = to_gray(image)
        height, width = gray.shape[:2]
        scale = detection_scale(width, self.params.min_size, self.params.detect_width)
        if scale < 1.0:
            gray = cv2.resize(gray, (max(1, round(width * scale)), max(1, round(height * scale))),
                              interpolation=cv2.INTER_AREA)
        if self.params.equalize:
            gray = cv2.equalizeHist(gray)
        side = max(1, round(self.params.min_size * scale))
        if self.params.coarse_factor > self.params.scale_factor:
            found = self._coarse_to_fine(gray, side)
        else:
            found = sorted(map(tuple, self._cascade.detectMultiScale(
                gray, scaleFactor=self.params.scale_factor, minNeighbors=self.params.min_neighbors,
                minSize=(side, side))))
        inv = 1.0 / scale
        return [(round(x * inv), round(y * inv), round(w * inv), round(h * inv)) for x, y, w, h in found]

    def _coarse_to_fine(self, gray: np.ndarray, side: int) -> list[Box]:
        found: list[Box] = []
        for x, y, w, h in self._cascade.detectMultiScale(gray, scaleFactor=self.params.coarse_factor,
                                                         minNeighbors=COARSE_NEIGHBORS,
                                                         minSize=(side, side)):
            margin = round(w * NEIGHBOURHOOD)
            x0, y0 = max(0, x - margin), max(0, y - margin)
            smallest, largest = max(side, int(w / SIZE_BAND)), int(w * SIZE_BAND) + 1
            region = gray[y0:y + h + margin, x0:x + w + margin]
            for fx, fy, fw, fh in self._cascade.detectMultiScale(
                    region, scaleFactor=self.params.scale_factor, minNeighbors=self.params.min_neighbors,
                    minSize=(smallest, smallest), maxSize=(largest, largest)):
                found.append((int(fx) + x0, int(fy) + y0, int(fw), int(fh)))
        return _distinct(found)

    @classmethod
    def graph_warnings(cls, params: HaarParams, after: Collection[str]) -> list[str]:
        if params.every_n > 1 and "track" not in after:
            return [f"looks at one frame in {params.every_n} (every_n), and no track stage after it "
                    "carries the faces over the others: those frames are reported as having no face"]
        return []

    def process(self, packet: Packet) -> Iterable[Packet]:
        detected = packet.index % self.params.every_n == 0
        packet.faces = [Face(box) for box in self.detect(packet.pixels())] if detected else []
        packet.extra["detected"] = detected
        return (packet,)


def _distinct(boxes: list[Box]) -> list[Box]:
    """The boxes, sorted, less those that repeat an earlier one (neighbouring candidates' regions
    overlap). Sorting first makes which of two duplicates is kept independent of the order the
    threads found them in."""
    boxes = sorted(boxes)
    if len(boxes) < 2:
        return boxes
    array = np.array(boxes, float)
    iou = iou_matrix(array, array)
    kept: list[int] = []
    for i in range(len(boxes)):
        if all(iou[i, j] < DUPLICATE_IOU for j in kept):
            kept.append(i)
    return [boxes[i] for i in kept]
