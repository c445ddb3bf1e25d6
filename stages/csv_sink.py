"""``csv``: one row per face per frame, and one row with empty face fields for a frame with none."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from pydantic import Field, field_validator

from fer_pipe.csvfile import APPEND_HELP, CsvOutput, check_existing
from fer_pipe.events import FRAME_COLUMNS, free_names
from fer_pipe.messages import EMOTIONS, FACES, Packet, emotion_probs, extra_values
from fer_pipe.output_files import check_writable
from fer_pipe.stage import Sink, StageParams


class CsvParams(StageParams):
    path: str = Field(description="CSV file to write (its folder must exist)")
    precision: int = Field(4, ge=1, le=9, description="decimals of probabilities and confidence")
    append: bool = Field(False, description=APPEND_HELP)
    extra: list[str] = Field([], description="keys of a face's or its frame's extra data to add as columns "
                                             "after the others (image_folder sets file: the image's path)")

    @field_validator("extra")
    @classmethod
    def _new_columns(cls, keys: list[str]) -> list[str]:
        return free_names(keys, FRAME_COLUMNS, "a column")


class CsvSink(Sink):
    """Writes one row per face per frame, and one row with empty face fields for a frame
    without faces, so "no face" can be told from "frame lost".

    A frame's rows reach the file in one write as it is consumed, so a crash elsewhere loses
    nothing written, and a full disk does not leave half a frame.
    """

    Params = CsvParams
    params: CsvParams
    reads = FACES
    output_paths = ("path",)

    @classmethod
    def preflight(cls, params: CsvParams) -> None:
        check_writable(params.path, "csv")
        check_existing(params.path, "csv", FRAME_COLUMNS + params.extra, params.append)

    def open(self) -> None:
        self._out = CsvOutput(self.params.path, "csv", FRAME_COLUMNS + self.params.extra, append=self.params.append)
        self._extra_checked = not self.params.extra

    def consume(self, packet: Packet) -> None:
        keys = self.params.extra
        if not keys:
            self._out.write(self._rows(packet))
            return
        if not self._extra_checked:
            self._warn_missing_extra(packet)
        frame_values = [packet.extra.get(key, "") for key in keys]
        self._out.write(row + extra_values(face, keys, frame_values)
                        for row, face in zip(self._rows(packet), packet.faces or [None]))

    def _rows(self, packet: Packet) -> Iterator[list[Any]]:
        head = [packet.source, packet.index, f"{packet.timestamp:.3f}"]
        if not packet.faces:
            yield head + [""] * (len(FRAME_COLUMNS) - len(head))
            return
        p = self.params.precision
        for i, face in enumerate(packet.faces):
            row = head + [i, *face.box, "" if face.track_id is None else face.track_id]
            if face.probs is None:
                row += [""] * (2 + len(EMOTIONS))
            else:
                row += [face.label, f"{face.confidence:.{p}f}", *(f"{v:.{p}f}" for v in emotion_probs(face))]
            smoothed = face.smoothed_confidence
            row += ["", ""] if smoothed is None else [face.smoothed_label, f"{smoothed:.{p}f}"]
            yield row

    def _warn_missing_extra(self, packet: Packet) -> None:
        """Say once if the first frame with faces has an ``extra`` key neither on itself nor on
        a face: a misspelt key otherwise gives an empty column and no hint why. A frame with no
        face cannot say whether a face's key is missing."""
        has = set(packet.extra).union(*(face.extra for face in packet.faces or ()))
        missing = [k for k in self.params.extra if k not in has]
        if missing and not packet.faces:
            return
        self._extra_checked = True
        if missing:
            print(f"fer-pipe: WARNING: csv sink {self.name!r}: the first frame with faces has no extra data "
                  f"{', '.join(map(repr, missing))} on it or its faces (they have: {', '.join(sorted(has)) or 'none'}); "
                  "those columns stay empty where a face or its frame lacks it", file=sys.stderr)

    def close(self) -> None:
        self._out.close()
