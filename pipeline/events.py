"""The versioned event schema shared by every network sink, the subscriber and the collector.

Field names are the CSV's column names, so a row and an event say the same thing the same way.
On the wire an event is a ZeroMQ multipart message ``[topic, json]``; the topic starts with the
event family and ends with the source id (``emotion.cam1``, ``episode.cam1``, ``face.cam1``),
so a subscriber filters by source with a plain prefix subscription.

Schema version 1:
- ``frame`` (topic ``emotion.<source>``): ``schema, type, source, frame, timestamp, faces``;
  each face ``face, x, y, w, h, track_id, label, confidence, probs`` (probs: emotion -> p),
  ``smoothed_label, smoothed_confidence`` (None without a ``smooth`` stage or until it settles),
  and the keys the zmq sink's ``extra`` names (a face's extra data, else its frame's, else None).
- ``episode`` (topic ``episode.<source>``): ``schema, type, source, track_id, label, start_frame,
  end_frame, start_time, end_time, duration_s, mean_confidence, peak_confidence``.
- ``face_appeared`` / ``face_lost`` (topic ``face.<source>``): ``schema, type, source, track_id,
  frame, timestamp``.
- ``source_down`` / ``source_up`` (topic ``source.<source>``): ``schema, type, source, frame,
  timestamp, since``; a live source's stream is down (its last frame, null if it has sent none,
  and the time it was said so) or came back (its first frame since, and that frame's time);
  ``since``: when it was first said down, this outage (``timeout_s`` after its last frame, or
  after the source started).
- ``source_end`` (topic ``source.<source>``): ``schema, type, source, frame, timestamp``; the
  source's stream is over (a file read to its end, or cut short after the frames it read): its
  last frame and that frame's time. Not sent for a source that sent no frame, nor for one the
  run's stop ended (Ctrl-C, SIGTERM, a stage's failure).
Additive changes (new fields) keep the version; renaming or removing a field bumps it.
"""
from __future__ import annotations

import json
import math
from collections.abc import Collection, Sequence
from typing import Any, Literal

import numpy as np

from .messages import EMOTIONS, Packet, emotion_probs, extra_values

SCHEMA_VERSION = 1
TOPIC_PREFIX = {"frame": "emotion", "episode": "episode", "face_appeared": "face", "face_lost": "face",
                "source_down": "source", "source_up": "source", "source_end": "source"}


FACE_FIELDS = ("face", "x", "y", "w", "h", "track_id", "label", "confidence", "probs", "smoothed_label",
               "smoothed_confidence")
"""A face's fields in a frame event, before any ``extra`` key."""


def frame_event(packet: Packet, precision: int = 4, extra: Sequence[str] = ()) -> dict[str, Any]:
    """The ``frame`` event of a packet; ``extra``: keys of a face's extra data (else its
    frame's) to add to each face, as the csv sink adds them as columns."""
    faces = []
    frame_values = [packet.extra.get(key) for key in extra]
    for i, face in enumerate(packet.faces or []):
        x, y, w, h = (int(v) for v in face.box)
        entry: dict[str, Any] = {"face": i, "x": x, "y": y, "w": w, "h": h, "track_id": face.track_id,
                                 "label": face.label, "confidence": None, "probs": None}
        if face.probs is not None:
            entry["confidence"] = round(float(face.confidence), precision)
            entry["probs"] = {e: round(float(p), precision) for e, p in zip(EMOTIONS, emotion_probs(face))}
        smoothed = face.smoothed_confidence
        entry["smoothed_label"] = None if smoothed is None else face.smoothed_label  # the csv sink's rule
        entry["smoothed_confidence"] = None if smoothed is None else round(smoothed, precision)
        entry.update(zip(extra, map(_json_value, extra_values(face, extra, frame_values))))
        faces.append(entry)
    return {"schema": SCHEMA_VERSION, "type": "frame", "source": packet.source, "frame": packet.index,
            "timestamp": round(float(packet.timestamp), 3), "faces": faces}


def _json_value(value: Any) -> Any:
    """``value`` as JSON holds it: a number, text, true/false or null as it is (a numpy scalar
    as its Python number), a list, tuple or numpy array as an array (an array of more items
    than numpy prints, 1,000, as numpy's summary) and a dict as an object, their items so too,
    and anything else (a set) as its text, as the csv sink writes it: a
    list was sent as Python's text of it, "[1]", which jq counted as 3 characters.
    NaN and infinity are null: written as such, the event was no JSON outside Python's reader."""
    if isinstance(value, np.ndarray) and value.size > np.get_printoptions()["threshold"]:
        return str(value)  # numpy's summary, as before: a face's crop made an event past a subscriber's 1 MiB
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_value(item) for key, item in value.items()}
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


FRAME_COLUMNS = ["source", "frame", "timestamp", "face", "x", "y", "w", "h", "track_id", "label",
                 "confidence", *(f"p_{e}" for e in EMOTIONS), "smoothed_label", "smoothed_confidence"]
"""The per-frame CSV's columns, one row per face, as the csv sink writes them and the collector
and ``subscribe`` rebuild them from events. ``smoothed_*``: a smoother's settled label and its
smoothed probability; empty without one."""

EVENT_NAMES = frozenset({"schema", "type", "faces", *FRAME_COLUMNS, *FACE_FIELDS})
"""Every name a frame event or the CSV rows made of it use: none may be an ``extra`` key (a
face's ``source`` replaced the frame's in ``subscribe --format csv``)."""


def free_names(keys: list[str], taken: Collection[str], what: str) -> list[str]:
    """A sink's ``extra`` keys, unless one is ``taken`` or given twice: ValueError naming it."""
    clash = next((k for i, k in enumerate(keys) if k in taken or k in keys[:i]), None)
    if clash is not None:
        raise ValueError(f"{clash!r} is {what} already")
    return keys


EPISODE_FIELDS = ("source", "track_id", "label", "start_frame", "end_frame", "start_time", "end_time",
                  "duration_s", "mean_confidence", "peak_confidence")
"""An episode's fields, in the order of the episodes CSV's columns."""


def episode_event(episode: dict[str, Any]) -> dict[str, Any]:
    """An ``episode`` event from a mapping that holds every name of ``EPISODE_FIELDS``."""
    return {"schema": SCHEMA_VERSION, "type": "episode", **{k: episode[k] for k in EPISODE_FIELDS}}


def face_event(kind: Literal["face_appeared", "face_lost"], source: str, track_id: int, frame: int,
               timestamp: float) -> dict[str, Any]:
    """A ``face_appeared`` or ``face_lost`` event; for a lost face, frame and time it was last seen."""
    return {"schema": SCHEMA_VERSION, "type": kind, "source": source, "track_id": track_id,
            "frame": frame, "timestamp": round(float(timestamp), 3)}


def source_event(kind: Literal["source_down", "source_up"], packet: Packet, since: float) -> dict[str, Any]:
    """A ``source_down`` event from a live source's outage packet, or a ``source_up`` from its
    first frame after one: while a camera is down no frame event comes, and a subscriber could
    not tell a camera that is down from a run that has died. ``since``: when the outage was
    first said, which a subscriber that connects during it has no other way to learn."""
    return {"schema": SCHEMA_VERSION, "type": kind, "source": packet.source,
            "frame": packet.index if packet.index >= 0 else None, "timestamp": round(float(packet.timestamp), 3),
            "since": round(float(since), 3)}


def check_source_event(event: dict[str, Any]) -> None:
    """Raise one of ``MALFORMED`` unless ``event`` has the fields ``source_event`` gives it: a
    reader that passes events on (``fer-pipe collect``) took a stranger's bare ``source_down``
    into a camera's sequence and republished what no subscriber could read."""
    frame = event["frame"]
    if frame is not None and (type(frame) is not int or frame < 0):  # JSON's true is a bool, no number
        raise ValueError(f"'frame' must be a frame number or null, not {frame!r}")
    for name in ("timestamp", "since"):
        _check_seconds(event, name)


MAX_FACES = 4096
"""The most faces a frame event may hold: one of MAX_EVENT_BYTES holds about 3,400 real faces,
where one of empty objects made 340,000 rows and 290 MB of a collector's memory."""


def check_frame_event(event: dict[str, Any]) -> None:
    """Raise one of ``MALFORMED`` unless the fields of a frame event, as ``decode`` reads it (its
    numbers finite), that make its rows are of the types a run's JSON gives them (others, a
    sink's ``extra`` keys, may hold anything): a stranger's ``"timestamp": "nan"``, ``"frame":
    true`` or a face of ``{}`` were rows no run writes. Exact types, as JSON gives: the
    collector checks every event it takes."""
    frame = event["frame"]
    if type(frame) is not int or frame < 0:  # JSON's true is a bool, no number
        raise ValueError(f"'frame' must be a frame number, not {frame!r}")
    _check_seconds(event, "timestamp")
    faces = event.get("faces") or []
    if type(faces) is not list:
        raise ValueError("'faces' must be a list of objects")
    if len(faces) > MAX_FACES:
        raise ValueError(f"{len(faces)} faces, more than the {MAX_FACES} an event may hold")
    for face in faces:
        if type(face) is not dict:
            raise ValueError("'faces' must be a list of objects")
        if not type(face.get("x")) is type(face.get("y")) is type(face.get("w")) is type(face.get("h")) is int:
            raise ValueError("a face's x, y, w and h must be whole numbers")
        for name, (kinds, what) in FACE_TYPES.items():
            value = face.get(name)
            if value is not None and type(value) not in kinds:
                raise ValueError(f"a face's {name!r} must be {what} or null, not {value!r}")
        probs = face.get("probs") or {}
        if type(probs) is not dict or not all(type(p) in NUMBERS for p in probs.values()):
            raise ValueError("a face's 'probs' must be an object of emotion: probability")


NUMBERS = (int, float)
"""The types of a number in decoded JSON."""
FACE_TYPES = {"face": ((int,), "a whole number"), "track_id": ((int,), "a whole number"), "label": ((str,), "text"),
              "smoothed_label": ((str,), "text"), "confidence": (NUMBERS, "a number"),
              "smoothed_confidence": (NUMBERS, "a number")}
"""A face's fields besides its box and probabilities: the types they may be when not null, and
the words for them."""


def _check_seconds(event: dict[str, Any], name: str) -> None:
    """A time of a decoded event: ``decode`` refused the numbers that are not finite."""
    if type(event[name]) not in NUMBERS:  # JSON's true is a bool, no number
        raise ValueError(f"{name!r} must be a finite number of seconds, not {event[name]!r}")


MAX_EVENT_BYTES = 1 << 20
"""The largest message a reader of events takes (a frame with a hundred faces is about 30 KB):
ZeroMQ reads a message whole into memory, and one of 500 MB from whoever reaches the port took
the collector to 1 GB. A peer that sends a larger one is disconnected."""

MAX_SUBSCRIPTION_BYTES = 4096
"""The largest message a subscriber may send to a publisher (a subscription: a byte and a topic
such as ``emotion.cam1``). libzmq keeps a subscription in a trie at about a hundred bytes a byte:
one of 10 MB from any local user took a sink from 47 MB to over 1 GB. A peer that sends a larger
one is disconnected. The bound is a message's: many subscriptions under it still cost memory,
which only loopback or CURVE (``curve_clients``) keeps strangers from."""

MALFORMED = (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError)
"""What reading an event of the wrong shape raises (``decode``, ``event_rows``, field access;
``int()`` of JSON's unbounded ``1e400``, arrays nested past the decoder's recursion limit):
readers of a socket anyone may write to skip such an event with a line instead of ending."""


def topic(event: dict[str, Any]) -> str:
    """``<type prefix>.<source>``: a subscriber filters by source with a prefix subscription."""
    return f"{TOPIC_PREFIX[event['type']]}.{event['source']}"


def encode(event: dict[str, Any]) -> list[bytes]:
    """The two frames of a multipart message: topic, then compact JSON."""
    return [topic(event).encode(), as_json(event)]


def as_json(event: dict[str, Any]) -> bytes:
    """An event as compact JSON, numpy scalars as their Python numbers (``_numpy_scalar``)."""
    return json.dumps(event, separators=(",", ":"), default=_numpy_scalar).encode()


def _numpy_scalar(value: Any) -> Any:
    """A numpy scalar as its Python number: the stage contract takes numpy integers as frame
    numbers, box values and track ids (a plug-in's tracker numbered faces with ``np.arange``),
    which the csv sink wrote and every JSON sink failed on at the first frame."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def decode(frames: list[bytes]) -> dict[str, Any]:
    """The event of an ``encode``d message: its JSON, the last frame (the topic is only for
    filtering). NaN and infinity (``NaN``, ``1e400``) are refused, as no fer-pipe sink sends them:
    taken, they were rows of "nan" and republished as no JSON outside Python's reader."""
    return json.loads(frames[-1], parse_constant=_not_finite, parse_float=_finite)


def _not_finite(word: str) -> float:
    raise ValueError(f"{word} is no number JSON holds")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is past what a float holds")
    return value


def event_rows(event: dict[str, Any], columns: list[str], precision: int) -> list[list[str]]:
    """The CSV rows of one frame event, as the ``csv`` sink writes the same frame (``fer-pipe
    subscribe --format csv`` and ``fer-pipe collect`` both write them).

    Columns are filled by name (the event's field names are the CSV's column names, and
    ``probs`` becomes ``p_<emotion>``), so a column the csv sink gains fills in as soon as
    the events carry the field of that name. An event of another shape raises one of
    ``MALFORMED``.
    """
    check_frame_event(event)
    head = {"source": event["source"], "frame": event["frame"], "timestamp": f"{event['timestamp']:.3f}"}
    rows = []
    for face in event.get("faces") or [{}]:  # a face's own source, frame or timestamp filed the row under another camera
        values = {**{k: v for k, v in face.items() if k != "probs"}, **head}
        for emotion, p in (face.get("probs") or {}).items():
            values[f"p_{emotion}"] = p
        row = [_cell(values.get(c), c, precision) for c in columns]
        "".join(row).encode()  # "\ud800" is valid JSON but no UTF-8: UnicodeEncodeError, a ValueError
        rows.append(row)
    return rows


def _cell(value: Any, column: str, precision: int) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and column != "timestamp":
        return f"{value:.{precision}f}"
    return str(value)


def end_event(packet: Packet) -> dict[str, Any]:
    """A ``source_end`` event from the packet that ends a source's stream (``Packet.ended``).
    Without it a subscriber could not tell a file that is done from a run that hangs (both go
    quiet), nor where one run's frames end and the next run's, numbered from 0 again, begin."""
    return {"schema": SCHEMA_VERSION, "type": "source_end", "source": packet.source,
            "frame": packet.index, "timestamp": round(float(packet.timestamp), 3)}
