#!/usr/bin/env python
"""The ``fer`` package's speed on a clip, as its users run it: ``FER().detect_emotions`` per frame.

Run by ``tools/bench.py`` with the interpreter of the venv ``tools/fer-venv`` makes: ``fer``
needs opencv-contrib-python, which cannot be installed next to our opencv-python, so it lives
in a venv of its own and this script imports nothing of fer-pipe. Its defaults are used
(Haar cascade, ``use_tflite=True``); the model load and the first call are left out of its
frames per second, which favours it, as the bench does for the seed loop.

    build/fer-venv/bin/python tools/fer_baseline.py clip.mp4 out.json
"""
from __future__ import annotations

import json
import sys
import time
from importlib.metadata import version


def main(clip: str, out: str) -> int:
    began = time.monotonic()
    import cv2
    from fer.fer import FER

    detector = FER()
    cap = cv2.VideoCapture(clip)
    ok, frame = cap.read()
    if not ok:
        print(f"fer_baseline: {clip}: no frames", file=sys.stderr)
        return 2
    detector.detect_emotions(frame)  # one-off start, not timed
    first_result = time.monotonic() - began
    frames = faces = 0
    start = time.perf_counter()
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        faces += len(detector.detect_emotions(frame))
        frames += 1
    busy = time.perf_counter() - start
    cap.release()
    with open(out, "w") as fh:
        json.dump({"version": version("fer"), "frames": frames, "faces": faces, "busy_s": round(busy, 3),
                   "fps": round(frames / busy, 2), "first_result_s": round(first_result, 2)}, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
