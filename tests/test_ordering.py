"""Several workers of one stage: numbering, round-robin dealing, drops, and the order put back."""
from __future__ import annotations

import multiprocessing as mp
import threading

from hypothesis import given
from hypothesis import strategies as st

from fer_pipe.messages import EndOfStream, Packet, Sequenced
from fer_pipe.ordering import Reorder
from fer_pipe.stats import StageStats
from fer_pipe.emitter import Emitter, Outbox
from fer_pipe.worker import _receive


def packet(i: int) -> Packet:
    return Packet("cam", i, i / 30)


@st.composite
def arrivals(draw):
    """Numbered items in a random arrival order; some numbers dropped and announced by a later item."""
    n = draw(st.integers(1, 40))
    dropped = draw(st.sets(st.integers(0, n - 2), max_size=n - 1)) if n > 1 else set()
    kept = [i for i in range(n) if i not in dropped]
    notices: dict[int, list[int]] = {i: [] for i in kept}
    for d in dropped:
        notices[draw(st.sampled_from([k for k in kept if k > d]))].append(d)
    items = [Sequenced("a>b", i, [packet(i)], tuple(notices[i])) for i in kept]
    return kept, draw(st.permutations(items))


@given(arrivals())
def test_packets_come_out_in_number_order_whatever_the_arrival_order(case):
    kept, items = case
    reorder = Reorder()
    out = [p.index for item in items for p in reorder.add(item)]
    assert out == kept


def test_an_item_waits_for_the_numbers_below_it_and_numberings_are_separate():
    reorder = Reorder()
    assert reorder.add(Sequenced("a>b", 1, [packet(1)])) == []
    assert [p.index for p in reorder.add(Sequenced("x>b", 0, [packet(7)]))] == [7]
    assert [p.index for p in reorder.add(Sequenced("a>b", 0, [packet(0)]))] == [0, 1]
    assert reorder.add(Sequenced("a>b", 2, [])) == []  # a worker's empty answer still counts
    assert [p.index for p in reorder.add(Sequenced("a>b", 3, [packet(3)]))] == [3]


def test_a_consumer_reads_every_producer_until_each_has_ended():
    """Real queues of 2, one per producer: a live camera that sends more than its queue holds
    drops its own oldest items, never the file's frame or end of stream in the other queue; the
    consumer takes what both send and stops after the second end of stream, not the first."""
    ctx = mp.get_context("spawn")
    camera, file = ctx.Queue(2), ctx.Queue(2)
    file.put(packet(100))
    file.put(EndOfStream())
    stats = StageStats("camera")
    emitter = Emitter([Outbox([camera], "camera>detector")], live=True, stats=stats)
    emitter.emit(packet(i) for i in range(6))
    assert stats.dropped == 4
    ending = threading.Thread(target=camera.put, args=(EndOfStream(),))
    ending.start()  # the queue is full: this end of stream waits for the consumer to make room
    received = [p.index for p in _receive([camera, file])]
    assert sorted(received) == [4, 5, 100]
    assert [i for i in received if i != 100] == [4, 5]  # one producer's items stay in its order
    ending.join(timeout=5)
    assert not ending.is_alive()


def test_round_robin_dealing_and_a_live_sources_drops_leave_nothing_waiting():
    """Real queues: a live emitter deals 20 packets to 2 workers' queues of 3 that nobody reads;
    it drops the oldest each time one is full, and what is left still comes out in order."""
    ctx = mp.get_context("spawn")
    queues = [ctx.Queue(3), ctx.Queue(3)]
    stats = StageStats("source")
    emitter = Emitter([Outbox(queues, "source>detector")], live=True, stats=stats)
    emitter.emit(packet(i) for i in range(20))
    items = []
    for worker, q in enumerate(queues):
        for _ in range(3):
            item = q.get(timeout=60)  # a hang guard: the 3 are there, at most in the feeder's pipe
            assert item.number % 2 == worker
            items.append(item)
        assert q.qsize() == 0  # put and not yet got, counted by the queue's bound: nothing more
    assert stats.dropped == 14
    reorder = Reorder()
    out = [p.index for item in sorted(items, key=lambda i: -i.number) for p in reorder.add(item)]
    assert out == sorted(i.number for i in items)
    assert out[-1] == 19
