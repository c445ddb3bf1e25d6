"""Training, evaluation and inference of the emotion classifier."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

DEFAULT_MODEL = Path(str(files("fer_pipe.models").joinpath("model.tflite")))
"""The shipped model: the TFLite export ``fer-pipe train`` ships (int8; see models/MODEL_CARD.md)."""
