"""``rtsp``: a network camera or stream (any URL OpenCV's FFmpeg backend opens), always the newest frame.

A reader thread reads the stream as fast as it arrives and keeps only the latest frame, so the
pipeline never works through a backlog of stale video. When the stream stops it reconnects with
capped exponential backoff, logging each attempt on stderr (once the backoff is at its longest,
the same reason at most every ``QUIET_LOG_S``), until ``give_up_after_s`` without a frame; then
the run fails with one line naming the URL.
"""
from __future__ import annotations

import difflib
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

from fer_pipe.errors import InputError, as_utf8, printable
from fer_pipe.ffmpeg_log import quiet_ffmpeg
from fer_pipe.messages import Packet, outage, wall_time
from fer_pipe.redaction import redact
from fer_pipe.rtsp_probe import NO_ANSWER, OTHER_TRANSPORT, why_not_open
from fer_pipe.stage import Source, SourceParams


quiet_ffmpeg()  # each attempt's failure is said in the source's own lines, every QUIET_LOG_S when it repeats

STOP_POLL_S = 0.5
"""How often a wait for the next frame checks whether the run is stopping."""
FFMPEG_OPTIONS = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
"""OpenCV's FFmpeg options (``key;value|key;value``), read at each open."""
QUIET_LOG_S = 300.0
"""While a camera stays down for one reason with the backoff at its longest, its attempts are
said at most this often: each attempt of a camera down for a day was 8,600 lines a day."""
LAST_WAIT_S = 1.0
"""The least an attempt's open or probe is given near ``give_up_after_s``."""
OUTAGE_EVERY_S = 1.0
"""While the stream is down, how often the source says so down the graph (a packet that is no frame)."""
LOST = "stream lost after"
"""How a connection that streamed and dropped is said: the reason a flapping stream gives."""
BACK = "connected again"
"""The stream's return, among the kinds of line said every ``QUIET_LOG_S`` (``_kind``'s are reasons)."""
STABLE_S = 5.0
"""A connection that streamed this long was good: the backoff starts over (any frame restarts
the give-up clock)."""


def _kind(why: str) -> str:
    """A reason without its figures: a flapping stream's "stream lost after 3 frames, 0.4 s" is
    the same reason on every attempt, and was said on every one."""
    return re.split(r"\d", why, maxsplit=1)[0]


HOSTED = ("rtsp", "rtsps", "rtmp", "http", "https")
"""Schemes whose URL names the server it reads from (``udp://@:5000`` listens, and needs none)."""
PROTOCOLS = frozenset(HOSTED) | {
    "amqp", "async", "bluray", "cache", "concat", "concatf", "crypto", "data", "fd", "ffrtmpcrypt", "ffrtmphttp",
    "file", "ftp", "gopher", "gophers", "hls", "httpproxy", "icecast", "ipfs", "ipns", "mmsh", "mmst", "pipe",
    "rist", "rtmpe", "rtmps", "rtmpt", "rtmpte", "rtmpts", "rtp", "sctp", "sftp", "smb", "srt", "srtp", "subfile",
    "tcp", "tls", "udp", "udplite", "unix", "zmq"}
"""Every input protocol FFmpeg has, in any build: another scheme (``rstp``, a typo) fails each
attempt with a bare "cannot connect" until the source gives up, or for ever with give_up_after_s 0."""
OPENCV_LOG = getattr(cv2.utils, "logging", cv2)
"""OpenCV's log level: in ``cv2.utils.logging`` from 4.13, on ``cv2`` itself before (4.8 to 4.12,
which setup.cfg allows: there every rtsp source failed its open with an AttributeError)."""
LOG_LEVEL_ERROR = getattr(OPENCV_LOG, "LOG_LEVEL_ERROR", 2)  # OpenCV's LogLevel enum: 2 is ERROR in every release


def with_transport(options: str | None, transport: str) -> str:
    """A user's own FFmpeg options (``OPENCV_FFMPEG_CAPTURE_OPTIONS``, ``key;value|key;value``)
    with the transport a config names in place of theirs: writing the transport alone dropped
    the rest (a socket timeout, a buffer size) without a word."""
    kept = [option for option in (options or "").split("|") if option and option.split(";")[0] != "rtsp_transport"]
    return "|".join([*kept, f"rtsp_transport;{transport}"])


class RtspParams(SourceParams):
    url: str = Field(description="stream URL: rtsp://user:pass@host:554/path, http://..., udp://...")
    transport: Literal["auto", "tcp", "udp"] = Field("auto", description="RTSP transport (auto: TCP, then UDP and "
                                                                          "TCP in turn while attempts fail)")
    timeout_s: float = Field(5.0, gt=0, le=120, description="connecting or reading longer than this counts as lost; "
                                                             "a stream without a frame this long is down (outage "
                                                             "packets, source_down, the status line)")
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
        if not url[len(parts.scheme):].startswith("://"):  # admin:pw@cam/live read as scheme "admin": retried for
            raise ValueError("not a stream's URL: it does not begin SCHEME:// (rtsp://host/path; a user and "
                             "password, if any, come after the //)")  # ever, its password in every line
        if parts.scheme not in PROTOCOLS:
            near = (difflib.get_close_matches(parts.scheme, HOSTED, n=1)
                    or difflib.get_close_matches(parts.scheme, PROTOCOLS, n=1))
            raise ValueError(f"not a stream's URL: FFmpeg has no protocol {parts.scheme!r}"
                             + (f" ({near[0]}://?)" if near else ""))
        if parts.scheme in HOSTED and not parts.hostname:
            raise ValueError(f"a {parts.scheme} URL needs a host ({parts.scheme}://host/path)")
        if as_utf8(url) is None:  # --set with a byte that is not UTF-8: OpenCV's bindings crash on it
            raise ValueError("not a URL this can open: it holds a byte that is not UTF-8 (write it %XX)")
        # a scheme is any case (RFC 3986), as some cameras' manuals write it; FFmpeg takes it in
        # lower case alone, and RTSP:// was retried as a stream "that could not be played"
        return parts.scheme + url[len(parts.scheme):]


class _Shared:
    """What the rtsp stages of one process share: the environment variable FFmpeg reads its
    options from at each open, and OpenCV's log level. A run gives each stage a process of its
    own; run_stage and run_graph, in a host, may hold several, and one took another's options,
    set for its open, for the user's own, and left them set, and the log level at ERROR."""

    def __init__(self) -> None:
        self.environment = threading.Lock()
        """Held from setting the options to giving the user's back, the open between."""
        self._count = threading.Lock()
        self._open: set[int] = set()  # the sources open, by id: a source's closed() after a stop cut its opened() short
        self._their_log_level: int | None = None  # None: not ours to give back

    def opened(self, source: object) -> None:
        with self._count:
            if self._their_log_level is None:  # given back when the last closes
                self._their_log_level = OPENCV_LOG.getLogLevel()
                OPENCV_LOG.setLogLevel(LOG_LEVEL_ERROR)  # each attempt gets our own line
            self._open.add(id(source))

    def closed(self, source: object) -> None:
        """Once for each ``opened``, or after a stop cut it short, wherever it did (s60f 3)."""
        with self._count:
            self._open.discard(id(source))
            if not self._open and self._their_log_level is not None:
                OPENCV_LOG.setLogLevel(self._their_log_level)
                self._their_log_level = None


_SHARED = _Shared()


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
        with _SHARED.environment:  # not another stage's, set for its open
            self._their_options = os.environ.get(FFMPEG_OPTIONS)  # a user's own FFmpeg options, kept with auto
        self._where = redact(self.params.url)
        self._cond = threading.Condition()
        self._latest: tuple[np.ndarray, float, float] | None = None  # image, captured, the stream's fps
        self._error = ""
        self._last_frame_at: float | None = None  # monotonic; None until the stream's first frame
        self._streamed_over = "tcp"  # the transport auto tries first: the last that gave frames
        self._transport = "tcp"
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._read, name=f"rtsp:{self.name}", daemon=True)
        try:
            _SHARED.opened(self)
            self._thread.start()
        except BaseException:  # a Ctrl-C in one process (run_stage, run_graph) as the reader began: no close
            self._stopping.set()  # comes, and the reader went on reconnecting for as long as the process lived
            _SHARED.closed(self)
            raise

    def _log(self, message: str) -> None:
        """A line for the journal; the server's own words in it (its status text) are escaped, as
        the run's last line escapes them: a 503 whose text held escape codes and a carriage
        return retitled the terminal and rewrote the line to read "camera OK"."""
        print(printable(f"fer-pipe: rtsp {self._where}: {message}"), file=sys.stderr, flush=True)

    def _connect(self, failures: int, open_s: float) -> cv2.VideoCapture:
        """An attempt, its open given ``open_s``. ``auto`` is TCP, OpenCV's own default (it passes
        NAT and firewalls), then UDP and TCP in turn while attempts fail: a server that plays over
        UDP alone (rtsp-server-perl, some cameras) refused every attempt of an auto that was TCP
        alone. Once a transport has streamed, ``auto`` starts with it. Reads wait ``timeout_s``
        whatever the open had: a connection made just before give_up_after_s kept a cut read
        timeout while it streamed, and let out frames the decoder held. The options are the
        environment's only for the open, which reads them: left set, a second rtsp stage in the same
        process (run_stage, run_graph) took them for the user's own, and auto asked for UDP on every
        attempt."""
        self._transport = self._transport_for(failures)
        with _SHARED.environment:
            if self.params.transport != "auto" or self._their_options is None:  # read by the open below
                os.environ[FFMPEG_OPTIONS] = with_transport(self._their_options, self._transport)
            try:
                return cv2.VideoCapture(self.params.url, cv2.CAP_FFMPEG,
                                        [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_s * 1000),
                                         cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.params.timeout_s * 1000)])
            finally:
                if self._their_options is None:
                    os.environ.pop(FFMPEG_OPTIONS, None)
                else:
                    os.environ[FFMPEG_OPTIONS] = self._their_options

    def _transport_for(self, failures: int) -> str:
        if self.params.transport != "auto":
            return self.params.transport
        good = self._streamed_over
        return (good, "udp" if good == "tcp" else "tcp")[failures % 2]

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
        quiet: dict[str, float] = {}  # each kind of reason said at the longest backoff, and when
        at_once = False
        while not self._stopping.is_set():
            if failures and self._given_up(down_since, failures, why):
                return
            if failures:
                down = time.monotonic() - down_since
                backoff = self._backoff(failures)
                # an attempt made at once over the other transport is said too: the reason the
                # first one was refused was otherwise lost where the second failed as well
                delay = 0.0 if at_once else backoff
                when = f"at once over {self._transport_for(failures)}" if at_once else f"in {delay:.1f} s"
                if not at_once and p.give_up_after_s and down + delay >= p.give_up_after_s:  # none after the time is up
                    delay = p.give_up_after_s - down
                    self._log(f"{why}; giving up in {delay:.1f} s (down for {down:.1f} s)")
                elif backoff < p.backoff_max_s:
                    self._log(f"{why}; attempt {failures + 1} {when} (down for {down:.1f} s)")
                elif time.monotonic() - quiet.get(_kind(why), -QUIET_LOG_S) >= QUIET_LOG_S:
                    # each kind on its own clock: auto's two transports often fail for two reasons
                    # in turn, and each attempt was said, "while so, said every 300 s"
                    self._log(f"{why}; attempt {failures + 1} {when} (down for {down:.1f} s; "
                              f"while so, said every {QUIET_LOG_S:g} s)")
                    quiet[_kind(why)] = time.monotonic()
                if (not at_once and self._stopping.wait(delay)) or self._given_up(down_since, failures, why):
                    return
            was_at_once, at_once = at_once, False
            cap = self._connect(failures, self._time_left(down_since))
            opened = cap.isOpened()
            connected = time.monotonic()
            frames = self._pump(cap, failures, quiet, why) if opened else 0
            cap.release()
            if self._stopping.is_set():
                return
            if frames:  # the give-up clock starts over at the last frame, not when a read gave up
                down_since = self._last_frame_at  # on it, which takes OpenCV a few read timeouts
            if not frames or down_since - connected < STABLE_S:
                failures += 1
                why = (self._unopened(down_since, why) if not opened else
                       f"connected, but no frame within timeout_s ({p.timeout_s:g} s)" if not frames else
                       f"{LOST} {frames} frames, {down_since - connected:.1f} s")
                # a server that answers, but not over this transport: auto tries the other one at
                # once, not a backoff later (a camera back after an outage was taken up to 20 s
                # late); after an attempt made at once, the backoff comes as ever
                at_once = (p.transport == "auto" and self._their_options is None and why.endswith(OTHER_TRANSPORT)
                           and not was_at_once)
                continue
            failures, quiet, why = 0, {}, "cannot connect"  # an earlier outage's reason is not this one's
            self._log(f"stream lost after {frames} frames; reconnecting")

    def _backoff(self, failures: int) -> float:
        p = self.params
        return min(p.backoff_initial_s * 2.0 ** min(failures - 1, 60), p.backoff_max_s)

    def _say_back(self, failures: int, last: float | None, quiet: dict[str, float], why: str) -> bool:
        """Say the stream is back after ``failures`` attempts; whether it was said. While it flaps
        (its connections drop after a frame or two, ``why``, and the backoff is at its longest)
        the line comes as the failures' do, every ``QUIET_LOG_S``: each return was said, a line
        every backoff_max_s, 8,600 a day (s63b 3). A return from an outage of another kind (no
        connection at all) is said at once: one that came within 300 s of a flap was not (s63f 2)."""
        flapping = self._backoff(failures) >= self.params.backoff_max_s and why.startswith(LOST)
        if flapping and time.monotonic() - quiet.get(BACK, -QUIET_LOG_S) < QUIET_LOG_S:
            return False
        quiet[BACK] = time.monotonic()
        self._log((f"connected again after {failures + 1} attempts, {self._last_frame_at - last:.1f} s without a frame"
                   if last is not None else f"connected after {failures + 1} attempts")
                  + (f" (while connections keep dropping, said every {QUIET_LOG_S:g} s)" if flapping else ""))
        return True

    def _time_left(self, down_since: float) -> float:
        """How long an attempt's open, and its probe, may wait: ``timeout_s``, but no later than
        ``give_up_after_s`` (to within ``LAST_WAIT_S``), where an attempt begun just before it ran
        its whole open and its probe past it: "no stream for 13 s ... (give_up_after_s=8)"."""
        if not self.params.give_up_after_s:
            return self.params.timeout_s
        left = self.params.give_up_after_s - (time.monotonic() - down_since)
        return min(self.params.timeout_s, max(left, LAST_WAIT_S))

    def _unopened(self, down_since: float, before: str) -> str:
        """Why the attempt did not open, from the probe. A probe cut short near give_up_after_s that
        heard nothing keeps the reason an earlier one heard: the give-up line, the one line an
        operator reads, blamed a slow link for a camera that refused the password."""
        probe_s = self._time_left(down_since)
        why = self._cannot_connect(probe_s)
        if probe_s < self.params.timeout_s and NO_ANSWER in why and before.startswith("cannot connect: "):
            return before
        return why

    def _cannot_connect(self, timeout_s: float) -> str:
        """``cannot connect``, with the server's reason where the probe gets one. The probe only
        explains: an answer it did not foresee must not end the reconnecting."""
        try:
            reason = "" if self._stopping.is_set() else why_not_open(self.params.url, timeout_s)
        except Exception:  # noqa: BLE001  said as the plain "cannot connect" it explains
            reason = ""
        return f"cannot connect: {reason}" if reason else "cannot connect"

    def _given_up(self, down_since: float, failures: int, why: str) -> bool:
        """Fail the stage if the stream has been down ``give_up_after_s``: checked before each
        wait and after it, so that the last wait ends at that time rather than a backoff later."""
        down = time.monotonic() - down_since
        if not self.params.give_up_after_s or down < self.params.give_up_after_s:
            return False
        self._fail(f"no stream for {down:.0f} s after {failures} attempt{'s' if failures > 1 else ''}; giving up "
                   f"(give_up_after_s={self.params.give_up_after_s:g}); the last: {why}")
        return True

    def _pump(self, cap: cv2.VideoCapture, failures: int, quiet: dict[str, float], why: str) -> int:
        """Read the connection's frames until it fails; how many. A return not said while the
        stream flapped (``_say_back``) is said once the connection has lasted ``STABLE_S``: the
        last word was otherwise its last failure, for as long as it then streamed."""
        frames = 0
        unsaid_since: float | None = None
        rate = cap.get(cv2.CAP_PROP_FPS)  # the stream's, as this connection reports it
        reads = 0
        while not self._stopping.is_set():
            asked = time.monotonic()
            ok, image = cap.read()
            if not ok:
                return frames
            reads += 1
            now = time.monotonic()
            if now - asked >= self.params.timeout_s:
                # the read ended by its timeout: a stream frozen or gone with its connection still
                # open, and this a frame the decoder held from before, which was dated a timeout
                # late. The connection is given up at once: a decoder that reorders (B-frames,
                # x264's default) let out the frames it still held at the next reads, dated two
                # timeouts late, as if the camera were back, and the outage said twice. Not at
                # its first read, which holds no frame from before: a camera of 1 frame a second
                # and a long keyframe interval is that slow to start, and streamed on after it
                self.dropped += 1
                if reads > 1:
                    return frames
                continue
            last, self._last_frame_at = self._last_frame_at, now
            with self._cond:
                self.dropped += self._latest is not None
                self._latest = (image, self._last_frame_at, rate)
                self._cond.notify()
            if not frames:
                self._streamed_over = self._transport
                if failures and not self._say_back(failures, last, quiet, why):
                    unsaid_since = now
            elif unsaid_since is not None and now - unsaid_since >= STABLE_S:
                self._log(f"connected again after {failures + 1} attempts, and streaming for {STABLE_S:g} s (its "
                          f"returns while connections kept dropping were said every {QUIET_LOG_S:g} s)")
                unsaid_since = None
            frames += 1
        return frames

    def _fail(self, message: str, kind: type[Exception] = InputError) -> None:
        with self._cond:
            self._error, self._error_kind = message, kind
            self._cond.notify()

    def frames(self) -> Iterator[Packet]:
        """The newest frame as it comes; while none has come for ``timeout_s``, an outage packet
        every ``OUTAGE_EVERY_S`` (``fer_pipe.messages.Packet.outage``), so that tracks and episodes end
        while the camera is down rather than at its return."""
        source = self.source_id
        index = 0
        # monotonic: the last frame passed on, or the last outage said; a camera that sends no
        # frame from the start is down from timeout_s after it, numbered -1 (no frame yet)
        last_at = time.monotonic() + self.params.timeout_s - OUTAGE_EVERY_S
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._latest is not None or self._error, STOP_POLL_S)
                taken, self._latest = self._latest, None
            if taken is not None:
                image, captured, rate = taken
                yield Packet(source, index, wall_time(captured), image, captured=captured, extra={"fps": rate})
                index += 1
                last_at = captured + self.params.timeout_s - OUTAGE_EVERY_S
            elif self._error:
                raise self._error_kind(f"rtsp {self._where}: {self._error}")
            elif self.stop_requested():
                return  # the run is stopping while the camera is down: end the stream now
            elif time.monotonic() - last_at >= OUTAGE_EVERY_S:
                last_at = time.monotonic()
                yield outage(source, index - 1, wall_time(last_at))

    @classmethod
    def closing_s(cls, params: RtspParams) -> float:
        return 2 * params.timeout_s + 1  # the reader thread may be in a read, or a connect and a probe

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=self.closing_s(self.params))
        _SHARED.closed(self)
