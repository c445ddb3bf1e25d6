"""Each stage's ``preflight`` in the parent, before any stage process or batch task starts.

A run and a batch check the outside world (a display, a device, a file) here alike: a batch
that skipped it started a task per video that each crashed on the missing display (Qt aborts
the process), four attempts each, where ``fer-pipe run`` said one line.
"""
from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

from .endpoints import one_binder_each
from .errors import PLUGIN_BUGS, InputError, UserError, said
from .graph import Graph, StageSpec
from .output_files import check_folder_of
from .stage import Stage, StageFailure, StageParams, named_files


def check_stages(graph: Graph, skip: Collection[str] = (), named: bool = True) -> None:
    """Run every stage's ``preflight`` but those in ``skip``. Bad input is raised as the same
    error, with the stage named unless not ``named`` (a batch task's line names its video, and
    its open's errors name no stage either), exit 2; a plug-in's bug as a ``StageFailure``
    from it, whose cause holds the plug-in's traceback."""
    with one_binder_each():  # two stages of this run on one port are refused here too
        for spec in graph.stages.values():
            if spec.name not in skip:
                with said_as_the_stages(graph, spec, named, "preflight"):
                    check_outputs(spec.cls, spec.params, spec.type_name)
                    spec.cls.preflight(spec.params)


def check_outputs(cls: type[Stage], params: StageParams, what: str) -> None:
    """The folder of each file the stage's ``output_paths`` name must be there, before the
    stage's own ``preflight``: a plug-in sink that checked nothing itself passed ``validate``
    with a missing folder and failed its run after every stage had started, exit 1. Only the
    folder: a plug-in may name a folder it fills, and a URL (``s3://``) names no local one; a
    stage checks more itself (the built-in sinks try the file: ``check_writable``)."""
    for _, path in named_files(cls, params, cls.output_paths):
        if "://" not in path:
            check_folder_of(Path(path), what)


def live_sources(graph: Graph) -> set[str]:
    """The sources that are live. ``live`` is a property of a built stage (a video with
    ``realtime``), so each source is built here, in the parent, besides in its own process; its
    ``__init__`` failing here is said as the stage's, where it was a traceback that named no stage."""
    live = set()
    for spec in graph.sources():
        with said_as_the_stages(graph, spec, True, "its __init__"):
            if spec.build().live:
                live.add(spec.name)
    return live


@contextmanager
def said_as_the_stages(graph: Graph, spec: StageSpec, named: bool, when: str) -> Iterator[None]:
    """What the stage's code raises, said as the stage's: bad input named, a bug one line."""
    try:
        yield
    except UserError as exc:
        if not named:
            raise
        from .config import placeholder_hint  # on this failure only: config imports pydantic

        hint = placeholder_hint(graph, spec)
        raise type(exc)(f"stage {spec.name!r} ({spec.type_name}): {exc}{hint}") from None
    except OSError as exc:
        if exc.filename is None:  # not about a file (a refused connection): as any other error
            raise _failed(spec, when, exc) from exc
        # a file its params name cannot be looked at (a folder the user may not enter)
        where = f"stage {spec.name!r} ({spec.type_name}): " if named else ""
        raise InputError(f"{where}{exc.filename}: {exc.strerror or exc}") from None
    except PLUGIN_BUGS as exc:  # a plug-in's bug: one line, as in its process
        # sys.exit(4) there ended fer-pipe with that code and no word, sys.exit("no display") with the bare text
        raise _failed(spec, when, exc) from exc


def _failed(spec: StageSpec, when: str, exc: BaseException) -> StageFailure:
    return StageFailure(f"stage {spec.name!r} ({spec.type_name}) failed before the run ({when}): {said(exc)}")
