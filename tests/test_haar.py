"""The haar detector: downscaled detection in full-frame pixels, every_n, and the tracker hand-off."""
from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from conftest import crossing_faces, fer_pipe, read_frames, write_video
from fer_pipe.boxes import iou_matrix
from fer_pipe.config import load_graph
from fer_pipe.errors import ConfigError
from fer_pipe.inprocess import make_stage, run_stage
from fer_pipe.messages import Packet
from fer_pipe.runner import Runner
from fer_pipe.stages.haar import _distinct, detection_scale

FACE_FRAME = 300  # the woman smiling, face frontal and unobstructed


@pytest.fixture(scope="module")
def face_frames(clips) -> list[np.ndarray]:
    """30 frames of the smiling woman from FACE_FRAME on (a seek, not a decode from the start)."""
    cap = cv2.VideoCapture(str(clips["WolfgangLanger_Pexels.mp4"]))
    cap.set(cv2.CAP_PROP_POS_FRAMES, FACE_FRAME)
    frames = [cap.read()[1] for _ in range(30)]
    cap.release()
    return frames


@pytest.fixture(scope="module")
def face_frame(face_frames) -> np.ndarray:
    return face_frames[0]


def detect(image: np.ndarray, **params) -> list[tuple[int, int, int, int]]:
    detector = make_stage("haar", params)
    detector.open()
    try:
        return detector.detect(image)
    finally:
        detector.close()


def best_iou(box, boxes) -> float:
    return float(iou_matrix(np.array([box], float), np.array(boxes, float)).max()) if boxes else 0.0


def test_scale_makes_min_size_the_cascade_window_and_never_enlarges():
    assert detection_scale(640, min_size=48, detect_width=0) == 0.5
    assert detection_scale(1280, min_size=48, detect_width=0) == 0.5
    assert detection_scale(640, min_size=16, detect_width=0) == 1.0
    assert detection_scale(1280, min_size=48, detect_width=320) == 0.25
    assert detection_scale(200, min_size=48, detect_width=320) == 1.0
    assert detection_scale(480, min_size=64, detect_width=0) == 0.5  # no narrower than 240 px
    assert detection_scale(200, min_size=64, detect_width=0) == 1.0


def test_a_small_streams_faces_are_found_as_unshrunk(clips, tmp_path):
    """A camera's 256x144 substream, shrunk so that a min_size face was 24 px, lost faces of
    twice min_size: 361 of the 467 frames whose face an unshrunk search finds (s45e)."""
    small = tmp_path / "small.avi"
    write_video(small, [cv2.resize(f, (256, 144), interpolation=cv2.INTER_AREA)
                        for f in read_frames(clips["WolfgangLanger_Pexels.mp4"], 120)])
    frames = read_frames(small)
    found = {name: sum(bool(p.faces) for p in run_stage("haar", [Packet("s", i, i / 24, f)
                                                                 for i, f in enumerate(frames)], params=params))
             for name, params in (("default", {}), ("unshrunk", {"detect_width": 256}))}
    assert found["unshrunk"] > 100 and found["default"] >= found["unshrunk"] - 2, found


def test_downscaled_detection_finds_the_face_in_full_frame_pixels(face_frame):
    full = detect(face_frame, detect_width=8192)
    shrunk = detect(face_frame)
    assert len(full) == 1 and len(shrunk) == 1
    x, y, w, h = shrunk[0]
    assert w >= 100, "a box left in the shrunk frame's pixels would be half the face's size"
    assert 0 <= x and x + w <= face_frame.shape[1] and 0 <= y and y + h <= face_frame.shape[0]
    assert best_iou(full[0], shrunk) >= 0.6


def test_boxes_follow_the_frame_when_it_is_twice_as_large(face_frame):
    small = detect(face_frame, detect_width=320)
    large = detect(cv2.resize(face_frame, None, fx=2, fy=2), detect_width=320)
    assert len(small) == 1 and len(large) == 1
    halved = tuple(v / 2 for v in large[0])
    assert best_iou(halved, small) >= 0.8


def test_faces_below_min_size_are_not_reported(face_frame):
    (_, _, w, _), = detect(face_frame)
    assert detect(face_frame, min_size=w * 2) == []


def test_two_passes_find_the_boxes_one_full_pass_finds(face_frames):
    for frame in face_frames[::5]:
        two, one = detect(frame), detect(frame, coarse_factor=1.0)
        assert len(two) == len(one) == 1
        assert best_iou(one[0], two) >= 0.8


def test_two_passes_find_faces_between_coarse_steps_and_report_each_once(clips):
    """Two 150 px faces crossing the frame pass through sizes the coarse pyramid steps over: the
    coarse step alone (at the fine pass's min_neighbors) loses most of them."""
    frames = crossing_faces(read_frames(clips["single_face.mp4"]))
    two = [detect(f) for f in frames]
    one = [detect(f, coarse_factor=1.0) for f in frames]
    coarse_only = [detect(f, scale_factor=1.35, coarse_factor=1.0) for f in frames]
    assert max(map(len, two)) == 2, "a face was reported twice (overlapping candidate regions)"
    found = sum(map(len, two))
    assert found >= sum(map(len, one)) and found >= 0.97 * 2 * len(frames)
    assert sum(map(len, coarse_only)) < len(frames)


def test_which_duplicate_is_kept_does_not_depend_on_the_order_threads_found_them_in():
    """Under load OpenCV's threads return candidates in another order; the CSV must not change
    (it did: frame 24 of a batch chunk got a box 5 px off the whole run's)."""
    duplicates = [(320, 107, 245, 245), (315, 99, 251, 251), (10, 10, 80, 80)]
    kept = _distinct(duplicates)
    assert kept == _distinct(duplicates[::-1]) == _distinct(duplicates[1:] + duplicates[:1])
    assert len(kept) == 2


def test_every_n_detects_on_every_nth_frame_of_each_source(face_frame):
    packets = [Packet(src, i, i / 25, face_frame) for i in range(7) for src in ("a", "b")]
    out = run_stage("haar", packets, {"every_n": 3})
    assert [(p.source, p.index) for p in out] == [(p.source, p.index) for p in packets]  # none skipped is lost
    for packet in out:
        looked = packet.index % 3 == 0
        assert packet.extra["detected"] is looked
        assert (len(packet.faces) == 1) if looked else (packet.faces == [])


def test_every_n_with_the_tracker_gives_faces_on_skipped_frames(face_frames, tmp_path):
    """A real multi-process run of the fast config's shape: detector every 3rd frame, tracker."""
    video = write_video(tmp_path / "faces.avi", face_frames)
    out = tmp_path / "out.csv"
    graph = load_graph({"queue_size": 4, "stages": {
        "source": {"type": "video", "params": {"path": str(video)}},
        "detector": {"type": "haar", "inputs": ["source"], "params": {"every_n": 3}},
        "track": {"type": "track", "inputs": ["detector"]},
        "classifier": {"type": "classifier", "inputs": ["track"]},
        "csv": {"type": "csv", "inputs": ["classifier"], "params": {"path": str(out)}},
    }})
    result = Runner(graph, progress=False).run()
    assert result.exit_code == 0, result.message
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["frame"]) for r in rows] == list(range(30))
    skipped_with_face = [r for r in rows if int(r["frame"]) % 3 and r["label"]]
    # the track is confirmed after min_hits=3 detections (frames 0, 3, 6); from then on the
    # frames the detector skipped carry the tracked face, classified
    assert {int(r["frame"]) for r in skipped_with_face} >= {f for f in range(7, 30) if f % 3}
    assert all(r["track_id"] for r in skipped_with_face)


def test_a_wrong_cascade_file_is_one_line_before_any_stage_starts(short_clip, tmp_path):
    """A text file or a folder made OpenCV raise a SystemError inside the detector's process (exit 1,
    once per worker); a missing name added OpenCV's own [ERROR] lines; a FIFO waited for a writer
    for ever, with Ctrl-C held back."""
    import os

    from conftest import REPO, fer_pipe

    text = tmp_path / "cascade.xml"
    text.write_text("not a cascade\n")
    fifo = tmp_path / "fifo.xml"
    os.mkfifo(fifo)
    cases = {str(text): "not a Haar cascade OpenCV can load", str(tmp_path): "is a folder, not a cascade file",
             "nosuch.xml": "the folder fer-pipe runs in (nor is it one of OpenCV's cascades, in ",
             str(fifo): "not a regular file"}
    for cascade, reason in cases.items():
        done = fer_pipe("run", str(REPO / "configs" / "video_to_csv.yaml"), "--quiet", "--set",
                        f"source.path={short_clip}", "--set", f"csv.path={tmp_path / 'o.csv'}",
                        "--set", f"detector.cascade={cascade}", timeout=60)
        assert done.returncode == 2, done.stderr
        (line,) = done.stderr.splitlines()
        assert line.startswith("fer-pipe: stage 'detector' (haar): cascade ") and reason in line, line
    assert not (tmp_path / "o.csv").exists()


def test_a_bare_cascade_name_not_among_opencvs_is_a_file_in_the_working_folder(tmp_path, monkeypatch):
    """``cascade: my.xml`` was looked for in OpenCV's folder only, and said no such file there."""
    import shutil

    from fer_pipe.stages.haar import load_cascade

    mine = tmp_path / "my.xml"
    shutil.copy(cv2.data.haarcascades + "haarcascade_frontalface_alt.xml", mine)
    monkeypatch.chdir(tmp_path)
    assert not load_cascade("my.xml").empty()
    assert not load_cascade("haarcascade_eye.xml").empty()  # OpenCV's own still found by name


def test_a_min_size_below_the_cascade_window_is_refused_not_taken_as_the_window():
    """The frame is never enlarged, so the cascade finds no face under its window (24 px; 20 for
    the alt cascades): a smaller min_size was accepted and acted as the window, finding none of
    the faces it promised."""
    from fer_pipe.stages.haar import HaarDetector, HaarParams

    done = fer_pipe("validate", "video_to_csv", "--set", "detector.min_size=16", timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.endswith(" with --set detector.min_size=16: stage 'detector' (haar): params: min_size 16 is "
                                "below the 24 px window of cascade haarcascade_frontalface_default.xml, the smallest "
                                "face it finds; give 24 or more\n"), done.stderr
    with pytest.raises(ConfigError, match="params: min_size 16 is below the 24 px window"):
        make_stage("haar", {"min_size": 16})  # run_stage and batch tasks too
    HaarDetector.preflight(HaarParams(min_size=24))
    HaarDetector.preflight(HaarParams(cascade="haarcascade_frontalface_alt2.xml", min_size=20))


def test_a_cascade_under_home_has_its_window_checked_by_validate_too(tmp_path):
    """The window was read before ``~`` was expanded, so validate passed what run then refused (s43b)."""
    import shutil
    from pathlib import Path

    shutil.copy(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml", tmp_path / "mine.xml")
    done = fer_pipe("validate", "video_to_csv", "--set", "detector.cascade=~/mine.xml", "--set",
                    "detector.min_size=12", env={"HOME": str(tmp_path)}, timeout=60)
    assert done.returncode == 2 and "params: min_size 12 is below the 24 px window of cascade ~/mine.xml" \
        in done.stderr, done.stderr


def test_an_opencv_without_haar_cascades_is_said_with_the_way_out(clips, tmp_path):
    """pip installs opencv-python-headless 5 (another package's dependency) over opencv-python's cv2
    folder, and pip check stays clean: the run failed with "AttributeError: module 'cv2' has no
    attribute 'CascadeClassifier'" (s65b 2). Such a wheel cannot be installed here beside the
    tests' own, so the attribute is taken from the cv2 the run's parent imports: a mock of it."""
    import subprocess
    import sys

    hide = "import cv2, sys; del cv2.CascadeClassifier; from fer_pipe.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", hide, "run", "video_to_csv", "--set", f"source.path={clips['single_face.mp4']}",
                           "--set", f"csv.path={tmp_path / 'out.csv'}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.endswith(
        f"stage 'detector' (haar): the OpenCV installed here ({cv2.__version__}) has no Haar cascades: OpenCV 5, or a "
        "second OpenCV wheel (opencv-python-headless, another package's dependency) written over opencv-python's cv2 "
        "folder; pip uninstall every opencv-* wheel, then pip install --force-reinstall 'opencv-python<5'\n"), done.stderr
    assert not (tmp_path / "out.csv").exists()
