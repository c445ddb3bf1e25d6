"""``${NAME}`` in a config's values: the environment variable NAME, in Docker Compose's syntax,
as camera recorders such as Frigate take passwords from the environment. A camera's password
then stays out of a file that is committed or copied to every host of a sharded run, and out
of ``ps``, where a ``--set source.url=...`` shows it to every user of the machine; each host
of a shard gives its own cameras' credentials.

``${NAME:-default}`` takes ``default`` where NAME is unset or empty, and ``$${`` is a literal
``${``. A plain (unquoted, untagged) value that is one ``${NAME}`` and nothing else is read as
YAML reads a plain value (``30`` a number, ``true`` a boolean); in quotes, or with text around
it, it stays text. Keys are left alone: a stage's name is the same on every host.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable

import yaml

from .errors import ConfigError

STR_TAG = "tag:yaml.org,2002:str"
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TOKEN = re.compile(r"\$\$\{|\$\{([^}]*)(\}?)")
WHOLE = re.compile(r"\$\{[^}]*\}")
Resolve = Callable[[str], str]
"""The tag YAML gives a plain scalar of this text (the loader's own implicit resolvers)."""


def _value(inner: str) -> str:
    """What ``${inner}`` stands for; a ValueError says why it stands for nothing."""
    name, default_sep, default = inner.partition(":-")
    if not NAME.fullmatch(name):
        raise ValueError(f"${{{inner}}} is not ${{NAME}} or ${{NAME:-default}} (NAME: letters, digits and _)")
    value = os.environ.get(name)
    if value:
        return value
    if default_sep:
        return default
    if value is None:
        raise ValueError(f"environment variable {name} is not set (set it, or give a default: ${{{name}:-VALUE}})")
    return value


def substitute(text: str) -> str:
    """``text`` with each ``${...}`` replaced (and each ``$${`` made ``${``); a ValueError names
    the first that cannot be. A value is never read again, so one holding ``${`` stays as it is."""
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        if not match.group(2):
            raise ValueError("'${' with no closing '}'")
        return _value(match.group(1))

    return TOKEN.sub(replace, text)


def substitute_nodes(root: yaml.Node, plain: set[int], resolve: Resolve, origin: str) -> None:
    """Replace ``${...}`` in every value scalar under ``root``, before YAML constructs anything,
    so that an explicit tag (``!!str ${ID}``) applies to the value and a problem is one
    ConfigError naming the file, the line and the key path. ``plain`` holds the ids of the
    scalars that were plain and untagged. A node shared through an alias is done once."""
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, tuple[str, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            stack.extend((value, path + (str(key.value) if isinstance(key, yaml.ScalarNode) else "?",))
                         for key, value in node.value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, path + (str(index),)) for index, item in enumerate(node.value))
        elif isinstance(node, yaml.ScalarNode) and "$" in node.value:
            try:
                value = substitute(node.value)
            except ValueError as exc:
                where = ".".join(path) or "the document"
                raise ConfigError(f"{origin}:{node.start_mark.line + 1}: {where}: {exc}") from None
            if id(node) in plain and WHOLE.fullmatch(node.value):
                node.tag = resolve(value) if value else STR_TAG
            node.value = value
