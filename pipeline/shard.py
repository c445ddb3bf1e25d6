"""``fer-pipe run CFG --shard I/N``: the same config on N hosts, each taking its share of cameras.

A config declares its camera list as its source stages, one camera per source (the ``video``,
``webcam`` and ``rtsp`` sources, or a plug-in's). A camera's id is what its results carry: the
source's ``source_id`` parameter, or else the stage name. Camera ``c`` belongs to shard
``crc32(c) % N``: a stable hash, the same on every host, Python version and run (Python's own
``hash`` of a string is salted per process, so it would split the cameras differently on each
host). Adding a camera moves no other camera; changing N reshuffles them.

The filter works on the parsed YAML, before validation: the sources of other shards are
removed, then, repeatedly, every stage left with none of its inputs, so a per-camera branch
goes with its camera while stages that several cameras feed stay and read only this shard's.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from .config import load_graph
from .env_values import Unset
from .errors import ConfigError
from .graph import Graph
from .registry import registry
from .stage import Source


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` as (I, N), with 0 <= I < N."""
    if not text.strip():  # --shard "$SHARD" with the variable unset: every host would run every camera
        raise ConfigError("--shard is empty: expected I/N, e.g. 0/4 (an unset variable?)")
    index, sep, count = text.partition("/")
    if not sep or not index.strip().isdecimal() or not count.strip().isdecimal():  # isdigit takes '²'; int not
        raise ConfigError(f"--shard {text}: expected I/N, e.g. 0/4")
    i, n = int(index), int(count)
    if n < 1:
        raise ConfigError(f"--shard {text}: N, the number of shards, must be 1 or more")
    if i >= n:
        raise ConfigError(f"--shard {text}: I must be from 0 to {n - 1} (shards are numbered from 0)")
    return i, n


def shard_of(camera: str, shards: int) -> int:
    """A lone surrogate in a name (a YAML escape) is hashed as it stands, where encoding it was
    a traceback; the config check says what becomes of such a name."""
    return zlib.crc32(camera.encode("utf-8", "surrogatepass")) % shards


def camera_id(name: str, body: Mapping[str, Any]) -> str:
    """``Source.source_id_of``'s rule on the raw YAML: the filter runs before params are validated."""
    params = body.get("params") if isinstance(body.get("params"), Mapping) else {}
    source_id = params.get("source_id")
    # another type is validation's to refuse, and is not turned into text: a YAML alias bomb took 5 GB
    return source_id if isinstance(source_id, str) and source_id else str(name)


def _is_source(body: Any) -> bool:
    kind = body.get("type") if isinstance(body, Mapping) else None
    cls = registry().types.get(kind) if isinstance(kind, str) else None
    return cls is not None and issubclass(cls, Source)


def select_shard(data: Any, index: int, shards: int, origin: str) -> dict[str, Any]:
    """The parsed config with only shard ``index``'s cameras and the stages they still feed."""
    stages = data.get("stages") if isinstance(data, Mapping) else None
    if not isinstance(stages, Mapping) or not any(_is_source(body) for body in stages.values()):
        return data  # build_graph reports what is wrong with it
    for name, body in stages.items():
        unset = camera_id(name, body) if _is_source(body) else None
        if isinstance(unset, Unset):  # its text was hashed: a shard was told it had none, or ran another's (s65c 6)
            raise ConfigError(f"{origin}:{unset.line}: stages.{name}.params.source_id: {unset.problem}; --shard "
                              "hashes a camera's id, so its variable is needed on every host")
    kept = {name: body for name, body in stages.items()
            if not _is_source(body) or shard_of(camera_id(name, body), shards) == index}
    if not any(_is_source(body) for body in kept.values()):
        cameras = [camera_id(n, b) for n, b in stages.items() if _is_source(b)]
        raise ConfigError(f"{origin}: --shard {index}/{shards}: none of its {len(cameras)} source(s) "
                          f"({', '.join(cameras)}) hashes to shard {index}; use fewer shards")
    while True:
        removed = set(stages) - set(kept)
        orphans = [name for name, body in kept.items() if isinstance(body, Mapping)
                   and _inputs(body) and all(isinstance(i, str) and i in removed for i in _inputs(body))]
        if not orphans:
            break
        for name in orphans:
            del kept[name]
    removed = set(stages) - set(kept)
    result = dict(data)
    result["stages"] = {name: _keep_inputs(body, removed) for name, body in kept.items()}
    return result


def _inputs(body: Mapping[str, Any]) -> list[str]:
    inputs = body.get("inputs", [])
    return [inputs] if isinstance(inputs, str) else list(inputs) if isinstance(inputs, list) else []


def _keep_inputs(body: Any, removed: set[str]) -> Any:
    """The stage with its edges from removed stages cut (a misspelt input stays, for validation)."""
    if not isinstance(body, Mapping) or not _inputs(body):
        return body
    return {**body, "inputs": [i for i in _inputs(body) if not (isinstance(i, str) and i in removed)]}


class Shard(NamedTuple):
    graph: Graph
    index: int
    shards: int
    others: int
    """The cameras the config gives the other shards, whose stages are not checked here."""

    def said(self) -> str:
        """Which shard this is and its cameras, for its log: its lines named cameras alone (s65c 4)."""
        cameras = [spec.cls.source_id_of(spec.name, spec.params) for spec in self.graph.sources()]
        return f"shard {self.index}/{self.shards}: cameras {', '.join(cameras)}"


def load_shard(path: str | Path, overrides: Iterable[str], shard: str) -> Shard:
    """``load_graph`` with the shard filter between the overrides and validation."""
    index, shards = parse_shard(shard)
    counted: list[int] = []

    def select(data: Any, origin: str) -> dict[str, Any]:
        kept = select_shard(data, index, shards, origin)
        every = data.get("stages") if isinstance(data, Mapping) else None
        if isinstance(every, Mapping) and kept is not data:
            counted.append(sum(map(_is_source, every.values())) - sum(map(_is_source, kept["stages"].values())))
        return kept

    graph = load_graph(path, overrides, select)
    return Shard(graph, index, shards, counted[0] if counted else 0)
