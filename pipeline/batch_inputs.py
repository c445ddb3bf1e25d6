"""Which videos a ``fer-pipe batch`` reads: folders given as inputs replaced by their videos,
each input checked to be a video file before Ray starts, and every group of inputs that would
write one CSV refused at once; and how a line names an input."""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import InputError, printable
from .input_files import file_problem
from .redaction import redact, redact_urls

VIDEO_SUFFIXES = (".264", ".265", ".3g2", ".3gp", ".asf", ".avi", ".divx", ".f4v", ".flv", ".h264", ".h265", ".hevc",
                  ".m2ts", ".m2v", ".m4v", ".mjpeg", ".mjpg", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".mts", ".mxf",
                  ".ogv", ".ts", ".vob", ".webm", ".wmv", ".y4m")
"""What a folder given as an input contributes: its files with these suffixes (in any case),
but for hidden ones. A folder of AVCHD or Blu-ray ``.m2ts`` copies, or a Raspberry Pi camera's
raw ``.h264`` streams, gave none of them and ended complete: a suffix left out is a video
skipped in silence, so the list holds what OpenCV's FFmpeg reads. Not raw DV (``.dv``): OpenCV
gives it 60,000 fps and 2,400 times its frames, so a good file failed as cut short (s64d 1)."""


def expand_folders(inputs: Sequence[str], out_dir: Path) -> list[str]:
    """Each folder replaced by the videos directly in it, by name; files stay as given; the
    results folder left out where it holds no videos (``videos/* --out videos/results`` given
    again took it for an input with no videos: exit 2 and no _SUCCESS on a folder that was done),
    but not where it is the videos' own folder (``batch videos --out videos``).

    ``batch videos/`` is what people type, and a shell glob of a large folder can exceed the
    argument limit. A folder with no videos stays in the list, so that it is reported by name;
    so does each entry named as a video that is no file (a link to a share that is not mounted),
    which was left out in silence, and the folder then marked complete without it.
    """
    # one file given twice (b/clip.mp4, ./b/clip.mp4) is one input; under two names (a link), two
    expanded: dict[tuple[str, str], str] = {}
    for item in inputs:
        folder = Path(item)
        # a hidden file is none of the folder's videos: a Mac's ._clip.mp4 beside each clip.mp4
        # failed every batch of a folder copied from one, and every rerun
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []
        videos = [str(p) for p in entries if p.suffix.lower() in VIDEO_SUFFIXES]
        if not videos and folder.is_dir() and os.path.realpath(folder) == os.path.realpath(out_dir):
            continue
        _say_left_alone(item, [p for p in entries if p.suffix.lower() not in VIDEO_SUFFIXES], out_dir)
        for video in videos or [item]:
            expanded.setdefault((os.path.realpath(video), Path(video).name), video)
    return list(expanded.values())


def _say_left_alone(folder: str, others: list[Path], out_dir: Path) -> None:
    """Said once per folder: its files of no video suffix and its subfolders, which a batch does
    not read. A folder of CCTV exports with one camera's .asf among them, or a day's recordings
    in subfolders, ended complete with those never named (s64a 3)."""
    results = os.path.realpath(out_dir)
    subfolders = [p.name for p in others if p.is_dir() and os.path.realpath(p) != results]
    files = [p.name for p in others if not p.is_dir()]
    parts = [f"{len(names)} {what if len(names) == 1 else whats} ({', '.join(names[:3])}{', ...' if names[3:] else ''})"
             for names, what, whats in ((files, "file of no video suffix", "files of no video suffix"),
                                        (subfolders, "subfolder, not searched", "subfolders, not searched")) if names]
    if parts:
        say(f"fer-pipe: batch: folder {folder}: left alone: {'; '.join(parts)}")


def not_a_video_file(item: str) -> str | None:
    """Why input ``item`` is no video file to read, or None."""
    problem = file_problem(item, "fer-pipe run's rtsp source")  # a batch reads files; a stream has no end
    if problem == "is a folder":
        if Path(item).suffix.lower() in VIDEO_SUFFIXES:
            return f"video {item}: a folder, not a file"
        return f"folder {item}: no videos in it ({', '.join(VIDEO_SUFFIXES)})"
    if not problem and _empty(item):  # said by the video source too, but only once Ray had started (7 s)
        problem = "the file is empty"
    return problem and f"video {shown(item)}: {problem}"


def _empty(item: str) -> bool:
    """Whether file ``item`` holds nothing; one gone since it was looked at is its task's to say."""
    try:
        return os.stat(item).st_size == 0
    except OSError:
        return False


def stems(inputs: Sequence[str]) -> dict[str, str]:
    """Each input by the stem its CSV is named after. Every group of inputs that would write one
    CSV, and every input whose CSV would be another's partial rows, is refused in one line,
    before any input is opened: said a pair at a time, a folder of a camera's .h264 and .h265
    recordings took a run per pair to learn them all, and three of one name were told to
    rename one of each pair, which left two."""
    by_stem: dict[str, list[str]] = {}
    for item in inputs:
        by_stem.setdefault(Path(item).stem, []).append(item)
    clashes = [f"{' and '.join(items)} would both write {key}.csv" if len(items) == 2 else
               f"{', '.join(items[:-1])} and {items[-1]} would all write {key}.csv"
               for key, items in by_stem.items() if len(items) > 1]
    clashes += [f"{by_stem[key.removesuffix('.partial')][0]} and {items[0]}: the second's CSV, {key}.csv, is where "
                "the first's rows would be kept if it turned out damaged"
                for key, items in by_stem.items() if key.endswith(".partial") and key.removesuffix(".partial") in by_stem]
    if clashes:
        raise InputError(f"inputs {'; '.join(clashes)}; rename all but one of each")
    return {key: items[0] for key, items in by_stem.items()}


def shown(item: str) -> str:
    """An input as lines name it: a stream's URL without its password, which the lines' own
    redaction cannot find whole where it holds a space."""
    return redact(item) if "://" in item else item


def say(line: str) -> None:
    """A line about an input, which is named as given: a stream's URL with its password, or a
    file name holding a line break or an escape code."""
    print(printable(redact_urls(line)), file=sys.stderr)
