"""Training, evaluation and inference of the emotion classifier."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

DEFAULT_MODEL = Path(str(files("fer_pipe.models").joinpath("model.tflite")))
"""The shipped model: a float32 TFLite export made by ``fer-pipe train`` (see models/MODEL_CARD.md)."""
