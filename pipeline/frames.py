"""Frame pixels between processes through a ring of shared-memory slots.

A source process writes each frame once into the next slot of its ring and sends only a small
``FrameRef`` (segment name, slot, shape, sequence number) through the queues; every stage
process maps the segment once and reads the frame in place, without a copy or a pickle.

A slot is reused after ``slots`` frames. The runner sizes the ring above the number of frames
that can be in flight (every queue full plus one packet in each stage's hands), and each slot
begins with the sequence number of the frame in it, so a reader that finds another frame there
fails loudly instead of reading wrong pixels.
"""
from __future__ import annotations

import contextlib
import mmap
import os
import secrets
import shutil
from dataclasses import dataclass

import numpy as np

from .errors import InputError

SHM = "/dev/shm"  # where Linux's shm_open keeps its segments: files of a tmpfs, mapped as such
MIB = 1024 * 1024
HEADER = 64  # bytes before each slot's pixels: the sequence number, padded for alignment

_attached: dict[str, mmap.mmap] = {}
_views_made = 0


def views_made() -> int:
    """How many frame views this process has made: the worker re-checks a frame's slot after a
    stage only when the stage read it (a tracker's answer does not depend on the pixels)."""
    return _views_made


class StaleFrameError(RuntimeError):
    """A slot was overwritten before a reader used it: the ring was sized too small."""


@dataclass(frozen=True)
class FrameRef:
    """A frame in a shared-memory ring: what crosses the queues instead of the pixels."""

    segment: str
    offset: int
    shape: tuple[int, ...]
    dtype: str
    seq: int

    def array(self) -> np.ndarray:
        global _views_made
        shm = self.check()
        _views_made += 1
        view = np.ndarray(self.shape, dtype=np.dtype(self.dtype), buffer=shm, offset=self.offset + HEADER)
        view.flags.writeable = False
        return view

    def check(self) -> mmap.mmap:
        """StaleFrameError if the slot holds another frame now. The writer puts the sequence
        number before the pixels, so a check after a stage has used the pixels also tells
        whether they changed under it (a live source lapping the ring during a slow step)."""
        shm = _attached.get(self.segment)
        if shm is None:
            shm = _attached[self.segment] = _map_for_reading(self.segment)
        header = np.ndarray((1,), dtype=np.int64, buffer=shm, offset=self.offset)
        if int(header[0]) != self.seq:
            raise StaleFrameError(f"frame {self.seq} in {self.segment} was overwritten by frame "
                                  f"{int(header[0])}")
        return shm


class FrameRing:
    """The writer's side: one process (a source) owns one ring of ``slots`` frames; a frame
    larger than its slots starts a new segment of larger ones (``_grow``), smaller frames use the
    current one.

    The writer never unlinks its segments: readers downstream may still map them after the
    source has finished. Their names start with the run's (``prefix``), and the runner's lease
    removes every one so named once every stage process has ended (also when the source was
    killed); if the runner itself was killed, the stages that outlive it do
    (``ring_lease.remove_orphaned``).
    """

    def __init__(self, prefix: str, slots: int) -> None:
        self.prefix = prefix
        self.slots = slots
        self.names: list[str] = []
        self.segments: list[mmap.mmap] = []
        self._slot_bytes = 0
        self._seq = 0

    def _grow(self, frame: np.ndarray) -> None:
        """A new segment for frames larger than the current slots; old ones stay readable.

        Its pages are reserved at once. A segment is created sparse, and a process that writes
        to a page tmpfs has no room for dies of SIGBUS; Docker gives /dev/shm 64 MiB, less
        than a ring of 720p frames. Reserving turns that into one line saying what to change.
        """
        self._slot_bytes = HEADER + ((frame.nbytes + HEADER - 1) // HEADER) * HEADER
        size = self._slot_bytes * self.slots
        name = f"{self.prefix}_{secrets.token_hex(4)}"
        fd = os.open(os.path.join(SHM, name), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            self.names.append(name)
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                free = shutil.disk_usage(SHM).free
                shape = "x".join(map(str, frame.shape))
                raise InputError(f"frame ring: {self.slots} frames of {shape} need {size / MIB:,.0f} MiB "
                                 f"of {SHM}, which has {free / MIB:,.0f} MiB free ({exc.strerror}); give "
                                 f"it more room (docker run --shm-size) or lower queue_size") from None
            self.segments.append(mmap.mmap(fd, size))
        finally:
            os.close(fd)

    def put(self, frame: np.ndarray) -> FrameRef:
        """Copy ``frame`` into the next slot. The sequence number goes in before the pixels: a
        reader that checks it after using the pixels then knows whether they changed under it."""
        if frame.nbytes + HEADER > self._slot_bytes:
            self._grow(frame)
        shm = self.segments[-1]
        offset = (self._seq % self.slots) * self._slot_bytes
        np.ndarray((1,), dtype=np.int64, buffer=shm, offset=offset)[0] = self._seq
        np.ndarray(frame.shape, dtype=frame.dtype, buffer=shm, offset=offset + HEADER)[...] = frame
        ref = FrameRef(self.names[-1], offset, tuple(frame.shape), frame.dtype.str, self._seq)
        self._seq += 1
        return ref

    def close(self) -> None:
        """Unmap the segments; unlinking them is the runner's job, after every reader has ended."""
        for shm in self.segments:
            shm.close()
        self.segments.clear()


def detach_all() -> None:
    """Unmap every segment this process attached to (at the end of a stage process)."""
    for shm in _attached.values():
        try:
            shm.close()
        except BufferError:
            pass  # a stage still holds a view; the mapping goes with the process
    _attached.clear()


def unlink(names: list[str]) -> None:
    """Remove segments by name (a ring made outside a run: a benchmark's, a test's)."""
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(SHM, name))  # what shm_unlink does on Linux


def _map_for_reading(name: str) -> mmap.mmap:
    """Map a segment that a source made, read-only.

    Not ``multiprocessing.shared_memory``: on Python 3.11 and 3.12 a process that only opens a
    segment registers it with multiprocessing's resource tracker, as its maker does (``track``
    came in 3.13), and the tracker unlinks, warning of "leaked shared_memory objects", any name
    whose unregistering it has not seen by the time every process of the run has ended. The
    runner and ``ring_lease`` remove the rings, also when the runner was killed; that second
    bookkeeping printed the warning in a CI run after a second Ctrl-C (s29)."""
    fd = os.open(os.path.join(SHM, name), os.O_RDONLY)
    try:
        return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
