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
    text_thick = max(1, int(2 * scale))  # rounded, 2 px from 360 lines, which closed up "8" and "#"
    counter: list[Rect] = []  # where the frame rate is: a face's chart leaves it readable, its label may not
    if fps is not None:  # first, so that a face in the corner keeps its label readable
        text = f"{fps:.1f} fps"
        origin = (round(8 * scale), round(22 * scale))
        _outlined(image, text, origin, font, max(1, thick // 2), thick + 1)
        (tw, th), base = cv2.getTextSize(text, FONT, font, thick + 1)
        counter.append((origin[0], origin[1] - th, tw, th + base))
    drawn = []  # (box, label, confidence, probabilities, track id) of the faces with a box to draw
    for face in packet.faces or []:
        try:
            box = tuple(min(max(int(v), -REACH), REACH) for v in face.box)
        except (ValueError, OverflowError):  # a NaN or infinite box: nowhere to draw it
            continue
        smoothed_confidence = face.smoothed_confidence  # a lookup each time it is read: once per face
        smoothed = smoothed_confidence is not None  # the CSV's rule: a plug-in may set the label alone
        label = face.smoothed_label if smoothed else face.label  # an argmax each time it is read
        drawn.append((box, label, smoothed_confidence if smoothed else face.confidence,
                      face.smoothed if smoothed else face.probs, face.track_id))
        x, y, w, h = box
        cv2.rectangle(image, (x, y), (x + w, y + h), colour_of(label), thick)
    boxes = [box for box, *_ in drawn]
    labels: list[Rect | None] = []  # placed so far: none is drawn over another
    frame_rect = (0, 0, image.shape[1], image.shape[0])
    for i, (box, label, confidence, _, track_id) in enumerate(drawn):
        if label is None or not _overlaps(box, frame_rect):  # a plug-in's box wholly off the frame: no label
            labels.append(None)
            continue
        text = f"{label} {confidence:.0%}" if track_id is None else f"#{track_id} {label} {confidence:.0%}"
        others = [r for r in labels if r is not None] + boxes[:i] + boxes[i + 1:]
        labels.append(_label(image, text, box, colour_of(label), font, text_thick, scale, others))
    if show_probs:
        charts = [*counter]  # a chart over it, as a face in the top corner's was, made both unreadable (s67c 2)
        for i, (box, _, _, probs, _) in enumerate(drawn):
            if labels[i] is None:
                continue
            # its own label it may cover; its own face not: a portrait frame's chart covered it
            others = [r for j, r in enumerate(labels) if r is not None and j != i]
            chart = _bars(image, probs, box, scale, [*others, *boxes, *charts])
            if chart is not None:
                charts.append(chart)
    return image


Rect = tuple[int, int, int, int]
"""x, y, width and height in the image."""


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _label(image: np.ndarray, text: str, box: Rect, colour: tuple[int, int, int], font: float, thick: int,
           scale: float, taken: list[Rect]) -> Rect:
    """Draw a face's label, boxed in its colour, above the face, else below it, else higher up,
    where it covers nothing of ``taken`` (the labels drawn before, the other faces): a label is
    some twice as wide as its face, and of a row of faces each covered the one before it ("#4
    ha"; "#12 surprise 8" for 87 %), and one moved up into another face's box was read as its.
    Where no such place is free (a crowd at the frame's top), above its face all the same."""
    x, y, w, h = box
    (tw, th), base = cv2.getTextSize(text, FONT, font, thick)
    pad = round(2 * scale)
    width, height = tw + 2 * pad, th + base + 2 * pad
    left = max(0, min(x, image.shape[1] - width))  # a face at the right edge kept "#1 neutral 9"
    above = max(0, y - height)
    tops = [above, min(max(0, y + h), image.shape[0] - height), *range(above - height, -1, -height)]
    top = next((t for t in tops if not any(_overlaps((left, t, width, height), r) for r in taken)), above)
    cv2.rectangle(image, (left, top), (left + width, top + height), colour, cv2.FILLED)
    cv2.putText(image, text, (left + pad, top + th + pad), FONT, font, (0, 0, 0), thick, cv2.LINE_AA)
    return left, top, width, height


def _bars(image: np.ndarray, probs: np.ndarray, box: Rect, scale: float, others: list[Rect]) -> Rect | None:
    """One labelled bar per emotion right of the face, or left of it, and raised where the frame
    ends below it (the last row, often the leading one, was cut), where it covers no face, other
    label or chart; none where both sides would, as a chart inside a neighbour's box was read as
    that face's. The names are outlined, as the label is boxed: white alone vanished on a white
    wall, and so did a stroke 1 px wide on a 4K frame shown at screen size."""
    x, y, w, _ = box
    row, name_w, bar_w = round(13 * scale), round(50 * scale), round(BAR_WIDTH * scale)  # "surprise" is 44 px
    width, height = name_w + bar_w, row * len(EMOTIONS)
    top = max(0, min(y, image.shape[0] - height))
    gap = round(6 * scale)
    sides = [x + w + gap] if x + w + gap + width <= image.shape[1] else []
    sides.append(max(0, x - gap - width))
    left = next((s for s in sides if not any(_overlaps((s, top, width, height), r) for r in others)), None)
    if left is None:
        return None
    font, thick = 0.35 * scale, max(1, round(scale))
    lengths = np.nan_to_num(np.clip(probs, 0.0, 1.0)) * bar_w  # a plug-in's NaN ended the run
    for i, (name, length) in enumerate(zip(EMOTIONS, lengths)):
        row_top = top + i * row
        _outlined(image, name, (left, row_top + round(10 * scale)), font, thick, thick + max(2, round(2 * scale)))
        cv2.rectangle(image, (left + name_w, row_top + 2), (left + name_w + int(length), row_top + row - 2),
                      COLOURS[name], cv2.FILLED)
    return left, top, width, height


def stale(image: np.ndarray, why: str) -> np.ndarray:
    """The last image a window showed, in grey, with ``why`` across it: a camera that was down
    left its last face's label and frame rate on screen, as if live."""
    grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) // 2, cv2.COLOR_GRAY2BGR)
    scale = scale_of(grey)
    font, thick = 0.8 * scale, max(1, int(2 * scale))
    (tw, th), base = cv2.getTextSize(why, FONT, font, thick)
    if tw > 0.95 * grey.shape[1]:  # "no frames for 1017 s" ran off a narrow or portrait frame
        font *= 0.95 * grey.shape[1] / tw
        (tw, th), base = cv2.getTextSize(why, FONT, font, thick)
    origin = (max(0, (grey.shape[1] - tw) // 2), (grey.shape[0] + th) // 2)
    _outlined(grey, why, origin, font, thick, thick + 2)
    return grey


def _outlined(image: np.ndarray, text: str, origin: tuple[int, int], font: float, thick: int, outline: int) -> None:
    """White text over a black stroke ``outline`` thick: readable on a white wall and a dark room."""
    cv2.putText(image, text, origin, FONT, font, (0, 0, 0), outline, cv2.LINE_AA)
    cv2.putText(image, text, origin, FONT, font, (255, 255, 255), thick, cv2.LINE_AA)
