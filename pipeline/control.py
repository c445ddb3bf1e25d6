"""What a stage process tells the runner, over the run's control queue: one class per message.

Named fields rather than bare tuples read by position, so the worker that puts a message and
the runner that reads it cannot disagree on what its third field means. Every message names
the process it comes from (``detector``, or ``detector[1]`` for one of several workers).
"""
from __future__ import annotations

from typing import NamedTuple


class Opened(NamedTuple):
    """The stage's ``open`` returned: a stall from now on is no longer "while opening"."""

    process: str


class Length(NamedTuple):
    """A source's frame count (None: unknown), for the progress bar."""

    process: str
    frames: int | None


class Done(NamedTuple):
    """The stage ended its stream; its statistics. Sent before its ``close``, so that a stage
    killed there keeps them; a process that dies after it is still judged (``_died_in_close``)."""

    process: str
    stats: dict


class Stopped(NamedTuple):
    """A SIGTERM of its own stopped the stage before its stream ended; its statistics."""

    process: str
    stats: dict


class Closing(NamedTuple):
    """The stage is in its ``close``: a stall from now on is "while closing"."""

    process: str


class Failed(NamedTuple):
    """The stage failed, or (``process`` None) the run itself did: the one line said, the
    traceback behind it (empty for bad input, said in that line alone), the run's exit code."""

    process: str | None
    message: str
    traceback: str
    exit_code: int


class FailedDraining(NamedTuple):
    """A failure after which what was passed on still drains: a source's mid-stream (bad input
    found, a camera given up on, or its own error), or a stage's in its ``finish`` or, once it
    has ended its stream, its ``close``. ``live``: a live source, whose failure ends the run at
    once rather than when the other sources end."""

    process: str
    message: str
    exit_code: int
    live: bool
    traceback: str = ""


Message = Opened | Length | Done | Stopped | Closing | Failed | FailedDraining
