"""The sending side of a stage process: its queues into each consumer, and what it does when
they are full (a live source drops its oldest item) or an item cannot be sent."""
from __future__ import annotations

import multiprocessing.queues
import queue
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .config import MAX_QUEUE
from .errors import InputError, said
from .frames import FrameRing
from .messages import EndOfStream, Packet, Sequenced, named
from .stage import StageFailure
from .stage_calls import say_skipped
from .stats import StageStats

UNSENT: list[tuple[Any, Exception]] = []
"""Items this process's queues could not send, and why, as their feeder threads found them."""


class StageQueue(multiprocessing.queues.Queue):
    """A queue between stage processes whose sender learns of an item it could not send.

    multiprocessing pickles an item in a feeder thread after ``put`` returned; one that does
    not pickle (an open file a plug-in put in ``packet.extra``) was printed there as a bare
    traceback and dropped: a frame missing from the CSV, and exit 0. The thread ends there,
    unless the sender skips such a frame (``skips``, set in the sending process): it went on
    to send the frames put after it, which the sink wrote before the sender found the failure,
    around a hole (rows of frames 0 to 19, 21 and 22).
    """

    skips = False

    def _on_queue_feeder_error(self, e: Exception, obj: object) -> None:
        UNSENT.append((obj, e))
        if not (self.skips and _skippable(obj)):
            raise SystemExit  # ends the feeder thread, which says nothing of it


def _skippable(item: object) -> bool:
    """Whether ``on_error: skip`` skips an item that could not be sent: a frame's packet. A
    numbered item (for a stage with several workers) is not: the stage that puts the numbers
    back in order would wait for it. Nor is an outage packet: ``on_error: skip`` is about
    frames, and it was counted as a skipped one, as a failing ``outage`` hook fails the stage."""
    return isinstance(item, Packet) and not item.outage


def not_sent(exc: Exception) -> str:
    """A packet that cannot go to the next stage, as both engines say it (each pickles what a
    stage hands on: the runner's queues, and ``run_graph`` for each branch)."""
    return f"cannot pass the packet on: {said(exc)} (what a stage puts in packet.extra or a face's extra must pickle)"


@dataclass
class Outbox:
    """This process's queues into one consumer stage: one, or one per worker when it runs several.

    Nobody else puts into them, so a live sender may take its oldest item out of a full one.
    ``key`` names the numbering of what this sender deals to a consumer with several workers.
    ``drop_oldest``: so does any sender into it, because it feeds a sink that live sources alone
    reach: a sink that falls behind (a window on a frozen display) then loses frames of its own,
    where it held up the stage feeding it and so its sibling sinks (the CSV stopped with the
    window).
    """

    queues: list[Any]
    key: str
    drop_oldest: bool = False


def _first_time(seen: dict[tuple[str, int], None], key: tuple[str, int], limit: int) -> bool:
    """Whether ``key`` is new to ``seen``, a memory of the last ``limit`` keys (a dict keeps their order)."""
    if key in seen:
        return False
    seen[key] = None
    if len(seen) > limit:
        del seen[next(iter(seen))]
    return True


class Emitter:
    """Puts packets on every consumer's queue: blocking for finite sources; for live ones,
    dropping the oldest item of a full queue.

    A consumer with several workers gets each packet numbered, in the queue of worker
    ``number % workers``: dealing round-robin into bounded queues keeps the fastest worker
    within a queue's length of the slowest, which bounds what the reordering must hold.
    """

    def __init__(self, outboxes: list[Outbox], live: bool, stats: StageStats, skip_as: str | None = None,
                 ring: FrameRing | None = None) -> None:
        """``skip_as``: the stage's name where its config says ``on_error: skip``. ``ring``: where a
        picture a stage made (``packet.image`` an array: a blurred copy of its frame) is put, so
        that a ``FrameRef`` crosses the queues: pickled, it crossed once per consumer, and a
        1080p frame into two sinks took a pipeline from 220 to 45 frames a second (s66a 3)."""
        self.outboxes = outboxes
        self.ring = ring
        self.live = live
        self.stats = stats
        self.skip_as = skip_as
        self._unsent: dict[tuple[str, int], None] = {}  # packets counted skipped lately, oldest first
        self._numbers = [0] * len(outboxes)
        self._dropped: dict[tuple[str, int], None] = {}  # the frames counted dropped lately, oldest first
        self._behind: set[str] = set()  # the outboxes into sinks that have dropped, said once each
        self._owed: dict[tuple[str, str], Sequenced] = {}
        """Per (outbox, numbering): the numbers (and a stop) of answers dropped from a full queue
        where the item put in their place was of another numbering (a worker that answers for
        two sources): passed on with the next answer of theirs, or at the end. Handed to the
        other numbering's item, they made its consumer wait for ever on the first: 170 frames
        of 280 neither sent nor counted, exit 0."""
        # a frame leaves every queue within a queue's length of newer frames put in that queue;
        # a consumer with N workers gets every Nth frame in each of its queues
        self._remember = MAX_QUEUE * max((len(box.queues) for box in outboxes), default=1)
        for box in outboxes:
            for q in box.queues:
                q.skips = skip_as is not None

    def check_sent(self) -> None:
        """What the queues' feeder threads could not send: a StageFailure naming the first
        packet, or, with ``on_error: skip``, each one ``_skippable`` skipped and said as a packet
        that raised is."""
        while UNSENT:
            item, exc = UNSENT.pop(0)
            if self.skip_as is None or not _skippable(item):
                packets = item.packets if isinstance(item, Sequenced) else [item] if isinstance(item, Packet) else []
                where = f"on {named(packets[0])}: " if packets else ""
                raise StageFailure(where + not_sent(exc))
            if _first_time(self._unsent, (item.source, item.index), self._remember):  # not once per consumer
                self.stats.skipped += 1
                say_skipped(self.skip_as, item, exc, self.stats.skipped)

    def emit(self, packets: Iterable[Packet]) -> None:
        self.check_sent()
        for packet in packets:
            self._in_ring(packet)
            for i, box in enumerate(self.outboxes):
                if len(box.queues) == 1:
                    self._put(box, box.queues[0], packet)
                else:
                    number = self._numbers[i]
                    self._numbers[i] = number + 1
                    self._put(box, box.queues[number % len(box.queues)], Sequenced(box.key, number, [packet]))

    def emit_sequenced(self, item: Sequenced) -> None:
        """A worker's answer to one numbered item: passed on with its number, to be put in order,
        its numbering named for the way it came too. Two branches with workers that a frame
        took both of (c1 and c2 after one detector) answered under one name, and the stage
        where they met put both answers of a number in one place: one was lost, and 60 to 69
        rows of 80 were written, out of order, exit 0."""
        self.check_sent()
        for packet in item.packets:
            self._in_ring(packet)
        for box in self.outboxes:
            self._put(box, box.queues[item.number % len(box.queues)], replace(item, key=f"{item.key}|{box.key}"))

    def _in_ring(self, packet: Packet) -> None:
        """``packet``'s picture into the ring; where /dev/shm (or the memory limit) has no room
        for another slot, this picture and the rest go pickled, as they did before there was a
        ring, slower, said once: a run that fitted then must not fail now (s66d 2)."""
        if self.ring is None or not isinstance(packet.image, np.ndarray):
            return
        try:
            packet.image = self.ring.put(packet.image)
        except InputError as exc:
            self.ring = None
            print(f"fer-pipe: stage {self.stats.name!r}: its pictures go on pickled, a copy for each stage after "
                  f"it, slower: {exc}", file=sys.stderr, flush=True)

    def _put(self, outbox: Outbox, box: Any, item: Packet | Sequenced) -> None:
        if (self.live or outbox.drop_oldest) and not _ends_a_stream(item):
            self._put_dropping_oldest(outbox, box, item)
        else:
            self.check_sent()  # a queue whose feeder thread has ended would wait for room for ever
            box.put(item)

    def _put_dropping_oldest(self, outbox: Outbox, box: Any, item: Packet | Sequenced) -> None:
        if self._owed and isinstance(item, Sequenced) and (outbox.key, item.key) in self._owed:
            item = _with_dropped(item, self._owed.pop((outbox.key, item.key)))
        while True:
            try:
                box.put_nowait(item)
                return
            except queue.Full:
                try:
                    dropped = box.get_nowait()
                except queue.Empty:
                    self.check_sent()  # nor for ever, where it has ended
                    time.sleep(0.0005)  # the queue's feeder thread has not flushed yet
                    continue
                if not self.live and outbox.key not in self._behind:  # a sink fell behind: say which
                    self._behind.add(outbox.key)
                    sender, _, sink = outbox.key.partition(">")
                    print(f"fer-pipe: sink {sink!r} fell behind the live source; the oldest frames waiting for "
                          f"it are dropped (counted in the dropped column of {sender!r})", file=sys.stderr)
                if isinstance(dropped, Sequenced):  # nobody must wait for its number; a stop it held still holds
                    if isinstance(item, Sequenced) and item.key == dropped.key:
                        item = _with_dropped(item, dropped)
                    else:
                        owed = self._owed.get((outbox.key, dropped.key))
                        self._owed[(outbox.key, dropped.key)] = (
                            replace(dropped, packets=[]) if owed is None else _with_dropped(owed, dropped))
                    for packet in dropped.packets:
                        self._count_drop(packet)
                else:
                    self._count_drop(dropped)

    def _count_drop(self, packet: Packet) -> None:
        """A frame dropped from several consumers' queues is one frame dropped; a live source's
        outage packet, numbered as the frame before it, is no frame."""
        if not packet.outage and _first_time(self._dropped, (packet.source, packet.index), self._remember):
            self.stats.dropped += 1

    def end(self) -> None:
        """Put the end of stream, then wait until every item is sent (the consumers read on to
        that end), so that one that could not be is a failure before the stage says it is done.
        Numbers still owed go first, as an answer with no packet."""
        self.check_sent()
        for box in self.outboxes:
            for (key, _), owed in list(self._owed.items()):
                if key == box.key:
                    box.queues[owed.number % len(box.queues)].put(owed)
            for q in box.queues:
                q.put(EndOfStream())
        for box in self.outboxes:
            for q in box.queues:
                q.close()
                q.join_thread()
        self.check_sent()


def _ends_a_stream(item: Packet | Sequenced) -> bool:
    """Whether ``item`` is (or holds) a source's end packet (``Packet.ended``): put waiting for
    room, as the end of stream after it is, not in place of a frame already read (a live
    source's end dropped one or two of its last frames)."""
    return item.ended if isinstance(item, Packet) else any(p.ended for p in item.packets)


def _with_dropped(item: Sequenced, dropped: Sequenced) -> Sequenced:
    """``item`` carrying the number, skips and stop of ``dropped``, an item of its numbering
    dropped in its place: so that the consumer neither waits for that number nor misses the stop."""
    stops = [n for n in (item.stopped_at, dropped.stopped_at) if n is not None]
    return replace(item, skipped=(*item.skipped, *dropped.skipped, dropped.number), stopped_at=min(stops, default=None))
