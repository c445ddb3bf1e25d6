"""The window sink under a real X server (Xvfb): a screenshot shows the overlay, q ends the run cleanly.

Also the headless case: with no display the run fails before anything starts, pointing to video_writer.
"""
from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml
from conftest import read_frames, write_video
from livetools import csv_rows, needs, start_fer_pipe, stop, wait_for

from fer_pipe.preprocess import EMOTIONS
from fer_pipe.stages.overlay import COLOURS

SCREEN = (1024, 768)


def window_config(path, video, csv_path, realtime=True):
    stages = {
        "source": {"type": "video", "params": {"path": str(video), "realtime": realtime}},
        "detector": {"type": "haar", "inputs": ["source"]},
        "classifier": {"type": "classifier", "inputs": ["detector"]},
        "window": {"type": "window", "inputs": ["classifier"], "params": {"title": "fer-pipe-test", "show_probs": True}},
        "csv": {"type": "csv", "inputs": ["classifier"], "params": {"path": str(csv_path)}},
    }
    path.write_text(yaml.safe_dump({"stages": stages}))
    return path


@pytest.fixture
def xvfb(tmp_path):
    """A real X server on a free display number; its DISPLAY value."""
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen([needs("Xvfb"), "-displayfd", str(write_fd), "-screen", "0",
                               f"{SCREEN[0]}x{SCREEN[1]}x24", "-nolisten", "tcp"],
                              pass_fds=(write_fd,), stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        display = f":{f.readline().strip()}"
    yield display
    stop(server)


def screenshot(display: str, path) -> np.ndarray:
    subprocess.run([needs("ffmpeg"), "-nostdin", "-loglevel", "error", "-y", "-f", "x11grab", "-video_size",
                    f"{SCREEN[0]}x{SCREEN[1]}", "-i", display, "-frames:v", "1", str(path)], check=True)
    return cv2.imread(str(path))


def test_window_shows_box_and_label_where_the_face_is_and_q_ends_the_run(clips, xvfb, tmp_path):
    needs("xdotool")
    # One real frame of the clip, repeated: every frame gets the same box and label, so the
    # screenshot can be checked against the CSV whatever frame is on screen.
    frame = read_frames(clips["WolfgangLanger_Pexels.mp4"], 300)[-1]
    video = write_video(tmp_path / "still.avi", [frame] * 400)
    csv_path, err_path = tmp_path / "out.csv", tmp_path / "stderr.txt"
    run = start_fer_pipe("run", str(window_config(tmp_path / "g.yaml", video, csv_path)), "--quiet",
                         stderr_path=err_path, env={"DISPLAY": xvfb})
    try:
        wait_for(lambda: len(csv_rows(csv_path)) >= 25, 90, "the window to show frames", run)
        shot = screenshot(xvfb, tmp_path / "shot.png")
        window = subprocess.run(["xdotool", "search", "--name", "fer-pipe-test"], capture_output=True,
                                text=True, env={**os.environ, "DISPLAY": xvfb}).stdout.split()
        assert window, "no X window titled fer-pipe-test"
        subprocess.run(["xdotool", "key", "--window", window[0], "q"], check=True,
                       env={**os.environ, "DISPLAY": xvfb})
        code = wait_for(lambda: run.poll() is not None and [run.returncode], 60, "the run to end after q")[0]
    finally:
        stop(run)
    assert code == 0, err_path.read_text()
    rows = csv_rows(csv_path)
    assert len({r["frame"] for r in rows}) < 400  # q ended the run before the clip did
    face = rows[-1]
    assert face["label"], "the still frame has a face"
    x, y, w, h = (int(face[k]) for k in "xywh")

    # Where the video sits in the screenshot: match an area of the frame the overlay leaves alone.
    patch = frame[y + h + 5:y + h + 65, x:x + w]
    found = cv2.matchTemplate(shot, patch, cv2.TM_SQDIFF_NORMED)
    _, _, best, _ = cv2.minMaxLoc(found)
    ox, oy = best[0] - x, best[1] - (y + h + 5)
    colour = np.array(COLOURS[face["label"]])

    def share_in_colour(image, xs, ys):
        pixels = image[ys, xs].reshape(-1, 3).astype(int)
        return float(np.mean(np.abs(pixels - colour).max(axis=1) < 40))

    left_edge = (slice(ox + x, ox + x + 2), slice(oy + y + 10, oy + y + h - 10))
    bottom_edge = (slice(ox + x + 10, ox + x + w - 10), slice(oy + y + h - 1, oy + y + h + 1))
    for xs, ys in (left_edge, bottom_edge):
        assert share_in_colour(shot, xs, ys) > 0.9  # the box, in the label's colour, around the face
        assert share_in_colour(frame, slice(xs.start - ox, xs.stop - ox), slice(ys.start - oy, ys.stop - oy)) < 0.5
    top = max(0, y - 20)  # the tag sits above the box, or at the frame's top edge when there is no room
    label_band = shot[oy + top:oy + top + 16, ox + x:ox + x + 60]
    assert share_in_colour(label_band, slice(None), slice(None)) > 0.3  # the filled label tag
    assert (np.abs(label_band.astype(int) - colour).max(axis=2) > 120).any()  # with dark text in it

    # The bar chart: one bar per emotion, in its colour, as long as its probability (left of this
    # face, which leaves no room on the right).
    left = ox + x - 6 - 60 - 80 + 60
    for i, emotion in enumerate(EMOTIONS):
        length = int(80 * float(face[f"p_{emotion}"]))
        if length >= 3:
            bar = shot[oy + y + i * 13 + 4:oy + y + i * 13 + 9, left:left + length - 1]
            assert (np.abs(bar.astype(int) - COLOURS[emotion]).max(axis=2) < 40).mean() > 0.9, emotion


def test_without_a_display_the_run_fails_before_starting_and_points_to_video_writer(short_clip, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    csv_path = tmp_path / "out.csv"
    config = window_config(tmp_path / "g.yaml", short_clip, csv_path, realtime=False)
    done = subprocess.run([sys.executable, "-m", "fer_pipe.cli", "run", str(config)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith("fer-pipe: stage 'window' (window): no display")
    assert "video_writer" in lines[0]
    assert not csv_path.exists()  # nothing started
