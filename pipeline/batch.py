"""``fer-pipe batch``: many videos to CSVs, one Ray task per video (or per chunk of frames).

Ray Core owns the parallelism; each task runs the same YAML graph in its own process with
``run_graph``, so a task's CSV is the one ``fer-pipe run`` gives on the same video.

Execution is at-least-once (a dead worker or node makes Ray run the task again), but the
visible output is exactly-once: a task writes into ``OUT/_work/`` and ``os.replace``-s its
file into place only when it is complete, so a reader never sees a half-written CSV and a
retry never leaves a second one. An input whose CSV is already in ``OUT`` is skipped, which
makes a rerun resume. At the end ``OUT/_manifest.json`` lists every input with its rows,
attempts and seconds, and ``OUT/_SUCCESS`` marks a run in which every input succeeded.

Ray Data's file writers are not used: they have shipped duplicate or overwritten outputs
after task retries, which is the one thing this module must never do.

On a multi-node cluster (``--address``), ``OUT`` and the inputs must be on storage every
node sees at the same path, and fer-pipe must be installed on every node.

This module is the driver (planning, the task loop, manifest); which videos it reads is in
``batch_inputs``, what it refuses in a config is in ``batch_checks``, what a task runs in ``batch_task``, where it runs in ``batch_cluster``, its progress bar in
``batch_progress``, and how a video's chunk CSVs are checked and joined in ``batch_parts``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import hangup
from .arguments import home, made_path, number, whole
from .batch_inputs import expand_folders, not_a_video_file, say, shown, stems
from .batch_checks import refuse_frame_range, refuse_other_sources, refuse_shared_outputs, refuse_stateful_chunks
from .batch_cluster import (StopSignals, check_cluster, import_ray, refuse_what_ray_cannot_take, start_ray, stop_ray,
                            watch_cluster)
from .batch_parts import merge_parts, misaligned
from .batch_progress import FrameProgress
from .batch_settings import (SETTINGS, first_difference, recorded_settings, record_settings, settings_of,
                             version_change)
from .batch_sources import (SOURCES, Source, clash, kept_besides, record_sources, recorded_sources, same_video,
                            source_of)
from .batch_task import (TEMP_SUFFIX, Job, attempts_file, count_rows, frame_count, job_config, partial_path,
                         run_job, stall_mark, video_csv_stages)
from .errors import UNUSABLE_PATH, InputError, Truncated, UserError, printable
from .inprocess import ALSO
from .output_files import held_folder, make_folder, write_whole
from .preflight import check_stages
from .redaction import redact_urls
from .seeking import why_no_seek
from .stage import StageFailure

WORK = "_work"
MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"


@dataclass
class InputReport:
    input: str
    csv: str
    status: str = "pending"  # done | skipped | failed
    rows: int = 0
    attempts: int = 0
    seconds: float = 0.0
    chunks: int = 1
    chunks_run: int = 0
    """Chunks this run ran; the others were done by an earlier run. More attempts than these
    means a retry."""
    skipped: int = 0
    """Packets that stages with ``on_error: skip`` dropped, in the chunks this run ran."""
    warnings: list[str] = field(default_factory=list)
    """The warning lines of its tasks, each once (every chunk of a raw stream says its own), this
    run's and those an earlier run's manifest listed."""
    warned: list[str] = field(default_factory=list, repr=False)
    """Those of this run's tasks, said at its end."""
    error: str = ""
    partial: list[str] = field(default_factory=list)
    """For an input that turned out bad part-way, the CSV of the rows made before its damage
    (``NAME.partial.csv``), which ``rows`` then counts."""
    bad_input: bool = field(default=False, repr=False)
    failed_at: int | None = field(default=None, repr=False)
    """The first frame of the earliest chunk that failed: its failure is the input's."""
    truncated: bool = field(default=False, repr=False)
    """Whether that failure is a file cut short (``errors.Truncated``), not damage decoded past."""


def plan(inputs: Sequence[str], chunk_frames: int) -> tuple[dict[str, list[Job]], dict[str, str]]:
    """Jobs per input, and the inputs that cannot even be read (by name, with the reason).

    Every input's CSV is named after its file, so two inputs with the same stem are refused
    before anything runs rather than overwriting each other; so are names that meet in other
    files: ``cam@0-9.mp4``'s work files and those of ``cam.mp4``'s first chunk of 10, or
    ``x.partial.mp4``'s CSV and ``x.avi``'s partial rows.
    """
    from .config import NAME_MAX

    jobs: dict[str, list[Job]] = {}
    bad: dict[str, str] = {}
    for key, item in stems(inputs).items():
        problem = not_a_video_file(item)
        if problem:
            bad[item] = problem
            continue
        count = frame_count(item) if chunk_frames else None
        chunked = count is not None and 0 < chunk_frames < count
        unseekable = why_no_seek(item) if chunked else ""
        if count == 0:  # a 3-hour one ran on one core without a word
            unseekable = ("its frame count is unknown (its container keeps none: a raw stream, or a Matroska file "
                          "written to a pipe), read as one task: chunks are planned from the count")
        if unseekable:
            say(f"fer-pipe: batch: {shown(item)}: {unseekable}")
            chunked = False
        if chunked:
            # The last chunk reads to the end: the count is an estimate (by a frame or two).
            jobs[item] = [Job(item, key, start, chunk_frames if start + chunk_frames < count else 0)
                          for start in range(0, count, chunk_frames)]
        else:
            jobs[item] = [Job(item, key)]
        longest = max(len(os.fsencode(job.name)) for job in jobs[item]) + len(TEMP_SUFFIX)
        if longest > NAME_MAX:  # fer-pipe run takes it: only the work files' names are too long
            del jobs[item]
            bad[item] = (f"video {item}: its name is too long for batch's work files, which add up to "
                         f"{longest - len(os.fsencode(key))} bytes to it; {NAME_MAX} bytes is Linux's limit; "
                         "rename it")
    owners: dict[str, str] = {}
    for item, item_jobs in jobs.items():  # and its whole-video job's, which a rerun as one task takes
        for job in sorted({Job(item, Path(item).stem), *item_jobs}, key=lambda j: j.start):
            for name in (job.name, f"{job.name}.partial"):  # a part, and the rows a damaged one kept
                if owners.setdefault(name, item) != item:
                    raise InputError(f"inputs {owners[name]} and {item} would share the work files named "
                                     f"{name}; rename one")
    return jobs, bad


def _attempts(work: Path, job: Job) -> int:
    try:
        with open(attempts_file(work, job), encoding="utf-8") as fh:
            return sum(1 for _ in fh)
    except FileNotFoundError:
        return 0


def _failure(exc: BaseException) -> tuple[str, bool]:
    """The one-line reason of a failed task, and whether the input (not the cluster) was at fault."""
    cause = getattr(exc, "cause", None) or exc
    if isinstance(cause, UserError):
        return str(cause), cause.exit_code == 2  # not an output that failed (a full disk)
    if isinstance(cause, StageFailure):  # it says which stage, where and what
        return str(cause), False
    return f"{type(cause).__name__}: {cause}".splitlines()[0], False


def run_batch(inputs: Sequence[str], out: str | Path, config: str | None = None,
              address: str | None = None, num_cpus: int | None = None, chunk_frames: int = 0,
              max_retries: int = 3, quiet: bool = False, overrides: Sequence[str] = (),
              stall_timeout: float = 120.0) -> int:
    """Run the batch and return the exit code: 0 all done, 2 bad input, 1 any other failure.
    ``overrides`` are ``--set`` items, as ``fer-pipe run`` takes them; ``stall_timeout`` fails a
    video whose task is stuck in one stage call that long (0: never), as it fails a run."""
    from .config import apply_overrides, build_graph
    from .config_file import config_path, read_config, shipped_configs

    if address == "local":  # Ray's own word for what no address does here, with --num-cpus and 127.0.0.1
        address = None

    origin = str(config_path(config) if config is not None else shipped_configs() / "video_to_csv.yaml")
    data, lines = read_config(origin)
    data = apply_overrides(data, overrides, origin, lines)
    out_dir = Path(out)
    graph = build_graph(job_config(data, origin, Job("input.mp4", "input"), out_dir / "input.csv"), lines,
                        origin)  # a config error is one line before Ray starts, not one per task
    video, sink = video_csv_stages(data, origin)
    refuse_frame_range(data, video, origin)
    refuse_other_sources(graph, video, origin)
    refuse_shared_outputs(graph, sink, origin)
    if chunk_frames:
        refuse_stateful_chunks(graph, origin)
    if not address:  # where the tasks run on this machine; each task checks them again where it runs, video and CSV too
        check_stages(graph, skip=(video, sink))
    address = check_cluster(address)
    refuse_what_ray_cannot_take(inputs)  # the inputs as given, not the folders' files
    inputs = expand_folders(inputs, out_dir)
    jobs, bad = plan(inputs, chunk_frames)  # a clash of names is one line before anything is made
    if address:  # a cluster that is not there is one line, before anything is made
        start_ray(address, num_cpus)
    else:  # a local Ray starts only where there is work, but one not installed is said before it
        import_ray(address)
    make_folder(out_dir, "--out")
    with held_folder(out_dir, "--out", "batch"):
        return _run_planned(inputs, jobs, bad, out_dir, data, origin, list(overrides), settings_of(graph, sink),
                            address, num_cpus, max_retries, quiet, stall_timeout)


def _run_planned(inputs: list[str], jobs: dict[str, list[Job]], bad: dict[str, str], out_dir: Path,
                 data: dict[str, Any], origin: str, sets: list[str], settings: dict[str, Any], address: str | None,
                 num_cpus: int | None, max_retries: int, quiet: bool, stall_timeout: float) -> int:
    """The batch, planned, in its results folder, which this run holds."""
    work = out_dir / WORK
    recorded = recorded_sources(out_dir, work / "parts")
    made_with = recorded_settings(out_dir)
    older = _older_folder(out_dir, recorded, made_with)
    if older:
        raise InputError(f"--out {out_dir}: {older}, so this fer-pipe cannot tell whether its CSVs were made as it "
                         "would make them; give another --out")
    changed = version_change(made_with, settings) if recorded and made_with is not None else None
    if changed:  # another fer-pipe, or another release of a plug-in, made what the folder holds
        raise InputError(f"--out {out_dir}: the CSVs or finished tasks in it were made by another version of a "
                         f"stage: {changed} (another fer-pipe, or another release of its plug-in); give another --out")
    why = first_difference(made_with, settings) if recorded and made_with is not None else None
    if why:  # resuming would finish the folder with other settings than its CSVs were made with
        raise InputError(f"--out {out_dir}: the CSVs or finished tasks in it were made with other settings: "
                         f"{why}; give another --out, or the config, --set and environment variables that "
                         f"made them ({SETTINGS} in it holds the values)")
    earlier = _listed_before(out_dir)  # before this run's manifest replaces the last one's
    reports = {i: InputReport(i, str(out_dir / f"{Path(i).stem}.csv"),
                              warnings=_strings(earlier.get(i, {}), "warnings")) for i in inputs}
    for item, reason in bad.items():
        reports[item].status, reports[item].error, reports[item].bad_input = "failed", reason, True
    sources = dict(recorded)
    todo: list[Job] = []
    for item, item_jobs in jobs.items():
        report = reports[item]
        report.chunks = len(item_jobs)
        key, video = Path(item).stem, source_of(item)
        why = clash(key, video, sources, out_dir, work) if video is not None else None
        if why:  # its name's outputs are another video's, and resuming would give them to this one
            report.status, report.bad_input, report.error = "failed", True, why
            continue
        if Path(report.csv).is_file() and key not in recorded:  # adopted, it was vouched for by _SUCCESS
            report.status, report.bad_input = "failed", True
            report.error = (f"{report.csv} is there, and no batch into {out_dir} made it (a fer-pipe run's CSV, or "
                            "another file?); remove it, or give another --out")
            continue
        if video is not None:
            sources[key] = video
        if Path(report.csv).is_file():
            report.status, report.rows = "skipped", count_rows(Path(report.csv))
            continue
        mine = [j for j in item_jobs if not _part_path(work, j).is_file()]
        report.chunks_run = len(mine)
        if mine:  # what else failed in an attempt that failed is not this one's (a done input kept saying it)
            report.warnings = [line for line in report.warnings if not line.startswith(ALSO)]
        todo += mine
    if sources != recorded:  # a rerun with nothing new leaves the folder as it was
        record_sources(out_dir, sources)

    started = time.monotonic()
    pending_inputs = [i for i, r in reports.items() if r.status == "pending"]
    if not pending_inputs and not any(r.status == "failed" for r in reports.values()):
        if not quiet:
            every = "its one input already has its" if len(reports) == 1 else f"all {len(reports)} inputs already have their"
            print(f"fer-pipe batch: nothing to do: {every} CSV in {out_dir}", file=sys.stderr)
        if not (out_dir / SUCCESS).exists():
            _finish(out_dir, work, reports, origin, sets, address, 0.0)
        return 0

    (out_dir / SUCCESS).unlink(missing_ok=True)  # the folder is not whole until this run ends well
    if settings != made_with:
        record_settings(out_dir, settings)
    (work / "parts").mkdir(parents=True, exist_ok=True)
    show = not quiet and sys.stderr.isatty()
    _run_round(todo, data, origin, work, reports, address, num_cpus, max_retries, stall_timeout, show,
               _videos_done(reports, [job.input for job in todo]))
    for item in pending_inputs:
        _forgive_after_stop(reports[item], jobs[item], work)
    rerun = _rejoin_unaligned(pending_inputs, reports, jobs, work)
    _run_round(rerun, data, origin, work, reports, address, num_cpus, max_retries, stall_timeout, show,
               _videos_done(reports, [job.input for job in rerun]))
    for item in pending_inputs:
        report = reports[item]
        if report.status != "failed":
            _fail_if_changed(report, sources.get(Path(item).stem))
        if report.status == "failed":
            if report.bad_input:
                _keep_partial(report, jobs[item], work, out_dir)
            continue
        try:
            _join_parts(report, _joined(jobs[item], work), work)
        except OSError as exc:
            _not_placed(report, exc, work)
            continue
        kept_before = [Path(p).name for p in _strings(earlier.get(item, {}), "partial")]
        _remove_partials(out_dir, [name for name in (f"{Path(item).stem}.partial.csv", *kept_before)
                                   if Path(name).stem not in sources])  # not another input's CSV
    return _finish(out_dir, work, reports, origin, sets, address, time.monotonic() - started, quiet)


def _videos_done(reports: dict[str, InputReport], running: list[str]) -> int:
    """Where the progress bar's count of videos starts: the inputs whose CSV is in, or will be
    once their parts are joined, but for those with a task about to run (an input whose tasks
    all finished before a stop runs none, and no finished task will count it); a failed input
    is not done."""
    running_now = set(running)
    return sum(report.status != "failed" and item not in running_now for item, report in reports.items())


def _fail_if_changed(report: InputReport, planned: Source | None) -> None:
    """Fail an input whose file is not what it was when the batch was planned: a recording still
    being written, in blocks a read can fall between, was read up to where the recorder had got,
    marked done under _SUCCESS, and every later batch refused it as replaced (s68c 1). Its rows
    are kept as a damaged file's are (no chunk failed: ``_partial_pieces``), and a rerun once
    it is whole reads it again. One gone since, or whose path leads to another file now (a link
    moved on), fails too, without that promise: the rerun finds its own (s68g 4, 5)."""
    if planned is None:
        return
    now, where = source_of(report.input), f"video {report.input}: "
    if now is not None and same_video(planned, now):
        return
    report.status, report.bad_input = "failed", True
    if now is None:
        report.error = f"{where}the file is gone since its tasks began to read it"
    elif now.path != planned.path:
        report.error = f"{where}the path leads to {now.path} now, where its tasks read {planned.path}"
    else:
        # a size 'then' and 'now' alike read as no change (s68f 6); a smaller file is no recording going on (s68g 5)
        how = ("modified again, the same size: rewritten?" if now.size == planned.size else
               f"{planned.size:,} bytes then, {now.size:,} now: "
               f"{'still being recorded?' if now.size > planned.size else 'cut short or replaced?'}")
        report.error = f"{where}the file changed while it was read ({how}); the same command once it is whole reads it again"


def _join_parts(report: InputReport, joined: list[Job], work: Path) -> None:
    """The input's CSV from its chunks' parts, in order; the input is done."""
    parts = [_part_path(work, j) for j in joined]
    if len(parts) > 1:
        report.rows = merge_parts(parts, Path(report.csv), work)
    else:
        os.replace(parts[0], report.csv)
        report.rows = count_rows(Path(report.csv))
    for job in joined:
        partial_path(_part_path(work, job)).unlink(missing_ok=True)  # an earlier attempt's
    report.status = "done"


def _not_placed(report: InputReport, exc: OSError, work: Path) -> None:
    """The input's CSV could not be written from its finished parts (a full disk, a folder in its
    place): it fails, named, like one whose task failed, and the others are still placed. Its
    parts stay under ``_work``, so the same command again only joins them."""
    report.status, report.bad_input = "failed", exc.errno in UNUSABLE_PATH
    report.error = (f"cannot write {report.csv}: {exc.strerror or exc}; its finished tasks are kept in {work}, "
                    "and the same command again writes it from them")


def _first_stop(item_jobs: list[Job], work: Path) -> int | None:
    """The first frame of the first chunk in which a stage ended the run (``StopRun``), if any."""
    return next((j.start for j in item_jobs if _stop_mark(work, j).exists()), None)


def _joined(item_jobs: list[Job], work: Path) -> list[Job]:
    """The jobs whose parts make the input's CSV: a stage that ended the run in a chunk ended
    the video's CSV there, as in ``fer-pipe run``."""
    stop = _first_stop(item_jobs, work)
    return [j for j in item_jobs if stop is None or j.start <= stop]


def _forgive_after_stop(report: InputReport, item_jobs: list[Job], work: Path) -> None:
    """A chunk that failed after one in which a stage ended the run fails nothing: ``fer-pipe
    run`` would have stopped before reading it, and its rows are not joined."""
    stop = _first_stop(item_jobs, work)
    if report.failed_at is not None and stop is not None and stop < report.failed_at:
        report.status, report.error, report.bad_input, report.failed_at = "pending", "", False, None


def _forget_chunks(item_jobs: list[Job], work: Path) -> None:
    """Remove what the input's chunks left under ``_work`` (parts, partial rows, stop marks):
    they are of a damaged file, or of chunks that did not line up, and no rerun may take them."""
    for job in item_jobs:
        part = _part_path(work, job)
        for path in (part, partial_path(part), _stop_mark(work, job)):
            path.unlink(missing_ok=True)


def _run_round(todo: list[Job], data: dict[str, Any], origin: str, work: Path, reports: dict[str, InputReport],
               address: str | None, num_cpus: int | None, max_retries: int, stall_timeout: float, show: bool,
               already: int) -> None:
    if not todo:
        return
    try:
        _run_tasks(todo, data, origin, work, reports, address, num_cpus, max_retries, stall_timeout, show, already)
    except KeyboardInterrupt:
        print(f"fer-pipe batch: interrupted; the tasks that finished are kept in {work}, and the same "
              "command again runs only the others", file=sys.stderr)
        raise


def _rejoin_unaligned(pending: list[str], reports: dict[str, InputReport], jobs: dict[str, list[Job]],
                      work: Path) -> list[Job]:
    """One whole-video job for each input whose chunks do not line up, their parts removed.

    A chunk starts where OpenCV's seek lands, which is the frame that a count from the start
    gives that number only in a well-made file: in an AVI re-encoded from a variable-rate
    source, the seek to frame 20 lands on frame 19, and the joined CSV held that frame twice.
    A chunk that lost frames to damage decodes on into the next one's frames the same way.
    The chunks' times show it: a chunk that starts at or before where the last one ended, or
    half a frame or more off where their frame numbers put it. Such a video is run again as
    one task (its ``jobs`` entry becomes that task), which gives what ``fer-pipe run`` gives,
    as the byte-for-byte promise says. So is a chunked one that failed as bad input with rows
    made, whose rows become ``NAME.partial.csv``: they must be the ones one run keeps, and a
    chunk stops at the damage it finds where one run decodes on past it to the end of the file
    (a chunk that starts in it decodes from damaged frames), so its chunks kept 40 to 77 rows
    of a file whose one run kept 77, by chunk size. One cut short inside a chunk's rows keeps
    its chunks (``_cut_short_in_its_rows``), where they line up."""
    rerun: list[Job] = []
    for item in pending:
        report = reports[item]
        if report.status == "failed" and not report.bad_input:
            continue  # its parts are kept for the same command again, which joins them then
        pieces = (_partial_pieces(report, jobs[item], work) if report.status == "failed"
                  else [_part_path(work, j) for j in _joined(jobs[item], work)])
        if report.status == "failed" and not _cut_short_in_its_rows(report, jobs[item], work):
            if len(jobs[item]) == 1 or not pieces:
                continue
            say(f"fer-pipe: batch: {shown(item)}: a chunk of it failed ({report.error}); it runs again as one "
                 "task, so that the rows kept are those one run keeps")
        else:
            gap = misaligned(pieces) if len(pieces) > 1 else None
            if gap is None:
                continue
            f_end, t_end, f_next, t_next = gap
            say(f"fer-pipe: batch: {shown(item)}: its chunks do not line up (frame {f_end} at {t_end:.3f} s, then "
                 f"frame {f_next} at {t_next:.3f} s): OpenCV's seek in this file misses its frame numbers, or damage "
                 "lost frames; it runs again as one task")
        _forget_chunks(jobs[item], work)
        jobs[item] = [Job(item, Path(item).stem)]
        report.status, report.error, report.bad_input, report.failed_at = "pending", "", False, None
        report.chunks_run += 1
        report.skipped = 0  # counted again by the one task
        rerun += jobs[item]
    return rerun


def _cut_short_in_its_rows(report: InputReport, item_jobs: list[Job], work: Path) -> bool:
    """Whether the input is a file cut short inside a chunk that made rows: its chunks then hold
    what one run reads, and running it again as one task (a long video, serially) gives the
    same rows. A chunk that starts past the cut, or in damage, decodes nothing one run would."""
    failed = next((j for j in item_jobs if j.start == report.failed_at), None)
    if not report.truncated or failed is None:
        return False
    rows = partial_path(_part_path(work, failed))
    return rows.is_file() and count_rows(rows) > 0


def _keep_partial(report: InputReport, item_jobs: list[Job], work: Path, out_dir: Path) -> None:
    """An input that turned out bad part-way: the rows before its damage (the chunks before the
    failed one, and the rows that one made, where the file is cut short in them; any other
    chunked one ran again as one task) become ``NAME.partial.csv``, as one run's would, and the
    error names it. Its other parts go: they are of the damaged file, and a rerun, once the
    file is mended, must not take them."""
    target = out_dir / f"{Path(report.input).stem}.partial.csv"
    target.unlink(missing_ok=True)  # an earlier run's, of the file as it was then
    pieces = _partial_pieces(report, item_jobs, work)
    if pieces:
        first = item_jobs[0].start
        if report.failed_at is not None and report.failed_at != first:
            # the source of a later chunk said the frames from its own start: "frames 40-74 before
            # it were processed", where 0-74 were, and are kept
            report.error = report.error.replace(f"frames {report.failed_at}-", f"frames {first}-", 1)
        try:
            report.rows = merge_parts(pieces, target, work)
            report.partial = [str(target)]
            report.error += f"; {report.rows} rows of it are kept in {target}"
        except OSError as exc:
            report.error += f"; the rows before it could not be kept in {target} ({exc.strerror or exc})"
    _forget_chunks(item_jobs, work)


def _partial_pieces(report: InputReport, item_jobs: list[Job], work: Path) -> list[Path]:
    """The CSVs of the rows before a failed input's damage: the parts of the chunks before the
    failed one, then the partial rows that one made. Where no chunk failed (its file changed
    under them: ``_fail_if_changed``), the parts its CSV would join, none after a stage's stop
    (s68f 4)."""
    if report.failed_at is None:
        return [part for part in (_part_path(work, job) for job in _joined(item_jobs, work)) if part.is_file()]
    pieces = []
    for job in item_jobs:
        part = _part_path(work, job)
        piece = part if job.start < report.failed_at else partial_path(part)
        if job.start > report.failed_at or not piece.is_file():
            break
        pieces.append(piece)
    return pieces


def _older_folder(out_dir: Path, recorded: dict[str, Any], made_with: dict[str, Any] | None) -> str | None:
    """What says the folder holds outputs a fer-pipe made before it recorded what made them, or
    None. Such a folder was finished with this one's rows beside the old ones (another
    detector's boxes within one CSV), or, with no ``_sources.json``, had its finished CSVs
    called strangers' and marked failed."""
    if recorded and made_with is None:
        return (f"its {SETTINGS} is not one fer-pipe wrote (edited by hand?)" if (out_dir / SETTINGS).exists() else
                f"its outputs have no {SETTINGS} (a fer-pipe before 0.2.0 made them, or it was removed)")
    done = any(entry.get("status") == "done" for entry in _manifest_inputs(out_dir))
    if done and not recorded and not (out_dir / SOURCES).exists():
        return f"its {MANIFEST} lists finished inputs, and it has no {SOURCES} (a fer-pipe before 0.2.0 made it)"
    return None


def _manifest_inputs(out_dir: Path) -> list[dict[str, Any]]:
    """The inputs the last run's manifest lists, each an object; none where there is no
    manifest yet, or one that is not ours."""
    try:
        inputs = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))["inputs"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [entry for entry in inputs if isinstance(entry, dict)] if isinstance(inputs, list) else []


def _listed_before(out_dir: Path) -> dict[str, dict[str, Any]]:
    """The last run's manifest entries, by input: the partial files it kept of inputs it failed,
    whose names depend on that run's chunks, and the warnings of its tasks, which a rerun that
    finds an input done (or its chunks) does not get again."""
    return {entry["input"]: entry for entry in _manifest_inputs(out_dir) if isinstance(entry.get("input"), str)}


def _strings(entry: dict[str, Any], key: str) -> list[str]:
    """A list of strings of a manifest entry, or none where it holds another thing (not ours)."""
    value = entry.get(key, [])
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _remove_partials(out_dir: Path, names: list[str]) -> None:
    """An input's partial rows kept by earlier runs (``names``, in ``out_dir``), once its CSV is
    whole: left beside it, a reader of ``OUT/*.csv`` got their frames twice. Only names known
    to be the input's: ``door@2024-05.partial.csv`` may be a chunk of ``door``'s, or the input
    ``door@2024-05``'s own rows."""
    for name in names:
        (out_dir / name).unlink(missing_ok=True)


def _stop_mark(work: Path, job: Job) -> Path:
    """Beside a finished chunk: a stage ended the run in it (``StopRun``). Kept with the part, so
    a rerun that reuses the part still ends the video's CSV there."""
    return work / "parts" / f"{job.name}.stopped"


def _part_path(work: Path, job: Job) -> Path:
    """Where a task's finished CSV lands: under ``_work`` until all chunks of its input are in."""
    return work / "parts" / f"{job.name}.csv"


def _run_tasks(todo: list[Job], data: dict[str, Any], origin: str, work: Path,
               reports: dict[str, InputReport], address: str | None, num_cpus: int | None,
               max_retries: int, stall_timeout: float, show_progress: bool, already: int) -> None:
    ray = start_ray(address, num_cpus)
    watching = watch_cluster(ray.get_runtime_context().gcs_address, lambda after: _cluster_lost(address, work, after))
    try:
        task = ray.remote(run_job).options(
            num_cpus=1, max_retries=max_retries, scheduling_strategy="SPREAD",
            retry_exceptions=[ConnectionError, TimeoutError])  # infrastructure hiccups; never bad input
        for job in todo:  # an earlier run's attempts at it, its stop and its stall, are not this run's
            for mark in (attempts_file(work, job), _stop_mark(work, job), stall_mark(work, job)):
                mark.unlink(missing_ok=True)
        _sweep_temps(work)  # nor its unfinished CSVs, which the bar counted as this run's rows
        here = os.getcwd()  # where a relative input, --out or config path means what it means to the user
        refs = {task.remote(data, origin, job, str(_part_path(work, job).absolute()), str(work.absolute()), here,
                            stall_timeout): job
                for job in todo}
        left = {}
        for job in todo:
            left[job.input] = left.get(job.input, 0) + 1
        progress = FrameProgress(todo, work, len(reports), already) if show_progress else None
        try:
            _wait_tasks(ray, refs, left, work, reports, progress)
        finally:  # also on Ctrl-C, whose line then starts on a line of its own
            if progress is not None:
                progress.close()
    finally:
        watching.set()
        held = stop_ray(ray)
    if held:  # a stop that came while Ray shut down after the last task: it goes on as it came
        signal.raise_signal(held[0])


def _cluster_lost(address: str | None, work: Path, after: float) -> None:
    """The cluster's head stopped answering: said, and the batch ends (exit 1), as Ray would end
    it a little later without a word of ours. What a task finished is in ``work``,
    where the same command takes it up; the manifest is not written, as after a SIGKILL."""
    where = f"at {address}" if address else "this batch started"
    below_the_bar = "\n" if sys.stderr.isatty() else ""
    print(f"{below_the_bar}fer-pipe batch: the Ray cluster {where} stopped answering for {after:g} s (its head "
          f"stopped, or the network to it); the tasks that finished are kept in {work}, and the same command "
          "again runs only the others", file=sys.stderr, flush=True)
    os._exit(1)


def _wait_tasks(ray: Any, refs: dict[Any, Job], left: dict[str, int], work: Path,
                reports: dict[str, InputReport], progress: FrameProgress | None) -> None:
    """Collects the tasks' results as they end, into ``reports`` and the progress bar."""
    pending = list(refs)
    stalled: dict[Job, str] = {}
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
        _cancel_stalled(ray, refs, pending, work, stalled)
        for ref in ready:
            job = refs[ref]
            report = reports[job.input]
            report.attempts += _attempts(work, job)
            try:
                done = ray.get(ref)
                report.seconds += done.seconds
                report.skipped += done.skipped
                _warned(report, done.warnings)
                if done.stopped:
                    _stop_mark(work, job).touch()
            except Exception as exc:  # a task's failure, after Ray's own retries
                _warned(report, getattr(getattr(exc, "cause", None) or exc, "warnings", ()))
                message, bad_input = (stalled[job], False) if job in stalled else _failure(exc)  # cancelled: why
                if report.failed_at is None or job.start < report.failed_at:
                    report.status, report.error = "failed", message
                    report.bad_input, report.failed_at = bad_input, job.start
                    report.truncated = isinstance(getattr(exc, "cause", None) or exc, Truncated)
                if bad_input:
                    pending = _cancel_later_chunks(ray, refs, pending, job, left, report, work)
            left[job.input] -= 1
            if progress is not None:
                progress.job_done(job, _part_path(work, job), not left[job.input] and report.status != "failed")
        if progress is not None:
            progress.update()


def _warned(report: InputReport, lines: Iterable[str]) -> None:
    """A task's warning lines into its input's report, each once."""
    for line in map(redact_urls, lines):
        if line not in report.warned:
            report.warned.append(line)
        if line not in report.warnings:
            report.warnings.append(line)


def _cancel_stalled(ray: Any, refs: dict[Any, Job], pending: list[Any], work: Path, stalled: dict[Job, str]) -> None:
    """Cancel each task that says it is stuck in a stage call (``stall_mark``), killing its
    process, and keep its line for its failure; Ray does not retry a cancelled task."""
    try:
        names = set(os.listdir(work / "stalled"))
    except FileNotFoundError:
        return
    for ref in pending:
        job = refs[ref]
        mark = stall_mark(work, job)
        if mark.name in names and job not in stalled:
            stalled[job] = mark.read_text(encoding="utf-8")
            ray.cancel(ref, force=True)


def _cancel_later_chunks(ray: Any, refs: dict[Any, Job], pending: list[Any], failed: Job,
                         left: dict[str, int], report: InputReport, work: Path) -> list[Any]:
    """Cancel the chunks of ``failed``'s input after it, and return ``pending`` without them: the
    file is damaged from there on, so their rows would be dropped. A header that counted 5
    million frames in a 48-frame file ran 4,999 chunks that each read nothing, for minutes.
    The report counts the attempts those had begun, and as run only those that began: its
    attempts were fewer than its chunks run, which no retry explains."""
    later = {ref for ref in pending if refs[ref].input == failed.input and refs[ref].start > failed.start}
    for ref in later:
        ray.cancel(ref)
        begun = _attempts(work, refs[ref])
        report.attempts += begun
        report.chunks_run -= not begun
    left[failed.input] -= len(later)
    return [ref for ref in pending if ref not in later]


def _sweep_temps(work: Path) -> None:
    """Remove the CSVs of attempts that did not finish: a killed task's, or those a Ctrl-C
    stopped. Left at the start of the next run, the progress bar counted them as its tasks'
    rows until each task wrote its own, then went back (325 frames to 15, s64a 1)."""
    for temp in work.glob("*.tmp.csv"):
        temp.unlink(missing_ok=True)


def _finish(out_dir: Path, work: Path, reports: dict[str, InputReport], origin: str, sets: list[str],
            address: str | None, seconds: float, quiet: bool = True) -> int:
    """Write the manifest, clear temporary files, mark success, report failures by name. The
    manifest names the config and its ``--set`` items: the CSVs are what both made."""
    _sweep_temps(work)
    failed = [r for r in reports.values() if r.status == "failed"]
    manifest = {
        "config": origin, "set": sets, "cluster": address or "local", "seconds": round(seconds, 3),
        "inputs": [{k: redact_urls(shown(v) if k == "input" else v) if k in ("input", "error") and v else v
                    for k, v in asdict(r).items()
                    if k not in ("bad_input", "failed_at", "truncated", "warned") and (k not in ("partial", "warnings") or v)}  # the folder travels: no password
                   | {"seconds": round(r.seconds, 3)} for r in reports.values()],
    }
    for report in failed:  # before the manifest, which a full disk may refuse
        said = printable(report.error)  # "video X: ..." names it; a path it quotes further on does not
        named = any(re.match(rf"\S+ {re.escape(printable(name))}: ", said) for name in (report.input, shown(report.input)))
        say(f"fer-pipe: batch: {report.error}" if named else f"fer-pipe: batch: {shown(report.input)}: {report.error}")
        for line in report.warned:  # what else failed in its task, under its line and named: said after every
            if line.startswith(ALSO):  # input's, it read as the last one's
                say(f"fer-pipe: batch: {shown(report.input)}: {line.removeprefix('fer-pipe: ')}")
    write_whole(out_dir / MANIFEST, json.dumps(manifest, indent=2) + "\n", "batch")
    for report in reports.values():
        for line in report.warned:
            if not line.startswith(ALSO):
                say(line)
        if report.skipped:  # the tasks' own lines are in Ray's worker logs, which nobody reads
            say(f"fer-pipe: batch: {shown(report.input)}: {report.skipped} packet(s) skipped by stages with "
                 "on_error: skip (the first ten of each task and stage: Ray's worker logs)")
    others = kept_besides(out_dir, work / "parts", {Path(r.input).stem for r in reports.values()})
    if failed or others:
        (out_dir / SUCCESS).unlink(missing_ok=True)
    else:
        if work.is_dir():  # the attempts' records and parts (none on a re-run with nothing to do)
            shutil.rmtree(work)
        (out_dir / SUCCESS).touch()
    if others:  # a batch of other videos into the folder deleted them, and marked it whole
        say(f"fer-pipe: batch: {work} keeps the finished tasks of {len(others)} other video(s) ("
             f"{', '.join(others[:3])}{', ...' if len(others) > 3 else ''}) that a stopped run left; no "
             f"{SUCCESS} until the command that started them runs again")
    if not quiet:  # after the failures too: what did get done, and where the manifest is
        done = [r for r in reports.values() if r.status == "done"]
        retries = sum(max(0, r.attempts - r.chunks_run) for r in done)
        print(f"fer-pipe batch: {len(done)} done ({retries} retried), {len(failed)} failed, "
              f"{len(reports) - len(done) - len(failed)} already there, in {seconds:.1f} s; manifest "
              f"{out_dir / MANIFEST}", file=sys.stderr)
    if failed:
        return 2 if all(r.bad_input for r in failed) else 1
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", type=home, metavar="INPUT",
                        help="video files, or folders: each gives the videos directly in it")
    parser.add_argument("--out", required=True, type=made_path, metavar="FOLDER", help="folder for the CSVs, the manifest and _SUCCESS")
    parser.add_argument("--config", default=None, type=home,
                        help="graph with one video source and one csv sink (default: video_to_csv.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="STAGE.PARAM=VALUE",
                        help="override a parameter of the config (repeatable); the source's path and "
                             "frame range and the csv sink's path are each task's own")
    parser.add_argument("--address", default=None, metavar="ADDRESS",
                        help="Ray cluster to use: HOST:PORT, ray://HOST:PORT, or auto for RAY_ADDRESS's or the "
                             "one ray start --head started on this machine (default: start one of this run's "
                             "own, on 127.0.0.1)")
    parser.add_argument("--num-cpus", type=whole(1), default=None, metavar="N",
                        help="tasks at once on the local Ray (default: every core this process may use)")
    parser.add_argument("--chunk-frames", type=whole(0), default=0, metavar="FRAMES",
                        help="split videos longer than this into tasks of this many frames (0: never; an MPEG "
                             "transport or program stream is read as one task)")
    parser.add_argument("--max-retries", type=whole(0), default=3, metavar="N",
                        help="times Ray reruns a task whose worker or node died")
    parser.add_argument("--stall-timeout", type=number(0), default=120.0, metavar="SECONDS",
                        help="fail a video whose task is stuck in one stage call this long, as a run fails a stage "
                             "(seconds, 0: never; default 120)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def run(args: argparse.Namespace) -> int:
    hangup.guard_standard_streams(hangup.terminal_fds())  # lines to a log reader gone must not end the batch
    stops = StopSignals()
    try:
        with stops.handled():
            return run_batch(args.inputs, args.out, args.config, args.address, args.num_cpus,
                             args.chunk_frames, args.max_retries, args.quiet, args.set, args.stall_timeout)
    except KeyboardInterrupt:
        return 128 + stops.signum
    except StageFailure as exc:  # a plug-in's bug in the driver's preflight, said as fer-pipe run says it
        from .runner import RunResult, report

        report(RunResult.failed_before(exc), quiet=True, debug=args.debug)
        return 1
