"""A third-party stage that injects faults, registered from outside the package for real.

``install_plugin`` writes a module and a ``*.dist-info`` folder (METADATA and
``entry_points.txt`` for the ``fer_pipe.stages`` group) into a temporary folder; with that
folder on PYTHONPATH, ``importlib.metadata`` finds the distribution exactly as it finds an
installed wheel, so ``fer-pipe run`` loads the stage through the same registry path as any
user's plug-in. The stage reads frames and writes (empty) expressions, so a graph
video -> faulty -> csv runs without the model and starts in a second or two.
"""
from __future__ import annotations

import contextlib
import csv
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from fer_pipe.frames import SHM
from livetools import sighup_default

PLUGIN_SOURCE = '''
"""fault injection stage for fer-pipe's reliability tests."""
import os
import signal
import sys
import time
from typing import Literal

from pydantic import Field

from fer_pipe.messages import EXPRESSIONS, FRAME, Face, Packet, outage
from fer_pipe.stage import Sink, Source, Stage, StageParams, StopRun


class FaultyParams(StageParams):
    mode: Literal["ok", "raise", "hang", "pause", "preflight", "open", "bad_open", "init", "bad_init", "idle", "slow_open", "hang_close",
                  "not_a_packet", "stop_run", "unpicklable", "finish", "exit_finish", "bad_input", "outage_flag",
                  "outage_raise", "exit_on_stop", "hold", "float_image", "close", "exit_preflight", "print", "hold_anew",
                  "stop_finish", "unprintable", "redraw", "enlarge", "scribble", "unlock", "callback", "stop_init", "unloadable", "exit_init", "exit",
                  "wait_outside", "stopped_opening", "stopped_closing", "copy_image", "opencv_image",
                  "spin_idle", "stuck"] = Field(
        "ok", description="what to do on the frames in at (preflight, open, idle: raise there instead; "
                          "bad_open: raise an InputError in open, saying close_says; init: raise in __init__; stop_init: raise StopRun there; bad_init: raise an InputError there, saying close_says; "
                          "slow_open: open takes 60 s, and makes its own error of anything that cuts it short, "
                          "as a library's import does; hang_close: close never returns; stop_run: end the run; "
                          "unpicklable: put a lock in packet.extra; callback: put a lambda there; unloadable: an exception whose pickle does not load; exit_init: sys.exit in __init__; exit: sys.exit on the frames in at; unprintable: raise an exception whose message fails; finish: raise a two-line error in finish; exit_finish: sys.exit there; bad_input: raise a two-line InputError; "
                          "outage_flag: a flag of its own named outage, on the frame's extra and on the stage; "
                          "outage_raise: raise on a source's outage, whatever at says; "
                          "exit_on_stop: on the first frame once the run is stopping, exit 0 without a word, "
                          "as a native library's exit(0) would, whatever at says; hold: pass every frame "
                          "on from finish, not before; float_image: pass on a float image; close: raise in close; exit_preflight: sys.exit(4) in preflight; print: print a line on stdout, in preflight and on the frames in at; hold_anew: as hold, each passed on as a Packet made anew, without its picture; stop_finish: raise StopRun in finish; "
                          "redraw: pass on a copy of the picture, as a stage that draws makes one; enlarge: pass on the picture "
                          "made twice as wide and high; scribble: draw into "
                          "packet.image; unlock: set the writeable flag of packet.pixels() and draw into it; wait_outside: wait pause_s "
                          "on the frames in at, saying waiting_outside() every 0.2 s; stopped_opening: a SIGTERM lands "
                          "once open has returned, inside the put that tells the runner so, and close writes "
                          "'closed' in seen_file; stopped_closing: as stopped_opening, with the SIGTERM landing as "
                          "the stage process begins to close it, after its stream ended; copy_image: "
                          "packet.image.copy(); opencv_image: cv2.cvtColor(packet.image), reading packet.image as "
                          "pixels, as an array in one process; spin_idle: an idle hook, every 0.01 s, that spins "
                          "for ever once the frames in at were seen; stuck: as hang, deaf to SIGTERM, as a process blocked in "
                          "native code that retries its call on EINTR (an X call to a stopped server))")
    at: list[int] = Field([], description="the frame indexes that trigger the fault")
    delay_s: float = Field(0.0, ge=0.0, description="sleep per frame, so a run lasts long enough")
    pause_s: float = Field(0.0, ge=0.0, description="with mode pause: sleep this long on the frames in at; with "
                                                    "mode raise: this long before raising")
    read_pixels: Literal["no", "after", "before"] = Field(
        "no", description="read each frame's pixels after any pause, or before it (and hold the view)")
    pid_file: str = Field("", description="write this process's pid here on open")
    open_s: float = Field(0.0, ge=0.0, description="open takes this long, as a model loading does")
    seen_file: str = Field("", description="append each frame index handled here, line by line")
    self_drops: bool = Field(False, description="count each frame in the stage's own dropped attribute")
    tag: str = Field("", description="put in each frame's extra data as tag (to tell branches apart)")
    armed_file: str = Field("", description="with a path: fault (on frames and raising in close) only while this "
                                            "file exists, so a rerun with the same config finds the bug mended, as "
                                            "a fix in code would")
    once_file: str = Field("", description="with a path: fault once in the run, on the first frame at or after "
                                           "the least of at that any worker meets (a live replay on a busy "
                                           "machine skips late frames, at's own among them), and write its "
                                           "index there")
    close_too: Literal["", "raise", "bad_input", "hang", "die"] = Field(
        "", description="in close, raise (bad_input: an InputError) or hang, whatever the mode; die: a second "
                        "into it (its statistics sent before it are in), SIGKILL its own process, as the kernel's "
                        "out-of-memory killer would")
    close_says: str = Field("upload of the summary failed", description="what raising in close says")
    idle_every: float | str | None = Field(None, description="set idle_s to this on open (a number or, a bug, "
                                                             "a text)")
    close_s: float = Field(0.0, ge=0.0, description="declare that close may wait this long (closing_s), as an "
                                                    "rtsp source's does")
    close_takes_s: float = Field(0.0, ge=0.0, description="close sleeps this long first, as a sink delivering "
                                                          "what it queued does")


class Unprintable(Exception):
    """A library's exception whose message cannot be made (a ``__str__`` that fails)."""

    def __str__(self) -> str:
        raise RuntimeError("no message")


class Coded(Exception):
    """An exception that pickles, and whose pickle does not load: it calls __init__ with args alone."""

    def __init__(self, text: str, code: int) -> None:
        super().__init__(text)
        self.code = code


class Faulty(Stage):
    Params = FaultyParams
    reads = FRAME
    writes = EXPRESSIONS
    parallel = True  # nothing kept between packets but the log file each worker appends to

    def __init__(self, name, params):
        super().__init__(name, params)
        if params.mode == "init":
            raise RuntimeError("no licence for this model")
        if params.mode == "stop_init":
            from fer_pipe.stage import StopRun

            raise StopRun()
        if params.mode == "exit_init":
            sys.exit("no GPU here")
        if params.mode == "bad_init":
            from fer_pipe.errors import InputError

            raise InputError(params.close_says)

    @classmethod
    def closing_s(cls, params):
        return params.close_s

    @classmethod
    def preflight(cls, params):
        if params.mode == "preflight":
            raise ValueError("injected fault in preflight")
        if params.mode == "exit_preflight":
            sys.exit(4)
        if params.mode == "print":  # in the run's own process: plug-in code runs there too
            print("checking a printing stage")

    def open(self):
        if self.params.mode == "idle":
            self.idle_s = 0.05  # only here: the other tests keep the blocking wait of most stages
        if self.params.mode == "spin_idle":
            self.idle_s = 0.01  # within a live replay's 40 ms between frames
        if self.params.mode == "open":
            raise RuntimeError("injected fault in open")
        if self.params.mode == "bad_open":
            from fer_pipe.errors import InputError

            raise InputError(self.params.close_says)
        time.sleep(self.params.open_s)
        if self.params.mode == "slow_open":
            try:
                time.sleep(60)
            except BaseException:
                raise RuntimeError("initialization failed") from None
        if self.params.pid_file:
            with open(self.params.pid_file + ".part", "w") as f:
                f.write(str(os.getpid()))
            os.replace(self.params.pid_file + ".part", self.params.pid_file)
        self._seen = open(self.params.seen_file, "a", buffering=1) if self.params.seen_file else None
        self._held = []
        self._spin = False
        if self.params.idle_every is not None:
            self.idle_s = self.params.idle_every
        if self.params.mode == "stopped_opening":
            from fer_pipe import worker
            from fer_pipe.stop_signals import Terminated

            def stopped(process):
                raise Terminated(15)

            worker.Opened = stopped
        if self.params.mode == "stopped_closing":
            from fer_pipe import stop_signals, worker

            def stopped_as_it_begins():
                stop_signals.terminate(15, None)  # what the handler does, at the call's first line

            worker.ignore_sigterm = stopped_as_it_begins

    def _fires(self, index):
        if self.params.once_file:
            if index < min(self.params.at):
                return False
            try:  # the first worker there takes it
                fd = os.open(self.params.once_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return False
            os.write(fd, str(index).encode())
            os.close(fd)
            return True
        return index in self.params.at and (not self.params.armed_file or os.path.exists(self.params.armed_file))

    def outage(self, packet):
        if self.params.mode == "outage_raise":
            raise ValueError("injected fault on an outage")
        return (packet,)

    def process(self, packet):
        packet.faces = packet.faces or []  # it writes faces: [] says it looked and found none
        if self.params.tag:
            packet.extra["tag"] = self.params.tag
        if self.params.mode == "hold":
            self._held.append(packet)
            return ()
        if self.params.mode == "hold_anew":
            self._held.append(Packet(packet.source, packet.index, packet.timestamp, faces=packet.faces))
            return ()
        if self.params.mode == "exit_on_stop" and self.stop_requested():
            time.sleep(0.5)  # its queues' feeder threads send what they hold
            os._exit(0)
        if self.params.read_pixels == "before":
            packet.extra["corner"] = int(packet.pixels()[0, 0, 0])
        if self._seen is not None:
            self._seen.write(f"{packet.index}\\n")
        if self._fires(packet.index):
            if self.params.mode == "raise":
                time.sleep(self.params.pause_s)
                raise ValueError(f"injected fault on frame {packet.index}")
            if self.params.mode == "unprintable":
                raise Unprintable()
            if self.params.mode == "hang":
                while True:
                    time.sleep(3600)
            if self.params.mode == "stuck":
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
                while True:
                    time.sleep(3600)
            if self.params.mode == "pause":
                time.sleep(self.params.pause_s)
            if self.params.mode == "spin_idle":
                self._spin = True
            if self.params.mode == "wait_outside":
                for _ in range(round(self.params.pause_s / 0.2)):
                    self.waiting_outside()
                    time.sleep(0.2)
            if self.params.mode == "not_a_packet":
                return ({"frame": packet.index},)
            if self.params.mode == "stop_run":
                raise StopRun
            if self.params.mode == "exit":
                sys.exit("no GPU here")
            if self.params.mode == "redraw":
                packet.image = packet.pixels().copy()
            if self.params.mode == "enlarge":
                import numpy as np

                packet.image = np.repeat(np.repeat(packet.pixels(), 2, axis=0), 2, axis=1)
            if self.params.mode == "scribble":
                packet.image[:2, :2] = 0
            if self.params.mode == "copy_image":
                packet.image = packet.image.copy()
            if self.params.mode == "opencv_image":
                import cv2

                cv2.cvtColor(packet.image, cv2.COLOR_BGR2GRAY)
            if self.params.mode == "unlock":
                pixels = packet.pixels()
                pixels.flags.writeable = True
                pixels[:2, :2] = 0
            if self.params.mode == "float_image":
                import numpy as np

                packet.image = np.zeros((48, 64, 3), np.float32)
            if self.params.mode == "outage_flag":
                packet.extra["outage"] = False  # a camera-health flag of a plug-in's own
                self.outage = False
            if self.params.mode == "bad_input":
                from fer_pipe.errors import InputError

                raise InputError(f"bad input on frame {packet.index}\\n  see the camera's log")
            if self.params.mode == "print":
                print(f"debugging frame {packet.index}")
            if self.params.mode == "unpicklable":
                import threading

                packet.extra["lock"] = threading.Lock()
            if self.params.mode == "callback":
                packet.extra["callback"] = lambda: packet.index
            if self.params.mode == "unloadable":
                packet.extra["why"] = Coded("low light", 3)
        if self.params.read_pixels == "after":
            packet.extra["corner"] = int(packet.pixels()[0, 0, 0])
        if self.params.delay_s:
            time.sleep(self.params.delay_s)
        self.dropped += self.params.self_drops
        return (packet,)

    def finish(self):
        if self.params.mode == "finish":
            raise RuntimeError("flush failed\\n  disk quota exceeded")
        if self.params.mode == "exit_finish":
            sys.exit("finish bye")
        if self.params.mode == "stop_finish":
            raise StopRun("nothing more")
        return self._held

    def idle(self):
        if self.params.mode == "idle":
            raise ValueError("injected fault while idle")
        while self.params.mode == "spin_idle" and self._spin:
            pass

    def close(self):
        time.sleep(self.params.close_takes_s)
        if self._seen is not None:
            if self.params.mode in ("stopped_opening", "stopped_closing"):
                self._seen.write("closed\\n")
            self._seen.close()
        if self.params.close_too == "die":
            time.sleep(1)
            os.kill(os.getpid(), signal.SIGKILL)
        while self.params.mode == "hang_close" or self.params.close_too == "hang":
            time.sleep(3600)
        armed = not self.params.armed_file or os.path.exists(self.params.armed_file)
        if (self.params.mode == "close" or self.params.close_too == "raise") and armed:
            raise RuntimeError(self.params.close_says)
        if self.params.close_too == "bad_input" and armed:
            from fer_pipe.errors import InputError

            raise InputError(self.params.close_says)


class BrokenFramesParams(StageParams):
    mode: Literal["float", "wrong_id", "repeat", "nan_time", "raise", "stop_run", "outage", "bad_outage", "init",
                  "float_box", "eager", "bad_open", "numpy", "exit", "hang"] = Field(
        "raise", description="what frame 'at' is: float pixels, another source's id, the frame before's number "
                             "again, dated NaN, or an OSError, StopRun or (exit) a library's sys.exit raised "
                             "instead; or an outage packet "
                             "before it, numbered as the frame before it or (bad) as itself; or a face "
                             "with a box of floats; or (init) its __init__ raises; or (eager) frames, no "
                             "generator, raises when called, as one that opens its device there; or "
                             "(bad_open) its open raises an InputError, as a camera that is not there; or "
                             "(numpy) every frame numbered with a numpy integer, as a source built on numpy does; "
                             "or (hang) its read of frame 'at' never returns, as a camera library's call that waits")
    at: int = Field(3, ge=0, description="the frame that is broken")
    count: int = Field(8, ge=1, description="frames in all")
    down_s: float = Field(0.0, ge=0.0, description="with mode outage: down this long, an outage packet every 0.1 s")
    drops_while_down: bool = Field(False, description="count each outage packet in the stage's own dropped "
                                                      "attribute, as a camera's timed-out reads are")
    length_text: str = Field("", description="length() returns this text (a bug) rather than None")
    exit_s: float = Field(0.0, ge=0.0, description="a thread started in close keeps the process this long "
                                                   "after close returned, as a slow exit on a loaded machine")


class BrokenFrames(Source):
    """A source whose frame 'at' breaks the source contract, or that fails there."""
    Params = BrokenFramesParams

    def __init__(self, name, params):
        super().__init__(name, params)
        if params.mode == "init":
            raise RuntimeError("no licence for this camera")

    def open(self):
        if self.params.mode == "bad_open":
            from fer_pipe.errors import InputError

            raise InputError("camera 3: no such device")

    def length(self):
        return self.params.length_text or None

    def close(self):
        if self.params.exit_s:
            import threading

            threading.Thread(target=time.sleep, args=(self.params.exit_s,)).start()

    def frames(self):
        if self.params.mode == "eager":
            raise RuntimeError("device busy")
        return self._frames()

    def _frames(self):
        import numpy as np

        for i in range(self.params.count):
            image, source, index, timestamp = np.zeros((48, 64, 3), np.uint8), self.source_id, i, i / 25
            if self.params.mode == "numpy":
                index = np.int64(i)
            faces = None
            if i == self.params.at:
                if self.params.mode == "raise":
                    raise OSError("camera went away")
                if self.params.mode == "stop_run":
                    raise StopRun("enough")
                if self.params.mode == "exit":
                    sys.exit("capture library: device lost")
                if self.params.mode == "hang":
                    time.sleep(3600)
                if self.params.mode == "float":
                    image = image.astype(np.float32)
                if self.params.mode == "wrong_id":
                    source = "other"
                if self.params.mode == "repeat":
                    index = i - 1
                if self.params.mode == "nan_time":
                    timestamp = float("nan")
                if self.params.mode == "float_box":  # replayed detections, as another program wrote them
                    faces = [Face((10.0, 12.0, 20.0, 20.0))]
                if self.params.mode in ("outage", "bad_outage"):
                    yield outage(source, i - (self.params.mode == "outage"), timestamp)
                    back = time.monotonic() + self.params.down_s
                    while time.monotonic() < back:
                        time.sleep(0.1)
                        self.dropped += self.params.drops_while_down
                        yield outage(source, i - 1, timestamp)
            yield Packet(source, index, timestamp, image, faces=faces)


class SlowSinkParams(StageParams):
    delay_s: float = Field(0.2, ge=0.0, description="sleep per frame, so that a live run falls behind it")


class SlowSink(Sink):
    """A sink slower than a live source: what feeds it drops frames at its output."""
    Params = SlowSinkParams
    reads = EXPRESSIONS

    def consume(self, packet):
        time.sleep(self.params.delay_s)


class LinesParams(StageParams):
    path: str = Field(description="the file to write")


class Lines(Sink):
    """A line per frame into a text file opened as the README's "Writing a stage" opens one:
    buffered, so its close writes what it still holds."""
    Params = LinesParams
    reads = EXPRESSIONS
    output_paths = ("path",)

    def open(self):
        from fer_pipe.output_files import open_claimed

        self._file = os.fdopen(open_claimed(self.params.path, "lines", truncate=True), "a")

    def consume(self, packet):
        self._file.write(f"{packet.source},{packet.index}\\n")

    def close(self):
        self._file.close()


class DeadChild(Sink):
    """A line per frame into a pipe whose reader (an encoder child, a network peer) has died."""
    Params = StageParams
    reads = EXPRESSIONS

    def open(self):
        reader, self._writer = os.pipe()
        os.close(reader)

    def consume(self, packet):
        os.write(self._writer, b"frame\\n")

    def close(self):
        os.close(self._writer)


class EndFails(Sink):
    """A sink that fails on a source's end (a summary it cannot write)."""
    Params = StageParams
    reads = EXPRESSIONS

    def consume(self, packet):
        pass

    def ended(self, packet):
        raise ValueError("no summary for the end")
'''


def install_distribution(root: Path, name: str, files: dict[str, str], entry_points: str) -> dict[str, str]:
    """Write the files of distribution ``name`` and its ``*.dist-info`` (METADATA and
    ``entry_points.txt``) under ``root``; returns the environment that finds it."""
    root.mkdir(parents=True, exist_ok=True)
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": f"{root}{os.pathsep}{path}" if path else str(root)}


def install_plugin(root: Path) -> dict[str, str]:
    """Install the fault-injection stage as ``faulty``; returns the environment that finds it."""
    return install_distribution(root, "fer-faults-plugin", {"fer_faults_plugin.py": PLUGIN_SOURCE},
                                "[fer_pipe.stages]\nfaulty = fer_faults_plugin:Faulty\n"
                                "brokenframes = fer_faults_plugin:BrokenFrames\nslowsink = fer_faults_plugin:SlowSink\n"
                                "lines = fer_faults_plugin:Lines\ndeadchild = fer_faults_plugin:DeadChild\n"
                                "endfails = fer_faults_plugin:EndFails\n")


def fault_config(path: Path, video: Path, out_csv: Path, on_error: str = "stop", live: bool = False,
                 workers: int = 1, **faulty) -> Path:
    """video -> faulty -> csv, with the faulty stage's params given as keyword arguments;
    ``live`` replays the video at its own fps with drop-oldest backpressure; ``workers`` runs
    the faulty stage on that many processes."""
    params = "".join(f"      {k}: {v!r}\n" if not isinstance(v, str) else f"      {k}: '{v}'\n"
                     for k, v in faulty.items())
    path.write_text(
        "stages:\n"
        "  source:\n"
        "    type: video\n"
        f"    params: {{path: '{video}', realtime: {str(live).lower()}}}\n"
        "  faulty:\n"
        "    type: faulty\n"
        "    inputs: [source]\n"
        f"    on_error: {on_error}\n"
        f"    workers: {workers}\n"
        "    params:\n" + (params or "      {}\n") +
        "  csv:\n"
        "    type: csv\n"
        "    inputs: [faulty]\n"
        f"    params: {{path: '{out_csv}'}}\n")
    return path


def broken_source_config(path: Path, out_csv: Path, source: str, faulty: str = "") -> Path:
    """brokenframes -> faulty -> csv: ``source`` is the source's params (YAML flow mapping's
    inside: ``mode: outage, at: 3``), ``faulty`` what the faulty stage has beside its input
    (``workers: 2, params: {mode: hold}``)."""
    path.write_text(f"stages:\n  source: {{type: brokenframes, params: {{{source}}}}}\n"
                    f"  faulty: {{type: faulty, inputs: [source]{', ' + faulty if faulty else ''}}}\n"
                    f"  csv: {{type: csv, inputs: [faulty], params: {{path: '{out_csv}'}}}}\n")
    return path


def start_run(config: Path, env: dict[str, str], *args: str, quiet: bool = True) -> subprocess.Popen:
    """``fer-pipe run`` in its own session (so a test can signal its whole process group, as a
    terminal's Ctrl-C does); ``quiet=False`` keeps the statistics table on stderr."""
    flags = ["--quiet"] if quiet else []
    return subprocess.Popen([sys.executable, "-m", "fer_pipe.cli", "run", str(config), *flags, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env}, start_new_session=True, preexec_fn=sighup_default)


@contextlib.contextmanager
def group_killed_at_exit(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """``proc`` for a ``with`` block; a run still going when it ends (an assertion failed, a stop
    never came) is killed with its whole process group, so that none outlives its test."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            from fer_pipe.ring_lease import sweep_abandoned

            sweep_abandoned()  # its rings, before another test's run finds and reports them (s48i 1)


def descendants(pid: int) -> set[int]:
    """Every process under ``pid`` from /proc (each thread's children lists, then theirs): the
    CLI's stage processes are the children of its forkserver, not of the runner."""
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for tid in tasks:
        try:
            found.update(int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found.union(*(descendants(child) for child in found))


def stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state, parent, ...), or [] once the
    process is gone; the name is cut at its last ')', as it may hold spaces and brackets."""
    try:
        # any process may name itself in bytes that are no UTF-8 (a kernel's cut inside a character)
        return Path(f"/proc/{pid}/stat").read_text(errors="replace").rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return []


def alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (ended, not yet reaped by init) counts as gone."""
    return stat(pid)[:1] not in ([], ["Z"])


def run_lock(runner: int) -> Path:
    """The lock file in the rings' folder that process ``runner`` holds for its run (``ring_lease``),
    named after the run id its frame rings are named after too."""
    for fd in os.listdir(f"/proc/{runner}/fd"):
        with contextlib.suppress(FileNotFoundError):
            held = os.readlink(f"/proc/{runner}/fd/{fd}")
            if re.fullmatch(rf"{re.escape(SHM)}/fp[0-9a-f]{{6}}\.lock", held):
                return Path(held)
    raise AssertionError(f"process {runner} holds no run's lock file")


def wait_gone(pids: set[int], within: float = 10.0) -> set[int]:
    """The pids still alive after waiting up to ``within`` seconds for them to end."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        left = {p for p in pids if alive(p)}
        if not left:
            return left
        time.sleep(0.05)
    return {p for p in pids if alive(p)}


def group_members(pgid: int) -> set[int]:
    """The live processes of process group ``pgid``: a run started in its own session keeps it
    for the runner, its forkserver and every stage process, whoever their parent is by then."""
    return {int(pid) for pid in os.listdir("/proc") if pid.isdigit() and alive(int(pid))
            and stat(int(pid))[2:3] == [str(pgid)]}


def read_csv(path: Path) -> tuple[list[str], list[list[str]], str]:
    """Header, rows and raw text of a CSV the pipeline wrote."""
    text = path.read_text()
    rows = list(csv.reader(text.splitlines()))
    return rows[0] if rows else [], rows[1:], text


def assert_valid_prefix(path: Path, expected_first: int = 0) -> list[int]:
    """The CSV has its header, ends with a complete line, and holds frames first..k in order,
    each exactly once (a frame with no face is one row). Returns the frame indexes."""
    from fer_pipe.events import FRAME_COLUMNS

    header, rows, text = read_csv(path)
    assert header == FRAME_COLUMNS
    assert text.endswith("\n"), "the last line of the CSV is incomplete"
    assert all(len(r) == len(FRAME_COLUMNS) for r in rows), "a row has the wrong number of fields"
    frames = [int(r[1]) for r in rows]
    assert frames == list(range(expected_first, expected_first + len(frames))), frames
    return frames


def stats_row(stderr: str, stage: str) -> dict[str, int]:
    """A stage's row of the statistics table that a run prints at the end."""
    for line in stderr.splitlines():
        cells = line.split()
        if cells and cells[0] == stage and len(cells) >= 7 and cells[1].isdigit():
            return {"items": int(cells[1]), "dropped": int(cells[5]), "skipped": int(cells[6])}
    raise AssertionError(f"no statistics row for {stage!r} in:\n{stderr}")
