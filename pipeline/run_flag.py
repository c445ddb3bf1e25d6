"""The flags a run's processes share: the runner's "stop" and "every stage is open"."""
from __future__ import annotations

from multiprocessing.context import BaseContext


class RunFlag:
    """A flag set once and never cleared, read and set without a lock.

    multiprocessing's Event takes a lock that every process of the run shares, at each look
    too (a source looks before each frame). A stage process that ended while it held it (a
    SIGTERM's exception raised after the lock's acquire returned and before the ``with`` that
    releases it began, or a SIGKILL) left it taken for good, and the runner's next ``set``
    waited for ever: a failed run that never ended (once in the test suite, and once in about
    370 runs of a stage that fails at its fifth frame, two to four at a time on two cores). A
    byte of shared memory cannot be left taken; the stage counters are the same kind.
    """

    def __init__(self, ctx: BaseContext) -> None:
        self._value = ctx.Value("b", 0, lock=False)

    def set(self) -> None:
        self._value.value = 1

    def is_set(self) -> bool:
        return bool(self._value.value)
