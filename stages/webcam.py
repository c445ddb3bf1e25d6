"""``webcam``: a local camera by index (``0``) or device path (``/dev/video0``), as a live source."""
from __future__ import annotations

import sys
import time
from collections.abc import Collection, Iterator
from pathlib import Path

import cv2
from pydantic import Field, field_validator

from fer_pipe.errors import InputError
from fer_pipe.messages import Packet, wall_time
from fer_pipe.opencv_names import opencv_name
from fer_pipe.redaction import redact
from fer_pipe.stage import Source, SourceParams


class WebcamParams(SourceParams):
    device: int | str = Field(0, description="camera index (0, 1, ...) or device path (/dev/video0)")
    width: int = Field(0, ge=0, le=8192, description="requested frame width (0: the camera's default)")
    height: int = Field(0, ge=0, le=8192, description="requested frame height (0: the camera's default)")
    fps: float = Field(0.0, ge=0, le=240, description="requested frames per second (0: the camera's default)")
    max_failures: int = Field(30, ge=1, description="give up after this many failed reads in a row")

    @field_validator("device")
    @classmethod
    def _index_from_zero(cls, device: int | str) -> int | str:
        """-1, which some OpenCV back-ends take for "any camera", names no device file here: said
        before the run, not when it opens the camera."""
        if isinstance(device, int) and device < 0:
            raise ValueError("a camera index is 0 or more (or give a device path such as /dev/video0)")
        return device


def cameras_in(folder: Path) -> str:
    """What a missing camera's line adds: the video devices there are (a USB camera is often
    /dev/video2, a laptop's own taking 0 and 1), or, where there are none, the way to try
    fer-pipe without one, which a first run of the webcam config on a server needs (s62a 10)."""
    found = sorted(folder.glob("video[0-9]*"), key=lambda path: int(path.name[5:]) if path.name[5:].isdigit() else -1)
    if found:
        return "cameras here: " + ", ".join(map(str, found))
    return "this machine has none; `fer-pipe demo` runs the pipeline on sample videos"


def device_path(device: int | str) -> Path | None:
    """The device file a camera should have (Linux names index N /dev/videoN); None elsewhere."""
    if isinstance(device, str) and not device.isdigit():
        return Path(device)
    return Path(f"/dev/video{int(device)}") if sys.platform.startswith("linux") else None


class WebcamSource(Source):
    """Reads a local camera as a live source: when the pipeline falls behind, the oldest frames
    are dropped (and counted)."""

    Params = WebcamParams
    params: WebcamParams

    @classmethod
    def preflight(cls, params: WebcamParams) -> None:
        if isinstance(params.device, str) and "://" in params.device:
            raise InputError(f"webcam {redact(params.device)}: a stream's URL, not a camera (the rtsp source reads "
                             "streams)")
        path = device_path(params.device)
        if path is not None and not path.exists():
            raise InputError(f"webcam {params.device}: no camera ({path} does not exist; "
                             f"{cameras_in(Path('/dev'))})")
        if isinstance(params.device, str):  # a Latin-1 name crashed its process in OpenCV
            opencv_name(params.device, "webcam")

    @classmethod
    def graph_warnings(cls, params: WebcamParams, after: Collection[str]) -> list[str]:
        """A recording given as the device opens as a camera would, and plays as fast as it
        decodes: most of its frames were dropped without a word, exit 0. It stays allowed,
        a stand-in camera for trying a live graph (and this source's tests)."""
        path = device_path(params.device)
        if path is not None and path.is_file():
            return [f"reads a file, not a camera (device {params.device}): as a live camera, as fast as it "
                    "decodes, so every frame the stages cannot keep up with is dropped; the video source reads "
                    "every frame of a file"]
        return []

    @property
    def live(self) -> bool:
        return True

    def open(self) -> None:
        device = self.params.device
        self._cap = cv2.VideoCapture(int(device) if isinstance(device, int) or device.isdigit()
                                     else opencv_name(device, "webcam"))  # a Latin-1 path crashed the process
        if not self._cap.isOpened():
            raise InputError(f"webcam {device}: cannot open the camera (in use, or not a camera)")
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, self.params.width),
                            (cv2.CAP_PROP_FRAME_HEIGHT, self.params.height), (cv2.CAP_PROP_FPS, self.params.fps)):
            if value:
                self._cap.set(prop, value)

    def frames(self) -> Iterator[Packet]:
        source = self.source_id
        rate = self._cap.get(cv2.CAP_PROP_FPS)
        index = failures = 0
        while True:
            ok, image = self._cap.read()
            now = time.monotonic()
            if not ok:
                failures += 1
                if self.stop_requested():
                    return  # a stop while the camera is silent (each read can wait 10 s in V4L2)
                if failures >= self.params.max_failures:
                    if index and Path(str(self.params.device)).is_file():
                        return  # a recording given as the device has ended
                    raise InputError(f"webcam {self.params.device}: no frame after {failures} reads "
                                     f"({index} frames before; unplugged or in use?)")
                time.sleep(0.01)
                continue
            failures = 0
            yield Packet(source, index, wall_time(now), image, captured=now, extra={"fps": rate})
            index += 1

    def close(self) -> None:
        self._cap.release()
