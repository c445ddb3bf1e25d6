"""The webcam source. This machine has no camera, so the frame loop is exercised through OpenCV's
same VideoCapture on a recording given as the device (a path), and the missing camera for real."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import yaml
from conftest import fer_pipe, read_frames, write_video
from livetools import csv_rows

from fer_pipe.stages.webcam import cameras_in


def webcam_config(path, device, csv_path):
    stages = {
        "source": {"type": "webcam", "params": {"device": device}},
        "detector": {"type": "haar", "inputs": ["source"]},
        "classifier": {"type": "classifier", "inputs": ["detector"]},
        "csv": {"type": "csv", "inputs": ["classifier"], "params": {"path": str(csv_path)}},
    }
    path.write_text(yaml.safe_dump({"stages": stages}))
    return path


def test_missing_camera_is_one_line_naming_the_device_and_exit_2(tmp_path):
    csv_path = tmp_path / "out.csv"
    done = fer_pipe("run", str(webcam_config(tmp_path / "g.yaml", 9, csv_path)), timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == ("fer-pipe: stage 'source' (webcam): webcam 9: no camera (/dev/video9 does not exist; "
                                   f"{cameras_in(Path('/dev'))})")
    assert not csv_path.exists()  # it failed before anything started


def test_a_missing_camera_names_the_cameras_there_are_or_the_demo(tmp_path):
    """A USB camera is often /dev/video2 (a laptop's own takes 0 and 1), and a first run of the
    webcam config on a server has none: "no camera" said neither (s62a 10). A real folder of
    device-like files stands for /dev, which no test may add to."""
    assert cameras_in(tmp_path) == "this machine has none; `fer-pipe demo` runs the pipeline on sample videos"
    for name in ("video10", "video2", "video0", "videodev.log"):
        (tmp_path / name).touch()
    assert cameras_in(tmp_path) == f"cameras here: {tmp_path}/video0, {tmp_path}/video2, {tmp_path}/video10"


def test_a_negative_camera_index_is_refused_by_validate(tmp_path):
    """device: -1 passed validate and was refused only when a run opened /dev/video-1."""
    config = webcam_config(tmp_path / "g.yaml", -1, tmp_path / "out.csv")
    done = fer_pipe("validate", str(config), timeout=60)
    assert done.returncode == 2 and re.fullmatch(
        rf"fer-pipe: {re.escape(str(config))}:\d+: stage 'source' \(webcam\): params.device: a camera index is 0 or "
        r"more \(or give a device path such as /dev/video0\)\n", done.stderr), done.stderr


def test_a_device_named_in_bytes_that_are_not_utf8_is_one_line_not_a_crash(tmp_path):
    """A recording given as the device under a Latin-1 name reached OpenCV, whose bindings crash on
    it: the source's process died (s46h)."""
    device = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.avi"))
    device.write_bytes(b"not read")
    done = fer_pipe("run", str(webcam_config(tmp_path / "g.yaml", str(device), tmp_path / "out.csv")), "--quiet",
                    timeout=120)
    assert (done.returncode, done.stderr.splitlines()[-1]) == (
        2, f"fer-pipe: stage 'source' (webcam): webcam {tmp_path}/caf\\udce9.avi: its name is not valid UTF-8, which "
           "OpenCV cannot open; rename it")


def test_live_frames_flow_in_order_and_what_is_dropped_is_counted(clips, tmp_path):
    video = write_video(tmp_path / "cam.avi", read_frames(clips["single_face.mp4"], 40))
    csv_path = tmp_path / "out.csv"
    started = time.time()
    done = fer_pipe("run", str(webcam_config(tmp_path / "g.yaml", str(video), csv_path)), timeout=180)
    assert done.returncode == 0, done.stderr
    # allowed, as a stand-in camera, but said: a user who meant the video source lost most frames (s39c)
    assert done.stderr.startswith(f"fer-pipe: WARNING: {tmp_path / 'g.yaml'}: stage 'source' (webcam) reads a file, "
                                  f"not a camera (device {video}): as a live camera, as fast as it decodes, so "
                                  "every frame the stages cannot keep up with is dropped; the video source reads "
                                  "every frame of a file\n"), done.stderr
    rows = csv_rows(csv_path)
    frames = [int(r["frame"]) for r in rows]
    assert frames == sorted(set(frames)) and set(frames) <= set(range(40))
    times = [float(r["timestamp"]) for r in rows]
    assert times == sorted(times)
    # a camera's frames are dated (they began at 0 again at each restart of a long-running shard)
    assert started <= times[0] and times[-1] <= time.time()
    # Live backpressure: a frame the detector could not take in time is dropped and counted, never
    # queued. The source drops most; on a loaded machine a stage can also find its frame's ring slot
    # already reused by the source, and counts that drop itself, so every stage's count is summed.
    stage_rows = [line.split() for line in done.stderr.splitlines()
                  if line.split()[:1] in (["source"], ["detector"], ["classifier"], ["csv"])]
    assert [row[0] for row in stage_rows] == ["source", "detector", "classifier", "csv"]
    assert len(frames) + sum(int(row[5]) for row in stage_rows) == 40
