"""Where ``fer-pipe batch`` runs its tasks: a Ray of the run's own on this machine, or a cluster
named by ``--address``, checked before anything is made."""
from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from . import hangup
from .endpoints import host_port, is_loopback
from .errors import InputError, UserError, printable
from .machine import usable_cpus
from .stop_signals import handling, signals_held

PINNED_THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                  "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
"""Environment of every task: one thread per library, so N tasks on N cores do not oversubscribe."""
LOCAL_OBJECT_STORE = 100 * 1024 * 1024
"""Tasks exchange only a config and a small result, so a local Ray need not reserve its default
share (30 % of memory) of /dev/shm."""
CONNECT_TIMEOUT_S = 5.0
"""How long to wait for a TCP answer from --address before saying nothing is there."""


class StopSignals:
    """While the batch runs, SIGTERM (a timeout, a scheduler, ``systemctl stop``) and SIGHUP (the
    terminal closed; not where ``nohup`` ignores it) stop it as Ctrl-C does, the finished tasks
    kept; ``signum`` says which came, for the exit code (128 + it, as ``fer-pipe run``). A
    KeyboardInterrupt is raised, not a class of its own: Ray's waits turn whatever a handler
    raises into one. The handlers before are put back after; main thread only, as handlers are."""

    def __init__(self) -> None:
        self.signum = signal.SIGINT

    def handled(self) -> AbstractContextManager[None]:
        return handling([signal.SIGTERM] + ([] if hangup.ignored() else [signal.SIGHUP]), self._stop)

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        self.signum = signal.Signals(signum)
        if signum == signal.SIGHUP:
            hangup.to_devnull(hangup.terminal_fds())  # what is still said has no terminal to go to
        raise KeyboardInterrupt(self.signum.name)


RAY_GIVES_UP = "RAY_gcs_rpc_server_reconnect_timeout_s"
"""Ray's setting (60 s by default) of how long its driver waits for a cluster head it lost before
it ends the process natively, with its own log lines and no word of the batch's. Tasks
already placed may still finish meanwhile."""


def cluster_lost_after_s() -> float:
    """How long the cluster's head may not answer before a batch says so and ends: shortly
    before Ray would end it without a word, so that what finishes meanwhile is kept."""
    try:
        ray_s = float(os.environ.get(RAY_GIVES_UP, "60"))
    except ValueError:
        ray_s = 60.0
    return max(5.0, ray_s - 15.0)


def watch_cluster(gcs_address: str, on_lost: Callable[[float], None]) -> threading.Event:
    """A thread that connects to the cluster's head (its GCS, HOST:PORT) every second and calls
    ``on_lost`` with how long it has not answered once that is ``cluster_lost_after_s``; set
    the returned event to end it."""
    head = host_port(gcs_address)
    limit = cluster_lost_after_s()
    done = threading.Event()

    def watch() -> None:
        answered = time.monotonic()
        while not done.wait(1.0):
            try:
                socket.create_connection(head, timeout=1.0).close()
                answered = time.monotonic()
            except OSError:
                if time.monotonic() - answered >= limit:
                    on_lost(limit)
                    return

    threading.Thread(target=watch, name="fer-pipe:cluster-watch", daemon=True).start()
    return done


def is_loopback_address(address: str | None) -> bool:
    return not address or is_loopback(host_port(address)[0])


def refuse_what_ray_cannot_take(inputs: Sequence[str]) -> None:
    """InputError where this process's command line or working folder holds a name that is not
    UTF-8: Ray hands both to its core as UTF-8, and a Latin-1 ``café.mp4`` from a glob, an
    ``--out`` or the folder batch ran in ended it in a traceback before any task, nothing done.
    A folder given as the input names such a file in its own failed line instead."""
    for arg in sys.orig_argv:
        if not _encodes(arg):
            video = os.path.expanduser(arg) in inputs and not os.path.isdir(arg)
            instead = ("give the folder it is in (its files of such names then fail alone, named), or rename it"
                       if video else "rename it, or give another name")
            raise InputError(f"batch: the argument {printable(arg)} is not valid UTF-8, and Ray cannot start with "
                             f"it on the command line; {instead}")
    folder = os.getcwd()
    if not _encodes(folder):
        raise InputError(f"batch: the folder it runs in, {printable(folder)}, has a name that is not valid UTF-8, "
                         "which Ray cannot take; run it from another folder")


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a byte that is not UTF-8, held as a surrogate escape
        return False
    return True


def check_cluster(address: str | None) -> str | None:
    """The address to join, ``auto`` resolved (``started_here``); InputError unless something
    listens there (HOST:PORT or ray://HOST:PORT): ray.init retries an address nobody answers at
    for minutes, printing Ray's own log lines."""
    if not address:
        return address
    given, address = address, started_here() if address == "auto" else address
    if address is None:
        raise InputError(f"--address auto: {NO_CLUSTER_HERE}")
    host, port = host_port(address)
    if not host or port is None:
        raise InputError(f"--address {given}: expected HOST:PORT, ray://HOST:PORT or auto"
                         + (f" (RAY_ADDRESS or the last ray start here gave {address})" if given != address else ""))
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        where = "there" if given == address else f"at {address}, which RAY_ADDRESS or the last ray start here gave"
        raise InputError(f"--address {given}: no Ray cluster answers {where} "
                         f"({exc.strerror or exc}); is its head node started (ray start --head)?") from None
    return address


NO_CLUSTER_HERE = ("no Ray cluster runs on this machine; start one (ray start --head) or leave out --address for a "
                   "Ray of this run's own")


def started_here() -> str | None:
    """What ``auto`` means to Ray (RAY_ADDRESS, else the address the last ``ray start --head``
    on this machine wrote), less Ray's fallback to any Ray process it finds: that took another
    fer-pipe batch's private Ray, bound to 127.0.0.1, dialled it at the machine's own address, and
    waited minutes with the stop signals held, saying nothing of its own."""
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    temp = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"  # Ray's own order
    try:
        return Path(temp, "ray", "ray_current_cluster").read_text(encoding="utf-8").strip() or None
    except (OSError, ValueError):
        return None


def import_ray(address: str | None) -> ModuleType:
    """Ray, imported as ``address`` needs it; a UserError where it is not installed, which
    ``run_batch`` meets before it makes the results folder.

    Ray rewrites a loopback address into the machine's routable IP unless it is told the
    machine is not part of a cluster; that switch must be set before ``ray`` is imported.
    Usage statistics are switched off: a batch run sends nothing anywhere.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if is_loopback_address(address):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise UserError("batch needs Ray, which is not installed: pip install -e '.[batch]' in a source checkout, "
                        "pip install 'fer-pipe[batch]' otherwise") from None
    return ray


def start_ray(address: str | None, num_cpus: int | None) -> ModuleType:
    """Connect to ``address``, or start a one-node Ray on this machine bound to 127.0.0.1."""
    ray = import_ray(address)
    import logging

    if ray.is_initialized():  # connected already, by run_batch's check of --address
        return ray
    options: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False,
                                   logging_level=logging.ERROR,
                                   runtime_env={"env_vars": PINNED_THREADS})
    with _stops_held() as held:
        if address:
            try:
                ray.init(address=address, **options)
            except ConnectionError as exc:
                raise InputError(f"--address {address}: {not_connected(exc)}") from None
        else:  # "local": a Ray of its own, not the cluster RAY_ADDRESS or the last `ray start` here names
            try:
                ray.init(address="local", num_cpus=num_cpus or usable_cpus(), _node_ip_address="127.0.0.1",
                         object_store_memory=LOCAL_OBJECT_STORE, **options)
            except Exception as exc:  # a bare path, or a 40-line traceback for a full one; --debug shows it
                said = f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) and exc.filename else " ".join(str(exc).split())
                raise InputError(f"batch: Ray could not start on this machine ({said}); it keeps its session in "
                                 "$RAY_TMPDIR, else $TMPDIR, else /tmp, and its token in ~/.ray: give it writable "
                                 "folders with room, the first at a short path (its sockets' paths hold 107 bytes "
                                 "at most)") from exc
    if held:  # Ray is whole now, so it shuts down cleanly; then the stop goes on as it came
        stop_ray(ray)
        signal.raise_signal(held[0])
    return ray


def stop_ray(ray: ModuleType) -> list[int]:
    """``ray.shutdown`` with the stop signals held, and those that came meanwhile. A second
    Ctrl-C (people press it again when the first seems slow) cut it short: Ray's agents ran on
    for minutes (180 MB), and the batch ended with exit 1 or an "Exception ignored in atexit
    callback" traceback."""
    with _stops_held() as held:
        ray.shutdown()
    return held


def not_connected(exc: ConnectionError) -> str:
    """Why ``ray.init`` did not connect to the cluster, said as far as can be told. Ray says
    only "Failed to connect", also where the cluster refused a driver without its token (Ray's
    token authentication, which ``ray start`` of recent versions turns on): a user who had just
    started the cluster the README's way read no reason."""
    if os.environ.get("RAY_AUTH_MODE"):
        return str(exc)
    return (f"{exc}; if the cluster takes only drivers with its token (Ray's token authentication), set "
            "RAY_AUTH_MODE=token, with the token in ~/.ray/auth_token or RAY_AUTH_TOKEN")


def _stops_held() -> AbstractContextManager[list[int]]:
    """Hold Ctrl-C, SIGTERM and SIGHUP while ``ray.init`` (or ``ray.shutdown``: ``stop_ray``)
    runs, seconds, listing those that came. Interrupted inside it, Ray was left half started: its agents ran on for ever (180 MB),
    and ``ray.shutdown`` of it crashed the process (SIGSEGV). The handlers before are put back
    after, which also takes SIGTERM back from the two ray.init sets (a Python one, and a native
    crash handler that dumped a stack and exited 1, or aborted). An ignored signal stays so."""
    return signals_held((signal.SIGINT, signal.SIGTERM, signal.SIGHUP))
