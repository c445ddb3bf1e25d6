"""The task side of ``fer-pipe batch``: what one Ray task runs, on whichever node it lands.

A task gets the parsed config and one ``Job`` (a video, or a chunk of its frames), re-aims the
config's one video source and one csv sink at them, runs the graph in its own process with
``run_graph``, and renames its CSV into place only when it is complete (``run_job``). The
driver (``batch``) plans the jobs, starts the tasks and writes the manifest.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from .errors import ConfigError, InputError, UserError
from .inprocess import ALSO
from .opencv_names import opencv_name
from .output_files import cannot_write, write_whole
from .stage import StageFailure

WARNING = "fer-pipe: WARNING: "


@dataclass(frozen=True)
class Job:
    """One task: a whole video, or ``max_frames`` frames of it from ``start`` (0: to its end)."""

    input: str
    key: str
    start: int = 0
    max_frames: int = 0

    @property
    def name(self) -> str:
        """``KEY``, or for a chunk ``KEY@FIRST-LAST`` (``KEY@FIRST-end``): a finished chunk's
        part is reused by a rerun only for the same frames. Named by its start alone, a rerun
        with another ``--chunk-frames`` took the first run's parts for its own, and the joined
        CSV had frames twice."""
        if not (self.start or self.max_frames):
            return self.key
        last = self.start + self.max_frames - 1 if self.max_frames else "end"
        return f"{self.key}@{self.start}-{last}"


def video_csv_stages(config: dict[str, Any], origin: str) -> tuple[str, str]:
    """The names of the config's one ``video`` source and one ``csv`` sink, which a task re-aims."""
    stages = config.get("stages") if isinstance(config, dict) else None
    if not isinstance(stages, dict):
        raise ConfigError(f"{origin}: expected a mapping with a 'stages' key at the top")
    by_type: dict[str, list[str]] = {}
    for name, body in stages.items():
        if isinstance(body, dict):
            by_type.setdefault(str(body.get("type")), []).append(name)
    videos, csvs = by_type.get("video", []), by_type.get("csv", [])
    if len(videos) != 1 or len(csvs) != 1:
        raise ConfigError(f"{origin}: fer-pipe batch needs exactly one 'video' source and one 'csv' sink "
                          f"(found {len(videos)} and {len(csvs)})")
    return videos[0], csvs[0]


def frame_count(path: str) -> int | None:
    """Frames the video plays, as the video source counts them (an edit list's hidden frames
    left out), so that no chunk starts past its end, but for a chunk within the estimate's few
    frames of it, which reads nothing (see the video source's ``NEAR_END``); 0 where the file
    has no count, None where OpenCV cannot open it (its task says why)."""
    import cv2

    from .frame_count import frames_in

    try:
        name = opencv_name(path, "video")
    except InputError:
        return None
    capture = cv2.VideoCapture(name)
    try:
        if not capture.isOpened():
            return None
        return max(frames_in(capture, path), 0)
    finally:
        capture.release()


def job_config(config: dict[str, Any], origin: str, job: Job, csv_path: Path) -> dict[str, Any]:
    """The config of one task: the video and CSV paths, the frame range, one thread per stage,
    and the video read once, as fast as it decodes (``loop`` would never end a task, and
    ``realtime`` would skip the frames it falls behind on)."""
    video, sink = video_csv_stages(config, origin)
    from .registry import registry

    data = copy.deepcopy(config)
    stages = data["stages"]
    types = registry().types
    for body in stages.values():
        kind = body.get("type") if isinstance(body, dict) else None  # anything: the config check says what is wrong
        declared = types[kind].thread_params if isinstance(kind, str) and kind in types else ()
        if declared and isinstance(body.get("params") or {}, dict):
            ones = dict.fromkeys(map(types[kind].Params.given_name, declared), 1)  # an alias alone is taken
            body["params"] = {**(body.get("params") or {}), **ones}
    for name, given in ((video, {"path": job.input, "start": job.start, "max_frames": job.max_frames, "loop": False,
                                 "realtime": False}),
                        (sink, {"path": str(csv_path)})):
        params = stages[name].get("params")
        if not params or isinstance(params, dict):  # params of another kind: the config check names them
            stages[name]["params"] = {**(params or {}), **given}  # [] and "" are none, as config's check takes them
    return data


def attempts_file(work: Path, job: Job) -> Path:
    """Where the attempts at ``job`` are recorded, one line each: they are how the driver tells
    a retry, which Ray does not report."""
    return work / "attempts" / f"{job.name}.jsonl"


def stall_mark(work: Path, job: Job) -> Path:
    """Where a task stuck in one stage call writes the line it fails with, for the driver, which
    cancels it: the task's own thread cannot end the call (a plug-in's wait, a native hang)."""
    return work / "stalled" / f"{job.name}.txt"


def record_attempt(work: Path, job: Job, node: str) -> None:
    """One line per attempt, appended before any work, so retries show in the manifest."""
    line = json.dumps({"job": job.name, "pid": os.getpid(), "node": node, "time": time.time()})
    path = attempts_file(work, job)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except OSError as exc:  # a full disk: the bare "No space left on device" named no file
        raise cannot_write("batch:", path, exc) from None


def count_rows(path: Path) -> int:
    """Data rows of a CSV the csv sink wrote, counted as lines: no field of its own holds a line
    break (a source id cannot), and lines need no parsing. A plug-in's extra column that held
    one would be counted as two rows."""
    with open(path, "rb") as fh:
        return max(0, sum(1 for _ in fh) - 1)


def tail_rows(path: Path) -> list[list[str]]:
    """The last whole lines of a CSV the csv sink writes or wrote, as fields: those of its last
    4 KiB, which cost the same at any length (none where its last line is longer: a plug-in's
    wide extra column; read as fields, its cut end gave another column's value for the frame)."""
    with open(path, "rb") as fh:
        cut = fh.seek(max(0, fh.seek(0, os.SEEK_END) - 4096)) > 0
        lines = fh.read().splitlines()
    return list(csv.reader(line.decode("utf-8", "replace") for line in lines[cut:]))


def last_row(path: Path) -> list[str]:
    """The last line of a CSV the csv sink writes or wrote, as fields ([] when it has none)."""
    rows = tail_rows(path)
    return rows[-1] if rows else []


TEMP_SUFFIX = ".0123abcd.tmp.csv"
"""What ``temp_csv`` adds to a name (a unique part, so retries never share a file): batch
refuses a video whose work files' names would be too long for it."""


def temp_csv(folder: Path, name: str) -> Path:
    """Where a CSV being written under ``_work`` goes until it is whole (``NAME.UUID.tmp.csv``:
    the progress bar reads the name back, and the end of a run sweeps ``*.tmp.csv``)."""
    return folder / f"{name}.{uuid.uuid4().hex[:8]}.tmp.csv"


def partial_path(part: Path) -> Path:
    """Beside a task's part: the rows it made before its input turned out bad part-way."""
    return part.with_suffix(".partial.csv")


class JobDone(NamedTuple):
    """What a task tells the driver besides its CSV: its own lines go to Ray's worker logs."""

    seconds: float
    skipped: int
    """Packets that stages with ``on_error: skip`` dropped."""
    stopped: bool
    """A stage ended the run (``StopRun``): the chunks after this one are not part of the video's CSV."""
    warnings: tuple[str, ...] = ()
    """The task's warning lines (a raw stream dated at a guessed rate), for the driver to say."""


class _WarningsKept:
    """A task's stderr: every line goes on to Ray's worker log, and the warnings among them are
    kept for the driver, as nobody reads those logs: a raw stream dated at FFmpeg's guess of 25
    fps, its CSV's times 2.5 times too short, was said nowhere a batch's user looks. So are the
    failures said after the one its run raised (``ALSO``)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream, self._line, self.warnings = stream, "", []

    def write(self, text: str) -> int:
        self._stream.write(text)
        *lines, self._line = (self._line + text).split("\n")
        self.warnings += [line for line in lines if line.startswith((WARNING, ALSO))]
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def enter(folder: str, job: Job) -> None:
    """Work in ``folder``, the one the batch runs in, where this node has it: a worker of a
    cluster starts in the folder its ``ray start`` ran in, where a relative input was not found
    and a relative --out's files went (its tasks failed, and the work files were left there). A
    node without that folder keeps its own, where only absolute paths work: a relative input is
    refused there as not in that folder, not as missing from the one ``ray start`` ran in."""
    try:
        os.chdir(folder)
    except OSError as exc:
        if not os.path.isabs(job.input):
            raise InputError(f"video {job.input}: this node cannot enter {folder}, the folder the batch runs in, "
                             f"to read it ({exc.strerror}): give the videos on storage every node sees at the same "
                             "path") from None


def run_job(config: dict[str, Any], origin: str, job: Job, final: str, work: str, folder: str,
            stall_timeout: float) -> JobDone:
    """The body of one task: run the graph in this process into a temporary CSV, then rename it.

    The task works in ``folder``, the one the batch runs in (``enter``). A stage stuck in one call
    for ``stall_timeout`` fails it as it fails a run: the line goes to ``stall_mark`` for the
    driver to cancel the task, and is raised should the call end first.

    OpenCV's own thread pool is pinned here (the environment pins the others), because
    ``cv2.setNumThreads`` is per process and Ray reuses worker processes. When the input turns
    out bad part-way (a truncated file), the rows already made are kept beside the part
    (``partial_path``), for the driver to join with the chunks before it; the input still
    counts as failed, so a rerun tries it again.
    """
    import cv2
    import ray

    from .config import build_graph
    from .inprocess import run_graph

    cv2.setNumThreads(1)
    enter(folder, job)
    work_dir, target = Path(work), Path(final)
    record_attempt(work_dir, job, ray.get_runtime_context().get_node_id())
    started = time.perf_counter()
    temp = temp_csv(work_dir, job.name)
    kept = _WarningsKept(sys.stderr)
    stalled: list[str] = []

    def on_stall(line: str) -> None:
        stalled.append(line)
        mark = stall_mark(work_dir, job)
        mark.parent.mkdir(exist_ok=True)
        write_whole(mark, line, "stall mark")  # whole when the driver finds it

    try:
        with contextlib.redirect_stderr(kept):
            ran = run_graph(build_graph(job_config(config, origin, job, temp), {}, origin), on_stall, stall_timeout)
        if stalled:
            raise StageFailure(stalled[0])
        os.replace(temp, target)
    except Exception as exc:
        with contextlib.suppress(AttributeError):  # the lines that may say why its rows are wrong
            exc.warnings = tuple(kept.warnings)
        if isinstance(exc, UserError) and temp.exists() and count_rows(temp):
            os.replace(temp, partial_path(target))
        raise
    finally:
        temp.unlink(missing_ok=True)
    return JobDone(time.perf_counter() - started, ran.skipped, ran.stopped, tuple(kept.warnings))
