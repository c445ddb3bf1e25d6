"""``push``: every frame's event to a collector (``fer-pipe collect``) over ZeroMQ PUSH.

Unlike the ``zmq`` sink (PUB: lossy live fan-out that never waits), a collector must not lose
events, so sends block when the high-water mark is reached: while the collector is up, every
event reaches it; while it is down, up to ``sndhwm`` events wait in this process, and then the
pipeline waits too, or, where live sources alone feed it, the sink's own queue drops its oldest
frames, as any sink that falls behind a live source does (the CSV beside it goes on).

Each event is the ``frame`` event of ``fer_pipe.events`` plus ``seq``, counting from 0 per source,
and ``run``, drawn anew in each process. The collector tells a gap (a ``seq`` skipped within a
run) from a restart (a new ``run`` for a source) and logs both, naming the source. A live
source's outage goes the same way, numbered in the same sequence: a ``source_down`` event once
per outage and again every ``down_again_s``, and a ``source_up`` with its next frame (the
collector writes no row of them and republishes them), so that a subscriber of a collector hears
of a camera that is down as one of the ``zmq`` sink does.
"""
from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Iterable
from typing import Any

import zmq
from pydantic import Field, field_validator, model_validator
from zmq.utils.monitor import recv_monitor_message

from fer_pipe.endpoints import check_connectable, check_private, peer_socket, unresolved_host
from fer_pipe.errors import InputError, OutputError
from fer_pipe.events import encode, frame_event
from fer_pipe.messages import FACES, Packet
from fer_pipe.outage_notices import OutageNotices
from fer_pipe.stage import Sink, StageParams

STOP_POLL_MS = 500
"""While sndhwm events wait for a collector, how often a blocked send checks for a stop."""
PROBE_LINGER_S = 0.5
"""The linger of a close once the collector that was there has left and linger_s was waited
for it to come back: long enough to tell events held, which keep the close open for all of
it, from none, which end it at once. The whole linger_s again made a shard whose collector had
gone take twice linger_s to stop."""

NONE_YET_S = 10.0
"""With no collector connected this long after the sink opened, it says so once: the line before
came only with sndhwm events held, 17 minutes at a camera's 10 a second, the status line showing
the sink's rate as if all were well."""

LINGER_SLACK_S = 0.002
"""A close that lasts linger_s, less this for libzmq's cached millisecond clock, was cut off with
events held."""


class PushParams(StageParams):
    connect: str = Field("tcp://127.0.0.1:5560", description="the collector: tcp://HOST:PORT or ipc://PATH")
    public: bool = Field(False, description="allow a non-loopback collector (events leave the machine)")
    sndhwm: int = Field(10_000, ge=1, le=10_000_000, description="events held while the collector is "
                                                                 "away before the pipeline waits")
    linger_s: float = Field(5.0, ge=0, le=600, description="at the end, time allowed to deliver held events")
    sndbuf_kib: int = Field(16, ge=4, le=4096, description="the kernel's send buffer for the collector's "
                                                          "connection: events in it when a stalled collector "
                                                          "drops it are lost unseen; it also caps the rate a "
                                                          "link carries (16 KiB per round trip), so raise it for "
                                                          "a far collector")
    precision: int = Field(4, ge=1, le=9, description="decimals of probabilities and confidence")
    down_again_s: float = Field(10.0, ge=0, description="while a live source is down, say so again about this "
                                                        "often, in wall-clock seconds, so that a subscriber of the "
                                                        "collector that connects during an outage hears of it "
                                                        "(0: once per outage)")

    _connect_form = field_validator("connect")(check_connectable)

    @model_validator(mode="after")
    def _loopback_unless_public(self) -> PushParams:
        check_private(self.connect, self.public)
        return self


REFUSED = ("took the connection and dropped it before ZeroMQ's handshake (the collector's --publish endpoint "
           "or a zmq sink's, which publish? or a tunnel or proxy, ssh -L or docker -p, with no collector behind it?)")


class PushSink(Sink):
    """Sends every frame's event, and a live source's outages (source_down, source_up), to a
    fer-pipe collect collector over ZeroMQ PUSH.

    One event per frame, faces or not, so the collector's CSV has every frame, like ``csv``'s.

    PUSH queues events for an absent collector and ZeroMQ drops them silently when the socket
    closes, so the socket's monitor tells whether a collector is connected: a run that ends with
    none (after waiting ``linger_s`` for one) fails with a line saying its events were lost,
    rather than reporting them as sent.
    """

    Params = PushParams
    params: PushParams
    reads = FACES

    def open(self) -> None:
        self.run_id = secrets.token_hex(4)
        self._seq: dict[str, int] = {}
        self._outages = OutageNotices(self.params.down_again_s)
        self._ctx = zmq.Context()
        self._sock = peer_socket(self._ctx, zmq.PUSH, self.params.connect)
        self._sock.setsockopt(zmq.SNDHWM, self.params.sndhwm)
        # Left to the kernel, this buffer grew to 4 MiB and took thousands of events a stalled collector
        # never read: the close returned at once as if they were delivered, and the kernel dropped them
        # with the exited shard's socket. Kept small, what the collector has not taken waits in
        # ZeroMQ's queue, which linger_s sees.
        self._sock.setsockopt(zmq.SNDBUF, self.params.sndbuf_kib * 1024)
        self._monitor = self._sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
                                                      | zmq.EVENT_DISCONNECTED)
        self._connected = self._ever_connected = self._refused = False
        self._last_event = 0
        self.unsent = 0
        self._waiting_since: float | None = None
        self._took_before = False  # a collector had taken events when the wait began
        self._away_since: float | None = None  # when a connected collector went away
        self._none_yet_at: float | None = time.monotonic() + NONE_YET_S  # when to say none came, until one does
        try:
            self._sock.connect(self.params.connect)
        except zmq.ZMQError as exc:  # a host ZeroMQ cannot parse (tcp://%:5560): check_connectable takes the common slips
            self._ctx.destroy(linger=0)  # its sockets too, the monitor's included: the runner closes no failed open
            raise InputError(f"push {self.params.connect}: cannot connect: {zmq.strerror(exc.errno)}") from None
        self._no_such_host = unresolved_host(self.params.connect)
        if self._no_such_host:
            print(f"fer-pipe: push sink {self.name!r}: no such host {self._no_such_host!r} (yet?): events are held "
                  "until it resolves and a collector there takes them", file=sys.stderr, flush=True)

    def consume(self, packet: Packet) -> None:
        back = self._outages.on_frame(packet)
        if back is not None:
            self._send(back)
        self._send(frame_event(packet, self.params.precision))

    def outage(self, packet: Packet) -> Iterable[Packet]:
        """Say the source down once per outage, and again every ``down_again_s`` while it stays so
        (``fer_pipe.outage_notices``): the collector republishes each, and a subscriber that
        connects to it during the outage would otherwise hear nothing until the camera's return."""
        self._collector_connected(0.0)  # read the monitor, which no send reads while nothing is due (see there)
        down = self._outages.on_outage(packet)
        if down is not None:
            self._send(down)
        return ()

    def _send(self, event: dict[str, Any]) -> None:
        """One event, numbered in its source's sequence, sent as PUSH allows (see ``consume``)."""
        self._collector_connected(0.0)  # read what the monitor says, every event: see there
        if self._none_yet_at is not None:
            self._say_none_yet()
        source = event["source"]
        seq = self._seq.get(source, 0)
        event["seq"], event["run"] = seq, self.run_id
        message = encode(event)
        while True:
            try:
                self._sock.send_multipart(message, flags=zmq.NOBLOCK)
            except zmq.Again:
                # sndhwm events are held and no collector takes them: the pipeline waits, but
                # not through a stop, which would then hang until systemd killed the run
                if self.stop_requested():
                    self.unsent += 1
                    break
                self._wait_for_collector()
            else:
                if self._waiting_since is not None:  # "again" only for one that took events before (s66c 1)
                    print(f"fer-pipe: push sink {self.name!r}: run {self.run_id}: the collector at "
                          f"{self.params.connect} takes events{' again' if self._took_before else ''}, after "
                          f"{time.monotonic() - self._waiting_since:.0f} s", file=sys.stderr, flush=True)
                    self._waiting_since = None
                break
        self._seq[source] = seq + 1

    def _wait_for_collector(self) -> None:
        """Backpressure, not a stall: a restarted collector may take minutes to come back, and
        failing the run then would lose the sndhwm events held for it."""
        if self._waiting_since is None:
            self._waiting_since, self._took_before = time.monotonic(), self._ever_connected
            who = (f"the collector at {self.params.connect} takes events slower than they come (or a network split "
                   f"keeps them from it); {self.params.sndhwm} are held" if self._connected
                   else f"the peer at {self.params.connect} {REFUSED}" if self._refused
                   else f"no collector at {self.params.connect} takes events; {self.params.sndhwm} are held")
            print(f"fer-pipe: push sink {self.name!r}: run {self.run_id}: {who} and the sink waits", file=sys.stderr,
                  flush=True)
        self.waiting_outside()
        self._sock.poll(STOP_POLL_MS, zmq.POLLOUT)
        self._collector_connected(0.0)

    def _collector_connected(self, wait_s: float) -> bool:
        """Whether a collector is connected now, waiting up to ``wait_s`` for one to connect.

        It reads every event the monitor holds. It must run often: libzmq's I/O thread sends
        monitor events with a blocking send, so once about 2,000 lie unread (a collector that
        restarted a thousand times, or a proxy that accepts and drops connections while the
        collector is down: ten a second) that thread stops, and with it every send, for good.
        So every event sent and every outage packet reads it: with ``down_again_s`` 0 a camera
        down all night sent nothing after its first ``source_down``, and 200 s of an ``ssh -L``
        tunnel with no collector behind it stopped the sink until the camera came back (s63b 1)."""
        deadline = time.monotonic() + wait_s
        while True:
            remaining = 0.0 if self._connected else max(0.0, deadline - time.monotonic())
            if not self._monitor.poll(remaining * 1000):
                return self._connected
            event = recv_monitor_message(self._monitor)["event"]
            was, self._connected = self._connected, event == zmq.EVENT_HANDSHAKE_SUCCEEDED
            self._say_comings_and_goings(was)
            self._ever_connected |= self._connected
            # connected, then dropped before the handshake: another socket type (the collector's
            # --publish) that ZeroMQ refuses, or no ZeroMQ at all; the sink's queue goes with it
            self._refused = (self._refused and not self._connected
                             or event == zmq.EVENT_DISCONNECTED and self._last_event == zmq.EVENT_CONNECTED)
            self._last_event = event

    def _say_none_yet(self) -> None:
        """Once, NONE_YET_S after the open, where no collector has connected (s65c 1): a wrong
        address, or a collector not started, said while the events held for it are few."""
        if self._ever_connected or self._waiting_since is not None:  # the wait's own line says it then
            self._none_yet_at = None
        elif self._none_yet_at is not None and time.monotonic() >= self._none_yet_at:
            self._none_yet_at = None
            who = (f"no collector has connected in {NONE_YET_S:g} s: the peer at {self.params.connect} {REFUSED}"
                   if self._refused else f"no collector at {self.params.connect} has connected in {NONE_YET_S:g} s")
            print(f"fer-pipe: push sink {self.name!r}: run {self.run_id}: {who}; the sink holds its events for one "
                  f"(so far {sum(self._seq.values())}, up to sndhwm {self.params.sndhwm}), and then waits",
                  file=sys.stderr, flush=True)

    def _say_comings_and_goings(self, was: bool) -> None:
        """A line when the collector first comes, when it leaves and when one takes its place: a
        shard said nothing until its sndhwm events were held, minutes at a camera's rate, its
        status line showing the push sink's rate as if all were well; stopped meanwhile, it lost
        them (s62e 1). The first line gives the run id that the collector's gap and restart lines
        name, which a shard said only at its end (s62e 6)."""
        where = f"fer-pipe: push sink {self.name!r}: run {self.run_id}:"
        if self._connected and not self._ever_connected:
            print(f"{where} the collector at {self.params.connect} connected; the run's events are numbered from "
                  "seq 0 in each source", file=sys.stderr, flush=True)
        elif was and not self._connected:
            self._away_since = time.monotonic()
            print(f"{where} the collector at {self.params.connect} went away; events are held for it, up to sndhwm "
                  f"{self.params.sndhwm}", file=sys.stderr, flush=True)
        elif self._connected and self._away_since is not None:
            print(f"{where} a collector at {self.params.connect} connected again, after "
                  f"{time.monotonic() - self._away_since:.0f} s", file=sys.stderr, flush=True)
            self._away_since = None

    @classmethod
    def closing_s(cls, params: PushParams) -> float:
        return 2 * params.linger_s  # waiting for a collector, then delivering to it

    def close(self) -> None:
        sent = sum(self._seq.values()) - self.unsent
        delivering = self._collector_connected(self.params.linger_s if sent else 0.0)
        self._sock.disable_monitor()
        self._monitor.close(linger=0)
        held = self._close_holding_events(delivering) and sent > 0
        held_then = f"the peer {REFUSED}" if self._refused else f"sndhwm {self.params.sndhwm} were held"
        dropped = (f"; {self.unsent} more could not be queued when the run stopped"
                   + ("" if self._refused else f" ({held_then})") if self.unsent else "")  # the peer is said after
        # exit 2 where no collector ever came (a wrong address, one never started), 1 where one
        # was there and left or fell behind: the output failed, not what the user gave
        error = OutputError if self._ever_connected else InputError
        if held and not delivering:
            lost = (f"none of run {self.run_id}'s {sent} events were delivered" if not self._ever_connected
                    else f"run {self.run_id}'s events still held (of {sent} sent) were lost")
            unresolved = self._no_such_host and unresolved_host(self.params.connect)  # looked up again only then
            why = (f"no such host {unresolved!r}" if unresolved else f"the peer there {REFUSED}" if self._refused
                   else "is fer-pipe collect running there?")
            raise error(f"push sink {self.name!r}: no collector at {self.params.connect} when the run "
                        f"ended (waited linger_s, {self.params.linger_s:g} s): {lost}{dropped}; {why}")
        if held:
            raise error(f"push sink {self.name!r}: the collector at {self.params.connect} had not "
                        f"taken all of run {self.run_id}'s {sent} events when linger_s "
                        f"({self.params.linger_s:g} s) ran out: those still held then were lost"
                        f"{dropped}; give a slow collector a longer linger_s")
        if self.unsent:
            absent = "" if delivering or self._refused else " and no collector took them"
            raise error(f"push sink {self.name!r}: {self.unsent} of run {self.run_id}'s "
                        f"{sent + self.unsent} events could not be queued for "
                        f"{self.params.connect} when the run stopped ({held_then}{absent})")
        print(f"fer-pipe: push sink {self.name!r}: run {self.run_id}: {sent} events to "
              f"{self.params.connect}", file=sys.stderr)

    def _close_holding_events(self, delivering: bool) -> bool:
        """Close the socket; whether it still held events, which are then lost.

        ZeroMQ gives no queue depth, but a close with a linger time returns as soon as nothing
        is held, so one that lasts the whole linger time ended with events held. With no linger
        time there is nothing to time: what was never connected, or is not now, counts as held.
        """
        linger_s = self.params.linger_s if delivering else min(PROBE_LINGER_S, self.params.linger_s)
        linger_ms = int(linger_s * 1000) if self._ever_connected else 0
        closing = time.monotonic()
        self._sock.close(linger=linger_ms)
        self._ctx.term()
        if not linger_ms:
            return not delivering
        return time.monotonic() - closing >= linger_ms / 1000 - min(LINGER_SLACK_S, linger_ms / 2000)
