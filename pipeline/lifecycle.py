"""The rules of a stage's life that both engines keep: a run's stage processes (``worker``) and
one process (``inprocess``: ``run_stage``, ``run_graph``, a batch task).

Each rule was written in both and kept in step by hand, and they had drifted (a stage whose
``finish`` failed passed on the source ends it held in a run, and lost them in a batch task).
Written once here, the engines add only how they move packets, what they count, and how they
report a stage's end.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .errors import PLUGIN_BUGS, UserError, said
from .frames import NOT_PIXELS, FrameRef, StaleFrameError
from .messages import Packet, named, stream_ended
from .packet_checks import frame_of, makes_faces, packets_of
from .stage import Source, Stage, StageFailure, StopRun
from .stage_calls import handle, say_skipped
from .stats import StageStats


def open_stage(stage: Stage) -> None:
    """``stage.open()``. Bad input passes as it is; anything else is the stage's failure, said
    as "while opening", as a failure in close says "while closing"."""
    try:
        stage.open()
    except UserError:
        raise
    except PLUGIN_BUGS as exc:
        raise StageFailure(f"while opening: {said(exc)}") from exc


def finish_stage(stage: Stage) -> list[Packet]:
    """What ``stage.finish()`` returns. ``StopRun`` there is no failure: the stream has ended
    already, and the stage passes nothing more on, as a stop would. Other exceptions pass: each
    engine says them as it says a stage's end."""
    try:
        return packets_of(stage.finish(), "finish", finds_faces=makes_faces(stage.reads, stage.writes))
    except StopRun:
        return []


READ_ONLY = ("assignment destination is read-only", "cannot set WRITEABLE flag", "marked as readonly")
"""numpy's words for a write into a read-only array, and OpenCV's for drawing into one."""


def _with_hint(line: str, packet: Packet) -> str:
    """A stage's failure, with what to do instead where it wrote into a frame or gave OpenCV
    ``packet.image``, a reference under the runner: numpy's and OpenCV's words alone sent a
    plug-in's author, whose tests passed (``run_stage`` hands an array), to the README."""
    if any(words in line for words in READ_ONLY):
        return f"{line} (frames are read-only: draw on a copy, packet.pixels().copy(), and set packet.image to it)"
    if "is not a numpy array" in line and isinstance(packet.image, FrameRef):
        return f"{line} (if that was packet.image: {NOT_PIXELS})"
    return line


class SourceFrames:
    """A source's frames numbered as a run numbers them, each on from the last frame (an outage
    is none), and the end packet that tells the stages after it where the stream ended."""

    def __init__(self, source: Source) -> None:
        self.source_id = source.source_id  # read once, not per frame
        self._frames = source.frames
        self._items: Iterator[Any] | None = None
        self.last_index: int | None = None
        self.last_time = 0.0

    def next(self) -> Packet | None:
        """The next frame or outage, None at the source's end. The source's own exceptions pass:
        each engine says them in its way. ``frames`` is called here, with the first: one that is
        no generator, and opens its device when called, failed outside the engines' rules, and
        ``run_graph`` let it out bare, naming no stage."""
        if self._items is None:
            self._items = iter(self._frames())
        item = next(self._items, None)
        return None if item is None else frame_of(self.source_id, item, self.last_index)

    def went_on(self, packet: Packet) -> None:
        """``packet`` was passed on; a frame is the one the next is numbered from. Told apart from
        ``next``: a frame that failed on its way (a ring that cannot grow) is not where the
        stream ended."""
        if not packet.outage:
            self.last_index, self.last_time = packet.index, packet.timestamp

    def end(self) -> list[Packet]:
        """The end packet of what went on: none where no frame did."""
        if self.last_index is None:
            return []
        return [stream_ended(self.source_id, self.last_index, self.last_time)]


class PacketRules:
    """Packets through one stage (one of its workers), with the failure rules of a run.

    ``StopRun`` ends the stage's part in the run: it passes nothing on from then. Bad input
    passes as it is. Any other failure is the stage's, naming the packet, unless the stage has
    ``on_error: skip`` and the packet is a frame: the frame is dropped, said (the first ten)
    and counted. An outage is no frame, so a failing hook fails the stage whatever ``on_error``
    says: it would fail again on the next. A frame overwritten in a live source's ring is the
    engine's to judge (``StaleFrameError`` passes). ``kept_ends`` gathers the source ends a
    stage holds until its finish (``stage_calls.keeps_ends``); None where it holds nothing (workers).
    Skips are counted in ``stats``, which the engine's own skips (a packet that cannot be sent
    on) share: the first ten of them all are said.
    """

    def __init__(self, stage: Stage, name: str, stats: StageStats, skip: bool, kept_ends: list[Packet] | None,
                 on_stop: Callable[[], None]) -> None:
        self.stage, self.name, self.stats, self.skip = stage, name, stats, skip
        self.kept_ends, self.on_stop = kept_ends, on_stop
        self.stopped = False

    def __call__(self, packet: Packet) -> list[Packet]:
        if self.stopped:
            return []
        try:
            return handle(self.stage, packet, self.kept_ends)
        except StopRun:
            self.stop()
            return []
        except (UserError, StaleFrameError):
            raise
        except SystemExit as exc:  # a failure, never a skip, as a run's process ends with it; the packet named
            raise StageFailure(f"on {named(packet)}: {said(exc)}") from exc
        except Exception as exc:
            return self.failed(packet, exc)

    def failed(self, packet: Packet, exc: Exception, what: str = "") -> list[Packet]:
        """The stage's failure on ``packet`` (said as ``what``, else as ``exc``), or, with
        ``on_error: skip`` and a frame, nothing: the frame dropped, said and counted."""
        if not self.skip or packet.outage:
            raise StageFailure(f"on {named(packet)}: {what or _with_hint(said(exc), packet)}") from exc
        self.stats.skipped += 1
        say_skipped(self.name, packet, exc, self.stats.skipped)
        return []

    def stop(self) -> None:
        """The stage ended the run (a user's q): the engine stops the sources (``on_stop``)."""
        self.stopped = True
        self.on_stop()

    def ends(self) -> list[Packet]:
        """The source ends held until the stage's finish, to pass on after what it returns; passed
        on after a finish that failed too: the stages after it still end those streams."""
        return self.kept_ends or []
