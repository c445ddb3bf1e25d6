"""ZeroMQ endpoints: their form, whether events sent there stay on this machine, and the IP
version of the socket that takes one.

Events describe people's faces, so every network stage refuses a non-loopback address unless
its config says ``public: true``; the checks live here so each stage applies the same rule.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from .errors import InputError

if TYPE_CHECKING:
    import zmq


def host_port(address: str) -> tuple[str, int | None]:
    """Host (an IPv6 address without its brackets) and port of ``[SCHEME://]HOST:PORT``; the
    port is None where it is not a number from 1 to 65535. The one parser of such addresses,
    for ZeroMQ endpoints and Ray's ``--address``."""
    host, _, port = address.split("://")[-1].rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() and 0 < int(port) < 65536 else None


def tcp_host_port(endpoint: str) -> tuple[str, int | None] | None:
    """Host and port of a ``tcp://HOST:PORT`` endpoint, None for ipc:// and inproc://."""
    return host_port(endpoint) if endpoint.startswith("tcp://") else None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", an interface name or a host name: possibly reachable from outside


def check_form(endpoint: str) -> str:
    """The endpoint itself if it is ``tcp://HOST:PORT`` or ``ipc://PATH``; ValueError otherwise.
    A scheme twice (``tcp://tcp://...``) or an ipc path left empty (a ``${VAR}`` unset) passed,
    and ZeroMQ refused them only once every stage had started."""
    if endpoint.startswith("tcp://"):
        host, port = host_port(endpoint)
        if not host or port is None or "/" in endpoint[len("tcp://"):]:
            given = endpoint.rpartition(":")[2]  # tcp://127.0.0.1:0 was told the form it has (s67a 7)
            why = (f" (its port {given} is not a number from 1 to 65535)"
                   if given.isdigit() and host and "/" not in endpoint[len("tcp://"):] else "")  # not tcp://h/x:5555
            raise ValueError(f"expected tcp://HOST:PORT{why}, got {endpoint!r}")
    elif not endpoint.startswith("ipc://"):
        raise ValueError(f"expected tcp://HOST:PORT or ipc://PATH, got {endpoint!r}")
    elif endpoint == "ipc://":
        raise ValueError(f"expected ipc://PATH, got {endpoint!r} (no path)")
    return endpoint


def check_connectable(endpoint: str) -> str:
    """The endpoint itself if a socket can connect to it (``check_form``, and then more): ``*``
    is every address to a bind and none to a connect, and a path over a socket's length fits no
    socket. ZeroMQ refused both only in the stage's ``open``, once every stage had started and
    the CSV beside it had been emptied (s65a 1): a collector's ``--bind tcp://*:5560`` copied
    into a push sink's ``connect`` is an easy slip."""
    check_form(endpoint)
    where = tcp_host_port(endpoint)
    if where is not None and where[0] == "*":
        raise ValueError(f"{endpoint}: * (every address) is for a bind; connect to the host the peer runs on "
                         "(127.0.0.1 where it runs here)")
    if where is None:
        too_long = _ipc_path_too_long(endpoint[len("ipc://"):])
        if too_long:
            raise ValueError(f"{endpoint}: {too_long}")
    return endpoint


def check_host(host: str) -> str:
    """``host`` if it is an address or a name alone, which a stage joins to its port: one written
    as an endpoint (``tcp://127.0.0.1``) passed the checks, which read its last part, and ZeroMQ
    refused what was made of it once every stage had started."""
    bare = host.strip("[]")
    try:
        ipaddress.IPv6Address(bare)
    except ValueError:
        if not bare or any(mark in bare for mark in ":/[]"):
            raise ValueError(f"expected an address or a host name alone (127.0.0.1, ::1, 0.0.0.0), no scheme or "
                             f"port, got {host!r}") from None
    return host


def check_private(endpoint: str, public: bool, advice: str = "") -> None:
    """ValueError when events would leave the machine and the config did not say ``public: true``."""
    where = tcp_host_port(endpoint)
    if where and not is_loopback(where[0]) and not public:
        raise ValueError(f"{endpoint} is not a loopback address: events about faces would leave "
                         f"this machine; set public: true to allow it{advice}")


_claimed: ContextVar[dict[tuple[str, object], str] | None] = ContextVar("claimed", default=None)
"""Within ``one_binder_each``: each endpoint checked so far, and the stage type that binds it."""
WILDCARDS = ("*", "0.0.0.0", "::")


@contextmanager
def one_binder_each() -> Iterator[None]:
    """Around a run's preflight: a second stage checked for an endpoint one before it binds is
    refused. Each probe found the port free alone, and the second stage to bind failed after
    every stage had started, the other sinks' files already emptied."""
    token = _claimed.set({})
    try:
        yield
    finally:
        _claimed.reset(token)


def _same_place(a: tuple[str, object], b: tuple[str, object]) -> bool:
    """Whether two binds take one place: one ipc path, or one TCP port on one host or where
    either listens on every address."""
    if a == b:
        return True
    return "ipc" not in (a[0], b[0]) and a[1] == b[1] and (a[0] in WILDCARDS or b[0] in WILDCARDS)


def _place(endpoint: str) -> tuple[str, object]:
    """Where an endpoint binds, one key for its every spelling: ``localhost`` and 127.0.0.1 were
    two places to the check, so the second sink failed after every stage had started and the
    CSVs were emptied; so were ``/tmp/s.sock`` and ``/tmp/./s.sock``, and the second took the
    first's socket, exit 0."""
    where = tcp_host_port(endpoint)
    if where is None:
        path = endpoint[len("ipc://"):]
        return "ipc", path if path.startswith("@") or path == "*" else os.path.realpath(path)
    host, port = where
    address = _bind_address(host, port)
    return (host if address is None else address[0]), port


def _bind_address(host: str, port: int | None) -> tuple[str, socket.AddressFamily] | None:
    """The address ZeroMQ binds for ``host``, and its family: an IP address as given, a name as its
    first IPv4 address (ZeroMQ resolves ``localhost`` so, its IPv6 left off); None for an
    interface's name (ZeroMQ binds its address, which may change until then) or no such host."""
    host = "0.0.0.0" if host == "*" else host
    try:
        address = ipaddress.ip_address(host)
        return address.compressed, socket.AF_INET6 if address.version == 6 else socket.AF_INET
    except ValueError:
        if host in (name for _, name in socket.if_nameindex()):
            return None
        try:
            return socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)[0][4][0], socket.AF_INET
        except (socket.gaierror, UnicodeError):
            return None


def _claim(endpoint: str, who: str) -> None:
    claimed = _claimed.get()
    if claimed is None:
        return
    key = _place(endpoint)
    clash = next((other for place, other in claimed.items() if _same_place(place, key)), None)
    if clash is not None:
        raise InputError(f"{who} {endpoint}: another stage of this config ({clash}) binds it too; give each its "
                         "own port")
    claimed[key] = who


IPC_PATH_MAX = 107
"""Bytes of a Unix socket's path, less its terminating zero (``sun_path`` on Linux)."""


def check_bindable(endpoint: str, who: str) -> None:
    """InputError where an endpoint cannot be bound: another process, or another stage of the
    run, holds its TCP port or its ``ipc://`` socket, its host is neither an address nor an
    interface, or its ipc path cannot be a socket. Said before any stage starts, not from the
    stage's process once every stage has started and the other sinks had emptied their files."""
    _claim(endpoint, who)
    problem = bind_problem(endpoint)
    if problem:
        raise InputError(f"{who} {endpoint}: cannot bind: {problem}")


def bind_problem(endpoint: str) -> str | None:
    """Why a ``tcp://`` or ``ipc://`` endpoint cannot be bound, or None."""
    where = tcp_host_port(endpoint)
    return ipc_problem(endpoint) if where is None else _tcp_problem(*where)


def _tcp_problem(host: str, port: int | None) -> str | None:
    """Why ZeroMQ could not bind this host's port, tried at the address it binds."""
    bound = _bind_address(host, port)
    if bound is None:
        if host in (name for _, name in socket.if_nameindex()):
            return None  # an interface: ZeroMQ binds its address, which may change until then
        return f"no such host or interface {host!r}"
    host, family = bound
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZeroMQ binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:  # the bare "Cannot assign requested address"
                return f"{host} is not an address of this machine (bind one of its own, or 0.0.0.0 for all)"
            return exc.strerror
    return None


def ipc_problem(endpoint: str) -> str | None:
    """Why an ``ipc://PATH`` cannot be bound without harm. ZeroMQ unlinks whatever is at PATH
    before it binds, so a second run given the first's path took its subscribers silently, and
    the first, still running, was unreachable for good after; a file there would go the
    same way. A socket nobody listens on (a run killed outright) is taken over, as ZeroMQ does."""
    path = endpoint[len("ipc://"):]
    if path.startswith("@") or path == "*":  # Linux's abstract names, ZeroMQ's own temporary path
        return None
    too_long = _ipc_path_too_long(path)
    if too_long:
        return too_long
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        return f"no folder {folder}"
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if not stat.S_ISSOCK(mode):
        return "a file that is not a socket is there, and ZeroMQ would delete it"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            return None
        except OSError:  # a socket we may not connect to (another user's): not ours to take
            pass
    return "address already in use (another process listens on that socket)"


def _ipc_path_too_long(path: str) -> str | None:
    size = len(os.fsencode(path))
    return f"its path is {size} bytes, and a socket's is {IPC_PATH_MAX} at most" if size > IPC_PATH_MAX else None


def unresolved_host(endpoint: str) -> str:
    """The host name of a ``tcp://`` endpoint that does not resolve now, else empty. ZeroMQ
    retries such a name without a word, so a typo in a collector's name read as a collector
    that was not running."""
    where = tcp_host_port(endpoint)
    if where is None or where[0] == "*":
        return ""
    try:
        ipaddress.ip_address(where[0])
        return ""
    except ValueError:
        pass
    try:
        socket.getaddrinfo(where[0], None)
    except (socket.gaierror, UnicodeError):  # UnicodeError: a name IDNA refuses (collector..lan)
        return where[0]
    return ""


def tcp_endpoint(host: str, port: int) -> str:
    """``tcp://HOST:PORT``, with an IPv6 address in the brackets ZeroMQ wants (given with or
    without them)."""
    host = host.strip("[]")
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


PEER_TIMEOUT_MS = 6000
"""A peer that answers no ZeroMQ ping for this long is disconnected (see ``peer_socket``)."""


def peer_socket(ctx: zmq.Context, kind: int, endpoint: str) -> zmq.Socket:
    """A ZeroMQ socket of ``kind`` for ``endpoint``, a peer that may be on another machine.

    It pings its peers every PEER_TIMEOUT_MS / 3: a peer gone without closing its connection
    (its host crashed, a partition, a suspended laptop) answers no ping and is disconnected
    after PEER_TIMEOUT_MS, where TCP takes 15-30 min, and a socket that connects then reconnects
    to whoever is at the address now. Without it, a push sink whose collector's host died sent
    into the dead connection to the end of the run, never reaching the collector restarted
    there, and a subscriber waited for ever on a publisher restarted.

    IPv6 is on where ``endpoint`` is an IPv6 address (``tcp://[::1]:5556``), which the checks
    above accept as loopback: ZeroMQ leaves IPv6 off, and it failed in the stage with "No such
    device". Only there: with IPv6 on, ZeroMQ resolves ``localhost`` and an interface name to
    their IPv6 address first (a collector on 127.0.0.1 then gets nothing) and binds ``*`` on
    IPv6 too."""
    sock = ctx.socket(kind)
    sock.heartbeat_ivl = PEER_TIMEOUT_MS // 3
    sock.heartbeat_timeout = PEER_TIMEOUT_MS
    where = tcp_host_port(endpoint)
    if where and ":" in where[0]:
        sock.ipv6 = True
    return sock
