"""A video's chunk CSVs, as ``fer-pipe batch`` joins them: whether they follow on from each
other, and the one CSV they make."""
from __future__ import annotations

import csv
import itertools
import os
import statistics
from pathlib import Path

from .batch_task import last_row, temp_csv
from .events import FRAME_COLUMNS

FRAME, TIME = FRAME_COLUMNS.index("frame"), FRAME_COLUMNS.index("timestamp")
MIN_FRAME_S = 0.002
"""Frames closer than this may share a timestamp in the CSV's milliseconds."""


def merge_parts(parts: list[Path], target: Path, work: Path) -> int:
    """Concatenate chunk CSVs (one header) into ``target``, atomically like a task's own CSV."""
    temp = temp_csv(work, target.stem)
    rows = 0
    with open(temp, "w", encoding="utf-8", newline="") as out:
        for i, part in enumerate(parts):
            with open(part, encoding="utf-8", newline="") as fh:
                header = fh.readline()
                if i == 0:
                    out.write(header)
                for line in fh:
                    out.write(line)
                    rows += 1
    os.replace(temp, target)
    for part in parts:
        part.unlink()
    return rows


def misaligned(parts: list[Path]) -> tuple[int, float, int, float] | None:
    """Where the first chunk that the next does not follow on ends, and where the next starts
    (frame and time of each row), or None. The rows' own frame numbers say how far apart the two
    should be (a packet a stage skipped at the edge leaves a gap that is no fault), at the
    frames' median period; skipped where frames come faster than the CSV's milliseconds tell
    apart."""
    spans: list[tuple[int, float, int, float]] = []  # parts with rows: first and last frame and time
    for part in parts:
        with open(part, encoding="utf-8", newline="") as fh:
            first = next(itertools.islice(csv.reader(fh), 1, None), None)
        if first is not None:
            last = last_row(part)
            spans.append((int(first[FRAME]), float(first[TIME]), int(last[FRAME]), float(last[TIME])))
    periods = [(t1 - t0) / (f1 - f0) for f0, t0, f1, t1 in spans if f1 > f0]
    if not periods:  # chunks of one frame each: the step between them is the period
        periods = [(t1 - t0) / (f1 - f0) for (_, _, f0, t0), (f1, t1, _, _) in zip(spans, spans[1:]) if f1 > f0]
    step = statistics.median(periods) if periods else 0.0
    if 0 < step < MIN_FRAME_S:
        return None
    for (_, _, f_end, t_end), (f_next, t_next, _, _) in zip(spans, spans[1:]):
        if t_next <= t_end or (step and abs(t_next - t_end - (f_next - f_end) * step) > 0.5 * step):
            return f_end, t_end, f_next, t_next
    return None
