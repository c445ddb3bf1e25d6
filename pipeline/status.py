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
                 dropped: Mapping[str, Any], say: Callable[[str], None], started: float) -> None:
        self.every_s, self.processes, self.progress, self.dropped, self.say = (
            every_s, processes, progress, dropped, say)
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
            parts.append(f"{stage} {items} ({rate:.1f}/s" + (f", {dropped} dropped)" if dropped else ")"))
            self._last[stage] = items
        self._last_at = now
        elapsed = timedelta(seconds=round(now - self._started))
        self.say(f"fer-pipe: status after {elapsed}: {', '.join(parts)}")
