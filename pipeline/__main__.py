"""``python -m fer_pipe``: the ``fer-pipe`` command where only an interpreter is at hand (a venv
not activated, a cron line, a container's ``python -m``), through the same entry point."""
import sys

from .entry import main

if __name__ == "__main__":  # importing it (pydoc, a tool listing modules) runs nothing
    sys.exit(main())
