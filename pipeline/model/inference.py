"""The one inference path for the shipped model: a LiteRT interpreter over a TFLite export.

LiteRT (``ai-edge-litert``) is used rather than ``tf.lite.Interpreter``: the latter is
deprecated in TensorFlow 2.20+, and the standalone runtime starts in a fraction of a second
and a fraction of the memory of a TensorFlow import, which matters for a pipeline process
that only runs inference. Evaluation goes through this same class, so the accuracy that
``fer-pipe evaluate`` prints is the accuracy of the pipeline's classifier.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError, one_line
from ..input_files import file_problem
from ..messages import EMOTIONS
from ..native_stderr import stderr_dropped
from ..opencv_names import opencv_name


class FaceClassifier:
    """Batched emotion probabilities for preprocessed faces (n, s, s, 1) float32."""

    def __init__(self, model_path: str | Path, threads: int = 1, flip_tta: bool = False) -> None:
        from ai_edge_litert.interpreter import Interpreter

        path = Path(model_path)
        problem = file_problem(str(path))
        if problem:
            raise InputError(f"model {path}: {problem}" + (", not a .tflite file" if problem == "is a folder" else ""))
        # under a Latin-1 or ASCII locale Python's own str for a folder named été was not found, or a
        # TypeError (s67b 4); a name, not the file's bytes, so that a stage's workers share its pages
        name = opencv_name(path, "model", "LiteRT")
        try:
            self._interpreter = Interpreter(model_path=name, num_threads=threads)
        except (ValueError, RuntimeError) as exc:
            hint = ("; .keras is the training checkpoint: give the .tflite model the training exported (model.tflite "
                    "in its --out folder)") if path.suffix.lower() == ".keras" else ""
            raise InputError(f"model {path}: not a valid TFLite model ({exc}){hint}") from None
        inp = self._interpreter.get_input_details()
        out = self._interpreter.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise InputError(f"model {path}: expected one input and one output tensor")
        for side, tensor in (("input", inp[0]), ("output", out[0])):
            if tensor["dtype"] != np.float32:  # a full-integer export's: said as a shape, or as no softmax
                raise InputError(f"model {path}: {side} must be float32, got {np.dtype(tensor['dtype'])}; export "
                                 f"it with float {side} (inference_{side}_type=tf.float32), as fer-pipe train does")
        shape = tuple(int(v) for v in inp[0]["shape"])
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 1:
            raise InputError(f"model {path}: input must be float32 (n, s, s, 1), got {shape}")
        signature = tuple(int(v) for v in inp[0].get("shape_signature", shape))
        if min(signature[1:]) < 1:  # its shape then holds 1 for each, and every face was resized to 1 pixel
            raise InputError(f"model {path}: input must be of a fixed size (n, s, s, 1), got {signature}; "
                             "export it with its face size given, e.g. (None, 48, 48, 1)")
        if len(out[0]["shape"]) != 2 or int(out[0]["shape"][-1]) != len(EMOTIONS):
            raise InputError(f"model {path}: output must be (n, {len(EMOTIONS)}): {len(EMOTIONS)} class "
                             f"probabilities per face, got {tuple(int(v) for v in out[0]['shape'])}")
        # Applying the XNNPACK delegate, once per process, LiteRT's C++ logger prints "INFO:
        # Created TensorFlow Lite XNNPACK delegate for CPU." with no setting to stop it: a line in
        # every run that is not fer-pipe's. Errors still arrive as LiteRT's Python exceptions.
        try:
            with stderr_dropped():
                self._interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as exc:  # ops LiteRT lacks: TensorFlow's (Flex) or custom ones
            raise InputError(f"model {path}: LiteRT cannot run it ({one_line(str(exc)).rstrip('.')}); export it "
                             "with TFLite's built-in ops alone, as fer-pipe train does") from None
        self.input_size = shape[1]
        self.flip_tta = flip_tta
        self._input_index = inp[0]["index"]
        self._output_index = out[0]["index"]
        self._batch = shape[0]
        # a frame's faces are one batch, of any size: the probe's differs from the model's own, so
        # that it is resized (a batch fixed at 2 passed a probe of two, and failed the run at 4)
        faces = max(2, shape[0] + 1)
        said = "two" if faces == 2 else str(faces)
        grey = np.full((faces, shape[1], shape[2], 1), 0.5, np.float32)
        try:
            probes = self._invoke(grey)
        except (RuntimeError, ValueError) as exc:
            why = (f"its batch size is fixed at {signature[0]}" if signature[0] > 0
                   else f"LiteRT: {one_line(str(exc)).rstrip('.')}")
            raise InputError(f"model {path}: it cannot take {said} faces at once ({why}); export it with a free "
                             f"batch size, e.g. (None, {shape[1]}, {shape[2]}, 1)") from None
        if probes.shape != (len(grey), len(EMOTIONS)):  # one from a tf.function gave none, and an IndexError
            raise InputError(f"model {path}: {said} faces gave an output of {probes.shape}, not a row of "
                             f"{len(EMOTIONS)} probabilities each")
        probe = probes[0]
        if probe.min() < 0 or not 0.9 < probe.sum() < 1.1:
            raise InputError(f"model {path}: its outputs are not probabilities (on a grey face they sum to "
                             f"{probe.sum():.3g}, the least {probe.min():.3g}); export it with its softmax")

    def predict(self, faces: np.ndarray) -> np.ndarray:
        """Probabilities (n, 7) for a batch of faces, in one interpreter call.

        The interpreter is resized only when the batch size changes, which in a video
        stream (the same faces frame after frame) is rare.
        """
        n = len(faces)
        if n == 0:
            return np.empty((0, len(EMOTIONS)), dtype=np.float32)
        batch = np.concatenate([faces, faces[:, :, ::-1]]) if self.flip_tta else faces
        probs = self._invoke(batch)
        if self.flip_tta:
            probs = probs[:n] + probs[n:]
        # An int8 export's softmax comes out in steps of 1/256 and its rows need not sum to 1.
        return probs / probs.sum(axis=1, keepdims=True)

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        """The model's output for a batch, in one interpreter call."""
        if len(batch) != self._batch:
            self._batch = 0  # until both succeed: a failed allocation left it the old size, and every batch failed
            self._interpreter.resize_tensor_input(self._input_index, list(batch.shape))
            self._interpreter.allocate_tensors()
            self._batch = len(batch)
        self._interpreter.set_tensor(self._input_index, np.ascontiguousarray(batch, dtype=np.float32))
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output_index)
