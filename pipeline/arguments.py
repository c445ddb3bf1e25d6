"""Number and endpoint arguments of the sub-commands, checked by argparse itself.

A count of -1 or a negative learning rate would otherwise reach code that fails late, with a
traceback, or silently does something else (a negative ``--limit`` sampled nothing useful, a
negative ``--precision`` turned every event into a "malformed" one). Through these types a bad
value is argparse's usage line and one error line naming the option, exit 2, before anything runs.
"""
from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from typing import Any

from .endpoints import check_connectable, check_form
from .errors import unmakeable_name


def whole(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than ``minimum`` (nor larger than ``maximum``)."""
    return _at_least(int, "a whole number", minimum, maximum)


def number(minimum: float, maximum: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite number no smaller than ``minimum`` (nor larger than ``maximum``)."""
    return _at_least(float, "a finite number", minimum, maximum)


def home(text: str) -> str:
    """An argparse type: a file or folder, where ``~`` leads to the home folder as in a config's
    file params. The shell expands only a word's leading ``~``: ``--out=~/x`` or a quoted
    ``'~/x'`` came as typed, and batch made a folder ``./~/x`` while its CSVs, params made from
    it, went under the home folder and failed."""
    return os.path.expanduser(text)


def made_path(text: str) -> str:
    """An argparse type: a file or folder fer-pipe makes, as ``home`` reads it, refused where it
    holds a control character (``errors.unmakeable_name``): a batch line from a script saved
    on Windows put the CSVs in a folder named ``res\\r``, which nobody finds, exit 0."""
    problem = unmakeable_name(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{problem} (a script saved on Windows ends each line with \\r)")
    return home(text)


def endpoint(text: str) -> str:
    """An argparse type: a ZeroMQ endpoint, ``tcp://HOST:PORT`` or ``ipc://PATH``.

    ZeroMQ's own refusal of ``localhost:5556`` is "Invalid argument", which names neither the
    form it wants nor the option.
    """
    try:
        return check_form(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def peer_endpoint(text: str) -> str:
    """An argparse type: an endpoint to connect to (``endpoint``, and not ``tcp://*:PORT``)."""
    try:
        return check_connectable(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _at_least(kind: type, noun: str, minimum: float, maximum: float | None = None) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if maximum is not None and not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be {noun} from {minimum:g} to {maximum:g}, got {text}")
        if not minimum <= value < math.inf:
            raise argparse.ArgumentTypeError(f"must be {noun} of at least {minimum:g}, got {text}")
        return value
    return parse
