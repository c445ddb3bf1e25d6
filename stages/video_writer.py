"""``video_writer``: the window's overlay written to a video file, for servers and the demo."""
from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
from pydantic import Field, field_validator

from fer_pipe.config import NAME_MAX
from fer_pipe.errors import InputError
from fer_pipe.messages import FACES, Packet
from fer_pipe.native_stderr import StderrCapture
from fer_pipe.opencv_names import opencv_name
from fer_pipe.output_files import check_writable, open_claimed
from fer_pipe.stage import Sink
from fer_pipe.stages.overlay import FpsMeter, OverlayParams, draw

WRITE_FAILED = b"Failed to write frame"
"""OpenCV's FFmpeg writer's warning for a frame it could not write (a full disk, a vanished
mount), its only report of one: seen, the run fails at that frame instead of warning on every
frame after it. Should a later OpenCV word it otherwise, the read-back at close still fails the
run, only later."""
FPS_SAMPLE = 8
"""Gaps between frames read at the start, when ``fps`` is not given, for the source's frame rate
(their median, so a late live frame does not skew it): the first ``FPS_SAMPLE + 1`` frames are
held back."""
FALLBACK_FPS = 25.0
"""The rate written when the frames carry no timing: a single frame, or equal timestamps."""
MAX_FPS = 240.0
"""The fastest rate written; a stream that reports more (90000, its clock rate) reports no rate."""
MIN_FPS = 0.01
"""The slowest rate written (a frame per 100 s): OpenCV's writers refuse 0.001 and below, and a
time-lapse source slower than this is written at it, so it plays faster than it was taken."""
RATE_AGREES = 0.02
"""A file's frame rate measured from its timestamps within this fraction of its container's is
the container's: Matroska and WebM keep whole milliseconds, so a 30 fps WebM measured 30.303
and was written so, a copy of a frame every 99. Not where the gaps are all alike (``ALIKE_S``):
the rate measured is exact then, and a container's average may not be (an MP4 trimmed without
re-encoding, with packets before its edit list's start, says 23.67 for its 24 fps, and its
video drifted 54 ms from the CSV's times in 4 s)."""
ALIKE_S = 1e-5
"""Gaps between frames that differ by less than this are alike (a millisecond clock's differ
by a millisecond)."""
MAX_FILL_S = 5.0
"""The longest gap between two frames that copies of the earlier fill: a camera down for hours
is cut, not written as hours of one frozen frame."""
CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
"""Codecs the OpenCV wheels can write on every platform, and stock players read (MPEG-4 part 2, MJPEG)."""
MIN_SEGMENT_S = 1.0
"""The shortest segment: a file per frame or two would be a folder of files no player joins."""


class VideoWriterParams(OverlayParams):
    path: str = Field(description="video file to write: .mp4 (MPEG-4) or .avi (MJPEG)")
    fps: float | None = Field(None, ge=MIN_FPS, le=MAX_FPS, description="frame rate written into the file "
                              "(default: the source's: a camera's own, or its frames' timestamps')")
    show_fps: bool = Field(False, description="draw the pipeline's frames per second in a corner")
    segment_s: float = Field(0.0, ge=0.0, le=86_400.0, description="start a new file after this many seconds "
                             "of video (0: one file); files are named like PATH with -000001, -000002, ... before "
                             "its suffix, numbered on from the highest already there, so a restart adds files")

    @field_validator("path")
    @classmethod
    def _known_container(cls, path: str) -> str:
        if Path(path).suffix.lower() not in CODECS:
            raise ValueError(f"the name must end in {' or '.join(CODECS)}")
        return path

    @field_validator("segment_s")
    @classmethod
    def _a_real_segment(cls, seconds: float) -> float:
        if 0 < seconds < MIN_SEGMENT_S:
            raise ValueError(f"0 (one file) or at least {MIN_SEGMENT_S:g} s")
        return seconds


class VideoWriterSink(Sink):
    """Writes the frames with the window's overlay (boxes, labels, probabilities) to a video file.

    The file is opened at the first frame, whose size it takes. A frame of another size (a camera
    that came back at another resolution, an image folder of mixed sizes) is scaled to fit it,
    its shape kept, with black bars, and said once: it failed the whole run, which a 24/7
    recording lost to a camera's settings.
    Without ``fps`` the first ``FPS_SAMPLE + 1`` frames are held until their timestamps give the
    source's rate: a fixed default made a 30 fps clip play at 25, 20% slow. A file has one rate,
    so then a frame that comes a frame period or more after the one before (frames a live source
    dropped, a variable-rate file's slower stretch) is preceded by copies of that one, up to
    ``MAX_FILL_S``: written one after another, such frames played 4x fast, and the video could
    not be lined up with the CSV. A frame whose place is taken already (frames faster than the
    file's rate) is left out, for the same reason.
    With ``segment_s`` the video is a numbered series of files, each checked as it is closed:
    one file per run held its whole index in memory (74 bytes a frame), became playable only at
    its end, and was written over by a restart.
    """

    Params = VideoWriterParams
    params: VideoWriterParams
    reads = FACES
    output_paths = ("path",)
    one_source = True

    @classmethod
    def preflight(cls, params: VideoWriterParams) -> None:
        opencv_name(params.path, "video_writer")  # the name OpenCV is handed: refused here, not after the run
        path = Path(params.path)
        check_writable(path, "video_writer")  # by Python's own name for it, as the other files are
        if params.segment_s and max(len(os.fsencode(p.name)) for p in (_numbered(path, 1), _lock_of(path))) > NAME_MAX:
            raise InputError(f"video_writer {path}: its name is too long for a series of files, whose names add "
                             f"up to 7 bytes ({_numbered(path, 1).name[-15:]}) to it, past the {NAME_MAX} a name "
                             "may have")  # it passed, and the run failed at its first file

    def open(self) -> None:
        self.preflight(self.params)
        path = Path(self.params.path)
        segmented = bool(self.params.segment_s)
        self._created = not segmented and not os.path.lexists(path)  # a link to a file yet to be made is the user's
        # a series of files is held by a lock file of its own, so a second run with the path
        # stops at its start, as with one file, not when its numbers meet the first run's
        self._lock = -1
        try:
            self._lock = open_claimed(_lock_of(path) if segmented else path, "video_writer",
                                      truncate=False)
            self._opened(path, segmented)
        except BaseException as exc:  # a stop once the file is made: close never comes, and the empty file stayed
            if self._lock >= 0:
                os.close(self._lock)
            if self._created and not isinstance(exc, InputError):  # held by another run: its file, not ours
                path.unlink(missing_ok=True)
            raise

    def _opened(self, path: Path, segmented: bool) -> None:
        """The writer's state once its file is claimed."""
        self._number = _last_number(path) if segmented else 0
        self._file = path
        self._in_file = 0
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] = (0, 0)
        self._fps = FpsMeter()
        self._stderr = StderrCapture()
        self._failed = False
        self._held: list[tuple[Packet, np.ndarray]] = []
        self._rate = 0.0
        self._nominal = 0.0  # a live source's own frame rate, when it says one
        self._container = 0.0  # a file's container's frame rate, when its source says one
        self._from_file = False  # its source says a container's rate: its frames are never left out
        self._last: tuple[Packet, np.ndarray] | None = None
        self._scaled = False  # a frame of another size was said
        self._origin: float | None = None  # the timestamp of the file's first slot, on the frames' clock
        self._ahead = False  # frames faster than the file's rate were said
        self.written = 0

    def _start(self) -> None:
        """Open the next file at the size and rate the first frames set."""
        path = Path(self.params.path)
        if self.params.segment_s:
            self._number += 1
            path = _numbered(path, self._number)
        fourcc = cv2.VideoWriter_fourcc(*CODECS[path.suffix.lower()])
        try:  # no writer kept, so close removes one file's empty file, and here a segment's
            writer = cv2.VideoWriter(opencv_name(path, "video_writer"), fourcc, self._rate, self._size)
            if not writer.isOpened():
                raise InputError(f"video_writer {path}: OpenCV cannot write this file")
        except BaseException:
            if self.params.segment_s:
                path.unlink(missing_ok=True)
            raise
        self._writer, self._file, self._in_file = writer, path, 0

    def consume(self, packet: Packet) -> None:
        copies = self._copies(packet) if self._rate else 0
        if copies is None:  # left out, so not drawn either
            return
        image = draw(packet, self.params.show_probs, self._fps.tick() if self.params.show_fps else None)
        if self._rate:
            self._place(packet, image, copies)
            return
        self._held.append((Packet(packet.source, packet.index, packet.timestamp), image))  # the drawn copy alone
        nominal, container = packet.extra.get("fps"), packet.extra.get("container_fps")
        if nominal is not None and MIN_FPS <= nominal <= MAX_FPS:  # a live source's own; a bogus one is not
            self._nominal = float(nominal)
        if container is not None:  # however odd: a file that reports 1000 fps is still a file (s64e 2)
            self._from_file = True
            if MIN_FPS <= container <= MAX_FPS:
                self._container = float(container)
        if self.params.fps is not None or self._nominal or len(self._held) > FPS_SAMPLE:
            self._write_held()

    def _write_held(self) -> None:
        """Open the file at the held frames' size and rate, and write them (taken first, so a
        failure here is not retried by ``close``). The rate: the one given, else a live source's
        own (the frames that survive its drops, a third of them, made 8 s of a camera 13.5 s of
        video), else the one its frames' timestamps show, or a file's container's where that is
        close to it (``RATE_AGREES``) or faster (a file that starts slow: its later frames are not
        left out, ``_copies``)."""
        held, self._held = self._held, []
        first = held[0][1]
        self._size = (first.shape[1], first.shape[0])
        times = [p.timestamp for p, _ in held]
        measured = frame_rate([p for p, _ in held])
        alike = len(times) > 2 and float(np.ptp(np.diff(times))) < ALIKE_S
        if self._container and (self._container > measured
                                or abs(measured / self._container - 1) <= RATE_AGREES and not alike):
            measured = self._container
        self._rate = self.params.fps or self._nominal or measured
        self._start()
        for packet, image in held:
            copies = self._copies(packet)
            if copies is not None:
                self._place(packet, image, copies)

    def _copies(self, packet: Packet) -> int | None:
        """How many copies of the frame before go ahead of this one, or None to leave it out,
        keeping the file within a slot of the frames' timestamps: a frame a whole slot or more
        behind its time is preceded by copies, and one a whole slot or more ahead of it is left
        out (frames faster than the file's rate: a camera back from an outage at a higher one
        made 40 s of it 63 s of video). Within a slot either way (a camera's jitter) it is
        written as it comes. A gap or a step of the clock beyond ``MAX_FILL_S`` starts the
        file's clock again from this frame. A rate the user gives is the one to play at, frame
        after frame (a slideshow of photos a second apart at 5 fps), so it fills and skips nothing."""
        if self.params.fps is not None:
            return 0
        if self._origin is None:
            self._origin = packet.timestamp
        late = (packet.timestamp - self._origin) * self._rate - self.written  # in slots
        if abs(late) > MAX_FILL_S * self._rate:  # an outage, a clock stepped: a bounded freeze
            late = max(round(MAX_FILL_S * self._rate) - 1, 0) if late > 0 else 0
            self._origin = packet.timestamp - (self.written + late) / self._rate
        if late <= -1:
            # a file's frames are all written, the file's clock moved to each (a file that starts
            # slow lost 39 of its 72 frames, all of them in the CSV); a live source's are left out
            kept = "each is written, so that stretch plays slower than it was recorded" if self._from_file else \
                "those a whole frame ahead of their time in it are left out, so that it keeps their timing"
            if not self._ahead:
                print(f"fer-pipe: video_writer {self.params.path}: {packet.source} frames come faster than "
                      f"the file's {self._rate:g} fps (from frame {packet.index}); {kept}", file=sys.stderr)
            self._ahead = True
            if not self._from_file:
                return None
            self._origin = packet.timestamp - self.written / self._rate
            return 0
        return round(late) if late >= 1 and self._last is not None else 0

    def _place(self, packet: Packet, image: np.ndarray, copies: int) -> None:
        """Writes ``copies`` of the frame before, then this one."""
        for _ in range(copies):
            self._write(*self._last)
        image = self._write(packet, image)
        self._last = (Packet(packet.source, packet.index, packet.timestamp), image)  # not the frame's pixels

    def _write(self, packet: Packet, image: np.ndarray) -> np.ndarray:
        """Writes the image, fitted to the file's size; the image as written, for any copies.
        A segment's last frame closes its file, and the next frame opens the next."""
        if self._writer is None:
            self._start()
        height, width = image.shape[:2]
        if (width, height) != self._size:
            if not self._scaled:
                print(f"fer-pipe: video_writer {self.params.path}: {packet.source} frame {packet.index} is "
                      f"{width}x{height}, the file {self._size[0]}x{self._size[1]}; it and any other frame of "
                      "another size are scaled to fit", file=sys.stderr)
            self._scaled = True
            image = _fitted(image, self._size)
        with self._stderr.capturing():
            self._writer.write(image)
        said = self._stderr.take()
        if WRITE_FAILED in said:
            self._failed = True
            lost = "; an .mp4's index is written at its end, so this one will not play (an .avi keeps the frames " \
                   "before such a failure)" if Path(self.params.path).suffix.lower() == ".mp4" else ""
            raise OSError(f"video_writer {self.params.path}: OpenCV could not write this frame "
                          f"({_room(self.params.path)}){lost}")
        if said:
            os.write(2, said)  # anything else OpenCV said goes where it would have gone
        self.written += 1
        self._in_file += 1
        if self.params.segment_s and self._in_file >= self.params.segment_s * self._rate:
            self._finish_file()
        return image

    def close(self) -> None:
        try:
            if self._held and not self._failed:  # the stream ended within the frames held for the rate
                self._write_held()
        except BaseException:
            self._failed = True  # that error is the one to report, not the read-back's
            raise
        finally:
            self._release()

    def _release(self) -> None:
        try:
            if self._writer is not None:
                self._finish_file()
            elif self._created:  # the run ended before its first frame: no empty file left behind
                Path(self.params.path).unlink(missing_ok=True)
        finally:
            self._stderr.close()
            os.close(self._lock)

    def _finish_file(self) -> None:
        """Close the file being written and, unless a write already failed, raise unless it reads
        back with every frame given to it.

        OpenCV's writer reports a failed write (a full disk, a vanished mount) only as a
        warning on stderr, once per frame, and an MP4 whose index could not be written at the
        end does not open at all; without this check such a run ended with exit 0.
        """
        writer, self._writer = self._writer, None
        try:
            with self._stderr.capturing():
                writer.release()
        except BaseException:  # a stop as the capture began: the file is finished all the same
            writer.release()  # (a second release does nothing), or it waited for the garbage collector
            raise
        said = self._stderr.take()
        if self._failed:
            return
        if said:
            os.write(2, said)
        if self._in_file == 0 and (self.params.segment_s or self._created):  # a stop before its first frame
            self._file.unlink(missing_ok=True)  # an .mp4 of no frame does not open, and a segment stood empty
            return
        capture = cv2.VideoCapture(opencv_name(self._file, "video_writer"))
        held = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        if 0 == held < self._in_file and capture.isOpened():  # an .avi cut before its index: read what it holds
            held = sum(1 for _ in iter(capture.grab, False))
        capture.release()
        if held < self._in_file:
            raise OSError(f"video_writer {self._file}: the file holds {held} of the {self._in_file} frames given "
                          f"to it ({_room(self._file)})")


def _lock_of(series: Path) -> Path:
    """The lock file that holds a series of files for one run."""
    return series.with_name(f".{series.name}.lock")


def _numbered(path: Path, number: int) -> Path:
    """Segment ``number`` of the series ``path`` names: ``annotated-000001.mp4``."""
    return path.with_name(f"{path.stem}-{number:06d}{path.suffix}")


def _last_number(path: Path) -> int:
    """The highest number of the series ``path`` names that is already in its folder (0 for none),
    so a restarted run adds files after the last run's instead of writing over them."""
    pattern = re.compile(re.escape(path.stem) + r"-(\d{6,})" + re.escape(path.suffix) + "$")
    numbers = [int(found.group(1)) for name in os.listdir(path.parent) if (found := pattern.match(name))]
    return max(numbers, default=0)


def frame_rate(packets: list[Packet]) -> float:
    """The frame rate from the median gap between the frames' timestamps (one source: ``one_source``)."""
    times = [p.timestamp for p in packets]
    gaps = [b - a for a, b in zip(times, times[1:]) if b > a]
    return min(MAX_FPS, max(MIN_FPS, 1.0 / float(np.median(gaps)))) if gaps else FALLBACK_FPS


def _fitted(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The image scaled to fit ``size`` (width, height), its shape kept, centred on black."""
    width, height = size
    scale = min(width / image.shape[1], height / image.shape[0])
    w, h = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))
    out = np.zeros((height, width, 3), np.uint8)
    x, y = (width - w) // 2, (height - h) // 2
    out[y:y + h, x:x + w] = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return out


def _room(path: str | Path) -> str:
    """What may explain a failed write: the disk's free room, or the folder gone (removed under
    the run: measuring it raised its own FileNotFoundError in place of the line)."""
    try:
        return f"{shutil.disk_usage(Path(path).parent).free // 2**20} MiB free on its disk"
    except OSError as exc:
        return f"its folder: {exc.strerror}"
