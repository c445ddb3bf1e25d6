"""``episodes``: who felt what, from when to when, as a CSV and optionally ZeroMQ events.

An episode is a stretch of one track under one smoothed label: it starts when the track's
smoothed label settles or changes and ends when it changes again, when the tracker ends the
track, or at the end of the stream. Its start is dated from when the new label began to lead
(``label_since`` from the smoother), not from when the hysteresis accepted it, so the reported
onset is not late by the hold time. Confidence is the smoothed probability of the episode's
label, averaged (``mean_confidence``) and at its highest (``peak_confidence``).

Rows are written as episodes end, flushed line by line, so a crash loses no finished episode.
With ``publish`` set, every episode also goes out as an ``episode.<source>`` event, every
track's first and last sighting as ``face.<source>`` events, and the end of a source's stream,
after its last episode, as ``source_end`` (schema in ``fer_pipe.events``),
from the ``zmq`` sink's kind of socket (``fer_pipe.publisher``: events a subscriber too slow
to take them would block are dropped, counted and said) bound to ``host``: loopback unless
``public`` says otherwise, as for every network stage.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import Field, field_validator, model_validator

from fer_pipe.csvfile import APPEND_HELP, CsvOutput, check_existing
from fer_pipe.endpoints import check_bindable, check_host, check_private, tcp_endpoint
from fer_pipe.events import EPISODE_FIELDS, end_event, episode_event, face_event
from fer_pipe.messages import EMOTIONS, EXPRESSIONS, Face, Packet, ended_tracks
from fer_pipe.output_files import check_writable
from fer_pipe.publisher import Publisher
from fer_pipe.stage import Sink, StageParams

LINGER_S = 1.0
"""At the end, the time the events still queued have to reach their subscribers."""

Observation = tuple[int, float, np.ndarray]
"""(frame, timestamp, smoothed probabilities) of one track in one frame."""


CSV_FORMATS = {"start_time": ".3f", "end_time": ".3f", "duration_s": ".3f", "mean_confidence": ".4f",
               "peak_confidence": ".4f"}
"""Fixed decimals in the CSV, as the per-frame CSV writes times and confidences (3.420, not 3.42)."""


class EpisodesParams(StageParams):
    path: str = Field(description="episodes CSV to write (its folder must exist)")
    min_duration_s: float = Field(0.0, ge=0.0, description="leave out episodes shorter than this")
    append: bool = Field(False, description=APPEND_HELP)
    publish: int = Field(0, ge=0, le=65535, description="TCP port to publish episode and face events on (0: off)")
    host: str = Field("127.0.0.1", description="address the publishing socket binds to")
    public: bool = Field(False, description="allow a non-loopback host (events leave the machine)")

    _host_alone = field_validator("host")(check_host)

    @model_validator(mode="after")
    def _loopback_unless_public(self) -> EpisodesParams:
        if self.publish:
            check_private(tcp_endpoint(self.host, self.publish), self.public)
        return self


@dataclass
class _Episode:
    label: str
    start: tuple[int, float]
    end: tuple[int, float] = (0, 0.0)
    total: float = 0.0
    count: int = 0
    peak: float = 0.0

    def __post_init__(self) -> None:
        if self.label not in EMOTIONS:  # a plug-in smoother's: said, rather than tuple.index's words
            raise ValueError(f"a face's smoothed_label {self.label!r} is none of {', '.join(EMOTIONS)}")

    def add(self, observations: list[Observation]) -> None:
        column = EMOTIONS.index(self.label)
        for frame, time, probs in observations:
            value = float(probs[column])
            self.total += value
            self.count += 1
            self.peak = max(self.peak, value)
            self.end = (frame, time)


@dataclass
class _Track:
    last_seen: tuple[int, float]
    episode: _Episode | None = None
    pending: list[Observation] = field(default_factory=list)
    """Frames since a challenger began to lead: they go to the next episode if it wins."""
    carried: list[tuple[Face, tuple[int, float]]] = field(default_factory=list)
    """Faces the tracker carried over frames the detector skipped since it last saw this one:
    sightings once the next detection finds the face, nothing once a detection misses it or the
    track ends there."""


class EpisodesSink(Sink):
    """Writes each track's emotion episodes (a settled label, from when to when) to a CSV, and
    optionally publishes them with face-appeared and face-lost events on ZeroMQ.

    Per (source, track): the open episode and the few frames a challenging label may claim.
    """

    Params = EpisodesParams
    params: EpisodesParams
    reads = EXPRESSIONS
    wants_before = {"smooth": "ends an episode where a track's smoothed label changes, and no smooth stage before "
                              "it settles one: it writes no episode"}
    output_paths = ("path",)
    bind_params = ("publish",)

    @classmethod
    def preflight(cls, params: EpisodesParams) -> None:
        check_writable(params.path, "episodes")
        check_existing(params.path, "episodes", EPISODE_FIELDS, params.append)
        if params.publish:
            check_bindable(tcp_endpoint(params.host, params.publish), "episodes")

    def open(self) -> None:
        self._tracks: dict[tuple[str, int], _Track] = {}
        self._down: set[str] = set()  # the sources whose last packet was an outage
        self._faces = self._smoothed = self._labelled = 0
        # bound before the CSV is opened, which empties it (without append): a busy port leaves the
        # last run's file whole
        self._publisher = Publisher("episodes", self.name, tcp_endpoint(self.params.host, self.params.publish)) \
            if self.params.publish else None
        try:
            self._out = CsvOutput(self.params.path, "episodes", EPISODE_FIELDS, append=self.params.append)
        except BaseException:
            self._close_publisher()
            raise

    def consume(self, packet: Packet) -> None:
        self._tend()
        self._down.discard(packet.source)
        # a Python float: a float32 time rounded kept its binary digits (0.009999999776482582) in
        # the episode event, beside a face event's 0.01
        now = (packet.index, float(packet.timestamp))
        for face in packet.faces or []:
            self._faces += face.probs is not None
            self._smoothed += face.smoothed is not None
            self._labelled += face.smoothed_label is not None
            if face.track_id is None:
                continue
            key = (packet.source, face.track_id)
            track = self._tracks.get(key)
            if track is None:
                track = self._tracks[key] = _Track(now)
                self._publish(face_event("face_appeared", packet.source, face.track_id, *now))
            if face.extra.get("predicted"):
                track.carried.append((face, now))
                continue
            self._take_carried(key, track)
            self._sighting(key, track, face, now)
        if packet.extra.get("detected") is not False:
            self._drop_missed(packet)
        # a track the detector no longer finds, or a gap in the stream ends, was last seen at its
        # last detection: the boxes carried after it (up to every_n - 1 frames) were where the face
        # had been; taken as sightings on a frame the detector skipped, a gap's track ended on them
        # or not by where its next run fell
        self._end_ended(packet, carried=False)

    def _drop_missed(self, packet: Packet) -> None:
        """The detector ran and missed a face it had carried: the boxes carried since it last saw
        it were where it had been, whatever ends its track later. Kept, a track the stream, its
        source's end or a gap ended before ``max_age`` did ended up to every_n - 1 frames late."""
        seen = {face.track_id for face in packet.faces or ()}
        for (source, track_id), track in self._tracks.items():
            if track.carried and source == packet.source and track_id not in seen:
                track.carried = []

    def _sighting(self, key: tuple[str, int], track: _Track, face: Face, now: tuple[int, float]) -> None:
        track.last_seen = now
        if face.smoothed is not None:
            self._observe(key, track, (*now, face.smoothed), face.smoothed_label, face.extra)

    def _take_carried(self, key: tuple[str, int], track: _Track) -> None:
        for face, now in track.carried:
            self._sighting(key, track, face, now)
        track.carried = []

    def outage(self, packet: Packet) -> list[Packet]:
        """The tracker ends tracks while their source is down, not at its return: a camera down all
        night told subscribers a face was in view all night, and wrote its episode in the morning.
        They end at their last detection, as where the first frame back ends them: whether an outage
        packet or that frame came first moved the end by up to every_n - 1 frames."""
        self._tend()
        self._down.add(packet.source)
        self._end_ended(packet, carried=False)
        return []

    def ended(self, packet: Packet) -> list[Packet]:
        """A source's stream ended while others run on: its tracks' last episodes and face_lost
        are said now, not when the whole run ends, then its ``source_end``, as the zmq sink says
        it: a subscriber of this port could not tell when a source's episodes were all out, and
        one that stopped at the zmq sink's, on its own socket, could miss the last (s64b 4)."""
        self._end_ended(packet, carried=packet.source not in self._down)
        self._publish(end_event(packet))
        return []

    def _end_ended(self, packet: Packet, carried: bool) -> None:
        for key in ended_tracks(self._tracks, packet):
            self._end_track(key, carried)

    def _end_all(self) -> None:
        """Every track, at the stream's end: its carried faces are sightings where its face was in
        view then, not where its camera was down (a run stopped then ended an episode on them,
        where the camera's return, or max_gap_s passing, would have ended it at its last
        detection)."""
        for key in list(self._tracks):
            self._end_track(key, carried=key[0] not in self._down)

    def finish(self) -> list[Packet]:
        self._end_all()
        if self._faces and not self._smoothed:  # see Smoother.finish: only a whole run tells
            print(f"fer-pipe: WARNING: episodes stage {self.name!r}: none of the {self._faces} faces had a "
                  "smoothed label, so there are no episodes; put track and smooth stages before it (see "
                  "configs/episodes.yaml), or, if they are there, no face lasted the track stage's "
                  "min_hits detections", file=sys.stderr)
        elif self._smoothed and not self._labelled:  # smoothed, but no label ever settled: as silent before
            print(f"fer-pipe: WARNING: episodes stage {self.name!r}: no smoothed label settled on any of the "
                  f"{self._smoothed} smoothed faces, so there are no episodes; no face kept one label for the "
                  "smooth stage's hold_s", file=sys.stderr)
        return []

    def close(self) -> None:
        """Tracks still open (the run was stopped by a SIGTERM or another stage's failure, so
        ``finish`` did not run) end at the last frame seen, as at the end of the stream: the
        episodes they hold were processed and are written, not lost."""
        try:
            self._end_all()
        finally:
            self._out.close()
            self._close_publisher()

    @classmethod
    def closing_s(cls, params: EpisodesParams) -> float:
        return LINGER_S if params.publish else 0.0

    def _close_publisher(self) -> None:
        if self._publisher is not None:
            self._publisher.close(LINGER_S)
            self._publisher = None

    def _observe(self, key: tuple[str, int], track: _Track, obs: Observation, label: str | None,
                 extra: dict[str, Any]) -> None:
        current = track.episode.label if track.episode else None
        if label != current:
            since = extra.get("label_since", obs)[0]  # a smoother that does not date its label: from now
            self._settle([o for o in track.pending if o[0] < since], track)
            self._close_episode(key, track)
            claimed = [o for o in track.pending if o[0] >= since] + [obs]
            track.episode, track.pending = _Episode(label, claimed[0][:2]), []
            track.episode.add(claimed)
        elif "challenger_since" in extra:
            since = extra["challenger_since"]
            self._settle([o for o in track.pending if o[0] < since], track)
            track.pending = [o for o in track.pending if o[0] >= since] + [obs]
        else:
            self._settle(track.pending + [obs], track)
            track.pending = []

    @staticmethod
    def _settle(observations: list[Observation], track: _Track) -> None:
        if track.episode is not None and observations:
            track.episode.add(observations)

    def _end_track(self, key: tuple[str, int], carried: bool) -> None:
        """``carried``: whether the faces carried since the last detection were sightings (the
        stream ended with the face in view)."""
        track = self._tracks.get(key)
        if track is None:
            return
        if carried:
            self._take_carried(key, track)
        del self._tracks[key]
        self._settle(track.pending, track)
        self._close_episode(key, track)
        self._publish(face_event("face_lost", key[0], key[1], *track.last_seen))

    def _close_episode(self, key: tuple[str, int], track: _Track) -> None:
        episode, track.episode = track.episode, None
        if episode is None:
            return
        start, end = round(episode.start[1], 3), round(episode.end[1], 3)
        if round(end - start, 3) < self.params.min_duration_s:  # the row's own duration_s: 0.3 - 0.1 is 0.1999...
            return
        row = {"source": key[0], "track_id": key[1], "label": episode.label,
               "start_frame": episode.start[0], "end_frame": episode.end[0], "start_time": start, "end_time": end,
               # from the times as written: rounded on its own, it was 1 ms off their difference in one row of seven
               "duration_s": round(end - start, 3), "mean_confidence": round(episode.total / episode.count, 4),
               "peak_confidence": round(episode.peak, 4)}
        self._out.write([[format(row[k], CSV_FORMATS.get(k, "")) for k in EPISODE_FIELDS]])
        self._publish(episode_event(row))

    def _tend(self) -> None:
        """Events come only as faces come and go: the socket is read between them (``Publisher.tend``)."""
        if self._publisher is not None:
            self._publisher.tend()

    def _publish(self, event: dict[str, Any]) -> None:
        if self._publisher is not None:
            self._publisher.send(event)
            self.dropped = self._publisher.dropped
