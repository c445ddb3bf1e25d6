"""Stage discovery through the ``fer_pipe.stages`` entry-point group.

Built-in stages are declared in this package's own ``setup.cfg`` under the same group, so
they load by the same path as a third-party package's stages. A broken plug-in does not stop
the others: its problem is kept, named with its distribution, and reported when a config uses
its type name or when ``fer-pipe stages`` lists what is installed. A stage type's module is
imported when the type is first looked up, not before.
"""
from __future__ import annotations

import contextlib
import json
import sys
import threading
from collections.abc import Iterator, MutableMapping
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from typing import Annotated, TypeVar

from pydantic import ConfigDict, PydanticUserError, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from .errors import PLUGIN_BUGS, said
from .stage import SET_STAGE_KEYS, Sink, Source, Stage, StageParams, boolean_for_number

GROUP = "fer_pipe.stages"


V = TypeVar("V")


class _Found(MutableMapping[str, V]):
    """One of a registry's tables, filled as it is read: looking a name up imports that entry
    point alone, and going through the table (``fer-pipe stages``, the known types of an unknown
    type's line) imports them all. A run imports the stage modules its config names and no
    others: importing all 14 built-ins, each param default checked, was 0.1 s of every command."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._items: dict[str, V] = {}

    def __getitem__(self, name: str) -> V:
        self._registry.import_type(name)
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        self._registry.import_all()
        return iter(self._items)

    def __len__(self) -> int:
        self._registry.import_all()
        return len(self._items)

    def __setitem__(self, name: str, value: V) -> None:
        self._registry.import_type(name)  # else a later look-up imported the declared one over it
        self._items[name] = value

    def __delitem__(self, name: str) -> None:
        self._registry.import_type(name)
        del self._items[name]


class Registry:
    """The stage types of the installed distributions, each loaded when first looked up."""

    def __init__(self, found: list[EntryPoint]) -> None:
        self.types: _Found[type[Stage]] = _Found(self)
        self.problems: _Found[str] = _Found(self)
        self.import_errors: _Found[BaseException] = _Found(self)
        """What a plug-in raised as it was imported, its traceback with it: ``--debug`` shows where
        in the plug-in's files the error is, which its one line (a NameError's words) does not."""
        self.origins: dict[str, str] = {}
        self._pending: dict[str, EntryPoint] = {}
        declared: dict[str, list[str]] = {}
        for ep in found:
            declared.setdefault(ep.name, []).append(_distribution(ep))
        for name, by in declared.items():
            if len(by) > 1:  # every one named: with three, the third came to light only once one was removed
                by = sorted(by)
                self.problems[name] = (f"stage type {name!r} is declared "
                                       f"{'twice' if len(by) == 2 else f'{len(by)} times'}: "
                                       f"by {', '.join(by[:-1])} and {by[-1]}")
        for ep in found:
            if len(declared[ep.name]) == 1:
                self.origins[ep.name] = declared[ep.name][0]
                self._pending[ep.name] = ep

    def import_type(self, name: str) -> None:
        """Import the entry point of ``name`` if it is declared once and not yet imported, into
        ``types`` or, broken, into ``problems``."""
        with _BUILDING:
            ep = self._pending.get(name)
            if ep is None:
                return
            try:  # the pop in it: a Ctrl-C landing after a pop, or at the load's first line, lost the type
                del self._pending[name]
                self._loaded(ep)
            except BaseException:  # a Ctrl-C in a host's thread: the type is looked for again next time
                self._pending[name] = ep
                raise

    def import_all(self) -> None:
        with _BUILDING:
            for name in sorted(self._pending):
                self.import_type(name)  # one a plug-in looked up as it was imported is there already

    def _loaded(self, ep: EntryPoint) -> None:
        dist = self.origins[ep.name]
        try:
            with contextlib.redirect_stdout(sys.stderr):  # an import's banner is no line of a CSV on stdout
                obj = ep.load()
        # a plug-in can fail to import in any way, SystemExit too (a module that parses the
        # command line, or exits when a library is missing): report, don't crash or exit
        except PLUGIN_BUGS as exc:
            why = (f"it exits while imported (sys.exit({exc.code!r}))" if isinstance(exc, SystemExit)
                   else said(exc))  # numpy's import error alone is a dozen lines
            self.problems[ep.name] = f"plug-in {ep.name!r} from distribution {dist}: cannot import {ep.value}: {why}"
            self.import_errors[ep.name] = exc
            return
        if not (isinstance(obj, type) and issubclass(obj, Stage)):
            self.problems[ep.name] = (f"plug-in {ep.name!r} from distribution {dist}: {ep.value} is not "
                                      f"a fer_pipe Stage subclass")
            return
        problem = _contract_problem(obj)
        if problem:
            self.problems[ep.name] = f"plug-in {ep.name!r} from distribution {dist}: {ep.value}{problem}"
            return
        self.types[ep.name] = obj


def _distribution(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else "an unknown distribution"


_BUILDING = threading.RLock()


def registry() -> Registry:
    """The stage types, found once per process. Behind a lock, as each import is: two threads of
    a host calling the API at once each redirected sys.stdout for the imports, and one restored
    the other's redirection, leaving the host's prints on stderr for good."""
    with _BUILDING:
        return _found()


@lru_cache(maxsize=1)
def _found() -> Registry:
    return Registry(sorted(entry_points(group=GROUP), key=lambda e: (e.name, e.value)))  # one walk of the metadata


def _contract_problem(cls: type[Stage]) -> str | None:
    """What in a stage class breaks the stage contract, said after its dotted name; found when
    the plug-in loads, so that ``validate`` names the plug-in rather than a run failing at its
    first frame, or the stage after it, with a message about something else."""
    if not (isinstance(cls.Params, type) and issubclass(cls.Params, StageParams)):
        # a plain pydantic model accepts a misspelt param in silence; StageParams refuses it
        return ".Params is not a fer_pipe.stage.StageParams subclass"
    taken = sorted(SET_STAGE_KEYS & cls.Params.given_names().keys())  # an alias counts: it is what --set names
    if taken:  # --set STAGE.workers=3 set the stage's processes, not the param, and YAML's params set the param
        return (f".Params.{taken[0]}: {taken[0]} is a stage's own key in a config (--set STAGE.{taken[0]} sets "
                "it), so no param may be named so")
    if not isinstance(cls.writes, (str, type(None))):
        return f".writes is {cls.writes!r}: a kind's name (a str) or None"
    reads = cls.reads
    if not (isinstance(reads, (str, type(None))) or isinstance(reads, tuple) and reads
            and all(isinstance(kind, str) for kind in reads)):
        return f".reads is {reads!r}: a kind's name (a str), a tuple of them (its inputs may write any), or None"
    wants = cls.wants_before
    if not (isinstance(wants, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in wants.items())):
        return f".wants_before is {wants!r}: a dict of stage type to what goes wrong without it"
    if not (isinstance(cls.provides, tuple) and all(isinstance(kind, str) for kind in cls.provides)):
        return f".provides is {cls.provides!r}: a tuple of the stage types it stands in for"
    for attr in ("preflight", "read_path", "closing_s", "graph_warnings", "open", "process", "idle", "outage", "ended",
                 "finish", "close"):
        if not callable(getattr(cls, attr)):  # closing_s = 5.0, written as idle_s is
            return f".{attr} is {getattr(cls, attr)!r}, not a method: define it with def, as Stage does"
    for attr in ("input_paths", "output_paths", "bind_params", "thread_params"):
        names = getattr(cls, attr)
        if isinstance(names, str):  # ("path") is a str, read as 'p', 'a', 't', 'h'
            return f".{attr} is {names!r}, a str, not a tuple of param names: write ({names!r},)"
        if not (isinstance(names, (tuple, list)) and all(isinstance(name, str) for name in names)):
            return f".{attr} is {names!r}, not a tuple of param names"
        unknown = [name for name in getattr(cls, attr) if name not in cls.Params.model_fields]
        if unknown:
            return f".{attr} names {', '.join(map(repr, unknown))}, not a field of its Params"
    for name in cls.thread_params:  # batch sets each to 1 per task: refused there, blamed on a line setting none
        if _refuses(cls.Params.model_fields[name], 1):
            return (f".Params.{name} refuses 1, which fer-pipe batch sets each of thread_params to (one CPU a "
                    "task): let it take 1")
    if _found_by_name(cls) is not cls:  # a class a function made: each stage's process imports its class
        return (f" is {cls.__module__}.{cls.__qualname__}, which its module does not hold by that name, so a "
                "stage's own process cannot import it: define the class with a class statement at module level")
    if issubclass(cls, Source) and cls.frames is Source.frames:
        return " is a Source but does not implement frames()"
    if issubclass(cls, Source) and cls.reads is not None:  # `fer-pipe stages` listed what no source can read
        return f" is a Source, which has no inputs, but says it reads {cls.reads!r}: leave reads None"
    if issubclass(cls, Sink) and cls.consume is Sink.consume and cls.process is Sink.process:
        return " is a Sink but implements neither consume() nor process()"
    for name, info in cls.Params.model_fields.items():
        default = plain_default(info)
        if default is NO_PLAIN_DEFAULT:
            continue
        refused = _refuses(info, default)
        if refused:
            return f".Params.{name}: its default {default!r} breaks its own type or bounds: {refused}"
    return None


def _found_by_name(cls: type) -> object:
    found: object = sys.modules.get(cls.__module__)
    for part in cls.__qualname__.split("."):
        found = getattr(found, part, None)
    return found


NO_PLAIN_DEFAULT = object()
"""What ``plain_default`` gives for a field with no default it can tell."""


def plain_default(info: FieldInfo) -> object:
    """A field's default, or ``NO_PLAIN_DEFAULT`` for a required field and one whose default
    factory takes the other fields' values (pydantic 2.10) or fails outside the stage's build
    (one that reads an environment variable): asked for alone, such a factory raised, and
    every command that listed the stage types gave a traceback."""
    if info.is_required() or getattr(info, "default_factory_takes_data", False):
        return NO_PLAIN_DEFAULT
    try:
        return info.get_default(call_default_factory=True)
    except PLUGIN_BUGS:  # a plug-in's factory; its stage's build says what is wrong
        return NO_PLAIN_DEFAULT


def as_json(info: FieldInfo, value: object) -> object:
    """A param's value as JSON, and so a config, writes it: an enum as its value, a path as its
    text, a tuple as a list, a duration in ISO 8601, a set sorted. ``NO_PLAIN_DEFAULT`` for
    itself and for a value of a type pydantic dumps only inside its model."""
    if value is NO_PLAIN_DEFAULT:
        return value
    try:
        # without its warnings: a default of [64, 64] for a tuple, valid, printed three lines of them (s68f 1)
        return sets_sorted(value, TypeAdapter(info.annotation).dump_python(value, mode="json", warnings=False))
    except PLUGIN_BUGS:
        return NO_PLAIN_DEFAULT


def sets_sorted(value: object, dumped: object) -> object:
    """``dumped``, the JSON of ``value``, with the items of every set in it sorted, nested ones too
    (s68h 4): JSON has no sets, and a set of text dumps in an order that changes with each
    process's hash seed, so the same command's rerun was refused as made with other settings,
    and a set param added since a batch folder was made never matched its default (s68g 2)."""
    if isinstance(value, dict) and isinstance(dumped, dict) and len(value) == len(dumped):  # dumped in its order
        return {key: sets_sorted(item, got) for item, (key, got) in zip(value.values(), dumped.items())}
    if not isinstance(value, (set, frozenset, list, tuple)) or not isinstance(dumped, list) or len(value) != len(dumped):
        return dumped
    items = [sets_sorted(item, got) for item, got in zip(value, dumped)]  # a set dumps in its own iteration order
    return sorted(items, key=json.dumps) if isinstance(value, (set, frozenset)) else items


def _refuses(info: FieldInfo, value: object) -> str:
    """Why a field's type and bounds refuse ``value``, or nothing; its validators are not run
    (they may need the other fields), nor is a type pydantic checks only inside its model.
    StageParams' own rules are applied too (finite numbers, no boolean for a number): a NaN, inf
    or ``True`` default passed without them, was listed by ``fer-pipe stages`` and used, where
    the same value from a config was refused (s68a 2)."""
    refused = boolean_for_number(info.annotation, value)
    if refused:
        return refused
    field = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    try:
        try:
            adapter = TypeAdapter(field, config=ConfigDict(allow_inf_nan=StageParams.model_config["allow_inf_nan"]))
        except PydanticUserError:  # a model's own type, whose config is its own
            adapter = TypeAdapter(field)
        adapter.validate_python(value)
    except ValidationError as exc:
        return exc.errors()[0]["msg"]
    except PLUGIN_BUGS:  # a validator that needs what only the model has; its sys.exit ended `stages` (s68d 2)
        return ""
    return ""
