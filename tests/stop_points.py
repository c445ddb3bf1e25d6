"""A stop at every point where one can land: what a signal does to Python code, made exact.

CPython runs a signal's handler (a stage process's SIGTERM raising ``Terminated``, a Ctrl-C's
``KeyboardInterrupt``) at the first line of a Python function, at a loop's jump back, or as a call
into C returns. A trace function raising at each call in turn reaches every first line, the most
numerous of those points, one run of the code under test per point: the windows in which a file
was made and nothing yet would remove it were found there (the video writer's empty .mp4 of a CI
run). As after a stage's first SIGTERM, which ignores the rest, one stop is raised per run.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType


def each_stop(action: Callable[[], object], check: Callable[[], str | None], until: str = "") -> list[str]:
    """Run ``action`` once for each Python call it makes, a KeyboardInterrupt raised at that call,
    and ``check`` after each run; what was found wrong, each named by the call it was raised at.
    A call of ``until`` ends the search there (a close, where a stage process ignores a stop).
    Calls in a ``__del__`` are not stop points: a finalizer's exceptions are dropped by Python.
    What the stop becomes on its way out counts as raised: a stop in the standard library's
    ``Condition.wait`` as it takes its lock back comes out as "RuntimeError: release unlocked
    lock"."""
    found: list[str] = []
    point = 1
    while True:
        calls, fired, reached = 0, "", False

        def tracer(frame: FrameType, event: str, arg: object) -> None:
            nonlocal calls, fired, reached
            name = frame.f_code.co_name
            if event != "call" or fired or reached or _in_a_finalizer(frame):
                return None
            if name == until:
                reached = True
                return None
            calls += 1
            if calls == point:
                fired = f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{name}"
                raise KeyboardInterrupt
            return None

        sys.settrace(tracer)
        try:
            action()
            raised = False
        except BaseException:  # noqa: BLE001  the stop, or what the library it landed in made of it
            raised = True
        finally:
            sys.settrace(None)
        problem = check()
        if fired and not raised:
            found.append(f"stop {point} at {fired}: swallowed")
        if problem:
            found.append(f"stop {point} at {fired or 'none'}: {problem}")
        if not fired:
            return found
        point += 1


def _in_a_finalizer(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False
