"""The lines a reader of a socket anyone may write to (``collect``, ``subscribe``) says for the
events it skips as malformed: a peer sending 300 events with a 1 MB field made 300 lines of a
million characters in 4 s, which filled the journal, and its rate limit then dropped the
collector's own gap and restart lines (s66b 3). A line quotes at most ``CLIPPED`` characters
of the event's problem, and lines come no oftener than every ``every_s``, counting the events
skipped in between."""
from __future__ import annotations

import time
from collections.abc import Callable

CLIPPED = 200
"""The characters of a problem said (a problem quotes what the peer sent)."""


def clipped(text: str, limit: int = CLIPPED) -> str:
    """``text``, cut to ``limit`` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class MalformedLines:
    """Says the first skipped event's problem at once, then at most one line every ``every_s``
    with how many were skipped since; ``close`` says those not yet said."""

    def __init__(self, say: Callable[[str], None], every_s: float = 10.0) -> None:
        self._say, self.every_s = say, every_s
        self._said_at: float | None = None
        self._unsaid = 0
        self._last = ""

    def skipped(self, exc: BaseException) -> None:
        """One more event skipped, for ``exc``."""
        self._unsaid += 1
        self._last = clipped(f"{type(exc).__name__}: {exc}")
        self.flush()

    def flush(self, final: bool = False) -> None:
        """The line for the events skipped since the last, if one is due (``final``: if any were)."""
        now = time.monotonic()
        if not self._unsaid or not final and self._said_at is not None and now - self._said_at < self.every_s:
            return
        if self._said_at is None and self._unsaid == 1:
            self._say(f"skipped a malformed event: {self._last}")
        else:
            self._say(f"skipped {self._unsaid} malformed event(s) since the last such line, the last: {self._last}")
        self._said_at, self._unsaid = now, 0
