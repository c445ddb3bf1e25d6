"""How both engines (``fer-pipe run``'s processes and the in-process ``run_graph``) call a
stage: making it, passing it a packet or a notice, its length and idle checks, closing it, and
what ``on_error: skip`` says. One place, so that the engines cannot treat a stage differently."""
from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable

import numpy as np

from .errors import said
from .messages import Packet, named
from .packet_checks import makes_faces, packets_of
from .stage import Source, Stage, StageParams, StopRun, reader_gone


def handle(stage: Stage, packet: Packet, kept_ends: list[Packet] | None = None) -> list[Packet]:
    """One packet through a stage: a frame to its ``process``, a source's outage to its ``outage``
    and its end to its ``ended`` (the class's: a plug-in written before them may keep a flag of
    that name on its instance). A stage that may hold packets until its own end (``keeps_ends``)
    gets no end packet where ``kept_ends`` is given: it goes there, to be passed on after what
    the stage's ``finish`` returns."""
    if packet.outage:  # one test per frame; a source's end is an outage packet too
        if packet.ended:
            if kept_ends is not None and keeps_ends(type(stage)):
                kept_ends.append(packet)
                return []
            return _notice(stage, type(stage).ended, packet, "ended")
        return _notice(stage, type(stage).outage, packet, "outage")
    return packets_of(stage.process(packet), captured=packet.captured, finds_faces=makes_faces(stage.reads, stage.writes))


def _notice(stage: Stage, method: Callable[[Stage, Packet], Iterable[Packet] | None], packet: Packet,
            name: str) -> list[Packet]:
    """A notice through a stage: a sink whose reader left while it wrote what the notice closes
    (the episodes an end closes, to /dev/stdout | head) ends the run, as in ``process``, where
    it failed it, exit 1."""
    try:
        return packets_of(method(stage, packet), name)
    except BrokenPipeError:
        if not reader_gone(stage):
            raise
        raise StopRun from None


def close_stage(stage: Stage) -> None:
    """Close ``stage``. A sink whose reader left (``/dev/stdout | head``) ends as in ``process``:
    a file opened as the README's recipe opens it still held its last rows at close, and a run
    that a reader had left cleanly failed there, exit 1."""
    try:
        stage.close()
    except BrokenPipeError:
        if not reader_gone(stage):
            raise


def keeps_ends(kind: type[Stage]) -> bool:
    """A stage with a ``finish`` of its own and no ``ended``: one that may hold packets until the
    run's end (a batch for a model) and says nothing of a source's end. Its end packets wait for
    its finish: passed on at once, a source's end overtook the frames such a stage held, the
    tracker after it ended the track, and the frames that followed had no track id. Not
    for a sink (nothing follows it), nor with workers (which hold nothing between packets)."""
    return kind.ended is Stage.ended and kind.finish is not Stage.finish


def length_of(source: Source) -> int | None:
    """``source.length()``, checked in the source's process: a text there failed the runner's
    progress bar in the parent, and the run with it, before a frame was written."""
    length = source.length()
    if length is None or (isinstance(length, (int, np.integer)) and not isinstance(length, bool) and length >= 0):
        return None if length is None else int(length)
    raise TypeError(f"length() returned {length!r}; it returns the frames to come, an int >= 0, or None")


def idle_of(stage: Stage) -> float | None:
    """``stage.idle_s``, checked once it is open (a stage may set it there): 0 or less polled its
    queue without a wait, a whole core busy in silence, and a text failed on a sum naming neither."""
    idle = stage.idle_s
    if idle is None or (isinstance(idle, (int, float)) and not isinstance(idle, bool) and 0 < idle < math.inf):
        return idle
    raise TypeError(f"idle_s is {idle!r}; it is how often idle runs, a number of seconds > 0, or None")


def instantiate(cls: type[Stage], name: str, params: StageParams) -> Stage:
    """``cls(name, params)``, checked: a stage whose ``__init__`` did not call
    ``super().__init__`` ran everywhere but in its process's end, which failed out of sight,
    skipped its ``close`` and left its file unwritten, in a run that exited 0."""
    stage = cls(name, params)
    if getattr(stage, "name", None) != name or getattr(stage, "params", None) is None:
        raise TypeError(f"{cls.__name__}.__init__ must call super().__init__(name, params)")
    return stage


SKIPS_SAID = 10
"""Packets a stage process with ``on_error: skip`` says it dropped, one line each; the rest are
counted only (the statistics' skipped column): a stage that failed on every frame of a camera
wrote a line a frame, some 2 million a day."""


def say_skipped(stage: str, packet: Packet, exc: BaseException, count: int) -> None:
    """What a stage with ``on_error: skip`` says of the ``count``-th packet it dropped, in a run
    and in a batch task alike."""
    if count <= SKIPS_SAID:
        print(f"fer-pipe: stage {stage!r} skipped {named(packet)}: {said(exc)}", file=sys.stderr)
    if count == SKIPS_SAID:
        print(f"fer-pipe: stage {stage!r}: further packets it skips are counted in its skipped column, not "
              "said one by one", file=sys.stderr)
