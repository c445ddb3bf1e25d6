"""``image_folder``: the images of a folder, in name order, as a finite stream of frames."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
from pydantic import Field

from fer_pipe.errors import InputError
from fer_pipe.messages import Packet
from fer_pipe.stage import Source, StageParams

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class ImageFolderParams(StageParams):
    path: str = Field(description="folder of images, read in name order")
    source_id: str = Field("", description="name carried by every result (default: the stage name)")
    recursive: bool = Field(False, description="also read images in subfolders")


class ImageFolderSource(Source):
    """Files without an image suffix are ignored; images that fail to decode are skipped with a
    warning each, and their index is not reused, so the CSV shows the gap."""

    Params = ImageFolderParams
    params: ImageFolderParams

    def open(self) -> None:
        root = Path(self.params.path)
        if not root.is_dir():
            raise InputError(f"image folder {root}: no such folder")
        pattern = "**/*" if self.params.recursive else "*"
        self._files = sorted(p for p in root.glob(pattern) if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not self._files:
            raise InputError(f"image folder {root}: no images ({', '.join(SUFFIXES)})")

    def length(self) -> int | None:
        return len(self._files)

    def frames(self) -> Iterator[Packet]:
        source = self.params.source_id or self.name
        for index, file in enumerate(self._files):
            image = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if image is None:
                print(f"fer-pipe: image folder: skipped {file}: not a readable image", file=sys.stderr)
                continue
            yield Packet(source, index, float(index), image, extra={"file": file.name})
