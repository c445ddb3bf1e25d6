"""``zmq``: emotion events on a ZeroMQ PUB socket, ``[topic, json]`` in the schema of ``fer_pipe.events``.

Publishing never waits for a subscriber: sends are non-blocking against a high-water mark and
an event that does not fit is dropped and counted, so a slow or absent subscriber cannot slow
the pipeline. (ZeroMQ can count drops only when a full queue refuses the send, which then
drops the event for every subscriber; a consumer that may stall should get its own sink.) The
socket is an XPUB (a PUB that also sees subscriptions), which lets a run wait for its first
subscribers before the first event instead of losing it to ZeroMQ's slow joiner.
"""
from __future__ import annotations

import errno
import ipaddress
import socket
import sys
import time

import zmq
import zmq.auth
from pydantic import Field, field_validator, model_validator
from zmq.auth.thread import ThreadAuthenticator

from fer_pipe.curve_keys import check_client_folder, load_keys
from fer_pipe.endpoints import check_form, check_private, ipv6_for, is_loopback, tcp_host_port
from fer_pipe.errors import InputError
from fer_pipe.events import encode, frame_event
from fer_pipe.messages import EXPRESSIONS, Packet
from fer_pipe.stage import Sink, StageParams


PEER_TIMEOUT_MS = 6000
"""A subscriber that answers no ZeroMQ ping for this long is disconnected. libzmq answers pings
in its own thread, so a subscriber busy in its code still does until its receive queue is full;
one that has not read for that long is disconnected too, and what was queued for it is lost
(counted as sent: ZeroMQ does not say how much)."""
STOP_CHECK_S = 0.2
"""While waiting for subscribers, how often a stop of the run is looked for."""


class ZmqParams(StageParams):
    endpoint: str = Field("tcp://127.0.0.1:5556", description="where to bind: tcp://HOST:PORT or ipc://PATH")
    public: bool = Field(False, description="allow binding a non-loopback address (events leave the machine)")
    heartbeat_s: float = Field(0.0, ge=0, description="for frames without faces, send an event with no faces "
                                                      "at most this often per source (0: never)")
    sndhwm: int = Field(1000, ge=1, le=1_000_000, description="events queued per subscriber before dropping")
    wait_subscribers: int = Field(0, ge=0, le=1000, description="before the first event, wait until this many "
                                                                "subscriptions have arrived")
    wait_timeout_s: float = Field(10.0, ge=0, description="give up waiting for subscribers after this long")
    linger_s: float = Field(1.0, ge=0, le=60, description="at the end, time allowed to deliver queued events")
    curve_secret_key: str = Field("", description="server secret key file from `fer-pipe keys` (enables CURVE)")
    curve_clients: str = Field("", description="folder of client public keys allowed to subscribe "
                                               "(empty: any client that knows the server key)")
    precision: int = Field(4, ge=1, le=9, description="decimals of probabilities and confidence")

    _endpoint_form = field_validator("endpoint")(check_form)

    @model_validator(mode="after")
    def _loopback_unless_public(self) -> ZmqParams:
        check_private(self.endpoint, self.public, " (and use CURVE keys)")
        if self.curve_clients and not self.curve_secret_key:
            raise ValueError("curve_clients needs curve_secret_key")
        return self


class ZmqSink(Sink):
    """Publishes one event per frame with faces on a ZeroMQ PUB socket (topic
    emotion.SOURCE), plus optional heartbeats."""

    Params = ZmqParams
    params: ZmqParams
    input_paths = ("curve_secret_key", "curve_clients")
    reads = EXPRESSIONS
    bind_params = ("endpoint",)

    @classmethod
    def preflight(cls, params: ZmqParams) -> None:
        if params.curve_secret_key:  # read here too, so a wrong key file is one line before any stage starts
            load_keys(params.curve_secret_key, secret=True)
        if params.curve_clients:
            check_client_folder(params.curve_clients)
        where = tcp_host_port(params.endpoint)
        if where is None:
            return
        host = "0.0.0.0" if where[0] == "*" else where[0]
        try:
            family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        except ValueError:
            return  # an interface or host name: ZeroMQ resolves it, and open() reports a busy port
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZeroMQ binds
            try:
                probe.bind((host, where[1]))
            except OSError as exc:
                raise InputError(f"zmq {params.endpoint}: cannot bind: {exc.strerror}") from None

    def open(self) -> None:
        p = self.params
        self.sent = self.dropped = 0
        self._last_sent: dict[str, float] = {}
        self._ctx = zmq.Context()
        self._auth: ThreadAuthenticator | None = None
        self._sock = ipv6_for(self._ctx.socket(zmq.XPUB), p.endpoint)
        self._sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription arrives, for wait_subscribers
        self._sock.setsockopt(zmq.XPUB_NODROP, 1)  # a full queue raises Again, so drops are counted
        self._sock.setsockopt(zmq.SNDHWM, p.sndhwm)
        # A subscriber gone without closing its connection (a suspended laptop, a partition)
        # answers no ping and is dropped after PEER_TIMEOUT_MS; otherwise its full queue made
        # every send fail (XPUB_NODROP), for every subscriber, until TCP gave up (15-30 min).
        self._sock.setsockopt(zmq.HEARTBEAT_IVL, PEER_TIMEOUT_MS // 3)
        self._sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, PEER_TIMEOUT_MS)
        try:
            self._start(p)
        except BaseException:
            self.close()  # a failed open is not closed by the runner: release socket, thread, context
            raise

    def _start(self, p: ZmqParams) -> None:
        where = tcp_host_port(p.endpoint)
        if p.curve_secret_key:
            self._serve_curve(p.curve_secret_key, p.curve_clients)
        elif where and not is_loopback(where[0]):
            print(f"fer-pipe: WARNING: zmq sink {self.name!r} binds {p.endpoint} without CURVE keys: "
                  "anyone who can reach this address reads the events, unencrypted", file=sys.stderr)
        try:
            self._sock.bind(p.endpoint)
        except zmq.ZMQError as exc:
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else str(exc)
            raise InputError(f"zmq {p.endpoint}: cannot bind: {reason}") from None
        self._await_subscribers(p.wait_subscribers, p.wait_timeout_s)

    def _serve_curve(self, secret_file: str, clients: str) -> None:
        public, secret = load_keys(secret_file, secret=True)
        self._auth = ThreadAuthenticator(self._ctx)
        self._auth.start()
        self._auth.configure_curve(domain="*", location=clients or zmq.auth.CURVE_ALLOW_ANY)
        self._sock.curve_publickey = public
        self._sock.curve_secretkey = secret
        self._sock.curve_server = True

    def _await_subscribers(self, wanted: int, timeout: float) -> None:
        """Wait until ``wanted`` subscriptions reached the socket: after that none of their events
        is lost. A stop ends the wait, which a Ctrl-C would otherwise sit out to the timeout."""
        seen = 0
        deadline = time.monotonic() + timeout
        while seen < wanted and not self.stop_requested():
            self.waiting_outside()  # a wait longer than --stall-timeout is not a stall
            left = deadline - time.monotonic()
            if left <= 0:
                print(f"fer-pipe: zmq sink {self.name!r}: {seen} of {wanted} subscriptions after "
                      f"{timeout:g} s; publishing anyway", file=sys.stderr)
                return
            if self._sock.poll(int(min(left, STOP_CHECK_S) * 1000), zmq.POLLIN):
                seen += self._sock.recv()[:1] == b"\x01"

    def consume(self, packet: Packet) -> None:
        while self._sock.poll(0, zmq.POLLIN):
            self._sock.recv()  # subscriptions are applied by ZeroMQ itself; the copies are only read away
        if not packet.faces:
            beat = self.params.heartbeat_s
            if not beat or packet.captured - self._last_sent.get(packet.source, -beat) < beat:
                return
        try:
            self._sock.send_multipart(encode(frame_event(packet, self.params.precision)), flags=zmq.NOBLOCK)
            self.sent += 1
            self._last_sent[packet.source] = packet.captured
        except zmq.Again:
            self.dropped += 1

    @classmethod
    def closing_s(cls, params: ZmqParams) -> float:
        return params.linger_s

    def close(self) -> None:
        if self.dropped:
            print(f"fer-pipe: zmq sink {self.name!r}: {self.dropped} of {self.sent + self.dropped} events "
                  f"dropped (subscribers too slow; sndhwm {self.params.sndhwm})", file=sys.stderr)
        self._sock.close(linger=int(self.params.linger_s * 1000))
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()
