"""Helpers for the live and network tests: free ports, waiting on real processes, reading outputs."""
from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def sighup_default() -> None:
    """``preexec_fn`` for a process a test sends SIGHUP: the test runner may itself run under
    ``nohup``, whose ignored SIGHUP every child would inherit (so the signal would do nothing)."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` (an IPv4 or IPv6 address) that nothing listens on right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextmanager
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that a socket listens on for as long as the block runs: the case of a
    publisher or collector started twice, or over another program."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def wait_for(condition: Callable[[], object], timeout: float = 60.0, what: str = "the condition",
             *procs: subprocess.Popen):
    """Poll until ``condition()`` is truthy and return its value; fail at once if one of
    ``procs`` ends first. The timeout only guards against a hang; it is not a speed check."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"{proc.args} ended (exit {proc.returncode}) while waiting for {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def csv_rows(path: Path) -> list[dict]:
    """The rows so far; none while the file is not there. Checking first and opening after
    raced: the run's writability probe creates the file and removes it again before it starts.
    Read whole first, then parsed: a reader that found the file empty took no header, and then
    read the header written meanwhile as a row of none (TypeError, CI 39e)."""
    try:
        with open(path, newline="") as f:
            text = f.read()
    except FileNotFoundError:
        return []
    return list(csv.DictReader(io.StringIO(text, newline="")))


def needs(program: str) -> str:
    found = shutil.which(program)
    if not found:
        pytest.skip(f"{program} is not installed (tools/test installs it with apt)")
    return found


def start_fer_pipe(*args: str, stderr_path: Path, env: dict | None = None) -> subprocess.Popen:
    """``fer-pipe`` as a background process, stderr to a file the test can read while it runs."""
    return subprocess.Popen([sys.executable, "-m", "fer_pipe.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=open(stderr_path, "w"), env={**os.environ, **(env or {})})


def stop(proc: subprocess.Popen, sig: int | None = None, timeout: float = 30) -> int:
    """Signal a process the test started (SIGTERM by default) and reap it."""
    if proc.poll() is None:
        if sig is None:
            proc.terminate()
        else:
            proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
