"""The video_writer sink: the overlay written to .mp4 and .avi files that read back frame for frame."""
from __future__ import annotations

import contextlib
import re

import cv2
import numpy as np
import pytest
import yaml
from conftest import fer_pipe, fer_pipe_on_small_tmpfs, read_frames, write_video
from livetools import csv_rows

from fer_pipe.stages.overlay import COLOURS


def test_annotated_files_hold_every_frame_with_the_box_in_the_label_colour(short_clip, tmp_path):
    stages = {
        "source": {"type": "video", "params": {"path": str(short_clip)}},
        "detector": {"type": "haar", "inputs": ["source"]},
        "classifier": {"type": "classifier", "inputs": ["detector"]},
        "mp4": {"type": "video_writer", "inputs": ["classifier"], "params": {"path": str(tmp_path / "a.mp4")}},
        "avi": {"type": "video_writer", "inputs": ["classifier"], "params": {"path": str(tmp_path / "a.avi")}},
        "csv": {"type": "csv", "inputs": ["classifier"], "params": {"path": str(tmp_path / "rows.csv")}},
    }
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({"stages": stages}))
    done = fer_pipe("run", str(tmp_path / "g.yaml"), "--quiet", timeout=180)
    assert done.returncode == 0, done.stderr
    original = read_frames(short_clip)
    rows = {int(r["frame"]): r for r in csv_rows(tmp_path / "rows.csv") if r["label"]}
    assert rows
    for name in ("a.mp4", "a.avi"):
        written = read_frames(tmp_path / name)
        assert len(written) == len(original) == 60 and written[0].shape == original[0].shape
        for index, row in rows.items():
            x, y, w, h = (int(row[k]) for k in "xywh")
            colour = np.array(COLOURS[row["label"]])
            edge = (slice(y + 10, y + h - 10), slice(x, x + 2))  # the box's left side
            # Either column of the 2 px line: mp4's 4:2:0 chroma can smear the colour of one of them.
            drawn = (np.abs(written[index][edge].astype(int) - colour).max(axis=-1) < 60).any(axis=1)
            before = (np.abs(original[index][edge].astype(int) - colour).max(axis=-1) < 60).any(axis=1)
            assert drawn.mean() > 0.8 > before.mean(), (name, index)
        inside = (slice(y + h // 3, y + 2 * h // 3), slice(x + w // 3, x + 2 * w // 3))  # last face's middle
        assert np.abs(written[index][inside].astype(int) - original[index][inside]).mean() < 12  # pixels kept


def test_unsupported_extension_fails_before_the_run(short_clip, tmp_path):
    stages = {
        "source": {"type": "video", "params": {"path": str(short_clip)}},
        "detector": {"type": "haar", "inputs": ["source"]},
        "classifier": {"type": "classifier", "inputs": ["detector"]},
        "out": {"type": "video_writer", "inputs": ["classifier"], "params": {"path": str(tmp_path / "a.mkv")}},
    }
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({"stages": stages}))
    for command in ("validate", "run"):  # a check of the value alone: validate finds it too
        done = fer_pipe(command, str(tmp_path / "g.yaml"), timeout=120)
        assert done.returncode == 2
        assert re.fullmatch(r"fer-pipe: \S+g\.yaml:\d+: stage 'out' \(video_writer\): params\.path: the name must "
                            r"end in \.mp4 or \.avi\n", done.stderr), done.stderr


def test_a_file_that_did_not_get_its_frames_fails_the_run(short_clip, tmp_path):
    """A full disk, for real: a 64 KiB tmpfs in a private mount namespace. OpenCV only warns on
    each failed write, so the run used to end with exit 0 and an MP4 that does not open, and
    then (with a read-back at close) with exit 1 after a warning for every frame after it."""
    full = tmp_path / "full"
    full.mkdir()
    stages = {
        "source": {"type": "video", "params": {"path": str(short_clip)}},
        "detector": {"type": "haar", "inputs": ["source"]},
        "classifier": {"type": "classifier", "inputs": ["detector"]},
        "out": {"type": "video_writer", "inputs": ["classifier"], "params": {"path": str(full / "a.mp4")}},
    }
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({"stages": stages}))
    for tmp in ("/tmp", str(full)):  # $TMPDIR on the full disk too, as where /tmp is on the root disk (s44c)
        done = fer_pipe_on_small_tmpfs(full, "64k", "run", str(tmp_path / "g.yaml"), "--quiet",
                                       before=f"export TMPDIR={tmp}")
        assert done.returncode == 1, done.stderr
        assert re.fullmatch(rf"fer-pipe: stage 'out' \(video_writer\) failed: on source frame \d+: OSError: "
                            rf"video_writer {re.escape(str(full / 'a.mp4'))}: OpenCV could not write this "
                            r"frame \(0 MiB free on its disk\); an \.mp4's index is written at its end, so this one "
                            r"will not play \(an \.avi keeps the frames before such a failure\)\n", done.stderr)


def test_drawing_never_touches_the_shared_frame():
    from fer_pipe.messages import Face, Packet
    from fer_pipe.stages.overlay import draw

    frame = np.zeros((120, 160, 3), np.uint8)
    frame.flags.writeable = False  # as a frame in shared memory arrives
    probs = np.eye(7)[3] * 0.9 + 0.1 / 7
    out = draw(Packet("cam", 0, 0.0, frame, faces=[Face((40, 30, 50, 50), probs)]), show_probs=True, fps=25.0)
    assert not frame.any() and out.any()
    assert tuple(out[55, 40]) == COLOURS["happy"]


def test_a_label_at_the_right_edge_is_moved_in_whole():
    """A face near the right edge, narrower than its label, lost the label's end: "#1 neutral 9"
    (s44c)."""
    import cv2

    from fer_pipe.messages import Face, Packet
    from fer_pipe.stages.overlay import FONT, draw

    probs = np.eye(7)[3] * 0.9 + 0.1 / 7
    out = draw(Packet("cam", 0, 0.0, np.zeros((480, 200, 3), np.uint8), faces=[Face((150, 60, 40, 40), probs, 1)]))
    (tw, th), base = cv2.getTextSize("#1 happy 91%", FONT, 0.6, 2)
    top = 60 - th - base - 4
    assert tuple(out[top + 1, 200 - tw - 4]) == COLOURS["happy"] == tuple(out[top + 1, 199])


def test_labels_and_charts_of_faces_side_by_side_cover_neither_each_other_nor_a_neighbours_face(monkeypatch):
    """A label is some twice as wide as its face: in a row of faces each covered the one before
    ("#4 ha", "#12 surprise 8" for 87 %), and a chart landed inside the next face's box, read as
    that face's probabilities (s50k 1, 2). Where each was placed is kept as drawn."""
    from fer_pipe.messages import Face, Packet
    from fer_pipe.stages import overlay

    placed = {"labels": {}, "charts": {}}  # the face's box: where its label or chart went

    def keep(kind, drawer):
        def drawn(image, first, box, *rest):
            placed[kind][box] = drawer(image, first, box, *rest)
            return placed[kind][box]
        return drawn

    monkeypatch.setattr(overlay, "_label", keep("labels", overlay._label))
    monkeypatch.setattr(overlay, "_bars", keep("charts", overlay._bars))
    probs = np.eye(7)[5] * 0.87 + 0.13 / 7
    boxes = [(100 + 90 * i, 300, 70, 70) for i in range(5)]
    overlay.draw(Packet("cam", 0, 0.0, np.zeros((720, 1280, 3), np.uint8),
                        faces=[Face(box, probs, 10 + i) for i, box in enumerate(boxes)]), show_probs=True)
    labels, charts = placed["labels"], {box: c for box, c in placed["charts"].items() if c is not None}
    assert len(labels) == 5 and list(charts) == [boxes[-1]]  # the last alone has room for its chart
    for box, rect in labels.items():  # a label covers no other label, nor another's face (s50l 2)
        assert not any(overlay._overlaps(rect, other) for b, other in labels.items() if b != box), (box, rect)
        assert not any(overlay._overlaps(rect, other) for other in boxes if other != box), (box, rect)
    for box, rect in charts.items():  # a chart covers no face, its own included, nor another's label
        assert not any(overlay._overlaps(rect, other) for other in boxes), (box, rect)
        assert not any(overlay._overlaps(rect, other) for b, other in labels.items() if b != box), (box, rect)


def test_a_chart_leaves_the_frame_rate_readable():
    """A face at the top right whose chart had to go left of it got the chart at the frame's
    top left, over the frame rate: "angry" across "23.8 fps", neither readable (s67c 2)."""
    from fer_pipe.messages import Face, Packet
    from fer_pipe.stages.overlay import draw

    probs = np.eye(7)[0] * 0.7 + 0.3 / 7
    packet = Packet("cam", 0, 0.0, np.full((480, 420, 3), 90, np.uint8), faces=[Face((170, 5, 240, 240), probs, 1)])
    counter = (slice(0, 40), slice(0, 120))
    assert (draw(packet, True, 23.8)[counter] == draw(packet, False, 23.8)[counter]).all()
    assert (draw(packet, True)[counter] != draw(packet, False)[counter]).any()  # the chart's place without one


def test_a_grid_of_faces_gets_labels_that_cover_no_other_face_and_one_off_the_frame_none(monkeypatch):
    """A label moved up out of another's way landed in the box of a face in the row above, read
    as its (5 of 30 in a grid); and a plug-in's box wholly below the frame got a label pulled
    onto its edge (s50l 2, 6)."""
    from fer_pipe.messages import Face, Packet
    from fer_pipe.stages import overlay

    placed = {}
    label = overlay._label

    def keep(image, text, box, *rest):
        placed[box] = label(image, text, box, *rest)
        return placed[box]

    monkeypatch.setattr(overlay, "_label", keep)
    probs = np.eye(7)[0] * 0.7 + 0.3 / 7
    boxes = [(60 + 120 * col, 120 + 200 * row, 70, 70) for row in range(3) for col in range(10)]
    overlay.draw(Packet("cam", 0, 0.0, np.zeros((720, 1280, 3), np.uint8),
                        faces=[Face(box, probs, 10 + i) for i, box in enumerate([*boxes, (50, 900, 60, 60)])]))
    assert set(placed) == set(boxes)  # none for the face below the frame
    for box, rect in placed.items():
        assert not any(overlay._overlaps(rect, other) for other in boxes if other != box), (box, rect)


def test_the_outage_line_fits_a_portrait_frame():
    """"no frames for 1017 s" ran past the right edge of a portrait frame, cutting off its " s"
    (s50k 5)."""
    from fer_pipe.stages.overlay import stale

    out = stale(np.full((1280, 720, 3), 128, np.uint8), "no frames for 1017 s")
    white = np.nonzero((out == 255).all(axis=2).any(axis=0))[0]
    assert white.size and white[0] > 0 and white[-1] < 719


def test_a_plug_ins_odd_box_or_probs_are_drawn_not_raised():
    """A plug-in's box past OpenCV's 32-bit coordinates, and NaN or out-of-range probabilities
    with ``show_probs``, ended the run; the box is drawn as far as it shows and such a bar as empty."""
    from fer_pipe.messages import Face, Packet
    from fer_pipe.stages.overlay import BAR_WIDTH, draw

    frame = np.zeros((480, 400, 3), np.uint8)  # the overlay's own size, 480 lines
    probs = np.array([np.nan, 2.0, -1.0, 0.5, 0, 0, 0])
    faces = [Face((40, 30, 50, 50), probs), Face((300, 10, 2**40, 2**40)), Face((np.nan, 0, 9, 9), probs),
             Face((0, float("inf"), 9, 9))]
    out = draw(Packet("cam", 0, 0.0, frame, faces=faces), show_probs=True)
    bars = 40 + 50 + 6 + 50  # left edge of the bars: right of the face, past the names
    rows = {name: 30 + i * 13 + 6 for i, name in enumerate(("angry", "disgust", "fear", "happy"))}
    assert not out[rows["angry"], bars + 1:bars + BAR_WIDTH].any()  # NaN: no bar
    assert (out[rows["disgust"], bars + BAR_WIDTH - 2] == COLOURS["disgust"]).all()  # 2.0: a full bar
    assert not out[rows["disgust"], bars + BAR_WIDTH + 3:290].any()
    assert not out[rows["fear"], bars + 1:bars + BAR_WIDTH].any()  # below 0: no bar
    assert (out[rows["happy"], bars + BAR_WIDTH // 2 - 2] == COLOURS["happy"]).all()
    assert not out[rows["happy"], bars + BAR_WIDTH // 2 + 3:290].any()
    assert (out[60, 300] == (0, 255, 0)).all() and (out[10, 350] == (0, 255, 0)).all()  # the huge box's edges


def test_the_smoothed_label_is_drawn_the_bars_stay_in_the_frame_and_the_overlay_grows_with_it():
    """The raw label flickered on screen while the CSV's smoothed label held (s48b 1); the bars
    of a face near the bottom lost their last rows (s48b 4); a 4K frame's label was the size of
    a 480-line frame's, unreadable once the frame was shown on a screen (s48b 3)."""
    from fer_pipe.messages import Face, Packet
    from fer_pipe.stages.overlay import BAR_WIDTH, draw

    face = Face((40, 410, 60, 60), np.eye(7)[3] * 0.9 + 0.1 / 7)  # happy, raw
    face.smoothed, face.smoothed_label = np.eye(7)[4] * 0.8 + 0.2 / 7, "sad"
    out = draw(Packet("cam", 0, 0.0, np.zeros((480, 400, 3), np.uint8), faces=[face]), show_probs=True)
    assert tuple(out[440, 40]) == COLOURS["sad"]  # the box, in the smoothed label's colour
    bars = 40 + 60 + 6 + 50
    last = 480 - 13 + 6  # the neutral row, the chart raised to end at the frame's edge
    assert not out[last, bars + 3:bars + BAR_WIDTH].any() and out[last, bars].any()  # neutral: 0.03, drawn
    assert (out[last - 2 * 13, bars + BAR_WIDTH // 2] == COLOURS["sad"]).all()  # the smoothed 0.83

    def label_height(size: tuple[int, int]) -> int:
        image = np.zeros((*size, 3), np.uint8)
        box = (size[1] // 2, size[0] // 2, size[0] // 8, size[0] // 8)
        drawn = draw(Packet("cam", 0, 0.0, image, faces=[Face(box, np.eye(7)[3])]))
        column = drawn[:box[1], box[0] + 1]  # the filled tag above the box, in its colour
        return int((column == COLOURS["happy"]).all(axis=1).sum())

    assert label_height((2160, 3840)) >= 4 * label_height((480, 640)) - 4
    voted = Face((40, 100, 60, 60), np.eye(7)[3] * 0.9 + 0.1 / 7)  # a plug-in's label vote, with no probabilities:
    voted.smoothed_label = "sad"  # unsmoothed, as the CSV has it, where it was a TypeError ending the run (s48f 1)
    out = draw(Packet("cam", 0, 0.0, np.zeros((480, 400, 3), np.uint8), faces=[voted]), show_probs=True)
    assert tuple(out[130, 40]) == COLOURS["happy"]


def test_a_file_another_writer_holds_is_refused_and_keeps_its_frames(tmp_path):
    """A second run or shard with the same video path used to truncate the first's file. Two
    opens of one file in one process contend for flock as two processes do, so two sinks here
    stand for the two runs."""
    from fer_pipe.errors import InputError
    from fer_pipe.messages import Packet
    from fer_pipe.stages.video_writer import VideoWriterParams, VideoWriterSink

    path = tmp_path / "a.avi"
    first = VideoWriterSink("first", VideoWriterParams(path=str(path)))
    first.open()
    for index in range(5):
        first.consume(Packet("cam", index, index / 25, np.full((48, 64, 3), 40 * index, np.uint8)))
    second = VideoWriterSink("second", VideoWriterParams(path=str(path)))
    message = (f"video_writer {path}: another process is writing it (a second run or shard with the "
               "same path?); give each its own file")
    with pytest.raises(InputError, match=re.escape(message)):
        VideoWriterSink.preflight(second.params)
    with pytest.raises(InputError, match=re.escape(message)):
        second.open()
    first.close()
    assert len(read_frames(path)) == 5
    second.open()
    second.close()


@pytest.mark.parametrize("fps, frames", [(30.0, 12), (10.0, 5)])
def test_the_file_plays_at_the_source_rate_unless_told_otherwise(clips, tmp_path, fps, frames):
    """The rate used to be 25 whatever the source: a 30 fps clip played 20% slow. Five frames are
    fewer than the writer holds back to read the rate: they are written at the end."""
    clip = write_video(tmp_path / "clip.avi", read_frames(clips["WolfgangLanger_Pexels.mp4"], frames), fps=fps)
    stages = {
        "source": {"type": "video", "params": {"path": str(clip)}},
        "detector": {"type": "haar", "inputs": ["source"]},
        "classifier": {"type": "classifier", "inputs": ["detector"]},
        "own": {"type": "video_writer", "inputs": ["classifier"], "params": {"path": str(tmp_path / "own.avi")}},
        "told": {"type": "video_writer", "inputs": ["classifier"],
                 "params": {"path": str(tmp_path / "told.avi"), "fps": 12.5}},
    }
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({"stages": stages}))
    done = fer_pipe("run", str(tmp_path / "g.yaml"), "--quiet", timeout=180)
    assert done.returncode == 0, done.stderr
    for name, rate in (("own.avi", fps), ("told.avi", 12.5)):
        capture = cv2.VideoCapture(str(tmp_path / name))
        assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(rate, abs=0.01), name
        capture.release()
        assert len(read_frames(tmp_path / name)) == frames


def test_a_frame_late_by_periods_is_preceded_by_copies_of_the_one_before(tmp_path):
    """A file has one rate, and frames were written one after another whatever their times: a
    variable-rate file's 5 fps stretch after 25 fps played 5x fast, as did a live source's
    survivors of dropped frames, so the video could not be lined up with the CSV. A camera that
    was down for a minute is cut to MAX_FILL_S of its last frame, not a frozen minute."""
    from fer_pipe.messages import Packet
    from fer_pipe.stages.video_writer import MAX_FILL_S, VideoWriterParams, VideoWriterSink

    times = [i / 25 for i in range(10)] + [0.36 + 0.2 * i for i in range(1, 6)] + [61.36]

    def levels_written(path, **params) -> list[int]:
        """Frame i is grey level 15 * i: the level of each frame in the file, over 15."""
        sink = VideoWriterSink("out", VideoWriterParams(path=str(path), **params))
        sink.open()
        try:
            for index, timestamp in enumerate(times):
                sink.consume(Packet("cam", index, timestamp, np.full((48, 64, 3), 15 * index, np.uint8)))
        finally:
            sink.close()
        return [round(float(frame.mean()) / 15) for frame in read_frames(path)]

    expected = list(range(10))
    for index in range(10, 15):  # 0.2 s after the one before: four copies of that one, then it
        expected += [index - 1] * 4 + [index]
    expected += [14] * (int(MAX_FILL_S * 25) - 1) + [15]
    assert levels_written(tmp_path / "a.avi") == expected
    # a rate the user gives is the one to play at: one frame each
    assert levels_written(tmp_path / "told.avi", fps=25) == list(range(16))


def test_frames_faster_than_the_files_rate_keep_its_timing_jitter_and_a_clock_stepped_back_lose_none(tmp_path,
                                                                                                   capsys):
    """A camera that came back from an outage at 24 fps into a file begun at its 10: every frame
    was written, one period each, and 40 s of camera became 63 s of video (s40c). A frame a
    whole slot ahead of its time in the file is left out, said once; a camera's jitter within a
    slot loses nothing (s40d: 9-18% of frames at 30 fps with 10-15 ms of it, with slots rounded);
    a clock stepped back an hour (NTP) starts the file's clock again."""
    times = [i / 10 for i in range(20)] + [2 + i / 25 for i in range(49)] + [4 - 3600 + i / 10 for i in range(10)]
    levels = _levels_written(tmp_path / "a.avi", times, {"fps": 10})
    assert len(levels) == 20 + 21 + 10  # 2 s at 10, 2 s of 25 fps at 10 (a slot ahead at most), the stepped clock's 1 s
    assert levels[:20] == list(range(20)) and levels[-10:] == list(range(69, 79))
    assert all(abs(level - (20 + 2.5 * slot)) <= 2 for slot, level in enumerate(levels[20:41]))  # MJPEG: a level off
    assert capsys.readouterr().err == (f"fer-pipe: video_writer {tmp_path / 'a.avi'}: cam frames come faster than "
                                       "the file's 10 fps (from frame 22); those a whole frame ahead of their time in "
                                       "it are left out, so that it keeps their timing\n")
    jittered = [i / 30 + (0.015 if i % 2 else -0.012) for i in range(60)]
    assert _levels_written(tmp_path / "b.avi", jittered, {"fps": 30}) == list(range(60))


def _levels_written(path, times, extra) -> list[int]:
    """Frames dated ``times`` carrying ``extra`` through a video writer, frame i of grey level
    3 * i: the level of each frame in the file, over 3."""
    from fer_pipe.messages import Packet
    from fer_pipe.stages.video_writer import VideoWriterParams, VideoWriterSink

    sink = VideoWriterSink("out", VideoWriterParams(path=str(path)))
    sink.open()
    try:
        for index, timestamp in enumerate(times):
            sink.consume(Packet("cam", index, timestamp, np.full((48, 64, 3), 3 * index, np.uint8), extra=extra))
    finally:
        sink.close()
    return [round(float(frame.mean()) / 3) for frame in read_frames(path)]


def _rate_of(path) -> float:
    capture = cv2.VideoCapture(str(path))
    try:
        return capture.get(cv2.CAP_PROP_FPS)
    finally:
        capture.release()


def test_a_live_sources_own_rate_is_written_not_the_rate_of_the_frames_that_survived_its_drops(tmp_path):
    """A camera at 25 fps of which every third frame reached the writer (the rest dropped on a
    busy machine) was written at 8.3 fps, from the survivors' gaps: 8 s of camera, 13.5 s of
    video in the review. A live source says its own rate; a bogus one (a stream's 90 kHz clock)
    is not taken."""
    from fer_pipe.messages import Packet
    from fer_pipe.stages.video_writer import VideoWriterParams, VideoWriterSink

    for rate, name, frames in ((25.0, "camera.avi", 28), (90000.0, "bogus.avi", 10)):
        sink = VideoWriterSink("out", VideoWriterParams(path=str(tmp_path / name)))
        sink.open()
        try:
            for i in range(10):
                sink.consume(Packet("cam", 3 * i, 3 * i / 25, np.full((48, 64, 3), 20 * i, np.uint8),
                                    extra={"fps": rate}))
        finally:
            sink.close()
        capture = cv2.VideoCapture(str(tmp_path / name))
        written = capture.get(cv2.CAP_PROP_FPS)
        capture.release()
        assert written == pytest.approx(25.0 if rate == 25.0 else 25 / 3, abs=0.01), name
        assert len(read_frames(tmp_path / name)) == frames, name


def test_a_realtime_video_says_its_own_rate(tmp_path):
    """As a live source's; read as fast as it decodes, its container's (for the writer alone)."""
    from fer_pipe.inprocess import run_stage

    clip = write_video(tmp_path / "clip.avi", [np.full((48, 64, 3), 10 * i, np.uint8) for i in range(3)], fps=12.5)
    assert [p.extra for p in run_stage("video", params={"path": str(clip), "realtime": True})] == [{"fps": 12.5}] * 3
    assert [p.extra for p in run_stage("video", params={"path": str(clip)})] == [{"container_fps": 12.5}] * 3


def test_a_files_rate_is_its_containers_where_its_times_are_rounded_and_a_slow_start_loses_no_frame(tmp_path,
                                                                                                     capsys):
    """Matroska and WebM keep whole milliseconds: a 30 fps WebM measured 30.303 fps and was
    written so, a copy of a frame every 99. A file that starts slow (a phone's low light) set the
    rate at its first frames', and 39 of its 72 frames, all in the CSV, were left out (s44c)."""
    def written(path, times, container) -> tuple[list[int], float]:
        return _levels_written(path, times, {"container_fps": container}), _rate_of(path)

    levels, rate = written(tmp_path / "ms.avi", [round(i / 30, 3) for i in range(80)], 30.0)
    assert (levels, rate) == (list(range(80)), pytest.approx(30.0, abs=0.01))
    # an MP4 trimmed without re-encoding: its container's average is off, its frames' times are exact (s52c 2)
    levels, rate = written(tmp_path / "trimmed.avi", [i / 24 for i in range(40)], 23.6716)
    assert (levels, rate) == (list(range(40)), pytest.approx(24.0, abs=0.01))
    slow_start = [i / 10 for i in range(12)] + [1.2 + i / 30 for i in range(60)]  # its container's average: 21.6
    levels, rate = written(tmp_path / "slow.avi", slow_start, 21.6)
    assert rate == pytest.approx(21.6, abs=0.01)
    assert sorted(set(levels)) == list(range(72)) and levels == sorted(levels)  # the slow frames' copies, then all
    assert capsys.readouterr().err == (f"fer-pipe: video_writer {tmp_path / 'slow.avi'}: cam frames come faster than "
                                       "the file's 21.6 fps (from frame 16); each is written, so that stretch plays "
                                       "slower than it was recorded\n")
    # a container that says 1000 fps (an AVI's rate field, or frames all dated 0): its frames were
    # taken for a live source's, and 53 of 72 left out (s64e 2)
    levels, _ = written(tmp_path / "fast.avi", [i / 1000 for i in range(72)], 1000.0)
    assert levels == list(range(72))


def test_a_video_writer_that_several_sources_reach_is_refused_before_the_run(short_clip, tmp_path):
    """It wrote both cameras' frames into one file in turn, in an order that changed from run to
    run, and failed half-way where their sizes differed."""
    stages = {
        "door": {"type": "video", "params": {"path": str(short_clip)}},
        "desk": {"type": "video", "params": {"path": str(short_clip)}},
        "detector": {"type": "haar", "inputs": ["door", "desk"]},
        "classifier": {"type": "classifier", "inputs": ["detector"]},
        "annotated": {"type": "video_writer", "inputs": ["classifier"], "params": {"path": str(tmp_path / "a.mp4")}},
    }
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    done = fer_pipe("validate", str(tmp_path / "g.yaml"))
    assert (done.returncode, done.stderr) == (2, f"fer-pipe: {tmp_path / 'g.yaml'}:21: stage 'annotated' "
                                                 "(video_writer): inputs: the frames of 2 sources "
                                                 "reach it (door, desk), and a video_writer takes one source's: give "
                                                 "each source its own detector and sink\n")


def test_frame_rate_reads_the_first_source_and_ignores_a_late_frame():
    from fer_pipe.messages import Packet
    from fer_pipe.stages.video_writer import FALLBACK_FPS, MIN_FPS, frame_rate

    times = [0.0, 0.04, 0.08, 0.20, 0.24, 0.28]  # one late frame among 25 fps ones
    packets = [Packet("a", i, t) for i, t in enumerate(times)] + [Packet("b", 0, 0.001), Packet("b", 1, 0.002)]
    assert frame_rate(packets) == pytest.approx(25.0)
    assert frame_rate([Packet("a", 0, 0.0)]) == FALLBACK_FPS
    assert frame_rate([Packet("a", i, 1000.0 * i) for i in range(3)]) == MIN_FPS  # OpenCV refuses 0.001


def test_a_frame_of_another_size_is_scaled_to_fit_and_said_once(tmp_path, capsys):
    """An image folder of mixed sizes, or a camera back at another resolution: the run failed
    (exit 2) at the first such frame, which a 24/7 recording lost to a camera's settings."""
    from fer_pipe.messages import Packet
    from fer_pipe.stages.video_writer import VideoWriterParams, VideoWriterSink

    path = tmp_path / "a.avi"
    sink = VideoWriterSink("out", VideoWriterParams(path=str(path), fps=5))
    sink.open()
    try:
        for index in range(3):
            sink.consume(Packet("cam", index, index / 5, np.full((48, 64, 3), 40 * index, np.uint8)))
        for index in (3, 4):  # square: scaled to 48x48 between two 8 px bars
            sink.consume(Packet("cam", index, index / 5, np.full((32, 32, 3), 200, np.uint8)))
    finally:
        sink.close()
    frames = read_frames(path)
    assert [f.shape for f in frames] == [(48, 64, 3)] * 5
    assert [round(float(f.mean()) / 40) for f in frames[:3]] == [0, 1, 2]  # MJPEG: a level or two off
    for frame in frames[3:]:
        assert abs(float(frame[:, 10:54].mean()) - 200) < 8 and float(frame[:, :6].mean()) < 8
    assert capsys.readouterr().err == (f"fer-pipe: video_writer {path}: cam frame 3 is 32x32, the file 64x48; it "
                                       "and any other frame of another size are scaled to fit\n")


def test_grey_frames_are_written_in_colour_with_their_overlay(tmp_path):
    """A source may yield grey frames (an infrared camera's), which the detector and classifier
    take; the video writer's OpenCV refused them, said as a frame it could not write "(35980 MiB
    free on its disk)", naming a later frame (s40a)."""
    from fer_pipe.messages import Face, Packet
    from fer_pipe.stages.video_writer import VideoWriterParams, VideoWriterSink

    path = tmp_path / "grey.avi"
    sink = VideoWriterSink("out", VideoWriterParams(path=str(path), fps=5))
    sink.open()
    try:
        for index, image in enumerate([np.full((48, 64), 100, np.uint8), np.full((48, 64, 1), 150, np.uint8)] * 2):
            sink.consume(Packet("cam", index, index / 5, image, faces=[Face((2, 2, 20, 20))]))
    finally:
        sink.close()
    frames = read_frames(path)
    assert [round(float(f[30:, 30:].mean()) / 50) for f in frames] == [2, 3, 2, 3]  # MJPEG: a level or two off
    assert all(f.shape == (48, 64, 3) and f[12, 2, 1] > 200 > f[12, 2, 0] for f in frames)  # the green box


@pytest.mark.parametrize("suffix", [".avi", ".mp4"])
def test_segments_are_numbered_files_each_whole_and_a_restart_adds_to_them(tmp_path, suffix):
    """One file per run held its whole index in memory (74 bytes a frame), played only once the
    run ended, and was written over by a restart. With segment_s each file closes, checked, at
    its length, and a restart numbers on after the last run's files; a second run given the
    same path still stops at its start."""
    from pydantic import ValidationError

    from fer_pipe.errors import InputError
    from fer_pipe.messages import Packet
    from fer_pipe.stages.video_writer import VideoWriterParams, VideoWriterSink

    path = tmp_path / f"a{suffix}"

    def coded(number: int) -> np.ndarray:
        """A frame that shows ``number`` in 7 black or white squares, which MJPEG keeps apart."""
        image = np.zeros((48, 64, 3), np.uint8)
        for bit in range(7):
            if number >> bit & 1:
                image[8:24, 8 * bit:8 * bit + 8] = 255
        return image

    def run(frames: int, first: int) -> None:
        sink = VideoWriterSink("out", VideoWriterParams(path=str(path), fps=25, segment_s=1))
        sink.open()
        try:
            for index in range(frames):
                sink.consume(Packet("cam", index, index / 25, coded(first + index)))
        finally:
            sink.close()

    def levels(name: str) -> list[int]:
        return [sum(1 << bit for bit in range(7) if frame[8:24, 8 * bit:8 * bit + 8].mean() > 128)
                for frame in read_frames(tmp_path / name)]

    run(60, 0)
    assert sorted(p.name for p in tmp_path.glob(f"a*{suffix}")) == [f"a-00000{n}{suffix}" for n in (1, 2, 3)]
    assert [levels(f"a-00000{n}{suffix}") for n in (1, 2, 3)] == [list(range(25)), list(range(25, 50)),
                                                                   list(range(50, 60))]
    first = (tmp_path / f"a-000001{suffix}").read_bytes()
    run(30, 60)  # the restart
    assert [levels(f"a-00000{n}{suffix}") for n in (4, 5)] == [list(range(60, 85)), list(range(85, 90))]
    assert (tmp_path / f"a-000001{suffix}").read_bytes() == first and not path.exists()

    holder = VideoWriterSink("first", VideoWriterParams(path=str(path), segment_s=1))
    holder.open()
    try:
        with pytest.raises(InputError, match="another process is writing it"):
            VideoWriterSink("second", VideoWriterParams(path=str(path), segment_s=1)).open()
    finally:
        holder.close()
    with pytest.raises(ValidationError, match="0 .one file. or at least 1 s"):
        VideoWriterParams(path=str(path), segment_s=0.5)
    long = tmp_path / ("v" * 245 + suffix)  # a name that fits alone, not with -000001 or as .NAME.lock (s46a)
    VideoWriterSink.preflight(VideoWriterParams(path=str(long)))
    with pytest.raises(InputError, match=r"its name is too long for a series of files, whose names add up to 7 "
                                         r"bytes \(vvvv-000001.*\) to it, past the 255 a name may have$"):
        VideoWriterSink.preflight(VideoWriterParams(path=str(long), segment_s=1))


def test_a_segments_folder_removed_under_the_run_is_named_in_the_line(tmp_path):
    """The line that names the file asked the vanished folder for its free room, and the run
    failed with that bare FileNotFoundError in its place (s39b)."""
    import shutil

    from fer_pipe.messages import Packet
    from fer_pipe.stages.video_writer import VideoWriterParams, VideoWriterSink

    folder = tmp_path / "video"
    folder.mkdir()
    sink = VideoWriterSink("out", VideoWriterParams(path=str(folder / "a.avi"), fps=25, segment_s=1))
    sink.open()
    try:
        for index in range(10):
            sink.consume(Packet("cam", index, index / 25, np.zeros((48, 64, 3), np.uint8)))
        shutil.rmtree(folder)
        with pytest.raises(OSError) as raised:
            for index in range(10, 25):  # the segment ends, and is read back
                sink.consume(Packet("cam", index, index / 25, np.zeros((48, 64, 3), np.uint8)))
    finally:
        with contextlib.suppress(OSError):
            sink.close()
    assert str(raised.value) == (f"video_writer {folder / 'a-000001.avi'}: the file holds 0 of the 25 frames given "
                                 "to it (its folder: No such file or directory)")


def test_a_run_without_frames_into_a_link_keeps_the_link(tmp_path):
    """``out.mp4 -> /big/disk/out.mp4``, its target yet to be made: the writer took the path for
    a file of its own and, ending before its first frame, removed the user's link (s61f 3)."""
    from fer_pipe.inprocess import run_stage

    (tmp_path / "disk").mkdir()
    link = tmp_path / "out.mp4"
    link.symlink_to(tmp_path / "disk" / "out.mp4")
    run_stage("video_writer", [], params={"path": str(link)})
    assert link.is_symlink()
