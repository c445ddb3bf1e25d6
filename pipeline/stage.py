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
"""
from __future__ import annotations

import math
import sys
from collections.abc import Callable, Collection, Iterable, Iterator
from types import UnionType
from typing import Any, ClassVar, Union, get_args, get_origin

import numpy as np
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from .errors import control_character, printable
from .frames import FrameRef
from .messages import EMOTIONS, Face, Packet
from .output_files import descriptor_of, readers_gone
from .redaction import redact_urls


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
        annotation = cls.model_fields[info.field_name].annotation
        kinds = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
        if isinstance(value, bool) and bool not in kinds and (int in kinds or float in kinds):
            expected = "a number or text" if str in kinds else "a number"
            raise ValueError(f"expected {expected}, got {str(value).lower()}")
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


class SourceParams(StageParams):
    """Base of a source's parameters: the id its results carry, which every source offers."""

    source_id: str = Field("", description="name carried by every result (default: the stage name)")

    @field_validator("source_id")
    @classmethod
    def _no_control_character(cls, value: str) -> str:
        """A line break or other control character in an id split the CSV's rows across lines,
        which batch counts and tails as lines (its manifest said 6 rows for 3), and reached the
        ZeroMQ topics and every line that names the source."""
        if control_character(value):
            raise ValueError(f"{value!r} holds a line break or other control character; give a printable id")
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


def packets_of(result: Iterable[Packet] | None, method: str = "process", captured: float = 0.0) -> list[Packet]:
    """What a stage's ``process`` (or ``finish``) returned, as a list. Anything but packets, or a
    packet whose faces or image the stages do not take, is a TypeError saying so, raised in the
    stage that returned it: unchecked, it was the stage it reached that failed, with a message
    about a missing attribute or an OpenCV assertion. A packet made anew (``Packet(...)``) gets
    the ``captured`` time of the one the stage was given: without it the zmq sink's heartbeats
    stopped after the first and a sink's latency read 12 hours."""
    if result is None:
        raise TypeError(f"{method} returned None, not an iterable of packets (return () to pass nothing on)")
    if isinstance(result, Packet):  # iterating it would fail with "'Packet' object is not iterable"
        raise TypeError(f"{method} returned a Packet, not an iterable of packets (return (packet,) to pass it on)")
    out = list(result)
    for item in out:
        if not isinstance(item, Packet):
            raise TypeError(f"{method} returned a {type(item).__name__} among its packets, not a Packet")
        problem = _faces_problem(item.faces)
        if problem:
            raise TypeError(f"{method} returned a packet {problem}")
        if not item.captured:
            item.captured = captured
        shown = "" if isinstance(item.image, FrameRef) else not_a_frame(item.image)
        if shown:  # unchecked, the detector after it failed on an OpenCV assertion blaming its scale factor
            raise TypeError(f"{method} returned a packet with {shown} for its image; {A_FRAME}")
    return out


NUMBERS = (int, float, np.integer, np.floating)
"""What a probability may be: a plug-in's ``list(model_output)`` holds numpy scalars."""
PROB_SLACK = 1e-3
"""How far outside [0, 1] a probability may stray by float rounding (a softmax, an average of two)."""


def _faces_problem(faces: Any) -> str:
    """What is wrong with a packet's faces, said after "a packet", or nothing."""
    wrong = (faces if not isinstance(faces, (list, type(None))) else
             next((face for face in faces or () if not isinstance(face, Face)), None))
    if wrong is not None:  # unchecked, the stage after it failed, on a missing attribute
        return f"whose faces are or hold a {type(wrong).__name__}, not a list of fer_pipe.messages.Face"
    return next((f"with a face whose {problem}" for problem in map(_face_problem, faces or ()) if problem), "")


def _face_problem(face: Face) -> str:
    """What is wrong with a face a stage passes on, or nothing. Unchecked, a plug-in detector's
    box of three numbers failed the classifier after it, a float box went into the CSV's
    integer columns, and a plug-in classifier's one NaN made its track's smoothed label NaN for
    the rest of the track, exit 0; probabilities of another length failed the csv sink."""
    box = face.box
    if (not isinstance(box, (tuple, list)) or len(box) != 4
            or not all(type(v) is int or isinstance(v, np.integer) for v in box) or box[2] <= 0 or box[3] <= 0):
        return f"box is {box!r}; a box is (x, y, w, h), whole pixels, w and h above 0"
    probs = face.probs
    if probs is None:
        return ""
    values = probs.tolist() if isinstance(probs, np.ndarray) else probs  # Python floats: 7 compare in 1 us, not 15
    if (not isinstance(values, (list, tuple)) or len(values) != len(EMOTIONS)
            or not all(isinstance(v, NUMBERS) and not isinstance(v, bool) and -PROB_SLACK <= v <= 1 + PROB_SLACK
                       for v in values)):
        return (f"probs are {probs!r}; they are one probability from 0 to 1 for each of the "
                f"{len(EMOTIONS)} emotions ({', '.join(EMOTIONS)})")  # NaN fails the comparisons
    return ""


def handle(stage: Stage, packet: Packet, kept_ends: list[Packet] | None = None) -> list[Packet]:
    """One packet through a stage: a frame to its ``process``, a source's outage to its ``outage``
    and its end to its ``ended`` (the class's: a plug-in written before them may keep a flag of
    that name on its instance). A stage that may hold packets until its own end (``keeps_ends``)
    gets no end packet where ``kept_ends`` is given: it goes there, to be passed on after what
    the stage's ``finish`` returns."""
    if packet.outage:  # one test per frame; a source's end is an outage packet too
        if packet.ended:
            if kept_ends is not None and keeps_ends(type(stage)):
                kept_ends.append(packet)
                return []
            return _notice(stage, type(stage).ended, packet, "ended")
        return _notice(stage, type(stage).outage, packet, "outage")
    return packets_of(stage.process(packet), captured=packet.captured)


def _notice(stage: Stage, method: Callable[[Stage, Packet], Iterable[Packet] | None], packet: Packet,
            name: str) -> list[Packet]:
    """A notice through a stage: a sink whose reader left while it wrote what the notice closes
    (the episodes an end closes, to /dev/stdout | head) ends the run, as in ``process``, where
    it failed it, exit 1."""
    try:
        return packets_of(method(stage, packet), name)
    except BrokenPipeError:
        if not reader_gone(stage):
            raise
        raise StopRun from None


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


def close_stage(stage: Stage) -> None:
    """Close ``stage``. A sink whose reader left (``/dev/stdout | head``) ends as in ``process``:
    a file opened as the README's recipe opens it still held its last rows at close, and a run
    that a reader had left cleanly failed there, exit 1."""
    try:
        stage.close()
    except BrokenPipeError:
        if not reader_gone(stage):
            raise


def keeps_ends(kind: type[Stage]) -> bool:
    """A stage with a ``finish`` of its own and no ``ended``: one that may hold packets until the
    run's end (a batch for a model) and says nothing of a source's end. Its end packets wait for
    its finish: passed on at once, a source's end overtook the frames such a stage held, the
    tracker after it ended the track, and the frames that followed had no track id. Not
    for a sink (nothing follows it), nor with workers (which hold nothing between packets)."""
    return kind.ended is Stage.ended and kind.finish is not Stage.finish


def length_of(source: Source) -> int | None:
    """``source.length()``, checked in the source's process: a text there failed the runner's
    progress bar in the parent, and the run with it, before a frame was written."""
    length = source.length()
    if length is None or (isinstance(length, (int, np.integer)) and not isinstance(length, bool) and length >= 0):
        return None if length is None else int(length)
    raise TypeError(f"length() returned {length!r}; it returns the frames to come, an int >= 0, or None")


def idle_of(stage: Stage) -> float | None:
    """``stage.idle_s``, checked once it is open (a stage may set it there): 0 or less polled its
    queue without a wait, a whole core busy in silence, and a text failed on a sum naming neither."""
    idle = stage.idle_s
    if idle is None or (isinstance(idle, (int, float)) and not isinstance(idle, bool) and 0 < idle < math.inf):
        return idle
    raise TypeError(f"idle_s is {idle!r}; it is how often idle runs, a number of seconds > 0, or None")


def frame_of(source_id: str, item: Any, last_index: int | None) -> Packet:
    """What a source's ``frames`` yielded, checked against the source contract: a TypeError
    there, raised in the source, where the stage that met it failed instead (the detector, on an
    OpenCV assertion or a missing attribute), or nothing did (a packet of another source id, a
    frame number given twice, which the CSV's "every frame once, in order" then broke)."""
    if not isinstance(item, Packet):
        raise TypeError(f"frames() yielded a {type(item).__name__}, not a Packet")
    if item.source != source_id:
        raise TypeError(f"frames() yielded a packet of source {item.source!r}; this source's packets carry "
                        f"{source_id!r} (Packet(self.source_id, ...))")
    index, timestamp = item.index, item.timestamp
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0 and not item.outage:
        # -1 is an outage packet's number while its source has sent no frame
        raise TypeError(f"frames() yielded frame number {index!r}; a frame number is an int >= 0")
    if isinstance(timestamp, bool) or not isinstance(timestamp, (float, int, np.floating, np.integer)) \
            or not math.isfinite(timestamp):  # a NaN made every later smoothed value of its track NaN
        raise TypeError(f"frames() yielded frame {index} dated {timestamp!r}; a timestamp is a finite number of "
                        "seconds")
    if item.outage:
        last = -1 if last_index is None else last_index
        if index != last or item.image is not None or item.faces is not None:
            after = "before any frame" if last_index is None else f"after frame {last_index}"
            raise TypeError(f"frames() yielded an outage packet numbered {index} {after}: make it with "
                            "fer_pipe.messages.outage(source, the last frame's number or -1 before the first, time)")
        return item
    if last_index is not None and index <= last_index:
        raise TypeError(f"frames() yielded frame {index} after frame {last_index}; frame numbers must increase")
    shown = not_a_frame(item.image)
    if shown:
        raise TypeError(f"frames() yielded frame {index} with {shown} for its image; {A_FRAME}")
    problem = _faces_problem(item.faces)  # a source replaying recorded detections: the classifier was blamed
    if problem:
        raise TypeError(f"frames() yielded frame {index}, a packet {problem}")
    return item


A_FRAME = "a frame is a uint8 array, H x W x 3 (BGR) or grey, of at least one pixel"


def not_a_frame(image: Any) -> str:
    """What ``image`` is, where it is not what the stages take (``A_FRAME``); empty where it is,
    or where there is none. The detector met a float image with an OpenCV assertion that blamed
    its scale factor, and an image of no pixels (0 x 640 x 3) with another."""
    if image is None or (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.size
                         and (image.ndim == 2 or image.ndim == 3 and image.shape[2] in (1, 3))):
        return ""
    return f"an array of {image.dtype} shaped {image.shape}" if isinstance(image, np.ndarray) \
        else f"a {type(image).__name__}"


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


def one_line(text: str) -> str:
    """``text`` on one line, as every failure line is: its lines joined with `` / ``."""
    return " / ".join(line.strip() for line in text.splitlines() if line.strip())


def instantiate(cls: type[Stage], name: str, params: StageParams) -> Stage:
    """``cls(name, params)``, checked: a stage whose ``__init__`` did not call
    ``super().__init__`` ran everywhere but in its process's end, which failed out of sight,
    skipped its ``close`` and left its file unwritten, in a run that exited 0."""
    stage = cls(name, params)
    if getattr(stage, "name", None) != name or getattr(stage, "params", None) is None:
        raise TypeError(f"{cls.__name__}.__init__ must call super().__init__(name, params)")
    return stage


def said(exc: BaseException) -> str:
    """``ValueError: bad value``, on one line, with any URL's password masked and anything a
    terminal would act on escaped: some lines holding it are printed as they are (``on_error:
    skip``'s), and a camera's error quotes its URL. An empty message (``raise KeyError()``) is the
    type alone. A message that cannot be made (a library's ``__str__`` that fails) is said so:
    unguarded, that failure replaced the line about the stage's, and a stage with ``on_error:
    skip`` failed the run."""
    try:
        text = printable(redact_urls(one_line(str(exc))))
    except Exception as inner:  # its type alone: the inner one's message may fail as well
        return f"{type(exc).__name__} (its message could not be made: {type(inner).__name__})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


SKIPS_SAID = 10
"""Packets a stage process with ``on_error: skip`` says it dropped, one line each; the rest are
counted only (the statistics' skipped column): a stage that failed on every frame of a camera
wrote a line a frame, some 2 million a day."""


def named(packet: Packet) -> str:
    """A packet as a line names it: its source's frame, or its source's outage, which is none
    ("skipped cam frame -1")."""
    if not packet.outage:
        return f"{packet.source} frame {packet.index}"
    if packet.ended:
        return f"{packet.source}'s end after frame {packet.index}"
    return f"{packet.source}'s outage " + (f"after frame {packet.index}" if packet.index >= 0
                                           else "before its first frame")


def say_skipped(stage: str, packet: Packet, exc: BaseException, count: int) -> None:
    """What a stage with ``on_error: skip`` says of the ``count``-th packet it dropped, in a run
    and in a batch task alike."""
    if count <= SKIPS_SAID:
        print(f"fer-pipe: stage {stage!r} skipped {named(packet)}: {said(exc)}", file=sys.stderr)
    if count == SKIPS_SAID:
        print(f"fer-pipe: stage {stage!r}: further packets it skips are counted in its skipped column, not "
              "said one by one", file=sys.stderr)
