"""What a sink tells the network of a live source's outages: ``source_down`` once per outage and
again about every ``every_s`` while it lasts, ``source_up`` with the source's next frame (the
events of ``fer_pipe.events.source_event``). The ``zmq`` and ``push`` sinks, and the API's hidden
sink where asked, say them alike."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .events import source_event
from .messages import Packet


@dataclass
class _Outage:
    """A source said down, until its next frame."""

    since: float  # its first outage packet's time: when it was first said down
    said_at: float  # monotonic: the last source_down said
    seen_at: float  # monotonic: its last outage packet


class OutageNotices:
    """The outage events due, per source; the sink sends them.

    The repeats are what a subscriber that connects during an outage first hears, and say that
    the run is alive. Outage packets come about every second, so a repeat is due at the one
    nearest ``every_s``: one a millisecond short of it skipped a whole beat."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s  # 0: once per outage
        self._down: dict[str, _Outage] = {}

    def on_outage(self, packet: Packet) -> dict[str, Any] | None:
        """The ``source_down`` event due for this outage packet, if one is."""
        now = time.monotonic()
        down = self._down.get(packet.source)
        if down is None:
            down = self._down[packet.source] = _Outage(packet.timestamp, now, now)
        else:
            gap, down.seen_at = now - down.seen_at, now
            if not self.every_s or now - down.said_at + gap / 2 < self.every_s:
                return None
            down.said_at = now
        return source_event("source_down", packet, down.since)

    def on_frame(self, packet: Packet) -> dict[str, Any] | None:
        """The ``source_up`` event due with this frame: its source was said down."""
        if not self._down or packet.source not in self._down:
            return None
        return source_event("source_up", packet, self._down.pop(packet.source).since)
