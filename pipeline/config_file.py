"""Reading a config file: finding it (a path, or a shipped config by name), its bytes (size,
encoding), and its YAML into data with the line each key came from, refusing what YAML would
read otherwise than its writer meant (YAML 1.1 numbers, duplicate keys)."""
from __future__ import annotations

import re
import reprlib
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from .env_values import substitute_nodes
from .errors import ConfigError

MAX_NUMBER_CHARS = 100
_OCTAL_1_1 = re.compile(r"[-+]?0[0-7_]+")
_BASE_60 = re.compile(r"[-+]?[1-9][0-9_]*(:[0-5]?[0-9])+")
_BASE_60_FLOAT = re.compile(r"[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*")
NUMBER_1_2 = re.compile(r"[-+]?([0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+|0o[0-7]+)")
"""Numbers YAML 1.2 reads that YAML 1.1 reads as text (``1e3``, ``0o40``)."""

Lines = dict[tuple[str, ...], int | str]
"""Where each key of a config came from: its line in the file, or the ``--set`` that set it."""


class _Misread(yaml.constructor.ConstructorError):
    """Valid YAML whose value is not what its writer meant: a number YAML 1.1 reads otherwise,
    or an environment variable's value that the tag written for it cannot hold."""


class Loader(yaml.SafeLoader):
    """The safe loader, refusing duplicate keys (which plain YAML silently overwrites), and
    noting which scalars were written plain and untagged (``fer_pipe.env_values`` reads those
    that are one ``${NAME}`` as YAML reads a plain value)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.plain: set[int] = set()
        self.substituted: dict[int, tuple[str, str]] = {}  # see env_values.substitute_nodes

    def compose_scalar_node(self, anchor: str | None) -> yaml.ScalarNode:
        event = self.peek_event()
        node = super().compose_scalar_node(anchor)
        if event.tag is None and event.style is None:
            self.plain.add(id(node))
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """A scalar its tag cannot hold (``!!int x``, ``!!int "${N}"`` with N=x, ``!!timestamp
        2001-13-45``) is refused at its line: PyYAML's constructors raise plain ValueError,
        KeyError... there, which named no line, no key and no stage."""
        try:
            return super().construct_object(node, deep=deep)
        except (yaml.YAMLError, RecursionError):
            raise
        except Exception:  # noqa: BLE001
            tag = node.tag.removeprefix("tag:yaml.org,2002:")
            if id(node) in self.substituted:  # was "invalid YAML", naming no key and no variable
                key, written = self.substituted[id(node)]
                raise _Misread(None, None, f"{key}: !!{tag} cannot hold {show(node.value)}, the value of "
                                           f"{written}", node.start_mark) from None
            raise yaml.constructor.ConstructorError(  # PyYAML's own words were Python's: "string index out of
                None, None, f"{show(node.value)} is not a valid !!{tag}", node.start_mark) from None  # range" (s67a 7)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, (str, int, float, bool)) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """YAML's merge keys (``<<: *det``, ``<<: [*a, *b]``): a mapping's own keys win over merged
        ones, and an earlier mapping of a list over a later one; each merged key is kept once,
        the winner. PyYAML's own let the later mapping win in 6.0.4 (yaml/pyyaml#953); before it,
        it kept every copy, so anchors merged in a chain doubled at each link (30 never loaded),
        and the losers' lines were those error lines named."""
        merged: dict[Any, tuple[yaml.Node, yaml.Node]] = {}
        own = []
        merges = 0
        for key, value in node.value:
            if key.tag != "tag:yaml.org,2002:merge":
                if key.tag == "tag:yaml.org,2002:value":  # PyYAML's "=" key
                    key.tag = "tag:yaml.org,2002:str"
                own.append((key, value))
                continue
            merges += 1
            if merges > 1:  # the later one won, the other way round from <<: [a, b], and validate said ok
                raise yaml.constructor.ConstructorError(
                    None, None, "duplicate key '<<' (merge several mappings with <<: [*a, *b])", key.start_mark)
            for source in reversed(value.value if isinstance(value, yaml.SequenceNode) else [value]):
                if not isinstance(source, yaml.MappingNode):
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"expected a mapping or list of mappings for merging, but found {source.id}",
                        source.start_mark)
                self.flatten_mapping(source)
                merged.update((_key_of(k), (k, v)) for k, v in source.value)  # the later (earlier listed) wins
        if merges:  # an empty one too: its << left in place had no constructor
            mine = {_key_of(k) for k, _ in own}
            node.value = [pair for key, pair in merged.items() if key not in mine] + own

    def construct_bounded_int(self, node: yaml.ScalarNode) -> int:
        """Integers of a sane length only: Python refuses to even print one of 5,000 digits. And
        not the two forms YAML 1.1, which PyYAML reads (under ``%YAML 1.2`` too), gives another
        value than YAML 1.2 and everyone else: ``max_frames: 010`` ran 8 frames."""
        text = str(node.value)
        if len(text) > MAX_NUMBER_CHARS:
            raise yaml.constructor.ConstructorError(
                None, None, f"a number of {len(text)} characters is too long", node.start_mark)
        value = self.construct_yaml_int(node)
        said = self._said(node)
        if _OCTAL_1_1.fullmatch(text) and value != int(text.replace("_", ""), 10):
            raise _Misread(None, None, f"{said} is octal in YAML 1.1, which fer-pipe reads: {value}; write "
                                       f"{value}, or {int(text.replace('_', ''), 10)} if that is what was meant, or "
                                       "quote it for text (a camera id of 0123)", node.start_mark)
        if _BASE_60.fullmatch(text):
            raise _Misread(None, None, f"{said} is a number in base 60 in YAML 1.1, which fer-pipe reads: "
                                       f"{value}; write {value}, or quote it for text", node.start_mark)
        return value

    def construct_checked_float(self, node: yaml.ScalarNode) -> float:
        """A float, but not one in YAML 1.1's base 60 (``time_constant_s: 1:30.0`` was 90.0), which
        no other YAML reads so, as ``construct_bounded_int`` refuses ``1:30``."""
        value = self.construct_yaml_float(node)
        if _BASE_60_FLOAT.fullmatch(str(node.value)):
            raise _Misread(None, None, f"{self._said(node)} is a number in base 60 in YAML 1.1, which fer-pipe "
                                       f"reads: {value!r}; write {value!r}, or quote it for text", node.start_mark)
        return value

    def _said(self, node: yaml.ScalarNode) -> str:
        """The value as written, and the variable it came from if it did."""
        key, written = self.substituted.get(id(node), ("", ""))
        return f"{key}: {node.value}, the value of {written}," if key else str(node.value)


Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_bounded_int)
Loader.add_constructor("tag:yaml.org,2002:float", Loader.construct_checked_float)


def _key_of(node: yaml.Node) -> Any:
    """What makes two keys of a mapping one key: a scalar's tag and text (``1`` is not ``"1"``)."""
    return (node.tag, node.value) if isinstance(node, yaml.ScalarNode) else id(node)


_SHOW = reprlib.Repr()
_SHOW.maxstring = _SHOW.maxother = 60


def show(value: Any) -> str:
    """A short repr for error lines: a config value may be an alias bomb or a megabyte string."""
    return _SHOW.repr(value)


def _line_map(node: yaml.Node | None) -> Lines:
    """Line numbers of the keys that error messages point at (down to stages.NAME.params.KEY).

    Only these four levels are walked, so anchors and aliases cannot make this expensive.
    """
    lines: Lines = {}

    def walk(n: yaml.Node, path: tuple[str, ...]) -> None:
        if not isinstance(n, yaml.MappingNode) or len(path) >= 4:
            return
        for key_node, value_node in n.value:
            if isinstance(key_node, yaml.ScalarNode):
                key_path = path + (str(key_node.value),)
                lines.setdefault(key_path, key_node.start_mark.line + 1)
                walk(value_node, key_path)

    if node is not None:
        walk(node, ())
    return lines


ENV_IN_FLOW = " (in [...] or {...}, YAML reads the '{' of an unquoted ${NAME} as its own: quote the value)"


def _yaml_problem(exc: yaml.MarkedYAMLError, text: str, origin: str) -> str:
    """PyYAML's error as one line: the problem at its line, with what was being read when it
    came (its context: a quoted value, a flow mapping) and where that began; a problem at the
    end of the file is put at that beginning. The problem alone was said: a quote left open on
    line 11 was "q.yaml:34: found unexpected end of stream", past the file's end, and a second
    document "but found another document"."""
    mark, context = exc.problem_mark, exc.context_mark if exc.context else None
    hint = ENV_IN_FLOW if mark and mark.index and text[mark.index - 1:mark.index + 1] == "${" else ""
    if mark and text[mark.index:mark.index + 1] == "\t":
        hint = " (a tab, where YAML takes spaces only: to indent, and after a colon)"
    at_end = mark is not None and not text[mark.index:].strip()
    start = context if context and (at_end or mark is None) else mark
    where = f"{origin}:{start.line + 1}" if start else origin
    said = exc.problem or ""
    if context:
        began = "" if start is not None and context.line == start.line else f" at line {context.line + 1}"
        said = f"{exc.context}{began}, {said}" if said else exc.context
    return f"{where}: {'' if isinstance(exc, _Misread) else 'invalid YAML: '}{said}{hint}"


YAML_LINE_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")


def parse_yaml(text: str, origin: str) -> tuple[Any, Lines]:
    try:
        loader = Loader(text)
    except yaml.reader.ReaderError as exc:  # the reader refuses control characters before any parsing,
        # said at a character's position in "<unicode string>"; lines counted as YAML breaks them
        line = len(YAML_LINE_BREAK.findall(text, 0, exc.position)) + 1
        shown = repr(chr(exc.character))[1:-1] if isinstance(exc.character, int) else repr(exc.character)
        raise ConfigError(f"{origin}:{line}: invalid YAML: it holds the character {shown}, which YAML does not "
                          "allow in a config") from None
    try:
        node = loader.get_single_node()
        if node is not None:
            loader.substituted = substitute_nodes(
                node, loader.plain, lambda text: loader.resolve(yaml.ScalarNode, text, (True, False)), origin,
                MAX_CONFIG_BYTES)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(_yaml_problem(exc, text, origin)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: invalid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise ConfigError(f"{origin}: invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    return data, _line_map(node)


def shipped_configs() -> Path:
    """The folder of the configs installed with fer-pipe (``configs/`` in the repository)."""
    return Path(str(files("fer_pipe.configs")))


def _by_name(path: Path) -> bool:
    """Whether ``path`` has the form that may name a shipped config: NAME or configs/NAME."""
    return path.parent in (Path("."), Path("configs"))


def config_path(path: str | Path) -> Path:
    """``path`` (or ``path.yaml`` for a bare name), or the shipped config it names when there is
    no such file.

    ``webcam.yaml``, ``webcam`` or ``configs/webcam.yaml`` then works from any folder, also
    after a plain ``pip install`` that leaves no ``configs/`` folder to run the README's
    commands from, and from one holding a folder of that name (``fer-pipe demo --out demo``'s,
    an ``episodes/`` for the results), which is no config.
    """
    if str(path) == "":  # an unset variable in a unit's command line (``run ${FER_PIPE_CONFIG}``)
        raise ConfigError("the config's path is empty")
    path = Path(path)
    if not path.name or (path.exists() and not path.is_dir()) or not _by_name(path):
        return path  # no name (``.``, ``/``): said as a folder when it is read
    if not path.suffix and path.with_suffix(".yaml").is_file():
        return path.with_suffix(".yaml")  # a NAME.yaml here is meant before the shipped one
    shipped = shipped_configs() / path.name
    if not shipped.suffix:
        shipped = shipped.with_suffix(".yaml")
    return shipped if shipped.is_file() else path


MAX_CONFIG_BYTES = 4 * 1024 * 1024
"""More than any config holds (a shard file of ten thousand cameras is about 2 MiB): /dev/zero given
as the config was read whole at gigabytes a second, and the FER-2013 CSV took minutes."""


def _utf16(raw: bytes) -> bool:
    """Text in UTF-16: its byte-order mark, or (none written) a start with zero bytes (the high
    halves of its spaces and ASCII letters) that reads as printable text in UTF-16, Cyrillic or an
    arrow in a first comment too; a video's or an image's zeros read as control characters,
    and text of another encoding has no zeros."""
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return True
    if b"\0" not in raw[:64]:
        return False
    for codec in ("utf-16-le", "utf-16-be"):
        for length in (64, 62):  # the second, where a character's two halves straddle the first
            try:
                text = raw[:min(length, len(raw) // 2 * 2)].decode(codec)
            except UnicodeDecodeError:
                continue
            if len(text) >= 4 and all(c.isprintable() or c in "\t\r\n" for c in text):
                return True
    return False


def read_config(path: str | Path) -> tuple[Any, Lines]:
    """The data and line map of the YAML file at ``path`` (resolved by ``config_path`` first)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: over {MAX_CONFIG_BYTES // 2**20} MiB, more than a config holds (a video or "
                              "data file given as the config?)")
        if _utf16(raw):  # Notepad's "Unicode", PowerShell's >
            raise ConfigError(f"{path}: UTF-16, not UTF-8 (as Notepad's \"Unicode\" and PowerShell's > write); save "
                              "the file as UTF-8")
        if b"\0" in raw[:64]:  # YAML has no NUL; fer-pipe run clip.mp4 was told to save the video as UTF-8
            raise ConfigError(f"{path}: not a text file (a video or other binary file given as the config?); a config "
                              "is a YAML graph such as video_to_csv, and a video goes in with --set source.path=VIDEO")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        names = sorted(p.name for p in shipped_configs().glob("*.yaml")) if _by_name(path) else []
        hint = f" (shipped ones, usable by name: {', '.join(names)})" if names else ""
        raise ConfigError(f"{path}: no such config file{hint}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    except UnicodeDecodeError as exc:  # its byte offset was the user's to turn into a line
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 (byte 0x{raw[exc.start]:02x}, perhaps saved as Latin-1 or "
                          "Windows-1252); save the file as UTF-8") from None
    return parse_yaml(text, str(path))
