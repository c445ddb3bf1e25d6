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

This module is the driver (checks of the config, planning, Ray, progress, manifest); what a
task runs is in ``batch_task``.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import socket
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .arguments import whole
from .batch_task import Job, attempts_file, count_rows, job_config, run_job, video_csv_stages
from .endpoints import is_loopback
from .errors import ConfigError, InputError, UserError
from .graph import Graph, file_key
from .output_files import make_folder
from .stage import Sink
from .stages.csv_sink import COLUMNS

WORK = "_work"
MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"
PINNED_THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                  "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
"""Environment of every task: one thread per library, so N tasks on N cores do not oversubscribe."""
VIDEO_SUFFIXES = (".avi", ".flv", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".mts", ".ts", ".webm",
                  ".wmv")
"""What a folder given as an input contributes: its files with these suffixes (in any case)."""
LOCAL_OBJECT_STORE = 100 * 1024 * 1024
"""Tasks exchange only a config and a small result, so a local Ray need not reserve its default
share (30 % of memory) of /dev/shm."""
CONNECT_TIMEOUT_S = 5.0
"""How long to wait for a TCP answer from --address before saying nothing is there."""


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
    error: str = ""
    partial: list[str] = field(default_factory=list)
    """For a failed input, the CSVs of the rows made before its damage (``NAME.partial.csv``;
    one per chunk that reached it), which ``rows`` then counts."""
    bad_input: bool = field(default=False, repr=False)


def frame_count(path: str) -> int:
    """Frames the video plays, as the video source counts them (an edit list's hidden frames
    left out), so that no chunk starts past its end, but for a chunk within the estimate's few
    frames of it, which reads nothing (see the video source's ``NEAR_END``)."""
    import cv2

    from .stages.video import frames_in

    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened():
            return 0
        return frames_in(capture, path)
    finally:
        capture.release()


def expand_folders(inputs: Sequence[str]) -> list[str]:
    """Each folder replaced by the videos directly in it, by name; files stay as given.

    ``batch videos/`` is what people type, and a shell glob of a large folder can exceed the
    argument limit. A folder with no videos stays in the list, so that it is reported by name.
    """
    expanded: list[str] = []
    for item in inputs:
        folder = Path(item)
        videos = sorted(str(p) for p in folder.iterdir()
                        if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()) if folder.is_dir() else []
        expanded += videos or [item]
    return expanded


def plan(inputs: Sequence[str], chunk_frames: int) -> tuple[dict[str, list[Job]], dict[str, str]]:
    """Jobs per input, and the inputs that cannot even be read (by name, with the reason).

    Every input's CSV is named after its file, so two inputs with the same stem are refused
    before anything runs rather than overwriting each other.
    """
    jobs: dict[str, list[Job]] = {}
    bad: dict[str, str] = {}
    stems: dict[str, str] = {}
    for item in inputs:
        key = Path(item).stem
        if key in stems and stems[key] != item:
            raise InputError(f"inputs {stems[key]} and {item} would both write {key}.csv; rename one")
        stems[key] = item
        if Path(item).is_dir():
            bad[item] = f"folder {item}: no videos in it ({', '.join(VIDEO_SUFFIXES)})"
            continue
        if not Path(item).is_file():
            bad[item] = f"video {item}: no such file"
            continue
        count = frame_count(item) if chunk_frames else 0
        if chunk_frames and count > chunk_frames:
            # The last chunk reads to the end: the count is an estimate (by a frame or two).
            jobs[item] = [Job(item, key, start, chunk_frames if start + chunk_frames < count else 0)
                          for start in range(0, count, chunk_frames)]
        else:
            jobs[item] = [Job(item, key)]
    return jobs, bad


def _host_port(address: str) -> tuple[str, str]:
    """Host (without an IPv6 address's brackets) and port text of HOST:PORT or ray://HOST:PORT."""
    host, _, port = address.split("://")[-1].rpartition(":")
    return host.strip("[]"), port


def is_loopback_address(address: str | None) -> bool:
    return not address or is_loopback(_host_port(address)[0])


def check_cluster(address: str | None) -> None:
    """InputError unless something listens at ``address`` (HOST:PORT or ray://HOST:PORT):
    ray.init retries an address nobody answers at for minutes, printing Ray's own log lines."""
    if not address or address == "auto":
        return
    host, port = _host_port(address)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--address {address}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise InputError(f"--address {address}: no Ray cluster answers there "
                         f"({exc.strerror or exc}); is its head node started (ray start --head)?") from None


def start_ray(address: str | None, num_cpus: int | None) -> ModuleType:
    """Connect to ``address``, or start a one-node Ray on this machine bound to 127.0.0.1.

    Ray rewrites a loopback address into the machine's routable IP unless it is told the
    machine is not part of a cluster; that switch must be set before ``ray`` is imported.
    Usage statistics are switched off: a batch run sends nothing anywhere.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if is_loopback_address(address):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise UserError("fer-pipe batch needs Ray: pip install 'fer-pipe[batch]'") from None
    import logging

    if ray.is_initialized():  # connected already, by run_batch's check of --address
        return ray
    options: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False,
                                   logging_level=logging.ERROR,
                                   runtime_env={"env_vars": PINNED_THREADS})
    if address:
        try:
            ray.init(address=address, **options)
        except ConnectionError as exc:
            reason = ("no Ray cluster runs on this machine; start one (ray start --head) or leave out "
                      "--address for a Ray of this run's own") if address == "auto" else str(exc)
            raise InputError(f"--address {address}: {reason}") from None
    else:  # "local": a Ray of its own, not the cluster RAY_ADDRESS or the last `ray start` here names
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), _node_ip_address="127.0.0.1",
                 object_store_memory=LOCAL_OBJECT_STORE, **options)
    return ray


def _attempts(work: Path, job: Job) -> int:
    try:
        with open(attempts_file(work, job), encoding="utf-8") as fh:
            return sum(1 for _ in fh)
    except FileNotFoundError:
        return 0


def _merge_parts(parts: list[Path], target: Path, work: Path) -> int:
    """Concatenate chunk CSVs (one header) into ``target``, atomically like a task's own CSV."""
    temp = work / f"{target.stem}.{uuid.uuid4().hex[:8]}.tmp.csv"
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


def _failure(exc: BaseException) -> tuple[str, bool]:
    """The one-line reason of a failed task, and whether the input (not the cluster) was at fault."""
    cause = getattr(exc, "cause", None) or exc
    if isinstance(cause, UserError):
        return str(cause), True
    return f"{type(cause).__name__}: {cause}".splitlines()[0], False


def _frames_written(csv_path: Path, job: Job) -> int:
    """Frames of ``job`` in a CSV it is writing or has written: the frame number of its last
    row. The csv sink writes whole frames, one or more rows each, so this counts frames, and
    reading the file's tail costs the same at any length."""
    try:
        with open(csv_path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 4096))
            lines = fh.read().splitlines()
    except OSError:
        return 0
    row = next(csv.reader([lines[-1].decode("utf-8", "replace")]), []) if lines else []
    try:
        return int(row[COLUMNS.index("frame")]) - job.start + 1
    except (IndexError, ValueError):  # the header alone: no frame yet
        return 0


class _FrameProgress:
    """The batch's progress bar, in frames: a long video moves it while its task runs.

    Running tasks are read from their temporary CSVs under ``_work`` (found with one listing per
    update), finished ones from their part files. The total comes from each video's frame count,
    read in a thread so that a long list of inputs delays nothing; until it is known the bar
    counts without one.
    """

    def __init__(self, todo: list[Job], work: Path, videos: int, videos_done: int) -> None:
        from tqdm import tqdm

        self._work, self._jobs = work, todo
        self._done: dict[Job, int] = {}
        self._totals: dict[Job, int] = {}
        self._videos, self._videos_done = videos, videos_done
        self._counter = threading.Thread(target=self._count, daemon=True)
        self._counter.start()
        self.bar = tqdm(total=None, unit="frame", file=sys.stderr, dynamic_ncols=True)

    def _count(self) -> None:
        """Frames each task will read (its chunk, or the rest of its video), opening each video
        once however many chunks it has."""
        videos: dict[str, int] = {}
        for job in self._jobs:
            if job.input not in videos:
                videos[job.input] = frame_count(job.input)
            left = max(0, videos[job.input] - job.start)
            self._totals[job] = min(job.max_frames, left) if job.max_frames else left

    def job_done(self, job: Job, video_done: bool) -> None:
        self._done[job] = _frames_written(_part_path(self._work, job), job)
        self._videos_done += video_done

    def update(self) -> None:
        if self.bar.total is None and not self._counter.is_alive():
            self.bar.total = sum(self._totals.values())
        newest: dict[str, Path] = {}
        for temp in sorted(self._work.glob("*.tmp.csv"), key=_mtime):
            newest[temp.name.rsplit(".", 3)[0]] = temp  # NAME.UUID.tmp.csv; a retry's is the newer
        running = sum(_frames_written(newest[job.name], job) for job in self._jobs
                      if job not in self._done and job.name in newest)
        self.bar.n = sum(self._done.values()) + running
        self.bar.set_postfix_str(f"{self._videos_done}/{self._videos} videos", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.update()
        if self._videos_done == self._videos:
            self.bar.total = self.bar.n  # the totals were the containers' estimates; every frame is in
            self.bar.refresh()
        self.bar.close()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # renamed into place or removed since the listing
        return 0.0


def refuse_shared_outputs(graph: Graph, sink: str, origin: str) -> None:
    """Refuse a file written by any stage but the csv sink the tasks re-aim: every task would
    write that one path at once (and over a file the user had there)."""
    for spec in graph.stages.values():
        for param in spec.cls.output_paths if spec.name != sink else ():
            path = getattr(spec.params, param)
            if file_key(path) is not None:
                raise ConfigError(f"{origin}: stage {spec.name!r} ({spec.type_name}): params.{param}: fer-pipe "
                                  f"batch writes one CSV per video, but every task would write {path}; "
                                  "remove the stage or set it to /dev/null")


def refuse_stateful_chunks(graph: Graph, origin: str) -> None:
    """Refuse ``--chunk-frames`` where a stage between the source and the sinks is not declared
    ``parallel``, so may keep state from one frame to the next (a tracker's tracks, a smoother's
    averages): each chunk's task starts it afresh, so the joined CSV would not be the one
    ``fer-pipe run`` writes (faces the tracker carries went missing after each chunk's start,
    and their track ids with them)."""
    for spec in graph.stages.values():
        if not (spec.is_source or issubclass(spec.cls, Sink) or spec.cls.parallel):
            raise ConfigError(f"{origin}: stage {spec.name!r} ({spec.type_name}): --chunk-frames runs each "
                              "chunk of a video in a task of its own, but this stage is not declared parallel: "
                              "it may carry state from frame to frame, which would start afresh at every "
                              "chunk; leave out --chunk-frames")


def run_batch(inputs: Sequence[str], out: str | Path, config: str | None = None,
              address: str | None = None, num_cpus: int | None = None, chunk_frames: int = 0,
              max_retries: int = 3, quiet: bool = False) -> int:
    """Run the batch and return the exit code: 0 all done, 2 bad input, 1 any other failure."""
    from .config import build_graph, config_path, read_config, shipped_configs

    if address == "local":  # Ray's own word for what no address does here, with --num-cpus and 127.0.0.1
        address = None

    origin = str(config_path(config) if config else shipped_configs() / "video_to_csv.yaml")
    data, lines = read_config(origin)
    out_dir = Path(out)
    graph = build_graph(job_config(data, origin, Job("input.mp4", "input"), out_dir / "input.csv"), lines,
                        origin)  # a config error is one line before Ray starts, not one per task
    refuse_shared_outputs(graph, video_csv_stages(data, origin)[1], origin)
    if chunk_frames:
        refuse_stateful_chunks(graph, origin)
    check_cluster(address)
    if address:  # a cluster that is not there is one line, before anything is made
        start_ray(address, num_cpus)
    make_folder(out_dir, "--out")
    work = out_dir / WORK

    inputs = expand_folders(inputs)
    jobs, bad = plan(inputs, chunk_frames)
    earlier = _partials_listed(out_dir)  # before this run's manifest replaces the last one's
    reports = {i: InputReport(i, str(out_dir / f"{Path(i).stem}.csv")) for i in inputs}
    for item, reason in bad.items():
        reports[item].status, reports[item].error, reports[item].bad_input = "failed", reason, True
    todo: list[Job] = []
    for item, item_jobs in jobs.items():
        report = reports[item]
        report.chunks = len(item_jobs)
        if Path(report.csv).is_file():
            report.status, report.rows = "skipped", count_rows(Path(report.csv))
            continue
        mine = [j for j in item_jobs if not _part_path(work, j).is_file()]
        report.chunks_run = len(mine)
        todo += mine

    started = time.monotonic()
    pending_inputs = [i for i, r in reports.items() if r.status == "pending"]
    if not pending_inputs and not bad:
        if not quiet:
            print(f"fer-pipe batch: nothing to do: all {len(reports)} inputs already have their CSV "
                  f"in {out_dir}", file=sys.stderr)
        if not (out_dir / SUCCESS).exists():
            _finish(out_dir, work, reports, origin, address, 0.0)
        return 0

    (work / "parts").mkdir(parents=True, exist_ok=True)
    if todo:
        try:
            _run_tasks(todo, data, origin, work, reports, address, num_cpus, max_retries,
                       not quiet and sys.stderr.isatty(), len(reports) - len(pending_inputs))
        except KeyboardInterrupt:
            print(f"fer-pipe batch: interrupted; the tasks that finished are kept in {work}, and the same "
                  "command again runs only the others", file=sys.stderr)
            raise
    for item in pending_inputs:
        report = reports[item]
        if report.status == "failed":
            # this run's partial files of the input (a chunk's: NAME@FIRST-LAST), not an earlier run's
            report.partial = [str(p) for p in (out_dir / f"{j.name}.partial.csv" for j in jobs[item]) if p.is_file()]
            report.rows = sum(count_rows(Path(p)) for p in report.partial)
            continue
        # a stage that ended the run in a chunk ended the video's CSV there, as in `fer-pipe run`
        stops = [j.start for j in jobs[item] if _stop_mark(work, j).exists()]
        parts = [_part_path(work, j) for j in jobs[item] if not stops or j.start <= min(stops)]
        if len(parts) > 1:
            report.rows = _merge_parts(parts, Path(report.csv), work)
        else:
            os.replace(parts[0], report.csv)
            report.rows = count_rows(Path(report.csv))
        report.status = "done"
        _remove_partials(out_dir, [f"{Path(item).stem}.partial.csv", *earlier.get(item, []),
                                   *(f"{j.name}.partial.csv" for j in jobs[item])])
    return _finish(out_dir, work, reports, origin, address, time.monotonic() - started, quiet)


def _partials_listed(out_dir: Path) -> dict[str, list[str]]:
    """The partial files the last run's manifest lists, by input: the rows it kept of inputs it
    failed, whose names depend on that run's chunks."""
    try:
        inputs = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))["inputs"]
        return {entry["input"]: [Path(p).name for p in entry.get("partial", [])] for entry in inputs}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # none yet, or not one of ours
        return {}


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
               max_retries: int, show_progress: bool, already: int) -> None:
    ray = start_ray(address, num_cpus)
    try:
        task = ray.remote(run_job).options(
            num_cpus=1, max_retries=max_retries, scheduling_strategy="SPREAD",
            retry_exceptions=[ConnectionError, TimeoutError])  # infrastructure hiccups; never bad input
        for job in todo:  # an earlier run's attempts at it are not this run's retries
            attempts_file(work, job).unlink(missing_ok=True)
        refs = {task.remote(data, origin, job, str(_part_path(work, job)), str(work)): job for job in todo}
        left = {}
        for job in todo:
            left[job.input] = left.get(job.input, 0) + 1
        progress = _FrameProgress(todo, work, len(reports), already) if show_progress else None
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for ref in ready:
                job = refs[ref]
                report = reports[job.input]
                report.attempts += _attempts(work, job)
                try:
                    done = ray.get(ref)
                    report.seconds += done.seconds
                    report.skipped += done.skipped
                    if done.stopped:
                        _stop_mark(work, job).touch()
                except Exception as exc:  # a task's failure, after Ray's own retries
                    message, bad_input = _failure(exc)
                    if report.status != "failed":
                        report.status, report.error, report.bad_input = "failed", message, bad_input
                left[job.input] -= 1
                if progress is not None:
                    progress.job_done(job, not left[job.input] and report.status != "failed")
            if progress is not None:
                progress.update()
        if progress is not None:
            progress.close()
    finally:
        ray.shutdown()


def _finish(out_dir: Path, work: Path, reports: dict[str, InputReport], origin: str,
            address: str | None, seconds: float, quiet: bool = True) -> int:
    """Write the manifest, clear temporary files, mark success, report failures by name."""
    for temp in work.glob("*.tmp.csv"):
        temp.unlink(missing_ok=True)  # left by attempts whose process was killed
    failed = [r for r in reports.values() if r.status == "failed"]
    manifest = {
        "config": origin, "cluster": address or "local", "seconds": round(seconds, 3),
        "inputs": [{k: v for k, v in asdict(r).items() if k != "bad_input" and (k != "partial" or v)}
                   | {"seconds": round(r.seconds, 3)} for r in reports.values()],
    }
    temp = out_dir / f"{MANIFEST}.tmp"
    temp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(temp, out_dir / MANIFEST)
    for report in failed:
        print(f"fer-pipe: batch: {report.input}: {report.error}", file=sys.stderr)
    for report in reports.values():
        if report.skipped:  # the tasks' own lines are in Ray's worker logs, which nobody reads
            print(f"fer-pipe: batch: {report.input}: {report.skipped} packet(s) skipped by stages with "
                  "on_error: skip (which frames: Ray's worker logs)", file=sys.stderr)
    if failed:
        (out_dir / SUCCESS).unlink(missing_ok=True)
    else:
        if work.is_dir():  # the attempts' records and parts (none on a re-run with nothing to do)
            shutil.rmtree(work)
        (out_dir / SUCCESS).touch()
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
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="video files, or folders: each gives the videos directly in it")
    parser.add_argument("--out", required=True, help="folder for the CSVs, the manifest and _SUCCESS")
    parser.add_argument("--config", default=None,
                        help="graph with one video source and one csv sink (default: video_to_csv.yaml)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to use: HOST:PORT, ray://HOST:PORT, or auto for the one running on "
                             "this machine (default: start one of this run's own, on 127.0.0.1)")
    parser.add_argument("--num-cpus", type=whole(1), default=None,
                        help="tasks at once on the local Ray (default: every core)")
    parser.add_argument("--chunk-frames", type=whole(0), default=0,
                        help="split videos longer than this into tasks of this many frames (0: never)")
    parser.add_argument("--max-retries", type=whole(0), default=3,
                        help="times Ray reruns a task whose worker or node died")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def run(args: argparse.Namespace) -> int:
    return run_batch(args.inputs, args.out, args.config, args.address, args.num_cpus, args.chunk_frames,
                     args.max_retries, args.quiet)
