#!/usr/bin/env python
"""The ``fer`` package's speed on a clip, as its users run it: ``FER().detect_emotions`` per frame.

Run by ``tools/bench.py`` with the interpreter of the venv ``tools/fer-venv`` makes: ``fer``
needs opencv-contrib-python, which cannot be installed next to our opencv-python, so it lives
in a venv of its own and this script imports nothing of fer-pipe. Its defaults are used
(Haar cascade, ``use_tflite=True``); the model load and the first call are left out of its
frames per second, which favours it, as the bench does for the seed loop.

With a third argument it also writes each frame's label (of its largest face) to a CSV: what
another FER-2013 model reads in a clip, to set beside fer-pipe's. Labels are picked out only
when asked, so a speed run does no work for them.

    build/fer-venv/bin/python tools/fer_baseline.py clip.mp4 out.json [labels.csv]
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from importlib.metadata import version


def main(clip: str, out: str, labels_csv: str = "") -> int:
    began = time.monotonic()
    import cv2
    from fer.fer import FER

    detector = FER()
    cap = cv2.VideoCapture(clip)
    ok, frame = cap.read()
    if not ok:
        print(f"fer_baseline: {clip}: no frames", file=sys.stderr)
        return 2
    labels = [(0, _label(detector.detect_emotions(frame)))]  # one-off start, not timed
    first_result = time.monotonic() - began
    frames = faces = 0
    start = time.perf_counter()
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        found = detector.detect_emotions(frame)
        frames += 1
        faces += len(found)
        if labels_csv:
            labels.append((frames, _label(found)))
    busy = time.perf_counter() - start
    cap.release()
    with open(out, "w") as fh:
        json.dump({"version": version("fer"), "frames": frames, "faces": faces, "busy_s": round(busy, 3),
                   "fps": round(frames / busy, 2), "first_result_s": round(first_result, 2)}, fh)
    if labels_csv:
        with open(labels_csv, "w", newline="") as fh:
            csv.writer(fh).writerows([("frame", "label"), *labels])
    return 0


def _label(found: list[dict]) -> str:
    """The top emotion of the widest face, or "" where no face was found."""
    if not found:
        return ""
    scores = max(found, key=lambda face: face["box"][2])["emotions"]
    return max(scores, key=scores.get)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clip", help="video to run FER().detect_emotions on, frame by frame")
    parser.add_argument("out", help="JSON file for the speed figures")
    parser.add_argument("labels_csv", nargs="?", default="", help="also write each frame's label here")
    args = parser.parse_args()
    sys.exit(main(args.clip, args.out, args.labels_csv))
