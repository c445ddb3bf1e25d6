"""``video``: frames of any file OpenCV reads, with the container's frame index and timestamp."""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
from pydantic import Field

from fer_pipe.errors import InputError, Truncated, printable
from fer_pipe.ffmpeg_log import quiet_ffmpeg
from fer_pipe.frame_count import FALLBACK_FPS, frames_in
from fer_pipe.input_files import file_problem
from fer_pipe.interlace import BLANKS_INTERLACED, interlaced_codec
from fer_pipe.messages import Packet
from fer_pipe.opencv_names import opencv_name
from fer_pipe.redaction import redact
from fer_pipe.seeking import seeks_by_frame
from fer_pipe.truncation import count_is_a_ceiling, counted_by_duration, ends_early
from fer_pipe.stage import Source, SourceParams

quiet_ffmpeg()  # this stage reports decode failures itself


MAX_PACED_FPS = 240.0
"""Above this, a container's frame rate is taken as misread (some report 1000 or 90000, their
time base): a realtime replay then neither waits nor skips, rather than skip nearly every frame."""
STOP_LOOK_S = 0.1
"""How often a realtime replay waiting for a frame's time looks whether the run is stopping."""
NEAR_END = 5
"""Frames by which the header's count of what a video plays can overshoot its last frame."""
READ_SAY = 256
"""Frames grabbed on the way to a start frame between two words to the stall watch."""
HOLE_FRAMES = 2.5
"""Frame times between two frames read beyond which the frames between are lost in a hole: a
phone's variable-rate recording drops one or two at a time."""
FAILED_READS = 100
"""Failed reads in a row that end a file. OpenCV's read fails once per run of damaged packets it
gave up on (each after up to 64 tries) and decodes on after them, as FFmpeg does: a bad sector
in a recording is a gap, not its end. At the true end every read fails at once (50 µs each)."""
DECODER_HELD = 4
"""Frames a decoder can still give after a read that failed at a file's cut: those it held."""


def _file_state(path: str) -> tuple[int, int, int] | None:
    """(device, inode, size) of the file at ``path``; None where it cannot be looked at (removed
    or moved meanwhile: what was read stands)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size


class VideoParams(SourceParams):
    path: str = Field(description="video file to read")
    start: int = Field(0, ge=0, description="first frame index to read")
    max_frames: int = Field(0, ge=0, description="stop after this many frames (0: the whole file)")
    realtime: bool = Field(False, description="replay at the file's own fps as a live source "
                                              "(drops oldest frames instead of blocking, and skips "
                                              "frames whose time passed, as a camera would)")
    loop: bool = Field(False, description="start again at the end, without end (soak tests, demos); "
                                          "frame indexes keep counting up")
    fps: float | None = Field(None, gt=0, le=1000, description="frame rate that dates the frames of a file "
                              "carrying no timestamps (a raw .h264 stream, for which OpenCV reports FFmpeg's "
                              "guess of 25); not used for a file that has them")


class VideoSource(Source):
    """Reads a video file, with the container's frame index and timestamp of each frame.

    By default a finite source: it blocks when the pipeline is busy, so every frame is
    processed once. ``realtime`` makes it live (drops instead of blocking), ``loop`` endless.
    """

    Params = VideoParams
    input_paths = ("path",)
    fresh_frames = True  # OpenCV makes a new array for each frame
    params: VideoParams

    @classmethod
    def preflight(cls, params: VideoParams) -> None:
        """Open the file and decode its first frame in the parent, so a missing, empty or
        unreadable video is one line before any stage process starts."""
        capture = _open(params.path)
        try:
            if not _read(capture)[0]:
                raise InputError(f"video {params.path}: no frame could be decoded "
                                 "(truncated or corrupt file)")
            codec = BLANKS_INTERLACED and interlaced_codec(opencv_name(params.path, "video"))
            if codec:
                raise InputError(f"video {params.path}: its {codec} pictures are interlaced, which opencv-python "
                                 f"{cv2.__version__} reads as blank frames; deinterlace it first "
                                 "(ffmpeg -i IN -vf bwdif=mode=send_frame OUT.mp4)")
            if params.start:
                played = frames_in(capture, params.path)
                # the count may fall a few frames short of what the file plays (no_face.mp4:
                # 93 and 95): a start past it is refused only where no frame decodes
                if 0 < played <= params.start and not _decodes_at(params.path, params.start):
                    raise InputError(f"video {params.path}: start {params.start} is past its end "
                                     f"(by its header it plays {played} frames, 0-{played - 1})")
        finally:
            capture.release()

    def open(self) -> None:
        self._seekable = seeks_by_frame(self.params.path)
        self._cap = _opened_at(self.params.path, self.params.start, self._seekable, self.waiting_outside)
        self.fps = self._cap.get(cv2.CAP_PROP_FPS) or FALLBACK_FPS
        self._played = frames_in(self._cap, self.params.path)
        self._opened = _file_state(self.params.path)
        self._cut = ends_early(self.params.path)
        self._ceiling = count_is_a_ceiling(self.params.path) and not self._cut
        self._by_duration = counted_by_duration(self.params.path)
        # the holes are counted only where a shortfall may be let off, or is not measured (see _check_end)
        self._hole_s = HOLE_FRAMES / self.fps if self._by_duration or self._ceiling else float("inf")
        self._grabbed_ms = 0.0  # the position of the last frame a realtime replay skipped
        self._undated = _undated(self.params.path)
        if self._undated and self.params.fps:  # a raw stream of a 10 fps camera was dated at 25
            self.fps = self.params.fps
        elif self._undated:
            print(printable(f"fer-pipe: WARNING: video {self.params.path}: the file carries no timestamps (a raw "
                            f"stream?); its frames are dated by their number at {self.fps:g} fps, the rate "
                            "OpenCV reports (25 is FFmpeg's guess): give the camera's with source.fps"),
                  file=sys.stderr)
        elif self.params.fps:  # a user of ffmpeg's -r took it for a rate to read at, and got every frame
            print(printable(f"fer-pipe: WARNING: video {self.params.path}: source.fps {self.params.fps:g} is not "
                            "used: the file's frames carry their own timestamps (source.fps dates a raw stream's); "
                            "every frame is read, at whatever rate the file has"), file=sys.stderr)
        self._last: float | None = None  # where in the file the last frame read is, in seconds
        self._head = 0  # frames before the first that decodes, by its timestamp: a capture begun mid-stream
        self._gaps: list[tuple[float | None, float, int]] = []  # damage: (time before, time after, frame after)
        self._in_holes = 0  # frames missing where two frames read are over HOLE_FRAMES frame times apart
        self._stepped: tuple[float, float, float, float, int] | None = None  # see _past_a_step_back
        self._join_said = False

    @property
    def live(self) -> bool:
        return self.params.realtime

    def length(self) -> int | None:
        """Frames this source will read: what the file plays, which a trim's edit list can make
        fewer than OpenCV's count (the progress bar's total); a loop, or a file of no count (a
        Matroska file written to a pipe), reads ``max_frames``, where it is given."""
        if self.params.loop or self._played <= 0:
            return self.params.max_frames or None
        remaining = max(0, self._played - self.params.start)
        return min(remaining, self.params.max_frames) if self.params.max_frames else remaining

    def frames(self) -> Iterator[Packet]:
        """Each frame dated by the container's own clock, not by its number over a rate: a phone's
        variable-rate recording, a file with holes or a loop dated by count drifted from the
        audio and from the wall clock its episodes are read against."""
        source = self.source_id
        index = self.params.start
        started = time.monotonic()
        read = 0
        offset = timestamp = 0.0  # timestamps keep increasing across loops
        paced = self.params.realtime and self.fps <= MAX_PACED_FPS
        while not self.params.max_frames or read < self.params.max_frames:
            if paced:
                late = self._skip_late(int((time.monotonic() - started) * self.fps) - read, read)
                if late:
                    read, index = read + late, index + late
                    timestamp = offset + self._grabbed_ms / 1000.0  # where a wrap to the start continues from
            ok, image, failed = _read(self._cap)
            if not ok and self.params.loop and read:
                self._check_complete(index)
                offset = timestamp + 1.0 / self.fps
                self._stepped = None
                self._rewind()
                ok, image, failed = _read(self._cap)
            if not ok:
                if read == 0 and not (self.params.start and self._near_the_end(self.params.start)):
                    where = f" from start {self.params.start} on (past its end?)" if self.params.start else ""
                    raise InputError(f"video {self.params.path}: no frame could be decoded{where} "
                                     "(truncated or corrupt file)")
                self._check_complete(index)
                return
            seconds = self._position()
            if self._stepped and seconds is not None:
                offset = self._past_a_step_back(offset, seconds)
            before, timestamp = timestamp, index / self.fps if seconds is None else offset + seconds
            if read and timestamp < before - 0.5 / self.fps:  # dated a frame on, until the next frame tells
                self._stepped = (offset, before, self._last, seconds, index)
                offset, timestamp = before + 1.0 / self.fps - seconds, before + 1.0 / self.fps
            if not read and seconds:
                self._head = max(0, round(seconds * self.fps) - self.params.start)
            self._last = seconds
            if read and timestamp - before > self._hole_s:
                self._in_holes += round((timestamp - before) * self.fps) - 1
            if failed:
                self._gaps.append((before if read else None, timestamp, index))
            # in slices, each after a look at the stop: a time-lapse replayed at 0.01 fps held a
            # SIGTERM for up to 100 s, past systemd's stop timeout (s64e 4)
            while paced and (delay := started + read / self.fps - time.monotonic()) > 0 and not self.stop_requested():
                time.sleep(min(delay, STOP_LOOK_S))
            yield Packet(source, index, timestamp, image, captured=time.monotonic(),
                         extra={"fps" if self.params.realtime else "container_fps": self.fps})
            index += 1
            read += 1
        self._say_damage(index)

    def _past_a_step_back(self, offset: float, seconds: float) -> float:
        """The offset for the frame after one whose time went back (``_stepped``), which was dated
        a frame after the one before it. A clock that stays back is MPEG streams joined end to end
        (``cat`` of a recorder's segments start it again at each join): the frames after the join
        were dated as the first segment's again, or before the file's start, so they follow on.
        One that comes back was one stale frame, as FFmpeg gives after damage in a transport
        stream: the frames after it keep their own times."""
        kept, before, last, went, index = self._stepped
        self._stepped = None
        if kept + seconds >= before:
            return kept
        if not self._join_said:
            self._join_said = True
            print(printable(f"fer-pipe: WARNING: video {self.params.path}: its timestamps go back at frame {index}, "
                            f"from {last:.3f} s to {went:.3f} s (streams joined end to end?); frames from there on, "
                            "past any later step back too, are dated as following on"), file=sys.stderr)
        return offset

    def _position(self) -> float | None:
        """Where the frame just read is in the file, in seconds; None for a file with no
        timestamps (``_undated``), whose frames are dated by their number."""
        return None if self._undated else self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0

    def _rewind(self) -> None:
        """Back to the start frame, for a loop: the file is opened again, since a seek back to
        frame 0 reads nothing after it in a transport stream, a raw stream or a live WebM."""
        self._cap.release()
        self._cap = _opened_at(self.params.path, self.params.start, self._seekable)
        self._opened = _file_state(self.params.path)  # a clip re-exported meanwhile is read anew, whole

    def _skip_late(self, behind: int, read: int) -> int:
        """Skip the ``behind`` frames whose time has passed, as a camera would have dropped them:
        after a stall (a starved CPU) a replay that sent them back to back would burst where a
        camera does not. They are grabbed (decoded, but not converted or sent) and counted as
        dropped; a stop ends the catching up."""
        if self.params.max_frames:
            behind = min(behind, self.params.max_frames - read - 1)
        skipped = 0
        while skipped < behind and not self.stop_requested() and self._cap.grab():
            skipped += 1
            self._grabbed_ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)  # after a failed grab it reads 0
        self.dropped += skipped
        return skipped

    def _check_complete(self, index: int) -> None:
        """Raise when decoding stopped well before the container's frame count.

        The runner keeps and drains every frame already read, then exits 2 with this line.
        An MP4's edit list can hide frames that its sample table, and so OpenCV's count, still
        holds: a trim without re-encoding does (``ffmpeg -ss 4.5 -c copy`` of the WolfgangLanger
        clip lists 400 frames and plays 364), so such a file's count is its video track's
        duration at its frame rate. Both are estimates for some formats (no_face.mp4 lists 98,
        its track lasts 93.4 frames, it plays 95), and an AVI re-encoded from a variable-rate
        source counts the empty frames that fill its gaps; so a shortfall of up to 5 frames, or
        1 %, is not called truncation. In a file that ends inside its own container
        (``ends_early``: a copy cut short) only the 5 are: an AVI cut 12 frames short of its
        2,000 passed as whole. The estimate is of the file's end: a run of ``max_frames`` that
        stops short of its own last frame is measured from there too (a batch chunk that ended
        1 frame short of its 10, far from the file's end, lost that frame to damage). A whole
        Matroska file's count is only a ceiling (``count_is_a_ceiling``: its audio may run on),
        so nothing is measured against it; one cut short is held to the 5 frames. In a transport
        or program stream, FLV or Ogg file whose count is a ceiling, frames lost in holes of its
        timestamps are damage still, as its shortfall was before (one with audio lost 43 of 144
        frames in its middle without a word once its count became a ceiling, s64g 2); a pause in
        its video fails it, as before. A Matroska or WebM file is spared that: a browser's
        recording with audio stops its frames while the screen is still (s64h 1).

        Damage that decoding went on after is said first: the frames lost to it are then the
        count's shortfall, and nothing was cut. So is a shortfall in a file whose last frame is
        at its end: FFmpeg passes over damage in a transport stream without a failed read (43
        frames of 72, the last at the end, were "decoding stopped at frame 43"). A recording
        that begins inside a group of frames (a transport stream cut in mid-stream) decodes
        from its first key frame on: the frames before it, as its first timestamp counts them,
        are not missing at its end (42 frames from 0.433 s of a 55-frame stream were "decoding
        stopped at frame 42 of 55"). But in a Matroska file, whose count is its duration at
        the nominal rate (``counted_by_duration``), frames spread thin are not lost: a phone's
        variable-rate recording of video alone plays fewer, one or two frame times apart, and
        was "damaged inside" (14 of 72, every frame decoding). Damage leaves holes, so
        there a shortfall is damage when at least half of it is missing in holes of over
        ``HOLE_FRAMES`` frame times (one widest hole measured alone let five lose 51 frames of
        192 without a word); in any other file every shortfall is.

        A file that grew while it was read is a recording still being made: one written without
        sizes or counts (to a pipe, live) ended where the recorder had got to, exit 0, 185 of its
        472 frames in the CSV. The file opened, not what its name leads to now: one
        replaced by a rename (an export's atomic save) was read whole.
        """
        now = _file_state(self.params.path)
        self._forget_the_cut(index)
        if now is not None and self._opened is not None and now[:2] == self._opened[:2] and now[2] > self._opened[2]:
            raise InputError(f"video {self.params.path}: the file grew while it was read (still being recorded?); "
                             f"{self._read_so_far(index)} read were processed")
        self._say_damage(index)
        done = self._read_so_far(index)
        end = max(self._played - self._head, 0)
        if self._ceiling:  # no shortfall is measured against its count, but holes are damage (s64g 2)
            if not self._by_duration and self._in_holes > max(NEAR_END, index // 100):
                raise InputError(f"video {self.params.path}: {self._in_holes} frames do not decode, lost in gaps of "
                                 f"its timestamps: damaged inside; {done} that decode were processed")
            return
        if end - index > (NEAR_END if self._cut else max(NEAR_END, end // 100)):
            if self._last is not None and round(self._last * self.fps) >= self._played - 1 - NEAR_END:
                if self._by_duration and 2 * self._in_holes < end - index:
                    return  # frames spread thin, not lost in holes: a variable rate under a nominal count
                raise InputError(f"video {self.params.path}: {end - index} of its {end} frames do not decode, "
                                 f"though it decodes to its end ({self._last:.3f} s): damaged inside; "
                                 f"{done} that decode were processed")
            raise Truncated(f"video {self.params.path}: decoding stopped at frame {index} of {end} "
                             f"(truncated or corrupt file); {done} before it were processed")

    def _forget_the_cut(self, index: int) -> None:
        """Drop the last gap where it was the cut of a file its container says is cut short: a
        read through a frame cut in two fails, the decoder then gives the frames it held, and
        decoding stops for good. Said as damage that decoding went on after ("damaged after
        frame 226 ... as the timestamps show"), an MP4 cut short at most places was called
        damaged inside, and fer-pipe batch ran its chunks again as one task (s62a 1). Damage
        among a whole file's last frames stays damage (s62d 1)."""
        if self._cut and self._gaps and index - self._gaps[-1][2] <= DECODER_HELD:
            self._gaps.pop()

    def _say_damage(self, index: int) -> None:
        """Raise where frames did not decode and decoding went on after them: at the end of the
        file, and at the end of ``max_frames`` (a run of 40 passed over 10 lost frames, exit 0)."""
        if self._gaps:
            raise InputError(f"video {self.params.path}: {_damage(self._gaps)}; {self._read_so_far(index)} "
                             "that decode were processed")

    def _read_so_far(self, index: int) -> str:
        """The frames read before ``index``, as a failure line names them: from a ``start``, by
        their numbers ("the 64 frames" of a batch chunk from frame 400 read as all the file
        gave, beside "464 rows of it are kept")."""
        return f"frames {self.params.start}-{index - 1}" if self.params.start else f"the {index} frames"

    def _near_the_end(self, index: int) -> bool:
        """Whether decoding nothing from ``index`` on is the end of the video, not a fault: the
        frames it plays are an estimate, so the last chunk fer-pipe batch plans from it can start
        a few frames past the end (a trim with ``-t`` whose track lasts 53 frames' time plays 50).
        A start at or past the estimated end, or any start where the count is unknown, stays a fault;
        in a whole Matroska file, whose count is a ceiling, any start before it may be the end."""
        return 0 < self._played - index <= (self._played if self._ceiling else NEAR_END)

    def close(self) -> None:
        self._cap.release()


def _read(capture: cv2.VideoCapture) -> tuple[bool, np.ndarray | None, int]:
    """The next frame that decodes, and the failed reads before it: damage in a file's middle
    or at its start (a first frame that failed was "no frame could be decoded", and every later
    frame was lost with it). See ``FAILED_READS``."""
    for failed in range(FAILED_READS):
        ok, image = capture.read()
        if ok:
            return True, image, failed
    return False, None, FAILED_READS


def _damage(gaps: list[tuple[float | None, float, int]]) -> str:
    """Where a file's frames stopped decoding and went on, for its one line."""
    before, after, index = gaps[0]
    if before is None:
        first = f"at its start: the first frame that decodes is at {after:.3f} s"
    else:  # the decoder's own delay puts the missing frames' gap in the timestamps a frame or two later
        first = f"after frame {index - 1} ({before:.3f} s): frames there do not decode, as the timestamps show"
    return f"damaged {first}" if len(gaps) == 1 else f"damaged in {len(gaps)} places, the first {first}"


def _opened_at(path: str, frame: int, seekable: bool, reading: Callable[[], None] = lambda: None
               ) -> cv2.VideoCapture:
    """``path`` opened at ``frame``: by OpenCV's seek where it says it landed there, else by
    grabbing (decoding, not converting) every frame that decodes before it, past damage as
    ``_read`` reads on, so that frames are numbered as a read from the start numbers them. No
    frame decodes after a seek in an MPEG stream (``seekable`` False: ``fer_pipe.seeking``); in
    a raw stream (``.h264``) or a WebM written live, with no index, the seek does nothing and
    says it is at frame 0 (the source numbered the file's first frames from ``start``); in a
    damaged file it lands short. ``reading`` is called every ``READ_SAY`` grabs: a long way to a
    start is reading, not a stall."""
    capture = _open(path)
    if not frame or (seekable and capture.set(cv2.CAP_PROP_POS_FRAMES, frame)
                     and capture.get(cv2.CAP_PROP_POS_FRAMES) == frame):
        return capture
    if seekable:  # a seek that missed leaves the file anywhere
        capture.release()
        capture = _open(path)
    grabbed = failed = 0
    while grabbed < frame and failed < FAILED_READS:
        if capture.grab():
            grabbed, failed = grabbed + 1, 0
            if not grabbed % READ_SAY:
                reading()
        else:
            failed += 1
    return capture


UNDATED_FRAMES = 5
"""Frames after the first that must all be dated 0 for a file to count as carrying no timestamps."""


JPEG_START = b"\xff\xd8\xff"
"""How a raw MJPEG stream begins (``ffmpeg -f mjpeg``): its JPEGs carry no times, and FFmpeg's
demuxer makes some up at 25 fps, so OpenCV's are not 0."""
HEAD_READ = 512
"""The bytes of a file's start read to tell an MJPEG stream: a multipart one's first part header
(``--boundary``, ``Content-Type: image/jpeg``, what curl saves from an HTTP camera's
``video.mjpg``) is well within it."""


def _mjpeg_stream(path: str) -> bool:
    """Whether the file is an MJPEG stream, raw or multipart, whose times FFmpeg makes up."""
    with open(path, "rb") as file:
        head = file.read(HEAD_READ)
    parts = head.lstrip()  # a camera may begin its stream with the line end before a boundary (ESP32-CAM)
    return head.startswith(JPEG_START) or parts.startswith(b"--") and b"image/jpeg" in parts.lower()


def _undated(path: str) -> bool:
    """Whether the file carries no timestamps: a raw stream (``.h264`` from a camera or a
    Raspberry Pi), where OpenCV dates every frame 0, and a smoother then never settled, with
    episodes none and nothing said; its frames are dated by their number at the rate OpenCV
    reports. Told by the first frames after the first, several: one recorder repeats its first
    frame's time, and a file so taken by its second frame alone was dated seconds off, then
    failed as truncated. An MJPEG stream is told by its first bytes: a 10 fps camera's was
    dated at 25, ``source.fps`` unheeded and nothing said. A single frame (a photo) is no stream."""
    capture = _open(path)
    try:
        dated = [capture.get(cv2.CAP_PROP_POS_MSEC) for _ in range(UNDATED_FRAMES + 1) if capture.grab()]
    finally:
        capture.release()
    return len(dated) > 1 and (not any(dated[1:]) or _mjpeg_stream(path))


def _decodes_at(path: str, frame: int) -> bool:
    """Whether a frame decodes at ``frame``: a start past a file's end is refused before a run."""
    capture = _opened_at(path, frame, seeks_by_frame(path))
    try:
        return capture.read()[0]
    finally:
        capture.release()


def _open(name: str) -> cv2.VideoCapture:
    path = Path(name)
    problem = file_problem(name, "the rtsp source")  # a URL OpenCV would open as a file: no reconnects
    if problem == "is a folder":
        raise InputError(f"video {path}: is a folder (fer-pipe batch takes a folder of videos, the "
                         "image_folder source a folder of images)")
    if problem:
        raise InputError(f"video {redact(name) if '://' in name else path}: {problem}")
    if path.stat().st_size == 0:
        raise InputError(f"video {path}: the file is empty")
    try:  # OpenCV says "cannot open" of a file it may not read, and warns from its image reader
        path.open("rb").close()
    except OSError as exc:
        raise InputError(f"video {path}: cannot read it ({exc.strerror})") from None
    capture = cv2.VideoCapture(opencv_name(path, "video"))
    if not capture.isOpened():
        if ends_early(path):  # an MP4 whose recording stopped before its index (moov) was written
            raise InputError(f"video {path}: OpenCV cannot open it: the file ends inside its own container "
                             "(a copy or recording cut short)")
        raise InputError(f"video {path}: OpenCV cannot open it (not a video, or a codec it lacks)")
    return capture
