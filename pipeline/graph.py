"""A checked pipeline graph: stages with validated parameters and type-matched edges."""
from __future__ import annotations

import difflib
import os
import stat
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from typing import Literal

from .errors import PLUGIN_BUGS, said
from .messages import kinds_read, provides
from .stage import MAX_SOURCE_ID, Sink, Source, Stage, StageParams, id_problem, named_files
from .stage_calls import instantiate

OnError = Literal["stop", "skip"]


@dataclass
class StageSpec:
    """One stage of a graph as the runner needs it: everything here is already validated."""

    name: str
    type_name: str
    cls: type[Stage]
    params: StageParams
    inputs: list[str] = field(default_factory=list)
    on_error: OnError = "stop"
    workers: int = 1
    closing_s: float = 0.0
    """What the stage's ``closing_s`` gave for its params, asked once when the graph was checked."""

    @property
    def is_source(self) -> bool:
        return issubclass(self.cls, Source)

    def process_names(self) -> list[str]:
        """One per process: the stage's name, or ``name[i]`` for each of several workers."""
        return [self.name] if self.workers == 1 else [f"{self.name}[{i}]" for i in range(self.workers)]

    def build(self) -> Stage:
        return instantiate(self.cls, self.name, self.params)


QUEUE_SIZE = 8
"""Items each queue between two stage processes holds when a config does not say."""


@dataclass
class Graph:
    stages: dict[str, StageSpec]
    queue_size: int = QUEUE_SIZE
    origin: str = "<graph>"

    def consumers(self, name: str) -> list[str]:
        return [s.name for s in self.stages.values() if name in s.inputs]

    def order(self) -> list[str]:
        """Stage names, every stage after the stages it reads from."""
        return list(TopologicalSorter({n: s.inputs for n, s in self.stages.items()}).static_order())

    def chains(self) -> list[list[str]]:
        """Every edge once, as chains of stage names, for people to check the wiring: a branch
        starts a new chain at the stage it leaves (``classifier -> annotated``), and a chain
        ends at a stage with several inputs, whose own chains follow (``cam1 -> detector; cam2
        -> detector; detector -> ...``): walked on, ``a -> d -> c1; b -> d -> c2`` read as if a
        reached c1 alone and b c2 alone. A stage with no edge is a chain of its own."""
        left = {name: self.consumers(name) for name in self.order()}
        chains = []
        for name in left:
            if not left[name] and not self.stages[name].inputs:
                chains.append([name])
            while left[name]:
                chain = [name]
                while left[chain[-1]] and (len(chain) == 1 or len(self.stages[chain[-1]].inputs) < 2):
                    chain.append(left[chain[-1]].pop(0))
                chains.append(chain)
        return chains

    def sources(self) -> list[StageSpec]:
        return [s for s in self.stages.values() if s.is_source]

    def sources_of(self, name: str) -> list[str]:
        """The source stages whose frames reach stage ``name``, in stage order."""
        reached = self.upstream(name)
        return [s.name for s in self.sources() if s.name in reached]

    def upstream(self, name: str) -> set[str]:
        """Stage ``name`` and every stage whose output reaches it."""
        return self._reach(name, lambda n: self.stages[n].inputs)

    def downstream(self, name: str) -> set[str]:
        """Stage ``name`` and every stage its output reaches."""
        return self._reach(name, self.consumers)

    @staticmethod
    def _reach(start: str, step: Callable[[str], Iterable[str]]) -> set[str]:
        reached, todo = set(), [start]
        while todo:
            name = todo.pop()
            if name not in reached:
                reached.add(name)
                todo.extend(step(name))
        return reached

    def ends(self) -> list[StageSpec]:
        """The stages that feed no stage: Sink subclasses, and any other stage left at an end
        (a dead end, which validation warns of): the runner waits for every one of them."""
        return [s for s in self.stages.values() if not self.consumers(s.name)]


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the known name closest to ``word``, if one is close; both
    written out as escapes where they differ only in letters outside ASCII: a Cyrillic ``о`` for
    ``o``, which no normal form folds, was told to mean a name that looked the same (s68a 6, for
    stage names and params alike: s68d 7)."""
    close = difflib.get_close_matches(word, [k for k in known if isinstance(k, str)], n=1)
    if not close:
        return ""
    if close[0] != word and len(close[0]) == len(word) and all(a == b or not (a + b).isascii()
                                                               for a, b in zip(word, close[0])):
        return f" (did you mean {close[0]!r}? written out, {ascii(word)} here and {ascii(close[0])} there)"
    return f" (did you mean {close[0]!r}?)"


def spelled_otherwise(name: str, names: Iterable[str]) -> str:
    """For a line saying there is no stage ``name``: that one looks the same but is made of other
    Unicode characters (``é`` as ``e`` and a combining accent, as some editors and macOS text
    give it), or one is spelt nearly so (``sorce``, ``Source``). Said, not taken for it, so that
    a config means one thing wherever it is read; the line showed two names no one could tell
    apart, and a typo's got no hint."""
    names = list(names)
    key = unicodedata.normalize("NFKC", name)
    same = [other for other in names if isinstance(other, str) and unicodedata.normalize("NFKC", other) == key]
    if not same:
        return did_you_mean(name, names)
    return (f" (stage {same[0]!r} looks the same, written with other Unicode characters: "
            f"{ascii(name)} here, {ascii(same[0])} there)")


def check_edges(graph: Graph) -> list[tuple[StageSpec, str]]:
    """Every structural problem of a graph, as (stage, message) pairs, in stage order.

    Edges name existing stages, sources have no inputs, every other stage has one, what a
    stage reads is what its inputs write, and there is no cycle.
    """
    problems: list[tuple[StageSpec, str]] = []
    if not graph.sources():
        first = next(iter(graph.stages.values()), None)
        if first is not None:
            problems.append((first, "the graph has no source stage"))
    for spec in graph.stages.values():
        if spec.is_source and spec.inputs:
            problems.append((spec, f"inputs: a source ({spec.type_name}) reads nothing, "
                                   f"but inputs lists {', '.join(spec.inputs)}"))
            continue
        if not spec.is_source and not spec.inputs:
            problems.append((spec, "inputs: nothing feeds this stage (add inputs: [<stage>])"))
        for upstream in spec.inputs:
            if upstream == spec.name:
                problems.append((spec, "inputs: a stage cannot read its own output"))
                continue
            other = graph.stages.get(upstream)
            if other is None:
                problems.append((spec, f"inputs: no stage named {upstream!r}"
                                       f"{spelled_otherwise(upstream, graph.stages)}"))
                continue
            if issubclass(other.cls, Sink):
                problems.append((spec, f"inputs: {upstream!r} ({other.type_name}) is a sink and "
                                       "writes nothing"))
            elif other.cls.writes is None:  # a plug-in that forgot to declare it
                problems.append((spec, f"inputs: {upstream!r} ({other.type_name}) declares no "
                                       "'writes' kind (frame, faces or expressions)"))
            elif spec.cls.reads is not None and not any(provides(other.cls.writes, kind)
                                                         for kind in kinds_read(spec.cls.reads)):
                problems.append((spec, f"inputs: {upstream!r} ({other.type_name}) writes "
                                       f"{other.cls.writes!r}, but {spec.type_name} reads "
                                       f"{' or '.join(map(repr, kinds_read(spec.cls.reads)))}"
                                       f"{_fed_more_than_it_writes(graph, other, spec)}"))
    if not problems:
        try:
            graph.order()
        except CycleError as exc:
            cycle = exc.args[1]
            problems.append((graph.stages[cycle[0]], "inputs: cycle " + " -> ".join(cycle)))
    if not problems:
        for spec in (s for s in graph.stages.values() if s.cls.one_source):
            sources = graph.sources_of(spec.name)
            if len(sources) > 1:
                problems.append((spec, f"inputs: the frames of {len(sources)} sources reach it ({', '.join(sources)}), "
                                       f"and a {spec.type_name} takes one source's: give each source its own "
                                       "detector and sink"))
    return problems


def _fed_more_than_it_writes(graph: Graph, stage: StageSpec, reader: StageSpec) -> str:
    """A hint where ``stage`` passes on what it reads (a track stage) and is fed what ``reader``
    wants from a stage it could go before: put after the classifier, a track's refusal said only
    that it writes faces (s65a 7). Not for a stage that makes a kind of its own, nor before one
    that could not read it (a join of expressions), where the advice was wrong (s65d 2)."""
    if stage.cls.writes is None or stage.cls.reads is None or stage.cls.writes not in kinds_read(stage.cls.reads):
        return ""
    fed = ((graph.stages[name], kind) for name in stage.inputs if name in graph.stages
           for kind in kinds_read(reader.cls.reads))
    maker = next(((up, kind) for up, kind in fed
                  if not issubclass(up.cls, Sink) and provides(up.cls.writes or "", kind) and up.cls.reads is not None
                  and any(provides(stage.cls.writes, wanted) for wanted in kinds_read(up.cls.reads))), None)
    if maker is None:
        return ""
    up, kind = maker
    return (f" (it is fed {kind!r} and passes on {stage.cls.writes!r}: put it before {up.name!r} ({up.type_name}), "
            f"which makes {kind!r})")


def warnings(graph: Graph) -> list[tuple[StageSpec, str]]:
    """What would run but likely not as meant, as (stage, message): a stage whose output nothing
    takes (allowed: a benchmark of the detector ends there, but in a real graph a sink left out
    or a camera missing from the detector's inputs, whose frames would be read and dropped
    without a word), and what each stage's ``graph_warnings`` says of its place."""
    found = [(s, "feeds no stage, so what it makes is dropped (a sink left out, or a source missing "
                 "from an inputs list?)") for s in graph.ends() if not issubclass(s.cls, Sink)]

    up, down = _Ways(graph, lambda n: graph.stages[n].inputs), _Ways(graph, graph.consumers)
    sources = _sources_by_stage(graph)
    for name in graph.order():
        spec = graph.stages[name]
        twice = _by_two_paths(spec, sources)
        if twice:
            found.append((spec, twice))
        if spec.cls.wants_before:
            ways = up.after(name)
            for kind, why in spec.cls.wants_before.items():
                lacking = sum(kind not in before for before in ways)
                if lacking:  # said of the stage as a whole, it was untrue of a join whose other way has one (s65a 8)
                    found.append((spec, why if lacking == len(ways) else
                                  f"{why} (on one of the ways into it, not on every one)"))
        lines: dict[str, None] = {}  # a line said on several ways is said once
        for after in down.after(name):
            try:  # a plug-in tracker after haar's every_n was warned of as none
                given = spec.cls.graph_warnings(spec.params, after)
                given = [given] if isinstance(given, str) else list(given)
                if not all(isinstance(line, str) for line in given):
                    raise TypeError(f"graph_warnings returned {given!r}, not a list of lines")
            except PLUGIN_BUGS as exc:  # a plug-in's bug: said, not a traceback for every command
                given = [f"could not check its place in the graph: {said(exc)}"]
            lines.update(dict.fromkeys(given))
        found += [(spec, line) for line in lines]
    return found


class _Ways:
    """The stage types on each way from a stage to an end of the graph (a source, going up; a
    stage that feeds none, going down), as their distinct sets: what a stage wants before or
    after it must be on every way, not somewhere in the graph. A tracker on one branch after
    haar's ``every_n`` hid that the other branch's CSV said 'no face' on 2 frames in 3."""

    def __init__(self, graph: Graph, step: Callable[[str], Iterable[str]]) -> None:
        self._graph, self._step = graph, step
        self._found: dict[str, set[frozenset[str]]] = {}

    def after(self, name: str) -> set[frozenset[str]]:
        """The sets of types on the ways on from ``name``, ``name`` not counted; one empty set at an
        end. Found depth-first with a list of its own, not by recursion: a chain of 500 stages ended
        in a RecursionError traceback."""
        todo = [name]
        while todo:
            current = todo[-1]
            waiting = [n for n in self._step(current) if n not in self._found]
            if current in self._found:
                todo.pop()
            elif waiting:
                todo.extend(waiting)
            else:
                ways = {self._kinds(n) | way for n in self._step(current) for way in self._found[n]}
                self._found[todo.pop()] = ways or {frozenset()}
        return self._found[name]

    def _kinds(self, name: str) -> frozenset[str]:
        """The type a stage is, and those it stands in for (``provides``: a tracker of a plug-in's own)."""
        spec = self._graph.stages[name]
        return frozenset((spec.type_name, *spec.cls.provides))


def _by_two_paths(spec: StageSpec, sources: dict[str, dict[str, None]]) -> str:
    """Where two of a stage's inputs carry one source's frames (a filter put in a chain with the
    old edge kept: ``inputs: [confident, classifier]``), it gets each frame twice, and a sink
    writes it twice, without a word. ``sources``: each stage's sources.
    One pass over the inputs: every pair, each walking the graph, took 133 s for a detector
    fed by 1,000 cameras."""
    first: dict[str, str] = {}  # source -> the first input that carries it
    for name in spec.inputs:
        for source in sources[name]:
            if first.setdefault(source, name) != name:
                return (f"gets source {source!r}'s frames by two paths ({first[source]}, {name}): any frame "
                        "both pass on comes twice (an old input left beside a stage put between?)")
    return ""


def _sources_by_stage(graph: Graph) -> dict[str, dict[str, None]]:
    """Each stage's sources (the stages whose frames reach it), found once for
    the whole graph, each from its inputs'."""
    found: dict[str, dict[str, None]] = {}
    for name in graph.order():
        spec = graph.stages[name]
        found[name] = {name: None} if spec.is_source else {}
        for upstream in spec.inputs:
            found[name].update(found[upstream])
    return found


def check_source_ids(graph: Graph) -> list[tuple[StageSpec, str]]:
    """Sources that would carry one id, as (later stage, message): the id is the CSV's source
    column, the events' topic, and the key of every track, smoother and sequence downstream,
    so two cameras under one id would be mixed beyond telling apart. Two ids that look the same,
    made of other Unicode characters (``é`` as ``e`` and a combining accent, from a macOS file
    name), are refused too: their rows could not be told apart by anyone reading them."""
    seen: dict[str, tuple[str, StageSpec]] = {}
    problems = []
    for spec in graph.sources():
        try:
            source = spec.cls.source_id_of(spec.name, spec.params)
        except PLUGIN_BUGS as exc:  # a plug-in's own: a line, not a traceback for every command
            problems.append((spec, f"the stage's source_id_of failed: {said(exc)}"))
            continue
        if not isinstance(source, str):
            problems.append((spec, f"the stage's source_id_of gave {source!r}, not a text"))
            continue
        problem = id_problem(source)  # the stage's name, or a plug-in's own source_id param, which no bound checked
        key = unicodedata.normalize("NFKC", source)
        if problem:
            problems.append((spec, f"{problem}: give it a shorter source_id" if len(source) > MAX_SOURCE_ID else problem))
        elif key in seen and seen[key][0] == source:
            problems.append((spec, f"{source!r} is also the source id of stage {seen[key][1].name!r}; "
                                   "give each source its own source_id"))
        elif key in seen:
            problems.append((spec, f"{source!r} looks the same as the source id of stage {seen[key][1].name!r}, "
                                   f"written with other Unicode characters ({ascii(source)} here, "
                                   f"{ascii(seen[key][0])} there); give each source an id that tells it apart"))
        else:
            seen[key] = source, spec
    return problems


def file_key(path: str) -> object | None:
    """What makes two paths one file (device and inode where it exists, so links and other
    spellings match), or None for a device, FIFO or socket (``/dev/null``, ``/dev/stdout``),
    which several stages may share."""
    try:
        mode = os.stat(path)
    except OSError:
        return os.path.realpath(path)
    return (mode.st_dev, mode.st_ino) if stat.S_ISREG(mode.st_mode) else None


def check_paths(graph: Graph, config_file: str | None = None) -> list[tuple[StageSpec, str, str]]:
    """Files that two stages would fight over, as (stage, param, message), in stage order: a
    file written by two stages, or written by one and read by another (or in a folder a source
    reads: an image folder's photo was replaced by the CSV) or holding the config."""
    config_key = file_key(config_file) if config_file else None
    read_by: dict[object, StageSpec] = {}
    folders_read: dict[str, StageSpec] = {}
    written_by: dict[object, StageSpec] = {}
    problems: list[tuple[StageSpec, str, str]] = []
    for spec in graph.stages.values():
        for param, named in named_files(spec.cls, spec.params, spec.cls.input_paths):
            try:
                path = spec.cls.read_path(param, named)
            except PLUGIN_BUGS as exc:  # a plug-in's lookup (an unset variable): a line, not a traceback
                problems.append((spec, param, f"the stage's read_path failed on {named}: {said(exc)}"))
                continue
            if os.path.isdir(path):  # a source's folder is what it reads; another stage's is its own mistake
                if spec.is_source:
                    folders_read.setdefault(os.path.join(os.path.realpath(path), ""), spec)
                continue
            key = file_key(path)
            if key is not None:
                read_by.setdefault(key, spec)
    for spec in graph.stages.values():
        for param, path in named_files(spec.cls, spec.params, spec.cls.output_paths):
            key = file_key(path)
            if key is None:
                continue
            real = os.path.realpath(path) if folders_read and isinstance(key, tuple) else ""  # a file already there
            folder = next((f for f, source in folders_read.items() if real.startswith(f) and (
                source.cls.folder_suffixes is None or os.path.splitext(real)[1].lower() in source.cls.folder_suffixes)),
                None) if real else None
            if key == config_key:
                problems.append((spec, param, f"{path} is this config file; writing it would destroy the config"))
            elif folder is not None:
                other = folders_read[folder]
                problems.append((spec, param, f"{path} is in the folder stage {other.name!r} ({other.type_name}) "
                                              "reads; writing it would destroy that input"))
            elif key in read_by:
                other = read_by[key]
                problems.append((spec, param, f"{path} is the file stage {other.name!r} "
                                              f"({other.type_name}) reads; writing it would destroy that input"))
            elif key in written_by:
                other = written_by[key]
                problems.append((spec, param, f"{path} is also written by stage {other.name!r} "
                                              f"({other.type_name}); give each stage its own file"))
            else:
                written_by[key] = spec
    return problems
