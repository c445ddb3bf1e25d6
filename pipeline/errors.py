"""Errors that the CLI turns into one clear line, no traceback: exit code 2 for bad input or config."""
from __future__ import annotations

import codecs
import errno
import os
import re
import resource
import sys

from .redaction import redact_urls

UNUSABLE_PATH = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.EISDIR,
                 errno.ELOOP, errno.ENAMETOOLONG}
"""Errors that say the path given cannot be used (exit 2, as bad input); others, such as a full
disk, are a failure of the command (exit 1)."""

PLUGIN_BUGS = (Exception, SystemExit)
"""What a stage's or plug-in's own code may raise by mistake, to be said as its failure: a
``sys.exit`` too (in a helper, or a library that parses the command line), which ``except
Exception`` lets by, so a validator's ``sys.exit(5)`` ended ``validate`` with code 5 and no
word (s68a 1)."""


def printable(text: str) -> str:
    """``text`` with each character a terminal would act on written as its escape (``\\n``,
    ``\\x1b``): a file name with a line break split a one-line message in two, and escape codes
    in a name, or in what a network peer sent, acted on the terminal of whoever read the log."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def one_line(text: str) -> str:
    """``text`` on one line, as every failure line is: its lines joined with `` / ``."""
    return " / ".join(line.strip() for line in text.splitlines() if line.strip())


def said(exc: BaseException) -> str:
    """``ValueError: bad value``, on one line, with any URL's password masked and anything a
    terminal would act on escaped: some lines holding it are printed as they are (``on_error:
    skip``'s), and a camera's error quotes its URL. An empty message (``raise KeyError()``) is the
    type alone. A message that cannot be made (a library's ``__str__`` that fails) is said so:
    unguarded, that failure replaced the line about the stage's, and a stage with ``on_error:
    skip`` failed the run."""
    try:
        text = printable(redact_urls(one_line(str(exc))))
    except Exception as inner:  # its type alone: the inner one's message may fail as well
        return f"{type(exc).__name__} (its message could not be made: {type(inner).__name__})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
"""Unicode's categories Cc, Zl and Zp, all of them: a tenth of the time of asking unicodedata of
each character, which the collector did of two ids in every event."""


def control_character(text: str) -> str | None:
    """The first control character or line separator in ``text``, as its escape (``\\r``), or
    None. Such a character in a name someone typed is an accident (a Windows path in
    double-quoted YAML, where ``\\n`` and ``\\e`` are escapes; the carriage return a script or
    ``.env`` file saved on Windows leaves); spaces of every kind are not."""
    odd = _CONTROL.search(text)
    return None if odd is None else odd[0].encode("unicode_escape").decode("ascii")


def as_utf8(text: str | os.PathLike[str]) -> str | None:
    """``text``'s bytes (as the file system holds a name, or the command line gave them) read as
    UTF-8, which is Python's own ``str`` of them only where the locale is UTF-8; None where they
    are not UTF-8, or the locale cannot write ``text`` (東 under Latin-1)."""
    try:
        return os.fsencode(text).decode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError):
        return None


def not_text(value: str) -> str | None:
    """Why ``value`` is no text fer-pipe can write, or None: bytes of the command line, the
    environment or a folder that the locale could not decode are held by Python as lone
    surrogates, and an id or topic so given under an ASCII locale passed the checks, then failed
    the CSV or event at the first frame (s67b 2, 3)."""
    try:
        value.encode("utf-8")
        return None
    except UnicodeEncodeError:
        pass
    if codecs.lookup(sys.getfilesystemencoding()).name == "utf-8" or as_utf8(value) is None:
        return "is not UTF-8"  # bytes that are not, or a peer's JSON escapes where the locale is UTF-8
    return f"is UTF-8, which this system's encoding ({sys.getfilesystemencoding()}) is not; see LANG"


def unmakeable_name(path: str) -> str | None:
    """Why ``path`` is no name for fer-pipe to make a file or folder under (it holds a control
    character), or None; each caller adds where such a character comes from in its input. The
    name is judged as the file system will hold it: a UTF-8 name read under a Latin-1 locale
    (文.csv) holds bytes 0x80-0x9F, which are controls there, and was refused (s67b 5)."""
    odd = control_character(as_utf8(path) or path)  # a name that is not UTF-8 as Python holds it
    return None if odd is None else f"the path holds a control character ({odd}), which no name fer-pipe makes may hold"


class UserError(Exception):
    """Something the user gave is wrong: printed as one line, exit code 2, no traceback."""

    exit_code = 2


class ConfigError(UserError):
    """A config file, field or override is wrong; the message names the file, line, stage and field."""


class InputError(UserError):
    """An input (video, folder, camera, model, output path, socket) cannot be used."""


class Truncated(InputError):
    """A video whose decoding stopped before its end, with no damage decoded past: what was read
    is all one run of it reads too (``fer-pipe batch`` keeps a chunked one's rows as they are)."""


class OutputError(UserError):
    """An output stopped taking writes mid-run (a full disk): one line like the others, but exit
    code 1, as when a run's sink fails, since nothing the user gave was wrong."""

    exit_code = 1


def files_limit_hint(exc: BaseException) -> str:
    """For a process that ran out of file descriptors, the limit and how to raise it: the bare
    "Too many open files" named neither."""
    if not isinstance(exc, OSError) or exc.errno not in (errno.EMFILE, errno.ENFILE):
        return ""
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return f"; this process may open {limit:,} files: raise the limit (ulimit -n, systemd's LimitNOFILE=)"
