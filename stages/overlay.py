"""The overlay drawn by the ``window`` and ``video_writer`` sinks: one look for screen and file.

It draws on a copy: the frame a sink receives is a read-only view into shared memory that
other stages may still be reading.
"""
from __future__ import annotations

import time

import cv2
import numpy as np
from pydantic import Field

from fer_pipe.messages import EMOTIONS, Packet
from fer_pipe.stage import StageParams

COLOURS: dict[str, tuple[int, int, int]] = {  # BGR, one per emotion, readable on skin and background
    "angry": (40, 40, 230), "disgust": (40, 140, 40), "fear": (160, 60, 160), "happy": (40, 210, 250),
    "sad": (210, 120, 40), "surprise": (230, 200, 40), "neutral": (200, 200, 200),
}
UNCLASSIFIED = (0, 255, 0)
FONT = cv2.FONT_HERSHEY_SIMPLEX


class OverlayParams(StageParams):
    """Parameters shared by every sink that draws the overlay."""

    show_probs: bool = Field(False, description="draw a bar chart of the 7 probabilities beside each face")
    show_fps: bool = Field(True, description="draw the frames per second in the top-left corner")


BAR_WIDTH = 80
"""Pixels of a probability of 1 in the ``show_probs`` bars."""

REACH = 1 << 20
"""How far off the image a box's coordinates are kept: OpenCV draws with 32-bit ints, and a
plug-in detector's or tracker's box past them ended the run with an overflow."""


class FpsMeter:
    """Frames per second from a moving average of the gaps between frames (averaging the gaps,
    not the rates, so jitter does not inflate the figure)."""

    SMOOTHING = 0.9
    """Weight of the running average against the newest gap."""

    def __init__(self) -> None:
        self._gap = 0.0
        self._last: float | None = None

    def tick(self) -> float:
        now = time.monotonic()
        if self._last is not None:
            gap = now - self._last
            self._gap = gap if not self._gap else self.SMOOTHING * self._gap + (1 - self.SMOOTHING) * gap
        self._last = now
        return 1.0 / self._gap if self._gap > 0 else 0.0


def colour_of(label: str | None) -> tuple[int, int, int]:
    return COLOURS.get(label, UNCLASSIFIED) if label else UNCLASSIFIED


def draw(packet: Packet, show_probs: bool = False, fps: float | None = None) -> np.ndarray:
    """A new BGR image: the packet's frame with a box, label and confidence per face. A grey
    frame (which a source may yield) is made BGR, in place of the copy: the video writer's
    OpenCV took it for a frame it could not write, said as a full disk (s40a)."""
    frame = packet.pixels()
    image = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 or frame.shape[2] == 1 else frame.copy()
    for face in packet.faces or []:
        try:
            x, y, w, h = (min(max(int(v), -REACH), REACH) for v in face.box)
        except (ValueError, OverflowError):  # a NaN or infinite box: nowhere to draw it
            continue
        label = face.label  # an argmax each time it is read
        colour = colour_of(label)
        cv2.rectangle(image, (x, y), (x + w, y + h), colour, 2)
        if label is not None:
            text = f"{label} {face.confidence:.0%}"
            if face.track_id is not None:
                text = f"#{face.track_id} {text}"
            (tw, th), base = cv2.getTextSize(text, FONT, 0.6, 2)
            top = max(0, y - th - base - 4)
            left = max(0, min(x, image.shape[1] - tw - 4))  # a face at the right edge kept "#1 neutral 9" (s44c)
            cv2.rectangle(image, (left, top), (left + tw + 4, top + th + base + 4), colour, cv2.FILLED)
            cv2.putText(image, text, (left + 2, top + th + 2), FONT, 0.6, (0, 0, 0), 2, cv2.LINE_AA)
            if show_probs:
                _bars(image, face.probs, (x, y, w, h))
    if fps is not None:
        text = f"{fps:.1f} fps"
        cv2.putText(image, text, (8, 22), FONT, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(image, text, (8, 22), FONT, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def _bars(image: np.ndarray, probs: np.ndarray, box: tuple[int, int, int, int]) -> None:
    """One labelled bar per emotion right of the face, or left of it when there is no room."""
    x, top, w, _ = box
    row, name_w = 13, 50  # the longest name, "surprise", is 44 px at this font size
    left = x + w + 6
    if left + name_w + BAR_WIDTH > image.shape[1]:
        left = max(0, x - 6 - name_w - BAR_WIDTH)
    lengths = np.nan_to_num(np.clip(probs, 0.0, 1.0)) * BAR_WIDTH  # a plug-in's NaN ended the run
    for i, (name, length) in enumerate(zip(EMOTIONS, lengths)):
        y = top + i * row
        cv2.putText(image, name, (left, y + 10), FONT, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
        cv2.rectangle(image, (left + name_w, y + 2), (left + name_w + int(length), y + row - 2),
                      COLOURS[name], cv2.FILLED)
