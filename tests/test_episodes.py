"""The ``episodes`` sink: hand-built tracks, ZeroMQ events, and whole runs of configs/episodes.yaml."""
from __future__ import annotations

import csv
import importlib.util
import os
import re
import signal
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import zmq

from conftest import REPO, crossing_faces, fer_pipe, read_frames, write_video
from fer_pipe.errors import InputError
from fer_pipe.events import EPISODE_FIELDS, decode
from fer_pipe.inprocess import make_stage, run_stage
from fer_pipe.stage_calls import handle
from fer_pipe.messages import EMOTIONS, Face, Packet, outage, stream_ended
from fault_plugin import group_killed_at_exit, start_run
from livetools import busy_port, free_port

FPS = 25.0
CONFIG = REPO / "configs" / "episodes.yaml"


def probs(label: str, p: float = 0.8) -> np.ndarray:
    out = np.full(len(EMOTIONS), (1 - p) / 6, np.float32)
    out[EMOTIONS.index(label)] = p
    return out


def track(labels: list[str], track_id: int = 1, lost_at_end: bool = False, others: list[int] = ()) -> list[Packet]:
    """Frames of one face; with ``lost_at_end``, a frame without it, as the tracker reports
    that (``others``: the other tracks it still lists as alive)."""
    packets = [Packet("cam", i, i / FPS, faces=[Face((0, 0, 60, 60), probs(x), track_id)])
               for i, x in enumerate(labels)]
    if lost_at_end:
        packets.append(Packet("cam", len(labels), len(labels) / FPS, faces=[],
                              extra={"track_lost": [track_id], "tracks": list(others)}))
    return packets


def test_a_track_ends_when_the_tracker_stops_listing_it_though_the_frame_that_said_so_was_dropped(tmp_path):
    """A live run may drop any frame after the tracker (a stage that fell behind): the frame
    with track 1's track_lost went, and its episode (and face_lost) waited for the end of the
    run, after track 2's, which ended later. The tracker's list of live tracks on every frame
    ends it on the next frame that arrives."""
    def frame(i: int, ids: list[int], **extra) -> Packet:
        return Packet("cam", i, i / FPS, faces=[Face((70 * t, 0, 60, 60), probs("sad"), t) for t in ids],
                      extra={"tracks": [1, 2], **extra})

    packets = [frame(i, [1, 2]) for i in range(10)]
    # frame 10, with extra={"track_lost": [1], "tracks": [2]}, was dropped on the way
    packets += [frame(i, [2], tracks=[2]) for i in range(11, 15)]
    packets += [frame(15, [], track_lost=[2], tracks=[])] + [frame(i, [], tracks=[]) for i in range(16, 20)]
    rows = episodes_of(packets, tmp_path)
    assert [(r["track_id"], r["end_frame"]) for r in rows] == [("1", "9"), ("2", "14")]


def test_a_plugin_smoothers_label_without_its_date_starts_an_episode_and_a_bad_one_is_the_error(tmp_path):
    """A plug-in smoother that set smoothed_label but not extra["label_since"] was a KeyError;
    one whose label was no emotion left a half-made episode whose close then raised
    ZeroDivisionError, in place of the error that said what was wrong."""
    def smoothed(label: str, frames: range) -> list[Packet]:
        packets = track(["happy"] * len(frames))
        for i, packet in zip(frames, packets):
            packet.index, packet.timestamp = i, i / FPS
            face = packet.faces[0]
            face.smoothed, face.smoothed_label = face.probs, label
        return packets

    path = tmp_path / "e.csv"
    run_stage("episodes", smoothed("happy", range(20)), {"path": str(path)})
    assert [(r["label"], r["start_frame"], r["end_frame"]) for r in csv.DictReader(path.open())] == [
        ("happy", "0", "19")]
    with pytest.raises(ValueError, match="a face's smoothed_label 'joy' is none of angry, disgust, "):
        run_stage("episodes", smoothed("joy", range(3)), {"path": str(tmp_path / "f.csv")})


@pytest.mark.parametrize("later", [4600.0, 400.0], ids=["outage", "clock-set-back"])
def test_an_episode_ends_at_its_last_sighting_before_a_camera_outage_or_a_clock_step(tmp_path: Path,
                                                                                      later: float) -> None:
    """The same place in view after an hour's outage kept the track, and its happy episode
    lasted the hour; a camera's clock set back ended that episode before it began, and it was
    dropped."""
    def seen(i: int, timestamp: float) -> Packet:
        return Packet("cam", i, timestamp, faces=[Face((100, 100, 80, 80), probs("happy"))])

    packets = [seen(i, 1000 + i / FPS) for i in range(25)] + [seen(i, later + i / FPS) for i in range(25, 50)]
    rows = episodes_of(run_stage("track", packets, {"min_hits": 1}), tmp_path)
    assert [(r["track_id"], r["start_frame"], r["end_frame"]) for r in rows] == [("1", "0", "24"), ("2", "25", "49")]
    assert all(float(r["duration_s"]) < 1 for r in rows)


def test_an_episode_ends_while_its_camera_is_down_not_at_its_return(tmp_path: Path) -> None:
    """The tracker ends a track on its source's outage packets; the episode is written then,
    dated at its last sighting, before any later frame or the end of the run."""
    packets = [Packet("cam", i, 1000 + i / FPS, faces=[Face((100, 100, 80, 80), probs("happy"))]) for i in range(25)]
    down = run_stage("smooth", run_stage("track", packets + [outage("cam", 24, 1010.0)], {"min_hits": 1}),
                     {"time_constant_s": 0.3, "hold_s": 0.2})
    path = tmp_path / "episodes.csv"
    sink = make_stage("episodes", {"path": str(path)})
    sink.open()
    try:
        for packet in down:
            handle(sink, packet)
        rows = list(csv.DictReader(path.open()))
    finally:
        sink.close()
    assert [(r["track_id"], r["label"], r["start_frame"], r["end_frame"], r["end_time"]) for r in rows] == [
        ("1", "happy", "0", "24", f"{1000 + 24 / FPS:.3f}")]


def episodes_of(packets: list[Packet], tmp_path: Path, **params) -> list[dict[str, str]]:
    path = tmp_path / "episodes.csv"
    smoothed = run_stage("smooth", packets, {"time_constant_s": 0.3, "hold_s": 0.2})
    run_stage("episodes", smoothed, {"path": str(path), **params})
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == EPISODE_FIELDS
        return list(reader)


def test_a_face_gone_between_detector_runs_ends_at_its_last_detection(tmp_path: Path) -> None:
    """With the detector on every third frame, the tracker carries a face's box over the frames
    between (as documented); where the face had left, its episode and face_lost were dated on
    the carried frames, up to two after its last sighting (s51a 2), and still were where the
    stream ended before max_age detector runs had missed it (s52a 1). At the stream's end, with
    the face still in view, the carried frames are sightings. A gap in the stream ends the track
    at its last detection, wherever the detector's next run falls: the episode ended at 40 for a
    gap after frame 40, at 39 for one after 41 (s53d 5)."""
    def frame(i: int, t: float, face: bool = True) -> Packet:
        if i % 3:
            return Packet("cam", i, t, faces=[], extra={"detected": False})
        return Packet("cam", i, t, faces=[Face((100, 100, 90, 90))] if face else [])

    def happy(packets: list[Packet], max_age: int = 2) -> list[Packet]:
        tracked = run_stage("track", packets, {"max_age": max_age})
        for packet in tracked:
            for face in packet.faces or []:
                face.probs = probs("happy")
        return tracked

    def detected_every_third(frames: int, gone_from: int, max_age: int = 2, gap_after: int = 10**6) -> list[Packet]:
        return happy([frame(i, i / FPS + 10.0 * (i > gap_after), i < gone_from) for i in range(frames)], max_age)

    carried = detected_every_third(60, 40)
    assert [p.index for p in carried if p.faces][-4:] == [38, 39, 40, 41]  # carried past the last sighting
    rows = episodes_of(carried, tmp_path)
    assert [(r["label"], r["start_frame"], r["end_frame"]) for r in rows] == [("happy", "6", "39")]
    rows = episodes_of(detected_every_third(42, 42), tmp_path)
    assert [(r["label"], r["start_frame"], r["end_frame"]) for r in rows] == [("happy", "6", "41")]
    rows = episodes_of(detected_every_third(50, 40, max_age=12), tmp_path)  # missed at 42, 45, 48; ended at 49
    assert [(r["label"], r["start_frame"], r["end_frame"]) for r in rows] == [("happy", "6", "39")]
    for gap_after, last_detection in ((40, 39), (41, 39), (42, 42)):
        rows = episodes_of(detected_every_third(80, 80, gap_after=gap_after), tmp_path)
        assert rows[0]["end_frame"] == str(last_detection), (gap_after, rows)
    # a live camera down 7 s (an outage packet past max_gap_s ends the track) or 5.5 s (the first
    # frame back does): its episode ended at 41, on carried boxes, or at 39 (s53f 4)
    for down_s in (7.0, 5.5):
        rows = episodes_of(happy([frame(i, i / FPS) for i in range(42)]
                                 + [outage("cam", 41, 41 / FPS + k) for k in range(1, int(down_s) + 1)]
                                 + [frame(42 + k, 41 / FPS + down_s + k / FPS) for k in range(10)]), tmp_path)
        assert rows[0]["end_frame"] == "39", (down_s, rows)
    # nor where the run ends while the camera is down, before max_gap_s (s53g 6)
    rows = episodes_of(happy([frame(i, i / FPS) for i in range(42)] + [outage("cam", 41, 41 / FPS + k)
                                                                       for k in (1, 2, 3)]), tmp_path)
    assert [(r["start_frame"], r["end_frame"]) for r in rows] == [("6", "39")]
    # nor where the camera's stream ends while it is down, others running on (s54a 4a)
    rows = episodes_of(happy([frame(i, i / FPS) for i in range(42)] + [outage("cam", 41, 41 / FPS + k)
                                                                       for k in (1, 2, 3)]
                             + [stream_ended("cam", 41, 41 / FPS + 3.5)]), tmp_path)
    assert [(r["start_frame"], r["end_frame"]) for r in rows] == [("6", "39")]


def test_a_change_of_expression_splits_a_track_into_two_episodes(tmp_path: Path) -> None:
    rows = episodes_of(track(["sad"] * 50 + ["happy"] * 75, lost_at_end=True), tmp_path)
    assert [(r["label"], r["track_id"], r["source"]) for r in rows] == [("sad", "1", "cam"), ("happy", "1", "cam")]
    sad, happy = rows
    # the happy episode is dated from when happy took the lead (within ~0.3 s of frame 50), not
    # from when the hysteresis let it through 0.2 s later; the two episodes meet without a gap
    assert 50 <= int(happy["start_frame"]) <= 50 + 0.3 * FPS
    assert int(sad["end_frame"]) + 1 == int(happy["start_frame"])
    assert int(happy["end_frame"]) == 124
    assert float(happy["duration_s"]) == pytest.approx(float(happy["end_time"]) - float(happy["start_time"]))
    assert float(happy["end_time"]) == pytest.approx(124 / FPS, abs=1e-3)
    assert int(sad["start_frame"]) == 0, "a first label is dated from the track's first frame"
    assert 0.5 < float(happy["mean_confidence"]) < float(happy["peak_confidence"]) <= 0.8 + 1e-4
    assert sad["start_time"] == "0.000"  # fixed decimals, as the per-frame CSV writes them
    for row in rows:
        assert all(re.fullmatch(r"\d+\.\d{3}", row[k]) for k in ("start_time", "end_time", "duration_s"))
        assert all(re.fullmatch(r"\d\.\d{4}", row[k]) for k in ("mean_confidence", "peak_confidence"))


def test_an_episodes_peak_is_its_highest_confidence_not_its_last(tmp_path: Path) -> None:
    """Every confidence in the tests above only rose, so a peak that kept the last value went
    unnoticed (s38c)."""
    packets = track(["sad"] * 50, lost_at_end=True)
    for packet in packets[25:50]:
        packet.faces[0].probs = probs("sad", 0.6)
    (row,) = episodes_of(packets, tmp_path)
    assert row["peak_confidence"] == "0.8000" and 0.6 < float(row["mean_confidence"]) < 0.8


@pytest.mark.parametrize("lost_at_end", [False, True])
def test_frames_behind_a_challenger_when_the_track_ends_close_its_last_episode(tmp_path: Path, lost_at_end) -> None:
    """Three frames of happy, fewer than hold_s lets through, as the stream (or the track)
    ends: they are the sad episode's last, and it ends at frame 52, not where they began (s38c)."""
    smoothed = run_stage("smooth", track(["sad"] * 50 + ["happy"] * 3, lost_at_end=lost_at_end),
                         {"time_constant_s": 0.05, "hold_s": 0.2})  # quick to lead, held back 5 frames
    assert "challenger_since" in smoothed[52].faces[0].extra
    run_stage("episodes", smoothed, {"path": str(tmp_path / "episodes.csv")})
    with open(tmp_path / "episodes.csv", newline="") as f:
        (row,) = csv.DictReader(f)
    assert (row["label"], row["start_frame"], row["end_frame"]) == ("sad", "0", "52")


def test_an_episodes_duration_is_the_difference_of_its_times_as_written(tmp_path: Path) -> None:
    """Rounded on its own, duration_s was 1 ms off end_time - start_time in one row of seven
    on the WolfgangLanger clip (s37b): here the start rounds down and the end up."""
    packets = track(["happy"] * 50)
    for packet in packets:
        packet.timestamp += 0.0006 if packet.index == 49 else 0.0004
    (row,) = episodes_of(packets, tmp_path)
    assert (row["start_time"], row["end_time"], row["duration_s"]) == ("0.000", "1.961", "1.961")


def test_open_episodes_end_at_the_end_of_the_stream_and_short_ones_can_be_left_out(tmp_path: Path) -> None:
    packets = track(["angry"] * 40 + ["surprise"] * 12 + ["angry"] * 40)
    packets += [Packet("cam", i, i / FPS, faces=[Face((200, 0, 60, 60), probs("fear"), 2)]) for i in range(92, 120)]
    rows = episodes_of(packets, tmp_path)
    assert [(r["track_id"], r["label"]) for r in rows] == [("1", "angry"), ("1", "surprise"), ("1", "angry"),
                                                          ("2", "fear")]
    assert int(rows[2]["end_frame"]) == 91 and int(rows[3]["end_frame"]) == 119
    kept = episodes_of(packets, tmp_path, min_duration_s=0.5)
    assert [r["label"] for r in kept] == ["angry", "angry", "fear"]


def test_an_episode_as_long_as_min_duration_s_is_kept_wherever_in_the_clip_it_comes(tmp_path: Path) -> None:
    """Six frames at 10 fps whose row says duration_s 0.500 were left out by min_duration_s 0.5
    where they began at 0.2 s (0.7 - 0.2 is 0.49999999999999994), and kept elsewhere (s50e 1)."""
    for start in range(1, 8):
        labels = ["happy"] * start + ["neutral"] * 6 + ["happy"] * 8
        packets = [Packet("cam", i, i / 10, faces=[Face((0, 0, 60, 60), probs(x, 0.9), 1)]) for i, x in enumerate(labels)]
        smoothed = run_stage("smooth", packets, {"time_constant_s": 0.001, "hold_s": 0.0})
        run_stage("episodes", smoothed, {"path": str(tmp_path / "e.csv"), "min_duration_s": 0.5})
        with open(tmp_path / "e.csv", newline="") as f:
            rows = [(r["label"], r["duration_s"]) for r in csv.DictReader(f)]
        assert ("neutral", "0.500") in rows, (start, rows)


def test_a_run_stopped_before_the_end_of_its_stream_keeps_the_open_episodes(tmp_path: Path) -> None:
    """When another stage fails (or SIGTERM stops the run), the runner stops this sink, which
    then closes without ``finish``. The episode in progress was processed, so it is written,
    ending at the last frame seen; before, it was lost (a run whose frames CSV hit a full disk
    at frame 225 of the WolfgangLanger clip kept only the episode that had ended at 149)."""
    path = tmp_path / "episodes.csv"
    smoothed = run_stage("smooth", track(["sad"] * 40 + ["happy"] * 40), {"time_constant_s": 0.3, "hold_s": 0.2})
    stage = make_stage("episodes", {"path": str(path)})
    stage.open()
    for packet in smoothed:
        stage.consume(packet)
    stage.close()
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["label"], r["end_frame"]) for r in rows][-1] == ("happy", "79")


def test_a_graph_without_track_or_smooth_stages_says_why_nothing_is_smoothed(tmp_path: Path, capsys) -> None:
    """Without a track stage, the smoothed columns stayed empty and the episodes CSV held only
    its header, and the run ended with exit 0 without a word."""
    untracked = [Packet("cam", i, i / FPS, faces=[Face((200, 0, 60, 60), probs("happy"))]) for i in range(40)]
    assert all(face.smoothed is None for p in run_stage("smooth", untracked) for face in p.faces)
    run_stage("episodes", untracked, {"path": str(tmp_path / "e.csv")})
    assert capsys.readouterr().err.splitlines() == [
        "fer-pipe: WARNING: smooth stage 'smooth': none of the 40 faces had a track id, so none was smoothed; "
        "put a track stage before it (see configs/episodes.yaml), or, if there is one, no face lasted the track "
        "stage's min_hits detections",
        "fer-pipe: WARNING: episodes stage 'episodes': none of the 40 faces had a smoothed label, so there are no "
        "episodes; put track and smooth stages before it (see configs/episodes.yaml), or, if they are there, no "
        "face lasted the track stage's min_hits detections"]
    # tracked and smoothed, though the first faces wait for their track id (min_hits): nothing to say
    faces = [Face((200, 0, 60, 60), probs("happy"), None if i < 3 else 1) for i in range(43)]
    episodes_of([Packet("cam", i, i / FPS, faces=[face]) for i, face in enumerate(faces)], tmp_path)
    assert capsys.readouterr().err == ""
    # smoothed, but held longer than the faces lasted: no label settled, and no word was said (s37b)
    held = run_stage("smooth", track(["happy"] * 40), {"hold_s": 10.0})
    assert {face.smoothed_label for p in held for face in p.faces} == {None}
    run_stage("episodes", held, {"path": str(tmp_path / "held.csv")})
    assert capsys.readouterr().err.splitlines() == [
        "fer-pipe: WARNING: episodes stage 'episodes': no smoothed label settled on any of the 40 smoothed faces, "
        "so there are no episodes; no face kept one label for the smooth stage's hold_s"]


def test_a_missing_folder_is_a_clear_input_error(tmp_path: Path) -> None:
    sink = make_stage("episodes", {"path": str(tmp_path / "nope" / "e.csv")})
    with pytest.raises(InputError, match="nope"):
        sink.open()


def test_a_busy_publish_port_leaves_the_last_runs_episodes_whole(tmp_path: Path) -> None:
    """The CSV used to be opened (emptied) first, and the bind fail after it."""
    out = tmp_path / "e.csv"
    out.write_text("the last run's episodes\n")
    with busy_port() as port:
        sink = make_stage("episodes", {"path": str(out), "publish": port})
        with pytest.raises(InputError, match=f"^episodes tcp://127.0.0.1:{port}: cannot bind: address already in use$"):
            sink.open()
    assert out.read_text() == "the last run's episodes\n"


def test_publishing_episodes_beyond_loopback_without_keys_warns(capsys) -> None:
    """As the zmq sink does: the episodes sink's own socket bound a public host unencrypted without
    a word. 192.0.2.1 is on no interface here, so the bind fails and nothing is exposed."""
    sink = make_stage("episodes", {"path": "/dev/null", "publish": 5556, "host": "192.0.2.1", "public": True})
    with pytest.raises(InputError, match="^episodes tcp://192.0.2.1:5556: cannot bind: "):
        sink.open()
    assert "WARNING: episodes sink 'episodes' binds tcp://192.0.2.1:5556 without CURVE keys" in capsys.readouterr().err


def test_episodes_and_face_events_are_published_on_zeromq(tmp_path: Path) -> None:
    port = free_port()
    sink = make_stage("episodes", {"path": str(tmp_path / "e.csv"), "publish": port})
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    try:
        sink.open()
        sub.connect(f"tcp://127.0.0.1:{port}")
        sub.subscribe(b"episode.cam")
        sub.subscribe(b"face.cam")
        # PUB drops messages until the subscription has arrived: show new faces (ids from 100)
        # until the announcement of one gets through
        for warmup in range(100, 1300):  # a minute at most
            face = Face((0, 0, 9, 9), probs("sad"), warmup)
            sink.consume(run_stage("smooth", [Packet("cam", 0, 0.0, faces=[face])], {"hold_s": 0.0})[0])
            if sub.poll(50):
                break
        else:
            pytest.fail("no subscription reached the publisher within a minute")
        first = decode(sub.recv_multipart())
        while first["track_id"] != warmup:  # a face's announcement slower than its 50 ms poll (s29a)
            assert sub.poll(10_000), f"face {warmup}'s announcement did not follow face {first['track_id']}'s"
            first = decode(sub.recv_multipart())
        assert first == {"schema": 1, "type": "face_appeared", "source": "cam", "track_id": warmup, "frame": 0,
                         "timestamp": 0.0}
        warmed = list(range(100, warmup + 1))
        # float32 times, as the stage contract allows: the episode event kept their binary digits (s55a 3)
        frames = [replace(p, timestamp=np.float32(p.timestamp))
                  for p in track(["sad"] * 30 + ["happy"] * 30, 3, True, warmed)]
        for p in run_stage("smooth", frames, {"hold_s": 0.2}):
            sink.consume(p)
        list(sink.finish())
        got = []
        for _ in range(4 + 2 * (warmup - 100 + 1)):  # track 3's four events, two per warm-up face
            assert sub.poll(10_000), f"only {len(got)} events arrived"
            topic, body = sub.recv_multipart()
            got.append((topic.decode(), decode([topic, body])))
    finally:
        sink.close()
        sub.close(linger=0)
        context.term()
    kinds = [(t, e["type"], e["track_id"]) for t, e in got if e["track_id"] == 3]
    assert kinds == [("face.cam", "face_appeared", 3), ("episode.cam", "episode", 3),
                     ("episode.cam", "episode", 3), ("face.cam", "face_lost", 3)]
    lost_at_finish = [(t, e["type"], e["track_id"]) for t, e in got if e["track_id"] != 3]
    assert lost_at_finish == [x for i in range(100, warmup + 1)
                              for x in (("episode.cam", "episode", i), ("face.cam", "face_lost", i))]
    episodes = [e for _, e in got if e["type"] == "episode"]
    assert [e["label"] for e in episodes][:2] == ["sad", "happy"]
    assert all(e["schema"] == 1 and set(EPISODE_FIELDS) <= set(e) for e in episodes)
    with open(tmp_path / "e.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["track_id"]), int(r["start_frame"])) for r in rows] == \
           [(e["track_id"], e["start_frame"]) for e in episodes]
    times = ("start_time", "end_time", "duration_s")
    assert [[float(r[k]) for k in times] for r in rows] == [[e[k] for k in times] for e in episodes]
    assert got[3][1] == {"schema": 1, "type": "face_lost", "source": "cam", "track_id": 3, "frame": 59,
                         "timestamp": round(59 / FPS, 3)}, "a lost face is reported as last seen"


def test_a_file_that_ends_beside_an_endless_source_ends_its_faces_then(clips, tmp_path: Path) -> None:
    """A source's end was only the whole graph's: a file beside a camera (here an endless loop of
    a clip) kept its face in view, its last episode unwritten and its face_lost unsaid, until the
    run was stopped (s40b). They come while the other source runs on, then the file's source_end,
    which a subscriber of this port alone never got (s64b 4); the run is stopped after."""
    port, clip = free_port(), clips["single_face.mp4"]
    config = tmp_path / "two.yaml"
    config.write_text(f"""stages:
  short: {{type: video, params: {{path: '{clip}', source_id: short}}}}
  long: {{type: video, params: {{path: '{clip}', source_id: long, loop: true}}}}
  detector: {{type: haar, inputs: [short, long]}}
  tracker: {{type: track, inputs: [detector]}}
  classifier: {{type: classifier, inputs: [tracker]}}
  smoother: {{type: smooth, inputs: [classifier]}}
  episodes: {{type: episodes, inputs: [smoother], params: {{path: '{tmp_path / "e.csv"}', publish: {port}}}}}
""")
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.connect(f"tcp://127.0.0.1:{port}")
    sub.subscribe(b"face.short")
    sub.subscribe(b"source.short")
    got: list[dict] = []
    try:
        with group_killed_at_exit(start_run(config, {})) as run:
            while (not got or got[-1]["type"] != "source_end") and sub.poll(120_000):  # the run is ended after it
                got.append(decode(sub.recv_multipart()))
            os.killpg(run.pid, signal.SIGINT)
            _, err = run.communicate(timeout=120)
    finally:
        sub.close(linger=0)
        context.term()
    assert [e["type"] for e in got][-2:] == ["face_lost", "source_end"], got
    lost = got[-2]
    assert got[-1]["frame"] >= lost["frame"]
    assert run.returncode == 130, err
    with open(tmp_path / "e.csv", newline="") as f:
        short = [r for r in csv.DictReader(f) if r["source"] == "short"]
    assert short and int(short[-1]["end_frame"]) == lost["frame"] >= 60  # its last sighting, near the clip's end


def _two_face_clip(clips: dict[str, Path], path: Path) -> Path:
    return write_video(path, crossing_faces(read_frames(clips["single_face.mp4"])), fps=30.0)


def _run(clip: Path, tmp_path: Path) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    frames_csv, episodes_csv = tmp_path / "frames.csv", tmp_path / "episodes.csv"
    done = fer_pipe("run", str(CONFIG), "--quiet", "--set", f"source.path={clip}",
                    "--set", f"csv.path={frames_csv}", "--set", f"episodes.path={episodes_csv}")
    assert done.returncode == 0, done.stderr
    with open(frames_csv, newline="") as f, open(episodes_csv, newline="") as g:
        return list(csv.DictReader(f)), list(csv.DictReader(g))


def test_publishing_beyond_loopback_must_be_asked_for(tmp_path: Path) -> None:
    """Episode events describe people, so the episodes sink follows the zmq sink's rule: one line
    naming the file, the stage and the address, exit 2; with public: true the config is valid."""
    config = str(REPO / "configs" / "episodes.yaml")
    refused = fer_pipe("validate", config, "--set", "episodes.publish=5571", "--set", "episodes.host=0.0.0.0")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"fer-pipe: {config}:27 with --set episodes.publish=5571, --set episodes.host=0.0.0.0: stage 'episodes' "
        "(episodes): params: tcp://0.0.0.0:5571 is not a "
        "loopback address: events about faces would leave this machine; set public: true to allow it"]
    allowed = fer_pipe("validate", config, "--set", "episodes.publish=5571", "--set", "episodes.host=0.0.0.0",
                       "--set", "episodes.public=true")
    assert allowed.returncode == 0, allowed.stderr


def test_two_moving_faces_keep_their_track_ids_from_start_to_end(clips, tmp_path: Path) -> None:
    rows, episodes = _run(_two_face_clip(clips, tmp_path / "two.avi"), tmp_path)
    ids_by_row: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        assert r["face"] != "", f"frame {r['frame']}: a face was not found"
        ids_by_row["top" if int(r["y"]) < 180 else "bottom"].add(r["track_id"])
    top, bottom = ids_by_row["top"] - {""}, ids_by_row["bottom"] - {""}
    assert len(top) == 1 and len(bottom) == 1 and top != bottom, ids_by_row
    assert {r["track_id"] for r in episodes} == top | bottom
    labelled = [r for r in rows if r["smoothed_label"]]
    assert labelled and all(r["smoothed_label"] in EMOTIONS for r in labelled)


@pytest.fixture(scope="module")
def wolfgang(clips, tmp_path_factory) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    return _run(clips["WolfgangLanger_Pexels.mp4"], tmp_path_factory.mktemp("wolfgang"))


def test_acceptance_happy_episode_on_the_wolfganglanger_clip(wolfgang) -> None:
    """Issue 8's acceptance: crying until about frame 215, smiling from about 230 to the end.

    Needs the trained classifier (models/model.tflite); labels are what it is about.
    """
    rows, episodes = wolfgang
    happy = [e for e in episodes if e["label"] == "happy"]
    assert any(200 <= int(e["start_frame"]) <= 300 and int(e["end_frame"]) >= 400 for e in happy), episodes
    early = [e for e in happy if int(e["start_frame"]) < 200 and float(e["duration_s"]) > 1.0]
    assert not early, early
    assert len({r["track_id"] for r in rows} - {""}) <= 2


def test_smoothing_reports_the_happy_onset_within_0_7_s_of_where_the_raw_labels_turn(wolfgang) -> None:
    """Issue 8's onset figure, measured as tools/flicker.py measures it for the README: a smoother
    or a model that held the smile back longer would have left the README's figure wrong unseen."""
    spec = importlib.util.spec_from_file_location("flicker", REPO / "tools" / "flicker.py")
    flicker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(flicker)
    onset = flicker.analyse(*wolfgang, "happy")["onset"]
    assert 200 <= onset["raw_frame"] <= 300, onset
    assert abs(onset["smoothed_delay_s"]) <= 0.7 and abs(onset["episode_delay_s"]) <= 0.7, onset
