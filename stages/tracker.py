"""``track``: a track id per face that stays while the face stays in view (SORT-style).

Association is by box overlap: a constant-velocity ``cv2.KalmanFilter`` per track predicts
where its face is now, and SciPy's ``linear_sum_assignment`` pairs predictions with the
detector's boxes to maximise total IoU. Why not a packaged tracker: the maintained ones that
PyPI offers did not fit. ``norfair`` pins numpy below 2 (the classifier's TensorFlow needs 2),
``trackers``/``supervision`` (ByteTrack) pull in a large CV toolkit and ``requests`` for
what is here ~100 lines over two packages we already ship (OpenCV, SciPy), and none of them
carries boxes over frames the detector skipped in the way the pipeline needs.

Frames the detector skipped (``packet.extra["detected"] is False``, faces ``[]``): every
track is advanced by its filter, and the confirmed tracks seen at the last detection are
output as that frame's faces (``face.extra["predicted"] = True``) instead of being ended, so a
detector run every Nth frame still gives boxes, ids and expressions on every frame. Only frames
the detector looked at count towards ``max_age``.

A camera that was down sends no frames, so no detection can miss its tracks: a track would
carry on over an outage of hours when the same place is in view after it, and its episode
would span the outage. A gap of over ``max_gap_s`` between two frames of a source ends all its
tracks on the frame after it, so their episodes end at their last sighting before the gap; a
live source that is down says so about every second (``fer_pipe.messages.Packet.outage``), and the
tracks end on the first such word past ``max_gap_s``, while the camera is still down. A
source's stream that ends (``Packet.ended``) ends its tracks there, while other sources run on. A
source whose frames are that far apart as a rule (a time-lapse, photos dated 10 s apart) is
measured against three times its usual gap (the median of its last ``GAPS_KEPT``) instead:
with the fixed limit, every frame of it ended every track, and none ever got an id. A frame
dated before the one before it (a camera's wall clock set back) ends them too: an episode
spanning the step had an end before its start, and was dropped.

A track gets its id at its ``min_hits``-th detection (its first counts), so a one-frame false hit of
the cascade never consumes an id; until then its face is passed on with ``track_id=None``.
``packet.extra["track_appeared"]`` / ``["track_lost"]`` list the ids confirmed / ended on that
frame, and a plug-in can act on either. ``["tracks"]`` lists the ids alive after every frame
(and after every outage packet of a live source, which may end them too):
the smoother and the episodes sink end a track's state when it leaves that list (they start
it at the track's first face with an id). A list on every frame, rather than a word on one,
because a live run may drop any frame after this stage (a stage that fell behind finds its
pixels overwritten): the frame that said ``track_lost`` went with it, and the track's last
episode waited for the end of the run.
"""
from __future__ import annotations

import functools
import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import cv2
import numpy as np
from pydantic import Field

from fer_pipe.boxes import Box, iou_matrix
from fer_pipe.messages import FACES, Face, Packet
from fer_pipe.stage import Stage, StageParams


class TrackParams(StageParams):
    iou_threshold: float = Field(0.3, gt=0.0, le=1.0,
                                 description="least IoU between a predicted box and a detection to match")
    max_age: int = Field(12, ge=0, le=10_000,
                         description="detector runs in a row that may miss a track before it ends")
    max_jump: float = Field(1.0, ge=0.0, le=10.0,
                            description="farthest a face may be from the predicted place of a new track (no id "
                                        "yet, or under 3 matches), in face sizes, to match it where their boxes "
                                        "overlap less than iou_threshold (a new face moving fast between detector "
                                        "runs); 0: by overlap alone")
    min_hits: int = Field(3, ge=1, le=1000, description="detections, its first among them, before a track gets its id")
    max_gap_s: float = Field(5.0, gt=0.0, le=86_400.0,
                             description="seconds between two frames of a source (a camera that was down) after "
                                         "which its tracks end; a source's usual gap, times 3, if longer; a live "
                                         "source that is down ends them once it says so (an rtsp source after its "
                                         "timeout_s) and this long has passed since its last frame")


def _kalman(box: Box, velocity: tuple[float, float] = (0.0, 0.0)) -> cv2.KalmanFilter:
    """State (cx, cy, w, h) and their velocities per frame, starting at ``velocity`` (of the centre);
    noise scales with the face's size."""
    x, y, w, h = box
    kf = cv2.KalmanFilter(8, 4)
    kf.measurementMatrix = np.eye(4, 8, dtype=np.float32)
    side = float(max(w, h, 1))
    kf.measurementNoiseCov = np.eye(4, dtype=np.float32) * (0.05 * side) ** 2
    kf.processNoiseCov = np.diag([(0.03 * side) ** 2] * 4 + [(0.02 * side) ** 2] * 4).astype(np.float32)
    kf.errorCovPost = np.diag([(0.1 * side) ** 2] * 4 + [(0.5 * side) ** 2] * 4).astype(np.float32)
    kf.statePost = np.array([[x + w / 2], [y + h / 2], [w], [h], [velocity[0]], [velocity[1]], [0], [0]], np.float32)
    return kf


def _centre(box: Box | np.ndarray) -> np.ndarray:
    x, y, w, h = box
    return np.array([x + w / 2, y + h / 2], dtype=float)


@functools.lru_cache(maxsize=32)
def _transition(steps: int) -> np.ndarray:
    """Constant velocity over ``steps`` frames; built once per step count (almost always 1)."""
    transition = np.eye(8, dtype=np.float32)
    transition[range(4), range(4, 8)] = steps
    transition.flags.writeable = False
    return transition


@dataclass
class _Track:
    kf: cv2.KalmanFilter
    hits: int = 1
    misses: int = 0
    track_id: int | None = None
    predicted: np.ndarray = field(default_factory=lambda: np.zeros(4))
    steps: int = 0
    """The step count the filter's transition matrix is set for: setting it copies the matrix
    into OpenCV, on every track of every frame, though it almost never changes."""
    still: Box | None = None
    """Where a new track that took a neighbour's speed was first seen, until its next match: its
    face may not move with its neighbour (two people passing), and is matched there as well. The
    match's correction learns its own speed, from the borrowed one's uncertainty: a face that
    stood still is carried still after it (22.7 px a frame borrowed, 0.1 px after)."""

    def predict(self, steps: int) -> None:
        if steps != self.steps:
            self.kf.transitionMatrix = _transition(steps)
            self.steps = steps
        cx, cy, w, h = self.kf.predict()[:4, 0]
        w, h = max(float(w), 1.0), max(float(h), 1.0)
        self.predicted = np.array([cx - w / 2, cy - h / 2, w, h])

    def correct(self, box: Box) -> None:
        x, y, w, h = box
        self.kf.correct(np.array([[x + w / 2], [y + h / 2], [w], [h]], np.float32))

    def box(self, frame: tuple[int, int] | None) -> Box | None:
        """The predicted box cut to the frame (height, width); None once less than half the
        face's width or height is in view. A face leaving the frame between detections is
        carried past the edge by its velocity, and a crop of what is left of it (an empty one,
        which OpenCV refuses, or a sliver) is no face to classify. A track whose speed is only
        its neighbour's until its next match is carried where it was seen: a face standing
        beside a walker slid off with the walker's speed, half a face over two frames, and the
        classifier read the background there."""
        x, y, w, h = (round(float(v)) for v in (self.predicted if self.still is None else self.still))
        if frame is None:
            return x, y, w, h
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, frame[1]), min(y + h, frame[0])
        if 2 * (x1 - x0) < w or 2 * (y1 - y0) < h:
            return None
        return x0, y0, x1 - x0, y1 - y0


JUMP_SIZE_RATIO = 1.5
"""How much larger or smaller a face's box may be than its track's predicted box to match it by
distance (``max_jump``): the cascade's boxes of one face vary by a fifth from frame to frame."""


SPEED_HITS = 3
"""Matches after which a track's filter knows its face's speed, and it is matched by overlap alone."""


NEIGHBOUR_SIZES = 3.0
"""How near, in face sizes, a track that knows its face's speed must be to a new face for the new
track to start at that speed (``_neighbours_velocity``)."""


def _distances(p: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Between each of the boxes ``p`` and each of ``b``, the distance of their centres in sizes of
    the box of ``p``."""
    size = np.maximum(p[:, 2], p[:, 3])[:, None]
    centres_p, centres_b = p[:, :2] + p[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2
    return np.linalg.norm(centres_p[:, None, :] - centres_b[None, :, :], axis=2) / size


def _new_track(tracks: list[_Track], box: Box) -> _Track:
    """A track for a new face, at the speed of its neighbour if it has one."""
    velocity = _neighbours_velocity(tracks, box)
    return _Track(_kalman(box, velocity), still=box if any(velocity) else None)


def _neighbours_velocity(tracks: list[_Track], box: Box) -> tuple[float, float]:
    """The velocity of the nearest track that knows its face's speed and was matched at the last
    detection, within ``NEIGHBOUR_SIZES`` face sizes of ``box`` and of about its size (a near
    face's speed in pixels is not a far one's); (0, 0) if none. People who come into view
    together walk together: a new track started still predicted its face where it had been,
    and in a row walking by less than half a face apart, the face behind was the nearer at the
    next detector run. Tracks took turns on the faces behind them: faces found at every
    run got no id for seconds, the last of the row a new id at every run, and ids were carried
    backwards onto empty background. Such a track is matched where it was first seen
    too (``_Track.still``): a face coming into view beside a walker that walks the other way
    started a new track at every run, each at the walker's speed."""
    centre, width = _centre(box), max(box[2], 1)
    side = max(width, box[3])
    nearest, velocity = NEIGHBOUR_SIZES, (0.0, 0.0)
    for track in tracks:
        if track.hits >= SPEED_HITS and track.misses == 0:
            state = track.kf.statePost[:, 0]
            distance = float(np.linalg.norm(state[:2] - centre)) / side
            if distance < nearest and 1 / JUMP_SIZE_RATIO <= state[2] / width <= JUMP_SIZE_RATIO:
                nearest, velocity = distance, (float(state[4]), float(state[5]))
    return velocity


GAPS_KEPT = 9
"""The gaps between a source's frames its usual gap is the median of: one outage among them
does not move it."""


HOLE_GAPS = 3.0
"""How many times a source's longest recent gap between two frames makes a hole in its timestamps."""


@dataclass
class _SourceState:
    tracks: list[_Track] = field(default_factory=list)
    last_index: int | None = None
    last_time: float | None = None
    gaps: deque[float] = field(default_factory=lambda: deque(maxlen=GAPS_KEPT))
    next_id: int = 1
    hole: bool = False
    """Whether a hole in the timestamps (``after_hole``) came since the last detector run: one on
    a frame the detector skips is the next run's."""

    def after_hole(self, index: int, timestamp: float, fps: float) -> bool:
        """Whether more time passed since the source's last frame than its frame numbers say:
        a recording's lost frames, a variable-rate clip's long frame, a camera's short stall
        (every source numbers the frames it hands on one after another). Judged against the
        longest gap of a whole window, and a live source's nominal frame time (``fps``), so a
        camera's frames that come in pairs, in groups or in a burst at its connect, dated as they
        come, make no hole: their mean made one of every group of four (s63f 1)."""
        if self.last_time is None or self.last_index is None or len(self.gaps) < GAPS_KEPT:
            return False
        usual = max(max(self.gaps), 1 / fps if fps > 0 else 0.0)
        return timestamp - self.last_time > HOLE_GAPS * usual * max(1, index - self.last_index)

    def gap_ends_tracks(self, timestamp: float, max_gap_s: float) -> bool:
        """Whether the time since the source's last frame ends its tracks; notes the gap. The
        first gap has no usual one to be judged against, and ends nothing: a time-lapse's first
        gap, over ``max_gap_s``, ended its first tracks and every face's id came a photo late."""
        if self.last_time is None:
            return False
        gap = timestamp - self.last_time
        if gap < 0:  # the clock went back: no usual gap to note
            return True
        ends = self.too_long(gap, max_gap_s)
        self.gaps.append(gap)
        return ends

    def too_long(self, gap: float, max_gap_s: float) -> bool:
        return gap > max_gap_s and bool(self.gaps) and gap > 3 * statistics.median(self.gaps)  # a median only then


class FaceTracker(Stage):
    """Gives each face a track id that stays while the face stays in view, and carries the
    boxes over frames the detector skips.

    A SORT tracker per source; the module docstring describes the skipped-frame protocol.
    """

    Params = TrackParams
    params: TrackParams
    reads = FACES
    writes = FACES
    provides = ("track",)

    def open(self) -> None:
        # SciPy is imported here, not with the module: every command imports every stage's
        # module to list and check them, and this import alone took 0.6 s of each.
        from scipy.optimize import linear_sum_assignment

        self._assign = linear_sum_assignment
        self._sources: dict[str, _SourceState] = {}

    def process(self, packet: Packet) -> Iterable[Packet]:
        state = self._sources.setdefault(packet.source, _SourceState())
        steps = 1 if state.last_index is None else max(1, packet.index - state.last_index)
        fps = packet.extra.get("fps", 0.0)
        state.hole |= state.after_hole(packet.index, packet.timestamp, fps if isinstance(fps, (int, float)) else 0.0)
        lost: list[int] = []
        if state.gap_ends_tracks(packet.timestamp, self.params.max_gap_s):
            lost = [t.track_id for t in state.tracks if t.track_id is not None]
            state.tracks = []
        state.last_index, state.last_time = packet.index, packet.timestamp
        for track in state.tracks:
            track.predict(steps)
        if packet.faces is None or packet.extra.get("detected") is False:
            frame = packet.image.shape[:2] if packet.image is not None else None  # no need to map the pixels
            carried = ((t, t.box(frame)) for t in state.tracks if t.track_id is not None and t.misses == 0)
            packet.faces = sorted((Face(box, track_id=t.track_id, extra={"predicted": True})
                                   for t, box in carried if box is not None),
                                  key=lambda f: f.box)  # left to right, as the detector numbers them
        else:
            lost += self._associate(state, packet)
        if lost:
            packet.extra["track_lost"] = lost
        packet.extra["tracks"] = [t.track_id for t in state.tracks if t.track_id is not None]
        return (packet,)

    def outage(self, packet: Packet) -> Iterable[Packet]:
        """The source's stream is down: its tracks end once it has been so for the gap that
        ends them between two frames, without waiting for a frame after the outage."""
        return self._without_frame(packet, ended=False)

    def ended(self, packet: Packet) -> Iterable[Packet]:
        """The source's stream has ended: its tracks end now, while other sources run on."""
        return self._without_frame(packet, ended=True)

    def _without_frame(self, packet: Packet, ended: bool) -> Iterable[Packet]:
        state = self._sources.get(packet.source)
        if state is None:  # down since the run started: no track yet, and the list says so
            packet.extra["tracks"] = []
            return (packet,)
        gap = None if state.last_time is None else packet.timestamp - state.last_time
        # dated before the last frame: the clock went back while the camera was down, and the
        # gap never grew until it had caught up, up to the whole outage
        if state.tracks and (ended or gap is not None and (gap < 0 or state.too_long(gap, self.params.max_gap_s))):
            packet.extra["track_lost"] = [t.track_id for t in state.tracks if t.track_id is not None]
            state.tracks = []
        # the live ids on every outage packet, as on every frame: the one that ended the tracks
        # may be dropped from a live sink's full queue, and the next one then ends them there
        packet.extra["tracks"] = [t.track_id for t in state.tracks if t.track_id is not None]
        return (packet,)

    def _by_distance(self, tracks_now: list[_Track], predicted: np.ndarray, boxes: np.ndarray,
                     matched: dict[int, int], hole: bool) -> dict[int, int]:
        """Pairs of the detections and the new tracks (without an id, or under ``SPEED_HITS``
        matches) that overlap left unmatched, by the distance between centres in face sizes, up
        to ``max_jump``, for faces of about the same size. A new track predicts its face where it
        was first seen: a face moving over half its width between detector runs (two widths a
        second, detected every third frame at 10 fps) overlapped no prediction, started a new
        track at every run, and never got an id (with ``min_hits`` 1, a new id at every run).
        Once its filter knows its speed, a track moved this way onto a false hit beside its face
        when the detector missed it, or onto its neighbour, and the face lost its id, or the two
        swapped. A track that took a neighbour's speed is as near as the nearer of its two places.
        After a ``hole`` in the timestamps every track left unmatched is paired so: predicted one
        frame on, a face that walked on through 0.44 s of frames a recording lost was met half
        its width away, got a new id, and its episode was split in two with a false face_lost
        (s63c 1). Predicting over the hole's time instead threw a still face's prediction off
        it by its jitter's speed, and a camera's bursts made holes of every gap (s63d 1)."""
        tracks = [r for r, track in enumerate(tracks_now)
                  if (hole or track.track_id is None or track.hits < SPEED_HITS) and r not in matched.values()]
        if not tracks:
            return {}
        detections = [c for c in range(len(boxes)) if c not in matched]
        p, b = predicted[tracks], boxes[detections]
        distance = _distances(p, b)
        still = [i for i, r in enumerate(tracks) if tracks_now[r].still is not None]
        if still:
            places = np.array([tracks_now[tracks[i]].still for i in still], dtype=float)
            distance[still] = np.minimum(distance[still], _distances(places, b))
        ratio = b[None, :, 2] / p[:, None, 2]
        far = (distance > self.params.max_jump) | (ratio < 1 / JUMP_SIZE_RATIO) | (ratio > JUMP_SIZE_RATIO)
        cost = np.where(far, self.params.max_jump + 1.0, distance)
        rows, cols = self._assign(cost)
        return {detections[c]: tracks[r] for r, c in zip(rows, cols) if not far[r, c]}

    def _associate(self, state: _SourceState, packet: Packet) -> list[int]:
        """Matches the frame's detections to the tracks; the ids of the tracks it ends."""
        faces = packet.faces or []
        matched: dict[int, int] = {}
        if state.tracks and faces:
            predicted = np.array([t.predicted for t in state.tracks])
            boxes = np.array([f.box for f in faces], dtype=float)
            iou = iou_matrix(predicted, boxes)
            borrowed = [r for r, t in enumerate(state.tracks) if t.still is not None]
            if borrowed:  # matched at whichever place is the better: where it was seen, or where its speed took it
                still = np.array([state.tracks[r].still for r in borrowed], dtype=float)
                iou[borrowed] = np.maximum(iou[borrowed], iou_matrix(still, boxes))
            rows, cols = self._assign(iou, maximize=True)
            matched = {int(c): int(r) for r, c in zip(rows, cols) if iou[r, c] >= self.params.iou_threshold}
            if len(matched) < min(len(faces), len(state.tracks)) and self.params.max_jump:
                matched.update(self._by_distance(state.tracks, predicted, boxes, matched, state.hole))
        state.hole = False
        for col, row in matched.items():
            track = state.tracks[row]
            track.still = None
            track.correct(faces[col].box)
            track.hits += 1
            track.misses = 0
        # made once every match is counted: a neighbour listed after a new face had not had this
        # frame's, and whether a face in a row took its speed depended on their order
        born = {col: _new_track(state.tracks, face.box)
                for col, face in enumerate(faces) if col not in matched}
        state.tracks.extend(born.values())
        appeared: list[int] = []
        touched: set[int] = set()
        for col, face in enumerate(faces):
            track = born[col] if col in born else state.tracks[matched[col]]
            touched.add(id(track))
            if track.track_id is None and track.hits >= self.params.min_hits:
                track.track_id = state.next_id
                state.next_id += 1
                appeared.append(track.track_id)
            face.track_id = track.track_id
        lost: list[int] = []
        kept: list[_Track] = []
        for track in state.tracks:
            if id(track) not in touched:
                track.misses += 1
            if track.misses > self.params.max_age:
                if track.track_id is not None:
                    lost.append(track.track_id)
            else:
                kept.append(track)
        state.tracks = kept
        if appeared:
            packet.extra["track_appeared"] = appeared
        return lost
