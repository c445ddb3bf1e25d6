"""The one face preprocessing used by training, evaluation and the classifier stage.

Keeping a single implementation is what makes the accuracy measured by ``fer-pipe evaluate``
hold in the live pipeline: a face crop from a video frame and a FER-2013 image go through
exactly the same grey conversion, crop, resize and scaling.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

FACE_SIZE = 48


def to_gray(image: np.ndarray) -> np.ndarray:
    """Return a 2-D uint8 grey image; BGR frames are converted, grey ones passed through."""
    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[:, :, 0]
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def scale_pixels(faces: np.ndarray) -> np.ndarray:
    """Map uint8 grey faces of shape (n, h, w) to the model's float32 input (n, h, w, 1) in [0, 1]."""
    return (faces.astype(np.float32) * (1.0 / 255.0))[..., np.newaxis]


def expand_box(box: Sequence[int], margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """Grow an (x, y, w, h) box by ``margin`` of its size on each side, clipped to the image.

    A box wholly outside the image (a plug-in detector's or tracker's) keeps at least the one
    pixel at the image's edge: an empty crop would fail the classifier on OpenCV's assertion."""
    x, y, w, h = (int(v) for v in box)
    dx, dy = int(round(w * margin)), int(round(h * margin))
    x0, y0 = min(max(0, x - dx), width - 1), min(max(0, y - dy), height - 1)
    x1, y1 = max(min(width, x + w + dx), x0 + 1), max(min(height, y + h + dy), y0 + 1)
    return x0, y0, x1 - x0, y1 - y0


def crop_faces(image: np.ndarray, boxes: Sequence[Sequence[int]], size: int = FACE_SIZE,
               margin: float = 0.0) -> np.ndarray:
    """Cut every box out of a BGR or grey frame and resize it to ``size`` x ``size`` grey uint8.

    Only the boxes are turned grey: for one face in a 720p frame that is a quarter of the work
    of converting the frame. INTER_AREA is used for shrinking (the usual case: faces in video
    are larger than 48 px) because it averages instead of aliasing, which is also how
    FER-2013's crops look.
    """
    height, width = image.shape[:2]
    out = np.empty((len(boxes), size, size), dtype=np.uint8)
    for i, box in enumerate(boxes):
        x, y, w, h = expand_box(box, margin, width, height)
        crop = to_gray(image[y:y + h, x:x + w])
        interp = cv2.INTER_AREA if w >= size else cv2.INTER_LINEAR
        out[i] = cv2.resize(crop, (size, size), interpolation=interp)
    return out


def preprocess_faces(image: np.ndarray, boxes: Sequence[Sequence[int]], size: int = FACE_SIZE,
                     margin: float = 0.0) -> np.ndarray:
    """Frame and face boxes in, model input batch (n, size, size, 1) float32 out."""
    return scale_pixels(crop_faces(image, boxes, size, margin))


def preprocess_dataset(images: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """FER-2013 images (n, 48, 48) uint8 to the model input; the whole image is the face box."""
    if images.shape[1:3] != (size, size):
        full = [(0, 0, images.shape[2], images.shape[1])]
        images = np.stack([crop_faces(img, full, size)[0] for img in images])
    return scale_pixels(images)
