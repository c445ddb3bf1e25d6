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

    def add(self, item: Sequenced) -> list[Packet]:
        """Take one item; return the packets now in order (maybe none, maybe several items' worth)."""
        self._held[item.key][item.number] = item.packets
        self._skipped[item.key].update(item.skipped)
        return self._release(item.key)

    def _release(self, key: str) -> list[Packet]:
        held, skipped = self._held[key], self._skipped[key]
        ready: list[Packet] = []
        number = self._next[key]
        while True:
            if number in held:
                ready.extend(held.pop(number))
            elif number in skipped:
                skipped.discard(number)
            else:
                break
            number += 1
        self._next[key] = number
        return ready
