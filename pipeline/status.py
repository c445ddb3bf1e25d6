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
                 down: Mapping[str, Any] | None = None) -> None:
        self.every_s, self.processes, self.progress, self.dropped, self.say = (
            every_s, processes, progress, dropped, say)
        self.down = down or {}
        """Since when (monotonic) a live source has been down, per process, or waiting for its
        first frame since it started; 0 while it is not: "cam 184 (0.0/s)" did not tell a camera
        that is down from a stage that is stuck (s28a), nor "cam 0 (0.0/s)" one never reached."""
        self._last_at = started
        self._started = started
        self._last = dict.fromkeys(processes, 0)

    def tick(self) -> None:
        """Say the line if ``every_s`` has passed since the last one (the runner calls this
        from its supervision loop, a few times a second)."""
        now = time.monotonic()
        if not self.every_s or now - self._last_at < self.every_s:
            return
        parts = []
        for stage, names in self.processes.items():
            items = sum(self.progress[p].value for p in names)
            dropped = sum(self.dropped[p].value for p in names)
            rate = (items - self._last[stage]) / (now - self._last_at)
            since = max((self.down[p].value for p in names if p in self.down), default=0.0)
            if since:
                how = f"{'down for' if items else 'no frame in'} {now - since:.0f} s"
            else:
                how = f"{rate:.1f}/s"
            parts.append(f"{stage} {items} ({how}" + (f", {dropped} dropped)" if dropped else ")"))
            self._last[stage] = items
        self._last_at = now
        elapsed = timedelta(seconds=round(now - self._started))
        self.say(f"fer-pipe: status after {elapsed}: {', '.join(parts)}")
