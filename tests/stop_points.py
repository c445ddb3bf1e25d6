"""A stop at every point where one can land: what a signal does to Python code, made exact.

CPython runs a signal's handler (a stage process's SIGTERM raising ``Terminated``, a Ctrl-C's
``KeyboardInterrupt``) at the first line of a Python function, at a loop's jump back, or as a call
into C returns. A trace and a profile function raising at each first line and each return from C
in turn reach all but the jumps back, one run of the code under test per point: the windows in
which a file was made and nothing yet would remove it were found there (the video writer's empty
.mp4 of a CI run). As after a stage's first SIGTERM, which ignores the rest, one stop is raised
per run.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType


def each_stop(action: Callable[[], object], check: Callable[[], str | None], until: str = "") -> list[str]:
    """Run ``action`` once for each point it passes where a stop can land, a KeyboardInterrupt
    raised there, and ``check`` after each run; what was found wrong, each named by its point:
    each Python call's first line, and each return from a call into C (``os.open`` returned,
    its descriptor not yet kept). A call of ``until`` ends the search there (a close, where a
    stage process ignores a stop). Points where the garbage collector runs code are none:
    Python drops what is raised there. What the stop becomes on its way out counts as raised: a stop in the
    standard library's ``Condition.wait`` as it takes its lock back comes out as "RuntimeError:
    release unlocked lock". Only this thread is stopped; and an action that joins a thread of
    its own can leave it unjoinable (a stop in ``Thread.join`` as it takes the thread's lock),
    which hangs the interpreter's exit."""
    try:  # once unstopped: one-time work (an import, a registry read) would shorten later runs,
        action()  # and the search ends at the first run that passes fewer points than its stop's
    except BaseException as exc:  # noqa: BLE001  an action that fails alone tests nothing
        raise AssertionError(f"the action fails with no stop: {exc!r}") from exc
    problem = check()
    found = [f"no stop: {problem}"] if problem else []
    point = 1
    while True:
        passed, fired, reached = 0, "", False

        def stop_here(frame: FrameType, what: str, called: str = "") -> None:
            nonlocal passed, fired, reached
            if fired or reached or _in_a_finalizer(frame):
                return
            if called and called == until:
                reached = True
                return
            passed += 1
            if passed == point:
                fired = what
                raise KeyboardInterrupt

        def tracer(frame: FrameType, event: str, arg: object) -> None:
            if event == "call":
                stop_here(frame, f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_code.co_name}",
                          frame.f_code.co_name)

        def profiler(frame: FrameType, event: str, arg: object) -> None:
            if event == "c_return":
                stop_here(frame, f"{getattr(arg, '__qualname__', arg)} returning")

        sys.settrace(tracer)
        sys.setprofile(profiler)
        failure: BaseException | None = None  # no call here while traced: its return would be a point
        try:
            action()
        except BaseException as exc:  # noqa: BLE001  the stop, or what the library it landed in made of it
            failure = exc
        finally:
            sys.setprofile(None)
            sys.settrace(None)
        # said, and let go: kept, the exception would keep the frames it passed alive
        raised, failure = ("" if failure is None else repr(failure)), None
        problem = check()
        if fired and not raised:
            found.append(f"stop {point} at {fired}: swallowed")
        if problem:
            found.append(f"stop {point} at {fired or 'none'}: {problem}")
        if not fired:
            if raised:
                found.append(f"past the last stop, the action failed: {raised}")
            return found
        point += 1


def _in_a_finalizer(frame: FrameType | None) -> bool:
    """Whether ``frame`` runs for the garbage collector, a ``__del__`` or a weak reference's
    callback, where Python drops an exception ("Exception ignored in ...")."""
    while frame is not None:
        if frame.f_code.co_name == "__del__" or frame.f_code.co_filename.endswith(("/weakref.py", "/_weakrefset.py")):
            return True
        frame = frame.f_back
    return False
