"""File names as OpenCV takes them.

Linux allows any bytes in a name, and Python holds those that are not UTF-8 (a Latin-1
``café.mp4`` from an old share or zip) with surrogate escapes. OpenCV's Python bindings crash
the whole process (SIGSEGV) on such a ``str``: a run died with no line, and a batch lost its
driver while planning. Every name handed to OpenCV goes through here first.
"""
from __future__ import annotations

from pathlib import Path

from .errors import InputError, as_utf8


def opencv_name(path: str | Path, what: str, reader: str = "OpenCV") -> str:
    """``path`` as a ``str`` for OpenCV, or InputError naming it (with its odd bytes escaped);
    LiteRT's bindings (``reader``) take names the same way.

    The bindings encode a ``str`` as UTF-8 whatever the locale, so the name is the file's bytes
    read as UTF-8: under a Latin-1 or EUC-JP locale Python's own ``str`` named another file, and a
    video writer wrote there, leaving the named file empty. A relative name whose first
    part holds a colon (``2026-12-05T10:30:00.mp4``, ``cam1:lobby.mp4``) is led by ``./``, or
    FFmpeg takes what comes before the colon for a protocol and opens nothing."""
    name = as_utf8(path)
    if name is None:
        shown = str(path).encode("utf-8", "backslashreplace").decode("utf-8")
        raise InputError(f"{what} {shown}: its name is not valid UTF-8, which {reader} cannot open; rename it")
    return f"./{name}" if ":" in name.split("/", 1)[0] else name
