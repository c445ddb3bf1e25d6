"""Number arguments of the sub-commands, checked by argparse itself.

A count of -1 or a negative learning rate would otherwise reach code that fails late, with a
traceback, or silently does something else (a negative ``--limit`` sampled nothing useful, a
negative ``--precision`` turned every event into a "malformed" one). Through these types a bad
value is argparse's usage line and one error line naming the option, exit 2, before anything runs.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable


def whole(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def number(minimum: float) -> Callable[[str], float]:
    """An argparse type: a finite number no smaller than ``minimum``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not minimum <= value < float("inf"):
            raise argparse.ArgumentTypeError(f"must be a finite number of at least {minimum:g}, got {text}")
        return value
    return parse
