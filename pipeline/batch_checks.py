"""What ``fer-pipe batch`` refuses in a config before any task runs: what each task would do
alike (write one file, listen on one port, read another source, read a frame range of its own)
or could not do in chunks (carry state from frame to frame)."""
from __future__ import annotations

from typing import Any

from .errors import ConfigError
from .graph import Graph, StageSpec, file_key
from .stage import Sink, named_files


def refuse_frame_range(data: dict[str, Any], video: str, origin: str) -> None:
    """Refuse a frame range given to the video source: each task reads its own (the whole
    video, or its chunk), so a ``--set source.max_frames=100`` for a trial batch gave CSVs of
    every frame, and the manifest listed it among what made them."""
    params = data["stages"][video].get("params")
    for param in ("start", "max_frames"):
        if isinstance(params, dict) and params.get(param) not in (None, 0):
            raise ConfigError(f"{origin}: stage {video!r} (video): params.{param}: fer-pipe batch reads every frame "
                              "of each video, its chunks setting their own ranges; leave it out (cut the videos "
                              "first to batch a part of each)")


def refuse_shared_outputs(graph: Graph, sink: str, origin: str) -> None:
    """Refuse a file written by any stage but the csv sink the tasks re-aim: every task would
    write that one path at once (and over a file the user had there). Refuse a socket a stage
    listens on too: the tasks side by side on a machine would fail, as bad input, at random."""
    for spec in graph.stages.values():
        where = f"{origin}: stage {spec.name!r} ({spec.type_name})"
        for param, path in named_files(spec.cls, spec.params, spec.cls.output_paths) if spec.name != sink else ():
            if file_key(path) is not None:
                given = spec.cls.Params.given_name(param)  # an alias: the field's own name is refused
                fix = (f"remove the stage or --set {spec.name}.{given}=/dev/null" if _takes_dev_null(spec, given)
                       else "remove the stage")
                raise ConfigError(f"{where}: params.{given}: fer-pipe batch writes one CSV per video, but every "
                                  f"task would write {path}; {fix}")
        for param in spec.cls.bind_params:
            if getattr(spec.params, param):
                raise ConfigError(f"{where}: params.{spec.cls.Params.given_name(param)}: fer-pipe batch runs its "
                                  "tasks side by side, and every one would listen there, so all but one would find "
                                  "it taken; remove the stage (batch results are the CSVs)")


def _takes_dev_null(spec: StageSpec, given: str) -> bool:
    """Whether the stage's params hold ``/dev/null`` in param ``given`` (by its name in a config):
    the video writer's want a video's name, and the advice to give it one sent the user to a
    second refusal."""
    params = spec.cls.Params
    try:
        params.model_validate({**{params.given_name(f): v for f, v in spec.params.model_dump().items()},
                               given: "/dev/null"})
    except ValueError:
        return False
    return True


def refuse_other_sources(graph: Graph, video: str, origin: str) -> None:
    """Refuse any source but the video a task re-aims: its frames went into every video's CSV
    (and, in chunks, into every chunk's, which were then said not to line up)."""
    for spec in graph.sources():
        if spec.name != video:
            raise ConfigError(f"{origin}: stage {spec.name!r} ({spec.type_name}): fer-pipe batch reads each video "
                              f"through stage {video!r} alone, and this source's frames would go into every "
                              "video's CSV; remove the stage")


def refuse_stateful_chunks(graph: Graph, origin: str) -> None:
    """Refuse ``--chunk-frames`` where a stage between the source and the sinks is not declared
    ``parallel``, so may keep state from one frame to the next (a tracker's tracks, a smoother's
    averages): each chunk's task starts it afresh, so the joined CSV would not be the one
    ``fer-pipe run`` writes (faces the tracker carries went missing after each chunk's start,
    and their track ids with them)."""
    for spec in graph.stages.values():
        if not (spec.is_source or issubclass(spec.cls, Sink) or spec.cls.parallel):
            raise ConfigError(f"{origin}: stage {spec.name!r} ({spec.type_name}): --chunk-frames runs each "
                              "chunk of a video in a task of its own, but this stage is not declared parallel: "
                              "it may carry state from frame to frame, which would start afresh at every "
                              "chunk; leave out --chunk-frames")
