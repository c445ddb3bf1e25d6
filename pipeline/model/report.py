"""The shippable folder: Keras model, TFLite export, model card, curves and confusion matrix."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..preprocess import EMOTIONS
from .data import FerSplit
from .evaluate import evaluate

KERAS_FILE = "model.keras"
TFLITE_FILE = "model.tflite"


def export_tflite(model, path: Path) -> None:
    """Float32 TFLite export; the classifier stage and ``fer-pipe evaluate`` both run this file."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
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


def write_card(state: dict, plain: dict, tta: dict, path: Path) -> None:
    lines = [
        "# Model card: fer-pipe emotion classifier",
        "",
        "Seven-class facial-expression classifier (" + ", ".join(EMOTIONS) + ") trained from scratch on",
        "FER-2013 `Training` rows and selected on `PublicTest` rows.",
        "",
        f"- Command: `{state['command']}`",
        f"- Data sha256: `{state['data_sha256']}`",
        f"- Options: `{json.dumps(state['options'], sort_keys=True)}`",
        f"- Epochs: {state['epochs_done']} in total, best PublicTest epoch {state.get('best_epoch')}",
        f"- Wall time of training: {state['wall_s'] / 3600:.2f} h over {len(state['runs'])} run(s)",
        "- Hardware: " + "; ".join(sorted({run['hardware'] for run in state['runs']})),
        f"- Files: `{KERAS_FILE}` (Keras 3), `{TFLITE_FILE}` (float32 TFLite, the pipeline's inference path)",
        "",
        "## PublicTest accuracy (through the TFLite export, as `fer-pipe evaluate` prints it)",
        "",
        "| test-time augmentation | accuracy |",
        "|---|---|",
        f"| none | {plain['accuracy'] * 100:.2f}% |",
        f"| horizontal flip | {tta['accuracy'] * 100:.2f}% |",
        "",
        "## Per-class metrics (no test-time augmentation)",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for name, m in plain["per_class"].items():
        lines.append(f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |")
    lines += ["", "![curves](curves.png)", "", "![confusion matrix](confusion.png)", ""]
    path.write_text("\n".join(lines))


def export_and_report(model, test: FerSplit, state: dict, out: Path) -> None:
    model.save(out / KERAS_FILE)
    export_tflite(model, out / TFLITE_FILE)
    plain = evaluate(str(out / TFLITE_FILE), test, tta=False)
    tta = evaluate(str(out / TFLITE_FILE), test, tta=True)
    state["publictest"] = {"accuracy": plain["accuracy"], "accuracy_flip_tta": tta["accuracy"],
                           "rows": plain["rows"]}
    plot_curves(state["history"], out / "curves.png")
    plot_confusion(plain["confusion"], f"PublicTest, accuracy {plain['accuracy'] * 100:.2f}%",
                   out / "confusion.png")
    write_card(state, plain, tta, out / "MODEL_CARD.md")
    card = {"publictest": plain, "publictest_flip_tta": tta, "command": state["command"],
            "data_sha256": state["data_sha256"], "epochs": state["epochs_done"], "wall_s": state["wall_s"]}
    tmp = out / "card.json.tmp"
    tmp.write_text(json.dumps(card, indent=1))
    os.replace(tmp, out / "card.json")
