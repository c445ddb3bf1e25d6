"""``rtsp``: a network camera or stream (any URL OpenCV's FFmpeg backend opens), always the newest frame.

A reader thread reads the stream as fast as it arrives and keeps only the latest frame, so the
pipeline never works through a backlog of stale video. When the stream stops it reconnects with
capped exponential backoff, logging each attempt on stderr (once the backoff is at its longest,
the same reason at most every ``QUIET_LOG_S``), until ``give_up_after_s`` without a frame; then
the run fails with one line naming the URL.
"""
from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from typing import Literal
from urllib.parse import urlsplit

import cv2
import numpy as np
from pydantic import Field, field_validator

from fer_pipe.errors import InputError
from fer_pipe.messages import Packet, wall_time
from fer_pipe.redaction import redact
from fer_pipe.rtsp_probe import why_not_open
from fer_pipe.stage import Source, SourceParams


STOP_POLL_S = 0.5
"""How often a wait for the next frame checks whether the run is stopping."""
FFMPEG_OPTIONS = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
"""OpenCV's FFmpeg options (``key;value|key;value``), read at each open."""
QUIET_LOG_S = 300.0
"""While a camera stays down for one reason with the backoff at its longest, its attempts are
said at most this often: each attempt of a camera down for a day was 8,600 lines a day."""
STABLE_S = 5.0
"""A connection that streamed this long was good: the backoff starts over (any frame restarts
the give-up clock)."""


def _kind(why: str) -> str:
    """A reason without its figures: a flapping stream's "stream lost after 3 frames, 0.4 s" is
    the same reason on every attempt, and was said on every one."""
    return re.split(r"\d", why, maxsplit=1)[0]


HOSTED = ("rtsp", "rtsps", "rtmp", "http", "https")
"""Schemes whose URL names the server it reads from (``udp://@:5000`` listens, and needs none)."""


class RtspParams(SourceParams):
    url: str = Field(description="stream URL: rtsp://user:pass@host:554/path, http://..., udp://...")
    transport: Literal["auto", "tcp", "udp"] = Field("auto", description="RTSP transport (auto: TCP, then UDP and "
                                                                          "TCP in turn while attempts fail)")
    timeout_s: float = Field(5.0, gt=0, le=120, description="connecting or reading longer than this counts as lost")
    backoff_initial_s: float = Field(0.5, gt=0, le=60, description="wait before the second connection attempt")
    backoff_max_s: float = Field(10.0, gt=0, le=600, description="longest wait between attempts")
    give_up_after_s: float = Field(60.0, ge=0, description="fail after this long without a frame (0: never)")

    @field_validator("url")
    @classmethod
    def _a_url(cls, url: str) -> str:
        """A URL that does not parse failed in the stage's process, after every stage had started
        (exit 1, "ValueError: Invalid IPv6 URL"); one with no host was retried until given up on."""
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise ValueError(f"not a URL this can open ({exc})") from None
        try:
            parts.port  # noqa: B018  parsed only when asked for: rtsp://cam:abc fails here
        except ValueError:  # not urlsplit's words: they quote the "port", maybe a password cut at its '#'
            raise ValueError("not a URL this can open: its port is not a number from 0 to 65535 (a '/', '?' "
                             "or '#' in a password is written %2F, %3F, %23)") from None
        if not parts.scheme:
            raise ValueError("not a stream's URL: it has no scheme (rtsp://host/path; the video source reads files)")
        if parts.scheme in HOSTED and not parts.hostname:
            raise ValueError(f"a {parts.scheme} URL needs a host ({parts.scheme}://host/path)")
        return url


class RtspSource(Source):
    """Reads a network camera or stream, reconnecting with backoff when it is lost.

    Live: a frame the pipeline has not taken yet is replaced by a newer one (and counted in
    ``dropped``).
    """

    Params = RtspParams
    params: RtspParams

    @property
    def live(self) -> bool:
        return True

    def open(self) -> None:
        self._their_options = os.environ.get(FFMPEG_OPTIONS)  # a user's own FFmpeg options, kept with auto
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # each attempt gets our own line
        self._where = redact(self.params.url)
        self._cond = threading.Condition()
        self._latest: tuple[np.ndarray, float, float] | None = None  # image, captured, the stream's fps
        self._error = ""
        self._last_frame_at: float | None = None  # monotonic; None until the stream's first frame
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._read, name=f"rtsp:{self.name}", daemon=True)
        self._thread.start()

    def _log(self, message: str) -> None:
        print(f"fer-pipe: rtsp {self._where}: {message}", file=sys.stderr, flush=True)

    def _connect(self, failures: int) -> cv2.VideoCapture:
        """An attempt. ``auto`` is TCP, OpenCV's own default (it passes NAT and firewalls), then
        UDP and TCP in turn while attempts fail: a server that plays over UDP alone
        (rtsp-server-perl, some cameras) refused every attempt of an auto that was TCP alone."""
        transport = self.params.transport if self.params.transport != "auto" else ("tcp", "udp")[failures % 2]
        if self.params.transport != "auto" or self._their_options is None:
            os.environ[FFMPEG_OPTIONS] = f"rtsp_transport;{transport}"  # read by the open below
        ms = int(self.params.timeout_s * 1000)
        return cv2.VideoCapture(self.params.url, cv2.CAP_FFMPEG,
                                [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])

    def _read(self) -> None:
        """The reader thread. If it ends by an error, the stream ends with that error: a reader
        that died in silence left the source waiting for a frame for ever."""
        try:
            self._reconnecting()
        except BaseException as exc:  # noqa: BLE001  said as the stage's failure, not swallowed
            self._fail(f"reader thread failed: {type(exc).__name__}: {exc}", RuntimeError)

    def _reconnecting(self) -> None:
        """Connect, read until the stream stops, back off, connect again.

        The give-up clock starts over when a frame arrives, the backoff only when a connection
        has streamed for ``STABLE_S``: a server that still answers while its camera sends
        nothing (a publisher gone behind an RTSP relay) opens fine and then times out, and one
        that sends a frame and drops the connection (a flapping publisher) reconnected in a
        tight loop for ever when each connection reset the backoff.
        """
        p = self.params
        failures = 0
        down_since = time.monotonic()
        why = "cannot connect"
        quiet: tuple[str, float] | None = None  # the kind of reason said at the longest backoff, and when
        while not self._stopping.is_set():
            if failures:
                if self._given_up(down_since, failures, why):
                    return
                down = time.monotonic() - down_since
                delay = min(p.backoff_initial_s * 2.0 ** min(failures - 1, 60), p.backoff_max_s)
                if p.give_up_after_s and down + delay >= p.give_up_after_s:  # no attempt after the time is up
                    delay = p.give_up_after_s - down
                    self._log(f"{why}; giving up in {delay:.1f} s (down for {down:.1f} s)")
                elif delay < p.backoff_max_s:
                    self._log(f"{why}; attempt {failures + 1} in {delay:.1f} s (down for {down:.1f} s)")
                elif quiet is None or quiet[0] != _kind(why) or time.monotonic() - quiet[1] >= QUIET_LOG_S:
                    self._log(f"{why}; attempt {failures + 1} in {delay:.1f} s (down for {down:.1f} s; "
                              f"while so, said every {QUIET_LOG_S:g} s)")
                    quiet = (_kind(why), time.monotonic())
                if self._stopping.wait(delay) or self._given_up(down_since, failures, why):
                    return
            cap = self._connect(failures)
            opened = cap.isOpened()
            connected = time.monotonic()
            frames = self._pump(cap, failures) if opened else 0
            cap.release()
            if self._stopping.is_set():
                return
            if frames:  # the give-up clock starts over at the last frame, not when a read gave up
                down_since = self._last_frame_at  # on it, which takes OpenCV a few read timeouts
            if not frames or down_since - connected < STABLE_S:
                failures += 1
                why = (self._cannot_connect() if not opened else
                       f"connected, but no frame within timeout_s ({p.timeout_s:g} s)" if not frames else
                       f"stream lost after {frames} frames, {down_since - connected:.1f} s")
                continue
            failures, quiet = 0, None
            self._log(f"stream lost after {frames} frames; reconnecting")

    def _cannot_connect(self) -> str:
        """``cannot connect``, with the server's reason where the probe gets one. The probe only
        explains: an answer it did not foresee must not end the reconnecting."""
        try:
            reason = "" if self._stopping.is_set() else why_not_open(self.params.url, self.params.timeout_s)
        except Exception:  # noqa: BLE001  said as the plain "cannot connect" it explains
            reason = ""
        return f"cannot connect: {reason}" if reason else "cannot connect"

    def _given_up(self, down_since: float, failures: int, why: str) -> bool:
        """Fail the stage if the stream has been down ``give_up_after_s``: checked before each
        wait and after it, so that the last wait ends at that time rather than a backoff later."""
        down = time.monotonic() - down_since
        if not self.params.give_up_after_s or down < self.params.give_up_after_s:
            return False
        self._fail(f"no stream for {down:.0f} s after {failures} attempts; giving up "
                   f"(give_up_after_s={self.params.give_up_after_s:g}); the last: {why}")
        return True

    def _pump(self, cap: cv2.VideoCapture, failures: int) -> int:
        frames = 0
        rate = cap.get(cv2.CAP_PROP_FPS)  # the stream's, as this connection reports it
        streamed_before = self._last_frame_at is not None
        while not self._stopping.is_set():
            ok, image = cap.read()
            if not ok:
                return frames
            self._last_frame_at = time.monotonic()
            with self._cond:
                self.dropped += self._latest is not None
                self._latest = (image, self._last_frame_at, rate)
                self._cond.notify()
            if not frames and failures:
                self._log(f"connected{' again' if streamed_before else ''} after {failures + 1} attempts")
            frames += 1
        return frames

    def _fail(self, message: str, kind: type[Exception] = InputError) -> None:
        with self._cond:
            self._error, self._error_kind = message, kind
            self._cond.notify()

    def frames(self) -> Iterator[Packet]:
        source = self.source_id
        index = 0
        while True:
            with self._cond:
                while not self._cond.wait_for(lambda: self._latest is not None or self._error, STOP_POLL_S):
                    if self.stop_requested():
                        return  # the run is stopping while the camera is down: end the stream now
                if self._latest is None:
                    raise self._error_kind(f"rtsp {self._where}: {self._error}")
                image, captured, rate = self._latest
                self._latest = None
            yield Packet(source, index, wall_time(captured), image, captured=captured, extra={"fps": rate})
            index += 1

    @classmethod
    def closing_s(cls, params: RtspParams) -> float:
        return 2 * params.timeout_s + 1  # the reader thread may be in a read, or a connect and a probe

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=self.closing_s(self.params))
