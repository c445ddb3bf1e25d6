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
import re
from datetime import datetime
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
    """One size and one modification time, wherever it is: a folder of videos moved or mounted
    elsewhere is still its videos, and a recording replaced at its path is not, even of the same
    size (a camera's fixed-size segments). A video copied anew without its time (``cp`` without
    ``-p``) is refused, with a line that says what to do, rather than taken for its rows. The
    times are compared as finely as the coarser of the two holds them: a copy kept its time
    on an SMB or NTFS share (100 ns), exFAT (10 ms) or FAT (2 s), and was refused."""
    return recorded.size == video.size and abs(recorded.mtime_ns - video.mtime_ns) < max(
        _resolution(recorded.mtime_ns), _resolution(video.mtime_ns))


def _resolution(mtime_ns: int) -> int:
    """How finely a file system that wrote ``mtime_ns`` keeps times, as far as its zeros tell: a
    time of ext4's ends in nine random digits, one of exFAT's in seven zeros, FAT's is an even
    second. A time that ends in a zero by chance is read as coarser than it is, which loosens
    the match by nanoseconds, where a copy made anew differs by seconds."""
    if mtime_ns % (2 * 10**9) == 0:
        return 2 * 10**9
    return next(10**k for k in range(9, -1, -1) if mtime_ns % 10**k == 0)


def clash(key: str, video: Source, sources: dict[str, Source], out_dir: Path, work: Path) -> str | None:
    """Why the video of output name ``key`` may not run into ``out_dir``, or None: its name, or
    the name of the rows it keeps if it turns out damaged (``KEY.partial.csv``), holds another
    video's CSV, kept rows or finished chunks, or its tasks' names are another's (a kept part
    lobby@0-99.csv became the CSV of a clip named lobby@0-99.mp4, exit 0)."""
    owner, listing = sources.get(key), _listing(work / "parts")
    if owner is not None and not same_video(owner, video):
        csv, parts = out_dir / f"{key}.csv", _parts_of(key, listing)
        if (csv.is_file() or parts) and owner.path == video.path and video.size > owner.size \
                and video.mtime_ns > owner.mtime_ns:
            # A recording read while still being written was said to be replaced, and told to use another --out
            # (s68c 1). The file cannot tell a recording that grew from a larger one put in its place (s68f 3).
            # Its task files are named one by one: a glob missed a one-task video's, and took another's (s68g 1).
            what, were = ((str(csv), "was") if csv.is_file() else
                          (", ".join(str(work / "parts" / name) for name in parts), "were"))
            return (f"{what} {were} made by an earlier run from the video at this path when it was {owner.size:,} "
                    f"bytes; it is {video.size:,} now: if it was still being recorded then, remove {what} to read it "
                    "again; if another video replaced it, give another --out")
        if csv.is_file():
            held = f"{out_dir / key}.csv was"
        elif parts:
            held = f"the finished tasks of {key} in {work} were"
        elif owner.path == video.path:
            return None  # the file that turned out damaged, mended: its rows replace those kept
        else:
            held = f"the rows kept in {out_dir / key}.partial.csv were"
        return f"{held} made by an earlier run from {_told_apart(owner, video)}"
    for other in sources:  # chunks are named KEY@FIRST-LAST: lobby's first chunk and lobby@0-99.mp4's one task
        short, long = sorted((key, other), key=len)
        if other != key and re.fullmatch(rf"{re.escape(short)}@\d+-(\d+|end)", long) \
                and any(name.startswith(f"{long}.") for name in listing):
            return (f"the finished tasks named {long} in {work / 'parts'}, kept by a stopped run, may be "
                    f"{sources[other].path}'s or this video's, and their names cannot tell which; give another "
                    "--out, or rename one of the two")
    other = sources.get(f"{key}.partial")
    if other is not None and (out_dir / f"{key}.partial.csv").is_file():
        return (f"{out_dir / key}.partial.csv, where this video's rows would be kept if it turned out damaged, is "
                f"the CSV of {other.path}, from an earlier run; give another --out, or rename one of the two")
    base = sources.get(key.removesuffix(".partial")) if key.endswith(".partial") else None
    if base is not None and (out_dir / f"{key}.csv").is_file():
        return (f"{out_dir / key}.csv holds the rows kept of {base.path}, which turned out damaged in an earlier "
                "run; give another --out, or rename one of the two")
    return None


def _told_apart(owner: Source, video: Source) -> str:
    """The earlier video and this one, by what tells them apart, and what to do: the sizes alone
    read "191,834 bytes, not ... 191,834 bytes" for a copy made without its time, and a recording
    replaced at its path was told to "rename one of the two"."""
    if owner.size != video.size:
        was, now = f"{owner.size:,} bytes", f"{video.size:,} bytes"
    else:
        precision = "seconds" if owner.mtime_ns // 10**9 != video.mtime_ns // 10**9 else "microseconds"
        # with the UTC offset: an hour apart across a change to summer time, or from hosts in
        # two zones writing one folder, read the same
        was, now = (datetime.fromtimestamp(source.mtime_ns / 1e9).astimezone().isoformat(" ", precision)
                    for source in (owner, video))
        was, now = f"modified {was}", f"modified {now}, the same size"
    if owner.path == video.path:
        return f"the video at this path then ({was}), replaced since ({now}); give another --out"
    advice = " (a copy made without cp -p has a new time)" if owner.size == video.size else ""
    return f"{owner.path} ({was}), not from this video ({now}); give another --out, or rename one of the two{advice}"


def recorded_sources(out_dir: Path, parts: Path) -> dict[str, Source]:
    """The videos behind the names that still have a CSV or kept rows (``NAME.partial.csv``) in
    ``out_dir``, or files in ``parts``; a name with none is free again."""
    try:
        data = json.loads((out_dir / SOURCES).read_text(encoding="utf-8"))
        entries = data.items()
    except (OSError, ValueError, AttributeError):  # none yet, or not one of ours
        return {}
    held = _listing(parts)
    sources = {}
    for key, entry in entries:
        try:
            source = Source(str(entry["path"]), int(entry["size"]), int(entry["mtime_ns"]))
        except (TypeError, KeyError, ValueError):
            continue
        if (out_dir / f"{key}.csv").is_file() or (out_dir / f"{key}.partial.csv").is_file() or _parts_of(key, held):
            sources[key] = source
    return sources


def kept_besides(out_dir: Path, parts: Path, keys: set[str]) -> list[str]:
    """The names other than ``keys`` whose finished tasks an earlier, stopped run left in ``parts``."""
    held = _listing(parts)
    return sorted(key for key in recorded_sources(out_dir, parts) if key not in keys and _parts_of(key, held))


def record_sources(out_dir: Path, sources: dict[str, Source]) -> None:
    """Written before any task runs, so an interrupted run's chunks are claimed too."""
    write_whole(out_dir / SOURCES, json.dumps({key: source._asdict() for key, source in sorted(sources.items())},
                                              indent=2) + "\n", "batch")


def _listing(parts: Path) -> list[str]:
    try:
        return os.listdir(parts)
    except OSError:  # no chunk finished yet
        return []


def _parts_of(key: str, names: list[str]) -> list[str]:
    """The files among ``names`` (of ``_work/parts``) of output name ``key``'s own finished tasks:
    ``KEY.csv`` or a chunk's ``KEY@FIRST-LAST.csv``, their partial rows and stop marks. Not those
    of a video named ``KEY@night`` or ``KEY.v2``, which a match of the name's start took as
    its, so the advice to remove them named another video's (s68g 1, s68h 2, 3)."""
    own = re.compile(rf"{re.escape(key)}(@\d+-(\d+|end))?(\.csv|\.partial\.csv|\.stopped)")
    return sorted(name for name in names if own.fullmatch(name))
