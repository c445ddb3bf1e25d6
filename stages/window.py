"""``window``: the overlay shown live on screen; ``q`` or Esc ends the run cleanly."""
from __future__ import annotations

import os

import cv2
from pydantic import Field

from fer_pipe.errors import InputError
from fer_pipe.messages import EXPRESSIONS, Packet
from fer_pipe.stage import Sink, StopRun
from fer_pipe.stages.overlay import FpsMeter, OverlayParams, draw

QUIT_KEYS = {ord("q"), ord("Q"), 27}


class WindowParams(OverlayParams):
    title: str = Field("fer-pipe", min_length=1, description="window title")


def gui_backend() -> str:
    """The GUI toolkit this OpenCV was built with, or "" for a headless build."""
    for line in cv2.getBuildInformation().splitlines():
        key, _, value = line.strip().partition(":")
        if key == "GUI":
            value = value.strip()
            return "" if value.upper() in ("", "NONE", "NO") else value
    return ""


class WindowSink(Sink):
    """Shows the frames with the overlay in a live window; q or Esc ends the run cleanly.

    The display is checked in the parent when the run starts, so a server without one fails
    before any stage process starts.
    """

    Params = WindowParams
    params: WindowParams
    reads = EXPRESSIONS

    @classmethod
    def preflight(cls, params: WindowParams) -> None:
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise InputError("no display (DISPLAY and WAYLAND_DISPLAY are unset): a window cannot open "
                             "here; use the video_writer sink to write the overlay to a file instead")
        if not gui_backend():
            raise InputError("this OpenCV is built without GUI support (opencv-python-headless?): a "
                             "window cannot open; use the video_writer sink to write the overlay to a file")

    def open(self) -> None:
        self._fps = FpsMeter()
        self._open = False

    def consume(self, packet: Packet) -> None:
        fps = self._fps.tick()
        if not self._open:
            cv2.namedWindow(self.params.title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)  # no toolbar
        cv2.imshow(self.params.title, draw(packet, self.params.show_probs,
                                           fps if self.params.show_fps else None))
        self._open = True
        key = cv2.waitKey(1) & 0xFF
        if key in QUIT_KEYS or cv2.getWindowProperty(self.params.title, cv2.WND_PROP_VISIBLE) < 1:
            raise StopRun(f"{self.params.title}: closed by the user")

    def close(self) -> None:
        if self._open:
            cv2.destroyWindow(self.params.title)
            cv2.waitKey(1)
