"""``window``: the overlay shown live on screen; ``q`` or Esc ends the run cleanly."""
from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import re
import socket
import subprocess
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
from pydantic import Field

from fer_pipe.errors import InputError
from fer_pipe.messages import FACES, Packet
from fer_pipe.native_stderr import stderr_dropped
from fer_pipe.stage import Sink, StopRun
from fer_pipe.stages.overlay import FpsMeter, OverlayParams, draw, stale

T = TypeVar("T")

QUIT_KEYS = {ord("q"), ord("Q"), 27}
"""Whole key codes (``cv2.waitKeyEx``): Qt gives other keys their X keysym, and masking that to
a byte made Left (0xFF51) read as "Q"."""


class WindowParams(OverlayParams):
    title: str = Field("fer-pipe", min_length=1,
                       description="window title (with several sources, one window each: 'TITLE - SOURCE')")


def gui_backend() -> str:
    """The GUI toolkit this OpenCV was built with, or "" for a headless build."""
    for line in cv2.getBuildInformation().splitlines():
        key, _, value = line.strip().partition(":")
        if key == "GUI":
            value = value.strip()
            return "" if value.upper() in ("", "NONE", "NO") else value
    return ""


def x_display_problem(display: str) -> str:
    """Why the X server of ``display`` cannot be reached, or "" if it can (or cannot be told).

    Only a connect to its socket, as libxcb makes: a ``DISPLAY`` left over from an ssh session
    or a stopped Xvfb otherwise lets the window's process start and Qt abort it (SIGABRT after
    five lines of its own), where this gives one line before anything runs.
    """
    host, _, rest = display.rpartition(":")
    number = rest.partition(".")[0]
    if not number.isdigit() or host.startswith("/"):
        return ""  # a form this check does not know (XQuartz's socket paths): let the toolkit try
    if host in ("", "unix"):
        family, addresses = socket.AF_UNIX, [f"\0/tmp/.X11-unix/X{number}", f"/tmp/.X11-unix/X{number}"]
    else:
        family, addresses = socket.AF_INET6 if ":" in host else socket.AF_INET, [(host, 6000 + int(number))]
    reason = ""
    for address in addresses:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            try:
                sock.connect(address)
                return ""
            except OSError as exc:
                reason = exc.strerror or str(exc)
    return reason


X_ANSWER_S = 2.0
"""How long the X server may take to answer the preflight's connection."""
XCB_REFUSALS = {
    1: "the X server refused this user: no X authority for it (run as the user who owns the display, or set "
       "XAUTHORITY to that user's file)",
    5: "not a display name (HOST:NUMBER[.SCREEN])",
    6: "the X server has no such screen",
}
"""``xcb_connection_has_error``'s codes for a server that answered, and what they mean here."""


class _ScreenIterator(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("rem", ctypes.c_int), ("index", ctypes.c_int)]


def _libxcb() -> ctypes.CDLL | None:
    """libxcb, its functions' types given, or None where it is not there."""
    name = ctypes.util.find_library("xcb")
    if name is None:
        return None
    try:
        xcb = ctypes.CDLL(name)
    except OSError:
        return None
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_get_setup.restype = ctypes.c_void_p
    xcb.xcb_get_setup.argtypes = [ctypes.c_void_p]
    xcb.xcb_setup_roots_iterator.restype = _ScreenIterator
    xcb.xcb_setup_roots_iterator.argtypes = [ctypes.c_void_p]
    xcb.xcb_screen_next.argtypes = [ctypes.POINTER(_ScreenIterator)]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    return xcb


def _answered(question: Callable[[], T], default: T) -> T:
    """``question``'s answer, asked of the X server in a thread of its own, or ``default`` where
    it has not come in X_ANSWER_S: a frozen server accepts and never answers, and the wait held
    the run before it started, deaf to Ctrl-C; such a server is left to the window's stall
    watch, as before."""
    answers: list[T] = []
    asking = threading.Thread(target=lambda: answers.append(question()), daemon=True)
    with stderr_dropped():  # the server's reason, which the caller says in words of its own
        asking.start()
        asking.join(X_ANSWER_S)
    return answers[0] if answers else default


def x_server_refusal(display: str) -> str:
    """Why the X server of ``display``, reached, would not take this process's connection, or ""
    if it would (or libxcb is not there to tell). libxcb connects as Qt will, with the user's X
    authority and the screen asked for: ``sudo`` (no cookie), a screen the server lacks and a
    ``DISPLAY`` that names none made the window's process abort in Qt at its first frame, exit 1,
    with a line telling the user to reinstall."""
    xcb = _libxcb()
    if xcb is None:
        return ""

    def connect() -> int:
        for _ in range(2):  # a server resetting as its last client left cuts a connection in its set-up: error 1 too
            connection = xcb.xcb_connect(display.encode(), ctypes.byref(ctypes.c_int()))
            try:
                code = xcb.xcb_connection_has_error(connection)
            finally:
                xcb.xcb_disconnect(connection)
            if code != 1:
                break
        return code

    code = _answered(connect, 0)
    return XCB_REFUSALS.get(code, f"libxcb's error {code}") if code else ""


def x_screen_size(display: str) -> tuple[int, int] | None:
    """The width and height of ``display``'s screen in pixels, or None where libxcb cannot say."""
    xcb = _libxcb()
    if xcb is None:
        return None

    def size() -> tuple[int, int] | None:
        number = ctypes.c_int()
        connection = xcb.xcb_connect(display.encode(), ctypes.byref(number))
        try:
            if xcb.xcb_connection_has_error(connection):
                return None
            screens = xcb.xcb_setup_roots_iterator(xcb.xcb_get_setup(connection))
            for _ in range(number.value):
                xcb.xcb_screen_next(ctypes.byref(screens))
            if not screens.data:
                return None
            width, height = (ctypes.c_uint16.from_address(screens.data + offset).value for offset in (20, 22))
            return width, height  # xcb_screen_t's width_in_pixels, height_in_pixels
        finally:
            xcb.xcb_disconnect(connection)

    return _answered(size, None)


def _qt_scale() -> float:
    """Qt's ``QT_SCALE_FACTOR``: the screen's pixels per pixel of a window's size (s67e 7)."""
    try:
        scale = float(os.environ.get("QT_SCALE_FACTOR") or 1)
    except ValueError:
        return 1.0
    return scale if math.isfinite(scale) and scale > 0 else 1.0


def qt_missing_libraries() -> list[str]:
    """The system libraries the wheel's Qt platform plugin needs and this system lacks, as ldd
    names them; none where it has them, or where there is no plugin or no ldd to ask. The wheel
    brings Qt, not libSM and libICE: a slim image with libGL and GLib alone passed the display
    checks, and Qt aborted the window's process at its first frame, telling the user to
    reinstall (s67c 1)."""
    plugin = Path(cv2.__file__).parent / "qt" / "plugins" / "platforms" / "libqxcb.so"
    if not plugin.is_file():
        return []
    try:
        listed = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    broken = re.search(r"error while loading shared libraries: (.+?): (.+)", listed.stdout)  # one there but cut short
    missing = re.findall(r"^\s*(\S+) => not found$", listed.stdout, re.M)  # each as often as the plugin's needs name it
    return [*dict.fromkeys(missing)] + ([f"{broken[1]} ({broken[2].strip()})"] if broken else [])


class WindowSink(Sink):
    """Shows the frames with the overlay in a live window; q or Esc ends the run cleanly.

    The display is checked in the parent when the run starts, so a server without one fails
    before any stage process starts.
    """

    Params = WindowParams
    params: WindowParams
    reads = FACES
    idle_s = 0.05  # while a camera is down, the window still repaints and reads q

    @classmethod
    def preflight(cls, params: WindowParams) -> None:
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise InputError("no display (DISPLAY and WAYLAND_DISPLAY are unset): a window cannot open "
                             "here; use the video_writer sink to write the overlay to a file instead")
        backend = gui_backend()
        if not backend:
            raise InputError("this OpenCV is built without GUI support (opencv-python-headless?): a "
                             "window cannot open; use the video_writer sink to write the overlay to a file")
        display = os.environ.get("DISPLAY")
        x_only = backend.upper().startswith("QT")  # the opencv-python wheel's Qt has the xcb platform alone
        if x_only and not display:
            raise InputError(f"this OpenCV's window toolkit ({backend}) needs an X display, and DISPLAY is "
                             "unset (WAYLAND_DISPLAY alone is not enough; Xwayland sets DISPLAY); use the "
                             "video_writer sink to write the overlay to a file instead")
        if display and (x_only or not os.environ.get("WAYLAND_DISPLAY")):
            problem = x_display_problem(display) or x_server_refusal(display)
            if problem:
                raise InputError(f"cannot use the X display DISPLAY={display} ({problem}): a window "
                                 "cannot open; use the video_writer sink to write the overlay to a file instead")
        missing = qt_missing_libraries() if x_only else []
        if missing:
            raise InputError(f"this OpenCV's window toolkit ({backend}) needs {', '.join(missing)}, which this system "
                             "lacks: install them (libSM and libICE are Debian's and Ubuntu's libsm6 and libice6), or "
                             "use the video_writer sink to write the overlay to a file instead")

    def open(self) -> None:
        display = os.environ.get("DISPLAY")
        screen = x_screen_size(display) if display else None
        scale = _qt_scale()  # Qt sizes windows in pixels of its own: QT_SCALE_FACTOR=2 made one twice the screen
        self._screen = None if screen is None else (screen[0] / scale, screen[1] / scale)
        self._fps: dict[str, FpsMeter] = {}
        self._windows: dict[str, str] = {}  # source -> the window's name
        self._last: dict[str, tuple[np.ndarray, float]] = {}  # source -> the image shown, and its frame's time

    def consume(self, packet: Packet) -> None:
        """Shows the frame in its source's window: frames of several cameras in one window
        flickered between them."""
        if packet.source not in self._fps:
            self._fps[packet.source] = FpsMeter()
        image = draw(packet, self.params.show_probs, self._fps[packet.source].tick() if self.params.show_fps else None)
        cv2.imshow(self._windows.get(packet.source) or self._open_window(packet.source, image.shape), image)
        self._last[packet.source] = image, packet.timestamp
        self._handle_events()

    def outage(self, packet: Packet) -> Iterable[Packet]:
        """Greys the down source's last image and says for how long no frame has come (about
        once a second, as the notices come)."""
        last = self._last.get(packet.source)
        if last is not None and not packet.ended:
            image, then = last
            cv2.imshow(self._windows[packet.source], stale(image, f"no frames for {packet.timestamp - then:.0f} s"))
            self._fps[packet.source] = FpsMeter()  # the gap is no frame rate
        self.idle()
        return ()

    def _open_window(self, source: str, shape: tuple[int, ...]) -> str:
        """A window for a source: the title alone while there is one source; from the second on,
        every window's title names its source. It opens at the frame's size and can be resized,
        its shape kept: one fixed at the frame's size ran off a laptop's screen for a 1080p
        camera, with faces and labels out of sight. A frame larger than the screen opens shrunk
        to fit it: a 4K camera's window showed its top left corner alone where no window
        manager shrinks it (a kiosk's bare X server; s67c 4)."""
        title = self.params.title
        name = title if not self._windows else f"{title} - {source}"
        if len(self._windows) == 1:
            (first, only), = self._windows.items()
            cv2.setWindowTitle(only, f"{title} - {first}")
        cv2.namedWindow(name, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)  # no toolbar
        fit = min(1.0, *(0.95 * side / size for side, size in zip(self._screen, shape[1::-1]))) if self._screen else 1.0
        cv2.resizeWindow(name, round(shape[1] * fit), round(shape[0] * fit))
        self._windows[source] = name
        return name

    def idle(self) -> None:
        if self._windows:
            self._handle_events()

    def _handle_events(self) -> None:
        """Lets the toolkit repaint and deliver input; ends the run on q, Esc or a close button."""
        key = cv2.waitKeyEx(1)
        if key in QUIT_KEYS or not all(map(_shown, self._windows.values())):
            raise StopRun(f"{self.params.title}: closed by the user")

    def close(self) -> None:
        for window in self._windows.values():
            if _shown(window):
                cv2.destroyWindow(window)
        if self._windows:
            cv2.waitKey(1)


def _shown(window: str) -> bool:
    """Whether the window is still on screen. A window manager's close button makes Qt destroy
    the window and what OpenCV asks the property of, so the question raises then."""
    try:
        return cv2.getWindowProperty(window, cv2.WND_PROP_VISIBLE) >= 1
    except cv2.error:
        return False
