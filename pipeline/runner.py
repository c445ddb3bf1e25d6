"""The multi-process runner: one process per stage, bounded queues between them.

The parent only supervises. It starts the stage processes (spawned, or in the CLI forked from a
forkserver that has only imported fer-pipe: see ``launch``), watches their control messages and
their process sentinels, and ends the run:
- normally, when every stage has reported ``done`` after end of stream;
- on the first failure (a stage raised, died, or stalled past ``stall_timeout``): every other
  stage gets SIGTERM, which unwinds it through ``close`` so files are complete, and anything
  still alive after a grace period is killed; no process is left behind. A failure after which
  what was passed on can still drain (a file source's bad input mid-stream, a ``finish``, a
  close after its stream ended) fails the run once the graph has drained; a live source's
  given up on stops the sources at once;
- on SIGINT/SIGTERM/SIGHUP: sources stop, the graph drains and closes (exit 130/143/129); a
  second signal terminates at once.
Before starting, it removes the frame rings that runs killed outright left (``ring_lease``).
"""
from __future__ import annotations

import multiprocessing as mp
import errno
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from ctypes import c_double, c_longlong
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from multiprocessing.queues import Queue
from multiprocessing.reduction import ForkingPickler
from typing import Any

from . import frames, hangup, launch
from .control import Closing, Done, Failed, FailedDraining, Length, Message, Opened, Stopped
from .emitter import Outbox, StageQueue
from .errors import InputError, files_limit_hint, one_line, printable, said
from .graph import Graph
from .oom import oom_kills
from .preflight import check_stages, live_sources
from .redaction import redact_urls
from .ring_lease import SEMAPHORES, RingLease, semaphores_named, sweep_abandoned
from .run_flag import RunFlag
from .stage import Sink, StageFailure
from .stats import format_table
from .status import StatusLine
from .stop_signals import GRACE_S, RESEND_S, STILL_S, STOP_SIGNALS
from .worker import Wiring, stage_main

POLL_S = 0.1
SILENT_S = 1.0
"""How long a stage that ended with exit code 0 and no report after a stop signal waits to be
judged, for another stage to report that the signal reached the stages too."""
TOGETHER_S = 0.2
"""A stop signal handled this soon after a SIGHUP that began the stop came with it: Python runs
the handlers of signals pending together one after the other, in microseconds."""
HELD_S = 5.0
"""How long a drain after a first stop goes on before the run says what it waits for: a source
blocked in its read (a camera library's call) held it in silence, and only a second Ctrl-C,
which nothing suggested, ended it (s68a 4)."""

Processes = dict[str, mp.process.BaseProcess]
Counters = dict[str, c_longlong | c_double]  # process name -> its shared multiprocessing value


@dataclass
class RunResult:
    exit_code: int
    stats: list[dict] = field(default_factory=list)
    message: str = ""
    traceback: str = ""
    first_result_s: float | None = None
    wall_s: float = 0.0
    also: list[str] = field(default_factory=list)
    """Failures of other stages after the first, closing (a sink that could not deliver what it
    held): said after the first so an operator learns what else was lost."""

    def __post_init__(self) -> None:
        """Each failure on one line, with any URL's password masked and anything a terminal
        would act on escaped, however a stage worded it: the CLI prints these lines and the
        Python API raises them."""
        self.message = printable(redact_urls(one_line(self.message)))
        self.also = [printable(redact_urls(one_line(line))) for line in self.also]
        self.traceback = redact_urls(self.traceback)  # the Python API chains it to what it raises

    @classmethod
    def failed_before(cls, exc: StageFailure) -> RunResult:
        """A plug-in's bug found by ``check_stages``: exit 1, with the plug-in's own traceback
        for --debug, as ``fer-pipe run`` and ``fer-pipe batch`` both say it."""
        return cls(1, message=str(exc), traceback="".join(traceback.format_exception(exc.__cause__)))


@dataclass
class _Reports:
    """What the stage processes have said so far, over the control queue."""

    done: dict[str, dict] = field(default_factory=dict)  # each ended process's statistics
    lengths: dict[str, int | None] = field(default_factory=dict)  # the sources' frame counts
    failure: Failed | None = None  # the first failure: the run's
    also: list[str] = field(default_factory=list)  # later failures, said after it
    late_error: Failed | None = None  # bad input after the stream drained
    late_place: tuple = ()  # late_error's place in run_graph's order (``_place``)
    stopped: str | None = None  # the first process a SIGTERM of its own stopped, undrained
    opened: set[str] = field(default_factory=set)  # processes whose stage's open returned
    closing: set[str] = field(default_factory=set)  # processes in their stage's close
    # killed in their close, after so many s, and whether a second stop signal had cut it short
    killed_closing: dict[str, tuple[float, bool]] = field(default_factory=dict)
    killed: set[str] = field(default_factory=set)  # every process the runner SIGKILLed
    died_closing: set[str] = field(default_factory=set)  # processes said to have died in their close
    stalled_closing: str | None = None  # the process whose stall in its close failed the run
    stalled: str | None = None  # the process whose stall failed the run, in its close or not
    rank: dict[str, int] = field(default_factory=dict)  # each process's stage's place in Graph.order
    sources: set[str] = field(default_factory=set)  # the processes of source stages

    def take(self, msg: Message, who: Callable[[str], str]) -> bool:
        """Note one message (``who`` names a process in a line); whether the sources must stop now."""
        match msg:
            case Length(process, frames_to_come):
                self.lengths[process] = frames_to_come
            case Opened(process):
                self.opened.add(process)
            case Closing(process):
                self.closing.add(process)
            case Done(process, summary) | Stopped(process, summary):
                self.done[process] = summary
                if isinstance(msg, Stopped) and self.stopped is None:
                    self.stopped = process
            case Failed() if self.failure is None:
                self.failure = msg
            case Failed(process, message) if process != self.failure.process or message != self.failure.message:
                # another stage's, or this one's close after its own failure (an upload lost)
                self.also.append(f"{who(process)} failed: {message}")
            case FailedDraining(process, message, exit_code, live, trace):
                place = self._place(process)
                if self.failure is None and (self.late_error is None or place < self.late_place):
                    if self.late_error is not None:
                        self.also.append(f"{who(self.late_error.process)} failed: {self.late_error.message}")
                    self.late_error, self.late_place = Failed(process, message, trace, exit_code), place
                else:  # said too, after the run's: a live one ends the run, not the first
                    self.also.append(f"{who(process)} failed: {message}")
                return live  # a camera given up on: the run fails now, not when the others end
        return False

    def _place(self, process: str) -> tuple:
        """Where a failure after which the stream drained comes in ``run_graph``'s order, the least
        leading: a source's (in the order they came), then each stage's finish, the first stage's
        first, then each close, the last stage's first. Stages that finish or close at once in a
        run, in branches or one after another, sent theirs in an order of chance, and the run's
        line and exit code, 2 or 1, went by it."""
        index = self.rank.get(process, 0)
        if process in self.closing:
            return (2, -index, process)
        return (0,) if process in self.sources else (1, index, process)


def _others_read_on(process: str, sources: set[str], procs: Processes) -> bool:
    """Whether ``process`` is a source's, and another source still reads: its failure is said
    at once, where it was said only when the others ended, hours later for a long file and
    never beside a camera."""
    return process in sources and any(procs[p].exitcode is None for p in sources - {process})


@dataclass
class _Shared:
    """What the runner and the stage processes share: the queues between the stages (one per
    producer process and consumer process: what is in a queue is only its producer's, so a
    live source can drop the oldest item of a full one without taking out another source's
    frame or end of stream), the control queue, the stop and all-open flags, and each
    process's counters (items, dropped, busy since, down since)."""

    inboxes: dict[str, StageQueue]
    control: Queue
    stop: RunFlag
    all_open: RunFlag
    progress: Counters
    dropped: Counters
    busy: Counters
    down: Counters

    @classmethod
    def made(cls, ctx: Any, graph: Graph, names: dict[str, list[str]], stage_of: dict[str, str], live: set[str],
             run_id: str) -> _Shared:
        """Made for a run of ``graph`` (``names``: each stage's processes; ``stage_of``: each
        process's stage); a full /dev/shm said as such."""
        try:
            with semaphores_named(run_id):  # swept with the rings where the run is killed outright
                inboxes = {f"{u}>{p}": StageQueue(graph.queue_size, ctx=ctx) for n, s in graph.stages.items()
                           for i in s.inputs for u in names[i] for p in names[n]}
                control, stop, all_open = ctx.Queue(), RunFlag(ctx), RunFlag(ctx)
            # A camera that never connects is down from the run's start, not "cam 0 (0.0/s)" for hours;
            # its process sets this only once it runs, and a status line may come before (a loaded machine).
            return cls(inboxes, control, stop, all_open,
                       progress={p: ctx.Value("q", 0, lock=False) for p in stage_of},
                       dropped={p: ctx.Value("q", 0, lock=False) for p in stage_of},
                       busy={p: ctx.Value("d", 0.0, lock=False) for p in stage_of},
                       down={p: ctx.Value("d", time.monotonic() if s in live else 0.0, lock=False)
                             for p, s in stage_of.items()})
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise InputError(f"{SEMAPHORES} is full ({exc.strerror}), and the run's queues keep their "
                                 "semaphores there: free it (a killed program's files?) or give it more room "
                                 "(docker run --shm-size)") from None
            raise


@dataclass
class _Ending:
    """The stage processes stopped once the run must end: SIGTERM to each, again every
    ``RESEND_S``, and SIGKILL to those left after ``grace``, or ``GRACE_S`` after a second stop
    signal. The process whose stall failed the run gets its own stage's grace (``own``): known
    stuck, it was left for the longest close of the run's stages (an rtsp source's, 11 s and
    more), the run showing it alive beside stages all ended (s64c 1)."""

    grace: float
    own: dict[str, float] = field(default_factory=dict)
    since: float | None = None
    resend_at: float = 0.0

    @classmethod
    def of(cls, graph: Graph, stage_of: dict[str, str]) -> _Ending:
        """The graces of a run's processes (``stage_of``: each process's stage)."""
        own = {p: GRACE_S + graph.stages[stage].closing_s for p, stage in stage_of.items()}
        return cls(max(own.values()), own)

    def tick(self, procs: Processes, reports: _Reports, busy: Counters, second_signal: bool) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since = now
        # Again every RESEND_S: CPython 3.11 can leave a SIGTERM unhandled when another thread
        # of the stage (a queue's feeder, a camera reader) runs Python just then, and the stage
        # goes on into a wait that only a signal ends. A stage ignores SIGTERMs after its first.
        resend = now >= self.resend_at
        if resend:
            self.resend_at = now + RESEND_S
        for name, proc in procs.items():
            if proc.exitcode is not None:
                continue
            limit = GRACE_S if second_signal else self.own[name] if name == reports.stalled else self.grace
            if now - self.since > limit:
                proc.kill()
                reports.killed.add(name)
                if name in reports.closing and busy[name].value:  # not in its exit's teardown
                    reports.killed_closing.setdefault(name, (limit, second_signal))
            elif resend:
                proc.terminate()


class Runner:
    """Runs a checked graph; ``run()`` returns when every stage process has ended."""

    def __init__(self, graph: Graph, progress: bool = True, stall_timeout: float = 0.0,
                 status_every: float = 0.0, fork: bool = False) -> None:
        """``status_every``: say each stage's progress this often (seconds; 0: never). ``fork``:
        fork the stage processes from a forkserver with fer-pipe loaded, which starts them in
        milliseconds rather than 0.65 s of CPU each, where this process is fer-pipe's own and
        runs this one graph (the CLI; see ``launch``)."""
        self.fork = fork
        self._forked = False  # whether the stages of this run came from a forkserver
        self.graph = graph
        self.progress = progress
        self.stall_timeout = stall_timeout
        self.status_every = status_every
        self._signals: list[tuple[int, float]] = []  # each stop signal handled, and when (monotonic)
        self._hung_up = False
        self._resumed_at = 0.0
        self._stale: dict[str, float] = {}  # each process's busy mark last seen past the stall timeout
        self._silent: dict[str, float] = {}  # when each process was first seen ended with exit 0 and no report
        self._oom_kills = oom_kills()  # a stage killed outright while this count rose was, likely, its victim
        self._still: dict[str, tuple[int, float]] = {}  # each process's item count, and since when it had work and kept it
        self._last_look = 0.0
        self._ttys = hangup.terminal_fds()
        self.processes: Processes = {}
        """The stage processes and the inbox queues of a run, by process name (the stage's, or
        ``name[i]`` for each of its workers), for monitors that sample memory and queue depths
        from another thread (tools/soak.py). Emptied when the run ends: an API stream kept for its
        result held its run's 24 file descriptors and 23 semaphores, and a service keeping its jobs
        ran out of descriptors after 40."""
        self.inboxes: dict[str, Any] = {}
        """Keyed ``producer>consumer`` by process name."""

    def _on_signal(self, signum: int, frame: object) -> None:
        """Note the signal; what the signals so far mean is worked out from the list of them
        (``_stop``). Python may run another signal's handler in the middle of this one, and a
        SIGHUP that came while a SIGTERM's handler was setting the stop made it "interrupted
        twice": one append cannot be cut in two."""
        self._signals.append((signum, time.monotonic()))
        if signum == signal.SIGHUP and not self._hung_up:
            self._hung_up = True
            hangup.to_devnull(self._ttys)

    def _stop(self) -> tuple[int | None, int]:
        """The signal the run stopped for (None: none came), and how many stops it got: two or
        more stop it at once."""
        first, at, seen = None, 0.0, 0
        for signum, when in list(self._signals):
            if signum == signal.SIGHUP:
                if first is not None:
                    # the terminal closing during a drain, or systemd's SendSIGHUP after its
                    # SIGTERM: not a second Ctrl-C, which would cut the drain short
                    continue
            elif signum == first and seen == 1 and when - at < TOGETHER_S:
                # The same signal again at once: GNU timeout, and kill -- -PGID, send it to the
                # command and to its process group, and the runner got both; the drain was cut
                # short as "interrupted twice" in 1 of 4 such stops. A second stop comes later.
                continue
            elif first == signal.SIGHUP and seen == 1 and when - at < TOGETHER_S:
                # Nor the other way round: signals pending together are handled lowest number
                # first, so systemd's SIGTERM and SIGHUP sent back to back came as SIGHUP, then a
                # "second" signal, and the stop was cut short with exit 129. The hangup's
                # drain goes on, as this signal's. One that comes later is a second stop.
                first = signum
                continue
            if first is None:
                first, at = signum, when
            seen += 1
        return first, seen

    @property
    def _signal(self) -> int | None:
        return self._stop()[0]

    @property
    def _signals_seen(self) -> int:
        return self._stop()[1]

    def _on_resume(self, signum: int, frame: object) -> None:
        """SIGCONT: the run was stopped (Ctrl-Z, SIGSTOP) and goes on. A stage's time in its
        packet counts toward the stall timeout from now: the pause was no stall of its."""
        self._resumed_at = time.monotonic()

    def stop(self) -> None:
        """Drain and end the run from another thread, as a first SIGINT would (the Python API's way out)."""
        self._on_signal(signal.SIGINT, None)

    def run(self) -> RunResult:
        """Start a process per stage (per worker), supervise them to the end, and say how it went
        as a result, not an exception: a run that failed part-way still wrote what it could, and
        the CLI and the API each report that in their own way."""
        try:
            check_stages(self.graph)
            live = live_sources(self.graph)
        except StageFailure as exc:
            return RunResult.failed_before(exc)
        in_main = threading.current_thread() is threading.main_thread()  # only it may set handlers
        if in_main:
            hangup.start_resource_tracker()  # before the queues, whose semaphores it tracks
            # the progress bar, status lines and report to a terminal gone without a SIGHUP (a
            # job the shell was told to disown), or to a log reader gone: left as on SIGHUP, and
            # the run goes on to its end
            hangup.guard_standard_streams(self._ttys)
        graph = self.graph
        # Each stage's spec, as its process loads it (see Wiring): one that cannot be sent fails
        # here, before any process (the forkserver too), queue or ring is made.
        specs = {}
        for name, spec in graph.stages.items():
            try:
                specs[name] = bytes(ForkingPickler.dumps(spec))
            except Exception as exc:  # Python 3.13 says a lambda's "Can't get local object", naming no pickle
                failure = StageFailure(f"stage {name!r} ({spec.type_name}) cannot be sent to its process: "
                                       f"{said(exc)} (what a stage holds must pickle)")
                failure.__cause__ = exc
                return RunResult.failed_before(failure)  # one line and exit 1, as a plug-in's bug in its checks
        ctx = launch.context(graph, self.fork)
        self._forked = ctx.get_start_method() == "forkserver"
        names = {n: s.process_names() for n, s in graph.stages.items()}
        self._stage_of = {p: n for n, ps in names.items() for p in ps}
        frames.check_folder()
        rings, size = sweep_abandoned()
        if rings:
            print(f"fer-pipe: removed {rings} frame ring(s), {size / frames.MIB:,.0f} MiB, that a "
                  f"killed run left in {frames.SHM}", file=sys.stderr)
        lease = RingLease()
        try:  # at once: a Ctrl-C while the queues and processes were made left the lease's lock file (s60b 5)
            return self._leased(ctx, names, specs, live, in_main, lease)
        finally:
            lease.release()  # the run's rings: every stage process has ended, or none started (done, as a rule)

    def _leased(self, ctx: Any, names: dict[str, list[str]], specs: dict[str, bytes], live: set[str],
                in_main: bool, lease: RingLease) -> RunResult:
        """The run once its rings are leased: its queues and processes made, started and watched."""
        graph = self.graph
        # While the queues are made and the stage processes start, the stop signals are blocked:
        # a Ctrl-C between a queue's semaphore made and its registering left it in /dev/shm for
        # good, and a SIGTERM or SIGHUP killed the runner, with Python's warning of leaked
        # semaphores (s67d 1). The processes inherit the mask (a Ctrl-C to the process group
        # cannot kill one half-started; stage_main unblocks once its handlers are in; a
        # forkserver was started under it, and passes it on), and here a signal sent meanwhile
        # stays pending and is noted when unblocked, so a stop that came during the start is not
        # lost.
        # A SIGINT or SIGHUP the caller ignores stays ignored (a shell's `fer-pipe run ... &`, nohup):
        # before, a SIGINT was ignored while the run started and honoured after.
        deferred: list[int] = []
        previous = {s: signal.signal(s, lambda signum, _: deferred.append(signum)) for s in STOP_SIGNALS
                    if in_main and not (s != signal.SIGTERM and signal.getsignal(s) == signal.SIG_IGN)}
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        started = time.monotonic()
        try:
            try:
                shared = _Shared.made(ctx, graph, names, self._stage_of, live, lease.run_id)
                procs = self._processes(ctx, names, specs, shared, live, lease.run_id)
                self.processes, self.inboxes = procs, shared.inboxes
                unstarted = self._start(procs)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            if unstarted is not None:
                return unstarted
            for sig in previous:
                signal.signal(sig, self._on_signal)
            if in_main:
                previous[signal.SIGCONT] = signal.signal(signal.SIGCONT, self._on_resume)
            for signum in deferred:
                self._on_signal(signum, None)
            status = StatusLine(self.status_every, names, shared.progress, shared.dropped, _say, started, shared.down,
                                lambda process: procs[process].exitcode is not None)
            result = self._supervise(procs, shared, status, started, bool(live))
        finally:
            lease.release()  # while the run's handlers hold: a Ctrl-C then is a stop noted, not one raised in it
            self.processes, self.inboxes = {}, {}
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        result.wall_s = time.monotonic() - started
        return result

    def _processes(self, ctx: Any, names: dict[str, list[str]], specs: dict[str, bytes], shared: _Shared,
                   live: set[str], run_id: str) -> Processes:
        """A process per stage (per worker), wired to its queues and counters, not started."""
        graph = self.graph
        procs: Processes = {}
        for name in graph.order():
            spec = graph.stages[name]
            slots = _ring_slots(graph, name) if spec.is_source or graph.consumers(name) else 0
            for process in names[name]:
                outboxes = [Outbox([shared.inboxes[f"{process}>{p}"] for p in names[c]], f"{name}>{c}",
                                   drop_oldest=_drops_for_live(graph, c, live))
                            for c in graph.consumers(name)]
                mine = [shared.inboxes[f"{u}>{process}"] for i in spec.inputs for u in names[i]]
                wiring = Wiring(specs[name], process, mine, outboxes, shared.control, shared.stop, shared.all_open,
                                shared.progress[process], shared.dropped[process], shared.busy[process],
                                shared.down[process], slots, run_id)
                procs[process] = ctx.Process(target=stage_main, args=(wiring,), name=f"fer-pipe:{process}")
        return procs

    def _start(self, procs: Processes) -> RunResult | None:
        """Start every stage process; where one cannot be made, end those started before (blocked
        on queues nobody feeds) and say which stage's could not start. They are stopped as at a
        run's end (SIGTERM, again every RESEND_S, SIGKILL past the grace): each has opened its
        stage, and killed outright, a video writer left the file its open claimed, empty."""
        try:
            for process, proc in procs.items():
                proc.start()
        except BaseException as exc:
            started = {name: proc for name, proc in procs.items() if proc.pid is not None}
            ending = _Ending.of(self.graph, self._stage_of)
            nothing_said = _Reports()  # none of them is in its close yet, as the runner knows
            while left := [proc.sentinel for proc in started.values() if proc.exitcode is None]:
                ending.tick(started, nothing_said, {}, second_signal=False)  # SIGTERM again, as a run's end
                wait(left, POLL_S)
            # the system made no process (memory, a process limit), or the forkserver that
            # makes them went away mid-way: the machine's state, not a bug to trace back
            if isinstance(exc, (EOFError, ConnectionError)) and self._forked:
                reason = "the forkserver that makes them went away"
            elif isinstance(exc, OSError):
                reason = (exc.strerror or str(exc)) + files_limit_hint(exc)
            else:
                raise
            return RunResult(1, message=f"could not start the process of stage {self._stage_of[process]!r} "
                                        f"({reason}); the stages started before it were ended")
        return None

    def _supervise(self, procs: Processes, shared: _Shared, status: StatusLine, started: float,
                   any_live: bool) -> RunResult:
        """Watch the stage processes until every one has ended, and judge the run.

        ``shared.control`` is the queue of the stages' messages, ``shared.stop`` the flag that
        asks the sources to stop, ``shared.all_open`` the one that tells live sources every stage
        has opened; ``shared.progress`` and ``shared.busy`` are each process's item count and the
        monotonic time at which it took its current packet (0 when idle); ``any_live`` whether a
        source is live, whose run has no progress bar."""
        graph = self.graph
        control, stop, all_open = shared.control, shared.stop, shared.all_open
        progress, busy = shared.progress, shared.busy
        order = graph.order()
        reports = _Reports(rank={p: order.index(stage) for p, stage in self._stage_of.items()},
                           sources={p for p, stage in self._stage_of.items() if graph.stages[stage].is_source})
        first_result: float | None = None
        sinks = [s.process_names() for s in graph.ends()]  # a last stage may run as several workers
        bar = None
        ending = _Ending.of(graph, self._stage_of)
        held_since, said_held = 0.0, False  # since the first stop; whether what holds its drain was said
        try:
            while any(p.exitcode is None for p in procs.values()) or not _empty(control):
                exited = [n for n, p in procs.items() if p.exitcode is not None]
                for msg in _drain(control, POLL_S):
                    if reports.take(msg, self._who):
                        stop.set()
                    elif isinstance(msg, FailedDraining) and _others_read_on(msg.process, reports.sources, procs):
                        _say(printable(redact_urls(f"fer-pipe: {self._who(msg.process)} failed: {one_line(msg.message)}; "
                                                   "the other sources read on, and the run fails when they end")))
                if len(reports.opened) == len(procs) and not all_open.is_set():
                    all_open.set()  # the live sources take their first frame now
                at_sinks = [sum(progress[p].value for p in processes) for processes in sinks]
                if first_result is None and any(at_sinks):
                    first_result = time.monotonic() - started
                if bar is None and self.progress and len(reports.lengths) == len(graph.sources()):
                    lengths = list(reports.lengths.values())
                    if all(lengths) or not any_live:  # a file of no count (piped Matroska) counts without a total
                        bar = _progress_bar(sum(lengths) if all(lengths) else None)
                if bar is not None:
                    bar.update(min(at_sinks) - bar.n)
                status.tick()
                if reports.failure is None:
                    reports.failure = self._find_fault(procs, exited, reports, busy, progress)
                self._died_in_close(procs, exited, reports, busy)
                # A stage stopped by a SIGTERM of its own sends no end of stream, so the stages
                # after it would wait for ever (a SIGTERM to one process, or to the process group
                # while the later stages were not started yet): the others are stopped too.
                if reports.failure is not None or self._signals_seen > 1 or reports.stopped is not None:
                    stop.set()
                    ending.tick(procs, reports, busy, self._signals_seen > 1)
                elif self._signal is not None:
                    stop.set()
                    held_since = held_since or time.monotonic()
                    held = None if said_held or held_since > time.monotonic() - HELD_S else self._held_by(procs, reports)
                    if held:
                        said_held = True
                        _say(held)
        finally:
            if bar is not None:
                if reports.failure is None and reports.late_error is None and self._signal is None:
                    bar.total = bar.n  # the total was the container's estimate; every frame is in
                    bar.refresh()
                bar.close()
            for name, proc in procs.items():
                if proc.exitcode is None:
                    proc.kill()
                    reports.killed.add(name)
                proc.join()
        status.tick(last=True)
        if reports.failure is None and self._signals_seen < 2:
            # Processes that all ended before the loop looked, or the last one dying right after
            # its final look, were never judged; every one has ended now and its report is in.
            reports.failure = self._died(procs, list(procs), reports, final=True)
        self._died_in_close(procs, list(procs), reports, busy)
        return self._verdict(reports, [reports.done[p] for p in procs if p in reports.done], first_result)

    def _verdict(self, reports: _Reports, stats: list[dict], first_result: float | None) -> RunResult:
        """How the run ended, from what its stages said and the signals it got."""
        # a stage killed in its close had sent its statistics before it: nothing else said it,
        # and the run said each sink's file held the frames it had taken
        failure = reports.failure or reports.late_error
        late = reports.late_error
        superseded = [f"{self._who(late.process)} failed: {late.message}"] if late and failure is not late else []
        also = superseded + reports.also + [
            f"{self._who(name)} was killed "
            + (f"in its close, which had not returned {after:g} s after the second stop signal: "
               "what it was writing may be incomplete" if cut else
               f"{after:g} s into its close, which had not returned: what it was writing may be "
               "incomplete (a stage whose close needs longer says so with closing_s)")
            for name, (after, cut) in reports.killed_closing.items()
            if name != reports.stalled_closing]  # a stall in close says it; a stage's failure before its close does not
        if failure is not None:
            message = failure.message
            if failure.process is not None:
                message = f"{self._who(failure.process)} failed: {message}"
            return RunResult(failure.exit_code, stats, message, failure.traceback, first_result, also=also)
        if self._signals_seen > 1:
            return RunResult(128 + self._signal, stats, "interrupted twice: stopped at once, without "
                             "draining", "", first_result, also=also)
        if self._signal is not None and reports.stopped is not None:  # the stages got it too: a group's signal
            unopened = [p for p in self._stage_of if p not in reports.opened and not self.graph.consumers(self._stage_of[p])]
            whole = ("" if reports.killed_closing else
                     # a sink stopped before its open made no file, or left an earlier run's as it was
                     f"; {', '.join(map(self._who, unopened))} had not opened its output yet" if unopened else
                     "; each sink's file holds the frames it had taken")
            return RunResult(128 + self._signal, stats, "interrupted: stopped at once, as the stages got the "
                             "signal too (sent to the process group: timeout, a service manager)" + whole, "",
                             first_result, also=also)
        if self._signal is not None:
            return RunResult(128 + self._signal, stats, "interrupted: drained and closed", "", first_result, also=also)
        if reports.stopped is not None:
            return RunResult(128 + signal.SIGTERM, stats, f"{self._who(reports.stopped)} was stopped by "
                             "a SIGTERM of its own, so nothing could drain past it: the run was stopped",
                             "", first_result, also=also)
        return RunResult(0, stats, "", "", first_result, also=also)

    def _held_by(self, procs: Processes, reports: _Reports) -> str | None:
        """The line that says what a drain waits for: the stages still opening (a source before
        them waits to pass its frames on: it was said to be in its read, s68d 4), else the
        sources still reading, else the stages still draining; None once none is left (the last
        ended as the line was due, and the line failed on its empty list: s68d 1)."""
        alive = [name for name, proc in procs.items() if proc.exitcode is None]
        opening = [name for name in alive if name not in reports.opened]
        reading = [name for name in alive if name in reports.sources]
        held, what = ((opening, "to open") if opening else (reading, "to return from its read") if reading
                      else (alive, "to drain"))
        if not held:
            return None
        return (f"fer-pipe: stopping: after {HELD_S:g} s, still waiting for {', '.join(map(self._who, held))} {what}; "
                "a second Ctrl-C (or SIGTERM) stops at once, without draining")

    def _who(self, process: str) -> str:
        """``stage 'detector[1]' (haar)``: a process as every line about it names it."""
        return f"stage {process!r} ({self.graph.stages[self._stage_of[process]].type_name})"

    def _find_fault(self, procs: Processes, exited: list[str], reports: _Reports, busy: Counters,
                    progress: Counters) -> Failed | None:
        """A stage that ended without reporting, or one stuck in its ``open``, one packet, its
        ``finish`` or its ``close`` past the stall timeout, or between packets with packets
        waiting for it (``_stuck_between_packets``).

        Only processes seen as ended before the control queue was drained are judged, so a
        stage's last message is never mistaken for missing.
        """
        died = self._died(procs, exited, reports)
        if died is not None:
            return died
        opened, closing = reports.opened, reports.closing
        if self.stall_timeout > 0:
            now = time.monotonic()
            if self._last_look and now - self._last_look > STILL_S:
                self._resumed_at = now
            self._last_look = now
            for name, value in busy.items():
                if procs[name].exitcode is not None:
                    continue  # its last mark may be left from the close it finished
                mark = value.value
                if not mark or now - max(mark, self._resumed_at) <= self.stall_timeout:
                    continue
                # A stall is the same mark seen past the timeout on two looks: one look alone once
                # failed a run 4 s old as "no progress for 120 s", cause unknown (a clock jump in
                # the VM, which STILL_S covers, or a bad read); a stage truly stuck still shows
                # its mark at the next look.
                if self._stale.get(name) == mark:
                    where = " while closing" if name in closing else "" if name in opened else " while opening"
                    if name in closing:
                        reports.stalled_closing = name
                    reports.stalled = name
                    return Failed(name, f"no progress for {self.stall_timeout:g} s{where} (stalled)", "", 1)
                self._stale[name] = mark
            stuck = reports.stalled = self._stuck_between_packets(procs, busy, progress, now)
            if stuck is not None:
                return Failed(stuck, f"no progress for {self.stall_timeout:g} s with packets waiting for it "
                                     "(stalled between packets: a stopped or frozen process?)", "", 1)
        return None

    def _stuck_between_packets(self, procs: Processes, busy: Counters, progress: Counters, now: float) -> str | None:
        """The first process, upstream first, that has packets waiting in its inbox, is in none
        of them, and has taken none for the stall timeout, while the stages it feeds had room
        all that time.

        The busy mark covers a stage inside a packet; one stopped between packets (a SIGSTOP,
        a debugger, a frozen cgroup, a wait in native code) held the whole run for ever, with
        nothing said. The stages before it wait too, on their full outboxes: room after a stage
        is what tells the stuck one from those it holds up (and a worker of several from the
        stage that waits for its numbered packets, which comes after it). A process found
        runnable is slow, not stuck: a CI worker given a sixth of a core was called stalled."""
        waiting: dict[str, int] = {}
        full: set[str] = set()
        for key, inbox in self.inboxes.items():
            producer, _, consumer = key.partition(">")
            depth = inbox.qsize()  # counts what was put, before the sender's feeder thread has sent it
            if depth and not inbox.empty():  # sent, so its consumer could read it
                waiting[consumer] = waiting.get(consumer, 0) + depth
            if depth >= max(1, self.graph.queue_size - 1):  # a live sender takes one out of a full queue
                full.add(producer)
        for name, proc in procs.items():
            count = progress[name].value
            seen = self._still.get(name)
            # a full outbox starts the time over: a stage held up by the ones after it (a push sink
            # waiting for a slow collector) was called stuck at the first look that found room
            if (seen is None or seen[0] != count or not waiting.get(name) or busy[name].value
                    or proc.exitcode is not None or name in full):
                self._still[name] = (count, now)
            elif now - max(seen[1], self._resumed_at) > self.stall_timeout:
                if _state(proc.pid) != b"R":
                    return name
                # runnable (state R): starved of CPU, as in a throttled container (s59c 2); a
                # stopped or frozen process is never R
                self._still[name] = (count, now)
        return None

    def _out_of_memory(self, code: int) -> str:
        """What to add where a stage was killed outright while the kernel's out-of-memory killer
        ended a process: "killed by signal SIGKILL" alone left a container's operator to guess
        that its memory limit, which the frame rings in /dev/shm count against, was too small."""
        now = oom_kills()
        if code != -signal.SIGKILL or now is None or self._oom_kills is None or now <= self._oom_kills:
            return ""
        return ("; the kernel's out-of-memory killer ended a process meanwhile, likely this one: give the run more "
                "memory (a container's limit counts the frame rings in /dev/shm), or lower queue_size or a stage's "
                "workers")

    def _died(self, procs: Processes, names: list[str], reports: _Reports, final: bool = False) -> Failed | None:
        """The first of ``names`` whose process ended without reporting done or stopped (``final``:
        every process has ended, and every report is in).

        A forked stage's exit code comes from the forkserver; once that server is gone (the OOM
        killer, a stray ``kill``), multiprocessing says 255 for every stage, and the run cannot
        stop them by their handles: each stops itself once this process ends. A stage that
        died with the server is named, before the ones that still run."""
        server_gone = False
        for name in names:
            if name in reports.done:
                continue
            proc = procs[name]
            code = proc.exitcode
            if self._forked and code == 255:
                if _running(proc.pid):  # not this stage's fault
                    server_gone = True
                    continue
                if not _server_running():
                    return Failed(name, "its process died, and so did the forkserver that started it, which "
                                        "alone knew how it ended; the other stages stop, closing their files, "
                                        "as the run ends", "", 1)
            if code == 0 and self._signal is not None:
                # Stopped by the signal the run got too (a group's SIGTERM), which cut its report
                # off: it landed as the stage's first message started the queue's feeder thread.
                # Only where another stage reports that the signal reached it too: during a drain
                # that the runner alone was asked for (kill PID, the API's stop), a stage that
                # ends so sent no end of stream, and the run waited for ever.
                if reports.stopped is not None:
                    continue
                seen = self._silent.setdefault(name, time.monotonic())
                if not final and time.monotonic() - seen < SILENT_S:
                    continue
            return Failed(name, f"its process died ({_ended_by(code)}){self._out_of_memory(code)}", "", 1)
        if server_gone:
            return Failed(None, "the forkserver that started the stage processes died, so the run could not "
                                "watch them; they stop, closing their files, as the run ends", "", 1)
        return None

    def _died_in_close(self, procs: Processes, names: list[str], reports: _Reports, busy: Counters) -> None:
        """Say each of ``names`` whose process died in its close, after its stream ended, and
        that the runner did not kill. Its statistics came before its close, so that a kill there
        keeps them; it was then taken as done, and a native crash or the OOM killer as a video
        writer finished its file ended the run 0, with nothing said. It is said as a close that
        failed: what it had passed on drains on. Its busy mark, set for the close and cleared
        when the close returns, tells a death in it from one in the exit's teardown after, where
        what it wrote is whole (a late SIGHUP once Python put back its default, s62d 2, 3). A
        forked stage's 255 once its server is gone tells nothing (see ``_died``)."""
        for name in names:
            code = procs[name].exitcode
            if (name not in reports.done or name in reports.killed or name in reports.died_closing or not code
                    or not busy[name].value or self._forked and code == 255):
                continue
            reports.died_closing.add(name)
            message = (f"its process died in its close ({_ended_by(code)}){self._out_of_memory(code)}: what it "
                       "was writing may be incomplete")
            reports.take(FailedDraining(name, message, 1, False), self._who)


def _ended_by(code: int) -> str:
    """``killed by signal SIGKILL``, or ``exit code 3``: a process's exit code as a line says it.
    A real-time signal, which has no name in ``signal.Signals``, is said by its number."""
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"killed by signal {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code} ({signal.strsignal(-code) or 'unknown'})"


def _drops_for_live(graph: Graph, consumer: str, live: set[str]) -> bool:
    """Whether what is put into ``consumer``'s queues drops the oldest item when full: for a
    sink that only live sources reach. A file source's frames are never dropped, though a
    camera feeds the same sink."""
    sources = graph.sources_of(consumer)
    return issubclass(graph.stages[consumer].cls, Sink) and bool(sources) and set(sources) <= live


def _ring_slots(graph: Graph, writer: str) -> int:
    """Slots for the frame ring of a source, or of a stage that makes pictures of its own: more
    than its frames that can be in flight at once.

    Its frames can be in every queue that it or a stage downstream of it feeds, one in each
    such process's hands, and in what a stage after several workers holds to put their answers
    back in order (at most their queues' worth).
    """
    specs = [graph.stages[n] for n in graph.downstream(writer)]
    queues = sum(graph.stages[c].workers * s.workers for s in specs for c in graph.consumers(s.name))
    held = sum(graph.queue_size * s.workers for s in specs if s.workers > 1)
    return graph.queue_size * queues + sum(s.workers for s in specs) + held + 2


def _state(pid: int) -> bytes:
    """The process's state as /proc says it (R: running or waiting for a CPU, S: asleep, T:
    stopped, Z: a zombie), empty once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0]
    except OSError:
        return b""


def _running(pid: int) -> bool:
    """Whether the process is there and not a zombie."""
    return _state(pid) not in (b"", b"Z")


def _server_running() -> bool:
    """Whether the forkserver that started this run's stages is still there (or not known)."""
    pid = launch.server_pid()
    return pid is None or _running(pid)


def _empty(q) -> bool:
    try:
        return q.empty()
    except OSError:
        return True


def _drain(q: Any, timeout: float) -> list[tuple]:
    """Wait up to ``timeout`` for a first control message, then take all that are there."""
    items = []
    try:
        items.append(q.get(timeout=timeout))
        while True:
            items.append(q.get_nowait())
    except (queue.Empty, OSError, EOFError):
        return items


def _say(line: str) -> None:
    """A line on stderr that leaves a progress bar drawn below it whole."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


def _progress_bar(total: int | None):
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", file=sys.stderr, disable=not sys.stderr.isatty(),
                dynamic_ncols=True)


def report(result: RunResult, quiet: bool, debug: bool) -> None:
    """What a run prints on stderr at the end: the failure line, then the statistics table.

    Bad input (exit 2) prints its line (and any other stage's failure after it), without the
    statistics table, so it reads like a config error.
    """
    if result.exit_code:
        if debug and result.traceback:
            print(result.traceback, file=sys.stderr)
        print(f"fer-pipe: {result.message}", file=sys.stderr)
        for line in result.also:
            print(f"fer-pipe: also, {line}", file=sys.stderr)
    if not quiet and result.stats and result.exit_code != 2:
        print(format_table(result.stats), file=sys.stderr)
        first = f"{result.first_result_s:.2f} s" if result.first_result_s is not None else "none"
        print(f"wall {result.wall_s:.2f} s, first result after {first}", file=sys.stderr)
