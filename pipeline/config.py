"""A config's data (read by ``config_file``) with its ``--set`` overrides applied, validated
into a ``Graph``.

Every problem becomes one ``ConfigError`` line of the form
``FILE:LINE: stage 'NAME' (TYPE): FIELD: reason`` (the parts that apply), so a user can go
straight to the spot. YAML is only ever read with the safe loader.
"""
from __future__ import annotations

import copy
import datetime
import importlib
import math
import os
import pkgutil
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .config_file import NUMBER_1_2, Lines, Loader, config_path, read_config, shipped_configs, show
from .env_values import refuse_unset
from .errors import PLUGIN_BUGS, ConfigError, said, unmakeable_name
from .graph import (QUEUE_SIZE, Graph, StageSpec, check_edges, check_paths, check_source_ids, did_you_mean,
                    spelled_otherwise)
from .registry import Registry, registry
from .stage import SET_STAGE_KEYS, Sink, Source, Stage, StageParams, named_files

STAGE_KEYS = {"type", "params", "inputs", "on_error", "workers"}
MAX_WORKERS = 64
TOP_KEYS = {"stages", "queue_size", "description"}
MAX_QUEUE = 1024
NAME_MAX, PATH_MAX = 255, 4096
"""Linux's NAME_MAX and PATH_MAX (limits.h): the longest file name and whole path, in bytes."""


def placeholder_hint(graph: Graph, spec: StageSpec) -> str:
    """Where a shipped config's stage names a file that is not there with the config's own value
    (``input.mp4``, a placeholder), how to give one: a first run without ``--set source.path``
    said "video input.mp4: no such file", a name the user had never written."""
    origin = Path(graph.origin)
    if origin.parent.resolve() != shipped_configs().resolve():  # configs/x.yaml from the repository too
        return ""
    data, _ = read_config(origin)
    given = data["stages"][spec.name].get("params") or {}
    for param, path in named_files(spec.cls, spec.params, spec.cls.input_paths):
        if given.get(param) == path and not os.path.exists(path):
            return f" (the shipped config's placeholder: give --set {spec.name}.{param}=YOUR_FILE)"
    return ""


def set_item(target: str, text: str) -> str:
    """A ``--set`` item that gives ``target`` the string ``text`` as it is: a double-quoted YAML
    scalar, so a path with `` #``, ``: ``, ``[``, a line break or any other character in it is not
    read as a comment, a structure or folded. YAML's own writer makes it: JSON's, used before,
    writes a character past U+FFFF as a surrogate pair, which YAML reads as two lone halves, so
    ``fer-pipe demo --out "démo 😀"`` was refused (s67b 1)."""
    quoted = yaml.safe_dump(text, default_style='"', width=math.inf).rstrip("\n")
    return f"{target}={quoted}"


def _comment_in(raw: str) -> str | None:
    """The comment YAML would drop from the end of ``raw`` (``run #2.csv`` reads as ``run``)."""
    try:
        tokens = [t for t in yaml.scan(raw, Loader=Loader)
                  if not isinstance(t, (yaml.StreamEndToken, yaml.BlockEndToken))]  # marked at the very end
    except yaml.YAMLError:
        return None
    tail = raw[tokens[-1].end_mark.index:].strip()
    return tail if tail.startswith("#") else None


def _anchor_or_local_tag(raw: str) -> str | None:
    """The anchor (``&run1``) or the tag of one's own (``!x``, ``!``) that YAML would read in a
    ``--set`` value and drop from it, as written; YAML's own tags (``!!int``) are meant."""
    try:
        tokens = list(yaml.scan(raw, Loader=yaml.SafeLoader))
    except yaml.YAMLError:
        return None  # not YAML: taken as the text typed
    for token in tokens:
        if isinstance(token, yaml.AnchorToken):
            return f"&{token.value}"
        if isinstance(token, yaml.TagToken) and token.value[0] != "!!":
            return "".join(part for part in token.value if part)
    return None


def _set_value(raw: str, target: str) -> Any:
    """A ``--set`` value read as YAML by the config's own loader (so its limits hold here too);
    text that is not YAML (``a: b: c``) is taken as the string typed, and so is one with a line
    break, which YAML folds into a space (a file name with one was "no such file", the name
    shown folded). A comment is refused: dropped without a word, it sent a run's rows to
    a file named after part of the path."""
    if "\n" in raw or "\r" in raw:
        return raw
    comment = _comment_in(raw)
    quoted = raw.replace("'", "''")
    example = "" if raw.lstrip()[:1] in ("'", '"', "[", "{", "-") else f": {target}='{quoted}'"
    if comment is not None:
        raise ConfigError(f"--set {target}={raw}: YAML reads {comment!r} as a comment and would drop it; "
                          f"quote the value to keep it{example}")
    dropped = _anchor_or_local_tag(raw)
    if dropped:  # dropped without a word as well: 'csv.path=&run1 out.csv' wrote out.csv, '! x.csv' x.csv
        raise ConfigError(f"--set {target}={raw}: YAML reads {dropped!r} as {'an anchor' if dropped[0] == '&' else 'a tag'} "
                          f"and would drop it; quote the value to keep it{example}")
    try:
        loader = Loader(raw)
    except yaml.YAMLError:
        return raw
    try:
        return loader.get_single_data()
    except yaml.constructor.ConstructorError as exc:  # a number too long, a duplicate key
        raise ConfigError(f"--set {target}: {exc.problem}") from None
    except yaml.YAMLError:
        return raw
    except RecursionError:  # as in a file, where it is one line too, not a traceback
        raise ConfigError(f"--set {target}: the value is nested too deeply") from None
    finally:
        loader.dispose()


def apply_overrides(data: Any, overrides: Iterable[str], origin: str, lines: Lines | None = None) -> Any:
    """Apply ``stage.param=value`` overrides; the value is read as a YAML scalar (``3``, ``true``).

    ``stage.workers=N`` and ``stage.on_error=skip`` set the stage's own keys, not a param.
    Each override is recorded in ``lines``, so an error in its value names the ``--set`` that
    gave it rather than the line of the file it replaced.
    """
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, dict):  # an empty file, a list: the graph's check says so, not "--set queue_size=4:
        return data                   # expected ... (or queue_size=N)" of what the user wrote
    for item in overrides:
        target, sep, raw = item.partition("=")
        stage, dot, param = target.partition(".")
        if sep and target == "queue_size":  # the one top-level setting
            data["queue_size"] = _set_value(raw, target) if raw.strip() else ""
            where: tuple[str, ...] = ("queue_size",)
        else:
            if not sep or not dot or not stage or not param:
                raise ConfigError(f"--set {item}: expected STAGE.PARAM=VALUE (or queue_size=N)")
            if stage not in stages:
                raise ConfigError(f"--set {item}: {origin} has no stage named {stage!r}"
                                  f"{spelled_otherwise(stage, stages)}")
            if not isinstance(stages[stage], dict):
                continue  # an empty stage: the graph's check says so at its line
            if param in STAGE_KEYS - SET_STAGE_KEYS and not _a_param_of(stages[stage], param):
                raise ConfigError(f"--set {item}: " + (  # was "params.inputs: unknown parameter"
                    "one param at a time: --set STAGE.PARAM=VALUE" if param == "params" else
                    f"a stage's {param} is the config file's to give; --set gives its params, "
                    f"{' and '.join(sorted(SET_STAGE_KEYS))}"))
            stages[stage] = dict(stages[stage])  # its own: a stage written as an alias (*det) shares its dict
            value = _set_value(raw, target) if raw.strip() else ""
            if param in SET_STAGE_KEYS:
                stages[stage][param] = value
                where = ("stages", stage, param)
            else:
                params = stages[stage].get("params")
                if params is None:  # absent, or "params:" with nothing after it
                    params = {}
                if not isinstance(params, dict):
                    raise ConfigError(f"--set {item}: stage {stage!r} has params that are not a mapping")
                stages[stage]["params"] = {**params, param: value}
                where = ("stages", stage, "params", param)
        if lines is not None:
            lines[where] = f"--set {item if len(item) <= 200 else item[:197] + '...'}"
    return data


def _a_param_of(stage: dict, name: str) -> bool:
    """Whether the stage's type has a param ``name`` (a plug-in's may be named ``type``)."""
    cls = registry().types.get(stage.get("type")) if isinstance(stage.get("type"), str) else None
    return cls is not None and name in cls.Params.given_names()


def _where(origin: str, lines: Lines, *path: str) -> str:
    for cut in range(len(path), 0, -1):
        line = lines.get(path[:cut])
        if isinstance(line, str):
            return line
        if line is not None:
            return f"{origin}:{line}"
    return origin


def pydantic_reason(exc: ValidationError, fields: Iterable[str], yaml: bool = True) -> tuple[tuple[str, ...], str]:
    """The first problem's place and reason, an unknown parameter first: a misspelt required
    one (``pth`` for ``path``) was said to be missing, and the typo was not named. ``yaml``:
    the value came from YAML, whose reading of it is said (not from Python: ``make_stage``)."""
    errors = exc.errors()
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(str(p) for p in err["loc"])
    reason = err["msg"]
    if err["type"] == "extra_forbidden" and loc[-1] in STAGE_KEYS and len(loc) == 1 and yaml:
        # the README's --set detector.workers=2, moved into the file under params
        reason = f"unknown parameter ({loc[-1]} is a key of the stage, beside params, not one of its params)"
    elif err["type"] == "extra_forbidden":
        fields = list(fields)  # none close: the ones it takes, which `--set push.endpoint` had to look up
        takes = f"it takes {', '.join(fields)}" if fields else "the stage takes no params"
        reason = f"unknown parameter{did_you_mean(loc[-1], fields) or f' ({takes})'}"
    elif err["type"] == "missing":
        reason = "required parameter is missing"
    elif err["type"] == "int_parsing" and yaml and isinstance(err["input"], str) and NUMBER_1_2.fullmatch(err["input"]):
        reason += f" (YAML 1.1, which fer-pipe reads, takes {err['input']} as text: write the number out)"
    elif err["type"] == "value_error":
        reason = str(err["ctx"]["error"])  # a validator's own words, without pydantic's "Value error, "
    elif err["type"] == "string_type" and yaml:
        # YAML reads 101, no, on and 2024-01-01 as a number, a boolean, a date, and "- a.mp4",
        # "a: b.mp4" and "null" (a file's name in a shell loop) as a list, a mapping, nothing: a
        # camera id of 101 was refused with no hint of why
        value = err["input"]
        kinds = ((bool, "true/false"), (datetime.date, "a date"), ((int, float), "a number"), (list, "a list"),
                 (dict, "a mapping"), (type(None), "null (nothing)"))
        kind = next((word for types, word in kinds if isinstance(value, types)), None)
        if kind:
            reason += f" (YAML read the value as {kind}; put it in quotes to mean text)"
    return loc, reason


def unknown_type(name: str, types: Mapping[str, type[Stage]]) -> str:
    """The words for a stage type ``name`` that is not one of ``types``: the known type it is like,
    and any stage module not declared, both (``track2`` of a new tracker2.py was "did you mean
    'track'?" alone, a typo to look for)."""
    hint = _type_hint(name, types) + _undeclared(types) or PLUGIN_HINT
    return f"unknown stage type {show(name)}{hint} (known: {', '.join(sorted(types))})"


PLUGIN_HINT = (" (a plug-in's type is known once its distribution is installed with the entry point declaring it: "
               "after adding one to its setup.cfg, install it again)")
"""For a type like none known: a plug-in author who added an entry point to setup.cfg and ran
the config got the bare "unknown stage type", as a maintainer did before ``_undeclared``."""


def _undeclared(types: Mapping[str, type[Stage]]) -> str:
    """The modules of fer-pipe's own stages holding a stage the install does not declare: a
    maintainer's new built-in, which the installed entry points lack until setup.cfg declares it
    and ``pip install -e .`` runs again; "unknown stage type" alone sent them looking for a
    typo, whatever the type is named (``track`` is in tracker.py)."""
    import fer_pipe.stages

    declared = set(types.values())
    modules = []
    for info in pkgutil.iter_modules(fer_pipe.stages.__path__):
        module = f"fer_pipe.stages.{info.name}"
        try:
            held = vars(importlib.import_module(module)).values()
        except Exception:  # a stage being written: its own errors come once it is declared
            continue
        if any(isinstance(v, type) and issubclass(v, Stage) and v.__module__ == module and v not in declared
               for v in held):
            modules.append(f"fer_pipe/stages/{info.name}.py")
    if not modules:
        return ""
    return (f" ({', '.join(modules)} holds a stage this install does not declare: add it to setup.cfg's "
            "fer_pipe.stages entry points and run pip install -e . again)")


def _type_hint(name: str, types: Mapping[str, type[Stage]]) -> str:
    """The known type a user most likely meant by ``name``: types are lower case, and a sink's
    name is not its module's (``csv``, in stages/csv_sink.py); ``video_sink`` was "did you
    mean 'video'", a source."""
    word = name.lower()
    if word.endswith("_sink"):
        word = word.removesuffix("_sink")
        types = {t: c for t, c in types.items() if issubclass(c, Sink)}
        starting = sorted(t for t in types if t.startswith(word))
        if starting:
            return f" (did you mean {starting[0]!r}?)"
    return did_you_mean(word, types)


def _path_problem(path: str) -> str | None:
    """What makes ``path`` unusable as a file name on Linux, or None. Caught here, a NUL byte or
    an over-long name would otherwise surface from the first ``os`` call on it as a traceback
    (ValueError) or an exit 1 (ENAMETOOLONG) in whichever stage or check met it first. An empty
    path means the working folder, which the file checks would call a folder."""
    if not path.strip():
        return "the path is empty"
    if "\0" in path:
        return "the path contains a NUL byte"
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:  # 東口.csv under a Latin-1 locale: the encoding's name came out as the field's
        return f"the name cannot be written in this system's encoding ({sys.getfilesystemencoding()}; see LANG)"
    if len(raw) >= PATH_MAX:
        return f"the path is longer than the {PATH_MAX - 1} bytes Linux allows"
    if any(len(name) > NAME_MAX for name in raw.split(b"/")):
        return f"a name in the path is longer than the {NAME_MAX} bytes Linux allows"
    return None


def expand_home(cls: type[Stage], params: StageParams) -> StageParams:
    """``~/`` at the start of a file param is the home folder, as in a shell. The shell expands
    only a word's leading ``~``, so ``--set csv.path=~/out.csv`` arrives as typed, and YAML
    never expands it; the file checks and the stages then see the real path. A path no file
    can have is refused (ValueError of the param and the reason)."""
    named = named_files(cls, params, (*cls.input_paths, *cls.output_paths))
    for name, path in named:
        problem = _path_problem(path)
        if problem:
            raise ValueError(name, problem)
    update = {}
    for name in {name for name, path in named if path.startswith("~")}:
        value = getattr(params, name)
        update[name] = (type(value)(_home_expanded(path) for path in value)
                        if isinstance(value, (list, tuple)) else _home_expanded(value))
    return params.model_copy(update=update) if update else params


def _home_expanded(path: Any) -> Any:
    """``path`` with ``~`` expanded, of its own type: a plug-in's ``Path`` param came back a
    ``str`` only where the user wrote ``~/``, and its ``.with_suffix`` failed then."""
    return type(path)(os.path.expanduser(str(path)))


def build_graph(data: Any, lines: Lines, origin: str) -> Graph:
    """Validate a parsed config into a Graph, or raise the first problem as a ConfigError.

    Top-level keys beginning ``x-`` are left alone, as Docker Compose's extension fields are: the
    place for anchors that stages then take (``x-detector: &det {...}``), where an anchor had to be
    written on the first stage using it (s65a 6)."""
    if isinstance(data, Mapping):
        data = {key: value for key, value in data.items() if not (isinstance(key, str) and key.startswith("x-"))}
    refuse_unset(data, origin)
    if not isinstance(data, Mapping):
        got = "an empty file (or only comments)" if data is None else type(data).__name__
        raise ConfigError(f"{origin}: expected a mapping with a 'stages' key at the top, got {got}")
    for key in data:
        if key not in TOP_KEYS:
            raise ConfigError(f"{_where(origin, lines, str(key))}: unknown top-level key {show(key)}{did_you_mean(str(key), TOP_KEYS)} "
                              f"(expected {', '.join(sorted(TOP_KEYS))}, or x-NAME for anchors)")
    queue_size = data.get("queue_size", QUEUE_SIZE)
    if isinstance(queue_size, bool) or not isinstance(queue_size, int) or not 1 <= queue_size <= MAX_QUEUE:
        raise ConfigError(f"{_where(origin, lines, 'queue_size')}: queue_size: expected an integer "
                          f"from 1 to {MAX_QUEUE}, got {show(queue_size)}")
    stages_data = data.get("stages")
    if not isinstance(stages_data, Mapping) or not stages_data:
        raise ConfigError(f"{_where(origin, lines, 'stages')}: 'stages' must be a non-empty mapping "
                          "of stage name to stage")
    reg = registry()
    stages = {name: _stage_spec(name, body, reg, origin, lines) for name, body in stages_data.items()}
    graph = Graph(stages, queue_size, origin)
    for spec, message in check_edges(graph):
        raise ConfigError(f"{_where(origin, lines, 'stages', spec.name, 'inputs')}: stage "
                          f"{spec.name!r} ({spec.type_name}): {message}")
    for spec, message in check_source_ids(graph):
        raise ConfigError(f"{_where(origin, lines, 'stages', spec.name, 'params', 'source_id')}: stage "
                          f"{spec.name!r} ({spec.type_name}): params.source_id: {message}")
    for spec, param, message in check_paths(graph, origin if os.path.isfile(origin) else None):
        given = spec.cls.Params.given_name(param)
        raise ConfigError(f"{_where(origin, lines, 'stages', spec.name, 'params', given)}: stage "
                          f"{spec.name!r} ({spec.type_name}): params.{given}: {message}")
    return graph


_READ_AS_YAML = (" (YAML reads on, off, yes, no, true, false and null as true/false or none, and a bare number as "
                 "a number: put a stage name that is one in quotes)")


def _stage_spec(name: Any, body: Any, reg: Registry, origin: str, lines: Lines) -> StageSpec:
    """One stage of the config checked into its spec, or its first problem as a ConfigError that
    names the stage and the line."""
    where = _where(origin, lines, "stages", str(name))
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"{where}: stage name {show(name)} must be a word of letters, digits, '_'"
                          f"{_READ_AS_YAML if not isinstance(name, str) else ''}")
    prefix = f"stage {name!r}"
    if not isinstance(body, Mapping):
        raise ConfigError(f"{where}: {prefix}: expected a mapping with 'type', got "
                          f"{type(body).__name__}")
    type_name = body.get("type")
    for key in body:
        if key not in STAGE_KEYS:
            cls = reg.types.get(type_name) if isinstance(type_name, str) else None
            hint = (f"a parameter of {type_name}: put it under params" if cls and key in cls.Params.given_names()
                    else f"expected {', '.join(sorted(STAGE_KEYS))}")
            raise ConfigError(f"{_where(origin, lines, 'stages', name, str(key))}: {prefix}: "
                              f"unknown key {show(key)}{did_you_mean(str(key), STAGE_KEYS)} ({hint})")
    if not isinstance(type_name, str):
        raise ConfigError(f"{where}: {prefix}: 'type' is missing or not a string")
    type_where = _where(origin, lines, "stages", name, "type")
    if type_name in reg.problems:  # caused by its import's error, whose traceback --debug shows first
        raise ConfigError(f"{type_where}: {prefix}: {reg.problems[type_name]}") from reg.import_errors.get(type_name)
    cls = reg.types.get(type_name)
    if cls is None:
        raise ConfigError(f"{type_where}: {prefix}: {unknown_type(type_name, reg.types)}")
    prefix = f"stage {name!r} ({type_name})"
    raw_params = body.get("params") or {}
    if not isinstance(raw_params, Mapping):
        raise ConfigError(f"{_where(origin, lines, 'stages', name, 'params')}: {prefix}: "
                          f"params must be a mapping")
    params = _stage_params(cls, raw_params, name, prefix, origin, lines)
    inputs = body.get("inputs", [])
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        odd = [i for i in (inputs if isinstance(inputs, list) else [inputs]) if not isinstance(i, (str, list, dict))]
        raise ConfigError(f"{_where(origin, lines, 'stages', name, 'inputs')}: {prefix}: "
                          f"inputs: expected a list of stage names{_READ_AS_YAML if odd else ''}")
    on_error = body.get("on_error", "stop")
    if on_error not in ("stop", "skip"):
        raise ConfigError(f"{_where(origin, lines, 'stages', name, 'on_error')}: {prefix}: "
                          f"on_error: expected 'stop' or 'skip', got {show(on_error)}")
    if on_error == "skip" and issubclass(cls, Sink):
        raise ConfigError(f"{_where(origin, lines, 'stages', name, 'on_error')}: {prefix}: "
                          "on_error: skip is not for a sink: one that cannot write a row (a full disk, a closed "
                          "socket) stops the run rather than lose rows and end with exit 0")
    if on_error == "skip" and issubclass(cls, Source):
        raise ConfigError(f"{_where(origin, lines, 'stages', name, 'on_error')}: {prefix}: "
                          "on_error: skip is not for a source: its frames come from one generator, which cannot "
                          "go on after it raised")
    workers = body.get("workers", 1)
    workers_where = _where(origin, lines, "stages", name, "workers")
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"{workers_where}: {prefix}: workers: expected an integer from 1 to "
                          f"{MAX_WORKERS}, got {show(workers)}")
    if workers > 1 and not cls.parallel:
        if issubclass(cls, (Source, Sink)):
            why = f"is a {'source' if issubclass(cls, Source) else 'sink'}"
        elif cls.__module__.startswith("fer_pipe."):
            why = "keeps state from one packet to the next"
        else:  # "keeps state" misled the author of a plug-in that keeps none
            why = "does not declare parallel = True (as a stage whose process keeps nothing from one packet to the next does)"
        raise ConfigError(f"{workers_where}: {prefix}: workers: {type_name} {why}, so it runs in one process only")
    if workers > 1:  # each worker would open what it writes or binds: they locked each other out, naming a "second run"
        owned = ([name for name, _ in named_files(cls, params, cls.output_paths)]
                 + [name for name in cls.bind_params if getattr(params, name)])
        if owned:
            raise ConfigError(f"{workers_where}: {prefix}: workers: each of its {workers} processes would open "
                              f"what its {cls.Params.given_name(owned[0])} names, which one process holds; run it in one")
    return StageSpec(name, type_name, cls, params, list(dict.fromkeys(inputs)), on_error, workers,
                     _closing_s(cls, params, where, prefix))


def _closing_s(cls: type[Stage], params: StageParams, where: str, prefix: str) -> float:
    """The stage's ``closing_s`` for these params, asked here, once: a plug-in's bug in it crashed
    the runner with its traceback, or skipped the stage's close in a run that exited 0."""
    try:
        seconds = cls.closing_s(params)
    except PLUGIN_BUGS as exc:
        raise ConfigError(f"{where}: {prefix}: closing_s failed: {said(exc)}") from None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < float("inf"):
        raise ConfigError(f"{where}: {prefix}: closing_s gave {seconds!r}; it must give seconds, 0 or more")
    return float(seconds)


class ParamsProblem(Exception):
    """The first problem of a stage's params: where under ``params`` (no place: a check across
    several of them) and why."""

    def __init__(self, loc: tuple[str, ...], reason: str) -> None:
        super().__init__(loc, reason)
        self.loc, self.reason = loc, reason


def checked_params(cls: type[Stage], raw_params: Mapping[str, Any], yaml: bool = True) -> StageParams:
    """``cls.Params`` of ``raw_params``, its file params' ``~`` expanded, as a config's and
    ``make_stage``'s alike; ParamsProblem for the first problem (pydantic's own report is a page
    per error). ``yaml``: the reason in YAML's words."""
    try:
        params = cls.Params.model_validate(dict(raw_params))
    except PLUGIN_BUGS as exc:  # a plug-in's validator may raise other than ValueError
        raise ParamsProblem(*(pydantic_reason(exc, cls.Params.given_names(), yaml) if isinstance(exc, ValidationError)
                              else ((), f"the stage's own check failed: {said(exc)}"))) from None
    try:
        return expand_home(cls, params)
    except ValueError as exc:  # a path no file can have: the param and why
        raise ParamsProblem((cls.Params.given_name(exc.args[0]),), exc.args[1]) from None


def _stage_params(cls: type[Stage], raw_params: Mapping[str, Any], name: str, prefix: str, origin: str,
                  lines: Lines) -> StageParams:
    """The stage's params validated, with the field and the reason of the first problem (the
    ``--set`` that gave the value, where one did)."""
    try:
        return checked_params(cls, raw_params)
    except ParamsProblem as problem:
        loc = problem.loc
        where = _where(origin, lines, 'stages', name, 'params', *loc[:1])
        sets = [v for k, v in lines.items() if not loc and len(k) == 4 and k[:3] == ("stages", name, "params")
                and isinstance(v, str)]
        if sets and where not in sets:  # the file's values and the --set ones were checked together
            where = f"{where} with {', '.join(sets)}"
        raise ConfigError(f"{where}: {prefix}: {'.'.join(('params', *loc))}: {problem.reason}") from None


def load_graph(config: str | Path | Mapping[str, Any], overrides: Iterable[str] = (),
               select: Callable[[Any, str], Any] | None = None) -> Graph:
    """A checked graph from a YAML file, or from a plain dict (the Python API, tests) with the
    same checks. ``--set`` overrides apply first, then ``select`` (the shard filter), so both
    see the whole config and validation sees what will run. One override may be given as a
    plain string (iterated, it would be read character by character); a dict is refused naming
    the form (iterated, its keys alone were read, said in --set's words; s64f 7)."""
    if isinstance(overrides, str):
        overrides = [overrides]
    if isinstance(overrides, Mapping):
        raise TypeError("overrides are 'stage.param=value' strings, as --set takes them, not a dict: "
                        "[f'{key}={value}' for key, value in overrides.items()] makes them")
    if isinstance(config, Mapping):
        origin, data, lines = "<dict>", copy.deepcopy(dict(config)), {}
    else:
        path = config_path(config)
        origin = str(path)
        data, lines = read_config(path)
    data = apply_overrides(data, overrides, origin, lines)
    if select is not None:
        data = select(data, origin)
    graph = build_graph(data, lines, origin)
    _refuse_control_characters(graph, lines)
    return graph


def _refuse_control_characters(graph: Graph, lines: Lines) -> None:
    """Refuse a file the config names for a stage to write whose name holds a control character
    (``odd_output``). A name fer-pipe makes from a video's (a batch task's CSV) is as the
    video's, and an input is named escaped where it is missing, so only what a config writes is
    checked."""
    for spec in graph.stages.values():
        odd = odd_output(spec.cls, spec.params)
        if odd:
            raise ConfigError(f"{_where(graph.origin, lines, 'stages', spec.name, 'params', odd[0])}: stage "
                              f"{spec.name!r} ({spec.type_name}): params.{odd[0]}: {odd[1]}")


def odd_output(cls: type[Stage], params: StageParams) -> tuple[str, str] | None:
    """The first file the stage's ``output_paths`` name whose name holds a control character or
    line separator, as (its param as a config names it, why), or None: a Windows path in
    double-quoted YAML or a Python string (``"res\\new.csv"``: a line feed there), or the ``\\r``
    a script saved on Windows leaves, and the run wrote its results under a name nobody typed
    or finds, exit 0."""
    for param, path in named_files(cls, params, cls.output_paths):
        problem = unmakeable_name(path)
        if problem:
            return cls.Params.given_name(param), (
                f"{problem}: a backslash in a double-quoted YAML string, or a Python one, starts an escape, so write "
                "C:/..., single quotes or r'...'; a script or .env file saved on Windows ends each line with \\r")
    return None
