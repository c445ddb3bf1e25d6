"""``zmq``: emotion events on a ZeroMQ PUB socket, ``[topic, json]`` in the schema of ``fer_pipe.events``.

The socket (``fer_pipe.publisher``) never waits for a subscriber: an event that does not fit
its high-water mark is dropped and counted, and a run may wait for its first subscribers.
"""
from __future__ import annotations

from collections.abc import Iterable

from pydantic import Field, field_validator, model_validator

from fer_pipe.curve_keys import check_client_folder, load_keys
from fer_pipe.endpoints import check_bindable, check_form, check_private
from fer_pipe.events import EVENT_NAMES, end_event, free_names, frame_event
from fer_pipe.messages import FACES, Packet
from fer_pipe.outage_notices import OutageNotices
from fer_pipe.publisher import Publisher
from fer_pipe.stage import Sink, StageParams


class ZmqParams(StageParams):
    endpoint: str = Field("tcp://127.0.0.1:5556", description="where to bind: tcp://HOST:PORT or ipc://PATH")
    public: bool = Field(False, description="allow binding a non-loopback address (events leave the machine)")
    heartbeat_s: float = Field(0.0, ge=0, description="for frames without faces, send an event with no faces "
                                                      "at most this often per source, in wall-clock seconds, "
                                                      "and say a source that is down again about as often, "
                                                      "with its outage packet nearest each beat (they come "
                                                      "about every second) (0: never)")
    sndhwm: int = Field(1000, ge=1, le=1_000_000, description="events queued per subscriber before dropping")
    wait_subscribers: int = Field(0, ge=0, le=1000, description="before the first event, wait until this many "
                                                                "subscriptions have arrived (a subscriber counts once per topic)")
    wait_timeout_s: float = Field(10.0, ge=0, description="give up waiting for subscribers after this long")
    linger_s: float = Field(1.0, ge=0, le=60, description="at the end, time allowed to deliver queued events")
    curve_secret_key: str = Field("", description="server secret key file from `fer-pipe keys` (enables CURVE)")
    curve_clients: str = Field("", description="folder of client public keys allowed to subscribe "
                                               "(empty: any client that knows the server key)")
    precision: int = Field(4, ge=1, le=9, description="decimals of probabilities and confidence")
    extra: list[str] = Field([], description="keys of a face's or its frame's extra data to add to each face "
                                             "of an event (image_folder sets file: the image's path)")

    _endpoint_form = field_validator("endpoint")(check_form)

    @field_validator("extra")
    @classmethod
    def _new_fields(cls, keys: list[str]) -> list[str]:
        return free_names(keys, EVENT_NAMES, "a field of the event or a column of its rows")

    @model_validator(mode="after")
    def _loopback_unless_public(self) -> ZmqParams:
        check_private(self.endpoint, self.public, "" if self.curve_secret_key else " (and use CURVE keys)")
        if self.curve_clients and not self.curve_secret_key:
            raise ValueError("curve_clients needs curve_secret_key")
        return self


class ZmqSink(Sink):
    """Publishes one event per frame with faces on a ZeroMQ PUB socket (topic
    emotion.SOURCE), plus optional heartbeats, a live source's outages and each source's end
    (topic source.SOURCE)."""

    Params = ZmqParams
    params: ZmqParams
    input_paths = ("curve_secret_key", "curve_clients")
    reads = FACES
    bind_params = ("endpoint",)

    @classmethod
    def preflight(cls, params: ZmqParams) -> None:
        if params.curve_secret_key:  # read here too, so a wrong key file is one line before any stage starts
            load_keys(params.curve_secret_key, secret=True, what="curve_secret_key")
        if params.curve_clients:
            check_client_folder(params.curve_clients)
        check_bindable(params.endpoint, "zmq")

    def open(self) -> None:
        p = self.params
        self._last_sent: dict[str, float] = {}
        self._outages = OutageNotices(p.heartbeat_s)
        self._publisher = Publisher("zmq", self.name, p.endpoint, p.sndhwm, p.curve_secret_key, p.curve_clients)
        try:
            self._publisher.await_subscribers(p.wait_subscribers, p.wait_timeout_s, self.stop_requested,
                                              self.waiting_outside)
        except BaseException:
            self._publisher.close(0.0)  # a failed open is not closed by the runner
            raise

    def consume(self, packet: Packet) -> None:
        back = self._outages.on_frame(packet)
        if back is not None:
            self._publisher.send(back)
            self.dropped = self._publisher.dropped
        if not packet.faces:
            beat = self.params.heartbeat_s
            if not beat or packet.captured - self._last_sent.get(packet.source, -beat) < beat:
                self._publisher.tend()
                return
        if self._publisher.send(frame_event(packet, self.params.precision, self.params.extra)):
            self._last_sent[packet.source] = packet.captured
        self.dropped = self._publisher.dropped

    def outage(self, packet: Packet) -> Iterable[Packet]:
        """Say the source down once per outage, and again every ``heartbeat_s`` while it stays
        so (``fer_pipe.outage_notices``)."""
        down = self._outages.on_outage(packet)
        if down is None:
            self._publisher.tend()
        else:
            self._publisher.send(down)
            self.dropped = self._publisher.dropped
        return ()

    def ended(self, packet: Packet) -> Iterable[Packet]:
        """Say the source's stream is over (``source_end``), as it ends, while other sources may
        run on."""
        self._publisher.send(end_event(packet))
        self.dropped = self._publisher.dropped
        return ()

    @classmethod
    def closing_s(cls, params: ZmqParams) -> float:
        return params.linger_s

    def close(self) -> None:
        self._publisher.close(self.params.linger_s)
