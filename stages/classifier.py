"""``classifier``: the seven emotion probabilities of every face, one model call per frame."""
from __future__ import annotations

from collections.abc import Iterable

from pydantic import Field

from fer_pipe.messages import EXPRESSIONS, FACES, Packet
from fer_pipe.model import DEFAULT_MODEL
from fer_pipe.model.inference import FaceClassifier
from fer_pipe.preprocess import preprocess_faces
from fer_pipe.stage import Stage, StageParams


class ClassifierParams(StageParams):
    model: str = Field(str(DEFAULT_MODEL), description="TFLite model (default: the shipped one)")
    margin: float = Field(0.0, ge=0.0, le=1.0, description="grow each face box by this share per side")
    flip_tta: bool = Field(True, description="also classify the mirrored face and average (2x the model's "
                                             "cost; +1.4 points on PublicTest with the shipped model)")
    threads: int = Field(1, ge=1, le=64, description="interpreter threads")


class EmotionClassifier(Stage):
    """Adds the seven emotion probabilities and the leading label to every face.

    The model is loaded once in ``open``; all faces of a frame go through one interpreter call.

    Faces are prepared by ``fer_pipe.preprocess.preprocess_faces``, built on the same crop,
    grey conversion and pixel scaling that training and ``fer-pipe evaluate`` use
    (``preprocess_dataset``).
    """

    Params = ClassifierParams
    input_paths = ("model",)
    params: ClassifierParams
    reads = FACES
    writes = EXPRESSIONS
    thread_params = ("threads",)
    parallel = True

    @classmethod
    def preflight(cls, params: ClassifierParams) -> None:
        """Load the model once in the parent (about 0.2 s), so a missing, corrupt or wrong-shape
        model is one line before any stage process starts."""
        FaceClassifier(params.model, params.threads, params.flip_tta)

    def open(self) -> None:
        self._model = FaceClassifier(self.params.model, self.params.threads, self.params.flip_tta)

    def process(self, packet: Packet) -> Iterable[Packet]:
        if packet.faces:
            batch = preprocess_faces(packet.pixels(), [f.box for f in packet.faces],
                                     self._model.input_size, self.params.margin)
            for face, probs in zip(packet.faces, self._model.predict(batch)):
                face.probs = probs
        return (packet,)
