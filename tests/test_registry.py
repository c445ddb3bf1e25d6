"""Broken plug-ins are named with their distribution and never break the other stages."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import fer_pipe, write_video

BROKEN_MODULE = '''
import not_a_module_anywhere
'''
NOISY_IMPORT = '''
raise ImportError("\\n\\nIMPORTANT: PLEASE READ THIS\\n\\n  numpy failed to import\\x1b[31m\\n")
'''
"""numpy's own import error is a dozen lines, and a message may hold a terminal's escape codes."""
NOT_A_STAGE = '''
class Plain:
    pass
'''
LOOSE_PARAMS = '''
from pydantic import BaseModel

from fer_pipe.messages import FACES
from fer_pipe.stage import Stage


class LooseParams(BaseModel):  # not StageParams: it would take a misspelt param in silence
    level: int = 1


class Loose(Stage):
    Params = LooseParams
    reads = writes = FACES
'''

CONTRACT_BREAKERS = '''
import enum
import os
import pathlib

from pydantic import Field, field_validator

from fer_pipe.messages import FACES, FRAME
from fer_pipe.stage import Sink, Source, Stage, StageParams


class ListReads(Stage):
    reads = [FACES]
    writes = FACES


class NoConsume(Sink):
    reads = FACES


class WantsList(Stage):
    reads = writes = FACES
    wants_before = ["track"]


class NoFrames(Source):
    pass


class ReadingSource(Source):
    reads = "frame"

    def frames(self):
        return iter(())


class BadDefaultParams(StageParams):
    ratio: float = Field(5.0, ge=0.0, le=1.0)


class BadDefault(Stage):
    Params = BadDefaultParams
    reads = writes = FACES


class ConsumesByProcess(Sink):
    """A sink may implement process itself."""
    reads = FACES

    def process(self, packet):
        return ()


class CrossParams(StageParams):  # a validator needing another field: not run on the default at load
    path: str
    suffix: str = ".csv"

    @field_validator("suffix")
    @classmethod
    def _after_path(cls, value, info):
        return info.data["path"] + value


class Cross(Stage):
    """A stage whose params check one field against another."""
    Params = CrossParams
    reads = writes = FACES


class FileParams(StageParams):
    path: str = "out.txt"
    labels: str = Field("", description="a label map to read (empty: none)")
    notes: str | None = None


class MisspeltPath(Sink):
    """A sink whose declared file param is misspelt."""
    Params = FileParams
    reads = FRAME
    output_paths = ("pth",)

    def consume(self, packet):
        pass


class ListPaths(Sink):
    """A sink whose output_paths is a list: as good as a tuple."""
    Params = FileParams
    reads = FRAME
    output_paths = ["path"]

    def consume(self, packet):
        pass


class NoComma(Sink):
    """A sink whose output_paths lacks the comma that makes it a tuple."""
    Params = FileParams
    reads = FRAME
    output_paths = ("path")

    def consume(self, packet):
        pass


class ClosingNumber(Sink):
    """A sink that says its closing time as a number."""
    reads = FRAME
    closing_s = 5.0

    def consume(self, packet):
        pass


class PoolParams(StageParams):
    threads: int = Field(2, ge=2, le=8, description="a pool of at least two")


class TwoThreads(Stage):
    """A stage whose thread count refuses the 1 a batch task sets."""
    Params = PoolParams
    reads = writes = FRAME
    thread_params = ("threads",)

    def process(self, packet):
        return (packet,)


class WorkersParams(StageParams):
    workers: int = Field(1, description="threads of my own")


class WorkersParam(Stage):
    """A stage whose param is named as a stage's own key."""
    Params = WorkersParams
    reads = writes = FRAME

    def process(self, packet):
        return (packet,)


class PresetParams(StageParams):
    preset: str = "fast"

    @field_validator("preset")
    @classmethod
    def _known(cls, value):
        return {"fast": "fast", "slow": "slow"}[value]  # a KeyError, not a ValueError


class Preset(Sink):
    """A sink whose params check raises other than ValueError."""
    Params = PresetParams
    reads = FRAME

    def consume(self, packet):
        pass


class OptionalFile(Sink):
    """A sink with a file it reads only when given."""
    Params = FileParams
    reads = FRAME
    input_paths = ("labels", "notes")
    output_paths = ("path",)

    def consume(self, packet):
        pass


class Colour(enum.Enum):
    RED = "red"


class DefaultsParams(StageParams):
    tags: list[str] = Field(default_factory=list)
    colour: Colour = Colour.RED
    out: pathlib.Path = pathlib.Path("x.txt")


class Defaults(Stage):
    """A stage whose defaults are made by a factory, an enum and a path."""
    Params = DefaultsParams
    reads = writes = FACES


class FromDataParams(StageParams):
    size: int = Field(48, gt=0)
    margin: int = Field(default_factory=lambda data: data["size"] // 4)
    url: str = Field(default_factory=lambda: os.environ["NOT_SET_ANYWHERE"])
    min_conf: float = Field(0.5, alias="min-confidence")
    floor: float = Field(0.2, validation_alias="min-floor")


class FromData(Stage):
    """A stage whose defaults come from its other params and the environment, one param aliased."""
    Params = FromDataParams
    reads = writes = FRAME


def _made():
    class Made(Stage):
        """A stage class that a function makes."""
        reads = writes = FRAME

    return Made


Made = _made()


class LookupParams(StageParams):
    model: str = "default"


class Lookup(Stage):
    """A stage that looks its model up in a folder an environment variable names."""
    Params = LookupParams
    reads = writes = FRAME
    input_paths = ("model",)

    @classmethod
    def read_path(cls, param, value):
        return os.path.join(os.environ["NOT_SET_ANYWHERE"], value)


class WorkersAliasParams(StageParams):
    pool: int = Field(1, alias="workers")


class WorkersAlias(Stage):
    """A stage whose param is given by a stage's own key, as an alias."""
    Params = WorkersAliasParams
    reads = writes = FRAME


class NoParams(Stage):
    """A stage without params."""
    reads = writes = FRAME
'''
"""Mistakes a plug-in author makes that were found only at the first frame (or, for reads = [...],
as a traceback of validate), and then often in the stage after the broken one."""


def _distribution(root: Path, dist: str, module: str, source: str, entries: str) -> None:
    (root / f"{module}.py").write_text(source)
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[fer_pipe.stages]\n{entries}\n")


def _env(root: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}


def _config(path: Path, stage_type: str) -> Path:
    path.write_text(f"stages:\n  source: {{type: video, params: {{path: a.mp4}}}}\n"
                    f"  x:\n    type: {stage_type}\n    inputs: [source]\n")
    return path


BANNER = '''print("Hello from a banner")

from fer_pipe.messages import FRAME
from fer_pipe.stage import Stage


class Passes(Stage):
    """Passes each frame on."""
    reads = writes = FRAME

    def process(self, packet):
        return (packet,)
'''


def test_a_plugin_printing_as_it_is_imported_prints_to_stderr(tmp_path, short_clip):
    """Every command imports every installed plug-in: a library's banner printed then went into
    the CSV another program read from ``csv.path=/dev/stdout``, as its first line (s40a)."""
    _distribution(tmp_path, "banner", "bannermod", BANNER, "bannered = bannermod:Passes")
    config = tmp_path / "banner.yaml"  # in the graph: its stage's process imports it too (s40d)
    config.write_text(f"stages:\n  source: {{type: video, params: {{path: '{short_clip}'}}}}\n"
                      "  pass: {type: bannered, inputs: [source]}\n"
                      "  detector: {type: haar, inputs: [pass]}\n"
                      "  classifier: {type: classifier, inputs: [detector]}\n"
                      "  csv: {type: csv, inputs: [classifier], params: {path: /dev/stdout}}\n")
    done = fer_pipe("run", str(config), "--quiet", env=_env(tmp_path), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("source,frame,") and "Hello" not in done.stdout
    assert "Hello from a banner\n" in done.stderr


def test_a_command_imports_only_the_stage_types_its_config_names(tmp_path, short_clip):
    """Every command imported every installed stage module, the 14 built-ins alone 0.1 s of CPU
    of each run, and any plug-in's import with its banner, however slow, for a config that
    does not use it."""
    _distribution(tmp_path, "banner", "bannermod", BANNER, "bannered = bannermod:Passes")
    config = tmp_path / "plain.yaml"
    config.write_text(f"stages:\n  source: {{type: video, params: {{path: '{short_clip}'}}}}\n"
                      "  detector: {type: haar, inputs: [source]}\n"
                      "  classifier: {type: classifier, inputs: [detector]}\n"
                      "  csv: {type: csv, inputs: [classifier], params: {path: out.csv}}\n")
    checked = fer_pipe("validate", str(config), env=_env(tmp_path), timeout=120)
    assert (checked.returncode, checked.stderr) == (0, ""), checked.stderr
    listed = fer_pipe("stages", "bannered", env=_env(tmp_path), timeout=120)
    assert listed.returncode == 0 and listed.stderr == "Hello from a banner\n", listed.stderr
    other = fer_pipe("stages", "csv", env=_env(tmp_path), timeout=120)  # it looked for problems in all (s58c 5)
    assert (other.returncode, other.stderr) == (0, ""), other.stderr


LOOKER = '''from fer_pipe.registry import registry

Base = registry().types["track"]


class Looker(Base):
    """Tracks as track does, found through the registry as its module is imported."""
'''


def test_a_plugin_that_looks_up_another_type_as_it_is_imported_is_listed(tmp_path):
    """Going through every type imported each one left to import; the one a plug-in looked up
    during its own import had gone, and fer-pipe stages, or any unknown type's line, ended in a
    KeyError traceback (s58c 1)."""
    _distribution(tmp_path, "looker", "lookermod", LOOKER, "looker = lookermod:Looker")
    listed = fer_pipe("stages", env=_env(tmp_path), timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert {"looker", "track"} <= set(_summaries(listed.stdout))
    config = tmp_path / "typo.yaml"
    config.write_text("stages:\n  source: {type: vdeo, params: {path: a.mp4}}\n")
    typo = fer_pipe("validate", str(config), env=_env(tmp_path), timeout=120)
    assert typo.returncode == 2 and "unknown stage type 'vdeo' (did you mean 'video'?)" in typo.stderr, typo.stderr


def _summaries(listing: str) -> dict[str, str]:
    """Each stage's summary in ``fer-pipe stages``: its indented lines before the parameters."""
    summaries: dict[str, str] = {}
    name = ""
    for line in listing.splitlines():
        if not line.startswith(" "):
            name = line.split(" ")[0]
            summaries[name] = ""
        elif not re.match(r"    [\w-]+: (required|default)", line) and name:
            summaries[name] = f"{summaries[name]} {line.strip()}".strip()
    return summaries


def test_broken_plugins_are_named_with_their_distribution(tmp_path):
    root = tmp_path / "site"
    root.mkdir()
    _distribution(root, "broken-import", "brokenmod", BROKEN_MODULE, "broken = brokenmod:Stage")
    _distribution(root, "plain-class", "plainmod", NOT_A_STAGE, "plain = plainmod:Plain")
    _distribution(root, "csv-clash", "clashmod", NOT_A_STAGE, "csv = clashmod:Plain")
    _distribution(root, "csv-clash-again", "clashmod2", NOT_A_STAGE, "csv = clashmod2:Plain")
    _distribution(root, "loose-params", "loosemod", LOOSE_PARAMS, "loose = loosemod:Loose")
    _distribution(root, "breakers", "breakmod", CONTRACT_BREAKERS,
                  "listreads = breakmod:ListReads\nnoconsume = breakmod:NoConsume\nwantslist = breakmod:WantsList\n"
                  "noframes = breakmod:NoFrames\nbaddefault = breakmod:BadDefault\n"
                  "byprocess = breakmod:ConsumesByProcess\ncross = breakmod:Cross\n"
                  "misspelt = breakmod:MisspeltPath\noptfile = breakmod:OptionalFile\n"
                  "closingnumber = breakmod:ClosingNumber\nnocomma = breakmod:NoComma\nlistpaths = breakmod:ListPaths\ntwothreads = breakmod:TwoThreads\nworkersparam = breakmod:WorkersParam\npreset = breakmod:Preset\ndefaults = breakmod:Defaults\n"
                  "fromdata = breakmod:FromData\nmade = breakmod:Made\nnoparams = breakmod:NoParams\nlookup = breakmod:Lookup\nworkersalias = breakmod:WorkersAlias\n"
                  "readingsource = breakmod:ReadingSource")
    _distribution(root, "noisy-import", "noisymod", NOISY_IMPORT, "noisy = noisymod:Stage")
    _distribution(root, "exits", "exitmod", "import sys\nsys.exit(0)  # an optional library is missing\n",
                  "exiting = exitmod:Stage")
    env = _env(root)

    listed = fer_pipe("stages", env=env, timeout=120)
    assert listed.returncode == 1  # a CI step's `fer-pipe stages` fails on a broken plug-in
    assert "haar v2" in listed.stdout and "video v1" in listed.stdout  # the others still load
    summaries = _summaries(listed.stdout)
    assert {"image_folder", "rtsp", "video"} <= set(summaries)
    unfinished = {name: text for name, text in summaries.items() if not text.endswith(".")}
    assert not unfinished, unfinished  # each a whole first paragraph, not its first line
    assert ("fer-pipe: plug-in 'broken' from distribution broken-import: cannot import brokenmod:Stage: "
            "ModuleNotFoundError: No module named 'not_a_module_anywhere'") in listed.stderr
    assert ("fer-pipe: plug-in 'plain' from distribution plain-class: plainmod:Plain is not a fer_pipe "
            "Stage subclass") in listed.stderr
    # with three, the third was named only once one of the others was gone (s48c 7)
    assert "stage type 'csv' is declared 3 times: by csv-clash, csv-clash-again and fer-pipe\n" in listed.stderr
    assert ("fer-pipe: plug-in 'loose' from distribution loose-params: loosemod:Loose.Params is not a "
            "fer_pipe.stage.StageParams subclass") in listed.stderr
    for line in ("'listreads' from distribution breakers: breakmod:ListReads.reads is ['faces']: a kind's name "
                 "(a str), a tuple of them (its inputs may write any), or None",
                 "'wantslist' from distribution breakers: breakmod:WantsList.wants_before is ['track']: a dict of "
                 "stage type to what goes wrong without it",
                 "'noconsume' from distribution breakers: breakmod:NoConsume is a Sink but implements neither "
                 "consume() nor process()",
                 "'noframes' from distribution breakers: breakmod:NoFrames is a Source but does not implement "
                 "frames()",
                 # before, it loaded, and `fer-pipe stages` said it "reads frame" (s63a 6)
                 "'readingsource' from distribution breakers: breakmod:ReadingSource is a Source, which has no "
                 "inputs, but says it reads 'frame': leave reads None",
                 "'baddefault' from distribution breakers: breakmod:BadDefault.Params.ratio: its default 5.0 "
                 "breaks its own type or bounds: Input should be less than or equal to 1",
                 # before, it loaded, and validate and run ended in an AttributeError traceback
                 "'misspelt' from distribution breakers: breakmod:MisspeltPath.output_paths names 'pth', not a "
                 "field of its Params",
                 # before, it loaded and validated, and the run ended in four tracebacks
                 "'closingnumber' from distribution breakers: breakmod:ClosingNumber.closing_s is 5.0, not a method: "
                 "define it with def, as Stage does",
                 # before, "names 'p', 'a', 't', 'h', not a field of its Params"
                 "'nocomma' from distribution breakers: breakmod:NoComma.output_paths is 'path', a str, not a "
                 "tuple of param names: write ('path',)",
                 # before, fer-pipe batch refused it blaming the config's line, which set no threads
                 "'twothreads' from distribution breakers: breakmod:TwoThreads.Params.threads refuses 1, which "
                 "fer-pipe batch sets each of thread_params to (one CPU a task): let it take 1",
                 # before, --set x.workers=3 set the stage's processes (or was refused for a stage
                 # that keeps state), where params: {workers: 3} set the param
                 "'workersparam' from distribution breakers: breakmod:WorkersParam.Params.workers: workers is a "
                 "stage's own key in a config (--set STAGE.workers sets it), so no param may be named so",
                 "'workersalias' from distribution breakers: breakmod:WorkersAlias.Params.workers: workers is a "  # s48f 5
                 "stage's own key in a config (--set STAGE.workers sets it), so no param may be named so",
                 # before, every command exited 0 at once, having done nothing
                 "'exiting' from distribution exits: cannot import exitmod:Stage: it exits while imported "
                 "(sys.exit(0))",
                 # before, it loaded and validated, and run was a pickling traceback (s48c 3)
                 "'made' from distribution breakers: breakmod:Made is breakmod._made.<locals>.Made, which its "
                 "module does not hold by that name, so a stage's own process cannot import it: define the class "
                 "with a class statement at module level"):
        assert f"fer-pipe: plug-in {line}\n" in listed.stderr, listed.stderr
    assert {"byprocess", "cross", "optfile", "listpaths", "fromdata", "noparams"} <= set(summaries)
    # a factory needing the other params, or an environment variable, was a traceback of every
    # command, whatever the config; an alias was listed by the field's name, which is refused (s48c 1, 6)
    for line in ("margin: default made as the stage is built", "url: default made as the stage is built",
                 "min-confidence: default 0.5", "min-floor: default 0.2"):
        assert f"\n    {line}; " in listed.stdout, listed.stdout
    # a multi-line import error was printed as its dozen lines, with its escape codes live
    assert ("fer-pipe: plug-in 'noisy' from distribution noisy-import: cannot import noisymod:Stage: ImportError: "
            "IMPORTANT: PLEASE READ THIS / numpy failed to import\\x1b[31m\n") in listed.stderr
    # a default made by a factory was listed as PydanticUndefined, an enum's and a path's as their reprs
    for line in ("tags: default []", "colour: default 'red'", "out: default 'x.txt'"):
        assert f"\n    {line}; " in listed.stdout, listed.stdout
    # a file param left at its empty default names no file: before, "" was refused as an empty
    # path and None was an AttributeError traceback, so no stage could have an optional file
    optional = fer_pipe("validate", str(_config(tmp_path / "o.yaml", "optfile")), env=env, timeout=120)
    assert (optional.returncode, optional.stderr) == (0, ""), optional.stderr
    # a plug-in's validator that raises a KeyError was a traceback from validate, exit 1
    preset = fer_pipe("validate", str(_config(tmp_path / "p.yaml", "preset")), "--set", "x.preset=medium", env=env,
                      timeout=120)
    assert (preset.returncode, preset.stderr) == (2, f"fer-pipe: {tmp_path / 'p.yaml'}:3 with --set x.preset=medium: "
                                                     "stage 'x' (preset): params: the stage's own check failed: "
                                                     "KeyError: 'medium'\n")

    used = fer_pipe("validate", str(_config(tmp_path / "c.yaml", "broken")), env=env, timeout=120)
    assert used.returncode == 2
    assert used.stderr.strip() == (
        f"fer-pipe: {tmp_path / 'c.yaml'}:4: stage 'x': plug-in 'broken' from distribution broken-import: "
        "cannot import brokenmod:Stage: ModuleNotFoundError: No module named 'not_a_module_anywhere'")
    # --debug showed fer-pipe's traceback only: not the plug-in's file and line where the import failed (s40a)
    for args in (["validate", str(tmp_path / "c.yaml")], ["stages", "broken"]):
        debug = fer_pipe("--debug", *args, env=env, timeout=120)
        assert debug.stderr.startswith("Traceback") and f'File "{root / "brokenmod.py"}", line ' in debug.stderr
        assert debug.stderr.splitlines()[-1].endswith("No module named 'not_a_module_anywhere'")
    clash = fer_pipe("validate", str(_config(tmp_path / "d.yaml", "csv")), env=env, timeout=120)
    assert clash.returncode == 2 and "declared 3 times" in clash.stderr and "csv-clash" in clash.stderr
    fromdata = _config(tmp_path / "f.yaml", "fromdata")
    aliased = fer_pipe("validate", str(fromdata), "--set", "x.url=http://labels", "--set", "x.min-confidence=0.8",
                       env=env, timeout=120)
    assert aliased.returncode == 0 and "fer-pipe: WARNING" in aliased.stderr, aliased.stderr  # feeds no stage
    unset = fer_pipe("validate", str(fromdata), env=env, timeout=120)
    assert unset.returncode == 2 and unset.stderr.endswith("params: the stage's own check failed: KeyError: "
                                                           "'NOT_SET_ANYWHERE'\n"), unset.stderr
    field_name = fer_pipe("validate", str(fromdata), "--set", "x.url=http://labels", "--set", "x.min_conf=0.8",
                          env=env, timeout=120)
    assert field_name.returncode == 2 and field_name.stderr.endswith(
        "params.min_conf: unknown parameter (did you mean 'min-confidence'?)\n"), field_name.stderr
    none = fer_pipe("validate", str(_config(tmp_path / "n.yaml", "noparams")), "--set", "x.foo=1", env=env, timeout=120)
    assert none.returncode == 2 and none.stderr.endswith(  # was "(it takes )" (s48c 8)
        "params.foo: unknown parameter (the stage takes no params)\n"), none.stderr
    lookup = fer_pipe("validate", str(_config(tmp_path / "l.yaml", "lookup")), env=env, timeout=120)
    assert lookup.returncode == 2 and lookup.stderr.endswith(  # was a traceback naming no stage (s48c 5)
        "stage 'x' (lookup): params.model: the stage's read_path failed on default: KeyError: 'NOT_SET_ANYWHERE'\n"
    ), lookup.stderr


NO_WRITES = '''
from fer_pipe.messages import FRAME
from fer_pipe.stage import Stage


class Forgetful(Stage):
    reads = FRAME  # and no writes
'''


def test_a_stage_that_declares_no_writes_is_named_as_such_not_as_a_sink(tmp_path):
    root = tmp_path / "site"
    root.mkdir()
    _distribution(root, "forgetful", "forgetfulmod", NO_WRITES, "forgetful = forgetfulmod:Forgetful")
    config = tmp_path / "c.yaml"
    config.write_text("stages:\n  source: {type: video, params: {path: a.mp4}}\n"
                      "  x: {type: forgetful, inputs: [source]}\n"
                      "  csv: {type: csv, inputs: [x], params: {path: out.csv}}\n")
    done = fer_pipe("validate", str(config), env=_env(root), timeout=120)
    assert (done.returncode, done.stderr) == (
        2, f"fer-pipe: {config}:4: stage 'csv' (csv): inputs: 'x' (forgetful) declares no 'writes' kind "
           "(frame, faces or expressions)\n")


CLOSE_BREAKERS = '''
from pathlib import Path

from fer_pipe.messages import FRAME
from fer_pipe.stage import Sink, StageParams


class LingerParams(StageParams):
    linger_s: float = 1.0


class TypoClosing(Sink):
    Params = LingerParams
    reads = FRAME

    @classmethod
    def closing_s(cls, params):
        return params.lingers_s * 2

    def consume(self, packet):
        pass


class NoSuper(Sink):
    reads = FRAME

    def __init__(self, name, params):
        self.rows = []

    def consume(self, packet):
        self.rows.append(packet.index)

    def close(self):
        Path("rows.txt").write_text(repr(self.rows))
'''


def test_a_plugins_bug_in_closing_s_or_init_is_one_line_naming_the_stage(tmp_path):
    """closing_s was first asked by the runner, whose traceback (and five of the forkserver's)
    ended the run with nothing written and validate saying ok; and a stage whose __init__ did
    not call super().__init__ failed out of sight as its process ended, its close skipped, in a
    run that exited 0."""
    from fer_pipe.inprocess import run_stage

    root = tmp_path / "site"
    root.mkdir()
    _distribution(root, "close-breakers", "closemod", CLOSE_BREAKERS,
                  "typoclosing = closemod:TypoClosing\nnosuper = closemod:NoSuper")
    write_video(tmp_path / "a.avi", [np.zeros((48, 64, 3), np.uint8)] * 3)
    config = tmp_path / "c.yaml"
    config.write_text("stages:\n  source: {type: video, params: {path: a.avi}}\n"
                      "  x: {type: typoclosing, inputs: [source]}\n")
    for command in (["validate"], ["run", "--quiet"]):
        done = fer_pipe(*command, str(config), env=_env(root), timeout=120, cwd=tmp_path)
        assert (done.returncode, done.stderr) == (
            2, f"fer-pipe: {config}:3: stage 'x' (typoclosing): closing_s failed: AttributeError: 'LingerParams' "
               "object has no attribute 'lingers_s'\n"), command

    config.write_text("stages:\n  source: {type: video, params: {path: a.avi}}\n"
                      "  x: {type: nosuper, inputs: [source]}\n")
    done = fer_pipe("run", str(config), "--quiet", env=_env(root), timeout=120, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        1, "fer-pipe: stage 'x' (nosuper) failed: TypeError: NoSuper.__init__ must call super().__init__(name, "
           "params)\n")
    sys.path.insert(0, str(root))
    try:
        from closemod import NoSuper

        with pytest.raises(TypeError, match="must call super"):  # in a plug-in's own unit test too
            run_stage(NoSuper)
    finally:
        sys.path.remove(str(root))


FILE_LISTS = '''
from pathlib import Path

from fer_pipe.messages import FRAME
from fer_pipe.stage import Sink, Source, SourceParams, StageParams


class ListParams(SourceParams):
    files: list[str]


class PathParams(StageParams):
    path: str = ""


class ImageList(Source):
    Params = ListParams
    input_paths = ("files",)

    def open(self):
        for name in self.params.files:
            Path(name).read_bytes()  # as a stage reads its files: ~ is not expanded here

    def frames(self):
        yield from ()


class Nothing(Sink):
    Params = PathParams
    reads = FRAME
    output_paths = ("path",)

    def consume(self, packet):
        pass
'''


def test_each_file_of_a_list_param_is_checked_and_its_tilde_expanded(tmp_path):
    """A list param in input_paths was checked as the one path "['out.csv']": a sink writing one
    of its files was not refused, and a leading ~ was left for the stage to fail on."""
    root = tmp_path / "site"
    root.mkdir()
    _distribution(root, "file-lists", "listmod", FILE_LISTS, "imagelist = listmod:ImageList\nnothing = listmod:Nothing")
    (tmp_path / "a.png").write_bytes(b"png")
    config = tmp_path / "c.yaml"
    config.write_text("stages:\n  x: {type: imagelist, params: {files: [a.png, out.csv]}}\n"
                      "  y: {type: nothing, inputs: [x], params: {path: out.csv}}\n")
    (tmp_path / "out.csv").write_text("mine\n")
    done = fer_pipe("validate", str(config), env=_env(root), timeout=120, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        2, f"fer-pipe: {config}:3: stage 'y' (nothing): params.path: out.csv is the file stage 'x' (imagelist) reads; "
           "writing it would destroy that input\n")
    config.write_text("stages:\n  x: {type: imagelist, params: {files: [~/a.png]}}\n"
                      "  y: {type: nothing, inputs: [x]}\n")
    done = fer_pipe("run", str(config), "--quiet", env={**_env(root), "HOME": str(tmp_path)}, timeout=120, cwd=root)
    assert (done.returncode, done.stderr) == (0, "")


def test_a_listing_cut_short_by_its_reader_ends_quietly():
    """``fer-pipe stages | head -2``: the reader has what it wanted; before, a traceback. Here
    the reader has left before the listing starts, so its first write meets a closed pipe."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        listing = subprocess.run([sys.executable, "-m", "fer_pipe.cli", "stages"], stdout=write_end,
                                 stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert (listing.returncode, listing.stderr) == (0, "")


def test_the_listing_puts_a_stages_required_params_first(capsys):
    """The sources' shared ``source_id`` comes from ``SourceParams``, so pydantic lists it before
    the source's own fields: the required ``path`` came second."""
    from fer_pipe.cli import main

    main(["stages"])
    listing = capsys.readouterr().out.splitlines()
    for source, first in (("video", "path: required"), ("rtsp", "url: required"),
                          ("image_folder", "path: required")):
        header = next(i for i, line in enumerate(listing) if line.startswith(f"{source} v"))
        params = [line.strip() for line in listing[header + 1:] if line.startswith("    ") and ": " in line]
        assert params[0].startswith(first), params
        assert any(p.startswith("source_id: default ''") for p in params[:12]), params
    # what each param takes, so a plug-in's bounds and choices are seen without its source
    for line in ("scale_factor: default 1.2; a number > 1.0 and <= 2.0. image pyramid step between scales",
                 "transport: default 'auto'; one of 'auto', 'tcp', 'udp'. RTSP transport (auto: TCP, then UDP and TCP in "
                 "turn while attempts fail)",
                 "sndhwm: default 10000; a whole number >= 1 and <= 10000000. events held while the collector is "
                 "away before the pipeline waits",
                 "device: default 0; a whole number or text. camera index (0, 1, ...) or device path (/dev/video0)"):
        assert f"    {line}" in listing, line


def test_every_stage_of_the_package_is_declared_and_the_install_declares_what_setup_cfg_does():
    """A built-in is found through its entry point, as a plug-in is: a new module in stages/ was
    "unknown stage type" until setup.cfg declared it and the editable install was made again,
    and nothing said so (s49c 4)."""
    import configparser
    import importlib
    import importlib.metadata
    import pkgutil

    import fer_pipe.stages
    from fer_pipe.stage import Stage

    setup = configparser.ConfigParser()
    setup.read(Path(__file__).parent.parent / "setup.cfg")
    declared = dict(line.replace(" ", "").split("=") for line in
                    setup["options.entry_points"]["fer_pipe.stages"].strip().splitlines())
    defined = {f"{module.__name__}:{cls.__name__}"
               for info in pkgutil.iter_modules(fer_pipe.stages.__path__)
               for module in [importlib.import_module(f"fer_pipe.stages.{info.name}")]
               for cls in vars(module).values()
               if isinstance(cls, type) and issubclass(cls, Stage) and cls.__module__ == module.__name__}
    assert defined == set(declared.values())
    installed = {e.name: e.value for e in importlib.metadata.distribution("fer-pipe").entry_points
                 if e.group == "fer_pipe.stages"}
    assert installed == declared, "the install is older than setup.cfg: run pip install -e . again"


def test_an_undeclared_stage_module_of_the_package_is_named_in_the_unknown_type_line(tmp_path, monkeypatch):
    """``stages/blur_faces.py`` written, its type was "unknown stage type 'blur'" alone, also
    where the type is not the module's name, as ``track`` is tracker.py's (s49c 4, s49f 4)."""
    import fer_pipe.stages
    from fer_pipe.config import unknown_type
    from fer_pipe.registry import registry

    types = registry().types
    known = ", ".join(sorted(types))
    # like no type, and no module undeclared: a plug-in's entry point not installed yet (s60c 4)
    assert unknown_type("blurry", types) == (
        "unknown stage type 'blurry' (a plug-in's type is known once its distribution is installed with the entry "
        f"point declaring it: after adding one to its setup.cfg, install it again) (known: {known})")
    (tmp_path / "blur_faces.py").write_text("from fer_pipe.stage import Stage\n\n\nclass Blur(Stage):\n    pass\n")
    (tmp_path / "scratch.py").write_text("SIZE = 3\n")  # a module that holds no stage
    monkeypatch.setattr(fer_pipe.stages, "__path__", [*fer_pipe.stages.__path__, str(tmp_path)])
    try:
        assert unknown_type("blurry", types) == (
            "unknown stage type 'blurry' (fer_pipe/stages/blur_faces.py holds a stage this install does not "
            "declare: add it to setup.cfg's fer_pipe.stages entry points and run pip install -e . again) "
            f"(known: {known})")
        # a type like a known one is said to be like it, and the module still named (s53b 2)
        assert unknown_type("track2", types) == (
            "unknown stage type 'track2' (did you mean 'track'?) (fer_pipe/stages/blur_faces.py holds a stage this "
            "install does not declare: add it to setup.cfg's fer_pipe.stages entry points and run pip install -e . "
            f"again) (known: {known})")
    finally:
        for name in ("blur_faces", "scratch"):
            sys.modules.pop(f"fer_pipe.stages.{name}", None)


def test_a_default_the_params_own_rules_refuse_is_found_when_the_plug_in_loads():
    """NaN, inf and ``True`` defaults for numbers passed the load's check, which asked the type
    alone: ``fer-pipe stages`` listed ``default nan`` and runs used it, where the same value
    from a config was refused (s68a 2)."""
    from pydantic import Field, create_model

    from fer_pipe.registry import _refuses
    from fer_pipe.stage import StageParams

    def refused(annotation: object, default: object) -> str:
        field = create_model("Params", __base__=StageParams, x=(annotation, default)).model_fields["x"]
        return _refuses(field, field.default)

    finite = "Input should be a finite number"
    assert refused(float, float("nan")) == finite and refused(float, Field(float("inf"), ge=0)) == finite
    assert refused(list[float], [1.0, float("-inf")]) == finite
    assert refused(float, True) == "expected a number, got true" and refused(int | str, True) == (
        "expected a number or text, got true")
    assert refused(bool, True) == refused(float | None, None) == refused(float, 2.5) == ""


def test_stages_lists_a_default_and_its_kind_as_a_config_writes_them():
    """An enum's members went unlisted (``Colour``), a tuple's default was ``(1, 2)``, which a
    config copying it had refused, and a sink declaring ``writes`` was listed as writing what
    no stage may take from it (s68a 5)."""
    import enum
    import json
    import warnings
    from datetime import timedelta

    import yaml
    from pydantic import ConfigDict, create_model

    from fer_pipe.cli import _kind, _reads_writes, _shown
    from fer_pipe.messages import EMOTIONS
    from fer_pipe.stage import Sink, StageParams

    class Colour(enum.Enum):
        RED = "red"
        GREEN = "green"

    Params = create_model("Params", __base__=StageParams, colour=(Colour, Colour.RED), pair=(tuple[int, int], (1, 2)),
                          names=(dict[str, Path], {"a": Path("x.txt")}), fallback=(Colour | None, None),
                          wait=(timedelta, timedelta(seconds=5)), odd=(tuple[str, ...], ("\u202eevil", "a\x9bb")))
    shown = {name: (_shown(field, field.default), _kind(field)) for name, field in Params.model_fields.items()}
    # a duration was its repr, and a text in a list held a terminal's control characters raw (s68d 5)
    assert shown == {"colour": ("'red'", "one of 'red', 'green'"), "pair": ("[1, 2]", "a list"),
                     "names": ('{"a": "x.txt"}', "a mapping"), "fallback": ("null", "one of 'red', 'green' or null"),
                     "wait": ("'PT5S'", "timedelta"), "odd": ('["\\u202eevil", "a\\x9bb"]', "a list")}

    class Thing:
        """A type pydantic takes only with arbitrary_types_allowed, and cannot dump alone."""

    class Loose(StageParams):
        model_config = ConfigDict(**StageParams.model_config, arbitrary_types_allowed=True)
        out: Thing | Path = Path("out.csv")
        pair: Thing | tuple[int, int] = (1, 2)
        size: tuple[int, int] = [64, 64]
        wait: Thing | timedelta = timedelta(seconds=5)  # was "datetime.timedelta(seconds=5)" (s68g 3)
        keep: frozenset[str] = frozenset(EMOTIONS)  # in the hash seed's order (s68g 2), nested too (s68h 4)
        groups: dict[str, frozenset[str]] = {"negative": frozenset(EMOTIONS) - {"happy", "neutral", "surprise"}}
        magic: bytes = b"\xff\xd8"  # not UTF-8: a traceback from the fallback (s68h 1)

    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        # an arbitrary type's default was its repr again: PosixPath('out.csv'), (1, 2) (s68f 2)
        assert {name: _shown(field, field.default) for name, field in Loose.model_fields.items()} == {
            "out": "'out.csv'", "pair": "[1, 2]", "size": "[64, 64]", "wait": "'PT5S'",
            "keep": json.dumps(sorted(EMOTIONS)), "groups": '{"negative": ["angry", "disgust", "fear", "sad"]}',
            "magic": "b'\\xff\\xd8'"}
        thing = _shown(Loose.model_fields["out"], Thing())
        assert thing.startswith("<") and "Thing object" in thing  # its repr, not a text a config could copy
    assert not warned  # a valid [64, 64] for a tuple printed three lines of pydantic's warnings (s68f 1)
    assert yaml.safe_load(shown["pair"][0]) == [1, 2] and yaml.safe_load(shown["names"][0]) == {"a": "x.txt"}

    class Writer(Sink):
        writes = "faces"

        def consume(self, packet):
            pass

    assert _reads_writes(Writer) == "reads -, writes -"
