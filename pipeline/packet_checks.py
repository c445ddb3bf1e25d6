"""What a stage hands on, checked against the stage contract in the stage that made it: a
source's frames, a stage's returned packets, their faces and images. Unchecked, the stage a bad
packet reached failed instead, on a missing attribute or an OpenCV assertion naming neither."""
from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from .frames import FrameRef
from .messages import EMOTIONS, FACES, Face, Packet, kinds_read, provides


@functools.cache
def makes_faces(reads: str | tuple[str, ...] | None, writes: str | None) -> bool:
    """Whether a stage of this contract finds the faces (a detector): it writes faces, and what
    it reads has none. Such a stage must say "none found" with ``[]``; where it left ``None``
    ("not looked at"), the classifier after it passed the frame on and the CSV wrote it as a
    frame with no face, exit 0 (s63a 2)."""
    return provides(writes or "", FACES) and not any(provides(kind, FACES) for kind in kinds_read(reads or ()))


def packets_of(result: Iterable[Packet] | None, method: str = "process", captured: float = 0.0,
               finds_faces: bool = False) -> list[Packet]:
    """What a stage's ``process`` (or ``finish``) returned, as a list. Anything but packets, or a
    packet whose faces or image the stages do not take, is a TypeError saying so, raised in the
    stage that returned it: unchecked, it was the stage it reached that failed, with a message
    about a missing attribute or an OpenCV assertion. A packet made anew (``Packet(...)``) gets
    the ``captured`` time of the one the stage was given: without it the zmq sink's heartbeats
    stopped after the first and a sink's latency read 12 hours. ``finds_faces``: the stage is
    one that ``makes_faces``, whose frames must each have a list of faces, none of them wholly
    outside the frame."""
    if result is None:
        raise TypeError(f"{method} returned None, not an iterable of packets (return () to pass nothing on)")
    if isinstance(result, Packet):  # iterating it would fail with "'Packet' object is not iterable"
        raise TypeError(f"{method} returned a Packet, not an iterable of packets (return (packet,) to pass it on)")
    out = list(result)
    for item in out:
        if not isinstance(item, Packet):
            raise TypeError(f"{method} returned a {type(item).__name__} among its packets, not a Packet")
        problem = _dated(item)  # a NaN time was written to the CSV and made its episode's end NaN, exit 0 (s67a 1)
        if problem:
            raise TypeError(f"{method} returned {problem}")
        if (item.outage or item.ended) and method in ("process", "finish"):  # taken as a frame: written twice (s68a 3)
            raise TypeError(f"{method} returned a packet marked as a source's {'end' if item.ended else 'outage'} "
                            f"(frame {item.index}); only a source makes those, and a stage gets them in its "
                            f"{'ended' if item.ended else 'outage'}")
        if not isinstance(item.extra, dict):  # a sink after it failed on .get, blamed (s67a 1)
            raise TypeError(f"{method} returned frame {item.index} whose extra is a {type(item.extra).__name__}, "
                            "not a dict")
        problem = _faces_problem(item.faces)
        if problem:
            raise TypeError(f"{method} returned a packet {problem}")
        if finds_faces and item.faces is None and not item.outage:
            raise TypeError(f"{method} returned frame {item.index} with faces None (not looked at); a stage that "
                            "writes faces sets a list, [] where it found none")
        if finds_faces and item.faces and item.image is not None:  # not the classifier, given such a box
            outside = _box_outside(item.faces, item.image.shape)
            if outside:
                raise TypeError(f"{method} returned frame {item.index} with a face whose {outside}")
        if not item.captured:
            item.captured = captured
        shown = "" if isinstance(item.image, FrameRef) else not_a_frame(item.image)
        if shown:  # unchecked, the detector after it failed on an OpenCV assertion blaming its scale factor
            raise TypeError(f"{method} returned a packet with {shown} for its image; {A_FRAME}")
    return out


NUMBERS = (int, float, np.integer, np.floating)
"""What a probability may be: a plug-in's ``list(model_output)`` holds numpy scalars."""
PROB_SLACK = 1e-3
"""How far outside [0, 1] a probability may stray by float rounding (a softmax, an average of two)."""


def _faces_problem(faces: Any) -> str:
    """What is wrong with a packet's faces, said after "a packet", or nothing."""
    wrong = (faces if not isinstance(faces, (list, type(None))) else
             next((face for face in faces or () if not isinstance(face, Face)), None))
    if wrong is not None:  # unchecked, the stage after it failed, on a missing attribute
        return f"whose faces are or hold a {type(wrong).__name__}, not a list of fer_pipe.messages.Face"
    return next((f"with a face whose {problem}" for problem in map(_face_problem, faces or ()) if problem), "")


def _box_outside(faces: list[Face], shape: tuple[int, ...]) -> str:
    """What is wrong with the first box of ``faces`` that has no pixel in a frame of ``shape``, or
    nothing. A plug-in detector's boxes in other coordinates (a shrunk frame's, x and y swapped)
    were each classified from the one edge pixel the crop keeps, with a confident label (s63a 3)."""
    height, width = shape[:2]
    for face in faces:
        x, y, w, h = face.box
        if x >= width or y >= height or x + w <= 0 or y + h <= 0:
            return f"box {face.box!r} has no pixel in its {width} x {height} frame; a box is in whole pixels of its frame"
    return ""


def _face_problem(face: Face) -> str:
    """What is wrong with a face a stage passes on, or nothing. Unchecked, a plug-in detector's
    box of three numbers failed the classifier after it, a float box went into the CSV's
    integer columns, and a plug-in classifier's one NaN made its track's smoothed label NaN for
    the rest of the track, exit 0; probabilities of another length failed the csv sink. A good
    box of numpy integers or a list is made a tuple of ints: OpenCV's boxes, passed on as they
    come, failed a plug-in sink's ``json.dumps`` (the README's), which the built-in sinks' own
    conversion hid (s66a 1)."""
    box = given = face.box
    if type(box) is not tuple or len(box) != 4 or not all(type(v) is int for v in box):  # not as the built-ins' are
        if (not isinstance(box, (tuple, list)) or len(box) != 4
                or not all(type(v) is int or isinstance(v, np.integer) for v in box)):
            return f"box is {given!r}; a box is (x, y, w, h), whole pixels, w and h above 0"
        box = tuple(map(int, box))
    if box[2] <= 0 or box[3] <= 0:
        return f"box is {given!r}; a box is (x, y, w, h), whole pixels, w and h above 0"
    if box is not given:
        face.box = box
    # and what the sinks and episodes read of a tracker's, a smoother's or anyone's face: unchecked,
    # a wrong one failed the sink it reached, blamed, or was written as it was, exit 0 (s67a 1)
    track = face.track_id
    if track is not None and type(track) is not int:
        if isinstance(track, bool) or not isinstance(track, np.integer):
            return f"track_id is {track!r}; a track id is an int, or None where no tracker ran"
        face.track_id = int(track)
    if not isinstance(face.extra, dict):
        return f"extra is a {type(face.extra).__name__}, not a dict"
    label = face.smoothed_label
    if label is not None and label not in EMOTIONS:
        return f"smoothed_label is {label!r}; it is one of the emotions ({', '.join(EMOTIONS)}), or None"
    return _probabilities_problem("probs", face.probs) or _probabilities_problem("smoothed", face.smoothed)


def _probabilities_problem(name: str, probs: Any) -> str:
    """What is wrong with a face's ``probs`` or ``smoothed``, or nothing where it is None."""
    if probs is None:
        return ""
    if type(probs) is np.ndarray and probs.dtype.kind in "fiu":  # all numbers of its kind: least, most and sum
        values = probs.tolist() if probs.shape == (len(EMOTIONS),) else None
        good = (values is not None and -PROB_SLACK <= min(values) and max(values) <= 1 + PROB_SLACK
                and math.isfinite(sum(values)))  # a NaN may pass min and max, not the sum
    else:  # a list, or an array of objects or a masked one, whose items may be anything (s67f 6)
        values = probs.tolist() if isinstance(probs, np.ndarray) else probs
        good = (isinstance(values, (list, tuple)) and len(values) == len(EMOTIONS)
                and all(isinstance(v, NUMBERS) and not isinstance(v, bool) and -PROB_SLACK <= v <= 1 + PROB_SLACK
                        for v in values))  # NaN fails the comparisons
    if not good:
        return (f"{name} are {probs!r}; they are one probability from 0 to 1 for each of the "
                f"{len(EMOTIONS)} emotions ({', '.join(EMOTIONS)})")
    return ""


def _dated(item: Packet) -> str:
    """What is wrong with a packet's frame number or time, said after "yielded" or "returned", or
    nothing; numpy's are made Python's, which failed a plug-in sink's ``json.dumps``."""
    index, timestamp = item.index, item.timestamp
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0 and not item.outage:
        # -1 is an outage packet's number while its source has sent no frame
        return f"frame number {index!r}; a frame number is an int >= 0"
    try:
        seconds = float(timestamp) if isinstance(timestamp, (float, int, np.floating, np.integer)) else math.nan
    except OverflowError:  # 10**400, past a float (s67f 2)
        seconds = math.nan
    if isinstance(timestamp, bool) or not math.isfinite(seconds):  # a NaN made its track's smoothed values NaN
        return f"frame {index} dated {timestamp!r}; a timestamp is a finite number of seconds"
    if type(index) is not int or type(timestamp) is not float:
        item.index, item.timestamp = int(index), seconds
    return ""


def frame_of(source_id: str, item: Any, last_index: int | None) -> Packet:
    """What a source's ``frames`` yielded, checked against the source contract: a TypeError
    there, raised in the source, where the stage that met it failed instead (the detector, on an
    OpenCV assertion or a missing attribute), or nothing did (a packet of another source id, a
    frame number given twice, which the CSV's "every frame once, in order" then broke)."""
    if not isinstance(item, Packet):
        raise TypeError(f"frames() yielded a {type(item).__name__}, not a Packet")
    if item.source != source_id:
        raise TypeError(f"frames() yielded a packet of source {item.source!r}; this source's packets carry "
                        f"{source_id!r} (Packet(self.source_id, ...))")
    problem = _dated(item)
    if problem:
        raise TypeError(f"frames() yielded {problem}")
    index = item.index
    if item.outage:
        last = -1 if last_index is None else last_index
        if index != last or item.image is not None or item.faces is not None:
            after = "before any frame" if last_index is None else f"after frame {last_index}"
            raise TypeError(f"frames() yielded an outage packet numbered {index} {after}: make it with "
                            "fer_pipe.messages.outage(source, the last frame's number or -1 before the first, time)")
        return item
    if last_index is not None and index <= last_index:
        raise TypeError(f"frames() yielded frame {index} after frame {last_index}; frame numbers must increase")
    if item.captured and not 0 < item.captured <= time.monotonic():
        # a wall-clock time there read as a latency of -1.8e12 ms and "down for -1796538587 s", exit 0 (s63a 1)
        raise TypeError(f"frames() yielded frame {index} captured at {item.captured!r}, not a time.monotonic() "
                        "of the past; leave captured 0 (the runner sets it as the frame is read), or set it to "
                        "time.monotonic() when the frame was taken")
    shown = not_a_frame(item.image)
    if shown:
        raise TypeError(f"frames() yielded frame {index} with {shown} for its image; {A_FRAME}")
    problem = _faces_problem(item.faces)  # a source replaying recorded detections: the classifier was blamed
    if problem:
        raise TypeError(f"frames() yielded frame {index}, a packet {problem}")
    outside = _box_outside(item.faces, item.image.shape) if item.faces and item.image is not None else ""
    if outside:
        raise TypeError(f"frames() yielded frame {index} with a face whose {outside}")
    return item


A_FRAME = "a frame is a uint8 array, H x W x 3 (BGR) or grey, of at least one pixel"


def not_a_frame(image: Any) -> str:
    """What ``image`` is, where it is not what the stages take (``A_FRAME``); empty where it is,
    or where there is none. The detector met a float image with an OpenCV assertion that blamed
    its scale factor, and an image of no pixels (0 x 640 x 3) with another."""
    if image is None or (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.size
                         and (image.ndim == 2 or image.ndim == 3 and image.shape[2] in (1, 3))):
        return ""
    return f"an array of {image.dtype} shaped {image.shape}" if isinstance(image, np.ndarray) \
        else f"a {type(image).__name__}"
