"""The body of one stage process: open the stage, move packets, report to the parent, close.

The parent learns everything through the control queue, in the messages of ``control``: that
the stage opened, a source's length, that its stream ended (done) or a SIGTERM stopped it, that
it is closing, and failures (bad input found mid-stream, or any other).
SIGTERM from the parent raises ``Terminated`` wherever the stage is (``stop_signals``), so
``close`` still runs and files are flushed; what the stage passes on goes out through
``emitter``.
"""
from __future__ import annotations

import contextlib
import ctypes
import selectors
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from ctypes import c_double, c_longlong
from dataclasses import dataclass, replace
from functools import cached_property
from multiprocessing.queues import Queue
from multiprocessing.reduction import ForkingPickler

import numpy as np

from . import frames, hangup, oom, ring_lease
from .control import Closing, Done, Failed, FailedDraining, Length, Opened, Stopped
from .emitter import Emitter, Outbox, StageQueue
from .errors import PLUGIN_BUGS, UserError, said
from .graph import StageSpec
from .lifecycle import PacketRules, SourceFrames, finish_stage, open_stage
from .messages import EndOfStream, Packet, Sequenced, read_only
from .ordering import Reorder
from .run_flag import RunFlag
from .stage import Source, Stage, StageFailure, StopRun, reader_gone
from .stage_calls import close_stage, idle_of, length_of
from .stats import StageStats
from .stop_signals import (HOLD, STOP_SIGNALS, Terminated, follow_parent, ignore_sigterm, runner_gone, sigterm_seen,
                           terminate)


OPEN_POLL_S = 0.01
"""How often a live source waiting for the other stages to open looks whether they are, or the run stops."""


@dataclass
class Wiring:
    """Everything a stage process is handed by the runner (picklable for ``spawn``).

    ``process`` is this process's name (the stage's, or ``name[i]`` for one of its workers);
    ``inboxes`` holds one queue per process feeding it, each of which ends with one
    ``EndOfStream``. The stage's spec travels pickled on its own (``spec_pickled``, by the pickler
    multiprocessing sends a process its arguments with), loaded by
    ``spec`` in ``stage_main`` once the process's stdout is its stderr: loading it imports a
    plug-in's module, whose print there went into a CSV on stdout.
    """

    spec_pickled: bytes
    process: str
    inboxes: list[StageQueue]
    outboxes: list[Outbox]
    control: Queue
    stop: RunFlag
    all_open: RunFlag  # set once every stage process's stage is open
    progress: c_longlong
    dropped: c_longlong
    busy_since: c_double
    down_since: c_double
    ring_slots: int
    run_id: str  # names the run's frame rings (``ring_lease``)

    @cached_property
    def spec(self) -> StageSpec:
        return ForkingPickler.loads(self.spec_pickled)  # multiprocessing's own, as it sends the rest


def _finished(stage: Stage, w: Wiring) -> list[Packet]:
    """What ``finish`` returns. Its failure is said, and the stream still ended, so that what the
    stage passed on before drains into the outputs: stopping the stages after it lost 0 to 5 of
    ten such frames, by chance; what it held is lost."""
    try:
        held = finish_stage(stage)
        if held and w.spec.workers > 1:  # each copy's would come once per worker, out of order
            raise TypeError(f"finish returned {len(held)} packet(s), but a stage run with workers keeps "
                            "nothing between packets, so its finish returns nothing")
        return held
    except BrokenPipeError:
        raise
    except UserError as exc:
        w.control.put(FailedDraining(w.process, str(exc), exc.exit_code, False, traceback.format_exc()))
    except PLUGIN_BUGS as exc:  # said as "while finishing", as open's and close's are
        if sigterm_seen():  # a library's own error made of the stop's Terminated: the stage was stopped
            raise
        w.control.put(FailedDraining(w.process, f"while finishing: {said(exc)}", 1, False, traceback.format_exc()))
    return []


def _opened(w: Wiring) -> Stage:
    """The stage built from its spec and opened. The parent is told by the caller, once the
    stage is its to close: a SIGTERM inside that put left an opened stage unclosed (a video
    writer's empty file stayed)."""
    built = w.spec.build()
    # a SIGTERM held back while a sink handles a frame asks for a stop too (the one a stage
    # gets when the runner dies, from ``follow_parent``, says so in no other way)
    built.stop_requested = lambda: w.stop.is_set() or HOLD.pending is not None
    built.waiting_outside = lambda: setattr(w.busy_since, "value", time.monotonic())
    w.busy_since.value = time.monotonic()  # an open that never returns (a server that never answers) is a stall
    open_stage(built)
    return built


def _close(stage: Stage, w: Wiring, ended: bool) -> None:
    """Close the stage, watched as a packet is, with the time the stage says it may take: a close
    that never returns would otherwise hold the run for ever after everything else had ended."""
    w.control.put(Closing(w.process))
    w.busy_since.value = time.monotonic() + w.spec.closing_s
    try:
        close_stage(stage)
    except UserError as exc:
        w.control.put(_close_failed(w.process, f"while closing: {exc}", traceback.format_exc(), exc.exit_code, ended))
    except BaseException as exc:
        w.control.put(_close_failed(w.process, f"while closing: {said(exc)}", traceback.format_exc(), 1, ended))
    finally:
        w.busy_since.value = 0.0


def _close_failed(process: str, message: str, trace: str, exit_code: int, ended: bool) -> Failed | FailedDraining:
    """A failure in ``close``. Once the stage has ended its stream, everything it passed on is on
    its way, and the stages after it and beside it go on draining it: a close that failed
    (an upload, a summary file) stopped them and lost the frames they had not written yet."""
    if ended:
        return FailedDraining(process, message, exit_code, False, trace)
    return Failed(process, message, trace, exit_code)


PR_SET_NAME = 15
"""prctl's option that names the calling thread, the main one's name being the process's."""


def shown_name(process: str) -> bytes:
    """The process's name in ps, top and the kernel's out-of-memory log: ``fp:detector[1]``, cut
    to the kernel's 15 bytes at a character's end: cut inside one, a stage named in another
    script (``Kamera_東京``) made its name bytes no UTF-8 reader of /proc takes (CI s63)."""
    return f"fp:{process}".encode()[:15].decode(errors="ignore").encode()


def _shown_as(process: str) -> None:
    """Every stage process was python3.11, a child of one forkserver, so an operator could not
    tell which stage took the memory or the CPU (s62e 8)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, shown_name(process), 0, 0, 0)


def stage_main(w: Wiring) -> None:
    """The body of every stage process: open the stage, run it as a source or a consumer, then
    always close it and say to the runner how it ended (done, failed, stopped), whatever ended
    it: a stage process that dies without a word leaves the runner only its exit code."""
    _shown_as(w.process)
    frames.allow_open_files()
    oom.first_for_the_oom_killer()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, terminate)
    ttys = hangup.terminal_fds()
    if not hangup.ignored():  # the parent drains on SIGHUP, as on SIGINT; this process only leaves the terminal
        signal.signal(signal.SIGHUP, lambda *_: hangup.to_devnull(ttys))
    hangup.guard_standard_streams(ttys)  # a terminal or a log reader gone with no SIGHUP: see GuardedStream
    # A stage's print (a plug-in's debugging line, a library's banner) is a log line: the run's
    # standard output may be a CSV another program reads (csv.path=/dev/stdout, which the csv
    # sink opens by name, so fd 1 is left as it is), and a print there broke its rows.
    sys.stdout = sys.stderr
    name = w.process
    stats = StageStats(name)
    stage: Stage | None = None
    ring: frames.FrameRing | None = None
    started = time.monotonic()
    ended = False  # the stage's stream ended and its Done was sent

    def summary() -> dict:
        """May run twice (a SIGTERM inside the put of "done"), so it adds to a copy, not to ``stats``."""
        stats.wall_s = time.monotonic() - started
        stats.cpu_s = time.process_time()
        out = stats.summary()
        if stage is not None:
            out["dropped"] += stage.dropped
        w.dropped.value = out["dropped"]  # the status line's last figure is the table's
        return out
    ring_lease.hold(w.run_id)
    try:
        follow_parent(w.spec.closing_s, lambda: ring_lease.remove_orphaned(w.run_id), w.stop.is_set)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # a SIGTERM held since the start stops it here
        stage = _opened(w)  # closed only after a successful open, as the stage contract says
        w.busy_since.value = 0.0
        w.control.put(Opened(w.process))
        if isinstance(stage, Source):
            length = length_of(stage)
            ring = frames.FrameRing(ring_lease.segment_prefix(w.run_id, w.spec.name), w.ring_slots, length,
                                    stage.live)
            w.control.put(Length(name, length))
            emitter = Emitter(w.outboxes, stage.live, stats)
            _run_source(stage, ring, emitter, w, stats)
            kept_ends: list[Packet] = []
        else:
            if w.outboxes:  # a picture the stage makes (a blur) goes on through shared memory, as a frame does;
                # its slots made as they are reached: reserved at the first picture, they needed more of
                # /dev/shm than a run of a few frames in Docker's 64 MiB has (s66d 2)
                ring = frames.FrameRing(ring_lease.segment_prefix(w.run_id, w.process), w.ring_slots, 1,
                                        live=any(box.drop_oldest for box in w.outboxes))
            emitter = Emitter(w.outboxes, False, stats, w.spec.name if w.spec.on_error == "skip" else None, ring)
            kept_ends = _run_consumer(stage, emitter, w, stats)
        try:
            w.busy_since.value = time.monotonic()  # finish is watched for a stall as a packet is
            held = _finished(stage, w)
            w.busy_since.value = 0.0
            emitter.emit([*held, *kept_ends])
            w.dropped.value = stats.dropped + stage.dropped  # what the held packets' emit dropped, for the last line
        except BrokenPipeError:
            if not reader_gone(stage):
                raise  # a sink's reader left (see StopRun): what is held has nowhere to go
        emitter.end()
        w.control.put(Done(name, summary()))
        ended = True
    except Terminated:
        _report_stopped(w, summary())
    except UserError as exc:
        # the runner's SIGTERM for another stage's failure must not cut this report short
        ignore_sigterm()
        w.control.put(Failed(name, str(exc), traceback.format_exc(), exc.exit_code))  # --debug shows it
    except BaseException as exc:
        ignore_sigterm()
        if sigterm_seen():
            # A library turned the Terminated raised inside it into its own error (an import cut
            # off says "ImportError: initialization failed"): the stage was stopped, not failed.
            _report_stopped(w, summary())
        else:
            message = str(exc) if isinstance(exc, StageFailure) else said(exc)
            w.control.put(Failed(name, message, traceback.format_exc(), 1))
    finally:
        try:  # closing is not interrupted a second time
            ignore_sigterm()
        except Terminated:  # the first SIGTERM, landing as the call began: it skipped the close (s60b 3)
            pass
        if stage is not None:
            _close(stage, w, ended)
        if ring is not None:
            ring.close()
        frames.detach_all()
        if runner_gone():
            ring_lease.remove_orphaned(w.run_id)
        sys.stdout.flush()


def _report_stopped(w: Wiring, summary: dict) -> None:
    """Say the stage stopped on SIGTERM. The signal may have landed inside a put, between the
    queue starting its feeder thread and registering the sentinel that ends it: the exit would
    then wait for ever on that thread. The consumers are being stopped too; what the queues
    hold is not needed."""
    for box in w.outboxes:
        for q in box.queues:
            q.cancel_join_thread()
    w.control.put(Stopped(w.process, summary))


def _run_source(stage: Source, ring: frames.FrameRing, emitter: Emitter, w: Wiring,
                stats: StageStats) -> None:
    last_captured, down = 0.0, stage.live
    if down:  # down from the run's start (the runner sets down_since), and waiting for the others
        # Frames a camera gives while the stages after it still open (a model loading) would wait
        # in queues nobody takes yet, and reach the sinks in one burst bigger than a queue: every
        # live run began with "sink 'annotated' fell behind the live source" and its first frames
        # dropped. It takes its first frame once all are open (an rtsp source's reader
        # keeps only the newest meanwhile, as it does while the pipeline is busy).
        while not w.all_open.is_set() and not w.stop.is_set():
            time.sleep(OPEN_POLL_S)
    reader = SourceFrames(stage)
    while not w.stop.is_set():
        t0 = time.perf_counter()
        try:
            packet = reader.next()
            if packet is None:
                break
            if isinstance(packet.image, np.ndarray):  # a ring that cannot grow mid-stream is found here too
                packet.image = ring.put(packet.image)
        except StopRun:  # the source ends the whole run, as a window's q does: the other sources stop
            w.stop.set()  # too, and what it read drains (it was said "failed: StopRun", exit 1)
            break
        except PLUGIN_BUGS as exc:  # a capture library's sys.exit too, as run_graph's (s63a 4)
            if not stats.items or sigterm_seen():  # a library's own error made of the stop's Terminated: a stop
                raise
            # Found mid-stream (a truncated file, a camera given up on, a plug-in source's own
            # error): what was read still drains through the graph into the outputs; the runner
            # fails the run with this line after, and at once stops the other sources of a live one.
            message, code = (str(exc), exc.exit_code) if isinstance(exc, UserError) else (said(exc), 1)
            w.control.put(FailedDraining(w.process, message, code, stage.live, traceback.format_exc()))
            break
        if packet.outage:  # no frame: not counted as one, and the stages after it learn of it
            if not down:  # the status line says the source is down, since its last frame
                w.down_since.value, down = last_captured or time.monotonic(), True
            emitter.emit((packet,))
            w.dropped.value = stats.dropped + stage.dropped  # a camera's reads that timed out while down
            continue
        if down:  # a local flag: the shared value is not read on every frame
            w.down_since.value, down = 0.0, False
        reader.went_on(packet)
        if not packet.captured:
            packet.captured = time.monotonic()
        last_captured = packet.captured
        stats.record(time.perf_counter() - t0)
        emitter.emit((packet,))
        w.progress.value += 1
        w.dropped.value = stats.dropped + stage.dropped
    if not w.stop.is_set():  # a run's stop ends every source: their finish says it
        emitter.emit(reader.end())


def _receive(inboxes: list[StageQueue], idle_s: float | None = None) -> Iterator[Packet | Sequenced | None]:
    """What the upstream processes send, as it comes, until each has sent its end of stream;
    None each time ``idle_s`` passes with nothing (never, when it is None).

    With several queues one selector watches their pipe ends (``_reader``, as
    ``concurrent.futures`` waits on its result queue), so none waits behind another that is
    empty; with one left (the usual chain of stages) a poll of its pipe end is the wait. A
    ready queue always has an item to get: a live producer takes its oldest item back only
    from a full queue, and puts a new one straight after.
    """
    open_ = {q._reader: q for q in inboxes}
    with selectors.DefaultSelector() as selector:
        for reader in open_:
            selector.register(reader, selectors.EVENT_READ)
        while open_:
            if len(open_) > 1:
                ready = [key.fileobj for key, _ in selector.select(idle_s)]
            else:
                ready = [reader for reader in open_ if idle_s is None or reader.poll(idle_s)]
            if not ready:
                yield None
            for reader in ready:
                item = open_[reader].get()
                if isinstance(item, EndOfStream):
                    del open_[reader]
                    selector.unregister(reader)
                else:
                    yield item


def _run_consumer(stage: Stage, emitter: Emitter, w: Wiring, stats: StageStats) -> list[Packet]:
    """Read until every upstream process has ended. A worker of several answers each numbered
    item with one numbered item; a single process puts numbered items back in order first.
    Returns the end packets kept for after the stage's finish (``stage_calls.keeps_ends``)."""
    handle = _Handler(stage, w, stats)
    reorder = Reorder()
    worker = w.spec.workers > 1
    stopped_at: dict[str, int] = {}  # per numbering (one per input), the first item this worker had after its stop
    published = 0  # the dropped count last put in the shared counter from here
    for item in _receive(w.inboxes, idle_of(stage)):
        if item is None:
            handle.idle()
        elif not isinstance(item, Sequenced):
            emitter.emit(handle(item))
        elif worker:
            packets = [out for p in item.packets for out in handle(p)]
            if handle.rules.stopped:  # each input numbers its own items: one number cut the first alone
                stopped_at.setdefault(item.key, item.number)
            # a stop marked upstream holds through a chain of stages with workers
            emitter.emit_sequenced(replace(item, packets=packets, stopped_at=item.stopped_at
                                           if item.stopped_at is not None else stopped_at.get(item.key)))
        else:
            for packet in reorder.add(item):
                emitter.emit(handle(packet))
            _count_discarded(reorder, stage, w, stats)
        if stats.dropped != published:
            # frames an emit dropped from a full live queue, counted after the handler set the
            # shared count: the last emit's never reached the status line at the end
            published = stats.dropped
            w.dropped.value = stats.dropped + stage.dropped
    for packet in reorder.flush():
        emitter.emit(handle(packet))
    _count_discarded(reorder, stage, w, stats)
    return handle.rules.ends()


def _count_discarded(reorder: Reorder, stage: Stage, w: Wiring, stats: StageStats) -> None:
    """What the reordering held back after a worker's stop, in the stage's dropped count."""
    if reorder.discarded:
        stats.dropped += reorder.discarded
        reorder.discarded = 0
        w.dropped.value = stats.dropped + stage.dropped


class _Handler:
    """One packet through the stage, with the runner's bookkeeping around the rules of a run."""

    def __init__(self, stage: Stage, w: Wiring, stats: StageStats) -> None:
        self.stage, self.w, self.stats = stage, w, stats
        self.sink = not w.outboxes
        self.rules = PacketRules(stage, w.spec.name, stats, w.spec.on_error == "skip",
                                 [] if w.spec.workers == 1 else None, w.stop.set)
        self.fell_behind = False  # said once; frames dropped at its output (a slow sink) are counted beside

    def __call__(self, item: Packet) -> list[Packet]:
        if self.rules.stopped:
            self.stats.dropped += not item.outage  # this stage ended the run: what is in flight drains, counted
            return []
        # a sink writes and counts a frame whole or not at all: SIGTERM waits for it
        with HOLD if self.sink else contextlib.nullcontext():
            return self._outage(item) if item.outage else self._frame(item)

    def idle(self) -> None:
        if self.rules.stopped:
            return
        # watched as a packet is: a hook that hangs, or spins (the between-packets rule takes a
        # process that runs for one starved of CPU), held the run for ever
        self.w.busy_since.value = time.monotonic()
        try:
            self.stage.idle()
        except StopRun:
            self.rules.stop()
        except UserError:
            raise
        except PLUGIN_BUGS as exc:  # on_error: skip is about packets: there is none to skip here
            raise StageFailure(f"while idle: {said(exc)}") from exc
        finally:
            self.w.busy_since.value = 0.0

    def _frame(self, item: Packet) -> list[Packet]:
        stage, w, stats = self.stage, self.w, self.stats
        w.busy_since.value = time.monotonic()
        t0 = time.perf_counter()
        if isinstance(item.image, np.ndarray):  # a picture a stage before made, pickled where its ring had no
            item.image = read_only(item.image)  # room: read-only, as the ring's are and run_stage's and a batch's
        try:
            views, ref = frames.views_made(), item.image  # the stage may replace the image (a copy of its pixels)
            skipped = stats.skipped
            out = self.rules(item)
            # a result made from pixels overwritten meanwhile is not passed on; a frame the stage
            # skipped or stopped on made none (counted dropped too, and blamed on a stage before)
            if (not self.sink and not self.rules.stopped and stats.skipped == skipped
                    and frames.views_made() != views and isinstance(ref, frames.FrameRef)):
                ref.check()
        except frames.StaleFrameError as exc:
            if not exc.live:  # a file's frame a stage kept without its pixels: no drop
                raise StageFailure(f"on {item.source} frame {item.index}: {exc}") from exc
            # Only a live source writes on without waiting: a stage starved long enough (an
            # overloaded machine) finds its frame's ring slot reused, before or while it reads
            # it. The frame is too old to matter; it is dropped and counted like the frames the
            # source drops. (A sink has written it by then; what it wrote stays counted.)
            if not self.fell_behind:
                self.fell_behind = True
                print(f"fer-pipe: stage {w.spec.name!r} fell behind a live source; frames "
                      "overwritten before or while it read them are dropped (it or a stage before it is slower "
                      "than the source, as any is behind a video file given as a camera; where none is, a stage "
                      f"before it held them: {frames.KEEP_PIXELS})", file=sys.stderr)
            stats.dropped += 1
            out = []
        w.busy_since.value = 0.0
        stats.record(time.perf_counter() - t0)
        w.progress.value += 1
        w.dropped.value = stats.dropped + stage.dropped
        if self.sink and item.captured:  # a packet a stage's finish made anew has no capture time
            stats.latencies.append(time.monotonic() - item.captured)
        return out

    def _outage(self, item: Packet) -> list[Packet]:
        """A live source's outage: no frame, so neither counted nor timed as one."""
        self.w.busy_since.value = time.monotonic()  # a hook that hangs is a stall, as a packet is
        try:
            return self.rules(item)
        finally:
            self.w.busy_since.value = 0.0
