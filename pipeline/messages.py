"""The messages stages exchange, and the kinds a stage declares it reads and writes.

One ``Packet`` travels per frame. Each stage adds to it (boxes, probabilities, track ids) and
passes it on, so a sink sees everything known about its frame. Pixels never travel inside the
packet between processes: the source's process writes the image into shared memory and sends a
``FrameRef`` in its place.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""Class order of FER-2013 (the contest's emotion codes 0-6) and of every model output. Here,
with the messages, not with the pixel code: subscribers and collectors read it without OpenCV."""


FRAME, FACES, EXPRESSIONS = "frame", "faces", "expressions"

PROVIDES: dict[str, frozenset[str]] = {
    FRAME: frozenset({FRAME}),
    FACES: frozenset({FRAME, FACES}),
    EXPRESSIONS: frozenset({FRAME, FACES, EXPRESSIONS}),
}
"""What each kind guarantees: a packet of kind ``expressions`` also has its frame and faces."""


def provides(output_kind: str, wanted: str) -> bool:
    """True when a stage writing ``output_kind`` can feed a stage that reads ``wanted``.

    Kinds that plug-ins invent are matched by name alone.
    """
    return wanted in PROVIDES.get(output_kind, frozenset({output_kind}))


def kinds_read(reads: str | tuple[str, ...]) -> tuple[str, ...]:
    """A stage's ``reads`` as the kinds any of which an input may write: one, or (for a stage
    whose inputs differ, as a join of expressions and a signal of a plug-in's own) several."""
    return (reads,) if isinstance(reads, str) else reads


class ImageHandle(Protocol):
    """Anything that gives the frame's pixels: a FrameRef into shared memory in a pipeline."""

    def array(self) -> np.ndarray: ...


@dataclass
class Face:
    """One face in one frame. ``probs`` is set by a classifier, ``track_id`` by a tracker,
    ``smoothed`` / ``smoothed_label`` by a smoother (probabilities averaged over the track's
    recent frames, and the label they settled on; None until it settles)."""

    box: tuple[int, int, int, int]
    probs: np.ndarray | None = None
    track_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    smoothed: np.ndarray | None = None
    smoothed_label: str | None = None

    @property
    def label(self) -> str | None:
        """The most likely of ``EMOTIONS``, None before a classifier. (``emotion_probs`` checks
        the probabilities' length first: eight of them failed with an IndexError.)"""
        return None if self.probs is None else EMOTIONS[int(np.argmax(emotion_probs(self)))]

    @property
    def confidence(self) -> float | None:
        """The probability of ``label``, None before a classifier."""
        return None if self.probs is None else float(np.max(self.probs))

    @property
    def smoothed_confidence(self) -> float | None:
        """The smoothed probability of the smoothed label: one definition for the CSV and the events."""
        if self.smoothed_label is None or self.smoothed is None:
            return None
        return float(self.smoothed[EMOTIONS.index(self.smoothed_label)])


def emotion_probs(face: Face) -> np.ndarray:
    """``face.probs``, which sinks write one column or field per emotion: a plug-in classifier's
    of another length gave CSV rows short of columns, exit 0."""
    probs = face.probs
    if probs is None or len(probs) != len(EMOTIONS):
        raise ValueError(f"a face's probs are {probs!r}, not one probability for each of the {len(EMOTIONS)} "
                         f"emotions ({', '.join(EMOTIONS)})")
    return probs


def extra_values(face: Face | None, keys: Sequence[str], frame_values: list[Any]) -> list[Any]:
    """A face's ``extra`` data under each of ``keys``, else its frame's (``frame_values``, looked
    up once per frame): what the csv sink's and the zmq sink's ``extra`` add to a face."""
    if face is None or not face.extra:
        return frame_values
    return [face.extra.get(key, value) for key, value in zip(keys, frame_values)]


@dataclass
class Packet:
    """Everything known about one frame of one source.

    ``image`` is a numpy array where a source makes the packet (and throughout an in-process
    run), and a ``FrameRef`` into shared memory after it has crossed a queue; ``pixels()`` gives
    the array either way.
    ``faces`` is None until a detector has run, so "no face found" (an empty list) is not
    confused with "not looked at". A live source puts its nominal frame rate (its camera's, its
    file's) in ``extra["fps"]``: the frames that reach a sink after drops are no measure of it. A
    file read as fast as it decodes puts its container's in ``extra["container_fps"]``.
    """

    source: str
    index: int
    timestamp: float
    image: np.ndarray | ImageHandle | None = None
    faces: list[Face] | None = None
    captured: float = 0.0
    """When the frame was taken, on ``time.monotonic()``'s clock (0: the runner sets it as the
    source hands the frame on): a sink's latency and the status line's "down for" count from it,
    and ``wall_time`` turns it into a camera frame's timestamp."""
    extra: dict[str, Any] = field(default_factory=dict)
    outage: bool = False
    """True for a packet that is no frame: a live source sends one about every second while its
    stream is down (no frame for its ``timeout_s``), dated when it is sent on the clock of its
    frames' timestamps, numbered as the last frame before it (-1 while the source has sent
    none: a camera down since the run started), with no image and no faces (make
    it with ``outage``). A camera that went down sent nothing, and what ends only as frames come
    (a track after ``max_gap_s``, its episode, its face_lost event) waited for the camera's
    return, hours later, or for the end of the run. The runner hands it to a stage's ``outage``,
    not its ``process`` (see ``fer_pipe.stage``). A field of its own, not an ``extra`` key: a
    plug-in's ``extra["outage"] = False`` made every frame one, and none was written."""
    ended: bool = False
    """True for the outage packet that ends a source's stream (make it with ``stream_ended``):
    the runner sends it after the source's last frame, so that a source that ends while others
    run on ends its tracks, episodes and face_lost events then, not when the whole run ends (a
    file beside a camera: never). An outage packet too (no frame), handed to the stages'
    ``ended`` hook, not their ``outage``."""

    def pixels(self) -> np.ndarray:
        """The frame as a read-only array (a view into shared memory when it came over a queue)."""
        if self.image is None:
            raise ValueError(f"packet {self.source}#{self.index} carries no image")
        if isinstance(self.image, np.ndarray):  # in-process (run_stage, batch): as read-only as shared memory
            return read_only(self.image)
        return self.image.array()


def outage(source: str, last_index: int, timestamp: float) -> Packet:
    """The packet a live source sends while its stream is down (``Packet.outage``): numbered as
    its last frame, or -1 while it has sent none (a camera down since the run started)."""
    return Packet(source, last_index, timestamp, outage=True)


def stream_ended(source: str, last_index: int, timestamp: float) -> Packet:
    """The packet the runner sends after a source's last frame (``Packet.ended``): numbered and
    dated as that frame."""
    return Packet(source, last_index, timestamp, outage=True, ended=True)


def named(packet: Packet) -> str:
    """A packet as a line names it: its source's frame, or its source's outage, which is none
    ("skipped cam frame -1")."""
    if not packet.outage:
        return f"{packet.source} frame {packet.index}"
    if packet.ended:
        return f"{packet.source}'s end after frame {packet.index}"
    return f"{packet.source}'s outage " + (f"after frame {packet.index}" if packet.index >= 0
                                           else "before its first frame")


def wall_time(captured: float) -> float:
    """A camera frame's timestamp: when it was captured (``captured``, on the monotonic clock),
    in seconds since the Unix epoch. Seconds since the run started began at 0 again at each
    restart of a run that goes on for days, so rows and events could be neither dated nor told
    apart; a file's frames keep their place in the file."""
    return time.time() - (time.monotonic() - captured)


def read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view of ``array``, as shared memory hands a stage its frame: a stage that
    writes into it fails in a test as it would in a run. A view, not a copy, of a whole frame.
    One whose flag cannot be set back, as a view of shared memory's cannot: a view of a
    writable array could, and a stage that set it (as users of torch's ``from_numpy`` do)
    passed its tests and, in a batch task, drew into the frame another branch read."""
    return np.lib.stride_tricks.as_strided(array, writeable=False)


def ended_tracks(held: Iterable[tuple[str, int]], packet: Packet) -> list[tuple[str, int]]:
    """The (source, track id) keys in ``held`` of the packet's source whose track has ended: what
    a stage that keeps state per track lets go. Those the tracker no longer lists as alive
    (``extra["tracks"]``, on every frame and outage packet after a ``track`` stage), which a
    frame dropped on the way cannot hide, and those named in ``extra["track_lost"]``, as a
    tracker plug-in that lists no live ids says it."""
    alive, lost = packet.extra.get("tracks"), packet.extra.get("track_lost", ())
    return [key for key in held
            if key[0] == packet.source and (key[1] in lost or (alive is not None and key[1] not in alive))]


@dataclass(frozen=True)
class EndOfStream:
    """Sent once down each of a stage worker's queues when it has no more output; the consumer
    reads that queue no further, and ends when all its queues have ended."""


@dataclass(frozen=True)
class Sequenced:
    """What crosses a queue into and out of a stage with several workers: numbered packets.

    The stage feeding the workers numbers what it sends (``key`` names that numbering: the
    sender and the consumer) and deals the items round-robin by number; each worker answers
    every item with one ``Sequenced`` of the same number holding its outputs (maybe none), and
    the next single-process stage puts them back in order (``fer_pipe.ordering``). ``skipped``
    are the numbers, in the same numbering, of items a live source dropped (from a worker's
    queue, or before sending them), so nobody waits for them. ``stopped_at`` is the number at
    which a worker ended the run (``StopRun``): nothing numbered after it is passed on, though
    another worker may still answer such numbers. It is a number, not a mark on the answer, so
    that it holds where that answer is dropped from a full live queue.
    """

    key: str
    number: int
    packets: list[Packet]
    skipped: tuple[int, ...] = ()
    stopped_at: int | None = None
