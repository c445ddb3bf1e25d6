"""Config fuzzing: over 1,000 generated YAML documents thrown at ``fer-pipe validate``.

Whatever the document (wrong types, missing keys, huge numbers, unicode, deep nesting, tags,
anchors and aliases up to a "billion laughs", ``${NAME}`` set, unset or malformed), validation
ends with exit 0 or 2, and a 2 is exactly one ``fer-pipe:`` line, never a traceback. Running a subprocess per document would
take minutes, so ``fer_pipe.cli.main`` runs in-process (the same code the console script
calls); a handful of documents also go through the real CLI. Also here: YAML is read only
with the safe loader, and no model is loaded by a path that can run code from the file.
"""
from __future__ import annotations

import ast
import atexit
import contextlib
import io
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, fer_pipe
from fer_pipe.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

WORK = Path(tempfile.mkdtemp(prefix="fer-fuzz-"))
atexit.register(shutil.rmtree, WORK, ignore_errors=True)  # made at import, by every worker: one left a run
FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

GOOD = (REPO / "configs" / "video_to_csv.yaml").read_text()

KEYS = ["stages", "queue_size", "description", "type", "params", "inputs", "on_error", "source",
        "detector", "classifier", "csv", "path", "min_size", "scale_factor", "model", "max_frames",
        "realtime", "precision", "threads", "margin", "<<", "ünïcødé", "名前", "", "1", "null"]
TYPES = ["video", "image_folder", "haar", "classifier", "csv", "nope", "", "Video"]
TOKENS = ["~", "null", "true", "no", "on", "0", "-1", "1", "8", "1024", "1025", "3.5", "-0.0",
          ".inf", "-.inf", ".nan", "0x1F", "0o17", "0b101", "1_000", "1:30:00", "1e309", "-1e999",
          "9" * 40, "0x" + "f" * 90, "2001-12-14", "2001-13-45", "2001-12-14t21:59:43.10-05:00",
          "!!int x", "!!float abc", "!!bool maybe", "!!str 3", "!!binary aGk=", "!!binary '!!'",
          "!!set {a, b}", "!!omap [a: 1]", "!!timestamp nope", "!!null x",
          "!!python/object/apply:os.system [echo pwned]", "!!python/name:os.system",
          "!custom tag", "'unterminated", "\"\\ud800\"", "\"\\x00\"", "\"tab\\there\"", "|\n  block",
          "\"😀\"", "ünïcødé", "名前", "- dash", "? complex", "@at", "`tick", "%", "&", "*", "*undefined",
          "[", "]", "{", "}", ":", ",", "#comment", "${HOME}", "${FER_FUZZ_UNSET}", "${FER_FUZZ_UNSET:-8}",
          "$${x}", "${", "${1}", "'${HOME}'", "!!int ${HOME}"]


def validate(text: str) -> tuple[int, str]:
    """``fer-pipe validate`` in this process on ``text``; returns (exit code, stderr)."""
    path = WORK / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(["validate", str(path)])
        except SystemExit as exc:  # argparse's own exits
            code = exc.code
    return code, err.getvalue()


def check(text: str) -> int:
    code, err = validate(text)
    assert code in (0, 2), (code, err)
    assert "Traceback" not in err
    if code == 2:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("fer-pipe: "), err
    return code


def quoted(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid double-quoted YAML scalar


scalars = st.one_of(
    st.sampled_from(TOKENS),
    st.integers(min_value=-(10 ** 30), max_value=10 ** 30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr).map(lambda s: s.replace("nan", ".nan")
                                                                   .replace("inf", ".inf")),
    st.text(max_size=20).map(quoted),
    st.sampled_from(TYPES),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8).map(quoted), st.sampled_from(TOKENS))


def flow(children):
    return st.one_of(
        st.lists(children, max_size=5).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(st.tuples(keys, children), max_size=5).map(
            lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}"),
    )


values = st.recursive(scalars, flow, max_leaves=12)


@st.composite
def shaped(draw) -> str:
    """Documents shaped like a config, so validation gets past the top level into the stages."""
    lines = []
    if draw(st.booleans()):
        lines.append(f"queue_size: {draw(scalars)}")
    if draw(st.booleans()):
        lines.append(f"description: {draw(values)}")
    if draw(st.integers(0, 9)):
        lines.append("stages:")
        for _ in range(draw(st.integers(0, 5))):
            name = draw(st.one_of(st.sampled_from(["source", "detector", "classifier", "csv", "x"]), keys))
            parts = []
            if draw(st.integers(0, 4)):
                parts.append(f"type: {draw(st.one_of(st.sampled_from(TYPES), scalars))}")
            if draw(st.booleans()):
                parts.append(f"inputs: {draw(st.one_of(values, st.lists(st.sampled_from(['source', 'detector', 'classifier', 'csv', 'nope']), max_size=3).map(lambda xs: '[' + ', '.join(xs) + ']')))}")
            if draw(st.booleans()):
                params = draw(st.lists(st.tuples(keys, values), max_size=4))
                parts.append("params: {" + ", ".join(f"{k}: {v}" for k, v in params) + "}")
            if draw(st.integers(0, 3)) == 0:
                parts.append(f"on_error: {draw(st.one_of(st.sampled_from(['skip', 'stop']), scalars))}")
            if draw(st.integers(0, 5)) == 0:
                parts.append(f"{draw(keys)}: {draw(values)}")
            lines.append(f"  {name}: {{{', '.join(parts)}}}")
    if draw(st.integers(0, 4)) == 0:
        lines.append(f"{draw(keys)}: {draw(values)}")
    return "\n".join(draw(st.permutations(lines))) + "\n"


@st.composite
def mutated(draw) -> str:
    """A shipped config with random edits: characters that mean something in YAML, unicode."""
    text = GOOD
    pieces = st.one_of(st.sampled_from(list(":-[]{}&*!|>'\"#%@`?,\n\t ") + ["  ", "\n  ", "*a", "&a "]),
                       st.characters())
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:at] + "".join(draw(st.lists(pieces, min_size=1, max_size=4))) + text[at:]
        else:
            text = text[:at] + text[at + draw(st.integers(1, 20)):]
    return text


@st.composite
def aliased(draw) -> str:
    """Anchors and aliases, up to a billion laughs (9 levels of 9 references: 9**9 leaves).

    The safe loader shares aliased objects instead of copying them, so the document is small in
    memory; what must not happen is anything that walks or prints the expanded value.
    """
    width, depth = draw(st.integers(2, 9)), draw(st.integers(1, 9))
    levels = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, depth):
        levels.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    bomb = f"*l{depth - 1}"
    where = draw(st.sampled_from(["queue_size", "on_error", "params", "inputs", "type", "stages",
                                  "param_value", "key", "merge"]))
    stage = {"type": "video", "params": "{path: clip.mp4}"}
    top = {"queue_size": "8"}
    if where in ("queue_size", "stages"):
        top[where] = bomb
    elif where == "param_value":
        stage["params"] = f"{{path: {bomb}}}"
    elif where == "key":
        stage["params"] = f"{{{bomb}: 1}}"
    elif where == "merge":
        stage["params"] = f"{{<<: {bomb}}}"
    else:
        stage[where] = bomb
    body = ", ".join(f"{k}: {v}" for k, v in stage.items())
    stages = top.pop("stages", f"{{source: {{{body}}}}}")
    return ("description: {" + ", ".join(levels) + "}\n" +
            "".join(f"{k}: {v}\n" for k, v in top.items()) + f"stages: {stages}\n")


@settings(FUZZ, max_examples=450)
@given(shaped())
def test_config_shaped_documents(text: str) -> None:
    assert check(text) == 2  # none of these is a whole config: a validator that took everything passed


@settings(FUZZ, max_examples=300)
@given(st.one_of(values, st.text(max_size=200)))
def test_arbitrary_documents(text: str) -> None:
    assert check(text) == 2


@settings(FUZZ, max_examples=200)
@given(mutated())
def test_mutated_shipped_config(text: str) -> None:
    check(text)


@settings(FUZZ, max_examples=100)
@given(aliased())
def test_anchors_aliases_and_billion_laughs(text: str) -> None:
    assert check(text) == 2


@pytest.mark.parametrize("depth", [50, 3000])
def test_deep_nesting(depth: int) -> None:
    """Deep nesting in a place validation reads, and beyond what the parser's recursion allows."""
    assert check(f"stages: {{s: {{type: video, params: {{path: {'[' * depth}{']' * depth}}}}}}}\n") == 2


def test_huge_numbers_are_one_line() -> None:
    code, err = validate("queue_size: " + "7" * 5000 + "\nstages: {}\n")
    assert code == 2 and "too long" in err and len(err.splitlines()) == 1
    code, err = validate(GOOD.replace("path: input.mp4", "path: input.mp4\n      max_frames: 1e999"))
    assert code == 2 and "max_frames" in err


def test_python_tags_are_refused_by_the_safe_loader(tmp_path: Path) -> None:
    """A ``!!python/object`` tag would run code under an unsafe loader; the safe one refuses it."""
    marker = tmp_path / "pwned"
    text = GOOD.replace("path: input.mp4", f"path: !!python/object/apply:os.system ['touch {marker}']")
    code, err = validate(text)
    assert code == 2 and "python/object/apply" in err
    assert not marker.exists()


@pytest.mark.parametrize("text", [
    "stages: !!python/object/new:os.system [id]\n",
    "description: {l0: &a [x, x, x, x, x, x, x, x, x], l1: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a], "
    "l2: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b], l3: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c], "
    "l4: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d], l5: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e], "
    "l6: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f], l7: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g], "
    "l8: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]}\nqueue_size: *i\nstages: {s: {type: video}}\n",
    "stages: {s: {type: video, params: {path: 2001-13-45}}}\n",
    "queue_size: !!int many\nstages: {}\n",
    "\ufeffstages: {\"\\ud800\": {type: video}}\n",
])
def test_real_cli_on_hostile_documents(text: str, tmp_path: Path) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    done = fer_pipe("validate", str(path), timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith(f"fer-pipe: {path}")


def test_shipped_configs_still_validate() -> None:
    paths = sorted((REPO / "configs").glob("*.yaml"))
    assert len(paths) >= 7, paths
    for path in paths:
        assert check(path.read_text()) == 0, path


SOURCES = sorted([*(REPO / "pipeline").rglob("*.py"), *(REPO / "stages").glob("*.py"),
                  *(REPO / "tools").glob("*.py")])


def _calls(tree: ast.AST, name: str):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called == name:
                yield node


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_loader_that_runs_code(path: Path) -> None:
    """YAML only through the safe loader; Keras models only in safe mode; no pickles.

    A ``.keras`` file in safe mode refuses Lambda layers (arbitrary bytecode), and the pipeline's
    classifier reads only a TFLite flatbuffer through LiteRT, which holds no code at all.
    """
    tree = ast.parse(path.read_text())
    for call in _calls(tree, "load"):
        if isinstance(call.func, ast.Attribute) and getattr(call.func.value, "id", "") == "yaml":
            pytest.fail(f"{path}:{call.lineno}: yaml.load (use the safe loader)")
    for name in ("unsafe_load", "full_load", "load_all"):
        assert not list(_calls(tree, name)), f"{path}: yaml.{name}"
    for call in _calls(tree, "load_model"):
        safe = [k for k in call.keywords if k.arg == "safe_mode"]
        assert safe and isinstance(safe[0].value, ast.Constant) and safe[0].value.value is True, \
            f"{path}:{call.lineno}: keras load_model without safe_mode=True"
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            assert not {"pickle", "dill", "cloudpickle", "joblib"} & set(names), f"{path}: imports a pickle module"
        if isinstance(node, ast.keyword) and node.arg == "allow_pickle":
            assert isinstance(node.value, ast.Constant) and node.value.value is False, \
                f"{path}:{node.lineno}: allow_pickle"
