"""``image_folder``: the images of a folder, in name order, as a finite stream of frames."""
from __future__ import annotations

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

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class ImageFolderParams(SourceParams):
    path: str = Field(description="folder of images, read in name order")
    recursive: bool = Field(False, description="also read images in subfolders")
    fps: float = Field(1.0, gt=0, le=1000, description="images per second of the sequence (a time-lapse's "
                                                       "capture rate): image i is dated i / fps seconds")


class ImageFolderSource(Source):
    """Reads the images of a folder, in name order, as a finite stream of frames.

    Files without an image suffix are skipped with one warning line naming them; images that
    fail to decode are skipped with a warning each, and their index is not reused, so the CSV
    shows the gap. A folder where no image decodes at all is bad input (exit 2)."""

    Params = ImageFolderParams
    input_paths = ("path",)
    params: ImageFolderParams

    @classmethod
    def preflight(cls, params: ImageFolderParams) -> None:
        _list_images(Path(params.path), params.recursive)

    def open(self) -> None:
        root = Path(self.params.path)
        self._files, others = _list_images(root, self.params.recursive)
        if others:
            names = ", ".join(p.name for p in others[:5]) + (", ..." if len(others) > 5 else "")
            what = "file that is not an image" if len(others) == 1 else "files that are not images"
            print(printable(f"fer-pipe: image folder {root}: skipped {len(others)} {what}: {names}"), file=sys.stderr)

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
            try:
                with self._decoder_said.capturing():
                    image = cv2.imread(opencv_name(file, "image"), cv2.IMREAD_COLOR)
            except InputError as exc:  # one image: skipped and said, as one that does not decode
                print(printable(f"fer-pipe: image folder: skipped {exc}"), file=sys.stderr)
                continue
            said = self._decoder_said.take().decode("utf-8", "replace").strip()
            if said:  # libjpeg's "Premature end of JPEG file" of a truncated image named none
                print(printable(f"fer-pipe: image folder: {file}: its decoder said: {' '.join(said.split())}"),
                      file=sys.stderr)
            if image is None:
                print(printable(f"fer-pipe: image folder: skipped {file}: not a readable image"), file=sys.stderr)
                continue
            read += 1
            yield Packet(source, index, index / self.params.fps, image, extra={"file": str(file.relative_to(root))})
        if not read:
            raise InputError(f"image folder {self.params.path}: none of its {len(self._files)} image "
                             "files could be decoded")


def _list_images(root: Path, recursive: bool) -> tuple[list[Path], list[Path]]:
    """The image files of a folder in name order, and the other files (to warn about)."""
    if not root.is_dir():
        raise InputError(f"image folder {root}: " + ("is a file, not a folder" if root.exists() else "no such folder"))
    opencv_name(root, "image folder")  # one line, not one per image in it
    files = sorted(p for p in root.glob("**/*" if recursive else "*") if p.is_file())
    images = [p for p in files if p.suffix.lower() in SUFFIXES]
    if not images:
        raise InputError(f"image folder {root}: no images ({', '.join(SUFFIXES)})")
    return images, [p for p in files if p.suffix.lower() not in SUFFIXES]
