"""``smooth``: per track, probabilities averaged over time and a label that does not flicker.

The average is exponential with a time constant in seconds, weighted by the time between a
track's observations (``1 - exp(-dt / tau)``), so it means the same at 10 and at 30 fps, to
within a frame (each observation stands for the time since the one before, so a change is taken
up to a frame's time sooner at the lower rate), and across frames where the track was not seen
(the one after such a gap weighs for all of it). Frames dated alike add nothing. A smoothed
argmax alone still flickers when two classes run close, so the label has hysteresis: it changes
only after other classes have led it by ``margin`` for ``hold_s`` seconds, to the class leading
then (two that take turns in the lead count together). A new track's first label settles
``hold_s`` after its first observation. The defaults are the
fastest of a grid tried on the WolfgangLanger clip with ``tools/flicker.py``: with the shipped
model every setting left only the clip's own changes, and these report the happy onset soonest
(README, "Flicker figures").

On each face with a track id: ``face.smoothed`` (the 7 averaged probabilities),
``face.smoothed_label`` (None until settled), and in ``face.extra``: ``label_since``, the
(frame, timestamp) at which the current smoothed label began to lead, and ``challenger_since``,
the frame from which other classes have led it by ``margin`` (absent when none does). The
episodes sink uses them to date an episode from when its label really took over rather than
from when the hysteresis let it through. Faces without a track id are passed on untouched.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from fer_pipe.messages import EMOTIONS, EXPRESSIONS, Face, Packet, ended_tracks
from fer_pipe.stage import Stage, StageParams

HOLD_SLACK_S = 1e-6
"""How much short of ``hold_s`` a lead may be and still count as held: times are a frame's
number over its rate, or a container's milliseconds, so a lead of exactly three frames at 10 fps
came to 0.19999999999999998 s at some moments of a clip and not others."""


class SmoothParams(StageParams):
    time_constant_s: float = Field(0.3, gt=0.0, le=60.0,
                                   description="time constant of the moving average, in seconds")
    margin: float = Field(0.15, ge=0.0, le=1.0,
                          description="smoothed probability by which a class must lead the label to replace it")
    hold_s: float = Field(0.2, ge=0.0, le=60.0,
                          description="seconds a class must lead (by margin) before the label changes")


@dataclass
class _TrackState:
    mean: np.ndarray
    time: float
    label: int | None = None
    label_since: tuple[int, float] | None = None
    challenger: int | None = None
    challenger_since: tuple[int, float] = (0, 0.0)


class Smoother(Stage):
    """Averages each track's probabilities over time and gives it a label that changes only
    when another class leads by a margin for a while.

    Keeps one small state per (source, track id), dropped when the tracker ends the track.
    """

    Params = SmoothParams
    params: SmoothParams
    reads = EXPRESSIONS
    writes = EXPRESSIONS
    provides = ("smooth",)
    wants_before = {"track": "smooths each face over its track, and no track stage before it gives faces a track "
                             "id: smoothed_label and smoothed_confidence stay empty"}

    def open(self) -> None:
        self._tracks: dict[tuple[str, int], _TrackState] = {}
        self._faces = self._tracked = 0

    def process(self, packet: Packet) -> Iterable[Packet]:
        for face in packet.faces or []:
            if face.probs is not None:
                self._faces += 1
            if face.track_id is not None and face.probs is not None:
                self._tracked += 1
                self._update(packet, face)
        self._let_go(packet)
        return (packet,)

    def outage(self, packet: Packet) -> Iterable[Packet]:
        self._let_go(packet)  # the tracker may have ended tracks while the source is down
        return (packet,)

    def ended(self, packet: Packet) -> Iterable[Packet]:
        self._let_go(packet)  # the tracker ended the source's tracks with its stream
        return (packet,)

    def _let_go(self, packet: Packet) -> None:
        for key in ended_tracks(self._tracks, packet):
            del self._tracks[key]

    def finish(self) -> list[Packet]:
        # A face waits for its track id for a few detections (the tracker's min_hits), so only
        # a whole run of faces without one says that the graph has no track stage.
        if self._faces and not self._tracked:
            print(f"fer-pipe: WARNING: smooth stage {self.name!r}: none of the {self._faces} faces had a track "
                  "id, so none was smoothed; put a track stage before it (see configs/episodes.yaml), or, "
                  "if there is one, no face lasted the track stage's min_hits detections", file=sys.stderr)
        return []

    def _update(self, packet: Packet, face: Face) -> None:
        key = (packet.source, face.track_id)
        now = (packet.index, packet.timestamp)
        state = self._tracks.get(key)
        if state is None:
            state = self._tracks[key] = _TrackState(np.asarray(face.probs, np.float32).copy(), packet.timestamp)
        else:
            weight = 1.0 - math.exp(-max(packet.timestamp - state.time, 0.0) / self.params.time_constant_s)
            state.mean += weight * (face.probs - state.mean)
            state.time = packet.timestamp
        leader = int(np.argmax(state.mean))
        if state.label is None or (leader != state.label and
                                   state.mean[leader] - state.mean[state.label] >= self.params.margin):
            # The hold runs while any class leads the label by margin, and the class leading when
            # it is over takes the label: one that counted a single class's unbroken lead never
            # ended where two close classes took turns (happy and surprise on an open-mouthed
            # smile), and the label stayed on a class both had left far behind.
            if state.challenger is None:
                state.challenger_since = now
            state.challenger = leader
            if packet.timestamp - state.challenger_since[1] >= self.params.hold_s - HOLD_SLACK_S:
                state.label, state.label_since = leader, state.challenger_since
                state.challenger = None
        else:
            state.challenger = None
        face.smoothed = state.mean.copy()
        face.smoothed_label = None if state.label is None else EMOTIONS[state.label]
        if state.label_since is not None:
            face.extra["label_since"] = state.label_since
        if state.challenger is not None:
            face.extra["challenger_since"] = state.challenger_since[0]
