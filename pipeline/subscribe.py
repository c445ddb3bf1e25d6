"""``fer-pipe subscribe``: the receiving end of the ``zmq`` sink.

Events are printed one per line as they arrive (JSON exactly as sent, or CSV rows with the CSV
sink's columns) until Ctrl-C, which ends it with exit code 0.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import json
import os
import signal
import sys
import time
from collections.abc import Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

from .arguments import home, peer_endpoint, whole
from .csvfile import CsvOutput
from .curve_keys import load_keys
from .endpoints import peer_socket, unresolved_host
from .errors import InputError, not_text
from .events import FRAME_COLUMNS, MALFORMED, MAX_EVENT_BYTES, MAX_SUBSCRIPTION_BYTES, TOPIC_PREFIX, decode, event_rows
from .malformed_lines import MalformedLines, clipped


GIVEN_UP_S = 1.0
"""How long after a connection ended without ZeroMQ trying it again the subscriber makes a new
one: ZeroMQ's own retry is said within a millisecond of the end (its first wait is 100 ms)."""

WAKE_MS = 1000
"""The longest wait in one call: Python runs a signal's handler once its main thread is back from
C, and a SIGHUP that came beside a SIGTERM (systemd's SendSIGHUP) went to another thread, which
left the main thread waiting for an event that might never come, both signals pending (s66e 2);
and the count of malformed events skipped is said on time."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("endpoint", type=peer_endpoint, help="where the zmq sink publishes, e.g. tcp://127.0.0.1:5556")
    parser.add_argument("--topic", action="append", default=[],
                        help="topic prefix to receive, e.g. emotion.cam1 (repeatable; default: everything); "
                             "a prefix: emotion.cam1 also receives emotion.cam10")
    parser.add_argument("--source", action="append", default=[],
                        help="receive the events of this source id alone, of every type (repeatable)")
    parser.add_argument("--format", choices=("json", "csv"), default="json",
                        help="JSON lines as sent, or CSV rows of frame events")
    parser.add_argument("--server-key", type=home, metavar="FILE", help="the publisher's public key file (server.key) for CURVE")
    parser.add_argument("--client-keys", type=home, metavar="FILE", help="this subscriber's secret key file (client.key_secret) for CURVE")
    parser.add_argument("--precision", type=whole(1, 9), default=4, metavar="DIGITS",
                        help="decimals of probabilities and confidence in --format csv, 1-9, as the csv sink's; "
                             "the zmq sink rounds to its own precision (4) first, so raise the sink's with it")
    parser.add_argument("--count", type=whole(0), default=0, metavar="N",
                        help="exit after this many events written (--format csv: frame events; 0: until Ctrl-C)")


CurveKeys = tuple[bytes, bytes, bytes]
"""The publisher's public key, and this subscriber's public and secret keys."""


def curve_keys(server_key: str | None, client_keys: str | None) -> CurveKeys | None:
    """The CURVE keys the two files hold, None without them; read once, not at each new socket:
    a key file rotated meanwhile failed a reconnection with a traceback, and one readable by
    others was warned of every second (s67e 1, 2)."""
    if bool(server_key) != bool(client_keys):
        raise InputError("CURVE needs both --server-key and --client-keys")
    if not server_key:
        return None
    server = load_keys(server_key, secret=False, what="--server-key")[0]
    public, secret = load_keys(client_keys, secret=True, what="--client-keys")
    return server, public, secret


def subscriber(ctx: zmq.Context, endpoint: str, topics: list[str], keys: CurveKeys | None = None) -> zmq.Socket:
    """A SUB socket for ``endpoint``, subscribed to ``topics`` (all when empty), not yet connected
    (``join``): a monitor made after the connection missed its first events, and a peer that is
    no publisher closes it once for good (ZeroMQ does not retry a failed handshake), so a
    subscriber at a collector's --bind said nothing, one run in seven."""
    sock = peer_socket(ctx, zmq.SUB, endpoint)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_EVENT_BYTES)
    if keys is not None:
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = keys
    for topic in topics or [""]:
        sock.setsockopt_string(zmq.SUBSCRIBE, topic)
    return sock


def join(sock: zmq.Socket, endpoint: str) -> None:
    """Connect ``sock`` to ``endpoint``; a form ZeroMQ refuses is bad input."""
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        raise InputError(f"subscribe {endpoint}: {exc}") from None


PUBLISHERS = "a zmq sink's endpoint, an episodes sink's publish port, or collect --publish"
"""What a subscriber connects to: a peer that closes the connection may be something else."""


class Connection:
    """Says what became of the subscriber's connection, where ZeroMQ reconnects without a word:
    the publisher refused it (a key not on its list, CURVE on one side alone, a wrong server key),
    nothing listens at the endpoint (the run not started, another port than its sink's), a peer
    that is no publisher closed it (a collector's --bind one port over), or the publisher closed
    it after events had come: its run ended, or this subscriber fell so far behind that it was
    cut off, losing the events it had not taken, which before looked like a quiet stretch
    (s62a 6, s64b 2, 3). Each is said once, but the last each time it happens; ``heard`` is set
    by the reader as events come. A connection ZeroMQ gives up is made again with a new socket
    from ``make``."""

    EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
              | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_CONNECTED
              | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)

    def __init__(self, make: Callable[[], zmq.Socket], endpoint: str, curve: bool, unresolved: bool) -> None:
        self.make, self.endpoint, self.curve = make, endpoint, curve
        self.said: set[str] = set()
        if unresolved:  # said already, as no such host: a name that does not resolve has nothing to listen
            self.said.add(self.why(zmq.EVENT_CONNECT_RETRIED, 0))
        self.last = 0
        self.heard = False  # an event came on this connection
        self.dropped: float | None = None  # when the connection ended, until ZeroMQ tries it again
        self.cut = False  # it ended after its handshake, and ZeroMQ has not tried it again
        self._open()

    def _open(self) -> None:
        self.sock = self.make()
        self.monitor = self.sock.get_monitor_socket(self.EVENTS)
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        self.poller.register(self.monitor, zmq.POLLIN)

    def join(self) -> None:
        join(self.sock, self.endpoint)

    def wait(self) -> None:
        """Wait until the socket has an event to read, saying what became of the connection
        meanwhile; called only when a read found none, so events in a burst cost no poll."""
        ready = dict(self.poller.poll(WAKE_MS))
        if self.monitor in ready:
            self._take(recv_monitor_message(self.monitor))
        elif self.dropped is not None and time.monotonic() - self.dropped >= GIVEN_UP_S:
            self._reopen()

    def _reopen(self) -> None:
        """A new socket where ZeroMQ gave the connection up: after a protocol error it does not
        reconnect, and an event over ``MAX_EVENT_BYTES``, or a handshake that failed, left the
        subscriber waiting for ever, having said "reconnecting" or "retrying" (s64d 4)."""
        if self.cut:  # said once: a publisher whose every event is too large gives it up every second
            self._say(self.endpoint, f"ZeroMQ gave the connection up, as it does when the publisher sends an event "
                                     f"over {MAX_EVENT_BYTES >> 20} MiB, the most a subscriber takes (that event "
                                     "is lost); connecting again", end="")
        old = self.sock, self.monitor
        self._open()  # the old closed after: a failure here leaves a socket the run's end can close
        self._shut(*old)
        self.dropped, self.cut, self.last = None, False, 0
        self.join()

    def close(self) -> None:
        self._shut(self.sock, self.monitor)

    @staticmethod
    def _shut(sock: zmq.Socket, monitor: zmq.Socket) -> None:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)

    def _take(self, message: dict) -> None:
        event, last = message["event"], self.last
        self.last = event
        where = message["endpoint"].decode(errors="replace")
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.said.add(self.why(zmq.EVENT_CONNECT_RETRIED, 0))  # a run's end is not "nothing listens (yet)"
        elif event == zmq.EVENT_DISCONNECTED and last == zmq.EVENT_HANDSHAKE_SUCCEEDED and self.heard:
            print(f"fer-pipe subscribe: {where}: the connection to the publisher ended: its run ended or was "
                  "restarted, its host went silent, or this subscriber fell too far behind it and lost the events it "
                  "had not taken; reconnecting", file=sys.stderr, flush=True)
        elif event == zmq.EVENT_DISCONNECTED and last == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._say(where, "the connection to the publisher ended before any event came")
        elif event == zmq.EVENT_DISCONNECTED and last == zmq.EVENT_CONNECTED:
            self._say(where, f"something listens there but closed the connection (a publisher is {PUBLISHERS})")
        elif event == zmq.EVENT_CONNECT_RETRIED and last != zmq.EVENT_DISCONNECTED:
            self._say(where, self.why(event, message["value"]))
        elif event & (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                       | zmq.EVENT_HANDSHAKE_FAILED_AUTH):
            self._say(where, self.why(event, message["value"]))
        if event == zmq.EVENT_DISCONNECTED:  # reset here: a monitor event is taken only when no event waits,
            self.heard = False  # so a busy reader took a connection's events before its handshake
        # a connection that ended after its handshake and is not tried again ended on an event too
        # large: so even where none came before it (every event too large; s67e 4, 5)
        self.dropped = time.monotonic() if event == zmq.EVENT_DISCONNECTED else None
        self.cut = event == zmq.EVENT_DISCONNECTED and last == zmq.EVENT_HANDSHAKE_SUCCEEDED

    def _say(self, where: str, why: str, end: str = "; retrying") -> None:
        if why not in self.said:
            self.said.add(why)
            print(f"fer-pipe subscribe: {where}: {why}{end}", file=sys.stderr, flush=True)

    def why(self, event: int, value: int) -> str:
        if event == zmq.EVENT_CONNECT_RETRIED:
            return "nothing listens there (yet; is the run started, and is this its sink's endpoint?)"
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:  # a sink that cannot read its folder refuses every key
            return (f"the publisher refused this subscriber's key (status {value}): the public half of "
                    "--client-keys is not in the sink's curve_clients folder, or the sink cannot read the folder")
        if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            return ("the publisher does not use CURVE: leave out --server-key and --client-keys" if self.curve else
                    "the publisher uses CURVE: give --server-key and --client-keys")
        # ZeroMQ may say these before the clear reason above, or instead of it (the publisher
        # closed the connection first): each names what the clear one would
        if self.curve:
            return ("the handshake with the publisher failed: does it use CURVE, and is --server-key its public key "
                    "(server.key)?")
        if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and value == errno.EAGAIN:  # a stopped publisher's
            return "something listens there but did not answer the handshake (a stopped or overloaded process?)"
        if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            return (f"the handshake with the publisher failed ({os.strerror(value)}): is it a publisher ({PUBLISHERS}), "
                    "and does it use CURVE? Then give --server-key and --client-keys")
        return f"the handshake with the publisher failed (protocol error {value:#x})"


def run(args: argparse.Namespace) -> int:
    """Print events until ``--count`` or Ctrl-C, saying what keeps them from coming (a host that
    does not resolve, a handshake refused) as ZeroMQ, which retries in silence, does not."""
    # Ctrl-C ends the loop even when the shell started us with SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # the csv sink's own writer: its header only into an empty file (>> all.csv across restarts) and
    # again after a copytruncate, UTF-8 whatever the locale, CRLF, a publisher's escape
    # codes shown as text on a terminal
    writer = CsvOutput("/dev/stdout", "subscribe", FRAME_COLUMNS) if args.format == "csv" else None
    ctx = zmq.Context()
    for option, values in (("--topic", args.topic), ("--source", args.source)):
        problem = next((f"{value!r} {why}" for value in values if (why := not_text(value))), None)
        if problem:
            raise InputError(f"{option} {problem}")
    prefixes = dict.fromkeys(TOPIC_PREFIX.values())
    topics = args.topic or [f"{prefix}.{source}" for source in args.source for prefix in prefixes]
    too_long = next((t for t in topics if len(t.encode()) >= MAX_SUBSCRIPTION_BYTES), None)
    if too_long is not None:  # the publisher drops a subscriber that sends it one, at every reconnection
        raise InputError(f"{'--topic' if args.topic else '--source'} {too_long[:40]}...: a topic of "
                         f"{len(too_long.encode())} bytes; a publisher takes {MAX_SUBSCRIPTION_BYTES - 1} at most")
    keys = curve_keys(args.server_key, args.client_keys)
    host = unresolved_host(args.endpoint)
    connection = Connection(functools.partial(subscriber, ctx, args.endpoint, topics, keys), args.endpoint,
                            keys is not None, bool(host))
    if host:  # ZeroMQ retries the name without a word: a typo waited in silence, as for a run gone quiet
        print(f"fer-pipe subscribe: no such host {host!r} (yet?): waiting until it resolves and a publisher there "
              "sends", file=sys.stderr, flush=True)
    written = 0  # events: in --format csv, the frame events alone
    skipped: set[str | None] = set()
    malformed = MalformedLines(lambda line: print(f"fer-pipe subscribe: {line}", file=sys.stderr, flush=True))

    def end_as_signalled(signum: int, frame: object) -> None:
        """The count of malformed events not yet said, then the end any program has on this
        signal (exit 143, 129): the count was lost with the process (s66d 5)."""
        with contextlib.suppress(OSError):  # the terminal a SIGHUP says is gone
            malformed.flush(final=True)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    for stop in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(stop) == signal.SIG_DFL:  # nohup's ignored SIGHUP stays so
            signal.signal(stop, end_as_signalled)
    try:
        connection.join()
        while not args.count or written < args.count:
            try:
                frames = connection.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                malformed.flush()
                connection.wait()
                continue
            connection.heard = True
            try:
                event = decode(frames)
                if args.source and event.get("source") not in args.source:
                    continue  # a topic is a prefix: cam1's subscription also gets cam10's events
                kind = event.get("type")
                csv_frame = args.format == "csv" and kind == "frame"
                rows = event_rows(event, FRAME_COLUMNS, args.precision) if csv_frame else []
            except MALFORMED as exc:
                malformed.skipped(exc)
                continue
            if args.format == "json":
                sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
                written += 1
            elif kind == "frame":
                writer.write(rows)
                written += 1
            elif (known := kind if isinstance(kind, str) and kind in TOPIC_PREFIX else None) not in skipped:
                skipped.add(known)  # said once per type, and once for all a sink never sends: 50,000 made as many lines
                what = f"{kind!r} events" if known else f"events of types no fer-pipe sink sends (first {clipped(repr(kind))})"
                print(f"fer-pipe subscribe: --format csv writes frame events only; skipping {what} (--format json "
                      "shows them)", file=sys.stderr)
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        malformed.flush(final=True)
        connection.close()
        ctx.term()
        if writer is not None:
            writer.close()
    return 0
