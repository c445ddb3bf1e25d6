"""``fer-pipe evaluate``: accuracy, per-class metrics and confusion matrix of a model on one split."""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from ..arguments import home, whole
from ..messages import EMOTIONS
from ..preprocess import preprocess_dataset
from .data import USAGES, FerSplit, load_split
from . import DEFAULT_MODEL
from .inference import FaceClassifier

BATCH = 256


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=str(DEFAULT_MODEL), type=home, help="a .tflite model (default: shipped)")
    parser.add_argument("--data", required=True, type=home, help="FER-2013 CSV(.gz) or image folder")
    parser.add_argument("--usage", default="PublicTest", choices=USAGES, help="the split scored (default: PublicTest)")
    parser.add_argument("--tta", action="store_true", help="average with the horizontally flipped face")
    parser.add_argument("--limit", type=whole(0), default=0, help="a fixed random sample of N rows (default 0: all)")
    parser.add_argument("--seed", type=whole(0), default=0,
                        help="the sample --limit draws (a --limit training's card names the one it scored)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def predict_split(classifier: FaceClassifier, split: FerSplit) -> np.ndarray:
    faces = preprocess_dataset(split.images, classifier.input_size)
    return np.concatenate([classifier.predict(faces[i:i + BATCH]) for i in range(0, len(faces), BATCH)])


def metrics(labels: np.ndarray, predicted: np.ndarray) -> dict:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix (rows: true class)."""
    k = len(EMOTIONS)
    confusion = np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)
    per_class = {}
    for i, name in enumerate(EMOTIONS):
        tp = confusion[i, i]
        precision = tp / confusion[:, i].sum() if confusion[:, i].sum() else 0.0
        recall = tp / confusion[i].sum() if confusion[i].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": round(float(precision), 4), "recall": round(float(recall), 4),
                           "f1": round(float(f1), 4), "support": int(confusion[i].sum())}
    return {"accuracy": round(float(np.trace(confusion) / confusion.sum()), 4), "rows": int(len(labels)),
            "per_class": per_class, "confusion": confusion.tolist()}


def evaluate(model: str, split: FerSplit, tta: bool) -> dict:
    probs = predict_split(FaceClassifier(model, threads=2, flip_tta=tta), split)
    return metrics(split.labels, probs.argmax(axis=1))


def format_report(result: dict) -> str:
    sample = f", a sample drawn with seed {result['seed']}" if result.get("limit") else ""
    lines = [f"accuracy {result['accuracy'] * 100:.2f}% on {result['rows']} rows "
             f"({result['usage']}{sample}, tta={'flip' if result['tta'] else 'none'})",
             f"model {result['model']}, data {result['data']}",
             f"{'class':<9} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}"]
    for name, m in result["per_class"].items():
        lines.append(f"{name:<9} {m['precision']:>9.3f} {m['recall']:>7.3f} {m['f1']:>6.3f} {m['support']:>8}")
    lines.append("confusion (rows: the true class, columns: the predicted one):")
    lines.append(f"{'':<9}" + "".join(f"{e[:3]:>6}" for e in EMOTIONS))
    # each row named, as the table above's are: a screen reader read seven lists of bare numbers
    lines += [f"{name:<9}" + "".join(f"{v:>6}" for v in row) for name, row in zip(EMOTIONS, result["confusion"])]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Scores the model on the split. What was scored (model, data, sample) is in the report:
    saved outputs of two evaluations, or of a sample and the whole split, could not be told
    apart (s63e 5)."""
    classifier = FaceClassifier(args.model, threads=2, flip_tta=args.tta)  # a model it refuses: before the data's
    split = load_split(args.data, args.usage)  # seconds of loading, not after them
    limit = args.limit if args.limit < len(split) else 0  # the whole split was said to be "a sample" (s68b 6)
    if limit:
        split = split.sample(limit, seed=args.seed)
    result = {"model": args.model, "data": args.data, "usage": args.usage, "tta": args.tta, "limit": limit,
              "seed": args.seed, **metrics(split.labels, predict_split(classifier, split).argmax(axis=1))}
    print(json.dumps(result) if args.json else format_report(result), file=sys.stdout)
    return 0
