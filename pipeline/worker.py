"""The body of one stage process: open the stage, move packets, report to the parent, close.

The parent learns everything through the control queue, in the messages of ``control``: that
the stage opened, a source's length and shared-memory segments, that it is closing, and how it
ended (done, stopped by SIGTERM, bad input found mid-stream, or failed).
SIGTERM from the parent raises ``Terminated`` wherever the stage is (a sink first finishes
the frame it is in), so ``close`` still runs and files are flushed; SIGINT and SIGHUP are left
to the parent, which drains the graph instead.
"""
from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import multiprocessing.queues
import os
import queue
import selectors
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from multiprocessing.connection import wait
from typing import Any

import numpy as np

from . import frames, hangup
from .config import MAX_QUEUE
from .control import Closing, Done, Failed, InputFailed, Length, Opened, Segment, Stopped
from .errors import UserError
from .graph import StageSpec
from .messages import EndOfStream, Packet, Sequenced
from .ordering import Reorder
from .stage import Sink, Source, Stage, StageFailure, StopRun, packets_of, said, say_skipped
from .stats import StageStats

PR_SET_PDEATHSIG = 1
RESEND_S = 0.5
"""How often a stop by SIGTERM is said again, to a stage that has not ended (see ``_follow_parent``
and the runner)."""


class Terminated(BaseException):
    """Raised in a stage process on SIGTERM: unwinds to ``close`` like an exception would."""


UNSENT: list[tuple[Any, Exception]] = []
"""Items this process's queues could not send, and why, as their feeder threads found them."""


class StageQueue(multiprocessing.queues.Queue):
    """A queue between stage processes whose sender learns of an item it could not send.

    multiprocessing pickles an item in a feeder thread after ``put`` returned; one that does
    not pickle (an open file a plug-in put in ``packet.extra``) was printed there as a bare
    traceback and dropped: a frame missing from the CSV, and exit 0.
    """

    @staticmethod
    def _on_queue_feeder_error(e: Exception, obj: object) -> None:
        UNSENT.append((obj, e))


def _not_sent(exc: Exception) -> str:
    return f"cannot pass the packet on: {said(exc)} (what a stage puts in packet.extra or a face's extra must pickle)"


@dataclass
class Outbox:
    """This process's queues into one consumer stage: one, or one per worker when it runs several.

    Nobody else puts into them, so a live sender may take its oldest item out of a full one.
    ``key`` names the numbering of what this sender deals to a consumer with several workers.
    ``drop_oldest``: so does any sender into it, because it feeds a sink that live sources alone
    reach: a sink that falls behind (a window on a frozen display) then loses frames of its own,
    where it held up the stage feeding it and so its sibling sinks (the CSV stopped with the
    window).
    """

    queues: list[Any]
    key: str
    drop_oldest: bool = False


@dataclass
class Wiring:
    """Everything a stage process is handed by the runner (picklable for ``spawn``).

    ``process`` is this process's name (the stage's, or ``name[i]`` for one of its workers);
    ``inboxes`` holds one queue per process feeding it, each of which ends with one
    ``EndOfStream``.
    """

    spec: StageSpec
    process: str
    inboxes: list[Any]
    outboxes: list[Outbox]
    control: Any
    stop: Any
    progress: Any
    dropped: Any
    busy_since: Any
    ring_slots: int
    ring_prefix: str


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
"""Blocked while the runner starts the stage processes, which inherit the mask: each unblocks
them once its own handlers are in, so a signal sent to the process group meanwhile neither kills
a half-started stage nor is lost."""


class _SigtermHold:
    """While held, a SIGTERM is noted and raised as ``Terminated`` when the hold ends: a sink
    writes and counts a frame whole or not at all.

    Not ``pthread_sigmask``, which blocks the signal in the calling thread only: the kernel then
    hands it to another thread of the process (numpy's, a queue's feeder), and Python runs the
    handler in the main thread at its next line anyway, inside the frame.
    """

    def __init__(self) -> None:
        self.active = False
        self.pending: int | None = None

    def __enter__(self) -> None:
        self.active = True

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self.active = False
        if self.pending is not None and kind is None:
            raise Terminated(self.pending)


_HOLD = _SigtermHold()
_sigterm_seen = False
_sigterm_ignored = False


def _terminate(signum: int, frame: object) -> None:
    """The first SIGTERM stops the stage; later ones are ignored, so that reporting and closing
    are not cut short. They do come: a SIGTERM to the whole process group (``systemctl stop``)
    reaches the stage, and the runner, or ``_follow_parent`` once the runner is gone, says it
    again every RESEND_S until the stage ends (a spawned stage also gets the kernel's
    parent-death signal)."""
    global _sigterm_seen
    if _sigterm_ignored:
        return
    _ignore_sigterm()
    _sigterm_seen = True
    if _HOLD.active:
        _HOLD.pending = signum
        return
    raise Terminated(signum)


def _ignore_sigterm() -> None:
    """From here on a SIGTERM does nothing. The handler stays and returns, rather than being
    replaced by SIG_IGN: CPython prints "Signal 15 ignored due to race condition" with a
    traceback when a SIGTERM that came while a Python handler was in place finds SIG_IGN by the
    time Python runs it (seen after the runner was killed, with two SIGTERMs)."""
    global _sigterm_ignored
    _sigterm_ignored = True


def _first_time(seen: dict[tuple[str, int], None], key: tuple[str, int], limit: int) -> bool:
    """Whether ``key`` is new to ``seen``, a memory of the last ``limit`` keys (a dict keeps their order)."""
    if key in seen:
        return False
    seen[key] = None
    if len(seen) > limit:
        del seen[next(iter(seen))]
    return True


class _Emitter:
    """Puts packets on every consumer's queue: blocking for finite sources; for live ones,
    dropping the oldest item of a full queue.

    A consumer with several workers gets each packet numbered, in the queue of worker
    ``number % workers``: dealing round-robin into bounded queues keeps the fastest worker
    within a queue's length of the slowest, which bounds what the reordering must hold.
    """

    def __init__(self, outboxes: list[Outbox], live: bool, stats: StageStats, skip_as: str | None = None) -> None:
        """``skip_as``: the stage's name where its config says ``on_error: skip``."""
        self.outboxes = outboxes
        self.live = live
        self.stats = stats
        self.skip_as = skip_as
        self._unsent: dict[tuple[str, int], None] = {}  # packets counted skipped lately, oldest first
        self._numbers = [0] * len(outboxes)
        self._dropped: dict[tuple[str, int], None] = {}  # the frames counted dropped lately, oldest first
        self._behind: set[str] = set()  # the outboxes into sinks that have dropped, said once each
        # a frame leaves every queue within a queue's length of newer frames put in that queue;
        # a consumer with N workers gets every Nth frame in each of its queues
        self._remember = MAX_QUEUE * max((len(box.queues) for box in outboxes), default=1)

    def check_sent(self) -> None:
        """What the queues' feeder threads could not send: a StageFailure naming the first
        packet, or, with ``on_error: skip``, each skipped and said as a packet that raised is.
        A numbered item (for a stage with several workers) is not skipped: the stage that puts
        the numbers back in order would wait for it."""
        while UNSENT:
            item, exc = UNSENT.pop(0)
            if self.skip_as is None or not isinstance(item, Packet):
                packets = item.packets if isinstance(item, Sequenced) else [item] if isinstance(item, Packet) else []
                where = f"on {packets[0].source} frame {packets[0].index}: " if packets else ""
                raise StageFailure(where + _not_sent(exc))
            if _first_time(self._unsent, (item.source, item.index), self._remember):  # not once per consumer
                self.stats.skipped += 1
                say_skipped(self.skip_as, item, exc, self.stats.skipped)

    def emit(self, packets: Iterable[Packet]) -> None:
        self.check_sent()
        for packet in packets:
            for i, box in enumerate(self.outboxes):
                if len(box.queues) == 1:
                    self._put(box, box.queues[0], packet)
                else:
                    number = self._numbers[i]
                    self._numbers[i] = number + 1
                    self._put(box, box.queues[number % len(box.queues)], Sequenced(box.key, number, [packet]))

    def emit_sequenced(self, item: Sequenced) -> None:
        """A worker's answer to one numbered item: passed on with its number, to be put in order."""
        self.check_sent()
        for box in self.outboxes:
            self._put(box, box.queues[item.number % len(box.queues)], item)

    def _put(self, outbox: Outbox, box: Any, item: Packet | Sequenced) -> None:
        if self.live or outbox.drop_oldest:
            self._put_dropping_oldest(outbox, box, item)
        else:
            box.put(item)

    def _put_dropping_oldest(self, outbox: Outbox, box: Any, item: Packet | Sequenced) -> None:
        while True:
            try:
                box.put_nowait(item)
                return
            except queue.Full:
                try:
                    dropped = box.get_nowait()
                except queue.Empty:
                    time.sleep(0.0005)  # the queue's feeder thread has not flushed yet
                    continue
                if not self.live and outbox.key not in self._behind:  # a sink fell behind: say which
                    self._behind.add(outbox.key)
                    sender, _, sink = outbox.key.partition(">")
                    print(f"fer-pipe: sink {sink!r} fell behind the live source; the oldest frames waiting for "
                          f"it are dropped (counted in the dropped column of {sender!r})", file=sys.stderr)
                if isinstance(dropped, Sequenced):  # nobody must wait for its number
                    item = replace(item, skipped=(*item.skipped, *dropped.skipped, dropped.number))
                    for packet in dropped.packets:
                        self._count_drop(packet)
                else:
                    self._count_drop(dropped)

    def _count_drop(self, packet: Packet) -> None:
        """A frame dropped from several consumers' queues is one frame dropped."""
        if _first_time(self._dropped, (packet.source, packet.index), self._remember):
            self.stats.dropped += 1

    def end(self) -> None:
        """Put the end of stream, then wait until every item is sent (the consumers read on to
        that end), so that one that could not be is a failure before the stage says it is done."""
        for box in self.outboxes:
            for q in box.queues:
                q.put(EndOfStream())
        for box in self.outboxes:
            for q in box.queues:
                q.close()
                q.join_thread()
        self.check_sent()


def _follow_parent() -> None:
    """Be stopped as by a SIGTERM when the runner dies, even by SIGKILL or the OOM killer: a
    stage blocked on a queue would otherwise wait for ever, orphaned.

    A thread waits on the parent's sentinel, a pipe the runner holds open and so ready once it
    is gone, then signals the main thread (which unwinds through ``close``) until it stops. A
    forked stage's parent is the forkserver, which lives as long as its children, so the pipe is
    its only way. A spawned stage's parent is the runner, and the kernel's parent-death signal
    also covers a runner whose process forked a child that holds the pipe too (a host's
    ``multiprocessing`` pool beside the Python API).
    """
    parent = mp.parent_process()
    if parent is None:
        return
    if sys.platform.startswith("linux") and os.getppid() == parent.pid:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent.pid:  # it died before prctl took effect: stop when unblocked
            signal.raise_signal(signal.SIGTERM)
    main = threading.main_thread().ident

    def watch() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # the group's signals are the main thread's
        wait([parent.sentinel])
        while True:  # again and again, as the runner sends them: CPython 3.11 can leave one unhandled
            signal.pthread_kill(main, signal.SIGTERM)
            time.sleep(RESEND_S)

    threading.Thread(target=watch, name="fer-pipe:follow-parent", daemon=True).start()


def stage_main(w: Wiring) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _terminate)
    ttys = hangup.terminal_fds()
    if not hangup.ignored():  # the parent drains on SIGHUP, as on SIGINT; this process only leaves the terminal
        signal.signal(signal.SIGHUP, lambda *_: hangup.to_devnull(ttys))
    hangup.guard_terminal_streams(ttys)  # a terminal gone with no SIGHUP: see TerminalStream
    name = w.process
    stats = StageStats(name)
    stage: Stage | None = None
    ring: frames.FrameRing | None = None
    started = time.monotonic()

    def summary() -> dict:
        """May run twice (a SIGTERM inside the put of "done"), so it adds to a copy, not to ``stats``."""
        stats.wall_s = time.monotonic() - started
        stats.cpu_s = time.process_time()
        out = stats.summary()
        if stage is not None:
            out["dropped"] += stage.dropped
        return out
    try:
        _follow_parent()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # a SIGTERM held since the start stops it here
        built = w.spec.build()
        # a SIGTERM held back while a sink handles a frame asks for a stop too (the one a stage
        # gets when the runner dies, from ``_follow_parent``, says so in no other way)
        built.stop_requested = lambda: w.stop.is_set() or _HOLD.pending is not None
        built.waiting_outside = lambda: setattr(w.busy_since, "value", time.monotonic())
        w.busy_since.value = time.monotonic()  # an open that never returns (a server that never answers) is a stall
        try:
            built.open()
        except UserError:
            raise
        except Exception as exc:  # said as "while opening", as a failure in close says "while closing"
            raise StageFailure(f"while opening: {said(exc)}") from exc
        w.busy_since.value = 0.0
        w.control.put(Opened(name))
        stage = built  # closed only after a successful open, as the stage contract says
        if isinstance(stage, Source):
            ring = frames.FrameRing(w.ring_prefix, w.ring_slots,
                                    lambda seg: w.control.put(Segment(name, seg)))
            w.control.put(Length(name, stage.length()))
            emitter = _Emitter(w.outboxes, stage.live, stats)
            _run_source(stage, ring, emitter, w, stats)
        else:
            emitter = _Emitter(w.outboxes, False, stats, w.spec.name if w.spec.on_error == "skip" else None)
            _run_consumer(stage, emitter, w, stats)
        try:
            w.busy_since.value = time.monotonic()  # finish is watched for a stall as a packet is
            try:
                held = packets_of(stage.finish(), "finish")
            except (UserError, BrokenPipeError):
                raise
            except Exception as exc:  # said as "while finishing", as open's and close's are
                raise StageFailure(f"while finishing: {said(exc)}") from exc
            w.busy_since.value = 0.0
            emitter.emit(held)
        except BrokenPipeError:
            if not isinstance(stage, Sink):
                raise  # a sink's reader left (see StopRun): what is held has nowhere to go
        emitter.end()
        w.control.put(Done(name, summary()))
    except Terminated:
        _report_stopped(w, summary())
    except UserError as exc:
        # the runner's SIGTERM for another stage's failure must not cut this report short
        _ignore_sigterm()
        w.control.put(Failed(name, str(exc), "", exc.exit_code))
    except BaseException as exc:
        _ignore_sigterm()
        if _sigterm_seen:
            # A library turned the Terminated raised inside it into its own error (an import cut
            # off says "ImportError: initialization failed"): the stage was stopped, not failed.
            _report_stopped(w, summary())
        else:
            message = str(exc) if isinstance(exc, StageFailure) else said(exc)
            w.control.put(Failed(name, message, traceback.format_exc(), 1))
    finally:
        _ignore_sigterm()  # closing is not interrupted a second time
        if stage is not None:
            # so is close, with the time the stage says it may take: a close that never returns
            # would otherwise hold the run for ever after everything else had ended
            w.control.put(Closing(name))
            w.busy_since.value = time.monotonic() + stage.closing_s(stage.params)
            try:
                stage.close()
            except UserError as exc:
                w.control.put(Failed(name, f"while closing: {exc}", "", exc.exit_code))
            except BaseException as exc:
                w.control.put(Failed(name, f"while closing: {said(exc)}", traceback.format_exc(), 1))
            finally:
                w.busy_since.value = 0.0
        if ring is not None:
            ring.close()
        frames.detach_all()
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


def _run_source(stage: Source, ring: frames.FrameRing, emitter: _Emitter, w: Wiring,
                stats: StageStats) -> None:
    produced = iter(stage.frames())
    while not w.stop.is_set():
        t0 = time.perf_counter()
        try:
            packet = next(produced, None)
        except UserError as exc:
            if not stats.items:
                raise
            # Bad input found mid-stream (a truncated file, a camera given up on): what was
            # read still drains through the graph into the outputs; the runner exits 2 with
            # this line after, and at once stops the other sources of a live one.
            w.control.put(InputFailed(w.process, str(exc), exc.exit_code, stage.live))
            break
        if packet is None:
            break
        if not isinstance(packet, Packet):
            raise TypeError(f"frames() yielded a {type(packet).__name__}, not a Packet")
        if isinstance(packet.image, np.ndarray):
            packet.image = ring.put(packet.image)
        if not packet.captured:
            packet.captured = time.monotonic()
        stats.record(time.perf_counter() - t0)
        emitter.emit((packet,))
        w.progress.value += 1
        w.dropped.value = stats.dropped + stage.dropped


def _receive(inboxes: list[Any], idle_s: float | None = None) -> Iterator[Packet | Sequenced | None]:
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


def _run_consumer(stage: Stage, emitter: _Emitter, w: Wiring, stats: StageStats) -> None:
    """Read until every upstream process has ended. A worker of several answers each numbered
    item with one numbered item; a single process puts numbered items back in order first."""
    handle = _Handler(stage, w, stats)
    reorder = Reorder()
    worker = w.spec.workers > 1
    for item in _receive(w.inboxes, stage.idle_s):
        if item is None:
            handle.idle()
        elif not isinstance(item, Sequenced):
            emitter.emit(handle(item))
        elif worker:
            emitter.emit_sequenced(replace(item, packets=[out for p in item.packets for out in handle(p)]))
        else:
            for packet in reorder.add(item):
                emitter.emit(handle(packet))


class _Handler:
    """One packet through the stage, with the runner's bookkeeping around it."""

    def __init__(self, stage: Stage, w: Wiring, stats: StageStats) -> None:
        self.stage, self.w, self.stats = stage, w, stats
        self.sink = not w.outboxes
        self.stopping = False

    def __call__(self, item: Packet) -> list[Packet]:
        if self.stopping:
            return []  # this stage ended the run: what is still in flight only drains
        # a sink writes and counts a frame whole or not at all: SIGTERM waits for it
        with _HOLD if self.sink else contextlib.nullcontext():
            return self._handle(item)

    def _stop_run(self) -> None:
        """The stage ended the run (a user's q): the sources stop, and what is in flight only drains."""
        self.w.stop.set()
        self.stopping = True

    def idle(self) -> None:
        if self.stopping:
            return
        try:
            self.stage.idle()
        except StopRun:
            self._stop_run()
        except UserError:
            raise
        except Exception as exc:  # on_error: skip is about packets: there is none to skip here
            raise StageFailure(f"while idle: {said(exc)}") from exc

    def _handle(self, item: Packet) -> list[Packet]:
        stage, w, stats = self.stage, self.w, self.stats
        w.busy_since.value = time.monotonic()
        t0 = time.perf_counter()
        try:
            views = frames.views_made()
            out = packets_of(stage.process(item))
            if not self.sink and frames.views_made() != views and isinstance(item.image, frames.FrameRef):
                item.image.check()  # a result made from pixels overwritten meanwhile is not passed on
        except StopRun:
            self._stop_run()
            out = []
        except UserError:
            raise
        except frames.StaleFrameError:
            # Only a live source writes on without waiting: a stage starved long enough (an
            # overloaded machine) finds its frame's ring slot reused, before or while it reads
            # it. The frame is too old to matter; it is dropped and counted like the frames the
            # source drops. (A sink has written it by then; what it wrote stays counted.)
            if not stats.dropped:
                print(f"fer-pipe: stage {w.spec.name!r} fell behind a live source; frames "
                      "overwritten before or while it read them are dropped", file=sys.stderr)
            stats.dropped += 1
            out = []
        except Exception as exc:
            if w.spec.on_error != "skip":
                raise StageFailure(f"on {item.source} frame {item.index}: {said(exc)}") from exc
            stats.skipped += 1
            say_skipped(w.spec.name, item, exc, stats.skipped)
            out = []
        w.busy_since.value = 0.0
        stats.record(time.perf_counter() - t0)
        w.progress.value += 1
        w.dropped.value = stats.dropped + stage.dropped
        if self.sink:
            stats.latencies.append(time.monotonic() - item.captured)
        return out
