"""``fer-pipe collect``: the events of every shard's ``push`` sink, gathered into one CSV.

PUSH/PULL, not PUB/SUB: ZeroMQ's PUSH blocks rather than drops, so an event a shard produced
while the collector was up is in the CSV. What cannot be avoided is what a shard loses when it
dies (frames it had not yet sent); the collector makes that visible instead: every source's
events carry a sequence number and a run id, and the collector logs, one line each, naming
the source, a gap (numbers skipped within one run), a restart (a new run id for a source, with
where the old run stopped and how long the source was silent), and numbers that went backwards.

Rows have the columns of the ``csv`` sink and are flushed line by line; an existing CSV is
appended to, so a restarted collector loses nothing it wrote. SIGINT or SIGTERM stops
the collector after the events already received are written, so the CSV ends on a whole row,
and leaves each source's run and last sequence number beside the CSV (``STATE_SUFFIX``): the
next collector (a systemd restart, a deploy) goes on checking the sequences where this one
stopped, so a restart of the collector neither hides a gap nor reports one that is not there.
An optional PUB socket republishes every event unchanged, for live viewers (lossy by design),
a live source's ``source_down`` and ``source_up`` among them (they make no row).
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import resource
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from . import hangup
from .arguments import endpoint, made_path, number, whole
from .csvfile import CsvOutput
from .endpoints import bind_problem, is_loopback, peer_socket, tcp_host_port
from .errors import InputError, OutputError, printable
from .events import (FRAME_COLUMNS, MALFORMED, MAX_EVENT_BYTES, MAX_SUBSCRIPTION_BYTES, check_source_event, decode,
                     event_rows, topic)
from .graph import file_key
from .malformed_lines import MalformedLines, clipped
from .output_files import replace_whole
from .stage import id_problem
from .stop_signals import handling

POLL_MS = 200
FINAL_DRAIN_S = 1.0
STATE_EVERY_S = 1.0
"""How often the sequences are kept beside the CSV while events come, not only at a clean stop:
the successor of a collector killed with its host took up none, so the events lost with it were
no gap, only "seq 0..N not received by this collector"."""
STATE_SUFFIX = ".collect-state.json"


RUNS_KEPT = 4
"""A source's latest runs whose last sequence number is kept: an event of one of them after a
newer one began is two runs sending at once, not a restart."""
PIECES_KEPT = 100
"""The stretches of a source's gaps that late events may still fill (``SourceState.missing``),
all its gaps together, the oldest gap no longer followed for a new piece: each late event split a
stranger's gap of 10^12 seqs, and looking through the pieces took the collector down to 400
events a second; kept per gap, 100 gaps of 100 pieces for each of ``SOURCES_KEPT`` sources let
one peer grow the collector by 12 GB an hour, up to 19 GB (s66b 2)."""
SILENT_NAMED = 10
"""The sources a silence line names; more are counted."""
HANDSHAKE_MS = 5_000
"""How long a peer that connected has to say it is a ZeroMQ peer before it is let go (libzmq's
default, 30 s): 200 that connected and said nothing held the collector's descriptors, and a
shard's events waited about 40 s."""
RECEIVE_HWM = 64
"""The events a connection may hold in the collector before its shard waits: where the collector
falls behind, what waits stays in the shard's push sink (``sndhwm``), bounded there, not here,
where ZeroMQ's 1,000 a connection, each up to ``MAX_EVENT_BYTES``, let one peer of four
connections take it to 3.5 GB in 20 s (s66b 1)."""
SOURCES_KEPT = 10_000
"""The sources whose sequences are followed, the least recently heard from forgotten for a new
one: 162,000 sources from a stranger took the collector to 150 MB, a state file of 10.8 MB
written every second, and as many lines at its stop."""


@dataclass
class SourceState:
    run: str
    seq: int
    last_seen: float
    events: int = 0
    gaps: int = 0
    restarts: int = 0
    runs: dict[str, int] = field(default_factory=dict)
    """The last sequence number of each of the source's latest runs, the current one last."""
    at_once: int = 0
    """Events that came from another of its runs than the one before them while both sent."""
    restarted_into: str | None = None
    """The run its last restart began: one that sends alongside the run before it was none."""
    missing: dict[tuple[str, int, int], list[tuple[int, int]]] = field(default_factory=dict)
    """The gaps said, as (run, first seq, last seq): the stretches of each that have not come yet.
    A push sink that lost its collector for 6 s (a stall, a network split) reconnects, and what it
    had sent into the old connection comes after, late: each was "seq went back" and the next of
    the new connection another gap, 350 lines where nothing was lost."""
    down: bool = False
    """Its last event was a ``source_down``: its camera away, which its shard says."""
    said_silent: bool = False
    """Said silent (``Collector.silent_after_s``) since its last event."""
    heard_here: bool = True
    """An event of it came to this collector, not only to the one whose state it took over."""

    def __post_init__(self) -> None:
        self.runs.setdefault(self.run, self.seq)


class SequenceTracker:
    """Per-source run and sequence bookkeeping; ``observe`` returns the log line an event deserves."""

    def __init__(self) -> None:
        self.sources: dict[str, SourceState] = {}
        self.forgotten: list[str] = []
        """The first sources forgotten for new ones (``SOURCES_KEPT``), up to 10."""
        self.forgotten_count = 0

    def observe(self, source: str, run: str, seq: int, now: float) -> str | None:
        """The line event ``seq`` of ``run`` deserves (a join, a restart, a gap, a gap filled late,
        two runs at once), None for the next in line; the source's state follows it either way."""
        state = self.sources.pop(source, None)  # put back last: the least recently heard from is first
        if state is None:
            if len(self.sources) >= SOURCES_KEPT:
                forgotten = next(iter(self.sources))
                del self.sources[forgotten]
                self.forgotten_count += 1
                if len(self.forgotten) < 10:
                    self.forgotten.append(forgotten)
            self.sources[source] = SourceState(run, seq, now, 1)
            return None if seq == 0 else (f"source {source}: joined run {run} at seq {seq} "
                                          f"(seq 0..{seq - 1} not received by this collector)")
        self.sources[source] = state
        late = None  # the line for a seq of a gap said before ("" until the whole gap has come)
        if run != state.run and run in state.runs:  # an earlier run sends again: both are alive
            # each event was said as a restart (572 lines in 8 s), though nothing restarted
            first, state.at_once = not state.at_once, state.at_once + 1
            before, state.run, state.seq = state.run, run, state.runs[run]
            late = self._late(source, state, run, seq)
            message = late if late is not None else self._out_of_line(source, state, run, seq)
            if first:
                undone = state.restarted_into == before  # the second run's first event was said as a restart
                state.restarts -= undone
                message = (f"source {source}: events from two runs at once ({before}, {run})"
                           + (", so the restart said before was none" if undone else "")
                           + ": is this camera in two shards' configs, or one shard running twice, or did a "
                           "shard restarted during a network split send its last run's held events late? Both "
                           "runs' rows are written; said once, and counted in the summary")
        elif run != state.run:
            state.restarts += 1
            state.restarted_into = run
            # "last heard": it may have gone on sending to a collector that was away (s62e 4)
            message = (f"source {source}: restart: run {state.run} last heard at seq {state.seq}, "
                       f"run {run} began at seq {seq}, {now - state.last_seen:.1f} s without events")
            state.run, state.seq = run, seq
        else:
            late = self._late(source, state, run, seq)
            message = late if late is not None else self._out_of_line(source, state, run, seq)
        # the newest stays: a seq that came again (a late one whose gap was no longer kept, a
        # peer repeating itself) took the count back, and every seq after it was a gap
        state.seq = max(state.seq, seq)
        state.last_seen, state.heard_here = now, True
        state.runs.pop(run, None)
        state.runs[run] = state.seq
        while len(state.runs) > RUNS_KEPT:
            del state.runs[next(iter(state.runs))]
        state.events += 1
        return message or None

    @staticmethod
    def _late(source: str, state: SourceState, run: str, seq: int) -> str | None:
        """For a ``seq`` of a gap said before that has not come yet: the line once the whole gap
        has come ("" before), and the gap is no longer counted; None for any other seq (one that
        came already is a step back, as it was)."""
        if seq >= state.seq or not state.missing:
            return None
        gap = next((g for g, left in state.missing.items()
                    if g[0] == run and any(lo <= seq <= hi for lo, hi in left)), None)
        if gap is None:
            return None
        left = state.missing[gap]
        at = next(i for i, (lo, hi) in enumerate(left) if lo <= seq <= hi)
        lo, hi = left.pop(at)
        left[at:at] = [part for part in ((lo, seq - 1), (seq + 1, hi)) if part[0] <= part[1]]
        if left:
            _keep_pieces(state)
            return ""
        del state.missing[gap]
        state.gaps -= 1
        return (f"source {source}: seq {gap[1]}..{gap[2]} of run {run} came late, after seq {state.seq}: the "
                "gap said for them was none")

    @staticmethod
    def _out_of_line(source: str, state: SourceState, run: str, seq: int) -> str | None:
        """The line for ``seq`` in ``run`` after ``state.seq`` of the same run, if it is not the next."""
        message = None
        if seq > state.seq + 1:
            state.gaps += 1
            state.missing[(run, state.seq + 1, seq - 1)] = [(state.seq + 1, seq - 1)]
            _keep_pieces(state)
            message = (f"source {source}: gap: seq {state.seq + 1}..{seq - 1} missing "
                       f"({seq - state.seq - 1} events) in run {run}")
        elif seq == state.seq:  # "went back from 3 to 3" (s67a 6)
            message = f"source {source}: seq {seq} came again in run {run}"
        elif seq < state.seq:
            message = f"source {source}: seq went back from {state.seq} to {seq} in run {run}"
        return message

    def save(self, path: Path, now: float, stopped: bool) -> None:
        """Each source's run and last seq, written whole (a new file renamed over the old);
        ``stopped``: at a clean stop, rather than on the way (``STATE_EVERY_S``)."""
        wall = time.time()
        sources = {s: {"run": st.run, "seq": st.seq, "last_seen": wall - (now - st.last_seen), "down": st.down}
                   for s, st in self.sources.items()}
        try:
            replace_whole(path, json.dumps({"sources": sources, "stopped": stopped}).encode())
        except OSError:
            # a full disk: no older state left beside the CSV, which the next collector would
            # take for the last one's
            with contextlib.suppress(OSError):
                path.unlink()
            raise

    def load(self, path: Path, now: float) -> tuple[int, bool] | None:
        """Take the sources the last collector left in ``path``, then remove it: a collector
        killed before it keeps any leaves none, so the one after it never trusts stale numbers.
        Returns how many sources were taken and whether it stopped cleanly (a file an older
        collector left counts as such), None where there was no file; ValueError names what is
        wrong with the file."""
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        path.unlink()
        wall = time.time()
        try:
            saved = json.loads(text)
            for source, kept in saved["sources"].items():
                seq, last_seen = kept["seq"], kept["last_seen"]  # 1e400: a traceback, the file lost (s67a 5)
                if not a_seq(seq) or type(last_seen) not in (int, float) or not math.isfinite(last_seen):
                    raise ValueError(f"source {source!r}: seq {seq!r} and last_seen {last_seen!r} are not a "
                                     "collector's")
                # no later than now: a wall clock set back between two collectors (a host with no
                # real-time clock, started before its time sync) put it in the future, and the
                # silence check, which stops at the first source heard of lately, said none (s65g 2)
                self.sources[source] = SourceState(str(kept["run"]), seq, min(now, now - (wall - last_seen)),
                                                   down=kept.get("down", False) is True, heard_here=False)
            stopped = saved.get("stopped", True) is not False
            # least recently heard from first, as observe keeps them, and no more than are followed:
            # an older collector's file held any number, and each new source forgot only one
            latest = sorted(self.sources.items(), key=lambda item: item[1].last_seen)[-SOURCES_KEPT:]
            self.sources = dict(latest)
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:  # 10**400 (s67f 2)
            self.sources.clear()
            raise ValueError(f"{type(exc).__name__}: {exc}") from None
        return len(self.sources), stopped


MAX_SEQ = 2**53
"""The largest seq taken, JSON's largest exact integer; a push sink numbers one event per frame
from 0, so no run reaches it: one event of 2**63 was a gap of 9.2e18 events, after which no
real gap of its run was said, and it was kept for the next collector (s67a 6)."""


def a_seq(value: object) -> bool:
    """Whether ``value`` is a seq a push sink sends: int() took true as 1 and 2.9 as 2."""
    return type(value) is int and 0 <= value <= MAX_SEQ


def _keep_pieces(state: SourceState) -> None:
    """No more than ``PIECES_KEPT`` stretches of ``state``'s gaps followed: the oldest gaps are
    let go, still counted, their late seqs then said as steps back."""
    pieces = sum(map(len, state.missing.values()))
    while pieces > PIECES_KEPT:
        pieces -= len(state.missing.pop(next(iter(state.missing))))


class Collector:
    """One PULL socket for every shard: ZeroMQ fair-queues between them, so one busy shard does
    not starve the others, and a single writer keeps the CSV's rows whole."""

    def __init__(self, bind: str, csv_path: str, publish: str | None = None, precision: int = 4,
                 silent_after_s: float = 60.0) -> None:
        self.columns = list(FRAME_COLUMNS)
        self.bind, self.csv_path, self.publish, self.precision = bind, Path(csv_path), publish, precision
        self.silent_after_s = silent_after_s
        self.tracker = SequenceTracker()
        # none beside a device or a pipe (--csv /dev/null to republish only, /dev/stdout): it went
        # into /dev, or failed there at every stop, and such a CSV has no rows to go on from
        self.state_path = Path(f"{csv_path}{STATE_SUFFIX}") if _a_file_or_none(self.csv_path) else None
        self._stop = False
        self._writing = False  # the CSV is open
        self._stopped_by = 0  # the first stop's signal (systemd's SIGHUP beside its SIGTERM is one stop)
        self._ttys = hangup.terminal_fds()
        self._taken = 0  # events written, so that sequences unchanged are not kept again
        self._state_failed = False
        self._malformed = MalformedLines(_say)

    def _on_signal(self, signum: int, frame: object) -> None:
        """A stop (Ctrl-C, SIGTERM, or SIGHUP: the terminal closed) keeps the CSV whole and the
        sequence state for the next collector, as ``fer-pipe run`` keeps its files."""
        if signum == signal.SIGHUP:
            hangup.to_devnull(self._ttys)
        if not self._writing:  # a FIFO's open waits for its reader, retried after the signal: deaf to it (s67a 4)
            _say(f"stopped while opening {self.csv_path} (a FIFO opens once a reader opens it); nothing was taken")
            raise SystemExit(128 + signum)
        if self._stop and signum != signal.SIGHUP and self._stopped_by != signal.SIGHUP:
            # a second stop, as fer-pipe run takes one: a write to a FIFO whose reader stopped reading
            # waits, retried after the first, which went unheard (s67f 1); the state is still kept
            _say(f"stopped again while writing {self.csv_path}: ending at once; events not yet written are lost")
            raise SystemExit(128 + signum)
        self._stop = True
        self._stopped_by = signum if self._stopped_by in (0, signal.SIGHUP) else self._stopped_by

    def run(self) -> int:
        """Bind, then write rows until a stop; the sequences go on where the last collector left
        them and are kept for the next, so that a restart of the collector is no gap."""
        _all_descriptors()
        ctx = zmq.Context()
        pull = pull_socket(ctx, self.bind)
        pub = peer_socket(ctx, zmq.PUB, self.publish) if self.publish else None
        if pub is not None:
            pub.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)
        try:
            for sock, address, flag in ((pull, self.bind, "--bind"), (pub, self.publish, "--publish")):
                if sock is not None:  # a host that is not this machine's was "No such device (addr=...)"
                    problem = bind_problem(address)
                    if problem:
                        raise InputError(f"{flag} {address}: cannot bind: {problem}")
                    try:
                        sock.bind(address)
                    except zmq.ZMQError as exc:
                        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
                        raise InputError(f"{flag} {address}: cannot bind: {reason}") from None
            for address, flag, exposed in ((self.bind, "--bind", "can write rows into its CSV"),
                                           (self.publish, "--publish", "reads the events, unencrypted")):
                where = tcp_host_port(address) if address else None
                if where and not is_loopback(where[0]):  # PUSH/PULL has no CURVE here; said as the sinks say it
                    _say(f"WARNING: {flag} {address} is not a loopback address: anyone who can reach it {exposed}")
            stops = [signal.SIGINT, signal.SIGTERM] + ([] if hangup.ignored() else [signal.SIGHUP])
            with handling(stops, self._on_signal):
                written_before = self.csv_path.is_file()
                with CsvOutput(self.csv_path, "--csv", self.columns, append=True) as writer:
                    self._writing = True
                    self._resume(written_before)
                    _say(f"pulling on {self.bind}, writing {self.csv_path}"
                         + (f", republishing on {self.publish}" if self.publish else ""))
                    try:
                        self._loop(pull, pub, writer)
                    finally:  # also after a write that failed (a full disk): the CSV holds every event before it
                        self._keep_state()
        finally:
            pull.close(linger=0)
            if pub is not None:
                pub.close(linger=0)
            ctx.term()
        self._summary()
        return 0

    def _resume(self, written_before: bool) -> None:
        """Take up the sequences the last collector left. One killed outright (SIGKILL, the OOM
        killer) left none, and lost what its socket had taken and not yet written, uncounted:
        its successor's "joined" lines read as harmless, so that is said first."""
        if self.state_path is None:
            return
        try:
            taken = self.tracker.load(self.state_path, time.monotonic())
        except (ValueError, OSError) as exc:
            _say(f"ignored {self.state_path} ({exc}); each source's sequence is checked from its next event")
            return
        sources, stopped = taken or (0, True)
        if sources and stopped:
            _say(f"continuing the sequences of {sources} source(s) where the last collector stopped "
                 f"({self.state_path})")
        elif sources:
            _say(f"continuing the sequences of {sources} source(s) as the last collector kept them before it "
                 f"was killed ({self.state_path}, kept every {STATE_EVERY_S:g} s): events its socket had "
                 "received but not written are lost and show as gaps, and a gap may also count events it wrote "
                 "in its last second, which are in the CSV")
        elif taken is None and written_before:  # a clean stop that had no event leaves its file too
            _say(f"{self.csv_path} is there, but not the sequences a collector leaves beside it when it stops: "
                 "the last one was killed (or could not save them), and events it had received but not written "
                 "are lost, uncounted; each source's sequence is checked from its next event")

    def _keep_state(self, stopped: bool = True) -> None:
        if self.state_path is None:
            return
        try:
            self.tracker.save(self.state_path, time.monotonic(), stopped)
        except OSError as exc:
            if stopped or not self._state_failed:  # on the way, once: not every second of a full disk
                _say(f"could not keep the sequences in {self.state_path} ({exc.strerror}); the next "
                     f"collector will say each source joined at its next event")
            self._state_failed = True

    def _loop(self, pull: zmq.Socket, pub: zmq.Socket | None, writer: CsvOutput) -> None:
        kept, taken = time.monotonic(), self._taken
        while not self._stop:
            if pull.poll(POLL_MS):  # a second at most: shards that keep it behind kept it from keeping the state
                self._take(pull, pub, writer, time.monotonic() + STATE_EVERY_S)
            if time.monotonic() - kept >= STATE_EVERY_S:
                self._say_silent(time.monotonic())
                self._malformed.flush()
                if self._taken != taken:
                    self._keep_state(stopped=False)
                    taken = self._taken
                kept = time.monotonic()
        # what already arrived is written before stopping, for at most FINAL_DRAIN_S: shards
        # that go on sending would otherwise keep a stopped collector busy until it is killed
        self._take(pull, pub, writer, time.monotonic() + FINAL_DRAIN_S, stopping=True)
        self._malformed.flush(final=True)

    def _say_silent(self, now: float) -> None:
        """Sources that sent nothing for ``silent_after_s``, said once until their next event: a
        shard killed and not restarted, or its host gone, was said by no one; the collector's log,
        the one an operator watches, was as quiet as for shards at work (s65c 2). A camera that is
        down is said again by its shard every ``down_again_s``, so one silent after its
        ``source_down`` is said too, marked so (its shard may send nothing more with
        ``down_again_s`` 0); one last heard by an earlier collector is marked so."""
        if not self.silent_after_s:
            return
        newly = []
        for source, state in self.tracker.sources.items():  # the least recently heard from first
            if now - state.last_seen < self.silent_after_s:
                break
            if not state.said_silent:
                state.said_silent = True
                marks = "".join((", its camera down" if state.down else "",
                                 "" if state.heard_here else ", before this collector started"))
                newly.append(f"{source} (run {state.run} seq {state.seq}, {now - state.last_seen:.0f} s{marks})")
        if newly:
            more = f" and {len(newly) - SILENT_NAMED} more" if len(newly) > SILENT_NAMED else ""
            _say(f"no events for {self.silent_after_s:g} s or more from {', '.join(newly[:SILENT_NAMED])}{more}: "
                 "its shard stopped or was killed, or its run ended, or its host is gone; said again only "
                 "after its next event")

    def _take(self, pull: zmq.Socket, pub: zmq.Socket | None, writer: CsvOutput, until: float,
              stopping: bool = False) -> None:
        """What is waiting on the socket, without blocking, up to ``until``: until a stop is
        asked, or, ``stopping``, what arrived before it."""
        while (stopping or not self._stop) and time.monotonic() < until:
            try:
                frames = pull.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                if len(frames) != 2:  # republished as they came, one frame or three broke a subscriber's unpacking
                    raise ValueError(f"{len(frames)} message frames, not 2 (topic, event)")
                event = decode(frames)
                source, run, seq = event["source"], event["run"], event["seq"]
                if not isinstance(source, str) or not isinstance(run, str):  # were tracked as their Python text
                    raise ValueError("'source' and 'run' must be text")
                for name, value in (("source", source), ("run", run)):  # a stranger's 200 KB ids each a source kept
                    problem = id_problem(value)
                    if problem:
                        raise ValueError(f"{name!r}: {problem}")
                if not a_seq(seq):
                    raise ValueError(f"seq {clipped(repr(seq))} is not a whole number from 0 to 2**53")
                subject = topic(event).encode()  # republished under its own topic, not the sender's frame
                if event.get("type") in ("source_down", "source_up"):  # in the sequence, and republished: no row
                    check_source_event(event)
                    rows = []
                elif event.get("type") == "frame":  # an episode's, with frame fields, was a frame's row
                    rows = event_rows(event, self.columns, self.precision)
                else:
                    raise ValueError(f"type {event.get('type')!r} is not one a push sink sends")
            except MALFORMED as exc:
                self._malformed.skipped(exc)
                continue
            try:
                writer.write(rows)
            except BrokenPipeError:  # --csv /dev/stdout and its reader left (| head): it has what it wanted
                raise
            except OSError as exc:
                raise OutputError(f"collect: --csv {self.csv_path}: cannot write source {source} run {run} seq "
                                  f"{seq}: {exc.strerror}; the CSV holds every event before it") from None
            forgotten = self.tracker.forgotten_count
            line = self.tracker.observe(source, run, seq, time.monotonic())  # once written: the state left says so
            self._taken += 1
            state = self.tracker.sources[source]
            state.down, state.said_silent = event["type"] == "source_down", False
            if line:
                _say(line)
            if forgotten == 0 and self.tracker.forgotten_count:
                _say(f"following {SOURCES_KEPT} sources, the most a collector does: source "
                     f"{self.tracker.forgotten[0]}, heard from least recently, is forgotten for {source}, as the "
                     "least recent will be for each new one (its next event is said as a join); said once")
            if pub is not None:
                pub.send_multipart([subject, frames[1]])

    def _summary(self) -> None:
        if self.tracker.forgotten_count:
            _say(f"{self.tracker.forgotten_count} sources forgotten for newer ones, the first "
                 f"{', '.join(self.tracker.forgotten)}")
        now = time.monotonic()
        for source, state in sorted(self.tracker.sources.items()):
            _say(f"source {source}: {state.events} events, {state.gaps} gaps, {state.restarts} restarts"
                 + (f", {state.at_once} events from a run other than the one before them while two sent at once"
                    if state.at_once else "")
                 + (f"; silent for the last {now - state.last_seen:.0f} s" if state.said_silent else ""))


def pull_socket(ctx: zmq.Context, bind: str) -> zmq.Socket:
    """The socket the shards' push sinks connect to, not yet bound."""
    pull = peer_socket(ctx, zmq.PULL, bind)
    pull.handshake_ivl = HANDSHAKE_MS
    # No pings of its own: a shard that ended with one unread in its socket reset the
    # connection, and the kernel here dropped what the collector had not read yet, the
    # shard's last thousands of events, which it had said were delivered. A shard's
    # host gone is found by TCP keepalive instead, within about 90 s.
    pull.heartbeat_ivl = 0
    pull.tcp_keepalive, pull.tcp_keepalive_idle, pull.tcp_keepalive_intvl, pull.tcp_keepalive_cnt = 1, 60, 10, 3
    pull.setsockopt(zmq.MAXMSGSIZE, MAX_EVENT_BYTES)
    pull.rcvhwm = RECEIVE_HWM
    return pull


def _all_descriptors() -> None:
    """The soft limit of open files raised to the hard one, as a server's is: each shard holds a
    descriptor, and each peer that connected and has not yet said a word; under systemd's soft
    limit of 1,024, peers that connect and wait shut every shard out."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    with contextlib.suppress(ValueError, OSError):  # an unlimited hard limit is more than the kernel gives
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _a_file_or_none(path: Path) -> bool:
    """Whether ``path`` is a regular file, or nothing yet (the CSV makes one; a path that cannot
    be looked at is left to the CSV's own check). A name under /dev or /proc is none, wherever it
    leads: ``/dev/stdout`` into a file kept its state in /dev."""
    return path.absolute().parts[1:2] not in (("dev",), ("proc",)) and file_key(str(path)) is not None


def _say(line: str) -> None:
    """One line of the log, whatever a sender put in it: a source named with a newline wrote a
    line of its own that looked like the collector's, and a terminal's escape codes acted on
    whoever read the log. Such characters are written escaped (``\\n``)."""
    print(f"fer-pipe collect: {printable(line)}", file=sys.stderr, flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bind", type=endpoint, default="tcp://127.0.0.1:5560", metavar="ENDPOINT",
                        help="PULL endpoint the push sinks connect to")
    parser.add_argument("--csv", required=True, type=made_path, metavar="FILE", help="the merged CSV (appended to if it exists)")
    parser.add_argument("--publish", type=endpoint, default=None, metavar="ENDPOINT",
                        help="also republish every event on this PUB endpoint")
    parser.add_argument("--precision", type=whole(1, 9), default=4, metavar="DIGITS",
                        help="decimals of probabilities and confidence, 1-9, as the csv sink's; the shards' push "
                             "sinks round to their own precision (4) first, so raise theirs with it")
    parser.add_argument("--silent-after", type=number(0), default=60.0, metavar="SECONDS",
                        help="say the sources that sent no event for this long (a shard killed or stopped, its host "
                             "gone), once until their next event; 0: never")


def run(args: argparse.Namespace) -> int:
    hangup.guard_standard_streams(hangup.terminal_fds())  # a gap's line must not end a collector whose log left
    return Collector(args.bind, args.csv, args.publish, args.precision, args.silent_after).run()
