"""Run a graph from Python and react to each frame's results in your own code, as they come.

    from fer_pipe.api import results

    if __name__ == "__main__":  # stage processes are spawned: they import this script
        with results("configs/video_to_csv.yaml", overrides=["source.path=clip.mp4"]) as stream:
            for event in stream:
                for face in event["faces"]:
                    print(event["source"], event["frame"], face["label"], face["confidence"])

Each item is a frame event in the documented schema of ``fer_pipe.events`` (the ZeroMQ sink's
JSON), one per frame, faces or not; with ``outages=True``, also a live source's ``source_down``
and ``source_up`` events, which have no ``faces`` (check ``event["type"]``). The graph runs in the usual multi-process runner, with its
own sinks (CSV, video, ZeroMQ) working as in ``fer-pipe run``. A hidden sink reads what the
graph's sinks read and sends each result, never pixels, to this process over a ZeroMQ PAIR
socket on a private ``ipc://`` path; a send blocks when this side is slow, so a file run loses
nothing and simply waits for the loop body (with live sources alone, the hidden sink drops its
oldest frames, as any sink that falls behind them does, once the socket is full: hundreds of
results fit in it before). At
the end, the hidden sink waits for this side's word that it has read the end marker: a sender
whose process ended while the reader was still behind lost the results in transit (181 of 2,200
with a loop body of 2 ms), even with ZeroMQ's linger.
"""
from __future__ import annotations

import ast
import atexit
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import zmq
from pydantic import Field

from .config import load_graph
from .errors import ConfigError, InputError, UserError
from .events import as_json, frame_event
from .graph import Graph, StageSpec, check_edges
from .messages import FACES, Packet
from .outage_notices import OutageNotices
from .redaction import redact_urls
from .runner import Runner, RunResult
from .stage import Sink, StageParams
from .stop_signals import check_stall_timeout, runner_gone

TAP_NAME = "_api_results"
END, READ = b"end", b"read"


class RunFailed(RuntimeError):
    """The run ended with a non-zero exit code; ``result`` holds its message and statistics.

    Raised from a ``StageTraceback`` holding the failed stage's traceback, where there is one, so
    that an uncaught failure, ``logging.exception`` and pytest show where in the stage it failed.
    """

    def __init__(self, result: RunResult) -> None:
        super().__init__(result.message or f"the run ended with exit code {result.exit_code}")
        self.result = result


class BadInputFound(RunFailed, InputError):
    """A run that bad input ended after it started (exit code 2: a video cut short, a plug-in's
    ``InputError`` on a frame): a ``RunFailed`` whose results so far were yielded, and an
    ``InputError``, so that ``except UserError`` tells bad input from a fault of the pipeline
    however late the input was found to be bad."""


class StageTraceback(Exception):
    """A failed stage's traceback, as its process printed it."""

    def __str__(self) -> str:
        return "\n" + self.args[0]


class ForwardParams(StageParams):
    endpoint: str = Field(description="the results stream's socket in the calling process")
    precision: int = Field(6, ge=1, le=9, description="decimals of probabilities and confidence")
    outages: bool = Field(False, description="also a live source's source_down and source_up events")


class ForwardSink(Sink):
    """The hidden sink: every frame's results, and with ``outages`` a live source's outage
    events, as JSON, to the process that called ``results``."""

    Params = ForwardParams
    params: ForwardParams
    reads = FACES

    def open(self) -> None:
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PAIR)
        self._sock.connect(self.params.endpoint)
        # once per outage: the caller's loop hears from the start, so a repeat tells it nothing
        self._outages = OutageNotices(0.0) if self.params.outages else None

    def consume(self, packet: Packet) -> None:
        if self._outages is not None:
            back = self._outages.on_frame(packet)
            if back is not None:
                self._send(back)
        self._send(frame_event(packet, self.params.precision))

    def outage(self, packet: Packet) -> Iterable[Packet]:
        """Say the source down once per outage (``fer_pipe.outage_notices``); as a sink's, it
        passes nothing on."""
        down = None if self._outages is None else self._outages.on_outage(packet)
        if down is not None:
            self._send(down)
        return ()

    def _send(self, event: dict[str, Any] | bytes) -> None:
        """Waits for the caller's loop to take it, however long: a loop stopped at a breakpoint
        or a prompt failed a file run as a stall of this stage, its queued results lost. The end
        marker (bytes) waits here too: sent blocking, it failed the run the same way where the
        socket was full as the video ended."""
        message = event if isinstance(event, bytes) else as_json(event)
        while True:
            try:
                self._sock.send(message, zmq.NOBLOCK)
                return
            except zmq.Again:  # the socket is full: the loop is behind, or paused
                if self.stop_requested():
                    return
                self.waiting_outside()
                self._sock.poll(500, zmq.POLLOUT)

    def finish(self) -> Iterable[Packet]:
        """The end marker, then wait until the caller says it has read it, so that nothing is
        still in transit when the process ends. The wait is on the caller's loop, however slow,
        so it is said to be on the outside world (not a stall); a stop ends it."""
        self._send(END)
        while not self._sock.poll(500):
            if self.stop_requested():
                break
            self.waiting_outside()
        return ()

    def close(self) -> None:
        self._sock.close(linger=0)
        self._ctx.term()
        if runner_gone():  # the caller died (SIGTERM's default, from timeout or docker stop): its folder is left to us
            shutil.rmtree(os.path.dirname(self.params.endpoint.removeprefix("ipc://")), ignore_errors=True)


def _add_tap(graph: Graph, tap: str | None, endpoint: str, outages: bool) -> None:
    """Feed the hidden sink from ``tap``, or from the one stage that feeds the graph's sinks."""
    if tap is None:
        fed = dict.fromkeys(n for s in graph.ends()
                            for n in (s.inputs if issubclass(s.cls, Sink) else [s.name]))
        if len(fed) != 1:
            raise ConfigError(f"{graph.origin}: the graph's sinks read from {', '.join(fed) or 'nothing'}; "
                              "name the stage whose results you want with tap=")
        tap = next(iter(fed))
    if tap not in graph.stages:
        raise ConfigError(f"{graph.origin}: tap={tap!r}: no stage of that name")
    if TAP_NAME in graph.stages:  # replaced without a word, its output was lost
        raise ConfigError(f"{graph.origin}: stage {TAP_NAME!r}: the name results() gives its hidden sink; "
                          "rename the stage")
    graph.stages[TAP_NAME] = StageSpec(TAP_NAME, "api results", ForwardSink,
                                       ForwardParams(endpoint=endpoint, outages=outages), [tap])
    for spec, message in check_edges(graph):
        raise ConfigError(f"{graph.origin}: tap={tap!r}: {message}")


class ResultStream:
    """Iterable over frame events (and outage events, if asked) while the graph runs; a context
    manager that stops it early. It is read by one loop: a loop that ends early (a ``break``,
    ``islice``, a peek with ``next(iter(stream))``) stops the run, as ``close`` does.

    After the last item, ``result`` holds the run's ``RunResult``; a failed run raises
    ``RunFailed`` (or the ``UserError`` that stopped it before it started) once every result
    that reached this process has been yielded.
    """

    def __init__(self, graph: Graph, folder: str, endpoint: str, stall_timeout: float) -> None:
        self._dir = folder
        self._ctx = zmq.Context()
        self._results = self._ctx.socket(zmq.PAIR)
        try:
            self._results.bind(endpoint)
        except zmq.ZMQError as exc:  # an ipc path is limited to about 107 bytes: a long TMPDIR
            self._results.close(linger=0)
            self._ctx.term()
            raise InputError(f"results: cannot listen on {endpoint}: {exc}; a shorter TMPDIR helps") from None
        self._runner = Runner(graph, progress=False, stall_timeout=stall_timeout)
        self.result: RunResult | None = None
        self._error: BaseException | None = None
        self._reader: int | None = None  # the thread iterating, which alone uses the socket then
        self._using = threading.Lock()  # held by the iterating thread while it waits on the socket
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="fer-pipe-runner", daemon=True)
        # The thread runs the graph once told to go, after its start has returned: a Ctrl-C
        # inside Thread.start (it waits for the thread) left a run that no stream held, and the
        # caller's exit waited for ever on its stages; one landing before the thread was seen
        # alive could not be stopped as a run is (s60b 4, s60f 2).
        self._go = threading.Event()
        self._cancelled = False
        # A stream never read to its end nor closed (the script ended, or raised before its
        # loop): the interpreter would tear the runner's thread down mid-run, an abort (exit
        # 134) with the sinks' files open. At exit, the run is stopped as ``close`` stops it.
        try:  # registered inside: a stop as the registration returned left the stream held until exit
            atexit.register(self.close)
            self._thread.start()
            self._go.set()
        except BaseException:
            self._cancelled = True
            self._go.set()
            self.close()
            raise

    def _run(self) -> None:
        self._go.wait()
        if self._cancelled:
            return
        try:
            self.result = self._runner.run()
        except BaseException as exc:  # handed to the caller's thread
            self._error = exc

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._results.closed:  # read to its end, or closed, before: nothing more comes
            return
        self._reader = threading.get_ident()
        try:
            while True:
                with self._using:
                    message = None if self._results.closed else self._next_message()
                if message is None:
                    break
                if not self._stopped:  # after a stop what is left is drained, not handed out
                    yield json.loads(message)
            self._thread.join()
        except GeneratorExit:
            # Closed as the loop's Ctrl-C unwinds it: a second Ctrl-C during the drain stops the
            # run and cleans up in close, but raised here it was "Exception ignored in" with a
            # traceback of fer-pipe's, the first already on its way to the caller.
            with contextlib.suppress(KeyboardInterrupt), self._using:
                self._end()
            raise
        finally:
            with self._using:
                self._end()
            self._reader = None
        if self._error is not None:
            if isinstance(self._error, UserError):  # its line may quote a URL, as the CLI's does
                self._error.args = (redact_urls(str(self._error)),)
                if self._error.__suppress_context__:  # not shown, and it holds the line unmasked
                    self._error.__context__ = None
            raise self._error
        stopped_by_close = self._stopped and self.result is not None and self.result.exit_code == 130
        if self.result is not None and self.result.exit_code and not stopped_by_close:
            failed = (BadInputFound if self.result.exit_code == 2 else RunFailed)(self.result)
            raise failed from (StageTraceback(self.result.traceback) if self.result.traceback else None)

    def _next_message(self) -> bytes | None:
        """The next result, or None at the end of the stream: its marker read, or the run ended
        without one (failed or stopped)."""
        while True:
            if self._results.poll(100):
                message = self._results.recv()
                if message != END:
                    return message
                self._say_read()
                return None
            if not self._thread.is_alive() and not self._results.poll(500):
                return None

    def close(self) -> None:
        """Stop the run if it is still going (sources stop, the graph drains), and clean up.

        A Ctrl-C while it waits for the drain is a second stop, as for ``fer-pipe run``: the run
        stops at once, the clean-up is done, then the interrupt goes on. It used to end the wait
        with nothing cleaned up and the stop at exit unregistered.

        While a loop reads the stream, it asks the run to stop, and the loop ends as at the end
        of the stream. Where the reader waits at a ``yield`` (the loop's body, a ``next`` not yet
        called again) it then waits for the run and cleans up, from any thread: one read with
        ``next`` from a worker thread and never resumed held its socket and context for good, 7
        descriptors a stream (s64f 2, s64g 4). Where the reader waits on the socket (a signal
        handler run inside its wait, another thread while it drains), the socket is the
        reader's, which drains what is left and cleans up: closing it there raised a ZMQError in
        the loop (s64f 1), and closing both from two threads at once a ZMQError in one."""
        if self._reader is not None:
            self._stopped = True
            self._runner.stop()
            mine = self._reader == threading.get_ident()
            if not mine:
                self._thread.join()
            if self._using.acquire(blocking=False):  # the reader waits at a yield: the socket is free
                try:
                    self._end()
                finally:
                    self._using.release()
            elif not mine:
                # the run has ended, so its folder is no longer needed to connect: gone now, it is
                # not left behind where the reader is a daemon thread the interpreter stops at exit
                shutil.rmtree(self._dir, ignore_errors=True)
            return
        self._end()

    def _end(self) -> None:
        """Stop the run if it is still going, wait for it to end, and clean up."""
        if self._thread.is_alive():
            self._runner.stop()
            try:
                self._wait_for_runner()
            except KeyboardInterrupt:
                self._runner.stop()
                self._wait_for_runner()
                self._clean_up()
                raise
        self._clean_up()

    def _wait_for_runner(self) -> None:
        while self._thread.is_alive():
            # keep the hidden sink unblocked while the graph drains, and let it end at once
            if self._results.poll(100) and self._results.recv() == END:
                self._say_read()

    def _clean_up(self) -> None:
        atexit.unregister(self.close)
        if not self._results.closed:
            self._results.close(linger=0)
            self._ctx.term()
            shutil.rmtree(self._dir, ignore_errors=True)

    def _say_read(self) -> None:
        """Tell the hidden sink that its end marker, and so everything before it, was read."""
        with contextlib.suppress(zmq.Again):  # it is waiting for this; if it has gone, nobody is
            self._results.send(READ, zmq.NOBLOCK)

    def __enter__(self) -> ResultStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


GUARD_NAMES = {"__name__", "current_process"}


def _unguarded_line() -> int | None:
    """The line of the calling script's top level that led to this call, where no guard (an ``if``
    that tests ``__name__``) holds it: a spawned stage process runs that line again as it imports
    the script, and each then failed with multiprocessing's bootstrapping traceback while the run
    blamed whichever stage died first. None where the script cannot be read (no false alarm)."""
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None and (name == "__main__" or name.endswith(".__main__")):
        return None  # multiprocessing's own rule: a package's __main__ (python -m pkg, python dir/) is not imported
    if name is None and getattr(main, "__file__", None) is None:
        return None  # nor is a __main__ of no file: a notebook, whose debugger's copy of a cell was read
    top = None
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals is getattr(main, "__dict__", None):
            top = frame
        frame = frame.f_back
    if top is None:
        return None
    try:
        tree = ast.parse(Path(top.f_code.co_filename).read_bytes())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and node.lineno <= top.f_lineno <= (node.end_lineno or node.lineno) and \
                any(getattr(name, "id", getattr(name, "attr", None)) in GUARD_NAMES for name in ast.walk(node.test)):
            return None
    return top.f_lineno


def _no_children_here() -> str:
    """Why this process cannot run stage processes of its own, if it cannot: a daemon process
    may start none (a Pool worker got multiprocessing's AssertionError from the runner's thread,
    and 31 leaked semaphores), and where SIGCHLD is ignored the kernel takes each child's exit
    status, so the runner never saw its stages end and the loop hung after the last result."""
    if multiprocessing.current_process().daemon:
        return ("this is a daemon process (a multiprocessing.Pool worker?), which may not start the stage "
                "processes a run needs; call it from a process that is not a daemon, or run the graph in this "
                "process with fer_pipe.inprocess.run_graph")
    if signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN:
        return ("this process ignores SIGCHLD, so the exits of the stage processes a run starts cannot be "
                "watched; restore it first: signal.signal(signal.SIGCHLD, signal.SIG_DFL)")
    return ""


def results(config: str | Path | Mapping[str, Any], overrides: Iterable[str] = (), tap: str | None = None,
            stall_timeout: float = 120.0, outages: bool = False) -> ResultStream:
    """Start a graph (a YAML path or a config dict, with ``stage.param=value`` overrides) and stream
    each frame's results as dicts.

    ``tap`` names the stage whose output you want; by default it is the stage that feeds the
    graph's sinks (the classifier in the shipped configs). ``outages``: also a live source's
    ``source_down`` (once per outage) and ``source_up`` events, so that a loop can tell a camera
    that is down from one that sees no face. Config errors raise ``ConfigError`` here, before
    anything starts.
    """
    if not isinstance(outages, bool):
        raise ConfigError(f"results: outages: expected True or False, got {outages!r}")
    check_stall_timeout(stall_timeout, "results")
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    if main is not None and getattr(sys.modules["__main__"].__spec__, "name", None) is None and \
            not os.path.isfile(main):
        raise InputError(f"results: the stage processes import the calling script again, and {main} is not a "
                         "file (a script read from standard input?); save it to a file and run that")
    unguarded = _unguarded_line()
    if unguarded is not None:
        raise InputError(f"results: called from line {unguarded} of {main}, outside an `if __name__ == "
                         "\"__main__\":` block; each stage process imports the script and would run that line "
                         "again, starting runs of its own: put it under the guard")
    refusal = _no_children_here()
    if refusal:
        raise InputError(f"results: {refusal}")
    graph = load_graph(config, overrides)
    folder = tempfile.mkdtemp(prefix="fer-pipe-api-")  # private (0700): only this user reaches the socket
    endpoint = f"ipc://{folder}/results"
    try:
        _add_tap(graph, tap, endpoint, outages)
        return ResultStream(graph, folder, endpoint, stall_timeout)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
