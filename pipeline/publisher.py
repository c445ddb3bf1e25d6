"""Events out on a ZeroMQ XPUB socket, for every stage that publishes (``zmq``, ``episodes``).

Publishing never waits for a subscriber: sends are non-blocking against a high-water mark and
an event that does not fit is dropped and counted, so a slow or absent subscriber cannot slow
the pipeline, and the drops are said when the socket closes. (ZeroMQ can count drops only when
a full queue refuses the send, which then drops the event for every subscriber; a consumer
that may stall should get its own sink.) The socket is an XPUB (a PUB that also sees
subscriptions), which lets a run wait for its first subscribers before the first event instead
of losing it to ZeroMQ's slow joiner.
"""
from __future__ import annotations

import errno
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq
import zmq.auth

from .curve_keys import ClientFolder, load_keys
from .endpoints import is_loopback, peer_socket, tcp_host_port
from .errors import InputError
from .events import MAX_SUBSCRIPTION_BYTES, encode

if TYPE_CHECKING:
    from zmq.auth.thread import ThreadAuthenticator

STOP_CHECK_S = 0.2
"""While waiting for subscribers, how often a stop of the run is looked for."""


TEND_S = 1.0
"""How often a publisher that sends nothing still reads its socket (``Publisher.tend``)."""


SUBSCRIPTIONS_READ_S = 0.005
"""The longest a send reads subscription messages away for: 125 ms a second at 25 frames a
second, however many a subscriber floods, and a flood's backlog is read off within seconds
once it stops."""


class Publisher:
    """A bound XPUB socket; ``kind`` and ``name`` name the stage in what it says (``zmq sink 'events'``)."""

    def __init__(self, kind: str, name: str, endpoint: str, sndhwm: int = 1000, curve_secret_key: str = "",
                 curve_clients: str = "") -> None:
        self.who = f"{kind} sink {name!r}"
        self.sndhwm = sndhwm
        self.sent = self.dropped = 0
        self._tended = 0.0
        self._ctx = zmq.Context()
        self._auth: ThreadAuthenticator | None = None
        self._sock = peer_socket(self._ctx, zmq.XPUB, endpoint)
        self._sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription arrives, for await_subscribers
        self._sock.setsockopt(zmq.XPUB_NODROP, 1)  # a full queue raises Again, so drops are counted
        self._sock.setsockopt(zmq.SNDHWM, sndhwm)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)
        # peer_socket's pings drop a subscriber gone without closing its connection; otherwise its
        # full queue made every send fail (XPUB_NODROP), for every subscriber, until TCP gave up.
        # libzmq answers pings in its own thread, so a subscriber busy in its code still does
        # until its receive queue is full; one that has not read for that long is dropped too,
        # and what was queued for it is lost (counted as sent: ZeroMQ does not say how much).
        try:
            self._bind(kind, endpoint, curve_secret_key, curve_clients)
        except BaseException:
            self.close(0.0)  # release socket, thread and context: nothing else will
            raise

    def _bind(self, kind: str, endpoint: str, secret_file: str, clients: str) -> None:
        where = tcp_host_port(endpoint)
        if secret_file:
            from zmq.auth.thread import ThreadAuthenticator  # with asyncio: 40 ms of each start, CURVE on or not

            public, secret = load_keys(secret_file, secret=True, what="curve_secret_key", warn=False)  # said by its check
            self._auth = ThreadAuthenticator(self._ctx)
            self._auth.start()
            if clients:
                self._auth.configure_curve_callback(domain="*", credentials_provider=ClientFolder(clients, self.who))
            else:
                self._auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
            self._sock.curve_publickey = public
            self._sock.curve_secretkey = secret
            self._sock.curve_server = True
        elif where and not is_loopback(where[0]):
            print(f"fer-pipe: WARNING: {self.who} binds {endpoint} without CURVE keys: anyone who can reach "
                  "this address reads the events, unencrypted", file=sys.stderr)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as exc:
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else str(exc)
            raise InputError(f"{kind} {endpoint}: cannot bind: {reason}") from None

    def await_subscribers(self, wanted: int, timeout: float, stop_requested: Callable[[], bool],
                          waiting_outside: Callable[[], None]) -> None:
        """Wait until ``wanted`` subscriptions reached the socket: after that none of their events
        is lost. A stop ends the wait, which a Ctrl-C would otherwise sit out to the timeout."""
        seen = 0
        deadline = time.monotonic() + timeout
        while seen < wanted and not stop_requested():
            waiting_outside()  # a wait longer than --stall-timeout is not a stall
            left = deadline - time.monotonic()
            if left <= 0:
                print(f"fer-pipe: {self.who}: {seen} of {wanted} subscriptions after {timeout:g} s; publishing "
                      "anyway", file=sys.stderr)
                break
            if self._sock.poll(int(min(left, STOP_CHECK_S) * 1000), zmq.POLLIN):
                seen += self._sock.recv()[:1] == b"\x01"
        self._sock.setsockopt(zmq.XPUB_VERBOSE, 0)  # from now on a repeated subscription is not passed up

    def send(self, event: dict[str, Any]) -> bool:
        """Publish the event, or count it dropped; whether it was sent. Subscriptions are applied
        by ZeroMQ itself; their copies are read away for at most ``SUBSCRIPTIONS_READ_S``: all
        of them, a subscriber that flooded them held the pipeline (a 72-frame run took 114 s, or
        failed as stalled), and none, ZeroMQ kept them, 30 MiB a second."""
        self._read_subscriptions()
        try:
            self._sock.send_multipart(encode(event), flags=zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def tend(self) -> None:
        """Read the socket about every ``TEND_S`` where nothing is sent (frames without faces, a
        camera down, no heartbeat): libzmq frees what a subscriber that left held only as its
        socket is next used, and subscribers that came and went all night in an empty room (a
        health check's ``fer-pipe subscribe --count 1``, a consumer crash-looping) grew the
        sink by 11 KB each, 89 MiB over 8,000 (s63b 2)."""
        now = time.monotonic()
        if now - self._tended >= TEND_S:
            self._read_subscriptions()

    def _read_subscriptions(self) -> None:
        until = time.monotonic() + SUBSCRIPTIONS_READ_S
        self._tended = until
        try:
            while True:
                for _ in range(64):
                    self._sock.recv(zmq.NOBLOCK)
                if time.monotonic() > until:
                    break
        except zmq.Again:
            pass

    def close(self, linger_s: float) -> None:
        """Say what was dropped, then give queued events ``linger_s`` to leave."""
        if self.dropped:
            print(f"fer-pipe: {self.who}: {self.dropped} of {self.sent + self.dropped} events dropped "
                  f"(subscribers too slow; sndhwm {self.sndhwm})", file=sys.stderr)
        self._sock.close(linger=int(linger_s * 1000))
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()
