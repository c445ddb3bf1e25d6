"""Several workers of one stage: numbering, round-robin dealing, drops, and the order put back."""
from __future__ import annotations

import multiprocessing as mp
import queue

from hypothesis import given
from hypothesis import strategies as st

from fer_pipe.messages import EndOfStream, Packet, Sequenced
from fer_pipe.ordering import Reorder
from fer_pipe.stats import StageStats
from fer_pipe.worker import Outbox, _Emitter


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


def test_a_live_emitter_keeps_out_of_what_another_source_put_in_a_shared_queue():
    """Real queues of 2 that a file source feeds too, nobody reading: the live source never takes
    out the file's frame or its end of stream to make room; it drops its own new item, and the
    next item it sends names the numbers it dropped, so the reordering waits for none of them."""
    ctx = mp.get_context("spawn")
    queues = [ctx.Queue(2), ctx.Queue(2)]
    queues[0].put(Sequenced("file>detector", 0, [packet(100)]))
    queues[0].put(EndOfStream("file"))
    stats = StageStats("camera")
    emitter = _Emitter([Outbox(queues, "camera>detector", shared=True)], live=True, stats=stats)
    emitter.emit(packet(i) for i in range(6))
    first, second = queues[0].get(timeout=1), queues[0].get(timeout=1)
    assert first.key == "file>detector" and second == EndOfStream("file")
    sent = [queues[1].get(timeout=1), queues[1].get(timeout=1)]
    assert [(s.number, s.skipped) for s in sent] == [(1, (0,)), (3, (2,))]
    assert stats.dropped == 4  # 0, 2 and 4 found queue 0 full; 5 found queue 1 full
    reorder = Reorder()
    assert [p.index for s in sent for p in reorder.add(s)] == [1, 3]


def test_round_robin_dealing_and_a_live_sources_drops_leave_nothing_waiting():
    """Real queues: a live emitter deals 20 packets to 2 workers' queues of 3 that nobody reads;
    it drops the oldest each time one is full, and what is left still comes out in order."""
    ctx = mp.get_context("spawn")
    queues = [ctx.Queue(3), ctx.Queue(3)]
    stats = StageStats("source")
    emitter = _Emitter([Outbox(queues, "source>detector")], live=True, stats=stats)
    emitter.emit(packet(i) for i in range(20))
    items = []
    for worker, q in enumerate(queues):
        while True:
            try:
                item = q.get(timeout=1)
            except queue.Empty:
                break
            assert item.number % 2 == worker
            items.append(item)
    assert len(items) == 6 and stats.dropped == 14
    reorder = Reorder()
    out = [p.index for item in sorted(items, key=lambda i: -i.number) for p in reorder.add(item)]
    assert out == sorted(i.number for i in items)
    assert out[-1] == 19
