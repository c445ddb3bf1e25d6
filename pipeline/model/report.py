"""The shippable folder: Keras model, TFLite exports, model card, curves and confusion matrix.

Two TFLite exports are made: float32, and int8 (weights and activations, calibrated on
training faces, float input and output so the classifier's interface is the same). The int8
one runs about four times faster here, which is what lets the pipeline afford flip test-time
augmentation; it ships as ``model.tflite`` only if its PublicTest accuracy, with and without
flip TTA, is at most ``INT8_TOLERANCE`` below the float32 export's (an int8 one that scores
higher ships too), and the float32 one ships otherwise. The card records all four figures.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..messages import EMOTIONS
from ..native_stderr import output_shown_on_failure
from .data import FerSplit, publictest_sample, sha256_of
from .evaluate import evaluate

if TYPE_CHECKING:  # keras and TensorFlow are imported where they are used
    import keras

KERAS_FILE = "model.keras"
TFLITE_FILE = "model.tflite"
FLOAT_FILE = "model_float32.tflite"
INT8_FILE = "model_int8.tflite"
INT8_TOLERANCE = 0.005
"""The accuracy (a fraction) an int8 export may lose against float32 and still ship."""


def export_tflite(model: keras.Model, path: Path, calibration: np.ndarray | None = None) -> None:
    """TFLite export: float32, or int8 calibrated on ``calibration`` faces (float input and output)."""
    import tensorflow as tf

    with output_shown_on_failure():  # 50 lines a call that works: the tensors it saved, its own warnings
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if calibration is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.representative_dataset = lambda: ([face[np.newaxis]] for face in calibration)
        path.write_bytes(converter.convert())


def plot_curves(history: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for key, label in (("accuracy", "Training"), ("val_accuracy", "PublicTest")):
        acc_ax.plot(epochs, history.get(key, []), label=label)
    for key, label in (("loss", "Training"), ("val_loss", "PublicTest")):
        loss_ax.plot(epochs, history.get(key, []), label=label)
    acc_ax.set(title="Accuracy", xlabel="epoch")
    loss_ax.set(title="Loss", xlabel="epoch")
    acc_ax.legend()
    loss_ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(confusion: list[list[int]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.array(confusion, dtype=float)
    normed = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ax.imshow(normed, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(EMOTIONS)), EMOTIONS, rotation=45, ha="right")
    ax.set_yticks(range(len(EMOTIONS)), EMOTIONS)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for i in range(len(EMOTIONS)):
        for j in range(len(EMOTIONS)):
            ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if normed[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_card(state: dict, scores: dict, shipped: str, pipeline: dict, path: Path, tflite_sha256: str) -> None:
    lines = [
        "# Model card: fer-pipe emotion classifier",
        "",
        "Seven-class facial-expression classifier (" + ", ".join(EMOTIONS) + ") trained from scratch on",
        "FER-2013 `Training` rows and selected on `PublicTest` rows.",
        "",
        f"- Command: `{state['command']}`",
        f"- Data sha256: `{state['data_sha256']}`" if state.get("data_sha256") or not state.get("images_sha256") else
        f"- Data: a folder of images, whose decoded pixels and labels have the sha256 `{state['images_sha256']}`",
        f"- Options: `{json.dumps(state['options'], sort_keys=True)}`",
        f"- Learning-rate cycles: `{json.dumps(state.get('cycles', []))}`",
        f"- Epochs: {state['epochs_done']} in total, best PublicTest epoch {state.get('best_epoch')}"
        + (f"; the model holds epoch {state['selection']['epoch']}'s weights" if "selection" in state else ""),
        f"- Wall time of training: {state['wall_s'] / 3600:.2f} h over {len(state['runs'])} run(s)",
        "- Hardware: " + "; ".join(sorted({run['hardware'] for run in state['runs']})),
        f"- Files: `{KERAS_FILE}` (Keras 3); `{TFLITE_FILE}`, the pipeline's inference path: the {shipped} "
        f"TFLite export (int8 ships when it is at most {INT8_TOLERANCE * 100:.1f} points below float32); "
        f"`{TFLITE_FILE}` alone goes into the package",
        f"- `{TFLITE_FILE}` sha256: `{tflite_sha256}` (a packager's check that a copy is the one described here)",
        "",
        f"## PublicTest accuracy ({_rows_scored(state, pipeline)}, through the TFLite exports, as `fer-pipe "
        f"evaluate{_same_sample(state, pipeline)}` prints it)",
        "",
        "| export | no test-time augmentation | horizontal flip (the classifier stage's default) |",
        "|---|---|---|",
    ]
    for name, (plain, tta) in scores.items():
        mark = " (shipped)" if name == shipped else ""
        lines.append(f"| {name}{mark} | {plain['accuracy'] * 100:.2f}% | {tta['accuracy'] * 100:.2f}% |")
    lines += ["", "## Per-class metrics (shipped export, flip TTA: what the pipeline runs)", "",
              "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name, m in pipeline["per_class"].items():
        lines.append(f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |")
    lines += ["", "![curves](curves.png)", "", "![confusion matrix](confusion.png)", ""]
    path.write_text("\n".join(lines))


def _sampled(state: dict) -> bool:
    """Whether the run scored a sample of PublicTest: a ``--limit`` of 4 times its rows or more
    takes them all, which the card called a sample, and the ``evaluate`` command it gave for it
    scores the whole split (s68e 6). A run begun before its rows were recorded was sampled."""
    limit = state["options"].get("limit")
    return bool(limit) and publictest_sample(limit) < state.get("publictest_rows", math.inf)


def _rows_scored(state: dict, pipeline: dict) -> str:
    """What the card's figures are of: a ``--limit`` run's read like the split's, on 75 rows."""
    rows = pipeline["rows"]
    if _sampled(state):
        return (f"on a --limit sample of {rows} rows drawn with seed {state['options'].get('seed')}, not the whole "
                "split")
    return f"on all {rows} rows"


def _same_sample(state: dict, pipeline: dict) -> str:
    """The ``evaluate`` options that score a ``--limit`` run's sample: its own ``--limit`` drew
    with seed 0, another sample, and printed another figure (25.00% for the card's 34.38%)."""
    if not _sampled(state):
        return ""
    return f" --limit {pipeline['rows']} --seed {state['options'].get('seed')}"


def shipped_export(accuracy: dict[str, tuple[float, float]]) -> str:
    """``int8`` where its accuracy, without and with flip TTA, is at most ``INT8_TOLERANCE``
    below float32's, else ``float32``. The rule once took the difference either way, and shipped
    the four-times-slower float32 export where int8 scored higher."""
    return "int8" if all(accuracy["int8"][i] >= accuracy["float32"][i] - INT8_TOLERANCE for i in (0, 1)) else "float32"


def export_and_report(model: keras.Model, test: FerSplit, state: dict, out: Path,
                      calibration: np.ndarray) -> None:
    """Write the exports, plots and cards into ``out``: a staging folder, which train moves into
    --out whole."""
    model.save(out / KERAS_FILE)
    export_tflite(model, out / FLOAT_FILE)
    export_tflite(model, out / INT8_FILE, calibration)
    scores = {name: (evaluate(str(out / file), test, tta=False), evaluate(str(out / file), test, tta=True))
              for name, file in (("float32", FLOAT_FILE), ("int8", INT8_FILE))}
    shipped = shipped_export({name: (s[0]["accuracy"], s[1]["accuracy"]) for name, s in scores.items()})
    shutil.copyfile(out / (INT8_FILE if shipped == "int8" else FLOAT_FILE), out / TFLITE_FILE)
    plain, tta = scores[shipped]
    exports = {name: {"accuracy": s[0]["accuracy"], "accuracy_flip_tta": s[1]["accuracy"]}
               for name, s in scores.items()}
    state["publictest"] = {"shipped": shipped, "accuracy": plain["accuracy"], "accuracy_flip_tta": tta["accuracy"],
                           "rows": plain["rows"], "exports": exports}
    plot_curves(state["history"], out / "curves.png")
    plot_confusion(tta["confusion"], f"PublicTest, {shipped}, flip TTA, accuracy {tta['accuracy'] * 100:.2f}%",
                   out / "confusion.png")
    tflite_sha256 = sha256_of(out / TFLITE_FILE)
    write_card(state, scores, shipped, tta, out / "MODEL_CARD.md", tflite_sha256)
    card = {"shipped": shipped, "tflite_sha256": tflite_sha256, "publictest": plain, "publictest_flip_tta": tta,
            "exports": exports,
            "command": state["command"], "data_sha256": state["data_sha256"],
            "images_sha256": state.get("images_sha256"), "epochs": state["epochs_done"],
            "wall_s": state["wall_s"]}
    (out / "card.json").write_text(json.dumps(card, indent=1))
