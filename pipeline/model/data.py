"""Readers for FER-2013 in the contest's CSV layout and in the image-folder layout."""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError
from ..messages import EMOTIONS
from ..opencv_names import opencv_name
from ..preprocess import FACE_SIZE

USAGES = ("Training", "PublicTest", "PrivateTest")
_FOLDER_SPLITS = {"Training": ("train", "training"), "PublicTest": ("test", "val", "publictest"),
                  "PrivateTest": ("privatetest",)}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
LABEL_TEXTS = {str(i) for i in range(len(EMOTIONS))}
"""The emotion column's values: FER-2013 numbers the seven classes 0-6 in EMOTIONS' order."""
_USAGE_TEXTS = {usage.lower(): usage for usage in USAGES}
"""Usage values as written by hand or by another tool (``training``, ``Training ``), which were
dropped without a word."""


@dataclass(frozen=True)
class FerSplit:
    """One split of the data set: uint8 images (n, 48, 48) and integer labels (n,)."""

    images: np.ndarray
    labels: np.ndarray
    usage: str

    def __len__(self) -> int:
        return len(self.labels)

    def sample(self, count: int, seed: int) -> FerSplit:
        """A fixed random subset, so a regression check always sees the same rows."""
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(len(self), size=min(count, len(self)), replace=False))
        return FerSplit(self.images[idx], self.labels[idx], self.usage)


def sha256_of(path: Path) -> str:
    """The data file's digest, recorded with a run so that a resume on other data is refused."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def publictest_sample(limit: int) -> int:
    """The PublicTest rows a ``--limit`` run validates on, and its card scores: a quarter of its
    Training rows. One rule for both, so that the card cannot say "a sample" of another size."""
    return max(1, limit // 4)


def images_sha256(*splits: FerSplit) -> str:
    """The digest of splits' decoded images and labels: what a folder of images, which has no
    file to digest, is checked by when its run resumes. Its count of training rows was all, and
    that is the ``--limit`` once sampled, so another folder resumed without a word (s68b 1)."""
    digest = hashlib.sha256()
    for split in splits:
        digest.update(np.ascontiguousarray(split.images).data)
        digest.update(split.labels.astype("<i8").tobytes())
    return digest.hexdigest()


def load_split(path: str | Path, usage: str) -> FerSplit:
    """Load one ``usage`` split from a CSV(.gz) file or an image folder."""
    return load_splits(path, usage)[0]


def load_splits(path: str | Path, *usages: str) -> list[FerSplit]:
    """Load several splits, in the order asked, reading a CSV once for all of them."""
    for usage in usages:
        if usage not in USAGES:
            raise InputError(f"usage {usage!r}: expected one of {', '.join(USAGES)}")
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        return [_load_folder(path, usage) for usage in usages]
    if path.is_char_device() or path.is_block_device():  # /dev/zero: one endless line, read whole
        raise InputError(f"{path}: a device, not a FER-2013 CSV file or folder")
    return _load_csv(path, usages)


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _open_text(path: Path) -> io.TextIOBase:
    """The CSV's text; a byte-order mark that Excel, pandas (``utf-8-sig``) or PowerShell put in
    front of a copy is skipped: it was refused as "not text"."""
    if _is_gzip(path):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _archive(path: Path) -> str:
    """A hint where the file is an archive: Kaggle's download was ``fer2013.tar.gz`` and is now a
    zip, which were said only to lack the CSV's header, or not to be text (s68b 5, s68e 5)."""
    try:
        if zipfile.is_zipfile(path):
            return "; it is a zip archive: extract the CSV from it first (unzip)"
        return "; it is a tar archive: extract the CSV from it first (tar -xf)" if tarfile.is_tarfile(path) else ""
    except (OSError, EOFError, zlib.error, tarfile.TarError):
        return ""


def _gzip_damage(path: Path, fh: io.TextIOBase) -> str | None:
    """Why the rest of a gzip'd CSV does not decompress, if it does not: damage inside the
    deflate stream reads as rows of garbage long before the check at its end, and the first
    such row was blamed, "corrupt.csv.gz:16154: expected 3 fields, got 7"."""
    if not _is_gzip(path):
        return None
    try:
        while fh.buffer.read(2**20):
            pass
    except (OSError, EOFError, zlib.error) as exc:
        return str(exc)
    return None


def _pixels(text: str, where: str) -> np.ndarray:
    """One row's 48x48 pixels. ``np.fromstring`` parses them in C: splitting the text and
    converting each number took 8 of the 19 s that loading the Training split took. As int64,
    which a number past its range saturates: int16 wrapped 65636 round to 100, taken (s68b 2)."""
    try:
        pixels = np.fromstring(text, dtype=np.int64, sep=" ")
    except ValueError:  # text that is not all numbers (older NumPy returned the numbers before it)
        pixels = np.zeros(0, np.int64)
    if pixels.size != FACE_SIZE * FACE_SIZE or not pixels.size or pixels.min() < 0 or pixels.max() > 255:
        raise InputError(f"{where}: expected {FACE_SIZE * FACE_SIZE} pixel values 0-255 separated by spaces")
    return pixels.astype(np.uint8).reshape(FACE_SIZE, FACE_SIZE)


def _label(text: str, where: str) -> int:
    if text.strip() not in LABEL_TEXTS:
        raise InputError(f"{where}: emotion must be a whole number 0-{len(EMOTIONS) - 1}, got {text!r}")
    return int(text)


def _read_rows(reader: Iterator[list[str]], path: Path, images: dict[str, list[np.ndarray]],
               labels: dict[str, list[int]]) -> set[str]:
    """The rows after the header into the splits asked for (the keys of ``images``); the splits
    the file has, to name them where one asked for is missing."""
    seen: set[str] = set()
    for lineno, row in enumerate(reader, start=2):
        if len(row) != 3:
            raise InputError(f"{path}:{lineno}: expected 3 fields, got {len(row)}")
        usage = _USAGE_TEXTS.get(row[2].strip().lower())
        if usage is None:
            raise InputError(f"{path}:{lineno}: Usage must be one of {', '.join(USAGES)}, got {row[2]!r}")
        seen.add(usage)
        if usage in images:
            images[usage].append(_pixels(row[1], f"{path}:{lineno}"))
            labels[usage].append(_label(row[0], f"{path}:{lineno}"))
    return seen


def _load_csv(path: Path, usages: tuple[str, ...]) -> list[FerSplit]:
    images: dict[str, list[np.ndarray]] = {usage: [] for usage in usages}
    labels: dict[str, list[int]] = {usage: [] for usage in usages}
    try:
        with _open_text(path) as fh:
            reader = csv.reader(fh)
            try:
                header = next(reader, None)
                if header is None or [h.strip().lower() for h in header[:3]] != ["emotion", "pixels", "usage"]:
                    raise InputError(f"{path}: not a FER-2013 CSV (expected header 'emotion,pixels,Usage'){_archive(path)}")
                seen = _read_rows(reader, path, images, labels)
            except (InputError, UnicodeDecodeError, csv.Error):
                damage = _gzip_damage(path, fh)
                if damage:
                    raise InputError(f"{path}: cannot read FER-2013 CSV: {damage}") from None
                raise
    except UnicodeDecodeError:  # a video or an image given as --data: the codec's words named no file kind
        raise InputError(f"{path}: not a FER-2013 CSV: not text (expected the contest's CSV, "
                         f"'emotion,pixels,Usage', or a gzip of it){_archive(path)}") from None
    except (OSError, EOFError, ValueError, zlib.error) as exc:  # zlib: a damaged gzip
        raise InputError(f"{path}: cannot read FER-2013 CSV: {exc}") from None
    except csv.Error as exc:  # a quote left open runs its field on past the csv module's limit
        raise InputError(f"{path}: cannot read FER-2013 CSV: {exc} (a quote left open?)") from None
    for usage in usages:
        if not images[usage]:
            has = f"its rows are {', '.join(u for u in USAGES if u in seen)}" if seen else "it has no rows"
            raise InputError(f"{path}: no rows with Usage {usage!r} ({has})")
    return [FerSplit(np.stack(images[u]), np.array(labels[u], dtype=np.int64), u) for u in usages]


def _split_folder(root: Path, usage: str) -> Path | None:
    """The folder of split ``usage``, or None. A folder of no split, or two of one (``test/`` and
    ``val/``), is an error: one was read and the other left out without a word."""
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "__")))  # __MACOSX
    known = {name for names in _FOLDER_SPLITS.values() for name in names}
    other = next((d for d in folders if d.name.lower() not in known), None)
    if other is not None and all(d.name.lower() in EMOTIONS for d in folders):
        raise InputError(f"{root}: holds class folders, not split folders; give the folder that holds it and its "
                         "other splits (train/, test/)")
    if other is not None:
        raise InputError(f"{other}: not a split folder (expected "
                         f"{'; '.join(' or '.join(n) + f' for {u}' for u, n in _FOLDER_SPLITS.items())}, in any case)")
    mine = [d for d in folders if d.name.lower() in _FOLDER_SPLITS[usage]]
    if len(mine) > 1:
        raise InputError(f"{root}: {' and '.join(d.name for d in mine)} are both {usage}; keep one")
    return mine[0] if mine else None


def _load_folder(root: Path, usage: str) -> FerSplit:
    opencv_name(root, "data folder")  # said of the folder, not of its first image
    split_dir = _split_folder(root, usage)
    if split_dir is None:
        raise InputError(f"{root}: no folder for {usage} (expected one of "
                         f"{', '.join(_FOLDER_SPLITS[usage])})")
    images: list[np.ndarray] = []
    labels: list[int] = []
    class_dirs = sorted(d for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))  # .git/
    for class_dir in class_dirs:
        if class_dir.name.lower() not in EMOTIONS:  # Surprise/ or surprised/ was skipped without a word
            raise InputError(f"{class_dir}: not a class folder (expected {', '.join(EMOTIONS)}, in any case)")
    for class_dir in sorted(class_dirs, key=lambda d: EMOTIONS.index(d.name.lower())):
        label = EMOTIONS.index(class_dir.name.lower())
        for file in sorted(class_dir.iterdir()):
            if file.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            img = cv2.imread(opencv_name(file, "image"), cv2.IMREAD_GRAYSCALE)  # a Latin-1 name crashed it
            if img is None:
                raise InputError(f"{file}: not a readable image")
            if img.shape != (FACE_SIZE, FACE_SIZE):
                img = cv2.resize(img, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA)
            images.append(img)
            labels.append(label)
    if not images:
        raise InputError(f"{split_dir}: no images in any of the class folders {', '.join(EMOTIONS)}")
    return FerSplit(np.stack(images), np.array(labels, dtype=np.int64), usage)
