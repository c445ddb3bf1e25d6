"""Stops landing at every point of the code that makes and cleans up files (see stop_points)."""
from __future__ import annotations

import os
import threading
from pathlib import Path

from livetools import free_port, wait_for
from stop_points import each_stop

from fer_pipe.errors import InputError
from fer_pipe.inprocess import run_stage
from fer_pipe.output_files import write_whole
from fer_pipe.ring_lease import RingLease


def test_a_stop_anywhere_before_the_video_writers_close_leaves_no_empty_video(tmp_path):
    """A stop once the video writer's file was made and before anything would remove it left a
    0-byte .mp4 that no player opens (a CI run failed on it twice): in the probe of its preflight
    (Path.unlink's own first lines, s60b 1), as its claim of the file returned, and in run_stage
    between its open and the try that closes it (s60b 2). Close is where a stage process ignores
    a stop; run_stage's close is the end of the search."""
    path = tmp_path / "new.mp4"

    def check() -> str | None:
        if not path.exists():
            return None
        path.unlink()
        return "the empty video was left"

    assert each_stop(lambda: run_stage("video_writer", [], params={"path": str(path)}), check,
                     until="close_stage") == []
    run_stage("video_writer", [], params={"path": str(path)})  # and no stop left the file locked
    assert not path.exists()


def test_a_stop_anywhere_in_the_video_writers_first_frame_leaves_no_empty_video(tmp_path):
    """OpenCV's writer makes the file as the first frame comes; a stop from there to the frame's
    count left a file of no frame (an .mp4 that does not open), and a segment's whatever came
    after it (s61c 1). The stage is closed after each stop, as a stage process closes it."""
    import cv2
    import numpy as np

    from fer_pipe.inprocess import make_stage
    from fer_pipe.messages import Packet
    from fer_pipe.stage_calls import close_stage, handle

    frame = Packet("cam", 0, 0.0, np.zeros((32, 32, 3), np.uint8))
    for params in ({"path": str(tmp_path / "one.mp4"), "fps": 1},
                   {"path": str(tmp_path / "cut.avi"), "fps": 1, "segment_s": 1}):
        stage = [make_stage("video_writer", params)]
        stage[0].open()

        def check() -> str | None:
            try:
                close_stage(stage[0])
            except Exception as exc:  # noqa: BLE001  said as what the stop left
                return f"close failed: {exc}"
            empty = []
            for video in sorted(tmp_path.glob("[!.]*")):
                capture = cv2.VideoCapture(str(video))
                if not capture.isOpened() or not capture.grab():
                    empty.append(video.name)
                capture.release()
                video.unlink()
            stage[0] = make_stage("video_writer", params)
            stage[0].open()
            return f"left {empty} without a frame" if empty else None

        assert each_stop(lambda: handle(stage[0], frame), check) == [], params
        close_stage(stage[0])


def test_a_stop_anywhere_as_handlers_are_swapped_puts_every_one_back():
    """A stop as the collector installed its handlers left the first installed for good: every
    Ctrl-C after it was the collector's, for a host process that went on (s61c 4). The search
    ends as the block is left: there, a stop is a second one, cutting the putting back short."""
    import signal

    from fer_pipe.stop_signals import handling

    signals = [signal.SIGUSR1, signal.SIGUSR2]
    before = [signal.getsignal(sig) for sig in signals]

    def swap() -> None:
        with handling(signals, lambda signum, frame: None):
            pass

    def check() -> str | None:
        now = [signal.getsignal(sig) for sig in signals]
        for sig, handler in zip(signals, before):
            signal.signal(sig, handler)
        return None if now == before else f"handlers left: {now}"

    assert each_stop(swap, check, until="__exit__") == []


def test_a_stop_anywhere_as_a_csv_is_opened_leaves_no_file_without_its_header(tmp_path):
    """A stop between the file's creation and its header left an empty CSV where the rows were
    to go (the csv sink's, the episodes sink's, the collector's: s61c 2); and no stop in the open
    of a file there may leave it locked (s61f 1)."""
    path = tmp_path / "rows.csv"

    def check() -> str | None:
        if not path.exists():
            return None
        header = path.read_text()
        path.unlink()
        return None if header.startswith("source,frame,") else f"left {header!r}"

    assert each_stop(lambda: run_stage("csv", [], params={"path": str(path)}), check, until="close_stage") == []

    from fer_pipe.csvfile import CsvOutput
    from fer_pipe.events import FRAME_COLUMNS

    run_stage("csv", [], params={"path": str(path)})

    def append() -> None:
        CsvOutput(path, "csv", FRAME_COLUMNS, append=True).close()

    def again() -> str | None:  # a descriptor a stop left open holds the lock: the API's next run was refused
        try:
            append()
        except InputError as exc:
            return str(exc)
        return None

    assert each_stop(append, again) == []


def test_a_handler_set_from_c_is_left_as_it_is_and_the_others_put_back(monkeypatch):
    """Python cannot put back a handler it did not set (``getsignal`` says None): the swap failed
    there, and left the handlers after it in place (s61f 5)."""
    import signal

    from fer_pipe.stop_signals import handling

    real = signal.getsignal
    first, second = real(signal.SIGUSR1), real(signal.SIGUSR2)
    monkeypatch.setattr(signal, "getsignal", lambda sig: None if sig == signal.SIGUSR1 else real(sig))

    def mine(signum, frame):
        pass

    with handling([signal.SIGUSR1, signal.SIGUSR2], mine):
        assert (real(signal.SIGUSR1), real(signal.SIGUSR2)) == (first, mine)
    assert (real(signal.SIGUSR1), real(signal.SIGUSR2)) == (first, second)


def test_a_stop_anywhere_in_a_whole_write_leaves_the_old_file_or_the_new_and_nothing_else(tmp_path):
    """A Ctrl-C of a batch while its manifest was written left _manifest.json.tmp beside it (s60b 7):
    only an OSError removed it."""
    path = tmp_path / "_manifest.json"
    path.write_text("old")

    def check() -> str | None:
        left = sorted(p.name for p in tmp_path.iterdir())
        if left != ["_manifest.json"] or path.read_text() not in ("old", "new"):
            return f"left {left}, {path.read_text()!r}"
        path.write_text("old")
        return None

    assert each_stop(lambda: write_whole(path, "new", "batch"), check) == []


def test_a_stop_anywhere_while_a_run_leases_its_rings_leaves_no_lock_file(tmp_path):
    """A Ctrl-C as the runner took its lease left the draft of its lock file, a dot file no sweep
    removes, in /dev/shm for good (s60b 5)."""
    leases: list[RingLease] = []

    def check() -> str | None:
        for lease in leases:
            lease.release()
        leases.clear()
        left = os.listdir(tmp_path)
        for name in left:
            Path(tmp_path, name).unlink()
        return f"left {left}" if left else None

    assert each_stop(lambda: leases.append(RingLease(str(tmp_path))), check) == []


def test_a_stop_anywhere_in_the_rtsp_sources_open_leaves_no_reader_reconnecting():
    """In one process (run_stage, run_graph), a Ctrl-C as the source started its reader thread
    left the reader reconnecting to the camera for as long as the process lived, and OpenCV's
    log level, which the source sets while any is open, never given back (s60b 6)."""
    from fer_pipe.inprocess import make_stage
    from fer_pipe.stages import rtsp

    opened = []
    url = f"rtsp://127.0.0.1:{free_port()}/none"  # nothing there: the reader retries for as long as it runs

    def open_one() -> None:
        source = make_stage("rtsp", {"url": url})
        source.open()
        opened.append(source)

    def readers() -> list[str]:  # a thread whose start was cut short before it began stays listed, never alive
        return [t.name for t in threading.enumerate() if t.name.startswith("rtsp:") and t.is_alive()]

    def check() -> str | None:
        for source in opened:
            source.close()
        opened.clear()
        if rtsp._SHARED._open:
            return f"still counted open: {rtsp._SHARED._open!r}"
        try:
            wait_for(lambda: not readers(), 10, "the readers to end")
        except AssertionError:
            return f"{readers()} still reading"
        return None

    assert each_stop(open_one, check) == []


def test_a_stop_anywhere_while_a_stage_type_is_first_looked_up_leaves_the_type_there(tmp_path, monkeypatch):
    """A Ctrl-C in a host's thread while a type's module was imported on its first look-up lost
    the type for the process ("unknown stage type" from then on) where it landed just after the
    entry point was taken off the pending ones, or at the first line of its load (s60e)."""
    import sys
    from importlib.metadata import EntryPoint

    from fer_pipe.registry import GROUP, Registry

    (tmp_path / "tiny_stage.py").write_text(
        "from fer_pipe.messages import FRAME\nfrom fer_pipe.stage import Stage\n\n\n"
        "class Tiny(Stage):\n    reads = writes = FRAME\n\n    def process(self, packet):\n        return (packet,)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = [EntryPoint(name="tiny", value="tiny_stage:Tiny", group=GROUP)]
    made = [Registry(found)]

    def check() -> str | None:
        sys.modules.pop("tiny_stage", None)  # imported anew by the next run's registry
        try:
            made[0].types["tiny"]
        except KeyError:
            return "the type was lost"
        finally:
            made[0] = Registry(found)
        return None

    assert each_stop(lambda: made[0].types["tiny"], check) == []
