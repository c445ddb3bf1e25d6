"""Per-stage counters and timings, gathered in each stage process and printed at the end."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np


WINDOW = 20_000
"""Items whose times give the p95 (and latency percentiles): the most recent ones."""


@dataclass
class StageStats:
    """One stage process's figures for the table at a run's end: kept in the process that does
    the work, so that timing a packet costs no message to the runner."""

    name: str
    items: int = 0
    dropped: int = 0
    skipped: int = 0
    busy_s: float = 0.0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    """CPU time of the stage's whole process, start-up included: what it costs the machine,
    which ``busy_s`` (wall time in ``process``) is not when OpenCV runs threads or the cores
    are shared."""
    # Percentiles come from the most recent items only: kept whole, these lists would grow
    # by some 100 MB a day per stage on a camera watched all day.
    times: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))

    def record(self, seconds: float) -> None:
        self.items += 1
        self.busy_s += seconds
        self.times.append(seconds)

    def summary(self) -> dict:
        times = np.array(self.times) if self.times else np.zeros(1)
        out = {"stage": self.name, "items": self.items, "dropped": self.dropped, "skipped": self.skipped,
               "busy_s": round(self.busy_s, 3), "wall_s": round(self.wall_s, 3), "cpu_s": round(self.cpu_s, 3),
               "per_s": round(self.items / self.wall_s, 1) if self.wall_s > 0 else 0.0,
               "mean_ms": round(self.busy_s / self.items * 1e3, 3) if self.items else 0.0,
               "p95_ms": round(float(np.percentile(times, 95)) * 1e3, 3)}
        if self.latencies:
            lat = np.array(self.latencies)
            out["latency_p50_ms"] = round(float(np.percentile(lat, 50)) * 1e3, 2)
            out["latency_p95_ms"] = round(float(np.percentile(lat, 95)) * 1e3, 2)
        return out


def format_table(summaries: list[dict]) -> str:
    header = (f"{'stage':<14} {'items':>7} {'items/s':>9} {'mean ms':>9} {'p95 ms':>8} {'dropped':>8} "
              f"{'skipped':>8} {'CPU s':>7}")
    rows = [header]
    for s in summaries:
        rows.append(f"{s['stage']:<14} {s['items']:>7} {s['per_s']:>9.1f} {s['mean_ms']:>9.2f} "
                    f"{s['p95_ms']:>8.2f} {s['dropped']:>8} {s['skipped']:>8} {s['cpu_s']:>7.2f}")
        if "latency_p50_ms" in s:
            rows[-1] += f"   latency p50 {s['latency_p50_ms']:.1f} ms, p95 {s['latency_p95_ms']:.1f} ms"
    if any(s["items"] > WINDOW for s in summaries):
        # a week's run read as the week's, its p95 below its mean where the last minutes were quicker (s63b 4)
        rows.append(f"(p95 and latency: each stage's last {WINDOW:,} items)")
    return "\n".join(rows)
