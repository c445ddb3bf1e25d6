"""The shared-memory frame ring: pixels cross processes intact, and a reused slot is detected."""
from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fer_pipe import frames
from fer_pipe.errors import InputError


def _checksum_in_child(refs, out):
    out.put([int(ref.array().astype(np.int64).sum()) for ref in refs])
    frames.detach_all()


@pytest.fixture
def ring():
    ring = frames.FrameRing("fptest", slots=4)
    yield ring
    ring.close()
    frames.unlink(ring.names)


def test_frames_cross_a_process_boundary_unchanged(ring):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8) for _ in range(3)]
    refs = [ring.put(img) for img in images]
    assert all(len(pickle.dumps(ref)) < 300 for ref in refs)  # metadata only, never the pixels
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_checksum_in_child, args=(refs, out))
    child.start()
    sums = out.get(timeout=60)
    child.join(timeout=30)
    assert sums == [int(img.astype(np.int64).sum()) for img in images]


def test_views_are_read_only_and_equal(ring):
    img = np.arange(48 * 64, dtype=np.uint8).reshape(48, 64)
    view = ring.put(img).array()
    assert np.array_equal(view, img)
    with pytest.raises(ValueError):
        view[0, 0] = 1


def test_an_overwritten_slot_is_refused(ring):
    img = np.zeros((10, 10, 3), dtype=np.uint8)
    first = ring.put(img)
    for _ in range(ring.slots):
        ring.put(img)
    with pytest.raises(frames.StaleFrameError):
        first.array()


def test_a_larger_frame_gets_a_new_segment_and_old_frames_stay_readable(ring):
    small = np.full((10, 10), 7, dtype=np.uint8)
    big = np.full((100, 100), 9, dtype=np.uint8)
    small_ref = ring.put(small)
    big_ref = ring.put(big)
    assert small_ref.segment != big_ref.segment
    assert small_ref.array()[0, 0] == 7 and big_ref.array()[-1, -1] == 9


def test_a_ring_that_dev_shm_cannot_hold_is_refused_before_any_frame_is_written():
    """Unreserved, the first frame of such a ring writes fine and a later one dies of SIGBUS."""
    room = os.statvfs(frames.SHM)
    if not room.f_blocks:
        pytest.skip(f"{frames.SHM} has no size limit")
    frame = np.zeros((1024, 1024, 3), dtype=np.uint8)
    ring = frames.FrameRing("fptest", slots=room.f_blocks * room.f_frsize // frame.nbytes + 1)
    names = ring.names
    try:
        with pytest.raises(InputError, match=r"^frame ring: \d+ frames of 1024x1024x3 need [\d,]+ MiB of "
                                             r"/dev/shm, which has [\d,]+ MiB free .*lower queue_size$"):
            ring.put(frame)
    finally:
        ring.close()
        frames.unlink(names)
    assert len(names) == 1 and not os.path.exists(os.path.join(frames.SHM, names[0]))


def test_a_ring_removed_by_its_lease_leaves_the_resource_tracker_nothing_to_say(tmp_path):
    """A run's ring is removed by the run's lease, by its name. Made with multiprocessing's
    SharedMemory it stayed registered with the resource tracker, which then warned of a leak at
    exit (seen in CI after a second Ctrl-C)."""
    script = tmp_path / "ring.py"
    script.write_text(textwrap.dedent("""\
        import numpy as np

        from fer_pipe import frames
        from fer_pipe.ring_lease import RingLease, segment_prefix

        lease = RingLease()
        ring = frames.FrameRing(segment_prefix(lease.run_id, "source"), 2)
        ring.put(np.zeros((4, 4), np.uint8))
        print(*ring.names)
        ring.close()
        lease.release()
        """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")
    (name,) = done.stdout.split()
    assert not os.path.exists(os.path.join(frames.SHM, name))
