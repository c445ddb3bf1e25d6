"""Frame rings that a killed run left in /dev/shm: only those whose run is gone are removed.

The runs here are real processes holding a real lock, in a folder of the test's own, so the
test needs no /dev/shm of the machine's and touches it only with two semaphores, unlinked as
usual (test_signals kills a whole run).
"""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

from fer_pipe.ring_lease import RingLease, segment_prefix, semaphores_named, sweep_abandoned

HOLDER = """
import sys, time
from pathlib import Path
from fer_pipe.ring_lease import RingLease, segment_prefix
lease = RingLease(sys.argv[1])
for slot, token in enumerate(["0a1b2c3d", "4e5f6a7b"]):  # a ring is a file per slot
    Path(sys.argv[1], f"{segment_prefix(lease.run_id, 'source')}_{slot}_{token}").write_bytes(bytes(4096))
Path(sys.argv[1], f"sem.fp{lease.run_id}_sem-0a1b2c3d").write_bytes(bytes(32))  # as sem_open writes one
print(lease.run_id, flush=True)
time.sleep(600)
"""


def _holder(folder: Path) -> tuple[subprocess.Popen, str]:
    """A process that holds a run's lease and has written its ring and a semaphore; returns it
    and its run id."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def test_only_the_rings_of_a_run_that_died_are_removed(tmp_path):
    dead, _ = _holder(tmp_path)
    live, live_id = _holder(tmp_path)
    try:
        dead.kill()  # SIGKILL: it unlinks nothing, and the kernel drops its lock
        dead.wait()
        assert sweep_abandoned(str(tmp_path), str(tmp_path)) == (1, 8192)  # one ring of two slots; the semaphore is not one
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            f"fp{live_id}.lock", f"fp{live_id}_source_0_0a1b2c3d", f"fp{live_id}_source_1_4e5f6a7b",
            f"sem.fp{live_id}_sem-0a1b2c3d"]
    finally:
        live.kill()
        live.wait()
        live.stdout.close()
        dead.stdout.close()


def test_a_run_whose_runner_died_is_not_swept_while_one_of_its_stages_lives(tmp_path):
    """Held by the runner alone, a run restarted at once after its runner's SIGKILL removed the
    semaphores of the old run's stages while they drained, and the resource tracker said "No
    such file or directory" for each, 55 lines in the old run's log (s43c)."""
    runner, run_id = _holder(tmp_path)
    stage = subprocess.Popen([sys.executable, "-c", "import sys, time; from fer_pipe.ring_lease import hold; "
                              "hold(sys.argv[1], sys.argv[2]); print('held', flush=True); time.sleep(600)",
                              run_id, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert stage.stdout.readline() == "held\n"
        runner.kill()
        runner.wait()
        before = sorted(p.name for p in tmp_path.iterdir())
        assert sweep_abandoned(str(tmp_path), str(tmp_path)) == (0, 0)
        assert sorted(p.name for p in tmp_path.iterdir()) == before
        stage.kill()
        stage.wait()
        assert sweep_abandoned(str(tmp_path), str(tmp_path)) == (1, 8192) and list(tmp_path.iterdir()) == []
    finally:
        for proc in (runner, stage):
            proc.kill()
            proc.wait()
            proc.stdout.close()


def test_a_source_with_a_long_name_makes_its_ring():
    """A source named with 123 accented letters (246 bytes) passed validate, and its run failed
    after every stage had started: "File name too long" for its ring (s41d)."""
    import numpy as np

    from fer_pipe.frames import FrameRing, detach_all, unlink

    ring = FrameRing(segment_prefix("abcdef", "é" * 123), 2)
    try:
        ref = ring.put(np.full((4, 4, 3), 7, np.uint8))
        assert int(ref.array()[0, 0, 0]) == 7
    finally:
        detach_all()
        ring.close()
        unlink(ring.names)
    assert segment_prefix("abcdef", "source").endswith("abcdef_source")  # a usual name is kept, for a reader of ls


def test_a_run_that_ends_leaves_no_lock_and_no_ring_behind(tmp_path):
    """Its own rings go too: one a source made but was killed before announcing, or those of a
    run whose stage processes did not all start."""
    lease = RingLease(str(tmp_path))
    other = tmp_path / "fp0a0b0c_source_11223344"  # another run's ring
    other.write_bytes(bytes(16))
    mine = Path(tmp_path, segment_prefix(lease.run_id, "source") + "_0a1b2c3d")
    mine.write_bytes(bytes(4096))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"fp{lease.run_id}.lock", mine.name, other.name])
    lease.release()
    assert [p.name for p in tmp_path.iterdir()] == [other.name]
    assert sweep_abandoned(str(tmp_path), str(tmp_path)) == (0, 0)


def test_lock_files_no_run_of_this_user_made_are_left_alone(tmp_path):
    """Any local user can make a file in /dev/shm. One named fp*.lock made the next run remove
    the rings of every run (its name became a glob), and a stray fpdead00.lock of another user's
    failed every later run (its unlink is refused in the sticky folder)."""
    rings = [tmp_path / "fpabc123_source_0a1b2c3d", tmp_path / "fpdead00_source_0a1b2c3d"]
    for ring in rings:
        ring.write_bytes(bytes(64))
    (tmp_path / "fp*.lock").touch()
    os.mkfifo(tmp_path / "fpabcdef.lock")  # opened for reading, it waited for a writer for ever
    (tmp_path / "fpabc999.lock").mkdir()  # opened, IsADirectoryError: the sweep before every run failed (s38c)
    theirs = tmp_path / "fpdead00.lock"
    theirs.touch()
    if os.geteuid() == 0:  # as root, a file of another user's can be made; otherwise it is this user's
        os.chown(theirs, 65534, 65534)
        os.chown(rings[1], 65534, 65534)
    else:
        theirs.unlink()
    assert sweep_abandoned(str(tmp_path), str(tmp_path)) == (0, 0)
    assert all(ring.exists() for ring in rings)


def test_semaphores_made_for_a_run_carry_its_name_and_later_ones_do_not():
    """The sweep finds a killed run's semaphores in /dev/shm by that name alone."""
    ctx = multiprocessing.get_context("spawn")  # as forkserver: names kept until unlinked, unlike fork's
    with semaphores_named("0a1b2c"):
        mine = ctx.Lock()
    other = ctx.Lock()
    assert mine._semlock.name.startswith("/fp0a1b2c_sem-")
    assert other._semlock.name.startswith("/mp-")
