"""The window sink under a real X server (Xvfb): a screenshot shows the overlay, q ends the run cleanly.

Also the headless case: with no display the run fails before anything starts, pointing to video_writer.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from conftest import read_frames, write_video
from livetools import csv_rows, free_port, needs, start_fer_pipe, stop, wait_for
from test_rtsp import RtspServer

from fer_pipe.messages import EMOTIONS
from fer_pipe.stages.overlay import COLOURS, scale_of

SCREEN = (1024, 768)


def window_config(path, video, csv_path, **source_params):
    stages = {
        "source": {"type": "video", "params": {"path": str(video), "realtime": True, **source_params}},
        "detector": {"type": "haar", "inputs": ["source"]},
        "classifier": {"type": "classifier", "inputs": ["detector"]},
        "window": {"type": "window", "inputs": ["classifier"], "params": {"title": "fer-pipe-test", "show_probs": True}},
        "csv": {"type": "csv", "inputs": ["classifier"], "params": {"path": str(csv_path)}},
    }
    path.write_text(yaml.safe_dump({"stages": stages}))
    return path


def start_xvfb() -> tuple[subprocess.Popen, str]:
    """A real X server on a free display number, and its DISPLAY value. ``-noreset``: a server
    resets as its last client leaves, cutting the connections it is setting up, and a test that
    polls with xdotool before the window's Qt has connected made it reset every 50 ms: the
    preflight's connection, or Qt's, was cut about once in 35 (s48e 1)."""
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen([needs("Xvfb"), "-displayfd", str(write_fd), "-screen", "0",
                               f"{SCREEN[0]}x{SCREEN[1]}x24", "-nolisten", "tcp", "-noreset"],
                              pass_fds=(write_fd,), stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        return server, f":{f.readline().strip()}"


@pytest.fixture
def xvfb():
    server, display = start_xvfb()
    yield display
    stop(server)


def screenshot(display: str, path) -> np.ndarray:
    subprocess.run([needs("ffmpeg"), "-nostdin", "-loglevel", "error", "-y", "-f", "x11grab", "-video_size",
                    f"{SCREEN[0]}x{SCREEN[1]}", "-i", display, "-frames:v", "1", str(path)], check=True)
    return cv2.imread(str(path))


def xdotool(display: str, *args: str) -> str:
    return subprocess.run([needs("xdotool"), *args], capture_output=True, text=True, check=True,
                          env={**os.environ, "DISPLAY": display}).stdout


def windows_titled(display: str, title: str) -> list[str]:
    return subprocess.run([needs("xdotool"), "search", "--name", title], capture_output=True, text=True,
                          env={**os.environ, "DISPLAY": display}).stdout.split()


def window_id(display: str, title: str) -> str:
    found = windows_titled(display, title)
    assert found, f"no X window titled {title}"
    return found[0]


def screenshot_until(display: str, path, shows, what: str, run: subprocess.Popen) -> np.ndarray:
    """Screenshots until one ``shows`` (a truthy result), and that result.

    The window paints a while after the CSV sink has its first rows. And on a saturated CPU the Qt
    5.15 that OpenCV's wheel bundles sometimes misses the MapNotify of its new window and then
    never paints it (Xvfb, no window manager: 2 runs in 8 with three busy loops on 2 cores; the
    window stayed black for the whole 16 s clip); mapping the window again makes it paint.
    """
    def attempt():
        return shows(screenshot(display, path))
    try:
        return wait_for(attempt, 20, what, run)
    except AssertionError:
        if run.poll() is not None:
            raise
    window = window_id(display, "fer-pipe-test")
    xdotool(display, "windowunmap", "--sync", window)
    xdotool(display, "windowmap", "--sync", window)
    return wait_for(attempt, 30, f"{what}, once mapped again", run)


def screenshot_showing(display: str, path, patch: np.ndarray, run: subprocess.Popen) -> tuple[np.ndarray, tuple]:
    """Screenshots until one shows ``patch``; that screenshot and where the patch sits in it."""
    def showing(shot):
        score, _, best, _ = cv2.minMaxLoc(cv2.matchTemplate(shot, patch, cv2.TM_SQDIFF_NORMED))
        return score < 0.05 and (shot, best)
    return screenshot_until(display, path, showing, "the window to show the video", run)


def test_window_shows_box_and_label_where_the_face_is_and_q_ends_the_run(clips, xvfb, tmp_path):
    needs("xdotool")
    # One real frame of the clip, repeated: every frame gets the same box and label, so the
    # screenshot can be checked against the CSV whatever frame is on screen. The encoder's first
    # frame differs a little from the rest (its box by a few pixels), so the run starts at the
    # second. At 5 fps the clip lasts a minute, time enough for a slow X server to paint.
    frame = read_frames(clips["WolfgangLanger_Pexels.mp4"], 300)[-1]
    video = write_video(tmp_path / "still.avi", [frame] * 300, fps=5)
    csv_path, err_path = tmp_path / "out.csv", tmp_path / "stderr.txt"
    config = window_config(tmp_path / "g.yaml", video, csv_path, start=1)
    run = start_fer_pipe("run", str(config), "--quiet", stderr_path=err_path, env={"DISPLAY": xvfb})
    try:
        rows = wait_for(lambda: csv_rows(csv_path)[:1], 90, "the first classified frame", run)
        face = rows[0]
        assert face["label"], "the still frame has a face"
        x, y, w, h = (int(face[k]) for k in "xywh")
        # Where the video sits in the screenshot: match an area of the frame the overlay leaves alone.
        patch = frame[y + h + 5:y + h + 65, x:x + w]
        shot, best = screenshot_showing(xvfb, tmp_path / "shot.png", patch, run)
        xdotool(xvfb, "key", "--window", window_id(xvfb, "fer-pipe-test"), "q")
        code = wait_for(lambda: run.poll() is not None and [run.returncode], 60, "the run to end after q")[0]
    finally:
        stop(run)
    assert code == 0, err_path.read_text()
    rows = csv_rows(csv_path)
    assert len({r["frame"] for r in rows}) < 299  # q ended the run before the clip did
    assert {tuple(r[k] for k in "xywh") for r in rows} == {tuple(face[k] for k in "xywh")}  # one box on every frame
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
    scale = scale_of(frame)  # the overlay's size follows the frame's
    top = max(0, y - round(20 * scale))  # the tag sits above the box, or at the frame's top edge when there is no room
    label_band = shot[oy + top:oy + top + round(16 * scale), ox + x:ox + x + round(60 * scale)]
    assert share_in_colour(label_band, slice(None), slice(None)) > 0.3  # the filled label tag
    assert (np.abs(label_band.astype(int) - colour).max(axis=2) > 120).any()  # with dark text in it

    # The bar chart: one bar per emotion, in its colour, as long as its probability (left of this
    # face, which leaves no room on the right).
    bar_w, row = round(80 * scale), round(13 * scale)
    left = ox + x - round(6 * scale) - bar_w
    for i, emotion in enumerate(EMOTIONS):
        length = int(bar_w * float(face[f"p_{emotion}"]))
        if length >= 3:
            middle = oy + y + i * row + row // 2
            bar = shot[middle - 1:middle + 2, left:left + length - 1]
            assert (np.abs(bar.astype(int) - COLOURS[emotion]).max(axis=2) < 40).mean() > 0.9, emotion


def xlib() -> ctypes.CDLL:
    """Xlib, for what xdotool does not do; its calls used here declared."""
    lib = ctypes.CDLL(ctypes.util.find_library("X11"))
    lib.XOpenDisplay.restype, lib.XOpenDisplay.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    lib.XInternAtom.restype = ctypes.c_ulong
    lib.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    lib.XCloseDisplay.argtypes = [ctypes.c_void_p]
    return lib


class SizeHints(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_long), *((name, ctypes.c_int) for name in (
        "x", "y", "width", "height", "min_width", "min_height", "max_width", "max_height", "width_inc",
        "height_inc", "min_aspect_x", "min_aspect_y", "max_aspect_x", "max_aspect_y", "base_width", "base_height",
        "win_gravity"))]


def fixed_size(display: str, window: str) -> bool:
    """Whether the window tells the window manager that its size is fixed (the same least and
    greatest size in its WM_NORMAL_HINTS), so that the user cannot resize it."""
    x11 = xlib()
    x11.XGetWMNormalHints.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(SizeHints),
                                      ctypes.POINTER(ctypes.c_long)]
    connection = x11.XOpenDisplay(display.encode())
    assert connection, f"cannot open {display}"
    try:
        hints, supplied = SizeHints(), ctypes.c_long()
        assert x11.XGetWMNormalHints(connection, int(window), ctypes.byref(hints), ctypes.byref(supplied))
    finally:
        x11.XCloseDisplay(connection)
    least, greatest = 1 << 4, 1 << 5  # PMinSize, PMaxSize
    return bool(hints.flags & least and hints.flags & greatest and
                (hints.min_width, hints.min_height) == (hints.max_width, hints.max_height))


def close_as_a_window_manager_does(display: str, window: str) -> None:
    """Send the window WM_DELETE_WINDOW, which a window manager's close button sends. Xvfb runs
    none, and xdotool's windowkill and windowclose cut the program's X connection or destroy
    the window under it instead, so the message is sent through Xlib itself."""
    x11 = xlib()

    class ClientMessage(ctypes.Structure):
        _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong), ("send_event", ctypes.c_int),
                    ("display", ctypes.c_void_p), ("window", ctypes.c_ulong), ("message_type", ctypes.c_ulong),
                    ("format", ctypes.c_int), ("data", ctypes.c_long * 5), ("pad", ctypes.c_long * 12)]

    x11.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long,
                               ctypes.POINTER(ClientMessage)]
    connection = x11.XOpenDisplay(display.encode())
    assert connection, f"cannot open {display}"
    try:
        message = ClientMessage(type=33, window=int(window), format=32,  # 33: ClientMessage
                                message_type=x11.XInternAtom(connection, b"WM_PROTOCOLS", 0))
        message.data[0] = x11.XInternAtom(connection, b"WM_DELETE_WINDOW", 0)
        assert x11.XSendEvent(connection, int(window), 0, 0, ctypes.byref(message))
    finally:
        x11.XCloseDisplay(connection)  # flushes the request


@pytest.mark.parametrize("scale", ["", "2"])  # Qt's QT_SCALE_FACTOR: a window twice the screen (s67e 7)
def test_the_window_can_be_resized_an_arrow_key_goes_on_and_the_close_button_ends_it(clips, xvfb, tmp_path, scale):
    """The window's size was fixed, so a 1080p camera's ran off a laptop's screen, and it opened
    at the frame's size, larger than a screen with no window manager to shrink it (s67c 4);
    Left (X keysym 0xFF51) masked to a byte read as "Q" and ended the run; the close button
    failed it, exit 1, with OpenCV's "NULL guiReceiver" error."""
    needs("xdotool")
    frame = cv2.resize(read_frames(clips["WolfgangLanger_Pexels.mp4"], 2)[-1], (1600, 900))  # past the 1024x768 screen
    video = write_video(tmp_path / "still.avi", [frame] * 300, fps=5)
    csv_path, err_path = tmp_path / "out.csv", tmp_path / "stderr.txt"
    config = window_config(tmp_path / "g.yaml", video, csv_path)
    run = start_fer_pipe("run", str(config), stderr_path=err_path, env={"DISPLAY": xvfb, "QT_SCALE_FACTOR": scale})
    try:
        wait_for(lambda: csv_rows(csv_path)[:1], 90, "the first classified frame", run)
        window = wait_for(lambda: windows_titled(xvfb, "fer-pipe-test"), 30, "the window", run)[0]
        assert not fixed_size(xvfb, window)  # it was: a 1080p camera's window ran off a laptop's screen
        width, height = map(int, re.search(r"Geometry: (\d+)x(\d+)", xdotool(xvfb, "getwindowgeometry", window)).groups())
        assert width <= SCREEN[0] and height <= SCREEN[1] and abs(width / height - 16 / 9) < 0.02, (width, height)
        xdotool(xvfb, "key", "--window", window, "Left")
        frames = len(csv_rows(csv_path))
        wait_for(lambda: len(csv_rows(csv_path)) > frames + 5, 60, "frames after the Left key", run)
        close_as_a_window_manager_does(xvfb, window)
        code = wait_for(lambda: run.poll() is not None and [run.returncode], 60, "the run to end")[0]
    finally:
        stop(run)
    said = err_path.read_text()
    assert code == 0, said
    assert "failed" not in said and "error" not in said
    assert len(csv_rows(csv_path)) < 299  # the close ended it before the clip did


def test_each_source_gets_its_own_window_named_after_it(clips, xvfb, tmp_path):
    """Two cameras into one window sink showed their frames in turn in one window."""
    needs("xdotool")
    frame = read_frames(clips["WolfgangLanger_Pexels.mp4"], 2)[-1]
    video = write_video(tmp_path / "still.avi", [frame] * 300, fps=5)
    config = window_config(tmp_path / "g.yaml", video, tmp_path / "out.csv")
    graph = yaml.safe_load(config.read_text())
    graph["stages"]["door"] = dict(graph["stages"]["source"])
    graph["stages"]["detector"]["inputs"] = ["source", "door"]
    config.write_text(yaml.safe_dump(graph))
    err_path = tmp_path / "stderr.txt"
    run = start_fer_pipe("run", str(config), "--quiet", stderr_path=err_path, env={"DISPLAY": xvfb})
    try:
        titled = wait_for(lambda: len(windows_titled(xvfb, "^fer-pipe-test - ")) == 2 and {
            subprocess.run([needs("xdotool"), "getwindowname", w], capture_output=True, text=True,
                           env={**os.environ, "DISPLAY": xvfb}).stdout.strip()
            for w in windows_titled(xvfb, "^fer-pipe-test - ")}, 90, "two windows", run)
        xdotool(xvfb, "key", "--window", windows_titled(xvfb, "^fer-pipe-test - ")[0], "q")
        code = wait_for(lambda: run.poll() is not None and [run.returncode], 60, "the run to end after q")[0]
    finally:
        stop(run)
    assert titled == {"fer-pipe-test - source", "fer-pipe-test - door"}
    assert code == 0, err_path.read_text()


def in_grey_with_a_white_line(shot: np.ndarray) -> bool:
    """The stale look: every pixel grey (the frame dimmed to half), bar a white line of text."""
    return int(np.ptp(shot.astype(np.int16), axis=2).max()) <= 2 and int(shot.max()) >= 250


def test_q_ends_the_run_while_the_camera_is_down(clips, xvfb, tmp_path):
    """The window used to read its keys only when a frame came: while a camera was down, q and
    the close button did nothing (and the window did not repaint) until the camera came back.
    And it kept showing the last face's label and frame rate as if live: the last image is
    greyed now, with how long no frame has come (s48b 2)."""
    needs("xdotool")
    clip = write_video(tmp_path / "loop.avi", read_frames(clips["single_face.mp4"], 50))
    csv_path, err_path = tmp_path / "out.csv", tmp_path / "stderr.txt"
    with open(tmp_path / "server.log", "w") as log:
        client_port = free_port()
        server = RtspServer(clip, client_port, free_port(), 20000 + client_port % 20000, log)
        stages = {
            "source": {"type": "rtsp", "params": {"url": server.url, "transport": "udp", "timeout_s": 1,
                                                  "backoff_initial_s": 0.2, "backoff_max_s": 0.5,
                                                  "give_up_after_s": 600}},
            "detector": {"type": "haar", "inputs": ["source"]},
            "classifier": {"type": "classifier", "inputs": ["detector"]},
            "window": {"type": "window", "inputs": ["classifier"], "params": {"title": "fer-pipe-test"}},
            "csv": {"type": "csv", "inputs": ["classifier"], "params": {"path": str(csv_path)}},
        }
        (tmp_path / "g.yaml").write_text(yaml.safe_dump({"stages": stages}))
        server.start()
        run = start_fer_pipe("run", str(tmp_path / "g.yaml"), "--quiet", stderr_path=err_path,
                             env={"DISPLAY": xvfb})
        try:
            wait_for(lambda: len(csv_rows(csv_path)) >= 10, 90, "frames from the stream", run)
            shot = tmp_path / "shot.png"
            screenshot_until(xvfb, shot, lambda image: int(np.ptp(image.astype(np.int16), axis=2).max()) > 30,
                             "the window to show the stream in colour", run)
            server.kill()
            wait_for(lambda: "attempt 2" in err_path.read_text(), 60, "the camera to be down", run)
            wait_for(lambda: in_grey_with_a_white_line(screenshot(xvfb, shot)), 30, "the stale frame greyed", run)
            xdotool(xvfb, "key", "--window", window_id(xvfb, "fer-pipe-test"), "q")
            code = wait_for(lambda: run.poll() is not None and [run.returncode], 30,
                            "the run to end after q, with the camera still down")[0]
        finally:
            stop(run)
            server.kill()
    assert code == 0, err_path.read_text()
    assert "Traceback" not in err_path.read_text()


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


def test_wayland_alone_is_no_display_for_the_wheels_qt(short_clip, tmp_path):
    """The wheel's Qt has the xcb platform alone: with WAYLAND_DISPLAY and no DISPLAY, Qt printed
    six lines ("Reinstalling the application may fix this problem") and aborted the window's
    process after the other stages had started."""
    env = {**{k: v for k, v in os.environ.items() if k != "DISPLAY"}, "WAYLAND_DISPLAY": "wayland-0"}
    csv_path = tmp_path / "out.csv"
    config = window_config(tmp_path / "g.yaml", short_clip, csv_path, realtime=False)
    done = subprocess.run([sys.executable, "-m", "fer_pipe.cli", "run", str(config)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert (done.returncode, done.stderr) == (2, "fer-pipe: stage 'window' (window): this OpenCV's window toolkit "
                                                 "(QT5) needs an X display, and DISPLAY is unset (WAYLAND_DISPLAY "
                                                 "alone is not enough; Xwayland sets DISPLAY); use the video_writer "
                                                 "sink to write the overlay to a file instead\n")
    assert not csv_path.exists()


def test_a_display_whose_server_refuses_this_user_fails_before_starting_in_one_line(short_clip, tmp_path, xvfb):
    """A server that answers but refuses the client (sudo, whose root has DISPLAY but no X
    authority), a screen the server lacks and a DISPLAY that names none: the run started every
    stage, and Qt aborted the window's process at its first frame with seven lines telling the
    user to reinstall, exit 1 (s44c)."""
    import ctypes.util
    import struct

    if ctypes.util.find_library("xcb") is None:
        pytest.skip("libxcb, with which the window's preflight asks the X server, is not installed")
    auth = tmp_path / "cookie"  # an Xauthority record for any display, as xauth writes one
    auth.write_bytes(struct.pack(">HHHH", 0xFFFF, 0, 0, 18) + b"MIT-MAGIC-COOKIE-1" + struct.pack(">H", 16)
                     + os.urandom(16))
    read_fd, write_fd = os.pipe()
    guarded = subprocess.Popen([needs("Xvfb"), "-displayfd", str(write_fd), "-auth", str(auth), "-screen", "0",
                                "320x240x24", "-nolisten", "tcp"], pass_fds=(write_fd,), stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        refusing = f":{f.readline().strip()}"
    csv_path = tmp_path / "out.csv"
    config = window_config(tmp_path / "g.yaml", short_clip, csv_path, realtime=False)
    try:
        for display, said in ((refusing, "the X server refused this user: no X authority for it (run as the user "
                                         "who owns the display, or set XAUTHORITY to that user's file)"),
                              (f"{xvfb}.3", "the X server has no such screen"),
                              ("garbage", "not a display name (HOST:NUMBER[.SCREEN])")):
            env = {**{k: v for k, v in os.environ.items() if k != "WAYLAND_DISPLAY"}, "DISPLAY": display,
                   "XAUTHORITY": str(tmp_path / "none")}
            done = subprocess.run([sys.executable, "-m", "fer_pipe.cli", "run", str(config)], capture_output=True,
                                  text=True, env=env, timeout=120)
            assert (done.returncode, done.stderr) == (
                2, f"fer-pipe: stage 'window' (window): cannot use the X display DISPLAY={display} ({said}): a window "
                   "cannot open; use the video_writer sink to write the overlay to a file instead\n")
            assert not csv_path.exists()
    finally:
        stop(guarded)
    frozen, display = start_xvfb()  # accepts and never answers: the check held the run, deaf to Ctrl-C (s44e)
    frozen.send_signal(signal.SIGSTOP)
    try:
        asked = subprocess.run([sys.executable, "-c", "import sys; from fer_pipe.stages.window import x_server_refusal, "
                                "x_screen_size; print(repr(x_server_refusal(sys.argv[1])), x_screen_size(sys.argv[1]))",
                                display], capture_output=True, text=True, timeout=60)
        assert asked.stdout == "'' None\n", asked.stderr  # left to the window's stall watch, as before the check
    finally:
        frozen.send_signal(signal.SIGCONT)
        stop(frozen)


def test_a_display_whose_server_is_gone_fails_before_starting_in_one_line(short_clip, tmp_path):
    """A DISPLAY left by a stopped Xvfb or a closed ssh session used to start the window's
    process, where Qt printed five lines and aborted it (SIGABRT, exit 1)."""
    server, gone = start_xvfb()
    stop(server)
    with socket.socket() as probe:  # a TCP display (ssh's localhost:10.0 form) with nothing on its port
        probe.bind(("127.0.0.1", 0))
        tcp = f"127.0.0.1:{probe.getsockname()[1] - 6000}"
    csv_path = tmp_path / "out.csv"
    config = window_config(tmp_path / "g.yaml", short_clip, csv_path, realtime=False)
    for display in (gone, tcp):
        env = {**{k: v for k, v in os.environ.items() if k != "WAYLAND_DISPLAY"}, "DISPLAY": display}
        done = subprocess.run([sys.executable, "-m", "fer_pipe.cli", "run", str(config)], capture_output=True,
                              text=True, env=env, timeout=120)
        assert done.returncode == 2, done.stderr
        assert re.fullmatch(rf"fer-pipe: stage 'window' \(window\): cannot use the X display DISPLAY={display} "
                            r"\([^)]+\): a window cannot open; use the video_writer sink to write the overlay to a "
                            r"file instead\n", done.stderr), done.stderr
        assert not csv_path.exists()


def test_a_system_without_the_libraries_qt_needs_fails_before_starting_in_one_line(short_clip, tmp_path, xvfb):
    """opencv-python brings Qt but not libSM and libICE, which a slim container lacks: the run
    passed the display checks and Qt aborted the window's process at its first frame, telling
    the user to reinstall (s67c 1). The two are hidden here by an overlay's whiteouts, which
    takes root."""
    libraries = Path("/usr/lib/x86_64-linux-gnu")
    hidden = [p.name for pattern in ("libSM.so.6*", "libICE.so.6*") for p in libraries.glob(pattern)]
    if not hidden:
        pytest.skip(f"libSM and libICE are not in {libraries} here")
    upper, work = tmp_path / "upper", tmp_path / "work"
    upper.mkdir()
    work.mkdir()
    csv_path = tmp_path / "out.csv"
    config = window_config(tmp_path / "g.yaml", short_clip, csv_path, realtime=False)
    whiteouts = " && ".join(f"mknod {shlex.quote(str(upper / name))} c 0 0" for name in hidden)
    cli = shlex.join([sys.executable, "-m", "fer_pipe.cli", "run", str(config)])
    script = (f"{whiteouts} && mount -t overlay overlay -o lowerdir={libraries},upperdir={upper},workdir={work} "
              f"{libraries} || exit 99; {cli}")
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DISPLAY": xvfb})
    if done.returncode == 99:
        pytest.skip(f"an overlay mount needs unshare -m, mknod and mount rights (root): {done.stderr.strip()}")
    assert (done.returncode, done.stderr) == (
        2, "fer-pipe: stage 'window' (window): this OpenCV's window toolkit (QT5) needs libSM.so.6, libICE.so.6, which "
           "this system lacks: install them (libSM and libICE are Debian's and Ubuntu's libsm6 and libice6), or use "
           "the video_writer sink to write the overlay to a file instead\n")
    assert not csv_path.exists()
