"""Putting the numbered outputs of a stage's several workers back in the order they were sent.

Why the consumer does it and not the workers: each worker sees only every Nth packet and
finishes them at its own pace, so only the stage after them sees all the numbers. Items are
held until every lower number has arrived or is known to be skipped; the held items are
bounded, because the feeder deals round-robin into bounded queues and so cannot run more than
a queue's length ahead of the slowest worker.
"""
from __future__ import annotations

from collections import defaultdict

from .messages import Packet, Sequenced


class Reorder:
    """Releases ``Sequenced`` items' packets in number order, separately for each numbering."""

    def __init__(self) -> None:
        self._next: defaultdict[str, int] = defaultdict(int)
        self._held: defaultdict[str, dict[int, list[Packet]]] = defaultdict(dict)
        self._skipped: defaultdict[str, set[int]] = defaultdict(set)
        self._stopped: defaultdict[str, set[int]] = defaultdict(set)
        self._cut: set[str] = set()
        self.discarded = 0
        """Packets answered after a worker ended the run: not passed on, and counted here for
        the consumer's ``dropped``. The other workers went on with the numbers dealt them, and
        a run stopped at frame 30 wrote frames 31, 33, ... 45 after it, from one worker only."""

    def add(self, item: Sequenced) -> list[Packet]:
        """Take one item; return the packets now in order (maybe none, maybe several items' worth)."""
        if item.key in self._cut:
            self.discarded += _frames(item.packets)
            return []
        self._held[item.key][item.number] = item.packets
        self._skipped[item.key].update(item.skipped)
        if item.stopped_at is not None:
            self._stopped[item.key].add(item.stopped_at)
        return self._release(item.key)

    def _release(self, key: str) -> list[Packet]:
        held, skipped, stopped = self._held[key], self._skipped[key], self._stopped[key]
        ready: list[Packet] = []
        number = self._next[key]
        while True:
            if number in held:
                ready.extend(held.pop(number))
            elif number in skipped:
                skipped.discard(number)
            else:
                break
            if number in stopped:
                self._cut.add(key)
                self.discarded += sum(map(_frames, held.values()))
                held.clear()
                break
            number += 1
        self._next[key] = number
        return ready

    def flush(self) -> list[Packet]:
        """At the end of the stream, what is still held, in order: a number it waited for will not
        come now (an answer lost on the way), and the frames after it were thrown away, uncounted.
        Nothing numbered after a stop is passed on."""
        ready: list[Packet] = []
        for key, held in self._held.items():
            last = min(self._stopped[key], default=None)
            for number in sorted(held):
                packets = held.pop(number)
                if last is not None and number > last:
                    self.discarded += _frames(packets)
                else:
                    ready.extend(packets)
        return ready


def _frames(packets: list[Packet]) -> int:
    """How many of ``packets`` are frames: a live source's outage packets are not counted as dropped."""
    return sum(not packet.outage for packet in packets)
