#!/usr/bin/env python
"""Does the pipeline crop faces as FER-2013 framed them? The Haar detector on FER-2013 images.

Why this matters: the classifier was trained on whole FER-2013 images, but in the pipeline it
sees a Haar box cut out of a frame, grown by the classifier's ``margin``. If the two framings
differ (a box that is tighter or looser, or sits lower, than FER-2013's), accuracy in the
wild drops below what ``fer-pipe evaluate`` reports, and no evaluation on FER-2013 would show
it. Here each image is enlarged and its border replicated so there is room around the face,
the pipeline's own detector (``haar`` stage, default parameters) finds the face, and:

- the box is given in the 48-px image's pixels, and as the share of the box's side between it
  and each image edge (0 everywhere: the Haar box is the FER-2013 framing);
- the shipped classifier is scored on the Haar crops at each ``--margins`` value, against the
  whole images of the same faces.

    python tools/framing.py --data ../shared/data/fer2013/fer2013.csv.gz [--json build/framing.json]

Crops grown past the image's edge take in replicated border, which no frame has; the scores at
larger margins are therefore a lower bound, but a margin is worth having only if it beats 0.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from fer_pipe.machine import cpu_model
from fer_pipe.model import DEFAULT_MODEL
from fer_pipe.model.data import USAGES, load_split
from fer_pipe.model.inference import FaceClassifier
from fer_pipe.preprocess import FACE_SIZE, preprocess_faces, scale_pixels
from fer_pipe.stages.haar import HaarDetector, HaarParams

ENLARGE = 4
"""48-px images become 192 px: larger than the detector's default 64-px smallest face."""
BORDER = 96
"""Replicated border around the enlarged image, so a box larger than the image can be found."""


def detect_faces(images: np.ndarray) -> tuple[list[np.ndarray], list[tuple[int, int, int, int] | None]]:
    """The enlarged, bordered images and the largest Haar box in each (None: no face found)."""
    detector = HaarDetector("detector", HaarParams())
    detector.open()
    framed, boxes = [], []
    for image in images:
        big = cv2.resize(image, (FACE_SIZE * ENLARGE,) * 2, interpolation=cv2.INTER_LINEAR)
        big = cv2.copyMakeBorder(big, BORDER, BORDER, BORDER, BORDER, cv2.BORDER_REPLICATE)
        found = detector.detect(big)
        framed.append(big)
        boxes.append(max(found, key=lambda b: b[2] * b[3]) if found else None)
    return framed, boxes


def box_geometry(boxes: list[tuple[int, int, int, int]]) -> dict:
    """Median box in the original image's pixels, and the median gap to each edge as a share of
    the box's side (what a ``margin`` would have to be to reach that edge)."""
    b = (np.array(boxes, dtype=float) - [BORDER, BORDER, 0, 0]) / ENLARGE
    x, y, w, h = b.T
    gaps = {"left": x / w, "top": y / h, "right": (FACE_SIZE - x - w) / w, "bottom": (FACE_SIZE - y - h) / h}
    return {"median_box": [round(float(v), 2) for v in np.median(b, axis=0)],
            "side_quartiles": [round(float(v), 2) for v in np.percentile(w, [25, 75])],
            "median_gap": {k: round(float(np.median(v)), 3) for k, v in gaps.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="FER-2013 CSV(.gz) or image folder")
    parser.add_argument("--usage", default="PublicTest", choices=USAGES)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--margins", default="0,0.05,0.1,0.2", help="comma-separated crop margins")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)

    split = load_split(args.data, args.usage)
    framed, boxes = detect_faces(split.images)
    found = [i for i, b in enumerate(boxes) if b is not None]
    classifier = FaceClassifier(args.model, threads=2, flip_tta=True)
    labels = split.labels[found]

    def accuracy(batch: np.ndarray) -> float:
        return round(float((classifier.predict(batch).argmax(1) == labels).mean()), 4)

    result = {"cpu": cpu_model(), "usage": args.usage, "images": len(split), "faces_found": len(found),
              **box_geometry([boxes[i] for i in found]),
              "accuracy_whole_image": accuracy(scale_pixels(split.images[found])),
              "accuracy_haar_crop": {}}
    for margin in (float(m) for m in args.margins.split(",")):
        batch = np.concatenate([preprocess_faces(framed[i], [boxes[i]], classifier.input_size, margin)
                                for i in found])
        result["accuracy_haar_crop"][str(margin)] = accuracy(batch)

    print(f"{args.usage}: Haar found a face in {len(found)} of {len(split)} images ({result['cpu']})")
    print(f"median box (x, y, w, h) in the 48-px image: {result['median_box']}; "
          f"side quartiles {result['side_quartiles']}")
    print("median gap to the image edge, share of the box side: "
          + ", ".join(f"{k} {v}" for k, v in result["median_gap"].items()))
    print(f"accuracy on those faces, whole image: {result['accuracy_whole_image']}")
    for margin, acc in result["accuracy_haar_crop"].items():
        print(f"accuracy on those faces, Haar crop with margin {margin}: {acc}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
