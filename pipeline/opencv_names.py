"""File names as OpenCV takes them.

Linux allows any bytes in a name, and Python holds those that are not UTF-8 (a Latin-1
``café.mp4`` from an old share or zip) with surrogate escapes. OpenCV's Python bindings crash
the whole process (SIGSEGV) on such a ``str``: a run died with no line, and a batch lost its
driver while planning. Every name handed to OpenCV goes through here first.
"""
from __future__ import annotations

from pathlib import Path

from .errors import InputError


def utf8_name(path: str | Path) -> bool:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def opencv_name(path: str | Path, what: str) -> str:
    """``path`` as a ``str`` for OpenCV, or InputError naming it (with its odd bytes escaped)."""
    if not utf8_name(path):
        shown = str(path).encode("utf-8", "backslashreplace").decode("utf-8")
        raise InputError(f"{what} {shown}: its name is not valid UTF-8, which OpenCV cannot open; rename it")
    return str(path)
