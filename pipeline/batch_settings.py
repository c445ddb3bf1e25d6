"""The settings a batch folder's CSVs were made with, so that a rerun does not mix two kinds.

A rerun into the same ``--out`` resumes: it takes the CSVs and finished chunks there as its
own. Run with an edited config or other ``--set`` values, it used to make the rest with the new
settings, and leave a folder of CSVs made two ways under a manifest that named only the last.
``_settings.json`` records what decides a CSV's rows, and a rerun whose settings differ from it
while the folder still holds outputs is refused, with the first difference named.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .graph import Graph, StageSpec
from .output_files import write_whole
from .registry import as_json, plain_default, registry, sets_sorted
from .stage import StageParams, named_files

SETTINGS = "_settings.json"
DIGEST = "sha256:"


def settings_of(graph: Graph, sink: str) -> dict[str, dict[str, Any]]:
    """What decides the rows of the CSV that stage ``sink`` writes: it and each stage that feeds
    it, with its type, version, params (defaults filled in, so a value given at its default changes
    nothing), inputs and ``on_error``. How many workers or threads run it does not count, nor
    does a stage off the CSV's path (a ZeroMQ sink beside it), nor the sink's ``path``, which the
    batch sets to each video's CSV in ``--out`` however that folder is spelt. A file a stage
    reads (the classifier's model, a cascade given as a path) counts by its content."""
    return {name: {"type": spec.type_name, "version": spec.cls.version, "inputs": spec.inputs,
                   "on_error": spec.on_error,
                   "params": {**_params(spec.params, exclude={"path"} if name == sink else set()),
                              **({} if spec.is_source else _contents(spec))}}
            for name in sorted(graph.upstream(sink)) for spec in (graph.stages[name],)}


def _params(params: StageParams, exclude: set[str]) -> dict[str, Any]:
    """The params as JSON, a set's items sorted (``registry.sets_sorted``)."""
    return {name: sets_sorted(getattr(params, name), value)
            for name, value in params.model_dump(mode="json", exclude=exclude).items()}


def _contents(spec: StageSpec) -> dict[str, Any]:
    """The digest of each file a stage reads, in place of its path: a model retrained in place
    made other rows under the same path, and the same model moved, or named from another
    checkout, makes the same rows. A cascade OpenCV ships counts by its file too: another OpenCV's
    may find other faces."""
    read: dict[str, list[str]] = {}
    for param, path in named_files(spec.cls, spec.params, spec.cls.input_paths):
        read.setdefault(param, []).append(_digest(spec.cls.read_path(param, path)))
    return {param: digests if isinstance(getattr(spec.params, param), (list, tuple)) else digests[0]
            for param, digests in read.items()}


def _digest(path: str) -> str:
    if not os.path.isfile(path):
        return path
    try:
        with open(path, "rb") as file:
            return DIGEST + hashlib.file_digest(file, "sha256").hexdigest()
    except OSError:  # the stage's own check names what is wrong with it
        return path


def recorded_settings(out_dir: Path) -> dict[str, Any] | None:
    """The settings the folder's outputs were made with, or None where none are recorded (a
    folder of an older fer-pipe, or one that is not ours)."""
    try:
        data = json.loads((out_dir / SETTINGS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not data or not isinstance(data, dict) or not all(isinstance(stage, dict) and isinstance(stage.get("params"), dict)
                                                         for stage in data.values()):
        return None  # edited by hand (emptied too), or not ours: compared, it was a traceback
    return data


def record_settings(out_dir: Path, settings: dict[str, Any]) -> None:
    """Written before any task runs, so an interrupted run's chunks are claimed too."""
    write_whole(out_dir / SETTINGS, json.dumps(settings, indent=2, sort_keys=True) + "\n", "batch")


def version_change(then: dict[str, Any], now: dict[str, Any]) -> str | None:
    """The first stage whose version differs between ``then`` and ``now``, said for people, or
    None. Apart from the settings: no config or ``--set`` brings back an older version.
    A record made before versions were (fer-pipe 0.2.0) counts as version 1, as every stage was."""
    for name in sorted(then.keys() & now.keys()):
        before, after = then[name].get("version", 1), now[name].get("version")
        if before != after and then[name].get("type") == now[name].get("type"):
            return f"stage {name!r} ({now[name]['type']}) was at version {before}, is now at {after}"
    return None


def first_difference(then: dict[str, Any], now: dict[str, Any]) -> str | None:
    """The first way in which ``now`` differs from ``then``, said for people, or None."""
    for name in sorted(then.keys() | now.keys()):
        before, after = then.get(name), now.get(name)
        if before is not None and after is not None:
            before = {**before, "params": {**_added_since(after["type"], before["params"], after["params"]),
                                           **{k: _as_recorded_now(after["type"], k, v, after["params"].get(k))
                                              for k, v in before["params"].items()}}}
            before["version"] = after.get("version")  # version_change's to say
        if before == after:
            continue
        if name not in then:
            return f"stage {name!r} is new"
        if name not in now:
            return f"stage {name!r} ({before.get('type')}) is gone"
        if before.get("type") != after.get("type"):
            return f"stage {name!r} was {before.get('type')}, is now {after['type']}"
        for key in ("inputs", "on_error"):
            if before.get(key) != after.get(key):
                return f"stage {name!r} ({after['type']}) {key} was {before.get(key)!r}, is now {after[key]!r}"
        old, new = before["params"], after["params"]
        for param in sorted(old.keys() | new.keys()):
            if old.get(param) != new.get(param):
                return (f"stage {name!r} ({after['type']}) {param} was {_shown(old, param)}, "
                        f"is now {_shown(new, param)}")
        return f"stage {name!r} ({after['type']}) is set otherwise"
    return None


def _added_since(kind: str, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The params the stage has gained since ``old`` was recorded, where now at their defaults,
    which is how the stage ran without them: a folder recorded before the video source had
    ``fps`` was refused as "set otherwise", naming nothing."""
    cls = registry().types.get(kind)
    fields = cls.Params.model_fields if cls is not None else {}
    return {name: value for name, value in new.items()
            if name not in old and name in fields and as_json(fields[name], plain_default(fields[name])) == value}


def _as_recorded_now(kind: str, param: str, old: Any, new: Any) -> Any:
    """A file recorded by its path (a folder made before files counted by content) as it is
    recorded now, where it is still there: the same model was refused after an upgrade."""
    if isinstance(new, str) and new.startswith(DIGEST) and isinstance(old, str) and not old.startswith(DIGEST):
        cls = registry().types.get(kind)
        return _digest(cls.read_path(param, old) if cls else old)
    return old


def _shown(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if isinstance(value, str) and value.startswith(DIGEST):
        return f"a file of {value[:len(DIGEST) + 12]}…"
    return json.dumps(value) if name in params else "not a param"
