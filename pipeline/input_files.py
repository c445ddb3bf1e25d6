"""Why a name given as a file to read names none, said as the user sees it: a name that ``ls``
shows is a link (to what), and a stream's URL is no file, where "no such file" of either sent
the user to look for a file that is there, or was never meant."""
from __future__ import annotations

import errno
import os
import stat


def file_problem(name: str, streams_reader: str = "") -> str | None:
    """Why ``name`` is no regular file to read, or None: each loader (a video, a model, a cascade,
    a key) says it in these words, before its reader meets it (a FIFO held OpenCV's open for ever,
    and "no such file" of a broken link sent the user to a file that ``ls`` shows)."""
    try:
        mode = os.stat(name).st_mode
    except OSError:
        return why_no_file(name, streams_reader)
    if stat.S_ISDIR(mode):
        return "is a folder"
    return None if stat.S_ISREG(mode) else "not a regular file"


def why_no_file(name: str, streams_reader: str = "") -> str:
    """The reason ``name``, which names no file to read, names none; ``streams_reader`` is what
    reads a stream instead (``the rtsp source``), where there is one."""
    try:
        os.stat(name)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a link that loops"
        if exc.errno == errno.EACCES:  # a file that root's ls shows, behind a folder the run's user may not enter
            return "a folder on its path cannot be entered by this user (Permission denied)"
    if os.path.islink(name):
        return f"a broken link (to {os.readlink(name)})"
    if "://" in name and streams_reader:
        return f"a stream's URL, not a file ({streams_reader} reads streams)"
    if not os.path.isabs(name):  # read from the config's folder, the user took it
        return f"no such file in {os.getcwd()}, the folder fer-pipe runs in"
    return "no such file"
