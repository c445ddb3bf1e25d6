"""A line every so often on how far each stage has got, for runs nobody watches.

A camera run has no end to show progress towards, and a service's journal otherwise holds
nothing between its start and its stop: this line says that it is alive, how fast each stage
goes, and whether a live source is dropping frames because a stage downstream cannot keep up.
It reads the counters every stage process already shares with the runner; it asks no process
anything.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any


class StatusLine:
    """Says, every ``every_s`` seconds, each stage's items so far, its rate over the last
    interval, and the frames it dropped; a stage with several workers counts as one."""

    def __init__(self, every_s: float, processes: Mapping[str, Sequence[str]], progress: Mapping[str, Any],
                 dropped: Mapping[str, Any], say: Callable[[str], None], started: float,
                 down: Mapping[str, Any], ended: Callable[[str], bool]) -> None:
        self.every_s, self.processes, self.progress, self.dropped, self.say = (
            every_s, processes, progress, dropped, say)
        self.down = down
        """Since when (monotonic) a live source has been down, per process, or waiting for its
        first frame since it started; 0 while it is not: "cam 184 (0.0/s)" did not tell a camera
        that is down from a stage that is stuck, nor "cam 0 (0.0/s)" one never reached."""
        self.ended = ended
        """Whether a process has ended: a file read to its end, or a source that failed while the
        others read on, read "(0.0/s)" as a stage hung in a read does."""
        self._last_at = started
        self._started = started
        self._last = dict.fromkeys(processes, 0)

    def tick(self, last: bool = False) -> None:
        """Say the line if ``every_s`` has passed since the last one (the runner calls this
        from its supervision loop, a few times a second), or, with ``last``, once the stages
        have ended: a service run with ``--quiet`` prints no statistics table, and the last
        frames of a run that ended between two lines were in none. That one's rates are
        over the whole run: over what was left of an interval, a few milliseconds, they read as
        a stuck stage's 0.0/s or as a spike."""
        now = time.monotonic()
        if not self.every_s or (now - self._last_at < self.every_s and not last):
            return
        since_at = self._started if last else self._last_at
        parts = []
        for stage, names in self.processes.items():
            items = sum(self.progress[p].value for p in names)
            dropped = sum(self.dropped[p].value for p in names)
            rate = (items - (0 if last else self._last[stage])) / max(now - since_at, 1e-6)
            since = max((self.down[p].value for p in names if p in self.down), default=0.0)
            if since:
                how = f"{'down for' if items else 'no frame in'} {now - since:.0f} s"
            elif not last and all(map(self.ended, names)):
                how = "ended"
            else:
                how = f"{rate:.1f}/s"
            parts.append(f"{stage} {items} ({how}" + (f", {dropped} dropped)" if dropped else ")"))
            self._last[stage] = items
        self._last_at = now
        elapsed = timedelta(seconds=round(now - self._started))
        self.say(f"fer-pipe: status {'at the end, ' if last else ''}after {elapsed}: {', '.join(parts)}")
