"""The progress bar of ``fer-pipe batch``, in frames over all inputs, read from the tasks' CSVs."""
from __future__ import annotations

import sys
import threading
from pathlib import Path

from .batch_task import Job, frame_count, last_row, partial_path
from .events import FRAME_COLUMNS


def frames_written(csv_path: Path, job: Job) -> int:
    """Frames of ``job`` in a CSV it is writing or has written: the frame number of its last
    row. The csv sink writes whole frames, one or more rows each, so this counts frames."""
    try:
        row = last_row(csv_path)
    except OSError:
        return 0
    try:
        return int(row[FRAME_COLUMNS.index("frame")]) - job.start + 1
    except (IndexError, ValueError):  # the header alone: no frame yet
        return 0


CLOSING_WAIT_S = 2.0
"""How long the closing bar waits for the frame counts of a long list of inputs on a slow share."""


class FrameProgress:
    """The batch's progress bar, in frames: a long video moves it while its task runs.

    Running tasks are read from their temporary CSVs under ``_work`` (found with one listing per
    update), finished ones from their part files. The total comes from each video's frame count,
    read in a thread so that a long list of inputs delays nothing; until it is known the bar
    counts without one. A count is the container's estimate, a few frames off in some files, so
    a finished task's frames replace it: the bar never runs past its total (where tqdm drops the
    total) and ends at it, but for what failed inputs left unread.
    """

    def __init__(self, todo: list[Job], work: Path, videos: int, videos_done: int) -> None:
        from tqdm import tqdm

        self._work, self._jobs = work, todo
        self._done: dict[Job, int] = {}
        self._totals: dict[Job, int | None] = {}
        self._exact: dict[Job, int] = {}
        self._videos, self._videos_done = videos, videos_done
        self._counter = threading.Thread(target=self._count, daemon=True)
        self._counter.start()
        self.bar = tqdm(total=None, unit="frame", file=sys.stderr, dynamic_ncols=True)

    def _count(self) -> None:
        """Frames each task will read (its chunk, or the rest of its video), opening each video
        once however many chunks it has."""
        videos: dict[str, int | None] = {}
        for job in self._jobs:
            if job.input not in videos:
                videos[job.input] = frame_count(job.input)
            count = videos[job.input]
            left = max(0, (count or 0) - job.start)
            self._totals[job] = (min(job.max_frames, left) if job.max_frames else left) if count else None

    def _total(self) -> int | None:
        """The bar's total: None while a task runs whose video has no count (a Matroska file written
        to a pipe, a raw stream, one that cannot be read). Counted as 0, it put the bar at 100 %
        before a 1,200-frame video of unknown length had begun, and the bar then dropped its total."""
        totals = []
        for job, total in self._totals.items():
            if job in self._exact:
                totals.append(self._exact[job])
            elif total is not None:
                totals.append(total)
            elif job in self._done:  # over, with what it read before its input turned out bad
                totals.append(self._done[job])
            else:
                return None
        return sum(totals)

    def job_done(self, job: Job, part: Path, video_done: bool) -> None:
        """``part``: the CSV the finished task wrote. A task whose input turned out bad part-way
        wrote the rows before the damage beside it instead: they were processed, and the bar
        left them out, ending at 94 %."""
        made = part if part.is_file() else partial_path(part)
        self._done[job] = frames_written(made, job)
        if made.is_file():  # the task finished, so these are all its frames
            self._exact[job] = self._done[job]
        self._videos_done += video_done

    def update(self) -> None:
        if not self._counter.is_alive():
            self.bar.total = self._total()
        newest: dict[str, Path] = {}
        for temp in sorted(self._work.glob("*.tmp.csv"), key=_mtime):
            newest[temp.name.rsplit(".", 3)[0]] = temp  # NAME.UUID.tmp.csv; a retry's is the newer
        running = sum(frames_written(newest[job.name], job) for job in self._jobs
                      if job not in self._done and job.name in newest)
        self.bar.n = sum(self._done.values()) + running
        self.bar.set_postfix_str(f"{self._videos_done}/{self._videos} videos", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self._counter.join(timeout=CLOSING_WAIT_S)  # every task is done: the total, if it comes soon
        self.update()
        self.bar.close()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # renamed into place or removed since the listing
        return 0.0
