"""Each stage's ``preflight`` in the parent, before any stage process or batch task starts.

A run and a batch check the outside world (a display, a device, a file) here alike: a batch
that skipped it started a task per video that each crashed on the missing display (Qt aborts
the process), four attempts each, where ``fer-pipe run`` said one line (s39c).
"""
from __future__ import annotations

from collections.abc import Collection

from .endpoints import one_binder_each
from .errors import InputError, UserError
from .graph import Graph
from .stage import StageFailure, said


def check_stages(graph: Graph, skip: Collection[str] = (), named: bool = True) -> None:
    """Run every stage's ``preflight`` but those in ``skip``. Bad input is raised as the same
    error, with the stage named unless not ``named`` (a batch task's line names its video, and
    its open's errors name no stage either), exit 2; a plug-in's bug as a ``StageFailure``
    from it, whose cause holds the plug-in's traceback."""
    with one_binder_each():  # two stages of this run on one port are refused here too
        for spec in graph.stages.values():
            if spec.name in skip:
                continue
            try:
                spec.cls.preflight(spec.params)
            except UserError as exc:
                if not named:
                    raise
                from .config import placeholder_hint  # on this failure only: config imports pydantic

                hint = placeholder_hint(graph, spec)
                raise type(exc)(f"stage {spec.name!r} ({spec.type_name}): {exc}{hint}") from None
            except OSError as exc:
                if exc.filename is None:  # not about a file (a refused connection): as any other error
                    raise _failed(spec.name, spec.type_name, exc) from exc
                # a file its params name cannot be looked at (a folder the user may not enter)
                where = f"stage {spec.name!r} ({spec.type_name}): " if named else ""
                raise InputError(f"{where}{exc.filename}: {exc.strerror or exc}") from None
            except (Exception, SystemExit) as exc:  # noqa: BLE001  a plug-in's bug: one line, as in its process
                # sys.exit(4) there ended fer-pipe with that code and no word, sys.exit("no display") with the bare text
                raise _failed(spec.name, spec.type_name, exc) from exc


def _failed(name: str, type_name: str, exc: BaseException) -> StageFailure:
    return StageFailure(f"stage {name!r} ({type_name}) failed before the run (preflight): {said(exc)}")
