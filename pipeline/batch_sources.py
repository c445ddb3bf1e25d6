"""Which video each name in a batch's results folder was made from, across runs.

Outputs are named by their videos' names (``cam.mp4`` gives ``cam.csv``, and its chunks
``_work/parts/cam@0-8999.csv``), and a rerun takes the CSV or finished chunks of a name as its
own: that is how it resumes. Two runs into one folder with two videos of one name (two days of
one camera, a recording replaced under its old name) made the second run "nothing to do", its
video never read, exit 0. ``_sources.json`` records the video behind each name, and a video
that is not that one is refused, named, rather than given another's rows.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

from .output_files import write_whole

SOURCES = "_sources.json"


class Source(NamedTuple):
    path: str
    """The real path (links followed)."""
    size: int
    mtime_ns: int


def source_of(video: str) -> Source | None:
    """None where the file cannot be looked at (then nothing is checked: reading it will say why)."""
    try:
        status = os.stat(video)
    except OSError:
        return None
    return Source(os.path.realpath(video), status.st_size, status.st_mtime_ns)


def same_video(recorded: Source, video: Source) -> bool:
    """One size, and one path or one modification time: a folder of videos moved or mounted
    elsewhere is still its videos, and a file replaced at its path is not."""
    return recorded.size == video.size and (recorded.path == video.path or recorded.mtime_ns == video.mtime_ns)


def recorded_sources(out_dir: Path, parts: Path) -> dict[str, Source]:
    """The videos behind the names that still have a CSV in ``out_dir`` or files in ``parts``;
    a name with neither is free again."""
    try:
        data = json.loads((out_dir / SOURCES).read_text(encoding="utf-8"))
        entries = data.items()
    except (OSError, ValueError, AttributeError):  # none yet, or not one of ours
        return {}
    try:
        held = os.listdir(parts)
    except OSError:
        held = []
    sources = {}
    for key, entry in entries:
        try:
            source = Source(str(entry["path"]), int(entry["size"]), int(entry["mtime_ns"]))
        except (TypeError, KeyError, ValueError):
            continue
        if (out_dir / f"{key}.csv").is_file() or any(name.startswith((f"{key}@", f"{key}.")) for name in held):
            sources[key] = source
    return sources


def record_sources(out_dir: Path, sources: dict[str, Source]) -> None:
    """Written before any task runs, so an interrupted run's chunks are claimed too."""
    write_whole(out_dir / SOURCES, json.dumps({key: source._asdict() for key, source in sorted(sources.items())},
                                              indent=2) + "\n", "batch")
