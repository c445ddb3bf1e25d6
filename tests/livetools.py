"""Helpers for the live and network tests: free ports, waiting on real processes, reading outputs."""
from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


@contextmanager
def silencing_relay(target: int) -> Iterator[tuple[int, Callable[[], None]]]:
    """A TCP relay from a port on 127.0.0.1 to ``target``; yields (port, silence). ``silence()``
    makes every connection made so far swallow what comes and send nothing back, left open: what
    a peer whose host died, or a partition, looks like from the other end. Connections made after
    it are relayed as before, to whatever listens on ``target`` then."""
    listener = socket.create_server(("127.0.0.1", 0))
    era = [0]
    held: list[socket.socket] = []

    def pump(src: socket.socket, dst: socket.socket, born: int) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if era[0] == born:
                    dst.sendall(data)

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                try:
                    upstream = socket.create_connection(("127.0.0.1", target))
                except OSError:  # nothing there yet: the client's socket tries again
                    client.close()
                    continue
                held.extend((client, upstream))
                for src, dst in ((client, upstream), (upstream, client)):
                    threading.Thread(target=pump, args=(src, dst, era[0]), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1], lambda: era.__setitem__(0, era[0] + 1)
    finally:
        listener.close()
        for sock in held:
            sock.close()


def bound_again(ctx: Any, kind: int, endpoint: str, **options: Any) -> Any:
    """A ZeroMQ socket bound to ``endpoint`` that a socket of this process held until just now:
    ZeroMQ closes in its own thread, so the first tries may find the port still taken.
    ``options``: socket attributes set before the bind (``curve_server=True``)."""
    import zmq

    def bind() -> Any:
        sock = ctx.socket(kind)
        for name, value in options.items():
            setattr(sock, name, value)
        try:
            sock.bind(endpoint)
            return sock
        except zmq.ZMQError:
            sock.close(linger=0)
            time.sleep(0.05)
            return None

    return wait_for(bind, 30, f"{endpoint} to be free again")


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
