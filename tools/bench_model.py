#!/usr/bin/env python
"""Faces per second of the shipped model through the classifier stage's own inference path.

Why this path: the pipeline classifies faces with ``fer_pipe.model.inference.FaceClassifier``
(a LiteRT interpreter over the int8 TFLite export it ships), so its speed, not Keras's, is what a
user gets. The seed project's 4-layer CNN (``fer_pipe.model.nets.seed``, random weights: only
speed matters) is exported to TFLite here and measured the same way in the same run, as the
baseline.

For each model: faces per second in batches (default 16, 32, 64) and the latency of one face
(median and p95 of single-face calls), with the interpreter on ``--threads`` threads (the
classifier stage's default is 1).

    python tools/bench_model.py [--model other.tflite] [--json build/bench/model.json]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fer_pipe.errors import UserError
from fer_pipe.machine import cpu_model

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def export_seed(path: Path) -> None:
    """The seed's CNN with random weights as a float32 TFLite file (same exporter as training)."""
    from fer_pipe.model.nets import seed
    from fer_pipe.model.report import export_tflite

    with contextlib.redirect_stdout(sys.stderr):  # the converter prints its SavedModel summary
        export_tflite(seed(), path)


def measure(model: Path, batches: list[int], threads: int, seconds: float, flip_tta: bool = False) -> dict:
    from fer_pipe.model.inference import FaceClassifier

    clf = FaceClassifier(model, threads, flip_tta)
    rng = np.random.default_rng(0)
    size = clf.input_size
    out: dict = {"model": str(model), "input": size, "threads": threads, "flip_tta": flip_tta,
                 "mb": round(model.stat().st_size / 2**20, 2)}
    for n in batches:
        faces = rng.random((n, size, size, 1), dtype=np.float32)
        clf.predict(faces)  # resize and allocate outside the timing
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            clf.predict(faces)
            calls += 1
        out[f"batch_{n}_faces_per_s"] = round(calls * n / (time.perf_counter() - start), 1)
    one = rng.random((1, size, size, 1), dtype=np.float32)
    clf.predict(one)
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        clf.predict(one)
        times.append(time.perf_counter() - t0)
    out["one_face_ms_p50"] = round(float(np.percentile(times, 50)) * 1e3, 3)
    out["one_face_ms_p95"] = round(float(np.percentile(times, 95)) * 1e3, 3)
    return out


def main(argv: list[str] | None = None) -> int:
    from fer_pipe.model import DEFAULT_MODEL

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="TFLite model (default: shipped)")
    parser.add_argument("--batches", default="16,32,64")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads")
    parser.add_argument("--flip-tta", action="store_true",
                        help="classify each face and its mirror image, as the classifier stage's flip_tta does "
                             "(faces/s counts faces, not interpreter rows)")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    given = "shipped" if Path(args.model).resolve() == DEFAULT_MODEL.resolve() else "given"  # it said shipped of any

    results = {"cpu": cpu_model(), "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
               "load_average": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        try:  # before the seed's export, which imports TensorFlow: a wrong --model is said at once
            results["model"] = measure(Path(args.model), batches, args.threads, args.seconds, args.flip_tta)
        except UserError as exc:
            print(f"bench_model: {exc}", file=sys.stderr)
            return 2
        seed_path = Path(tmp) / "seed.tflite"
        export_seed(seed_path)
        results["seed"] = measure(seed_path, batches, args.threads, args.seconds)
        results["seed"]["model"] = "seed 4-layer CNN, random weights, exported to TFLite in this run"
    results["load_average_end"] = os.getloadavg()

    print(f"CPU: {results['cpu']}; LiteRT interpreter, {args.threads} thread(s)"
          + (f"; the {given} model with flip TTA (2 rows a face), the seed without" if args.flip_tta else ""))
    print(f"{'model':<28} {'MB':>6} " + " ".join(f"{'faces/s b' + str(b):>14}" for b in batches)
          + f" {'1 face p50 ms':>14} {'p95 ms':>8}")
    for key in ("model", "seed"):
        r = results[key]
        name = f"{given} {Path(r['model']).name}" if key == "model" else "seed CNN (random weights)"
        print(f"{name:<28} {r['mb']:>6} " + " ".join(f"{r[f'batch_{b}_faces_per_s']:>14}" for b in batches)
              + f" {r['one_face_ms_p50']:>14} {r['one_face_ms_p95']:>8}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
