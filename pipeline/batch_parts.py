"""A video's chunk CSVs, as ``fer-pipe batch`` joins them: whether they follow on from each
other, and the one CSV they make."""
from __future__ import annotations

import collections
import csv
import itertools
import os
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .batch_task import tail_rows, temp_csv
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


@dataclass(frozen=True)
class _Span:
    """A chunk CSV's first and last frame and time, and the period between its first two frames
    and its last two (None where it has one frame)."""

    first: int
    first_time: float
    head: float | None
    last: int
    last_time: float
    tail: float | None

    @classmethod
    def of(cls, part: Path) -> _Span | None:
        with open(part, encoding="utf-8", newline="") as fh:
            head = _two_frames(itertools.islice(csv.reader(fh), 1, HEAD_ROWS))
        if not head:
            return None
        tail = _two_frames(reversed(tail_rows(part)))
        if not tail:  # rows longer than the tail's window: read through
            with open(part, encoding="utf-8", newline="") as fh:
                tail = _two_frames(reversed(collections.deque(csv.reader(fh), maxlen=HEAD_ROWS)))
        return cls(head[0][0], head[0][1], _period(*head), tail[0][0], tail[0][1], _period(*tail))


HEAD_ROWS = 256
"""Rows read for a chunk's first two frames (a row per face)."""


def _two_frames(rows: Iterable[list[str]]) -> list[tuple[int, float]]:
    """The frame and time of the first row, and of the first after it of another frame."""
    found: list[tuple[int, float]] = []
    for row in rows:
        if row[FRAME] == "frame":  # a short file's header, read from its end
            continue
        frame = (int(row[FRAME]), float(row[TIME]))
        if not found or frame[0] != found[0][0]:
            found.append(frame)
            if len(found) == 2:
                break
    return found


def _period(a: tuple[int, float], b: tuple[int, float] | None = None) -> float | None:
    return abs(b[1] - a[1]) / abs(b[0] - a[0]) if b is not None else None


def misaligned(parts: list[Path]) -> tuple[int, float, int, float] | None:
    """Where the first chunk that the next does not follow on ends, and where the next starts
    (frame and time of each row), or None. The rows' own frame numbers say how far apart the two
    should be (a packet a stage skipped at the edge leaves a gap that is no fault), at the period
    of the frames either side of the edge (the chunks' median where they have one frame each).
    Judged by the median alone, a clip that changes its rate (a phone's 30 fps turning to 15 in
    low light) had each edge in its faster part called misaligned, the video run again as one
    task (s64a 2). Skipped where frames come faster than the CSV's milliseconds tell apart."""
    spans = [span for span in map(_Span.of, parts) if span is not None]
    periods = [(s.last_time - s.first_time) / (s.last - s.first) for s in spans if s.last > s.first]
    if not periods:  # chunks of one frame each: the step between them is the period
        periods = [(b.first_time - a.last_time) / (b.first - a.last) for a, b in zip(spans, spans[1:])
                   if b.first > a.last]
    step = statistics.median(periods) if periods else 0.0
    if 0 < step < MIN_FRAME_S:
        return None
    for a, b in zip(spans, spans[1:]):
        gap, frames = b.first_time - a.last_time, b.first - a.last
        steps = [p for p in (a.tail, b.head) if p] or [p for p in (step,) if p]  # the edge's own, else the median
        if gap <= 0 or (steps and all(abs(gap - frames * p) > 0.5 * p for p in steps)):
            return a.last, a.last_time, b.first, b.first_time
    return None
