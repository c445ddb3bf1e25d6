"""Several workers of one stage: numbering, round-robin dealing, drops, and the order put back."""
from __future__ import annotations

import multiprocessing as mp
import threading

from hypothesis import given
from hypothesis import strategies as st

from fer_pipe.messages import EndOfStream, Packet, Sequenced, outage, stream_ended
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


@given(st.integers(5, 30), st.data())
def test_nothing_numbered_after_a_workers_stop_is_passed_on_and_what_is_dropped_is_counted(n, data):
    """A worker that ended the run (StopRun) marks its answer: the numbers after it that other
    workers still answer, before or after it arrives, are held back and counted, whatever the
    arrival order; the numbers before it come out in order."""
    cut = data.draw(st.integers(0, n - 1))
    items = [Sequenced("a>b", i, [] if i >= cut else [packet(i)], stopped_at=cut if i >= cut else None)
             if i % 2 == cut % 2
             else Sequenced("a>b", i, [packet(i)]) for i in range(n)]  # the stopping worker passes nothing on
    reorder = Reorder()
    out = [p.index for item in data.draw(st.permutations(items)) for p in reorder.add(item)]
    assert out == list(range(cut))
    assert reorder.discarded == sum(1 for i in range(cut + 1, n) if i % 2 != cut % 2)


def test_a_live_sources_outage_packets_dropped_from_a_full_queue_are_no_dropped_frames():
    """An outage packet carries the number of the frame before it: one dropped from a full live
    queue (nobody read while the camera was down) was counted as that frame dropped (s28d), and
    so was one held back after a stop."""
    ctx = mp.get_context("spawn")
    camera = ctx.Queue(1)
    stats = StageStats("camera")
    emitter = Emitter([Outbox([camera], "camera>detector")], live=True, stats=stats)
    emitter.emit([packet(5)])
    assert camera.get(timeout=60).index == 5
    emitter.emit([outage("cam", 5, 7.0), outage("cam", 5, 8.0), outage("cam", 5, 9.0)])
    assert stats.dropped == 0 and camera.get(timeout=60).timestamp == 9.0
    reorder = Reorder()
    reorder.add(Sequenced("a>b", 0, [], stopped_at=0))
    reorder.add(Sequenced("a>b", 1, [packet(1), outage("cam", 1, 2.0)]))
    assert reorder.discarded == 1


def test_a_stop_holds_where_the_answer_that_said_it_is_dropped_from_a_full_live_queue():
    """A sink behind a live source takes only the newest items: the stopping worker's answer
    was dropped there, its number passed on as skipped but not its stop, and frames after the
    stop were written (s28e). The stop now travels with the number."""
    ctx = mp.get_context("spawn")
    sink = ctx.Queue(1)
    emitter = Emitter([Outbox([sink], "detector[0]>csv")], live=True, stats=StageStats("detector[0]"))
    emitter.emit_sequenced(Sequenced("source>detector", 4, [], stopped_at=4))
    emitter.emit_sequenced(Sequenced("source>detector", 6, [], stopped_at=4))  # the first, unread, is dropped
    kept = sink.get(timeout=60)
    assert (kept.number, kept.skipped, kept.stopped_at) == (6, (4,), 4)
    reorder = Reorder()
    others = [Sequenced(kept.key, i, [packet(i)]) for i in (0, 1, 2, 3, 5, 7)]  # as the same way numbers them
    assert [p.index for item in others + [kept] for p in reorder.add(item)] == [0, 1, 2, 3]
    assert reorder.discarded == 2


def test_an_answer_dropped_in_favour_of_another_inputs_is_owed_to_its_own_numbering():
    """A worker answering for two sources into a sink that fell behind: the number of an answer
    dropped for one of the other source's went on with that one, so the consumer waited for it
    for ever in the first numbering: 170 frames of 280 neither written nor counted (s28f)."""
    ctx = mp.get_context("spawn")
    sink = ctx.Queue(1)
    stats = StageStats("detector[0]")
    emitter = Emitter([Outbox([sink], "detector>csv")], live=True, stats=stats)
    got = []

    def answer(key: str, number: int) -> None:
        emitter.emit_sequenced(Sequenced(key, number, [Packet(key, number, number / 30)]))
        got.append(sink.get(timeout=60))

    emitter.emit_sequenced(Sequenced("a>d", 0, [Packet("a>d", 0, 0.0)]))
    answer("b>d", 0)  # takes a0's place: a0 is owed to numbering a
    answer("a>d", 1)
    emitter.emit_sequenced(Sequenced("b>d", 1, [Packet("b>d", 1, 0.0)]))
    answer("a>d", 2)  # takes b1's place: b1 is owed to numbering b
    answer("b>d", 2)
    reorder = Reorder()
    out = [(p.source, p.index) for item in got for p in reorder.add(item)]
    assert out == [("b>d", 0), ("a>d", 1), ("a>d", 2), ("b>d", 2)]  # a0 and b1 are waited for by nobody
    assert reorder.flush() == [] and stats.dropped == 2


def test_what_is_still_held_at_the_end_is_passed_on_in_order_but_not_past_a_stop():
    """A number the reordering waits for may never come (an answer lost on the way): what it held
    after it was thrown away at the end of the stream, uncounted (s28f)."""
    reorder = Reorder()
    assert reorder.add(Sequenced("a>b", 2, [packet(2)])) == []
    assert reorder.add(Sequenced("a>b", 1, [packet(1)])) == []
    assert [p.index for p in reorder.flush()] == [1, 2]
    stopped = Reorder()
    for number in (3, 1, 2):
        stopped.add(Sequenced("a>b", number, [packet(number)], stopped_at=2 if number == 3 else None))
    assert [p.index for p in stopped.flush()] == [1, 2] and stopped.discarded == 1


def test_a_live_sources_end_packet_waits_for_room_and_drops_no_frame():
    """The end packet went through the live source's drop-oldest put, so a full queue lost one
    of the last frames read for a marker that carries no frame (s41e)."""
    ctx = mp.get_context("spawn")
    camera = ctx.Queue(2)
    stats = StageStats("camera")
    emitter = Emitter([Outbox([camera], "camera>detector")], live=True, stats=stats)
    emitter.emit([packet(0), packet(1)])
    ending = threading.Thread(target=emitter.emit, args=([stream_ended("cam", 1, 1.0)],))
    ending.start()  # the queue is full: the end packet waits for the consumer to make room
    got = [camera.get(timeout=60) for _ in range(3)]
    ending.join(timeout=5)
    assert [(p.index, p.ended) for p in got] == [(0, False), (1, False), (1, True)] and stats.dropped == 0


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
