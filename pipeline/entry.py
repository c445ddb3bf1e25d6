"""The ``fer-pipe`` command's entry point, which imports the command itself: a Ctrl-C in that
first tenth of a second was a KeyboardInterrupt traceback of 14 to 62 lines and exit 1,
where one in the rest of its loading exits 130 with nothing printed (``cli.main``)."""
from __future__ import annotations


def main() -> int:
    try:
        from .cli import main as command
    except KeyboardInterrupt:
        return 130
    return command()
