"""Config validation: every shipped config passes, every broken one fails with one exact line and exit 2."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, fer_pipe
from fer_pipe.cli import main
from fer_pipe.config import load_graph, set_item
from fer_pipe.stage import Source, StageParams
from fer_pipe.config_file import shipped_configs
from fer_pipe.errors import ConfigError

GOOD = """\
stages:
  source:
    type: video
    params:
      path: clip.mp4
  detector:
    type: haar
    inputs: [source]
  classifier:
    type: classifier
    inputs: [detector]
  csv:
    type: csv
    inputs: [classifier]
    params:
      path: out.csv
"""

BROKEN = {
    "unknown_type": (GOOD.replace("type: haar", "type: hair"),
                     "{f}:7: stage 'detector': unknown stage type 'hair' (did you mean 'haar'?) (known: "),
    "unknown_param": (GOOD.replace("      path: clip.mp4", "      path: clip.mp4\n      speed: 2"),
                      "{f}:6: stage 'source' (video): params.speed: unknown parameter (it takes source_id, path, "
                      "start, max_frames, realtime, loop, fps)"),
    "misspelt_required_param": (GOOD.replace("      path: out.csv", "      pth: out.csv"),  # not "path is missing"
                                "{f}:16: stage 'csv' (csv): params.pth: unknown parameter (did you mean 'path'?)"),
    "missing_param": (GOOD.replace("    params:\n      path: out.csv\n", ""),
                      "{f}:12: stage 'csv' (csv): params.path: required parameter is missing"),
    "mistyped_param": (GOOD.replace("    inputs: [source]", "    inputs: [source]\n    params: {min_neighbors: many}"),
                       "{f}:9: stage 'detector' (haar): params.min_neighbors: Input should be a valid "
                       "integer, unable to parse string as an integer"),
    "number_for_text": (GOOD.replace("path: clip.mp4", "path: clip.mp4\n      source_id: 101"),
                        "{f}:6: stage 'source' (video): params.source_id: Input should be a valid string (YAML "
                        "read the value as a number; put it in quotes to mean text)"),
    "line_break_in_id": (GOOD.replace("path: clip.mp4", "path: clip.mp4\n      source_id: \"cam\\nyard\""),
                         "{f}:6: stage 'source' (video): params.source_id: 'cam\\nyard' holds a line break or other "
                         "control character; give a printable id"),  # batch counted CSV rows as lines (s50f 8)
    # every row and sequence carries it, and a collector takes it from whoever reaches it (s58b 3)
    "long_id": (GOOD.replace("path: clip.mp4", f"path: clip.mp4\n      source_id: {'c' * 257}"),
                "{f}:6: stage 'source' (video): params.source_id: it is 257 characters, more than the 256 an id may "
                "have"),
    "long_name_for_id": (GOOD.replace("  source:", f"  {'s' * 257}:").replace("[source]", f"[{'s' * 257}]"),
                         f"{{f}}:4: stage {'s' * 257!r} (video): params.source_id: it is 257 characters, more than "
                         "the 256 an id may have: give it a shorter source_id"),
    "escape_in_output": (GOOD.replace("path: out.csv", 'path: "res\\new.csv"'),  # a Windows path: \n a line feed
                         "{f}:16: stage 'csv' (csv): params.path: the path holds a control character (\\n), which "
                         "no name fer-pipe makes may hold: a backslash in a double-quoted YAML string, or a Python "
                         "one, starts an escape"),  # exit 0, rows lost (s50c 1)
    "list_for_text": (GOOD.replace("path: clip.mp4", "path: [clip.mp4]"),  # --set source.path=- clip.mp4 too
                      "{f}:5: stage 'source' (video): params.path: Input should be a valid string (YAML read the "
                      "value as a list; put it in quotes to mean text)"),
    "null_for_text": (GOOD.replace("path: clip.mp4", "path: clip.mp4\n      source_id: null"),
                      "{f}:6: stage 'source' (video): params.source_id: Input should be a valid string (YAML read "
                      "the value as null (nothing); put it in quotes to mean text)"),
    "out_of_range": (GOOD.replace("    inputs: [source]", "    inputs: [source]\n    params: {scale_factor: 0.9}"),
                     "{f}:9: stage 'detector' (haar): params.scale_factor: Input should be greater than 1"),
    "not_a_number": (GOOD.replace("    inputs: [source]", "    inputs: [source]\n    params: {scale_factor: .nan}"),
                     "{f}:9: stage 'detector' (haar): params.scale_factor: Input should be a finite number"),
    "boolean_for_a_number": (GOOD.replace("    inputs: [source]", "    inputs: [source]\n    params: {min_size: true}"),
                             "{f}:9: stage 'detector' (haar): params.min_size: expected a number, got true"),
    "boolean_for_a_float": (GOOD.replace("    inputs: [source]",
                                         "    inputs: [source]\n    params: {scale_factor: true}"),  # s38c
                            "{f}:9: stage 'detector' (haar): params.scale_factor: expected a number, got true"),
    "boolean_for_a_camera": (GOOD.replace("    type: video\n    params:\n      path: clip.mp4",
                                          "    type: webcam\n    params:\n      device: true"),
                             "{f}:5: stage 'source' (webcam): params.device: expected a number or text, got true"),
    "missing_edge": (GOOD.replace("inputs: [detector]", "inputs: [detectr]"),
                     "{f}:11: stage 'classifier' (classifier): inputs: no stage named 'detectr' (did you mean "
                     "'detector'?)"),
    "cycle": (GOOD.replace("inputs: [source]", "inputs: [csv]"),
              "{f}:8: stage 'detector' (haar): inputs: 'csv' (csv) is a sink and writes nothing"),
    "source_with_inputs": (GOOD.replace("    type: video\n", "    type: video\n    inputs: [csv]\n"),
                           "{f}:4: stage 'source' (video): inputs: a source (video) reads nothing, "
                           "but inputs lists csv"),
    "unfed_stage": (GOOD.replace("    inputs: [classifier]\n", ""),
                    "{f}:12: stage 'csv' (csv): inputs: nothing feeds this stage (add inputs: [<stage>])"),
    "kind_mismatch": (GOOD.replace("inputs: [classifier]", "inputs: [source]"),
                      "{f}:14: stage 'csv' (csv): inputs: 'source' (video) writes 'frame', but csv "
                      "reads 'faces'"),
    # a track put after the classifier was refused naming neither why nor where it goes (s65a 7)
    "track_after_classifier": (GOOD.replace("inputs: [classifier]", "inputs: [smooth]")
                               + "  track:\n    type: track\n    inputs: [classifier]\n"
                               + "  smooth:\n    type: smooth\n    inputs: [track]\n",
                               "{f}:22: stage 'smooth' (smooth): inputs: 'track' (track) writes 'faces', but smooth "
                               "reads 'expressions' (it is fed 'expressions' and passes on 'faces': put it before "
                               "'classifier' (classifier), which makes 'expressions')"),
    "bad_yaml": ("stages:\n  source:\n    type: video\n   params: [\n",
                 "{f}:4: invalid YAML: "),
    "duplicate_stage": (GOOD.replace("  csv:\n", "  detector:\n"),
                        "{f}:12: invalid YAML: duplicate key 'detector'"),
    "not_a_mapping": ("- just\n- a list\n",
                      "{f}: expected a mapping with a 'stages' key at the top, got list"),
    "empty_file": ("# nothing but a comment\n",
                   "{f}: expected a mapping with a 'stages' key at the top, got an empty file (or only comments)"),
    "empty_path": (GOOD.replace("path: clip.mp4", "path: ''"),
                   "{f}:5: stage 'source' (video): params.path: the path is empty"),
    "unknown_stage_key": (GOOD.replace("    type: classifier\n", "    type: classifier\n    input: [x]\n"),
                          "{f}:11: stage 'classifier': unknown key 'input' (did you mean 'inputs'?) (expected "
                          "inputs, on_error, params, type, workers)"),
    # near-misses a hand-written config has, each of which got the words a typo gets (s43b)
    "stage_key_under_params": (GOOD.replace("    inputs: [source]", "    inputs: [source]\n    params: {workers: 2}"),
                               "{f}:9: stage 'detector' (haar): params.workers: unknown parameter (workers is a key "
                               "of the stage, beside params, not one of its params)"),
    "param_as_stage_key": (GOOD.replace("    inputs: [source]", "    inputs: [source]\n    scale_factor: 1.1"),
                           "{f}:9: stage 'detector': unknown key 'scale_factor' (a parameter of haar: put it under "
                           "params)"),
    "module_for_type": (GOOD.replace("    type: csv\n", "    type: csv_sink\n"),
                        "{f}:13: stage 'csv': unknown stage type 'csv_sink' (did you mean 'csv'?) (known: "),
    # numbers YAML 1.1 (PyYAML's) reads otherwise than 1.2: max_frames: 010 ran 8 frames (s43b)
    "octal_in_yaml_1_1": (GOOD.replace("path: clip.mp4", "path: clip.mp4\n      max_frames: 010"),
                          "{f}:6: 010 is octal in YAML 1.1, which fer-pipe reads: 8; write 8, or 10 if that is what "
                          "was meant, or quote it for text (a camera id of 0123)"),
    "base_60_float_in_yaml_1_1": (GOOD.replace("    inputs: [source]", "    inputs: [source]\n    params: {scale_factor: 0:01.5}"),
                                  "{f}:9: 0:01.5 is a number in base 60 in YAML 1.1, which fer-pipe reads: 1.5; write "
                                  "1.5, or quote it for text"),  # time_constant_s: 1:30.0 was 90 s (s65a 3)
    # said as read, not rounded to 5400.12 (s65d 3)
    "base_60_float_said_whole": (GOOD.replace("    inputs: [source]", "    inputs: [source]\n    params: {scale_factor: 1:30:00.123456}"),
                                 "{f}:9: 1:30:00.123456 is a number in base 60 in YAML 1.1, which fer-pipe reads: "
                                 "5400.123456; write 5400.123456, or quote it for text"),
    "exponent_in_yaml_1_1": (GOOD.replace("    inputs: [source]", "    inputs: [source]\n    params: {min_size: 1e2}"),
                             "{f}:9: stage 'detector' (haar): params.min_size: Input should be a valid integer, unable "
                             "to parse string as an integer (YAML 1.1, which fer-pipe reads, takes 1e2 as text: write "
                             "the number out)"),
    "capitals_for_type": (GOOD.replace("type: haar", "type: Haar"),
                          "{f}:7: stage 'detector': unknown stage type 'Haar' (did you mean 'haar'?) (known: "),
    "bad_queue_size": ("queue_size: 0\n" + GOOD,
                       "{f}:1: queue_size: expected an integer from 1 to 1024, got 0"),
    "bad_on_error": (GOOD.replace("    type: csv\n", "    type: csv\n    on_error: ignore\n"),
                     "{f}:14: stage 'csv' (csv): on_error: expected 'stop' or 'skip', got 'ignore'"),
    "skip_on_a_sink": (GOOD.replace("    type: csv\n", "    type: csv\n    on_error: skip\n"),
                       "{f}:14: stage 'csv' (csv): on_error: skip is not for a sink: one that cannot write a "
                       "row (a full disk, a closed socket) stops the run rather than lose rows and end with exit 0"),
    "skip_on_a_source": (GOOD.replace("    type: video\n", "    type: video\n    on_error: skip\n"),
                         "{f}:4: stage 'source' (video): on_error: skip is not for a source: its frames come from one "
                         "generator, which cannot go on after it raised"),
    "bad_workers": (GOOD.replace("    type: haar\n", "    type: haar\n    workers: 0\n"),
                    "{f}:8: stage 'detector' (haar): workers: expected an integer from 1 to 64, got 0"),
    "duplicate_source_id": (GOOD.replace("  detector:\n    type: haar\n    inputs: [source]\n",
                                         "  cam2:\n    type: video\n    params: {path: clip2.mp4, source_id: source}\n"
                                         "  detector:\n    type: haar\n    inputs: [source, cam2]\n"),
                            "{f}:8: stage 'cam2' (video): params.source_id: 'source' is also the source id of "
                            "stage 'source'; give each source its own source_id"),
    "workers_of_a_sink": (GOOD.replace("    type: csv\n", "    type: csv\n    workers: 2\n"),
                          "{f}:14: stage 'csv' (csv): workers: csv is a sink, so it runs in one process only"),
    "workers_of_a_stateful_stage": (GOOD.replace("  csv:\n", "  track:\n    type: track\n    inputs: [detector]\n"
                                                 "    workers: 2\n  csv:\n"),
                                    "{f}:15: stage 'track' (track): workers: track keeps state from one packet to "
                                    "the next, so it runs in one process only"),
    "tab_indent": (GOOD.replace("  source:", "\tsource:"),
                   "{f}:2: invalid YAML: found character '\\t' that cannot start any token (a tab, where YAML takes "
                   "spaces only: to indent, and after a colon)"),
    "misspelt_top_level_key": (GOOD.replace("stages:", "stagez:"),
                               "{f}:1: unknown top-level key 'stagez' (did you mean 'stages'?) (expected description, "
                               "queue_size, stages, or x-NAME for anchors)"),
}


def test_shipped_configs_validate():
    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert len(configs) >= 2
    done = fer_pipe("validate", *map(str, configs))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(": ok (") == len(configs)


def test_the_wheel_ships_the_repositorys_configs_by_name_not_whatever_yaml_is_in_the_folder():
    """setup.cfg shipped configs/*.yaml: a camera config with its password left in the folder
    went into every wheel built there, and into the Docker image (s41b). They are listed by
    name; a config added to the repository must be added there too."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    listed = cfg["options.package_data"]["fer_pipe.configs"].split()
    tracked = subprocess.run(["git", "ls-files", "configs/*.yaml"], cwd=REPO, capture_output=True, text=True)
    if tracked.returncode:
        pytest.skip(f"the repository's own file list needs git and its .git folder; git said: {tracked.stderr.strip()}")
    assert sorted(listed) == sorted(Path(name).name for name in tracked.stdout.split())
    copied = re.search(r"^COPY (configs/.*?) /src/configs/$", (REPO / "deploy" / "Dockerfile").read_text(),
                       re.MULTILINE | re.DOTALL)
    assert copied, "the Dockerfile copies the configs by name"  # a whole configs/ went into a layer (s49a 3)
    assert sorted(copied.group(1).replace("\\\n", " ").split()) == sorted(
        f"configs/{name}" for name in ["__init__.py", *listed])


def test_top_level_x_keys_are_a_place_for_anchors_that_stages_take(tmp_path):
    """Docker Compose's habit: anchors kept under a top-level ``x-`` key, which no stage reads,
    were refused as an unknown key; an anchor had to be written on the first stage using it
    (s65a 6). An unset variable in such a block no stage takes is no error."""
    path = tmp_path / "anchors.yaml"
    path.write_text("x-detector: &det {min_size: 48, every_n: 2}\nx-unused: {password: \"${NO_SUCH_VAR_S65A}\"}\n"
                    + GOOD.replace("    inputs: [source]\n", "    inputs: [source]\n    params: {<<: *det, min_size: 40}\n"))
    graph = load_graph(path)
    assert (graph.stages["detector"].params.min_size, graph.stages["detector"].params.every_n) == (40, 2)
    assert list(graph.stages) == ["source", "detector", "classifier", "csv"]


def test_the_wheel_and_the_sdist_name_every_package_and_file_the_repository_tracks():
    """CI installs the checkout editable, which maps whole folders: a subpackage left out of
    setup.cfg's list, or a file of deploy/ or tools/ left out of MANIFEST.in, which names them (a
    whole folder took a secret key or a stray script lying there), passed CI and was missing from every wheel or
    sdist (s65b 4, 5)."""
    import configparser

    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if tracked.returncode:
        pytest.skip(f"the repository's own file list needs git and its .git folder; git said: {tracked.stderr.strip()}")
    files = tracked.stdout.split()
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    folders = dict(line.split(" = ") for line in cfg["options"]["package_dir"].strip().splitlines())
    package_of = {folder: name for name, folder in folders.items()}
    found = {(package_of[name.split("/")[0]] + "." + ".".join(name.split("/")[1:-1])).rstrip(".")
             for name in files if name.endswith("/__init__.py") and name.split("/")[0] in package_of}
    assert sorted(found) == sorted(cfg["options"]["packages"].split())
    manifest = (REPO / "MANIFEST.in").read_text()
    named = {word for line in manifest.splitlines() if line.startswith("include ") for word in line.split()[1:]}
    assert {name for name in files if name.startswith(("deploy/", "tools/"))} == named - {"LICENSE", "pytest.ini"}


def test_an_empty_or_nameless_config_path_is_one_line_and_validate_checks_the_rest(tmp_path):
    """``run ''`` (the shard unit's ``run ${FER_PIPE_CONFIG}`` with the variable unset) and
    ``run .`` were a ValueError traceback, exit 1, and validate checked no config after it (s41d)."""
    for given, line in [("", "the config's path is empty"), (".", ".: is a folder, not a config file")]:
        done = fer_pipe("run", given, cwd=tmp_path)
        assert (done.returncode, done.stderr) == (2, f"fer-pipe: {line}\n")
    done = fer_pipe("validate", "", str(REPO / "configs" / "demo.yaml"), cwd=tmp_path)
    assert done.returncode == 2 and done.stdout.startswith(f"{REPO / 'configs' / 'demo.yaml'}: ok"), done.stderr


def test_shipped_configs_are_found_by_name_from_any_folder(tmp_path):
    """The README's `fer-pipe run configs/webcam.yaml` also where there is no configs/ folder."""
    from fer_pipe.config_file import shipped_configs

    (tmp_path / "mine.yaml").write_text(GOOD)
    done = fer_pipe("validate", "webcam.yaml", "configs/video_to_csv.yaml", "episodes", "mine.yaml",
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [line.split(": ok")[0] for line in done.stdout.splitlines()] == [
        str(shipped_configs() / "webcam.yaml"), str(shipped_configs() / "video_to_csv.yaml"),
        str(shipped_configs() / "episodes.yaml"), "mine.yaml"]
    (tmp_path / "episodes").mkdir()  # a folder of results, no config: it hid the shipped one
    assert fer_pipe("validate", "episodes", cwd=tmp_path).stdout.startswith(f"{shipped_configs() / 'episodes.yaml'}: ok")
    (tmp_path / "webcam.yaml").write_text(GOOD)  # a file of that name here is the one meant
    assert fer_pipe("validate", "webcam.yaml", cwd=tmp_path).stdout.startswith("webcam.yaml: ok (4 stages")
    assert fer_pipe("validate", "webcam", cwd=tmp_path).stdout.startswith("webcam.yaml: ok (4 stages")  # bare too
    missing = fer_pipe("validate", "configs/webcams.yaml", "other/webcam.yaml", "mine.yaml", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr == ("fer-pipe: configs/webcams.yaml: no such config file (shipped ones, usable by "
                              "name: demo.yaml, episodes.yaml, rtsp.yaml, video_to_csv.yaml, "
                              "video_to_csv_fast.yaml, video_to_zmq.yaml, webcam.yaml)\n"
                              "fer-pipe: other/webcam.yaml: no such config file\n")
    assert missing.stdout.startswith("mine.yaml: ok (4 stages")  # every config is checked, not only up to the first bad one


def test_a_real_cycle_is_reported(tmp_path):
    text = GOOD.replace("    type: classifier\n    inputs: [detector]",
                        "    type: classifier\n    inputs: [detector, tracker]") + \
        "  tracker:\n    type: haar\n    inputs: [classifier]\n"
    path = tmp_path / "cycle.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_graph(path)
    assert "is a sink" not in str(err.value)
    assert "cycle" in str(err.value) and "classifier" in str(err.value) and "tracker" in str(err.value)


def test_a_source_id_may_hold_any_kind_of_space():
    """The line-break check refused an ideographic or no-break space, and the joiners of Persian
    and emoji, as "control characters" (s50g 2)."""
    for source_id in ("カメラ\u3000入口", "gate\u00a0A", "می\u200cخواهم", "cam 1"):
        graph = load_graph("video_to_csv", [set_item("source.source_id", source_id)])
        assert graph.stages["source"].params.source_id == source_id


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_config_gives_one_exact_line(case, tmp_path, capsys):
    text, expected = BROKEN[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    code = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fer-pipe: " + expected.format(f=path)), lines[0]


def test_a_stage_that_feeds_nothing_is_valid_but_warned_about(tmp_path):
    """A second camera left out of the detector's inputs was read and dropped without a word."""
    config = tmp_path / "two.yaml"
    config.write_text(GOOD.replace("  detector:\n", "  cam2:\n    type: video\n    params: {path: clip2.mp4}\n"
                                                    "  detector:\n"))
    done = fer_pipe("validate", str(config))
    assert done.returncode == 0 and done.stdout.startswith(f"{config}: ok")
    assert done.stderr == (f"fer-pipe: WARNING: {config}: stage 'cam2' (video) feeds no stage, so what it makes is "
                           "dropped (a sink left out, or a source missing from an inputs list?)\n")


def test_a_detector_skipping_frames_with_no_tracker_after_it_is_warned_about(capsys):
    """With every_n 3 and no track stage, two rows in three said "no face" for frames the
    detector never looked at, and validate said ok without a word."""
    assert main(["validate", "video_to_csv", "video_to_csv_fast", "--set", "detector.every_n=3"]) == 0
    assert capsys.readouterr().err == (
        f"fer-pipe: WARNING: {shipped_configs() / 'video_to_csv.yaml'}: stage 'detector' (haar) looks at one frame "
        "in 3 (every_n), and no track stage after it carries the faces over the others: those frames are "
        "reported as having no face\n")


def test_a_smoother_with_no_tracker_before_it_is_warned_about(tmp_path):
    """A smoother with no track stage before it smooths nothing, and an episodes sink with no
    smoother finds no episode: validate said ok, and a whole run went by before the smoother
    said so (a live one, until it stopped)."""
    config = tmp_path / "untracked.yaml"
    config.write_text(yaml.safe_dump({"stages": {
        "source": {"type": "video", "params": {"path": "a.mp4"}},
        "detector": {"type": "haar", "inputs": ["source"]},
        "classifier": {"type": "classifier", "inputs": ["detector"]},
        "smoother": {"type": "smooth", "inputs": ["classifier"]},
        "csv": {"type": "csv", "inputs": ["smoother"], "params": {"path": "o.csv"}},
        "episodes": {"type": "episodes", "inputs": ["classifier"], "params": {"path": "e.csv"}}}}))
    from fer_pipe.config import build_graph
    from fer_pipe.graph import warnings
    from fer_pipe.registry import registry
    from fer_pipe.stages.tracker import FaceTracker

    done = fer_pipe("validate", str(config), "episodes")
    assert done.returncode == 0
    assert done.stderr.splitlines() == [
        f"fer-pipe: WARNING: {config}: stage 'episodes' (episodes) ends an episode where a track's smoothed label "
        "changes, and no smooth stage before it settles one: it writes no episode",
        f"fer-pipe: WARNING: {config}: stage 'smoother' (smooth) smooths each face over its track, and no track "
        "stage before it gives faces a track id: smoothed_label and smoothed_confidence stay empty"]
    # a tracker of another name that says it stands in for track (here the built-in's subclass) counts
    registry().types["mytracker"] = type("MyTracker", (FaceTracker,), {})
    try:
        graph = build_graph({"stages": {
            "source": {"type": "video", "params": {"path": "a.mp4"}},
            "detector": {"type": "haar", "inputs": ["source"]},
            "tracker": {"type": "mytracker", "inputs": ["detector"]},
            "classifier": {"type": "classifier", "inputs": ["tracker"]},
            "smoother": {"type": "smooth", "inputs": ["classifier"]},
            "csv": {"type": "csv", "inputs": ["smoother"], "params": {"path": "o.csv"}}}}, {}, "<dict>")
        assert warnings(graph) == []
    finally:
        del registry().types["mytracker"]


def test_a_plugins_path_param_its_own_tracker_and_its_file_with_workers(tmp_path, monkeypatch):
    """Three plug-in cases the config check got wrong (s40a): a ``Path`` file param came back a
    ``str`` where the user wrote ``~/`` (the stage's ``with_suffix`` failed then); a tracker of
    its own (``provides``) after haar's every_n was warned of as none; a parallel stage that
    writes a file passed with workers: 2, and its workers locked each other out, the line naming
    "a second run", the last run's file emptied."""
    from pydantic import Field

    from fer_pipe.config import build_graph
    from fer_pipe.graph import warnings
    from fer_pipe.messages import FACES
    from fer_pipe.registry import registry
    from fer_pipe.stage import Stage, StageParams

    class LogParams(StageParams):
        log: Path = Field(Path("faces.log"), description="one line per face")

    class FaceLog(Stage):
        Params = LogParams
        reads = writes = FACES
        parallel = True
        output_paths = ("log",)

    class OwnTracker(Stage):
        reads = writes = FACES
        provides = ("track",)

    monkeypatch.setenv("HOME", str(tmp_path))
    stages = {"source": {"type": "video", "params": {"path": "a.mp4"}},
              "detector": {"type": "haar", "inputs": ["source"], "params": {"every_n": 3}},
              "tracker": {"type": "owntracker", "inputs": ["detector"]},
              "log": {"type": "facelog", "inputs": ["tracker"], "params": {"log": "~/faces.log"}},
              "classifier": {"type": "classifier", "inputs": ["log"]},
              "csv": {"type": "csv", "inputs": ["classifier"], "params": {"path": "o.csv"}}}
    registry().types.update(facelog=FaceLog, owntracker=OwnTracker)
    try:
        graph = build_graph({"stages": stages}, {}, "<dict>")
        assert graph.stages["log"].params.log == tmp_path / "faces.log"  # a Path, as declared
        assert warnings(graph) == []
        stages["log"]["workers"] = 2
        with pytest.raises(ConfigError, match=r"stage 'log' \(facelog\): workers: each of its 2 processes would "
                                              r"open what its log names, which one process holds; run it in one$"):
            build_graph({"stages": stages}, {}, "<dict>")
        # a plug-in's stage is not told it keeps state, which it may not: what to declare if not (s60c 5)
        stages["log"]["workers"], stages["tracker"]["workers"] = 1, 2
        with pytest.raises(ConfigError, match=r"stage 'tracker' \(owntracker\): workers: owntracker does not declare "
                                              r"parallel = True \(as a stage whose process keeps nothing from one "
                                              r"packet to the next does\), so it runs in one process only$"):
            build_graph({"stages": stages}, {}, "<dict>")
    finally:
        del registry().types["facelog"], registry().types["owntracker"]


def test_a_stage_whose_inputs_write_different_kinds_declares_them_all_and_is_checked():
    """A join of the classifier's expressions and a signal of a plug-in's own could only leave
    reads unset, which turned the check off: a source wired straight into it reached the CSV,
    every face written as none, exit 0 (s46d)."""
    from fer_pipe.config import build_graph
    from fer_pipe.messages import EXPRESSIONS
    from fer_pipe.registry import registry
    from fer_pipe.stage import Source, Stage

    class Signal(Source):
        writes = "signal"

    class Join(Stage):
        reads = (EXPRESSIONS, "signal")
        writes = EXPRESSIONS

    class Mood(Stage):
        reads = EXPRESSIONS
        writes = "mood"

    stages = {"source": {"type": "video", "params": {"path": "a.mp4"}},
              "detector": {"type": "haar", "inputs": ["source"]},
              "classifier": {"type": "classifier", "inputs": ["detector"]},
              "door": {"type": "signal"},
              "join": {"type": "join", "inputs": ["classifier", "door"]},
              "csv": {"type": "csv", "inputs": ["join"], "params": {"path": "o.csv"}}}
    registry().types.update(signal=Signal, join=Join, mood=Mood)
    try:
        build_graph({"stages": stages}, {}, "<dict>")
        stages["join"]["inputs"] = ["source", "door"]
        with pytest.raises(ConfigError, match=r"stage 'join' \(join\): inputs: 'source' \(video\) writes 'frame', but "
                                              r"join reads 'expressions' or 'signal'$"):
            build_graph({"stages": stages}, {}, "<dict>")
        # a converter of a kind of its own after the classifier: no advice to put it before (s65d 2)
        stages["join"]["inputs"] = ["classifier", "door"]
        stages["mood"], stages["csv"]["inputs"] = {"type": "mood", "inputs": ["classifier"]}, ["mood"]
        with pytest.raises(ConfigError, match=r"stage 'csv' \(csv\): inputs: 'mood' \(mood\) writes 'mood', but csv "
                                              r"reads 'faces'$"):
            build_graph({"stages": stages}, {}, "<dict>")
        del stages["mood"]
        # a track after the join: no advice to put it before the join, which could not read its faces (s65d 2)
        stages["join"]["inputs"] = ["classifier", "door"]
        stages["track"], stages["smooth"] = {"type": "track", "inputs": ["join"]}, {"type": "smooth", "inputs": ["track"]}
        stages["csv"]["inputs"] = ["smooth"]
        with pytest.raises(ConfigError, match=r"stage 'smooth' \(smooth\): inputs: 'track' \(track\) writes 'faces', "
                                              r"but smooth reads 'expressions'$"):
            build_graph({"stages": stages}, {}, "<dict>")
    finally:
        del registry().types["signal"], registry().types["join"], registry().types["mood"]


def test_a_stage_fed_one_sources_frames_by_two_paths_is_warned_of():
    """A filter put between the classifier and the CSV with the old edge kept validated without
    a word, and the CSV had every frame twice (s40a)."""
    from fer_pipe.config import build_graph
    from fer_pipe.graph import warnings

    stages = {"source": {"type": "video", "params": {"path": "a.mp4"}},
              "detector": {"type": "haar", "inputs": ["source"]},
              "track": {"type": "track", "inputs": ["detector"]},
              "classifier": {"type": "classifier", "inputs": ["track"]},
              "smooth": {"type": "smooth", "inputs": ["classifier"]},
              "csv": {"type": "csv", "inputs": ["smooth", "classifier"], "params": {"path": "o.csv"}}}
    graph = build_graph({"stages": stages}, {}, "<dict>")
    assert [(spec.name, line) for spec, line in warnings(graph)] == [
        ("csv", "gets source 'source''s frames by two paths (smooth, classifier): any frame both pass on comes "
                "twice (an old input left beside a stage put between?)")]
    stages["other"] = {"type": "video", "params": {"path": "b.mp4"}}
    stages["detector"]["inputs"], stages["csv"]["inputs"] = ["source", "other"], ["smooth"]  # two sources: each once
    assert warnings(build_graph({"stages": stages}, {}, "<dict>")) == []


def test_a_bad_set_in_several_configs_names_each_config():
    """The same line, once per config, did not say which config it came from."""
    done = fer_pipe("validate", "--set", "detector.scale_factor=5", "webcam", "rtsp")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"fer-pipe: {name}: --set detector.scale_factor=5: stage 'detector' (haar): params.scale_factor: Input "
        "should be less than or equal to 2" for name in ("webcam", "rtsp")]


def test_cli_exit_code_and_no_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BROKEN["unknown_param"][0])
    done = fer_pipe("validate", str(path))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == "fer-pipe: " + BROKEN["unknown_param"][1].format(f=path)


def test_a_config_that_is_not_utf8_is_named_at_its_line(tmp_path):
    """It was "cannot read config: 'utf-8' codec can't decode byte 0xe9 in position 346", an
    offset the user had to turn into a line (s43b)."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes(GOOD.replace("  detector:", "  # deux d\u00e9tecteurs\n  detector:").encode("latin-1"))
    with pytest.raises(ConfigError) as refused:
        load_graph(path)
    assert str(refused.value) == (f"{path}:6: not UTF-8 (byte 0xe9, perhaps saved as Latin-1 or Windows-1252); "
                                  "save the file as UTF-8")
    path.write_bytes(GOOD.encode("utf-16"))  # with its byte-order mark, as Notepad's "Unicode" writes it (s44e)
    with pytest.raises(ConfigError) as refused:
        load_graph(path)
    assert str(refused.value) == (f"{path}: UTF-16, not UTF-8 (as Notepad's \"Unicode\" and PowerShell's > write); "
                                  "save the file as UTF-8")
    for text in (GOOD, "# Видео → CSV\n" + GOOD):  # no byte-order mark; letters beyond Latin-1 first (s45f)
        for codec in ("utf-16-be", "utf-16-le"):
            path.write_bytes(text.encode(codec))
            with pytest.raises(ConfigError, match="UTF-16, not UTF-8"):
                load_graph(path)


def test_a_video_given_as_the_config_is_called_binary_not_utf16(clips):
    """fer-pipe run clip.mp4 was told the video was UTF-16 and to save it as UTF-8 (s45d)."""
    video = clips["single_face.mp4"]
    with pytest.raises(ConfigError) as refused:
        load_graph(video)
    assert str(refused.value) == (f"{video}: not a text file (a video or other binary file given as the config?); a "
                                  "config is a YAML graph such as video_to_csv, and a video goes in with --set "
                                  "source.path=VIDEO")


def test_overrides_reach_params_and_unknown_stage_is_named(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    graph = load_graph(path, ["source.path=other.mp4", "detector.min_neighbors=3"])
    assert graph.stages["source"].params.path == "other.mp4"
    assert graph.stages["detector"].params.min_neighbors == 3
    with pytest.raises(ConfigError, match=r"--set nope.path=x: .* has no stage named 'nope'$"):
        load_graph(path, ["nope.path=x"])
    with pytest.raises(ConfigError, match=r"--set detectr.scale_factor=2: .* has no stage named 'detectr' \(did you "
                                          r"mean 'detector'\?\)$"):
        load_graph(path, ["detectr.scale_factor=2"])
    for given, said in (("detector.inputs=source", "a stage's inputs is the config file's to give; --set gives its "
                                                   "params, on_error and workers"),
                        ("detector.params=x", "one param at a time: --set STAGE.PARAM=VALUE")):
        with pytest.raises(ConfigError) as refused:  # they were "params.inputs: unknown parameter" (s43b)
            load_graph(path, [given])
        assert str(refused.value) == f"--set {given}: {said}"
    with pytest.raises(ConfigError, match=r"params.min_neighbors: Input should be a valid integer"):
        load_graph(path, ["detector.min_neighbors=3.5"])
    assert load_graph(path, ["queue_size=3"]).queue_size == 3  # the one top-level key --set reaches
    with pytest.raises(ConfigError, match=r"^--set queue_size=0: queue_size: expected an integer from 1 to 1024"):
        load_graph(path, ["queue_size=0"])
    with pytest.raises(ConfigError, match=r"^--set stages=1: expected STAGE.PARAM=VALUE \(or queue_size=N\)$"):
        load_graph(path, ["stages=1"])
    path.write_text(GOOD.replace("    inputs: [source]", "    inputs: [source]\n    params:"))  # valid, and empty
    assert load_graph(path, ["detector.min_neighbors=3"]).stages["detector"].params.min_neighbors == 3
    # a file name with a line break, as a script's "$f" gives it: YAML folded it into a space (s41a)
    assert load_graph(path, ["source.path=new\nline.mp4"]).stages["source"].params.path == "new\nline.mp4"


def test_a_set_on_a_config_without_stages_or_on_an_empty_stage_leaves_the_config_to_say_its_fault(tmp_path):
    """An empty file with --set queue_size=4 was told "expected STAGE.PARAM=VALUE (or
    queue_size=N)", what the user had written; a stage with an empty body, that it had no
    stage of that name (s41d)."""
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match=r"^.*empty.yaml: expected a mapping with a 'stages' key at the top"):
        load_graph(empty, ["queue_size=4"])
    bare = tmp_path / "bare.yaml"
    bare.write_text(GOOD + "  more:\n")
    with pytest.raises(ConfigError, match=r"^.*bare.yaml:\d+: stage 'more': expected a mapping with 'type', got NoneType$"):
        load_graph(bare, ["more.path=x.csv"])


def test_a_file_param_starting_with_a_tilde_is_under_home(tmp_path, monkeypatch):
    """`--set csv.path=~/out.csv` reaches fer-pipe unexpanded (bash expands only a word's
    leading ~); it used to fail with 'folder ~ does not exist'."""
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    monkeypatch.setenv("HOME", str(tmp_path))
    graph = load_graph(path, ["source.path=~/clip.mp4", "csv.path=~/out.csv", "detector.min_neighbors=3"])
    assert graph.stages["source"].params.path == str(tmp_path / "clip.mp4")
    assert graph.stages["csv"].params.path == str(tmp_path / "out.csv")
    with pytest.raises(ConfigError, match=r"is the file stage 'source' \(video\) reads"):
        load_graph(path, [f"source.path={tmp_path / 'clip.mp4'}", "csv.path=~/clip.mp4"])


def test_missing_config_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    done = fer_pipe("validate", str(missing))
    assert done.returncode == 2
    assert done.stderr.strip() == f"fer-pipe: {missing}: no such config file"


def test_fan_out_graph_validates(tmp_path):
    path = tmp_path / "fan.yaml"
    path.write_text(GOOD + "  csv2:\n    type: csv\n    inputs: [classifier]\n    params: {path: b.csv}\n")
    graph = load_graph(path)
    assert sorted(graph.consumers("classifier")) == ["csv", "csv2"]


def test_python_tags_are_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("stages: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_graph(Path(path))


def test_a_comment_in_a_set_value_is_refused_and_set_item_keeps_any_path(tmp_path, monkeypatch):
    """``--set csv.path=run #2.csv`` wrote the rows to a file named ``run`` (YAML drops `` #2.csv``
    as a comment), and ``fer-pipe demo --out "take #2"`` failed on a --set the user never typed."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as raised:
        load_graph("video_to_csv", ["csv.path=run #2.csv"])
    assert str(raised.value) == ("--set csv.path=run #2.csv: YAML reads '#2.csv' as a comment and would drop it; "
                                 "quote the value to keep it: csv.path='run #2.csv'")
    with pytest.raises(ConfigError, match=r"^--set csv.extra=a: b # c: YAML reads '# c' as a comment"):
        load_graph("video_to_csv", ["csv.extra=a: b # c"])  # in a block mapping too
    for name in ("run #2.csv", "a: b.csv", "it's [x] {y}.csv", "#1.csv", "there é.csv", "&run1 out.csv",
                 "!important.csv", "! important.csv", "démo 😀/emotions.csv"):  # an emoji: a pair that YAML read as two halves
        assert load_graph("video_to_csv", [set_item("csv.path", name)]).stages["csv"].params.path == name
    for name in ("two\nlines.mp4", "tab\there é.mp4"):  # an input's name; an output's may not hold them
        assert load_graph("video_to_csv", [set_item("source.path", name)]).stages["source"].params.path == name


@pytest.mark.parametrize("value, said", [
    ("&run1 out.csv", "--set csv.path=&run1 out.csv: YAML reads '&run1' as an anchor and would drop it; quote the "
                      "value to keep it: csv.path='&run1 out.csv'"),
    ("!!str &run1 out.csv", "--set csv.path=!!str &run1 out.csv: YAML reads '&run1' as an anchor and would drop it; "
                            "quote the value to keep it: csv.path='!!str &run1 out.csv'"),
    ("! important.csv", "--set csv.path=! important.csv: YAML reads '!' as a tag and would drop it; quote the value "
                        "to keep it: csv.path='! important.csv'"),
    ("[" * 600 + "]" * 600, "--set csv.path: the value is nested too deeply")])
def test_a_set_value_yaml_would_change_or_cannot_read_is_one_line(tmp_path, monkeypatch, value, said):
    """An anchor was dropped without a word (the rows went to out.csv), a tag was refused in
    YAML's words alone, and a value nested 600 deep was a RecursionError traceback (s43b)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as raised:
        load_graph("video_to_csv", [f"csv.path={value}"])
    assert str(raised.value) == said


def test_chains_give_each_edge_once_and_a_stage_without_edges_alone():
    graph = load_graph({"stages": {
        "cam1": {"type": "video", "params": {"path": "a.mp4"}},
        "cam2": {"type": "video", "params": {"path": "b.mp4"}},
        "spare": {"type": "video", "params": {"path": "c.mp4"}},
        "detector": {"type": "haar", "inputs": ["cam1", "cam2"]},
        "classifier": {"type": "classifier", "inputs": ["detector"]},
        "csv": {"type": "csv", "inputs": ["classifier"], "params": {"path": "o.csv"}},
        "zmq": {"type": "zmq", "inputs": ["classifier"]}}})
    chains = graph.chains()
    edges = [pair for chain in chains for pair in zip(chain, chain[1:])]
    assert sorted(edges) == sorted([("cam1", "detector"), ("cam2", "detector"), ("detector", "classifier"),
                                    ("classifier", "csv"), ("classifier", "zmq")])
    assert chains == [["cam1", "detector"], ["cam2", "detector"], ["spare"], ["detector", "classifier", "csv"],
                      ["classifier", "zmq"]]  # a chain ends where sources meet, and a branch starts its own


def test_chains_say_that_both_sources_reach_both_branches_after_the_stage_where_they_meet():
    """``a -> d -> c1 -> o1; b -> d -> c2 -> o2`` read as two pipelines, a's frames to o1 alone
    and b's to o2 alone, where both reach both (s42c)."""
    graph = load_graph({"stages": {
        "a": {"type": "video", "params": {"path": "a.mp4"}},
        "b": {"type": "video", "params": {"path": "b.mp4"}},
        "d": {"type": "haar", "inputs": ["a", "b"]},
        "c1": {"type": "classifier", "inputs": ["d"]},
        "c2": {"type": "classifier", "inputs": ["d"]},
        "o1": {"type": "csv", "inputs": ["c1"], "params": {"path": "o1.csv"}},
        "o2": {"type": "csv", "inputs": ["c2"], "params": {"path": "o2.csv"}}}})
    assert graph.chains() == [["a", "d"], ["b", "d"], ["d", "c1", "o1"], ["d", "c2", "o2"]]


def test_a_plugins_graph_warnings_that_fails_or_returns_text_is_said_in_one_line_each():
    """A hook that raised put every validate and run in a traceback; one that returned a
    string printed a warning per character."""
    from fer_pipe.graph import Graph, StageSpec, warnings
    from fer_pipe.stage import Sink, Source, StageParams

    class Cam(Source):
        @classmethod
        def graph_warnings(cls, params, after):
            raise KeyError("oops")

    class Out(Sink):
        @classmethod
        def graph_warnings(cls, params, after):
            return "one warning"

    class Forgot(Sink):
        @classmethod
        def graph_warnings(cls, params, after):
            pass  # a return forgotten

    params = StageParams()
    graph = Graph({"cam": StageSpec("cam", "cam", Cam, params), "out": StageSpec("out", "out", Out, params, ["cam"]),
                   "forgot": StageSpec("forgot", "forgot", Forgot, params, ["cam"])})
    assert sorted((spec.name, message) for spec, message in warnings(graph)) == [
        ("cam", "could not check its place in the graph: KeyError: 'oops'"),
        ("forgot", "could not check its place in the graph: TypeError: 'NoneType' object is not iterable"),
        ("out", "one warning")]


def test_a_plugins_sys_exit_in_a_class_hook_is_said_as_its_failure_naming_it():
    """``except Exception`` let a SystemExit by: a validator's ``sys.exit("bye")`` ended validate
    and run with the bare text, exit 1, a ``graph_warnings``'s ``sys.exit(5)`` with code 5 and no
    word, naming neither the stage nor the field (s68a 1)."""
    from typing import Annotated

    import pydantic
    from pydantic import field_validator

    from fer_pipe.config import ParamsProblem, _closing_s, checked_params
    from fer_pipe.graph import Graph, StageSpec, check_paths, check_source_ids, warnings
    from fer_pipe.lifecycle import open_stage
    from fer_pipe.registry import NO_PLAIN_DEFAULT, _refuses, plain_default
    from fer_pipe.stage import Sink, StageFailure

    class QuitterParams(StageParams):
        path: str = "in.txt"
        level: int = 1

        @field_validator("level")
        @classmethod
        def _level(cls, value: int) -> int:
            if value == 4:
                sys.exit("bye")
            if value == 5:
                sys.exit()
            return value

    class Quitter(Source):
        Params = QuitterParams
        input_paths = ("path",)

        @classmethod
        def graph_warnings(cls, params, after):
            sys.exit(5)

        @classmethod
        def closing_s(cls, params):
            sys.exit("closing bye")

        @classmethod
        def read_path(cls, param, value):
            sys.exit(6)

        @classmethod
        def source_id_of(cls, name, params):
            sys.exit(7)

    class Out(Sink):
        pass

    with pytest.raises(ParamsProblem) as problem:
        checked_params(Quitter, {"level": 4})
    assert (problem.value.loc, problem.value.reason) == ((), "the stage's own check failed: SystemExit: bye")
    with pytest.raises(ParamsProblem) as problem:
        checked_params(Quitter, {"level": 5})
    assert problem.value.reason == "the stage's own check failed: SystemExit"  # not "SystemExit: " (s68d 8)
    with pytest.raises(ConfigError, match="^c.yaml:3: stage 'cam': closing_s failed: SystemExit: closing bye$"):
        _closing_s(Quitter, QuitterParams(), "c.yaml:3", "stage 'cam'")
    graph = Graph({"cam": StageSpec("cam", "quitter", Quitter, QuitterParams()),
                   "out": StageSpec("out", "out", Out, StageParams(), ["cam"])})
    assert [(spec.name, line) for spec, line in warnings(graph)] == [
        ("cam", "could not check its place in the graph: SystemExit: 5")]
    assert [(spec.name, param, line) for spec, param, line in check_paths(graph)] == [
        ("cam", "path", "the stage's read_path failed on in.txt: SystemExit: 6")]
    assert [(spec.name, line) for spec, line in check_source_ids(graph)] == [
        ("cam", "the stage's source_id_of failed: SystemExit: 7")]

    Quitter.source_id_of = classmethod(lambda cls, name, params: 7)
    assert [(spec.name, line) for spec, line in check_source_ids(graph)] == [
        ("cam", "the stage's source_id_of gave 7, not a text")]

    class FactoryParams(StageParams):
        level: int = pydantic.Field(default_factory=lambda: sys.exit(8))

    assert plain_default(FactoryParams.model_fields["level"]) is NO_PLAIN_DEFAULT
    # a default's own validator, run by the load's check, ended `fer-pipe stages` with its code (s68d 2)
    exiting = pydantic.create_model("Params", __base__=StageParams, level=(
        Annotated[int, pydantic.AfterValidator(lambda value: sys.exit(3))], 99)).model_fields["level"]
    assert _refuses(exiting, 99) == ""

    class Opener(Sink):
        def open(self):
            sys.exit("no camera")

    with pytest.raises(StageFailure, match="^while opening: SystemExit: no camera$"):
        open_stage(Opener("out", StageParams()))


def test_a_stage_name_written_with_other_unicode_characters_is_said_to_look_the_same():
    """'détecteur' with é as e and a combining accent, beside a stage named with é: the line
    showed two names no one could tell apart (s42c)."""
    composed, decomposed = "d\u00e9tecteur", "de\u0301tecteur"
    config = {"stages": {"source": {"type": "video", "params": {"path": "a.mp4"}},
                         composed: {"type": "haar", "inputs": ["source"]},
                         "classifier": {"type": "classifier", "inputs": [decomposed]}}}
    with pytest.raises(ConfigError) as raised:
        load_graph(config)
    assert str(raised.value).endswith(
        f"inputs: no stage named {decomposed!r} (stage {composed!r} looks the same, written with other Unicode "
        "characters: 'de\\u0301tecteur' here, 'd\\xe9tecteur' there)")
    with pytest.raises(ConfigError, match="looks the same"):
        load_graph({"stages": {**config["stages"], "classifier": {"type": "classifier", "inputs": [composed]}}},
                   [f"{decomposed}.min_size=30"])
    assert load_graph({"stages": {**config["stages"], "classifier": {"type": "classifier", "inputs": [composed]}}})
    # a Cyrillic o, which no normal form folds, was "(did you mean 'source'?)" beside a name that looked the same
    lookalike = {**config["stages"], composed: {"type": "haar", "inputs": ["s\u043eurce"]}}
    with pytest.raises(ConfigError) as raised:
        load_graph({"stages": lookalike})
    assert str(raised.value).endswith("inputs: no stage named 'sоurce' (did you mean 'source'? written out, "
                                      "'s\\u043eurce' here and 'source' there)")
    with pytest.raises(ConfigError) as raised:  # a param so written (s68d 7)
        load_graph(config, ["source.m\u0430x_frames=3"])
    assert str(raised.value).endswith("params.mаx_frames: unknown parameter (did you mean 'max_frames'? written out, "
                                      "'m\\u0430x_frames' here and 'max_frames' there)")


def test_two_source_ids_written_with_other_unicode_characters_are_refused():
    """Stages named 'café' with é and with e and a combining accent (a macOS file name given as a
    source_id) ran as two sources whose CSV rows no one could tell apart (s65a 4)."""
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    config = {"stages": {composed: {"type": "video", "params": {"path": "a.mp4"}},
                         decomposed: {"type": "video", "params": {"path": "b.mp4"}},
                         "detector": {"type": "haar", "inputs": [composed, decomposed]}}}
    with pytest.raises(ConfigError) as raised:
        load_graph(config)
    assert str(raised.value).endswith(
        f"stage {decomposed!r} (video): params.source_id: {decomposed!r} looks the same as the source id of stage "
        f"{composed!r}, written with other Unicode characters ('cafe\\u0301' here, 'caf\\xe9' there); give each "
        "source an id that tells it apart")
    assert load_graph(config, [f"{decomposed}.source_id=cafe2"])


def test_what_a_stage_wants_before_or_after_it_is_checked_on_every_way_through_it():
    """Checked against the whole graph, a tracker on one branch after haar's every_n hid that the
    other branch's CSV said 'no face' on 2 frames in 3, and a smoother fed by two cameras, one
    with a tracker, never smoothed the other's faces (s42c)."""
    from fer_pipe.config import build_graph
    from fer_pipe.graph import warnings

    def skipping(untracked_input: str) -> list[tuple[str, str]]:
        return [(spec.name, line[:24]) for spec, line in warnings(build_graph({"stages": {
            "source": {"type": "video", "params": {"path": "a.mp4"}},
            "detector": {"type": "haar", "inputs": ["source"], "params": {"every_n": 3}},
            "tracker": {"type": "track", "inputs": ["detector"]},
            "c1": {"type": "classifier", "inputs": ["tracker"]},
            "c2": {"type": "classifier", "inputs": [untracked_input]},
            "tracked": {"type": "csv", "inputs": ["c1"], "params": {"path": "t.csv"}},
            "untracked": {"type": "csv", "inputs": ["c2"], "params": {"path": "u.csv"}}}},
            {}, "<dict>"))]

    assert skipping("detector") == [("detector", "looks at one frame in 3 ")]
    assert skipping("tracker") == []
    two_cameras = build_graph({"stages": {
        "a": {"type": "video", "params": {"path": "a.mp4"}},
        "b": {"type": "video", "params": {"path": "b.mp4"}},
        "da": {"type": "haar", "inputs": ["a"]},
        "db": {"type": "haar", "inputs": ["b"]},
        "tracker": {"type": "track", "inputs": ["da"]},
        "classifier": {"type": "classifier", "inputs": ["tracker", "db"]},
        "smoother": {"type": "smooth", "inputs": ["classifier"]},
        "csv": {"type": "csv", "inputs": ["smoother"], "params": {"path": "o.csv"}}}}, {}, "<dict>")
    assert [spec.name for spec, _ in warnings(two_cameras)] == ["smoother"]
    # said of the smoother as a whole, it was untrue of camera a's faces, which it smoothed (s65a 8)
    assert warnings(two_cameras)[0][1].endswith("stay empty (on one of the ways into it, not on every one)")


def test_a_set_on_a_stage_written_as_an_alias_changes_that_stage_alone(tmp_path):
    """``detector2: *det`` shares the anchored stage's mapping, and --set changed it in place:
    the real detector ran with detector2's min_size and workers though no --set named it (s43b)."""
    config = tmp_path / "alias.yaml"
    config.write_text("stages:\n"
                      "  source: {type: video, params: {path: clip.mp4}}\n"
                      "  detector: &det {type: haar, inputs: [source], params: {min_size: 40}}\n"
                      "  detector2: *det\n"
                      "  a: {type: push, inputs: [detector]}\n"
                      "  b: {type: push, inputs: [detector2]}\n")
    graph = load_graph(config, ["detector2.min_size=100", "detector2.workers=2"])
    assert (graph.stages["detector"].params.min_size, graph.stages["detector"].workers) == (40, 1)
    assert (graph.stages["detector2"].params.min_size, graph.stages["detector2"].workers) == (100, 2)


@pytest.mark.parametrize("text, said", [
    ("stages:\n  source: {type: video, params: {path: \"clip.mp4}}\n  csv: {type: csv}\n",
     ":2: invalid YAML: while scanning a quoted scalar, found unexpected end of stream"),
    ("stages: {}\n---\nstages: {}\n",
     ":2: invalid YAML: expected a single document in the stream at line 1, but found another document"),
    ("stages:\n  a: {type: haar\n  b: 1\n",
     ":3: invalid YAML: while parsing a flow mapping at line 2, expected ',' or '}', but got ':'")])
def test_invalid_yaml_says_what_was_being_read_and_where_it_began(tmp_path, text, said):
    """A quote left open was put at a line past the file's end with no word of the quote, and a
    second document was "but found another document", a fragment (s43b)."""
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_graph(config)
    assert str(caught.value) == f"{config}{said}"


def test_a_merge_list_gives_the_earlier_mappings_values_as_yaml_says(tmp_path):
    """PyYAML 6.0.4 let the later mapping of ``<<: [a, b]`` win for keys of two characters or
    more (yaml/pyyaml#953): the stage ran with the other value, and validate said ok (s43b)."""
    config = tmp_path / "merge.yaml"
    config.write_text("""stages:
  source: {type: video, params: {path: clip.mp4}}
  wide: {type: haar, inputs: [source], params: &wide {min_size: 64, scale_factor: 1.2}}
  close: {type: haar, inputs: [source], params: {<<: [{min_size: 120}, *wide]}}
  out: {type: push, inputs: [wide, close]}
""")
    params = load_graph(config).stages["close"].params
    assert (params.min_size, params.scale_factor) == (120, 1.2)


def test_an_error_in_a_merging_stages_own_value_names_its_own_line(tmp_path):
    """The merged copy of the anchored stage's params came first, and the line named was that
    stage's valid value (s43b)."""
    config = tmp_path / "merge.yaml"
    config.write_text("""stages:
  source: {type: video, params: {path: clip.mp4}}
  detector: &det
    type: haar
    inputs: [source]
    params:
      scale_factor: 1.1
  detector2:
    <<: *det
    params:
      scale_factor: 7
  out: {type: push, inputs: [detector, detector2]}
""")
    with pytest.raises(ConfigError, match=r"merge.yaml:11: stage 'detector2' \(haar\): params.scale_factor: "):
        load_graph(config)


def test_anchors_merged_in_a_chain_load_as_written_once(tmp_path):
    """Each link merged the one before it twice: PyYAML before 6.0.4 kept every copy, so the
    thirtieth held a billion and validate never ended (s43b)."""
    chain = "\n".join(["stages:", "  source: {type: video, params: {path: clip.mp4}}", "  out:",
                       "    a0: &a0 {k: 1}", *(f"    a{i}: &a{i} {{<<: [*a{i - 1}, *a{i - 1}]}}" for i in range(1, 30))])
    config = tmp_path / "chain.yaml"
    config.write_text(chain + "\n")
    done = subprocess.run([sys.executable, "-m", "fer_pipe.cli", "validate", str(config)], capture_output=True,
                          text=True, timeout=120)
    assert "unknown key 'a0'" in done.stderr, done.stderr


def test_a_long_chain_of_stages_is_checked_without_recursion(tmp_path):
    """Each stage's ways to the end were found by recursion: 500 stages in a chain ended in a
    RecursionError traceback, exit 1, from validate and run (s43b)."""
    stages = {"source": {"type": "video", "params": {"path": "clip.mp4"}},
              "detector": {"type": "haar", "inputs": ["source"]}}
    before = "detector"
    for i in range(1200):
        stages[f"c{i}"] = {"type": "classifier", "inputs": [before]}
        before = f"c{i}"
    stages["csv"] = {"type": "csv", "inputs": [before], "params": {"path": str(tmp_path / "o.csv")}}
    config = tmp_path / "chain.yaml"
    config.write_text(yaml.safe_dump({"stages": stages}))
    done = subprocess.run([sys.executable, "-m", "fer_pipe.cli", "validate", str(config)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith(f"{config}: ok (1203 stages: "), done.stderr[-500:]


@pytest.mark.parametrize("name, said", [
    ("on", "stage name True must be a word of letters, digits, '_' (YAML reads on, off, yes"),
    ('"on"', "stage 'classifier' (classifier): inputs: expected a list of stage names (YAML reads on, off, yes")])
def test_a_stage_name_yaml_reads_as_true_or_false_says_so(tmp_path, name, said):
    """'stage name True', a name the user never wrote, and 'expected a list of stage names' for
    [on] gave no hint that YAML had read the word as a boolean (s43b)."""
    config = tmp_path / "on.yaml"
    config.write_text(f"""stages:
  source: {{type: video, params: {{path: clip.mp4}}}}
  {name}: {{type: haar, inputs: [source]}}
  classifier: {{type: classifier, inputs: [on]}}
  csv: {{type: csv, inputs: [classifier], params: {{path: a.csv}}}}
""")
    with pytest.raises(ConfigError, match=re.escape(said)):
        load_graph(config)


@pytest.mark.parametrize("merge, said", [
    ("<<: {}", None), ("<<: []", None), ("<<: *empty", None),
    ("<<: *det\n    <<: {min_size: 120}", "duplicate key '<<' (merge several mappings with <<: [*a, *b])")])
def test_an_empty_merge_loads_and_a_merge_key_given_twice_is_refused(tmp_path, merge, said):
    """The loader's own merge left an empty merge's << in place, which had no constructor; and
    << given twice let the later win, the other way round from a list, validate saying ok (s43e)."""
    config = tmp_path / "merge.yaml"
    config.write_text(f"""stages:
  source: {{type: video, params: {{path: clip.mp4}}}}
  plain: {{type: haar, inputs: [source], params: &empty {{}}}}
  detector: {{type: haar, inputs: [source], params: &det {{min_size: 64}}}}
  close:
    type: haar
    inputs: [source]
    params:
    {merge}
  out: {{type: push, inputs: [plain, detector, close]}}
""")
    if said is None:
        graph = load_graph(config)
        assert graph.stages["close"].params == graph.stages["plain"].params  # haar's defaults: nothing merged
    else:
        with pytest.raises(ConfigError, match=re.escape(said)):
            load_graph(config)


class OwnIdParams(StageParams):
    """A plug-in source's params with a source_id of their own, not SourceParams'."""

    source_id: str = ""


class OwnIdSource(Source):
    Params = OwnIdParams

    def frames(self):
        return iter(())


def test_a_plugin_sources_own_source_id_param_is_held_to_the_rules_of_an_id(monkeypatch):
    """Only SourceParams' field was checked: a plug-in's own source_id param holding a line
    break passed validate, and a collector then skipped every event of it (s58c 11)."""
    from fer_pipe.config import build_graph
    from fer_pipe.errors import ConfigError
    from fer_pipe.registry import registry

    monkeypatch.setitem(registry().types, "ownid", OwnIdSource)
    stages = {"source": {"type": "ownid", "params": {"source_id": "cam\n1"}},
              "detector": {"type": "haar", "inputs": ["source"]},
              "classifier": {"type": "classifier", "inputs": ["detector"]},
              "csv": {"type": "csv", "inputs": ["classifier"], "params": {"path": "o.csv"}}}
    with pytest.raises(ConfigError) as refused:
        build_graph({"stages": stages}, {}, "<dict>")
    assert str(refused.value) == ("<dict>: stage 'source' (ownid): params.source_id: 'cam\\n1' holds a line break or "
                                  "other control character; give a printable id")


def test_a_control_character_in_a_config_is_said_at_its_line(tmp_path):
    """PyYAML's reader refuses it before parsing, at a character's position in "<unicode
    string>": the line was not said, nor the file (s67a 7)."""
    config = tmp_path / "ctrl.yaml"
    config.write_text("stages:\n  source:\n    type: video\n    params: {path: a\x1bb.mp4}\n")
    with pytest.raises(ConfigError) as raised:
        load_graph(config)
    assert str(raised.value) == f"{config}:4: invalid YAML: it holds the character \\x1b, which YAML does not allow in a config"
    config.write_text("stages:\r  source:\r    type: video\r    params: {path: a\x1bb.mp4}\r", newline="")
    with pytest.raises(ConfigError, match=r":4: invalid YAML"):  # lone CRs break lines for YAML too (s67f 6)
        load_graph(config)
