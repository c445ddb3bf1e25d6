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


def scale_of(image: np.ndarray) -> float:
    """How much larger than at 480 lines the overlay is drawn: at a fixed size, a 4K camera's
    label was 7 pixels high on a 1080p screen, and a 160x120 frame's ran off it."""
    return min(max(image.shape[0] / 480, 0.5), 4.0)


def draw(packet: Packet, show_probs: bool = False, fps: float | None = None) -> np.ndarray:
    """A new BGR image: the packet's frame with a box, label and confidence per face. A grey
    frame (which a source may yield) is made BGR, in place of the copy: the video writer's
    OpenCV took it for a frame it could not write, said as a full disk. Where a smoother
    ran, its label, confidence and probabilities are drawn: the raw ones flickered on screen
    while the CSV's smoothed label held."""
    frame = packet.pixels()
    image = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 or frame.shape[2] == 1 else frame.copy()
    scale = scale_of(image)
    font, thick = 0.6 * scale, max(1, round(2 * scale))
    if fps is not None:  # first, so that a face in the corner keeps its label readable
        text = f"{fps:.1f} fps"
        origin = (round(8 * scale), round(22 * scale))
        _outlined(image, text, origin, font, max(1, thick // 2), thick + 1)
    for face in packet.faces or []:
        try:
            x, y, w, h = (min(max(int(v), -REACH), REACH) for v in face.box)
        except (ValueError, OverflowError):  # a NaN or infinite box: nowhere to draw it
            continue
        smoothed_confidence = face.smoothed_confidence  # a lookup each time it is read: once per face
        smoothed = smoothed_confidence is not None  # the CSV's rule: a plug-in may set the label alone
        label = face.smoothed_label if smoothed else face.label  # an argmax each time it is read
        colour = colour_of(label)
        cv2.rectangle(image, (x, y), (x + w, y + h), colour, thick)
        if label is not None:
            text = f"{label} {(smoothed_confidence if smoothed else face.confidence):.0%}"
            if face.track_id is not None:
                text = f"#{face.track_id} {text}"
            (tw, th), base = cv2.getTextSize(text, FONT, font, thick)
            pad = round(2 * scale)
            top = max(0, y - th - base - 2 * pad)
            left = max(0, min(x, image.shape[1] - tw - 2 * pad))  # a face at the right edge kept "#1 neutral 9"
            cv2.rectangle(image, (left, top), (left + tw + 2 * pad, top + th + base + 2 * pad), colour, cv2.FILLED)
            cv2.putText(image, text, (left + pad, top + th + pad), FONT, font, (0, 0, 0), thick, cv2.LINE_AA)
            if show_probs:
                _bars(image, face.smoothed if smoothed else face.probs, (x, y, w, h), scale)
    return image


def _bars(image: np.ndarray, probs: np.ndarray, box: tuple[int, int, int, int], scale: float) -> None:
    """One labelled bar per emotion right of the face, or left of it when there is no room, and
    raised where the frame ends below it: the last row, often the leading one, was cut.
    The names are outlined, as the label is boxed: white alone vanished on a white wall."""
    x, top, w, _ = box
    row, name_w, bar_w = round(13 * scale), round(50 * scale), round(BAR_WIDTH * scale)  # "surprise" is 44 px
    left = x + w + round(6 * scale)
    if left + name_w + bar_w > image.shape[1]:
        left = max(0, x - round(6 * scale) - name_w - bar_w)
    top = max(0, min(top, image.shape[0] - row * len(EMOTIONS)))
    font, thick = 0.35 * scale, max(1, round(scale))
    lengths = np.nan_to_num(np.clip(probs, 0.0, 1.0)) * bar_w  # a plug-in's NaN ended the run
    for i, (name, length) in enumerate(zip(EMOTIONS, lengths)):
        y = top + i * row
        _outlined(image, name, (left, y + round(10 * scale)), font, thick, thick + 2)
        cv2.rectangle(image, (left + name_w, y + 2), (left + name_w + int(length), y + row - 2),
                      COLOURS[name], cv2.FILLED)


def stale(image: np.ndarray, why: str) -> np.ndarray:
    """The last image a window showed, in grey, with ``why`` across it: a camera that was down
    left its last face's label and frame rate on screen, as if live."""
    grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) // 2, cv2.COLOR_GRAY2BGR)
    scale = scale_of(grey)
    font, thick = 0.8 * scale, max(1, round(2 * scale))
    (tw, th), base = cv2.getTextSize(why, FONT, font, thick)
    origin = (max(0, (grey.shape[1] - tw) // 2), (grey.shape[0] + th) // 2)
    _outlined(grey, why, origin, font, thick, thick + 2)
    return grey


def _outlined(image: np.ndarray, text: str, origin: tuple[int, int], font: float, thick: int, outline: int) -> None:
    """White text over a black stroke ``outline`` thick: readable on a white wall and a dark room."""
    cv2.putText(image, text, origin, FONT, font, (0, 0, 0), outline, cv2.LINE_AA)
    cv2.putText(image, text, origin, FONT, font, (255, 255, 255), thick, cv2.LINE_AA)
