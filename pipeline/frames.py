"""Frame pixels between processes through a ring of shared-memory slots.

A source process writes each frame once into the next slot of its ring and sends only a small
``FrameRef`` (the slot's file name, shape, sequence number) through the queues; every stage
process maps each slot's file once and reads the frame in place, without a copy or a pickle.

A slot is reused after ``slots`` frames. The runner sizes the ring above the number of frames
that can be in flight (every queue full plus one packet in each stage's hands), and each slot
begins with the sequence number of the frame in it, so a reader that finds another frame there
fails loudly instead of reading wrong pixels.
"""
from __future__ import annotations

import contextlib
import errno
import glob
import mmap
import os
import resource
import secrets
import shutil
from dataclasses import dataclass
from typing import NoReturn

import numpy as np

from .errors import InputError
from .oom import RUNNER_BYTES, memory_bytes

SHM = os.environ.get("FER_PIPE_SHM") or "/dev/shm"
"""The folder of the rings' files: where Linux's shm_open keeps its segments (files of a tmpfs,
mapped as such), or another folder of a tmpfs that FER_PIPE_SHM names. Runs sharing a folder
remove each other's killed rings (``ring_lease``); the test suite gives each of its workers
one, so that a ring one test leaves killed is no other test's to find."""
MIB = 1024 * 1024
HEADER = 64  # bytes before each slot's pixels: the sequence number, padded for alignment

_attached: dict[str, mmap.mmap] = {}
_slot_files: dict[str, str] = {}  # a slot (its file's name without the token) -> the file mapped for it
_views_made = 0


def check_folder() -> None:
    """A FER_PIPE_SHM that names no folder, said in one line before a run starts, where each
    source otherwise failed at its first frame on a file it could not make."""
    if SHM != "/dev/shm" and not os.path.isdir(SHM):
        raise InputError(f"FER_PIPE_SHM: {SHM} is not a folder; name a folder of a tmpfs for the frame rings, "
                         "or unset it for /dev/shm")


def views_made() -> int:
    """How many frame views this process has made: the worker re-checks a frame's slot after a
    stage only when the stage read it (a tracker's answer does not depend on the pixels)."""
    return _views_made


class StaleFrameError(RuntimeError):
    """A slot was overwritten before a reader used it: a live source lapped a stage that fell
    behind, or a stage kept a frame past its call without its pixels. ``live``: the overwritten
    frame's source is live, which is what tells the two apart (not the packet the stage was
    handed: a stage fed by a camera and a file may read the one while handling the other)."""

    def __init__(self, message: str, live: bool) -> None:
        super().__init__(message)
        self.live = live


KEEP_PIXELS = ("a stage that keeps frames past its call (to pass them on later) keeps their pixels: "
               "packet.image = packet.pixels().copy()")
NOT_PIXELS = ("under fer-pipe run, packet.image is a reference to the frame in shared memory, not its pixels "
              "(run_stage hands an array, so a stage's tests pass): read them with packet.pixels()")


@dataclass(frozen=True)
class FrameRef:
    """A frame in a shared-memory ring: what crosses the queues instead of the pixels."""

    segment: str
    shape: tuple[int, ...]
    dtype: str
    seq: int
    live: bool = False
    """From a live source, which writes on without waiting: a stage that falls far enough behind
    finds its slots reused. A file source waits, so for its frames that means a contract broken."""

    def array(self) -> np.ndarray:
        global _views_made
        shm = self.check()
        _views_made += 1
        view = np.ndarray(self.shape, dtype=np.dtype(self.dtype), buffer=shm, offset=HEADER)
        view.flags.writeable = False
        return view

    def __setitem__(self, key: object, value: object) -> None:
        """Drawing into ``packet.image`` fails as drawing into a read-only array does, its
        words numpy's: a stage's own picture and a frame in one process are such arrays, and a
        frame that came over a queue said "'FrameRef' object does not support item assignment"."""
        raise ValueError("assignment destination is read-only")

    def copy(self) -> NoReturn:
        """``packet.image.copy()``, which passes a stage's tests, where ``packet.image`` is an
        array: "'FrameRef' object has no attribute 'copy'" said nothing of what to do."""
        raise TypeError(NOT_PIXELS)

    def __getitem__(self, key: object) -> NoReturn:
        """``packet.image[y0:y1, x0:x1]``, as ``copy``."""
        raise TypeError(NOT_PIXELS)

    def check(self) -> mmap.mmap:
        """StaleFrameError if the slot holds another frame now. The writer puts the sequence
        number before the pixels, so a check after a stage has used the pixels also tells
        whether they changed under it (a live source lapping the ring during a slow step)."""
        shm = _attached.get(self.segment)
        if shm is None:
            shm = _attach(self.segment, self.seq, self.live)
        header = np.ndarray((1,), dtype=np.int64, buffer=shm)
        if int(header[0]) != self.seq:
            raise StaleFrameError(f"frame {self.seq} in {self.segment} was overwritten by frame "
                                  f"{int(header[0])}; {KEEP_PIXELS}", self.live)
        return shm


class FrameRing:
    """The writer's side: one process (a source) owns one ring of ``slots`` frames, each slot a
    shared-memory file of its own. A frame larger than its slot replaces that slot's file
    (``_reserve``) and the old one is unlinked at once: it held the frame ``slots`` before, which
    no reader may still need (the ring's own reuse rule), and a reader that maps the new file lets
    go of the old one. One file for the whole ring, with a new one for larger frames, kept every
    smaller ring until the run's end: a folder of images growing in size held 1,486 MiB of
    /dev/shm where its largest frames needed 248.

    The writer never unlinks its current files: readers downstream may still map them after the
    source has finished. Their names start with the run's (``prefix``), and the runner's lease
    removes every one so named once every stage process has ended (also when the source was
    killed); if the runner itself was killed, the stages that outlive it do
    (``ring_lease.remove_orphaned``).
    """

    def __init__(self, prefix: str, slots: int, expected: int | None = None, live: bool = False) -> None:
        """``expected``: the frames the source will send, where it knows (its ``length()``): no
        more slots than that are made at the first frame, and any beyond as they are needed. A
        source of 8 frames reserved all 123 slots of a graph of six sources."""
        self.prefix = prefix
        self.slots = slots
        self._first = slots if expected is None else max(1, min(slots, expected))
        self.live = live
        self.names: list[str] = []
        self._maps: list[mmap.mmap] = []
        self._sizes: list[int] = []
        self._seq = 0

    def _reserve(self, frame: np.ndarray, slots: range) -> None:
        """Files for ``slots`` sized for ``frame``, replacing those slots' files; every slot the
        source is expected to use at the first frame, so that a ring /dev/shm cannot hold fails
        before any frame is written.

        Their pages are reserved at once. A file is created sparse, and a process that writes
        to a page tmpfs has no room for dies of SIGBUS; Docker gives /dev/shm 64 MiB, less
        than a ring of 720p frames. Reserving turns that into one line saying what to change.
        """
        size = HEADER + ((frame.nbytes + HEADER - 1) // HEADER) * HEADER
        held = sum(self._sizes)
        room = shutil.disk_usage(SHM)
        count = len(slots) if not held else self.slots  # at the first frame, the expected; then the whole ring
        if room.total and len(slots) * size > room.free:  # a tmpfs without a limit says 0 for both
            self._refuse(frame, count, size, held, os.strerror(errno.ENOSPC))
        memory = memory_bytes()
        if memory is not None and count * size > memory - RUNNER_BYTES:
            # tmpfs pages count against the memory limit of the process that reserves them (docker
            # --memory, a pod's): a ring that fit /dev/shm had a stage killed by the OOM killer,
            # "killed by signal SIGKILL" and nothing more, at the first frame
            raise InputError(f"frame ring: {count} frames of {'x'.join(map(str, frame.shape))} need "
                             f"{count * size / MIB:,.0f} MiB of {SHM}, whose pages count against this process's "
                             f"memory of {memory / MIB:,.0f} MiB (a container's or service's limit, where less "
                             f"than the machine's), leaving less than the {RUNNER_BYTES // MIB} MiB the stages "
                             "need besides; give it more memory, or lower queue_size or a stage's workers")
        for slot in slots:
            name = f"{self.prefix}_{slot}_{secrets.token_hex(4)}"
            try:
                fd = os.open(os.path.join(SHM, name), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError as exc:
                raise _out_of_maps(exc) or exc from None
            try:
                try:
                    os.posix_fallocate(fd, 0, size)
                except OSError as exc:
                    os.unlink(os.path.join(SHM, name))
                    if exc.errno == errno.EFBIG:  # not /dev/shm's room: "which has 24,071 MiB free" said it was
                        raise InputError(f"frame ring: a frame's slot of {size:,} bytes is over this process's "
                                         f"file size limit of {resource.getrlimit(resource.RLIMIT_FSIZE)[0]:,} "
                                         "bytes (ulimit -f, systemd's LimitFSIZE=); raise it") from None
                    self._refuse(frame, count, size, held, exc.strerror)
                try:
                    shm = mmap.mmap(fd, size)
                except OSError as exc:
                    os.unlink(os.path.join(SHM, name))
                    raise _out_of_maps(exc) or exc from None
            finally:
                os.close(fd)
            if slot < len(self.names):
                self._maps[slot].close()
                unlink([self.names[slot]])
                self.names[slot], self._maps[slot], self._sizes[slot] = name, shm, size
            else:
                self.names.append(name)
                self._maps.append(shm)
                self._sizes.append(size)

    def _refuse(self, frame: np.ndarray, count: int, size: int, held: int, reason: str) -> None:
        """The room ``count`` slots need at this frame's size; what the ring holds now counts as
        free, since larger frames replace its files."""
        free = shutil.disk_usage(SHM).free + held
        shape = "x".join(map(str, frame.shape))
        raise InputError(f"frame ring: {count} frames of {shape} need {count * size / MIB:,.0f} MiB "
                         f"of {SHM}, which has {free / MIB:,.0f} MiB free ({reason}); give "
                         f"it more room (docker run --shm-size), or lower queue_size or a stage's workers")

    def put(self, frame: np.ndarray) -> FrameRef:
        """Copy ``frame`` into the next slot. The sequence number goes in before the pixels: a
        reader that checks it after using the pixels then knows whether they changed under it."""
        slot = self._seq % self.slots
        if slot == len(self.names):  # the first frame reserves the expected slots, a later one its own
            self._reserve(frame, range(slot, max(slot + 1, self._first)))
        elif frame.nbytes + HEADER > self._sizes[slot]:
            self._reserve(frame, range(slot, slot + 1))
        shm = self._maps[slot]
        np.ndarray((1,), dtype=np.int64, buffer=shm)[0] = self._seq
        np.ndarray(frame.shape, dtype=frame.dtype, buffer=shm, offset=HEADER)[...] = frame
        ref = FrameRef(self.names[slot], tuple(frame.shape), frame.dtype.str, self._seq, self.live)
        self._seq += 1
        return ref

    def close(self) -> None:
        """Unmap the files; unlinking them is the runner's job, after every reader has ended."""
        for shm in self._maps:
            shm.close()
        self._maps.clear()


def allow_open_files() -> None:
    """Raise this process's open-file limit to its hard limit. Python's mmap keeps a descriptor
    of its own for each mapping, so a process holds one per slot of each ring it reads or
    writes: a detector shared by a few dozen cameras reached the usual soft limit of 1024,
    where the hard limit is most often far above it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _out_of_maps(exc: OSError) -> InputError | None:
    """The line for a slot that could not be mapped for a limit of the machine's, if that is why."""
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return InputError(f"frame ring: cannot map another slot ({exc.strerror}; this process may open {limit:,} "
                          "files, one per ring slot it maps); raise the limit (ulimit -n, systemd's "
                          "LimitNOFILE=) or lower queue_size")
    if exc.errno == errno.ENOMEM:
        space = resource.getrlimit(resource.RLIMIT_AS)[0]
        limit = ("sysctl vm.max_map_count" if space == resource.RLIM_INFINITY else
                 f"this process's address space limit of {space:,} bytes (ulimit -v)")
        return InputError(f"frame ring: cannot map another slot ({exc.strerror}: one mapping per ring slot "
                          f"it maps; see {limit}); lower queue_size or split the cameras into shards")
    return None


def _attach(name: str, seq: int, live: bool) -> mmap.mmap:
    """Map a slot's file, letting go of the file that slot had before: the writer unlinked it
    when it replaced it, and the memory is freed once no process maps it."""
    slot = name.rpartition("_")[0]
    try:
        shm = _map_for_reading(name)
    except FileNotFoundError:  # its slot was replaced, so the frame in it was overwritten
        if not glob.glob(f"{glob.escape(os.path.join(SHM, slot))}_*"):
            raise InputError(f"frame ring: {name} is gone from {SHM} with no frame in its place: another program "
                             "removed the run's files there (systemd-logind removes a user's at their logout, with "
                             "RemoveIPC=yes: run as a system user, or after loginctl enable-linger)") from None
        raise StaleFrameError(f"frame {seq} in {name} was overwritten by a larger frame; {KEEP_PIXELS}",
                              live) from None
    except OSError as exc:
        raise _out_of_maps(exc) or exc from None
    replaced = _slot_files.pop(slot, None)
    if replaced is not None:
        _release(_attached.pop(replaced))
    _slot_files[slot] = name
    _attached[name] = shm
    return shm


def _release(shm: mmap.mmap) -> None:
    try:
        shm.close()
    except BufferError:
        pass  # a stage still holds a view; the mapping goes with the view


def detach_all() -> None:
    """Unmap every segment this process attached to (at the end of a stage process)."""
    for shm in _attached.values():
        _release(shm)
    _attached.clear()
    _slot_files.clear()


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
    bookkeeping printed the warning after a second Ctrl-C."""
    fd = os.open(os.path.join(SHM, name), os.O_RDONLY)
    try:
        return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
