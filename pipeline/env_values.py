"""``${NAME}`` in a config's values: the environment variable NAME, in Docker Compose's ``${NAME}``
and ``${NAME:-default}`` forms, as camera recorders such as Frigate take passwords from the
environment. A camera's password then stays out of a file that is committed or copied to every
host of a sharded run, and out of ``ps``, where a ``--set source.url=...`` shows it to every user
of the machine; each host of a shard gives its own cameras' credentials.

``${NAME:-default}`` takes ``default`` where NAME is unset or empty, and ``$${`` is a literal
``${``. A plain (unquoted, untagged) value that is one ``${NAME}`` and nothing else is read as
YAML reads a plain value (``30`` a number, ``true`` a boolean); in quotes, or with text around
it, it stays text. Keys are left alone: a stage's name is the same on every host.

A variable that is not set is refused only where its value is still in the config that will
run: a ``--set`` may replace the value, and ``--shard`` may leave its camera to another host,
which alone needs the password.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import yaml

from .errors import ConfigError, not_text

STR_TAG = "tag:yaml.org,2002:str"
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TOKEN = re.compile(r"\$\$\{|\$\{([^}]*)(\}?)")
WHOLE = re.compile(r"\$\{[^}]*\}")
Resolve = Callable[[str], str]
"""The tag YAML gives a plain scalar of this text (the loader's own implicit resolvers)."""


class Unset(str):
    """A value whose ``${NAME}`` stood for nothing, kept as its text until ``refuse_unset`` looks
    at the config that will run; ``problem`` says why, ``line`` is where it is in the file,
    ``names`` the variables it lacks."""

    problem: str
    line: int
    names: tuple[str, ...]

    def __new__(cls, text: str, problem: str, line: int, names: tuple[str, ...]) -> Unset:
        value = super().__new__(cls, text)
        value.problem, value.line, value.names = problem, line, names
        return value

    def __getnewargs__(self) -> tuple[str, str, int, tuple[str, ...]]:  # copy.deepcopy and pickle make one anew
        return str(self), self.problem, self.line, self.names


class NotSet(LookupError):
    """The environment variables a value's ``${NAME}`` name are not set, and no default is given;
    the message is the first one's."""

    def __init__(self, message: str, names: tuple[str, ...]) -> None:
        super().__init__(message)
        self.names = names


def _value(inner: str) -> str:
    """What ``${inner}`` stands for; NotSet, or a ValueError for a malformed one, says why it
    stands for nothing."""
    name, default_sep, default = inner.partition(":-")
    if not NAME.fullmatch(name):  # its text unsaid: it may be a piece of a password written before ${ meant this
        raise ValueError("a ${ that is not ${NAME} or ${NAME:-default} (NAME: letters, digits and _; $${ for the "
                         "text ${)")
    if "${" in default:  # the first "}" ends the outer one: ${A:-${B}} gave the text "${B}"
        raise ValueError(f"the default of ${{{name}:-...}} holds a ${{, which a default cannot")
    value = os.environ.get(name)
    problem = not_text(value or "")
    if problem:  # bytes Python keeps as lone surrogates: a CSV cell then failed mid-run
        raise ValueError(f"environment variable {name} {problem}")
    if value:
        return value
    if default_sep:
        return default
    if value is None:
        raise NotSet(f"environment variable {name} is not set (set it, or give a default: ${{{name}:-VALUE}})",
                     (name,))
    return value


def substitute(text: str) -> str:
    """``text`` with each ``${...}`` replaced (and each ``$${`` made ``${``). A ValueError names
    the first malformed one; NotSet, where none is, every variable not set. A value is never read
    again, so one holding ``${`` stays as it is."""
    unset: list[NotSet] = []

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        if not match.group(2):
            raise ValueError("'${' with no closing '}'")
        try:
            return _value(match.group(1))
        except NotSet as exc:
            unset.append(exc)
            return ""

    value = TOKEN.sub(replace, text)
    if unset:
        raise NotSet(str(unset[0]), tuple(dict.fromkeys(name for exc in unset for name in exc.names)))
    return value


def substitute_nodes(root: yaml.Node, plain: set[int], resolve: Resolve, origin: str,
                     limit: int) -> dict[int, tuple[str, str]]:
    """Replace ``${...}`` in every value scalar under ``root``, before YAML constructs anything,
    so that an explicit tag (``!!str ${ID}``) applies to the value, and a problem names the file,
    the line and the key path: at once for a malformed one, and as an ``Unset`` value for one not
    set. ``plain`` holds the ids of the scalars that were plain and untagged. Nodes are visited in
    the file's order, so a node shared through an alias is done once, under its anchor's path.
    The values may add up to ``limit`` characters: a few variables of 100 kB each in a file of
    ``${BIG}`` lines made gigabytes. Returns each substituted node's key path and the text it
    was written as, by the node's id, for a tag's constructor that cannot take the value."""
    done: dict[int, tuple[str, str]] = {}
    seen: set[int] = set()
    added = 0
    stack: list[tuple[yaml.Node, tuple[str, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            stack.extend((value, path + (str(key.value) if isinstance(key, yaml.ScalarNode) else "?",))
                         for key, value in reversed(node.value))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, path + (str(index),)) for index, item in reversed(list(enumerate(node.value))))
        elif isinstance(node, yaml.ScalarNode) and "$" in node.value:
            line = node.start_mark.line + 1
            where = f"{origin}:{line}: {'.'.join(path) or 'the document'}"
            try:
                value = substitute(node.value)
            except NotSet as exc:
                node.value, node.tag = Unset(node.value, str(exc), line, exc.names), STR_TAG
                continue
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            added += len(value) - len(node.value)
            if added > limit:
                raise ConfigError(f"{where}: the environment's values make the config over {limit // 2**20} MiB")
            if id(node) in plain and WHOLE.fullmatch(node.value):
                node.tag = resolve(value) if value else STR_TAG
            done[id(node)] = ('.'.join(path) or 'the document', node.value)
            node.value = value
    return done


def refuse_unset(data: Any, origin: str) -> None:
    """Refuse the first ``Unset`` value in the file that is still in ``data``, the config that
    will run once ``--set`` and ``--shard`` have done their part, at the key path where it is
    found there: one in an anchored block that --set had replaced for the anchor's stage was
    blamed on that stage, not on the one still using it. The line names every other
    variable it lacks, so that a host's environment file is mended in one go."""
    found: list[tuple[Unset, tuple[str, ...]]] = []
    seen: set[int] = set()
    stack: list[tuple[Any, tuple[str, ...]]] = [(data, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, Unset):
            found.append((item, path))
        elif isinstance(item, (dict, list)) and id(item) not in seen:  # aliases share their anchor's
            seen.add(id(item))
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            stack.extend(reversed([(value, path + (str(key),)) for key, value in pairs]))  # in the file's order
    if not found:
        return
    found.sort(key=lambda pair: pair[0].line)
    first_value, first_path = found[0]
    problem = f"{origin}:{first_value.line}: {'.'.join(first_path) or 'the document'}: {first_value.problem}"
    first: dict[str, int] = {}
    for value, _ in found:
        for name in value.names:
            first.setdefault(name, value.line)
    others = [f"{name} (line {line})" for name, line in first.items()][1:]
    raise ConfigError(problem + (f"; also not set: {', '.join(others)}" if others else ""))
