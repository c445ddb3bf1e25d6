"""The ``fer-pipe`` command line: every sub-command is a small function over the library.

User errors (bad config, bad input) print one line and exit 2; ``--debug`` adds the traceback
before that line and keeps the exit code, so scripts read the same status either way.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import json
import os
import signal
import sys
import textwrap
import traceback
from collections.abc import Iterator, Sequence
from enum import Enum
from importlib import metadata
from types import UnionType
from typing import TYPE_CHECKING, Any, Literal, NoReturn, Union, get_args, get_origin

from .arguments import home, made_path, number
from .errors import PLUGIN_BUGS, UNUSABLE_PATH, UserError, files_limit_hint, printable
from .hangup import guard_standard_streams, terminal_fds, to_devnull
from .output_files import CLOSED_AT_START, readers_gone
from .redaction import redact_urls

if TYPE_CHECKING:  # only the sub-commands import numpy, OpenCV and pydantic: see main
    from pydantic.fields import FieldInfo

    from .graph import Graph
    from .stage import Stage


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import load_graph
    from .runner import Runner, report

    guard_standard_streams(terminal_fds())  # a warning to a log reader gone must not end the run
    # A run says everything on stderr, and so does plug-in code it runs here (a preflight, a
    # source built to read ``live``, graph_warnings): its print went above the header of a CSV
    # on stdout. fd 1 stays for the csv sink, which opens /dev/stdout by name; the stage
    # processes do the same for themselves (``fer_pipe.worker``).
    with contextlib.redirect_stdout(sys.stderr):
        if args.shard is not None:  # "" (an unset $SHARD) is refused, not taken for no --shard
            from .shard import load_shard

            shard = load_shard(args.config, args.set, args.shard)
            graph = shard.graph
            others = f"; {shard.others} more camera(s) in the other shards" if shard.others else ""
            print(printable(f"fer-pipe: {shard.said()}{others}"), file=sys.stderr, flush=True)
        else:
            graph = load_graph(args.config, args.set)
        _warn(graph)
        result = Runner(graph, progress=not args.quiet, stall_timeout=args.stall_timeout,
                        status_every=args.status_every, fork=True).run()
    _after_the_run()
    try:
        report(result, args.quiet, args.debug)
    except BrokenPipeError:  # stderr's reader left (`2>&1 | tee` on a closed terminal): the code still counts
        to_devnull((sys.stderr.fileno(),))
    return result.exit_code


def _after_the_run() -> None:
    """The run is over and its exit code decided: a stop signal in the few hundred milliseconds
    the interpreter takes to end (multiprocessing's forkserver and resource tracker, then freeing
    the modules) found the default action back, and a failed run's exit 1 read as 143, a clean
    one as 130. It now changes nothing; a SIGKILL still ends the process.

    The signals are ignored, not given a Python handler that does nothing: the interpreter puts
    the default action back for every Python handler as it shuts down, before freeing the modules
    (seen as a 143 in CI). A no-op handler comes first, for a signal already on its way:
    ``signal.signal`` runs pending handlers before it swaps, and one that found SIG_IGN in their
    place would print "Signal 15 ignored due to race condition"."""
    stops = [sig for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if signal.getsignal(sig) != signal.SIG_IGN]
    for sig in stops:
        signal.signal(sig, lambda *_: None)
    for sig in stops:
        signal.signal(sig, signal.SIG_IGN)


def _user_error(exc: UserError, debug: bool) -> int:
    """Say a user error as its one line (after the traceback with --debug); its exit code."""
    if debug:
        _print_traceback()
    print(f"fer-pipe: {printable(redact_urls(str(exc)))}", file=sys.stderr)  # it may quote an RTSP URL's password
    return exc.exit_code


def _print_traceback() -> None:
    """--debug's traceback, with URL passwords masked as in every other line: it quotes the
    exceptions' own messages, a camera's URL among them, into logs others read."""
    print(redact_urls(traceback.format_exc()), end="", file=sys.stderr)


def _cmd_validate(args: argparse.Namespace) -> int:
    from .config import load_graph

    status = 0
    if args.shard is not None:  # a bad one is said once, not once per config
        from .shard import load_shard, parse_shard

        parse_shard(args.shard)
    for path in args.configs:  # every config is checked, as a linter does, not only up to the first bad one
        try:
            shard = None
            if args.shard is not None:  # the stages a shard runs, before a unit per shard is deployed
                shard = load_shard(path, args.set, args.shard)
                graph = shard.graph
            else:
                graph = load_graph(path, args.set)
        except UserError as exc:
            if len(args.configs) > 1 and str(exc).startswith("--set"):  # which config it was checked in
                exc = type(exc)(f"{path}: {exc}")
            status = exc.exit_code  # before its line, which a reader that left (| head) may not take
            with _readers_may_leave():
                _user_error(exc, args.debug)
            continue
        wiring = "; ".join(" -> ".join(chain) for chain in graph.chains())
        with _readers_may_leave():
            _warn(graph)
            # the other shards' cameras are not checked: a bad one passed here, and its host failed (s65c 3)
            others = "" if shard is None else f"; {shard.said()}" + (
                f"; {shard.others} camera(s) of other shards not checked here (validate each --shard, or all "
                "without --shard)" if shard.others else "")
            print(printable(f"{graph.origin}: ok ({len(graph.stages)} stages: {wiring}{others})"))
    return status


@contextlib.contextmanager
def _readers_may_leave() -> Iterator[None]:
    """A line for a reader that may have left (``validate ... | head``): the standard streams
    whose reader has gone go to /dev/null, so that the configs after it are still checked and
    the exit code still says whether one was bad; a closed pipe ended the command, exit 0."""
    try:
        yield
    except BrokenPipeError:
        to_devnull(readers_gone((sys.stdout.fileno(), sys.stderr.fileno())))


def _warn(graph: Graph) -> None:
    from .graph import warnings

    for spec, message in warnings(graph):
        print(printable(f"fer-pipe: WARNING: {graph.origin}: stage {spec.name!r} ({spec.type_name}) {message}"),
              file=sys.stderr)


def _shown(info: FieldInfo, default: Any) -> str:
    """A default as a config writes it: an enum's value, a path's text, YAML's ``null``, ``true``
    and ``false``, and a tuple or mapping in YAML's flow style (JSON's), not their Python reprs
    (``<Colour.red: 'red'>``, ``PosixPath('x.txt')``, ``None``, ``(1, 2)``, which a config
    copying it had refused: s68a 5). A field whose type pydantic cannot dump alone (one of
    ``arbitrary_types_allowed``) has its default dumped by its value's own type (s68f 2, s68g 3),
    and is shown as its repr where that has no JSON form. Escaped as every line is, a text's
    control characters inside a list too (s68d 5)."""
    from pydantic_core import to_jsonable_python

    from .registry import NO_PLAIN_DEFAULT, as_json, sets_sorted

    value = as_json(info, default)
    if value is NO_PLAIN_DEFAULT:
        try:
            value = sets_sorted(default, to_jsonable_python(default))
        except PLUGIN_BUGS:  # no JSON form (an object), or none it can make (bytes not UTF-8: s68h 1)
            return printable(repr(default))
    return printable(repr(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False))


def _kind(info: FieldInfo) -> str:
    """What a param takes, as a config's author needs it: ``a number > 1 and <= 2``, ``one of
    'auto', 'tcp', 'udp'``; a plug-in's bounds were otherwise visible only in its source."""
    def kind(annotation: Any) -> str:
        args = [a for a in get_args(annotation) if a is not type(None)]
        if get_origin(annotation) is Literal:
            return "one of " + ", ".join(map(repr, get_args(annotation)))
        if get_origin(annotation) in (Union, UnionType):
            return " or ".join(kind(a) for a in args) + (" or null" if len(args) < len(get_args(annotation)) else "")
        if isinstance(annotation, type) and issubclass(annotation, Enum):
            return "one of " + ", ".join(repr(member.value) for member in annotation)
        names = {bool: "true/false", int: "a whole number", float: "a number", str: "text"}
        container = get_origin(annotation) or annotation
        return names.get(annotation) or ("a list" if container in (list, tuple, set, frozenset) else "a mapping"
                                         if container is dict else getattr(annotation, "__name__", str(annotation)))

    bounds = [f"{sign} {value}" for m in info.metadata
              for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
              if isinstance(value := getattr(m, attr, None), (int, float))]
    return kind(info.annotation) + (" " + " and ".join(bounds) if bounds else "")


def _reads_writes(cls: type[Stage]) -> str:
    """A stage's contract as ``fer-pipe stages`` lists it. A sink writes nothing whatever it
    declares: one declaring ``writes = "faces"`` was listed so, and any stage it fed refused."""
    from .messages import kinds_read
    from .stage import Sink

    writes = "-" if issubclass(cls, Sink) else cls.writes or "-"
    return f"reads {' or '.join(kinds_read(cls.reads)) if cls.reads else '-'}, writes {writes}"


def _cmd_stages(args: argparse.Namespace) -> int:
    from .config import unknown_type
    from .registry import NO_PLAIN_DEFAULT, plain_default, registry

    reg = registry()
    unknown = [name for name in args.types if name not in reg.types and name not in reg.problems]
    if unknown:
        raise UserError(unknown_type(unknown[0], reg.types))
    for name in args.types or sorted(reg.types):
        cls = reg.types.get(name)
        if cls is None:  # a broken plug-in's, said below
            continue
        print(f"{name} v{cls.version} ({reg.origins[name]}; {_reads_writes(cls)})")
        summary = " ".join(inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].split())
        if summary:
            print(textwrap.fill(summary, width=96, initial_indent="    ", subsequent_indent="    "))
        fields = cls.Params.model_fields  # the required first: inherited ones come first otherwise
        for given, field in sorted(cls.Params.given_names().items(), key=lambda item: not fields[item[1]].is_required()):
            info = fields[field]
            default = plain_default(info)
            said_default = ("required" if info.is_required() else "default made as the stage is built"
                            if default is NO_PLAIN_DEFAULT else f"default {_shown(info, default)}")
            print(f"    {given}: {said_default}; {_kind(info)}" + (f". {info.description}" if info.description else ""))
    problems = [name for name in args.types if name in reg.problems] if args.types else list(reg.problems)
    for name in problems:
        if args.debug and name in reg.import_errors:  # where in the plug-in's files: its line does not say
            error = reg.import_errors[name]
            print(redact_urls("".join(traceback.format_exception(error))), end="", file=sys.stderr)
        print(f"fer-pipe: {printable(reg.problems[name])}", file=sys.stderr)
    return 1 if problems else 0  # the good ones are listed; a script (CI) still learns of the broken


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.out, args.cache, quiet=args.quiet)


class _ShowDefaults(argparse.HelpFormatter):
    """Each option's default after its help, unless the help says it already, or there is none
    to show (a flag, an option that is off unless given)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        # by identity: 0 == False, and every default of 0 (train --limit, batch --chunk-frames) went unshown
        if (action.required or any(action.default is v for v in (None, False, argparse.SUPPRESS))
                or action.default == [] or "default" in text):
            return text
        return f"{text} (default: %(default)s)".lstrip()


class _Parser(argparse.ArgumentParser):
    """A usage error is the one line any other bad input gets (exit 2), saying where the help
    is, rather than argparse's usage block over several lines."""

    commands: dict[str, argparse.ArgumentParser] | None = None
    given: list[str] = []

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        """As argparse's, keeping what this parser was given: its errors do not say it."""
        self.given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        if self.commands and message == "the following arguments are required: command":
            message = f"no command given: one of {', '.join(self.commands)}"
        if message.startswith("argument ") and message.endswith(": expected one argument"):
            options = message.removeprefix("argument ").removesuffix(": expected one argument").split("/")
            last = self.given[-1] if self.given else ""
            if not (last.startswith("-") and any(option.startswith(last) for option in options)):  # nothing followed
                message += f" (a value that begins with '-' is given as {options[-1]}=VALUE)"  # a key can (1 in 85)
        self.exit(2, f"fer-pipe: {printable(redact_urls(message))} (see {self.prog} --help)\n")  # a URL, a line break

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        """As argparse's, but an argument no option takes after the sub-command's name sends to
        its help, where its options are (``--set source.path clip.mp4``), rather than to
        ``fer-pipe --help``, which stays the pointer for one before it (``--bogus run``)."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            command = getattr(parsed, "command", None)
            after = self.given[self.given.index(command) + 1:] if command in self.given else []
            chosen = (self.commands or {}).get(command) if all(arg in after for arg in extra) else None
            (chosen or self).error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed


class _Commands(argparse._SubParsersAction):
    """The sub-commands, of which those in ``modules`` get their options and their function
    from their module only once one is chosen: importing them all (pyzmq, the batch's checks,
    the trainer's) cost every ``fer-pipe run`` 0.1 s of CPU more, for commands it never ran."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.modules: dict[str, tuple[str, str, str]] = {}

    def add_command(self, name: str, help_line: str, module: str, add_arguments: str = "add_arguments",
                    func: str = "run") -> None:
        """A sub-command whose options the function ``add_arguments`` of ``module`` adds, and
        whose function ``func`` of it runs it, both looked up when it is chosen."""
        self.add_parser(name, help=help_line)
        self.modules[name] = (module, add_arguments, func)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        name = values[0]
        if name in self.modules:
            module_name, add_arguments, func = self.modules.pop(name)
            module = importlib.import_module(f"{__package__}.{module_name}")
            getattr(module, add_arguments)(self.choices[name])
            _add_debug(self.choices[name])
            self.choices[name].set_defaults(func=getattr(module, func))
        super().__call__(parser, namespace, values, option_string)


def _add_debug(command: argparse.ArgumentParser) -> None:
    """``--debug`` after the command too (fer-pipe run x.yaml --debug); SUPPRESS keeps one given
    before it from being reset by this parser's default."""
    command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show tracebacks (the exit code stays the same)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fer-pipe", description="Real-time facial-expression "
                                     "recognition as a pipeline of plug-in stages.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks (the exit code stays the same)")
    parser.add_argument("--version", action="version", version=f"fer-pipe {metadata.version('fer-pipe')}",
                        help="print the installed fer-pipe's version and exit")
    sub = parser.add_subparsers(dest="command", required=True, action=_Commands)
    parser.commands = sub.choices

    run = sub.add_parser("run", help="run a pipeline from a YAML config")
    run.add_argument("config", type=home, help="YAML graph: a file, or a shipped config by name (webcam.yaml)")
    run.add_argument("--set", action="append", default=[], metavar="STAGE.PARAM=VALUE",
                     help="override a parameter (repeatable)")
    run.add_argument("--quiet", action="store_true", help="no progress bar or statistics")
    run.add_argument("--stall-timeout", type=number(0), default=120.0, metavar="SECONDS",
                     help="fail a stage stuck on one packet this long, or stopped between packets while "
                          "packets wait for it (seconds, 0: never; default 120)")
    run.add_argument("--status-every", type=number(0), default=0.0, metavar="SECONDS",
                     help="say each stage's frames, rate and drops this often (a camera that is down: for "
                          "how long), also with --quiet, and the whole run's at its end (for services; default "
                          "0: never)")
    run.add_argument("--shard", default=None, metavar="I/N",
                     help="run only the cameras (sources) whose id hashes to shard I of N")
    run.set_defaults(func=_cmd_run)

    validate = sub.add_parser("validate", help="check configs without running anything")
    validate.add_argument("configs", nargs="+", type=home, help="YAML graphs: files, or shipped configs by name")
    validate.add_argument("--set", action="append", default=[], metavar="STAGE.PARAM=VALUE",
                          help="override a parameter of every config checked (repeatable)")
    validate.add_argument("--shard", default=None, metavar="I/N",
                          help="check what shard I of N would run: its cameras, or its one line if it gets none")
    validate.set_defaults(func=_cmd_validate)

    stages = sub.add_parser("stages", help="list installed stages and their parameters")
    stages.add_argument("types", nargs="*", metavar="TYPE", help="only these stage types (default: all)")
    stages.set_defaults(func=_cmd_stages)

    demo = sub.add_parser("demo", help="run the demo config on a real face clip (no camera needed)")
    demo.add_argument("--out", default="demo-output", type=made_path, help="folder for the demo's outputs")
    demo.add_argument("--cache", default=None, type=made_path, help="folder the sample clips are kept in (default: "
                                                    "$FER_PIPE_CACHE/clips, else $XDG_CACHE_HOME/fer-pipe/clips, "
                                                    "else ~/.cache/fer-pipe/clips)")
    demo.add_argument("--quiet", action="store_true",
                      help="no progress bar or statistics table (the summary still prints)")
    demo.set_defaults(func=_cmd_demo)

    sub.add_command("subscribe", "print the events a zmq sink publishes, until Ctrl-C", "subscribe")
    sub.add_command("keys", "write a CURVE keypair for the zmq sink and one for a subscriber", "curve_keys",
                    "add_keys_arguments", "make_keys")
    sub.add_command("batch", "many videos to CSVs as Ray tasks (pip install 'fer-pipe[batch]')", "batch")
    sub.add_command("collect", "gather the events of push sinks into one CSV", "collect")
    sub.add_command("train", "train the classifier on FER-2013 (pip install 'fer-pipe[train]')", "model.train")
    sub.add_command("evaluate", "accuracy of a model on a FER-2013 split", "model.evaluate")
    for name, command in sub.choices.items():
        command.formatter_class = _ShowDefaults
        if name not in sub.modules:
            _add_debug(command)
    return parser


def _open_closed_standard_streams() -> None:
    """Give a standard stream the process was started without (``2>&-``, a daemon or init
    script that closes them) /dev/null. Python leaves ``sys.stderr`` None then: the first line
    meant for it failed, and a run processed no frame, exit 120, without a word; with stdout
    closed, a whole CSV ended in a traceback, exit 1; and the next file opened took the free
    descriptor, so native libraries' messages went into it."""
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: this one
            CLOSED_AT_START.add(fd)
            if getattr(sys, name) is None:
                setattr(sys, name, os.fdopen(fd, "r" if fd == 0 else "w", closefd=False))


def main(argv: list[str] | None = None) -> int:
    """The command. A Ctrl-C in the half second of importing numpy, OpenCV and pydantic lands
    in its ``try`` as exit 130, not as a traceback: this module imports none of them itself."""
    _open_closed_standard_streams()
    if isinstance(sys.stdout, io.TextIOWrapper):  # as stderr's are: a name the locale cannot write
        sys.stdout.reconfigure(errors="backslashreplace")  # (漢字 under Latin-1) was a traceback
    try:
        args = build_parser().parse_args(argv)  # imports the chosen sub-command: a Ctrl-C may land here
    except KeyboardInterrupt:
        return 130
    try:
        code = args.func(args)
        try:
            sys.stdout.flush()  # here, so a failed write of the last lines is said like the others
        except BrokenPipeError:  # the reader left after all was written: the code stands (validate's 2)
            to_devnull((sys.stdout.fileno(),))
        return code
    except UserError as exc:
        return _user_error(exc, args.debug)
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        if isinstance(exc, BrokenPipeError) and readers_gone((1, 2)):
            # The reader of our output left (`fer-pipe stages | head`): it has what it wanted, so
            # end quietly; stdout goes to /dev/null so the interpreter's last flush cannot fail
            # too. Any other broken pipe (multiprocessing's resource tracker dead) is a failure:
            # it ended a run exit 0 with no CSV and no line.
            to_devnull((sys.stdout.fileno(),))
            return 0
        # A file or stream written outside a run's stages (which say their own) failed: a full
        # disk, a read-only folder, stdout on /dev/full. One line naming it, not a traceback.
        if args.debug:
            _print_traceback()
        try:
            sys.stdout.flush()  # what was printed before the error about another file
        except OSError:
            to_devnull((sys.stdout.fileno(),))
        where = f"{exc.filename}: " if exc.filename else ""  # none for a stream such as stdout
        hint = " (a pipe of fer-pipe's own, not its output; --debug shows which)" if isinstance(
            exc, BrokenPipeError) else files_limit_hint(exc)
        print(f"fer-pipe: {where}{exc.strerror or exc}{hint}", file=sys.stderr)
        return 2 if exc.errno in UNUSABLE_PATH else 1


if __name__ == "__main__":
    sys.exit(main())
