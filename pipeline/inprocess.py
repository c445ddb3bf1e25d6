"""Stages and graphs run in the current process: for unit tests, and for tasks of an engine
(Ray) that owns the parallelism itself.

``run_stage`` runs one stage on a list of packets and returns what it emitted, with no
runner, queues or processes. ``run_graph`` pushes every packet of every source through the
graph depth-first, in the same stage order and with the same stage code as the
multi-process runner, so the outputs are the same.

Between processes every consumer gets its own copy of a packet (its queue pickles it), so a
stage that changes a packet cannot change what another branch sees. Here packets are objects
in one process, so each branch gets a copy made from a pickle as well (``handed_on``), and ``run_stage``
copies the caller's packets (``own_copy``): without them, a smoother on one branch filled the
smoothed columns of a csv sink on the other, and ``run_stage`` changed the caller's packets.
"""
from __future__ import annotations

import copy
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from functools import partial
from multiprocessing.reduction import ForkingPickler
from typing import Any, NamedTuple

import numpy as np

from .emitter import not_sent
from .errors import PLUGIN_BUGS, ConfigError, UserError, one_line, printable, said
from .graph import Graph
from .lifecycle import PacketRules, SourceFrames, finish_stage, open_stage
from .messages import FRAME, Packet, named, read_only
from .packet_checks import A_FRAME, not_a_frame
from .preflight import check_outputs, check_stages, said_as_the_stages
from .redaction import redact_urls
from .stage import Source, Stage, StageFailure, StopRun
from .stage_calls import close_stage, handle, instantiate
from .stats import StageStats
from .stop_signals import STILL_S, check_stall_timeout


ALSO = "fer-pipe: also, "
"""Begins the line of each failure of a graph's run after the one ``run_graph`` raises, as a
run says them: one exception holds one, and a batch task reported the later failure alone, or
the earlier alone, or neither of two finishes' (a batch task keeps these lines with its own)."""
LOOK_S = 0.5
"""How often a stall watch looks at the stage call in progress."""


def own_copy(packet: Packet) -> Packet:
    """A copy of everything in the packet but its pixels, which it gets as a read-only view, as
    a stage run by the runner gets shared memory: a stage that writes them fails here as it
    would there, and the caller's array is never changed. Copying a frame per consumer would
    be work for nothing."""
    image = read_only(packet.image) if isinstance(packet.image, np.ndarray) else packet.image
    return copy.deepcopy(packet, {id(packet.image): image})


def _pickled(packet: Packet) -> bytes:
    """The packet but its pixels, pickled as a run's queue pickles what a stage hands on."""
    bare = copy.copy(packet)
    bare.image = None
    # bytes, not ForkingPickler's view of its buffer: a view a traceback kept made Python 3.13 say
    # "BufferError: Existing exports of data" at exit, after the run's own line
    return bytes(ForkingPickler.dumps(bare))


def _unpickled(pickled: bytes, image: Any) -> Packet:
    packet = ForkingPickler.loads(pickled)
    packet.image = image
    return packet


def _read_only(packet: Packet, source: Source) -> Packet:
    """A source's packet with read-only pixels, as the runner's ring gives them. A copy, as the
    ring's is, unless the source declares ``fresh_frames``: a source that draws each frame into
    one buffer gave a stage that keeps frames the last frame's pixels in all of them. Read-only,
    so that a stage that writes into it, changing what the other branches see, fails here as in
    a run."""
    if isinstance(packet.image, np.ndarray):
        packet.image = read_only(packet.image if source.fresh_frames else packet.image.copy())
    return packet


def make_stage(stage: type[Stage] | str, params: Mapping[str, Any] | None = None,
               name: str | None = None) -> Stage:
    """A stage instance with validated params, its file params' ``~`` expanded as in a run;
    ``stage`` is a class or a registered type name."""
    from .config import ParamsProblem, checked_params, odd_output, unknown_type
    from .registry import registry

    if isinstance(stage, str):
        reg = registry()
        if stage not in reg.types:
            raise ConfigError(reg.problems.get(stage) or unknown_type(stage, reg.types))
        cls = reg.types[stage]
    else:
        cls = stage
    try:  # the field and the reason, as a config's
        validated = checked_params(cls, params or {}, yaml=False)
    except ParamsProblem as problem:
        raise ConfigError(".".join(("params", *problem.loc)) + f": {problem.reason}") from None
    odd = odd_output(cls, validated)
    if odd:
        raise ConfigError(f"params.{odd[0]}: {odd[1]}")
    return instantiate(cls, name or (stage if isinstance(stage, str) else cls.__name__.lower()), validated)


def run_stage(stage: Stage | type[Stage] | str, packets: Iterable[Packet] = (),
              params: Mapping[str, Any] | None = None) -> list[Packet]:
    """Check its environment (``preflight``, as a run does before any process starts), open the
    stage, feed it ``packets`` (or drain it, for a source), finish and close it. An exception from
    the stage carries what it had emitted before as its ``emitted`` list (a source that fails
    part-way: the frames it read)."""
    if not isinstance(stage, Stage):
        stage = make_stage(stage, params)
    elif params is not None:
        raise TypeError(f"run_stage: stage {stage.name!r} is already made with its params; "
                        "pass its class or type name to give params here")
    out: list[Packet] = []
    kept_ends: list[Packet] = []  # see stage_calls.keeps_ends
    check_outputs(type(stage), stage.params, stage.name)
    type(stage).preflight(stage.params)
    with _carrying(out):
        stage.open()  # and at once the try: a Ctrl-C landing between them left the stage unclosed (s60b 2)
        try:
            with suppress(StopRun):  # the stage ended the run: as in a run, what it gave is kept, and it finishes
                _feed(stage, packets, out, kept_ends)
            out.extend(_sendable(finish_stage(stage)))
            out.extend(kept_ends)
        finally:
            close_stage(stage)
    return out


@contextmanager
def _carrying(out: list[Packet]) -> Iterator[None]:
    """An exception from the block carries ``out`` as its ``emitted``: a run keeps what was
    processed before a failure, its close's included, and so does ``run_stage``'s caller."""
    try:
        yield
    except PLUGIN_BUGS as exc:
        with suppress(AttributeError):
            exc.emitted = out
        raise


def _feed(stage: Stage, packets: Iterable[Packet], out: list[Packet], kept_ends: list[Packet]) -> None:
    """``run_stage``'s packets through the stage, or its source's frames, into ``out``; the end
    packets a stage keeps until its finish into ``kept_ends``."""
    if isinstance(stage, Source):
        reader = SourceFrames(stage)  # checked and numbered as a run's
        while (packet := reader.next()) is not None:
            if isinstance(packet.image, np.ndarray) and not stage.fresh_frames:  # kept past the next frame, as
                packet.image = packet.image.copy()  # a run's ring keeps it: a reused buffer's were all the last
            out.extend(_sendable([packet]))
            reader.went_on(packet)
    else:
        if isinstance(packets, Packet):  # iterating it failed with "'Packet' object is not iterable"
            raise TypeError("run_stage: packets is a Packet, not an iterable of packets (pass [packet])")
        frames = unseen = 0
        for number, packet in enumerate(packets):
            if not isinstance(packet, Packet):  # own_copy's AttributeError named neither
                raise TypeError(f"run_stage: packets[{number}] is a {type(packet).__name__}, not a Packet")
            shown = not_a_frame(packet.image)
            if shown:  # a source's frames are checked as they come; these are the caller's own
                raise TypeError(f"run_stage: packets[{number}] has {shown} for its image; {A_FRAME}")
            if not packet.outage:
                frames += 1
                unseen += packet.faces is None
            out.extend(_sendable(handle(stage, own_copy(packet), kept_ends)))
        _say_if_unseen(stage, frames, unseen)


def _sendable(packets: list[Packet]) -> list[Packet]:
    """``packets`` once each is found to go between processes, as a run's queues take them (its
    pixels apart): a lambda in ``extra`` passed a plug-in's ``run_stage`` tests, and failed every
    run of it (s56a 3)."""
    for packet in packets:
        try:
            ForkingPickler.loads(_pickled(packet))
        except Exception as exc:
            raise StageFailure(f"on {named(packet)}: {not_sent(exc)}") from exc
    return packets


def _say_if_unseen(stage: Stage, frames: int, unseen: int) -> None:
    """Warn where every frame given to a stage that reads faces had none (``faces`` None: no
    detector had seen it). A run's graph check refuses such wiring; here the classifier gave a
    notebook's face crops back unclassified without a word. One such frame is a
    detection skipped, which a stage takes as such (the tracker carries its tracks on)."""
    reads = type(stage).reads
    if frames and unseen == frames and reads is not None and FRAME not in (
            (reads,) if isinstance(reads, str) else reads):
        warnings.warn(f"run_stage: stage {stage.name!r} reads {reads}, and none of the {frames} packet(s) had faces "
                      "(None: no detector had seen them), so it had none to work on: run a detector on them first "
                      "(run_stage('haar', ...)), or give each its faces (faces=[Face(box=(x, y, w, h))])",
                      RuntimeWarning, stacklevel=4)


class GraphRun(NamedTuple):
    """How a ``run_graph`` ended, for a caller whose stderr nobody reads (a Ray task's)."""

    skipped: int
    """Packets that stages with ``on_error: skip`` dropped."""
    stopped: bool
    """Whether a stage ended the run (``StopRun``) before the sources' end."""


def _stage_failure(graph: Graph, name: str, exc: BaseException, where: str = "") -> StageFailure:
    """A stage's bug as ``fer-pipe run`` reports it: the stage, its type and where (``on SOURCE
    frame N: ``, ``while opening: ``); a batch task's bare ``ValueError: boom`` left the user to
    guess which stage and which frame. A ``StageFailure`` (the ``lifecycle`` rules') says where
    already."""
    said_ = str(exc) if isinstance(exc, StageFailure) else f"{where}{said(exc)}"
    failure = StageFailure(f"stage {name!r} ({graph.stages[name].type_name}) failed: {said_}")
    failure.__cause__ = exc.__cause__ if isinstance(exc, StageFailure) else exc
    return failure


def _source_failure(graph: Graph, name: str, exc: BaseException) -> Exception:
    """A source's error as a run says it: bad input as it is, a bug as ``_stage_failure``."""
    return exc if isinstance(exc, UserError) else _stage_failure(graph, name, exc)


@contextmanager
def _failing_as(graph: Graph, name: str, where: str = "") -> Iterator[None]:
    """``_stage_failure`` around what the block does for a stage (building, opening, finishing);
    bad input (UserError) passes as it is. A ``StopRun`` is a failure there: building, no run
    has begun to stop (it escaped bare, s55a 5), and ``open_stage`` and ``finish_stage`` have
    dealt with theirs already. A plug-in's ``sys.exit`` too, as a run says it: bare, it ended a
    batch task's worker, which Ray retried three times before a line that named no stage (s56a 2)."""
    try:
        yield
    except UserError:
        raise
    except PLUGIN_BUGS as exc:
        raise _stage_failure(graph, name, exc, where)


@contextmanager
def _making(graph: Graph, name: str) -> Iterator[None]:
    """``_failing_as`` for a stage's building and opening, its bad input named as a run names it
    (a batch said a plug-in's missing labels file as the video's own); a source's stays its
    input's, as its read failures do."""
    try:
        with _failing_as(graph, name):
            yield
    except UserError as exc:
        if graph.stages[name].is_source:
            raise
        raise _as_a_run_says(graph, name, exc)


def _built(graph: Graph, name: str) -> Stage:
    """The stage built, what its ``__init__`` raises said as a run says it (a bare error named no
    stage): a source's as the runner's parent, which builds it first, says it ("failed before
    the run (its __init__)"), its bad input left as it is; another's as ``_making`` says it (s55a 5, 6)."""
    spec = graph.stages[name]
    if spec.is_source:
        with said_as_the_stages(graph, spec, False, "its __init__"):
            return spec.build()
    with _making(graph, name):
        return spec.build()


def _close_all(graph: Graph, stages: dict[str, Stage], opened: list[str], busy: _Busy) -> list[tuple[Exception, str]]:
    """Close every opened stage, the last first; each failure, with its line as a run says it
    (``_line``). One failing close left the stages before it unclosed, their files unflushed; a
    StopRun raised there (no failure elsewhere) escaped as it was, and closed none after it. A
    Ctrl-C in one close is raised once the others are closed."""
    failures = []
    interrupted: BaseException | None = None
    for name in reversed(opened):
        try:
            with busy(name, " while closing", graph.stages[name].closing_s):
                close_stage(stages[name])
        except PLUGIN_BUGS as exc:
            failure = (_as_a_run_says(graph, name, exc, "while closing: ") if isinstance(exc, UserError) else
                       _stage_failure(graph, name, exc, "while closing: "))
            failures.append((failure, one_line(str(failure))))
        except BaseException as exc:  # a Ctrl-C in one close (a host's, a Ray cancel's) closed none after it
            interrupted = interrupted or exc
    if interrupted is not None:
        _say_also(failures)  # the run cannot raise them now: the interrupt goes on
        raise interrupted
    return failures


def _say_also(failures: list[tuple[Exception, str]]) -> None:
    for _, line in failures:
        print(f"{ALSO}{printable(redact_urls(line))}", file=sys.stderr)  # as a run says them


def _as_a_run_says(graph: Graph, name: str, exc: UserError, where: str = "") -> UserError:
    """A stage's bad input worded as a run says it, its stage named, with its exit code and the
    stage's own exception as its cause: raised as the stage raised it, a batch's line read as
    the video's damage ("a.mp4: summary file unreadable; 6 rows of it are kept in a.partial.csv").
    A ``UserError``, not a copy of the stage's: a plug-in's own kind may take other
    arguments, or word itself."""
    named = UserError(_line(graph, name, exc, where))
    named.exit_code = exc.exit_code
    named.__cause__ = exc
    return named


def _line(graph: Graph, name: str, exc: Exception, where: str = "") -> str:
    """A failure on one line, its stage named, as a run says it (a ``StageFailure`` here names it
    already): bad input's own text said neither, and its second line stood alone."""
    if isinstance(exc, StageFailure):
        return one_line(str(exc))
    return f"stage {name!r} ({graph.stages[name].type_name}) failed: {where}{one_line(str(exc))}"


def run_graph(graph: Graph, on_stall: Callable[[str], None] | None = None, stall_timeout: float = 120.0) -> GraphRun:
    """Run a whole graph in this process, sources one after another.

    A stage with ``on_error: skip`` drops a frame that makes it raise, with the runner's line,
    and the run goes on (an outage packet is no frame: a failing ``outage`` hook fails the run, as
    in the runner): a batch task failed its whole video on the frame that ``fer-pipe run``
    skips. A stage that raises ``StopRun`` ends the run as in the runner: it passes nothing on
    from then, the sources read no further frame, and every stage finishes and closes. Any
    other exception is raised as a ``StageFailure`` that names the stage and the frame; a
    source's, once what it read has gone through every stage and its ``finish``, as in a run
    (a batch task's partial CSV lacked what a stage holds until then); a stage's in its
    ``finish`` or ``close``, once every other stage has finished and every stage is closed.
    Each stage's ``preflight`` runs first, as in a run: a task's missing display was a crash of
    its whole process. Where several fail, the one that ended the run is raised (else the first
    of those after which the run drained), and the others are said on stderr (``ALSO``).

    ``on_stall``, where given, is called once, from another thread, with the line a run fails
    with when a stage is in one call (a packet, its open, finish or close, a source's read) for
    ``stall_timeout`` seconds (a close, its ``closing_s`` more; a stage's ``waiting_outside``
    starts the time again, as in a run): that call goes on, since a thread cannot be stopped
    from outside, so the caller ends it (a batch's driver cancels the task, which kills its
    process)."""
    if not isinstance(graph, Graph):  # a config given as results() takes one: AttributeError 'stages' (s64f 7)
        raise TypeError(f"run_graph takes a Graph, not a {type(graph).__name__}: make one from a YAML path or a "
                        "config dict with fer_pipe.config.load_graph")
    check_stall_timeout(stall_timeout, "run_graph")
    busy = _Busy()
    with _stall_watch(graph, busy, on_stall, stall_timeout):
        return _run_graph(graph, busy)


class _Busy:
    """The stage whose call the graph's one thread is in, where, and since when, as one tuple
    (None: in none), which a stall watch reads whole from its own thread; as the runner reads
    each stage process's mark."""

    def __init__(self) -> None:
        self.mark: tuple[str, str, float] | None = None
        self._next = ("", "", 0.0)

    def __call__(self, stage: str, where: str = "", more_s: float = 0.0) -> _Busy:
        self._next = (stage, where, more_s)
        return self

    def __enter__(self) -> None:
        stage, where, more_s = self._next
        self.mark = (stage, where, time.monotonic() + more_s)

    def __exit__(self, *_: object) -> None:
        self.mark = None

    def waiting_outside(self) -> None:
        """A stage's wait on purpose (``Stage.waiting_outside``): its call's time starts again."""
        if self.mark is not None:
            self.mark = (*self.mark[:2], time.monotonic())


@contextmanager
def _stall_watch(graph: Graph, busy: _Busy, on_stall: Callable[[str], None] | None,
                 stall_timeout: float) -> Iterator[None]:
    """A thread that calls ``on_stall`` once ``busy``'s call has lasted ``stall_timeout``. As the
    runner judges a stall: the same call seen past the timeout on two looks."""
    if on_stall is None or not stall_timeout:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        stale, last, resumed = None, time.monotonic(), 0.0
        while not done.wait(LOOK_S):
            now, mark = time.monotonic(), busy.mark
            if now - last > STILL_S:  # the watch did not run either: a paused VM, a stopped process
                resumed = now
            last = now
            if mark is None or now - max(mark[2], resumed) <= stall_timeout:
                continue
            if mark == stale:
                stage, where, _ = mark
                on_stall(f"stage {stage!r} ({graph.stages[stage].type_name}) failed: no progress for "
                         f"{stall_timeout:g} s{where} (stalled)")
                return
            stale = mark

    watcher = threading.Thread(target=watch, name="fer-pipe stall watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


def _run_graph(graph: Graph, busy: _Busy) -> GraphRun:
    check_stages(graph, named=False)
    stages: dict[str, Stage] = {}
    for name in graph.order():
        stages[name] = _built(graph, name)
        stages[name].waiting_outside = busy.waiting_outside
    consumers = {name: graph.consumers(name) for name in stages}
    stopped_by: set[str] = set()
    rules = {name: PacketRules(stage, name, StageStats(name), graph.stages[name].on_error == "skip", [],
                               partial(stopped_by.add, name)) for name, stage in stages.items()}
    opened: list[str] = []

    def process(name: str, packet: Packet) -> list[Packet]:
        try:
            with busy(name):
                return rules[name](packet)
        except StageFailure as exc:
            raise _stage_failure(graph, name, exc)
        except UserError as exc:
            raise _as_a_run_says(graph, name, exc)  # its cause, exc, set there

    def push(name: str, packets: Iterable[Packet]) -> None:
        for packet in packets:
            if isinstance(packet.image, np.ndarray):  # a stage's own picture: read-only to every branch after
                packet.image = read_only(packet.image)  # it, as the runner hands it on
            branches = consumers[name]
            for consumer, mine in zip(branches, handed_on(name, packet, len(branches))):
                push(consumer, process(consumer, mine))

    def handed_on(name: str, packet: Packet, count: int) -> list[Packet]:
        """A copy of ``packet`` for each branch, made from its pickle, as each consumer in a run
        unpickles its own; none for a sink. What cannot go between processes (a lock, a lambda
        in ``extra``, an exception whose ``__init__`` its pickle cannot call again) is this
        stage's failure on that frame, or its skip. A deep copy at a fan-out took a lambda, and
        blamed the stage that fanned out, not the one that put the lock there, its ``on_error``
        deciding (s55a 1, 2); a pickle that would not load escaped bare, and passed unread
        where one branch had the packet itself (s56a 1)."""
        if not count:
            return []
        try:
            pickled = _pickled(packet)
            return [_unpickled(pickled, packet.image) for _ in range(count)]
        except Exception as exc:
            try:
                return rules[name].failed(packet, exc, not_sent(exc))
            except StageFailure as failure:
                raise _stage_failure(graph, name, failure)

    failed: list[tuple[Exception, str]] = []  # a stage's failure that ended the run: said first, as a run says it
    draining: list[tuple[Exception, str]] = []  # those after which what was read still drains (a source's, a finish's)
    try:
        for name, stage in stages.items():
            with _making(graph, name):
                with busy(name, " while opening"):
                    open_stage(stage)
                    opened.append(name)  # at once: a Ctrl-C in the with blocks' ends left it unclosed (s60b 2)
        for name, stage in stages.items():
            if not isinstance(stage, Source):
                continue
            reader = SourceFrames(stage)
            while not stopped_by:
                try:
                    with busy(name):
                        packet = reader.next()
                    if packet is None:
                        break
                except StopRun:  # a source's own end of the run: the others read no further
                    stopped_by.add(name)
                    break
                except PLUGIN_BUGS as exc:
                    failure = _source_failure(graph, name, exc)
                    if reader.last_index is None:
                        raise failure
                    # as in a run: what was read still goes through every stage and its finish,
                    # other files are read on, and a camera's failure stops the other sources
                    draining.append((failure, _line(graph, name, failure)))
                    if stage.live:
                        stopped_by.add(name)
                    break
                reader.went_on(packet)
                push(name, [_read_only(packet, stage)])
            if not stopped_by:
                push(name, reader.end())
        for name, stage in stages.items():
            try:
                with _failing_as(graph, name, "while finishing: "):
                    with busy(name):
                        held = finish_stage(stage)
            except (UserError, StageFailure) as exc:  # as in a run: what it passed on still goes through the others' finish
                named = _as_a_run_says(graph, name, exc) if isinstance(exc, UserError) else exc
                draining.append((named, one_line(str(named))))
                held = []
            push(name, [*held, *rules[name].ends()])
    except (UserError, StageFailure) as exc:
        failed.append((exc, one_line(str(exc))))
    finally:
        unclosed = _close_all(graph, stages, opened, busy)
    failures = [*failed, *draining, *unclosed]
    _say_also(failures[1:])
    if failures:
        raise failures[0][0]
    return GraphRun(sum(r.stats.skipped for r in rules.values()), bool(stopped_by))
