"""The learning-rate schedule: one or more cosine cycles, each with an optional linear warm-up.

A finished run can be continued with a new cycle (a warm restart, as in SGDR) instead of being
started again; that is how the shipped model's training went on over several sessions. The
rate is a pure function of the optimizer's step count, so a run interrupted in any cycle
resumes on the same curve.
"""
from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="fer_pipe")
class CosineCycles(keras.optimizers.schedules.LearningRateSchedule):
    """Consecutive cycles of ``{"epochs", "lr", "warmup_epochs"}``; each decays from its peak to zero.

    A warm-up starts at a tenth of the cycle's peak, as Keras's ``CosineDecay`` does, so a
    one-cycle schedule follows exactly the curve of the runs made before cycles existed.
    """

    def __init__(self, cycles: list[dict], steps_per_epoch: int) -> None:
        super().__init__()
        self.cycles = [dict(cycle) for cycle in cycles]
        self.steps_per_epoch = int(steps_per_epoch)

    def __call__(self, step: Any) -> Any:  # the optimizer's step count, a tensor of the backend's
        step = ops.cast(step, "float32")
        rate = ops.zeros((), "float32")
        start = 0.0
        for cycle in self.cycles:
            length = float(cycle["epochs"] * self.steps_per_epoch)
            warmup = float(int(cycle.get("warmup_epochs", 0.0) * self.steps_per_epoch))
            peak = float(cycle["lr"])
            local = step - start
            rising = peak * 0.1 + (peak - peak * 0.1) * local / max(warmup, 1.0)
            decay = max(length - warmup, 1.0)
            progress = ops.clip((local - warmup) / decay, 0.0, 1.0)
            falling = peak * 0.5 * (1.0 + ops.cos(math.pi * progress))
            inside = ops.logical_and(local >= 0.0, local < length)
            rate = ops.where(inside, ops.where(local < warmup, rising, falling), rate)
            start += length
        return rate

    def get_config(self) -> dict:
        return {"cycles": self.cycles, "steps_per_epoch": self.steps_per_epoch}
