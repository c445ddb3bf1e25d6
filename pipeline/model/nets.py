"""Classifier architectures, written against backend-neutral Keras 3.

Only ``keras`` is imported here (never ``tensorflow``), so the same code trains on the
TensorFlow backend on a laptop CPU or on the JAX backend where a GPU machine is at hand.
"""
from __future__ import annotations

import keras
from keras import layers

from ..messages import EMOTIONS
from ..preprocess import FACE_SIZE


def _conv_bn_relu(x, width: int, name: str):
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def vgg(width: int = 32, dropout: float = 0.3, size: int | None = FACE_SIZE) -> keras.Model:
    """Four stages of 2 x (conv3x3 + BN + ReLU) with widths w, 2w, 4w, 8w, then global average pooling.

    Global average pooling instead of a large dense head keeps the net at about 1.2M
    parameters for w=32: small enough for several hundred faces per second on 2 CPU cores.
    """
    inputs = keras.Input((size, size, 1), name="face")
    x = inputs
    for stage, mult in enumerate((1, 2, 4, 8), start=1):
        x = _conv_bn_relu(x, width * mult, f"s{stage}a")
        x = _conv_bn_relu(x, width * mult, f"s{stage}b")
        if stage < 4:
            x = layers.MaxPooling2D(name=f"s{stage}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(len(EMOTIONS), activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"vgg{width}")


def seed(size: int = FACE_SIZE) -> keras.Model:
    """The seed project's 4-layer CNN, kept as the speed and accuracy baseline."""
    inputs = keras.Input((size, size, 1), name="face")
    x = layers.Conv2D(32, 3, activation="relu")(inputs)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Dropout(0.25)(x)
    x = layers.Conv2D(128, 3, activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(128, 3, activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Dropout(0.25)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(1024, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(len(EMOTIONS), activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="seed")


def augmenter(seed_value: int, erase: float = 0.5) -> keras.Sequential:
    """Training-only augmentation: flips, small affine moves and random erasing.

    The published from-scratch FER-2013 results share these; the layers are identity at
    inference and are never part of the exported model.
    """
    return keras.Sequential([
        layers.RandomFlip("horizontal", seed=seed_value),
        layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seed_value + 1),
        layers.RandomRotation(0.05, fill_mode="nearest", seed=seed_value + 2),
        layers.RandomZoom((-0.1, 0.1), fill_mode="nearest", seed=seed_value + 3),
        layers.RandomErasing(factor=erase, scale=(0.02, 0.15), value_range=(0.0, 1.0),
                             seed=seed_value + 4),
    ], name="augment")
