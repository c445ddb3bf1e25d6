"""Stages and graphs run in the current process: for unit tests, and for tasks of an engine
(Ray) that owns the parallelism itself.

``run_stage`` runs one stage on a list of packets and returns what it emitted, with no
runner, queues or processes. ``run_graph`` pushes every packet of every source through the
graph depth-first, in the same stage order and with the same stage code as the
multi-process runner, so the outputs are the same.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .graph import Graph
from .messages import Packet
from .stage import Source, Stage


def make_stage(stage: type[Stage] | str, params: Mapping[str, Any] | None = None,
               name: str | None = None) -> Stage:
    """A stage instance with validated params; ``stage`` is a class or a registered type name."""
    from .registry import registry

    cls = registry().types[stage] if isinstance(stage, str) else stage
    return cls(name or (stage if isinstance(stage, str) else cls.__name__.lower()),
               cls.Params.model_validate(dict(params or {})))


def run_stage(stage: Stage | type[Stage] | str, packets: Iterable[Packet] = (),
              params: Mapping[str, Any] | None = None) -> list[Packet]:
    """Open the stage, feed it ``packets`` (or drain it, for a source), finish and close it."""
    if not isinstance(stage, Stage):
        stage = make_stage(stage, params)
    out: list[Packet] = []
    stage.open()
    try:
        if isinstance(stage, Source):
            out.extend(stage.frames())
        else:
            for packet in packets:
                out.extend(stage.process(packet))
        out.extend(stage.finish())
    finally:
        stage.close()
    return out


def run_graph(graph: Graph) -> None:
    """Run a whole graph in this process, sources one after another."""
    stages = {name: graph.stages[name].build() for name in graph.order()}
    consumers = {name: graph.consumers(name) for name in stages}
    opened: list[Stage] = []

    def push(name: str, packets: Iterable[Packet]) -> None:
        for packet in packets:
            for consumer in consumers[name]:
                push(consumer, stages[consumer].process(packet))

    try:
        for stage in stages.values():
            stage.open()
            opened.append(stage)
        for name, stage in stages.items():
            if isinstance(stage, Source):
                push(name, stage.frames())
        for name, stage in stages.items():
            push(name, stage.finish())
    finally:
        for stage in reversed(opened):
            stage.close()
