"""``image_folder``: the images of a folder, in name order, as a finite stream of frames."""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
from pydantic import Field

from fer_pipe.errors import InputError, printable
from fer_pipe.messages import Packet
from fer_pipe.native_stderr import StderrCapture
from fer_pipe.opencv_names import opencv_name
from fer_pipe.stage import Source, SourceParams

SUFFIXES = (".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".webp", ".tif", ".tiff", ".gif", ".avif",
            ".jp2", ".ppm", ".pgm", ".pbm", ".pnm")
"""The photo formats the bundled OpenCV decodes (it tells them by their content, not their suffix)."""


class ImageFolderParams(SourceParams):
    path: str = Field(description="folder of images, read in name order (numbers by value: img2 before img10); "
                                  "hidden files and folders are left out")
    recursive: bool = Field(False, description="also read images in subfolders")
    fps: float = Field(1.0, gt=0, le=1000, description="images per second of the sequence (a time-lapse's "
                                                       "capture rate): image i is dated i / fps seconds")


class ImageFolderSource(Source):
    """Reads the images of a folder, in name order, as a finite stream of frames.

    Files without an image suffix are skipped with one warning line naming them; images that
    fail to load are skipped with a warning each, counted as dropped, and their index is not
    reused, so the CSV shows the gap. A folder where no image loads at all, or that goes away
    during the run, is bad input (exit 2)."""

    Params = ImageFolderParams
    input_paths = ("path",)
    folder_suffixes = SUFFIXES
    fresh_frames = True  # OpenCV makes a new array for each frame
    params: ImageFolderParams

    @classmethod
    def preflight(cls, params: ImageFolderParams) -> None:
        _list_images(Path(params.path), params.recursive)

    def open(self) -> None:
        root = Path(self.params.path)
        self._root = _identity(root)
        self._files, others, unlisted = _list_images(root, self.params.recursive)
        if others:
            what = "file" if len(others) == 1 else "files"
            print(printable(f"fer-pipe: image folder {root}: skipped {len(others)} {what} not in an image format "
                            f"it reads: {_named(others, root)}"), file=sys.stderr)
        for folder, why in unlisted:
            print(printable(f"fer-pipe: image folder: skipped the folder {folder}: cannot list it ({why})"),
                  file=sys.stderr)
        self._decoder_said = StderrCapture()

    def length(self) -> int | None:
        return len(self._files)

    def close(self) -> None:
        self._decoder_said.close()

    def frames(self) -> Iterator[Packet]:
        source = self.source_id
        root = Path(self.params.path)
        read = 0
        for index, file in enumerate(self._files):
            refused, pages = None, 1
            try:
                with self._decoder_said.capturing():
                    name = opencv_name(file, "image")
                    image = cv2.imread(name, cv2.IMREAD_COLOR)
            except InputError as exc:  # one image: skipped and said, as one that does not decode
                self._skip(str(exc))
                continue
            except cv2.error as exc:  # a header that claims 60000x60000: OpenCV raises instead of returning None
                image, refused = None, exc
            said = self._decoder_said.take().decode("utf-8", "replace").strip()
            if image is not None:  # a header's count, some 0.02 ms against a decode's milliseconds
                with self._decoder_said.capturing():
                    pages = cv2.imcount(name)
                self._decoder_said.take()  # libtiff's warnings again, which the decode's line says
            unreadable = None if image is not None else _unreadable(file)
            if unreadable is not None and _identity(root) != self._root:  # an unmounted share: the rest is lost too
                raise InputError(f"image folder {root}: went away during the run; {read} of its "
                                 f"{len(self._files)} images were read")
            if said and unreadable is None:  # libjpeg's "Premature end of JPEG file" of a truncated image named none
                print(printable(f"fer-pipe: image folder: {file}: its decoder said: {' '.join(said.split())}"),
                      file=sys.stderr)
            if image is None:
                self._skip(f"{file}: {unreadable or _refusal(refused)}")
                continue
            if pages > 1:  # a TIFF stack, an animated GIF: its other frames went without a word
                print(printable(f"fer-pipe: image folder: {file}: holds {pages} frames (a multi-page or animated "
                                "image); only its first is read: split it into one image per frame, or make it "
                                "a video"), file=sys.stderr)
            read += 1
            # the name as text, as OpenCV read it: Python's own str of it was mojibake in a CSV under a
            # Latin-1 locale, and under an ASCII one failed it mid-run (s67b 2)
            text = os.fsencode(file.relative_to(root)).decode("utf-8")
            yield Packet(source, index, index / self.params.fps, image, extra={"file": text})
        if not read:
            raise InputError(f"image folder {self.params.path}: none of its {len(self._files)} image "
                             "files could be read")

    def _skip(self, why: str) -> None:
        """Says the image left out, and counts it in the statistics' dropped column."""
        self.dropped += 1
        print(printable(f"fer-pipe: image folder: skipped {why}"), file=sys.stderr)


def _unreadable(file: Path) -> str | None:
    """Why an image that did not load could not even be opened (gone, not allowed, a dangling
    link), so that it is not called undecodable; None where it opens."""
    try:
        with open(file, "rb"):
            return None
    except OSError as exc:
        link = f": a link to {os.readlink(file)}" if file.is_symlink() else ""
        return f"cannot read it ({exc.strerror}{link})"


def _identity(folder: Path) -> tuple[int, int] | None:
    """Which folder is at the path: a share unmounted under the run leaves its empty mount point."""
    try:
        status = os.stat(folder)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _refusal(refused: cv2.error | None) -> str:
    if refused is None:
        return "not a readable image"
    if "CV_IO_MAX_IMAGE_PIXELS" in refused.err:
        return "its header claims more pixels than OpenCV decodes (2^30): a damaged header, or a gigapixel image"
    return f"OpenCV refused it ({refused.err})"


def _name_order(path: Path) -> list[tuple[list[str | int], str, str]]:
    """Sort key: each part of the path, its stem before its suffix, with its runs of digits
    compared by value, so that ffmpeg's unpadded frame1.jpg, frame2.jpg, ..., frame10.jpg come in
    the order they were taken, after frame.jpg; case is ignored, as a file manager does, and
    breaks only ties."""
    return [([int(t) if t.isdecimal() else t for t in re.split(r"(\d+)", Path(part).stem.casefold())],
             Path(part).suffix.casefold(), part) for part in path.parts]


def _first_visit(folder: Path, seen: set[str]) -> bool:
    """False for a folder already read under another name (a link to a sibling, or back up: a
    loop); the folders of one parent come real ones first, so that the link is the one left out."""
    real = os.path.realpath(folder)
    if real in seen:
        return False
    seen.add(real)
    return True


def _list_images(root: Path, recursive: bool) -> tuple[list[Path], list[Path], list[tuple[str, str]]]:
    """The image files of a folder in name order, the other files, and the subfolders that
    cannot be listed with why (both to warn about: a drive's lost+found failed the run). Hidden
    files and folders (a Mac's ._ twins, .thumbnails) are not part of a collection: read, they
    took frame indices and shifted every timestamp after them."""
    if not root.is_dir():
        raise InputError(f"image folder {root}: " + ("is a file, not a folder" if root.exists() else "no such folder"))
    opencv_name(root, "image folder")  # one line, not one per image in it

    unlisted: list[tuple[str, str]] = []

    def cannot_list(exc: OSError) -> None:
        if Path(exc.filename) == root:
            raise InputError(f"image folder {root}: cannot list it ({exc.strerror})")
        unlisted.append((exc.filename, exc.strerror))

    files, subfolders, seen = [], 0, {os.path.realpath(root)}
    for top, folders, names in os.walk(root, onerror=cannot_list, followlinks=recursive):
        folders[:] = [f for f in sorted(folders, key=lambda f: (Path(top, f).is_symlink(), _name_order(Path(f))))
                      if not f.startswith(".") and _first_visit(Path(top, f), seen)]
        if not recursive:
            subfolders, folders[:] = len(folders), []
        files += [Path(top, n) for n in names if not n.startswith(".")]
    files.sort(key=lambda p: _name_order(p.relative_to(root)))
    images = [p for p in files if p.suffix.lower() in SUFFIXES]
    others = [p for p in files if p.suffix.lower() not in SUFFIXES]
    if not images:
        hint = (f"; it holds {subfolders} subfolder{'s' if subfolders > 1 else ''}: set recursive: true to read "
                f"{'them' if subfolders > 1 else 'it'}" if subfolders else "")
        held = (f"; it holds {len(others)} other file{'s' if len(others) > 1 else ''}: {_named(others, root)}"
                if others else "")
        raise InputError(f"image folder {root}: no images ({', '.join(SUFFIXES)}){held}{hint}")
    return images, others, unlisted


PHOTOS_IT_CANNOT_READ = (".heic", ".heif", ".avifs", ".jxl", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2",
                         ".raf", ".psd")
"""Suffixes of photos OpenCV does not decode: named first among the files skipped, where a
phone's HEIC sorted after five Thumbs.db went unnamed."""


def _named(files: list[Path], root: Path) -> str:
    """Up to five of ``files``, photos first, each by its path in the folder: by bare name, the
    subfolders' Thumbs.db and desktop.ini were named over and over, and which folder held what
    was not said."""
    ordered = sorted(files, key=lambda p: p.suffix.lower() not in PHOTOS_IT_CANNOT_READ)
    more = f", and {len(files) - 5} more" if len(files) > 5 else ""
    return ", ".join(str(p.relative_to(root)) for p in ordered[:5]) + more
