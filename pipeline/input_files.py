"""Why a name given as a file to read names none, said as the user sees it: a name that ``ls``
shows is a link (to what), and a stream's URL is no file, where "no such file" of either sent
the user to look for a file that is there, or was never meant."""
from __future__ import annotations

import errno
import os


def why_no_file(name: str, streams_reader: str) -> str:
    """The reason ``name``, which names no file to read, names none; ``streams_reader`` is what
    reads a stream instead (``the rtsp source``)."""
    try:
        os.stat(name)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a link that loops"
    if os.path.islink(name):
        return f"a broken link (to {os.readlink(name)})"
    if "://" in name:
        return f"a stream's URL, not a file ({streams_reader} reads streams)"
    if not os.path.isabs(name):  # read from the config's folder, the user took it
        return f"no such file in {os.getcwd()}, the folder fer-pipe runs in"
    return "no such file"
