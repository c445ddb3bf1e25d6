"""The stage contract: the one thing a built-in or third-party stage implements.

A stage is a class with
- ``Params``: a pydantic model of its parameters (types, defaults, bounds, one-line
  descriptions); invalid config fails before anything runs, naming the field and the reason;
- ``reads`` / ``writes``: the message kinds it consumes and produces (``None`` for a source's
  input or a sink's output; ``reads`` a tuple of kinds where its inputs may write any of them),
  checked across the whole graph before anything runs; ``version``,
  shown by ``fer-pipe stages``, is raised when the params or the output change meaning;
- ``input_paths`` / ``output_paths``: the params that name files it reads / writes, so the
  graph check can refuse two stages writing one file (one whose default is ``""`` is an
  optional file, not given while empty); ``bind_params``: those that name a socket it
  listens on; ``thread_params``: those that set its own thread count;
- ``parallel``: True when ``process`` keeps nothing from one packet to the next, so a config
  may give the stage several processes (``workers: N``); ``one_source``: True when its output
  cannot mix sources (one video file), so the graph check refuses several sources reaching it;
- ``preflight``: checks of the outside world (a display, a device, a file) made in the parent
  before any process starts, so that a bad one fails the run before any work is done;
- a lifecycle run inside its own process: ``open`` (acquire files, models, sockets),
  ``process`` (one packet in, zero or more out), ``finish`` (end of stream: flush what is held),
  and ``close`` (always called after a successful ``open``, also after a failure);
- for a stage that waits on the outside world (a camera, a collector), hooks the runner
  fills in: ``stop_requested`` (give up the wait: the run is stopping), ``waiting_outside``
  (the wait is on purpose, not a stall), and ``closing_s`` (how long ``close`` may wait);
- ``dropped``: what the stage discarded itself, counted where the runner shows it;
- ``idle_s`` / ``idle``: for a stage that must act while its input is quiet (a window that
  repaints and reads its keys while a camera is down), a call every ``idle_s`` with no packet;
- ``outage``: what the stage does with the packet a live source sends while its stream is
  down (``fer_pipe.messages.Packet.outage``: no frame, no image; numbered as the source's last
  frame, -1 while it has sent none): by default passes it on, and a sink takes no notice; a
  tracker ends that source's tracks on it when the gap is long enough;
- ``ended``: the same for the packet the runner sends after a source's last frame
  (``Packet.ended``), while other sources may run on; a tracker ends that source's tracks on it;
- ``graph_warnings``: what its params would likely get wrong where it sits in a graph (a
  detector skipping frames with no tracker after it), said as warnings, never refused;
  ``wants_before``, the stage types it needs on every way into it, is warned of the same way.

Sources implement ``frames`` instead of ``process``; ``length`` (frames to come, for the progress
bar) and ``live`` (a camera: drop the oldest frame rather than wait) are theirs too, and their
``Params`` may subclass ``SourceParams`` for the ``source_id`` every result carries. Sinks
implement ``consume`` instead of ``process``.

This module is the contract alone, for a plug-in's author to read; how the engines call a stage
is ``fer_pipe.stage_calls``, and the checks of what it hands on are ``fer_pipe.packet_checks``.
"""
from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from types import UnionType
from typing import Any, ClassVar, Union, get_args, get_origin

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from .errors import control_character, not_text
from .messages import Packet
from .output_files import descriptor_of, readers_gone


class StageFailure(Exception):
    """A stage raised while opening, handling a packet or finishing; the message says which
    (``on SOURCE frame N: ValueError: ...``), in a run and in a batch task alike."""


class StopRun(Exception):
    """Raised by a stage to end the whole run cleanly, as a user's ``q`` in a window does.

    The runner stops the sources and drains the graph, so every file sink closes complete and
    the run exits 0; the stage that raised gets no more packets (a source that raises it ends
    its stream there). A sink whose output is a pipe that its reader closed
    (``csv.path=/dev/stdout | head``) ends the run the same way: the reader has what it wanted,
    as with any Unix filter.
    """


SET_STAGE_KEYS = frozenset({"on_error", "workers"})
"""Stage keys (not params) that ``--set STAGE.KEY=VALUE`` sets, so no stage's param may be so named."""


def boolean_for_number(annotation: Any, value: Any) -> str | None:
    """Why ``value`` is refused where a field of ``annotation`` wants a number: a boolean, which
    pydantic takes as 1 or 0 (YAML's ``true``, ``on``, ``yes``). None where it is no boolean, or
    the field takes booleans or no numbers."""
    kinds = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    if isinstance(value, bool) and bool not in kinds and (int in kinds or float in kinds):
        return f"expected {'a number or text' if str in kinds else 'a number'}, got {str(value).lower()}"
    return None


class StageParams(BaseModel):
    """Base of every stage's parameter model: unknown fields are errors, values are immutable,
    and numbers are finite. YAML reads ``.nan`` and ``.inf`` as floats, which would otherwise
    fail a bound with a message about the bound; a boolean for a number field (``true`` read as
    1) is refused for what it is. A default that breaks its own field's type or bounds is found
    when the plug-in loads (see the registry), not at its first frame."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        problem = boolean_for_number(cls.model_fields[info.field_name].annotation, value)
        if problem:
            raise ValueError(problem)
        return value

    @classmethod
    def given_names(cls) -> dict[str, str]:
        """Each param's name as a config gives it, to its field's: an alias where the field has
        one (a param called ``from``), which alone is taken (see ``given_name``); the listing and
        the unknown-param line named the field, which the config then had refused."""
        return {cls.given_name(name): name for name in cls.model_fields}

    @classmethod
    def given_name(cls, field: str) -> str:
        """The name a config gives the param of field ``field`` by (see ``given_names``)."""
        info = cls.model_fields[field]
        given = info.validation_alias  # what pydantic validates by, where set, alias or not
        if isinstance(given, AliasChoices):  # several taken: the first named
            given = next((choice for choice in given.choices if isinstance(choice, str)), None)
        return given if isinstance(given, str) else info.alias or field


class Stage:
    """Base class of all stages; see the module docstring for the contract."""

    Params: ClassVar[type[StageParams]] = StageParams
    reads: ClassVar[str | tuple[str, ...] | None] = None
    writes: ClassVar[str | None] = None
    version: ClassVar[int] = 1
    input_paths: ClassVar[tuple[str, ...]] = ()
    output_paths: ClassVar[tuple[str, ...]] = ()
    """Names of the params that hold a file the stage reads or writes: the graph check refuses
    two stages writing one file, or one writing the file another reads, before anything opens
    it (such a run would interleave rows or overwrite its own input)."""
    bind_params: ClassVar[tuple[str, ...]] = ()
    """Names of the params that hold a socket the stage listens on (an endpoint, or a port where
    0 is off): ``fer-pipe batch`` refuses such a stage, since its tasks run side by side and
    all but one would find the port taken."""
    wants_before: ClassVar[dict[str, str]] = {}
    """Stage types whose output this one works on, each with what goes wrong where a way into it
    has none: ``validate`` and ``run`` say it as a warning naming the stage (a
    smoother with no tracker before it smooths nothing, and a whole run went by before it said so)."""
    provides: ClassVar[tuple[str, ...]] = ()
    """The stage types this one stands in for where another wants one before it: a plug-in
    tracker says ``("track",)`` (the built-in ``track`` and ``smooth`` say their own, so that a
    subclass registered under another name still counts)."""
    thread_params: ClassVar[tuple[str, ...]] = ()
    """Names of the params that set how many threads the stage runs of its own: ``fer-pipe
    batch``, whose tasks each get one CPU from Ray, sets them to 1."""
    parallel: ClassVar[bool] = False
    """True when no state is kept between packets (and ``finish`` returns nothing): the runner
    may then feed ``workers`` copies of the stage round-robin and restore the order after
    them. Off by default, because a stage that keeps tracks or counters would see only every
    Nth packet in each copy."""

    one_source: ClassVar[bool] = False
    """True for a stage that can take the frames of one source only (a video file holds one
    video): the graph check refuses it where the frames of several reach it, which otherwise
    made one file of two cameras' frames in turn, in an order that changed from run to run."""

    dropped: int = 0
    """Items the stage discarded itself (a reader thread that keeps only the newest frame, a
    publisher whose subscribers' queues are full): the runner adds them to the stage's
    ``dropped`` statistic and status line, so drops show while a run goes on, not only at its end."""

    idle_s: ClassVar[float | None] = None
    """How often ``idle`` runs while no packet comes; None, the default, never calls it, and
    the stage's process then sleeps in its queue until a packet comes."""

    def __init__(self, name: str, params: StageParams) -> None:
        self.name = name
        self.params = params

    @classmethod
    def preflight(cls, params: StageParams) -> None:
        """Check the environment before any process starts (a display, a device); raise InputError."""

    def open(self) -> None:
        """Acquire what the stage needs; runs once, in the stage's own process."""

    def process(self, packet: Packet) -> Iterable[Packet]:
        """Handle one packet and return the packets to pass on (usually the same one)."""
        return (packet,)

    def idle(self) -> None:
        """Runs every ``idle_s`` while no packet comes: a live source's outage would otherwise
        freeze what the stage only does per packet. May raise StopRun, as ``process`` may."""

    def outage(self, packet: Packet) -> Iterable[Packet]:
        """A live source's stream is down (``packet`` is no frame: see ``fer_pipe.messages.Packet.outage``;
        ``packet.index`` is the source's last frame, -1 while it has sent none, as a camera down
        since the run started). Return the packets to pass on: by default this one, so that the
        stages after it learn of the outage too."""
        return (packet,)

    def ended(self, packet: Packet) -> Iterable[Packet]:
        """A source's stream has ended (``packet.ended``: no frame; numbered and dated as its last
        one), while the run may go on with other sources. Return the packets to pass on: by
        default this one. A hook of its own, not ``outage``'s: plug-ins written to "a live
        camera is down" took every file's end for one. A stage that holds packets returns
        that source's held ones before the end packet; one with a ``finish`` of its own that
        leaves this hook as it is gets its end packets only after its finish (``keeps_ends``)."""
        return (packet,)

    def finish(self) -> Iterable[Packet]:
        """End of stream: return anything still held. Not called after the stage's own failure
        (a source's failure is an end of stream for the stages after it). A ``StopRun`` here
        passes nothing more on: the stream has ended already."""
        return ()

    def close(self) -> None:
        """Release what ``open`` acquired; always called after a successful ``open``."""

    def stop_requested(self) -> bool:
        """True once the run is stopping (Ctrl-C, SIGTERM, another stage failed): the runner
        replaces this. A stage that may wait long on the outside world (a network camera that
        is down, a collector that is away) checks it while it waits and gives up the wait, so
        the stop does not hang on it."""
        return False

    def waiting_outside(self) -> None:
        """Say that the packet in hand waits on purpose for the outside world (a collector that
        is away): the runner replaces this, and ``--stall-timeout``, which catches a stage stuck
        on a packet, does not count the wait. Call it at least every second while waiting."""

    @classmethod
    def read_path(cls, param: str, value: str) -> str:
        """The path of the file an ``input_paths`` param's value names, as the stage reads it:
        the value, but where the stage looks elsewhere first (``haar``: OpenCV's own cascades,
        by name). The graph check and batch's record of what made its CSVs read that file."""
        return value

    @classmethod
    def closing_s(cls, params: StageParams) -> float:
        """Seconds ``close`` may wait on something outside the process (delivering queued
        messages): a stage asked to stop after another failed gets this long, beyond the
        runner's grace period, before it is killed, so its close is not cut off halfway.
        Asked once, when the graph is checked: a failure here is a line naming the stage."""
        return 0.0

    @classmethod
    def graph_warnings(cls, params: StageParams, after: Collection[str]) -> list[str]:
        """What would run but likely not do what was meant, given ``after``, the type names of
        the stages on one way this one's output takes to the end of the graph (asked once for
        each way); ``validate`` and ``run`` print each line as a warning naming the stage, once.
        A graph is only refused for what cannot run."""
        return []


MAX_SOURCE_ID = 256
"""The most characters of a source id (and of a run's): every row, topic, track and sequence
carries it, and a collector takes them from whoever reaches it, where ids of 200 KB took one to
470 MB and its state file to 211 MB."""


def id_problem(value: str) -> str | None:
    """Why ``value`` is no source id, or None: a line break or other control character in one
    split the CSV's rows across lines, which batch counts and tails as lines (its manifest said
    6 rows for 3), and reached the ZeroMQ topics and every line that names the source."""
    if len(value) > MAX_SOURCE_ID:  # before the control character's line, which shows the id
        return f"it is {len(value)} characters, more than the {MAX_SOURCE_ID} an id may have"
    if control_character(value):
        return f"{value!r} holds a line break or other control character; give a printable id"
    problem = not_text(value)
    return None if problem is None else f"{value!r} {problem}"


class SourceParams(StageParams):
    """Base of a source's parameters: the id its results carry, which every source offers."""

    source_id: str = Field("", description="name carried by every result (default: the stage name)")

    @field_validator("source_id")
    @classmethod
    def _an_id(cls, value: str) -> str:
        problem = id_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class Source(Stage):
    """A stage with no input that produces packets: files, folders, cameras, streams."""

    writes: ClassVar[str | None] = "frame"
    fresh_frames: ClassVar[bool] = False
    """True where every frame's pixels are an array of their own that the source never writes
    again (OpenCV's ``read`` and ``imread`` make a new one each time). ``run_stage`` and
    ``run_graph`` then keep them without the copy that guards against a source that draws each
    frame into one buffer: 0.2 ms a 720p frame, 0.7 ms at 1080p, in every batch task."""
    folder_suffixes: ClassVar[tuple[str, ...] | None] = None
    """For a source that reads a folder: the suffixes (lower case) of the files it takes from it;
    None for any. The graph check refuses a stage writing over such a file there, and no other:
    a CSV kept beside the photos was refused from the second run on, as if the source read it."""

    @classmethod
    def source_id_of(cls, name: str, params: StageParams) -> str:
        """What this source's results carry as ``source``: its ``source_id`` param if it has one
        set (``SourceParams`` gives it; a source whose params do not has its stage name), else
        the stage name. A class method, so that the graph check can refuse two sources with one
        id before any stage exists."""
        return getattr(params, "source_id", "") or name

    @property
    def source_id(self) -> str:
        return self.source_id_of(self.name, self.params)

    @property
    def live(self) -> bool:
        """Live sources drop frames instead of blocking, to bound latency: their oldest unread
        one (each process has its own queue into each consumer, so it is always their own)."""
        return False

    def length(self) -> int | None:
        """Frames this source will produce, when known (shown as a progress bar)."""
        return None

    def frames(self) -> Iterator[Packet]:
        raise NotImplementedError(f"{type(self).__name__} is a Source and must implement frames()")

    def process(self, packet: Packet) -> Iterable[Packet]:
        raise TypeError(f"source {self.name!r} has no input")


class Sink(Stage):
    """A stage that writes results out and passes nothing on."""

    writes: ClassVar[str | None] = None

    def process(self, packet: Packet) -> Iterable[Packet]:
        try:
            self.consume(packet)
        except BrokenPipeError:
            if not reader_gone(self):
                raise
            raise StopRun from None
        return ()

    def consume(self, packet: Packet) -> None:
        raise NotImplementedError(f"{type(self).__name__} is a Sink and must implement consume()")

    def outage(self, packet: Packet) -> Iterable[Packet]:
        """No notice by default: a sink writes frames, and this packet is none."""
        return ()

    def ended(self, packet: Packet) -> Iterable[Packet]:
        """No notice by default, as for an outage."""
        return ()


def reader_gone(stage: Stage) -> bool:
    """Whether a broken pipe in ``stage`` is the reader of the run's output leaving (``| head``
    has what it wanted), which ends a run cleanly: a sink whose ``output_paths`` name the
    process's stdout or stderr, a pipe or socket nobody reads now (POLLERR; POLLHUP for a
    socket: Node's child_process pipes, journald's). A broken pipe of the sink's own (an encoder
    child, a network peer, a named pipe) is a failure: it ended a run exit 0, its rows lost
    without a word, also where another standard stream's reader had gone."""
    if not isinstance(stage, Sink):
        return False
    kind = type(stage)
    streams = {descriptor_of(path) for _, path in named_files(kind, stage.params, kind.output_paths)} & {1, 2}
    return bool(readers_gone(streams))


def named_files(cls: type[Stage], params: StageParams, names: tuple[str, ...]) -> list[tuple[str, str]]:
    """(param, path) for each of ``names`` (a stage's ``input_paths`` or ``output_paths``) that
    names a file, one for each file of a list param (a source of several images: its list was
    checked as the one path "['a.png', 'b.png']"). A param that may be left empty (its default
    is ``""`` or None: a key file not used) names none while it is; a required one given as
    ``""`` is returned, for the config check to refuse."""
    named = []
    for name in names:
        value = getattr(params, name)
        field = cls.Params.model_fields[name]
        if value is None or (value == "" and not field.is_required() and field.get_default() in ("", None)):
            continue
        named.extend((name, str(path)) for path in (value if isinstance(value, (list, tuple)) else (value,)))
    return named
