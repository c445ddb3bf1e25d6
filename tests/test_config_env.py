"""``${NAME}`` in a config's values: the environment's value, read as the README says, and one
that stands for nothing is one line naming the file, the line and the key, exit 2."""
from __future__ import annotations

import csv
import os
import zlib

import pytest

from conftest import fer_pipe
from fer_pipe.config import load_graph
from fer_pipe.config_file import read_config
from fer_pipe.errors import ConfigError
from fer_pipe.shard import load_shard

CAMERAS = """\
stages:
  door: {type: rtsp, params: {url: "rtsp://viewer:${DOOR_PASSWORD}@192.0.2.10/stream"}}
  yard: {type: rtsp, params: {url: "rtsp://viewer:${YARD_PASSWORD}@192.0.2.11/stream"}}
  detector: {type: haar, inputs: [door, yard]}
  classifier: {type: classifier, inputs: [detector]}
  csv: {type: csv, inputs: [classifier], params: {path: out.csv}}
"""

CONFIG = """\
description: camera ${CAM_NAME:-unnamed}, not $${CAM_NAME}
stages:
  source:
    type: video
    params:
      path: ${CLIP}
      max_frames: &frames ${FRAMES}
      realtime: ${REALTIME}
  detector:
    type: haar
    inputs: [source]
    params:
      min_size: !!int "${MIN_SIZE:-40}"
  classifier: {type: classifier, inputs: [detector]}
  csv:
    type: csv
    inputs: [classifier]
    params:
      path: ${OUT_DIR}/run-${FRAMES}.csv
      extra: ["${FRAMES}"]
"""


@pytest.fixture
def env(monkeypatch, tmp_path):
    for name, value in {"CLIP": "clip.mp4", "FRAMES": "30", "REALTIME": "true", "MIN_SIZE": "",
                        "OUT_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CAM_NAME", raising=False)
    path = tmp_path / "cam.yaml"
    path.write_text(CONFIG)
    return path


def test_values_come_from_the_environment_typed_as_plain_yaml_only_when_alone_and_unquoted(env, tmp_path):
    data, _ = read_config(env)
    assert data["description"] == "camera unnamed, not ${CAM_NAME}"  # a default, and $${ kept as ${
    assert data["stages"]["source"]["params"] == {"path": "clip.mp4", "max_frames": 30, "realtime": True}
    assert data["stages"]["detector"]["params"] == {"min_size": 40}  # empty takes the default; the tag applies
    assert data["stages"]["csv"]["params"] == {"path": f"{tmp_path}/run-30.csv", "extra": ["30"]}
    graph = load_graph(env)
    assert graph.stages["source"].params.max_frames == 30
    assert graph.stages["detector"].params.min_size == 40


def test_keys_are_left_alone_and_an_alias_has_its_anchors_value(env):
    env.write_text("${KEY}: &a ${FRAMES}\nsame: [*a, *a]\n")
    assert read_config(env)[0] == {"${KEY}": 30, "same": [30, 30]}


def test_a_value_is_substituted_once_and_never_read_again(env, monkeypatch):
    monkeypatch.setenv("CLIP", "${FRAMES} $${x}.mp4")
    monkeypatch.setenv("REALTIME", "")
    data, _ = read_config(env)
    assert data["stages"]["source"]["params"]["path"] == "${FRAMES} $${x}.mp4"
    assert data["stages"]["source"]["params"]["realtime"] == ""  # empty is text, not YAML's null


@pytest.mark.parametrize("value, reason", [
    ("${CLIP}", "environment variable CLIP is not set (set it, or give a default: ${CLIP:-VALUE})"),
    ("${1CLIP}", "a ${ that is not ${NAME} or ${NAME:-default} (NAME: letters, digits and _; $${ for the text ${)"),
    ("clips/${CLIP", "'${' with no closing '}'"),
])
def test_a_name_that_stands_for_nothing_is_one_line_naming_file_line_and_key(env, monkeypatch, value, reason):
    monkeypatch.delenv("CLIP")
    env.write_text(CONFIG.replace("path: ${CLIP}", f"path: {value}"))
    done = fer_pipe("validate", str(env))
    assert done.returncode == 2
    assert done.stderr == f"fer-pipe: {env}:6: stages.source.params.path: {reason}\n"


def test_an_unset_value_is_refused_only_where_the_config_that_runs_still_has_it(env, monkeypatch, tmp_path):
    """A --set that replaces the value, or a --shard that leaves its camera to another host, needs
    no variable: refused in the file alone, the host of a shard needed every other host's camera
    passwords, or a ${NAME:-} that made a forgotten one an empty password."""
    monkeypatch.delenv("CLIP")
    assert load_graph(env, ["source.path=clip.mp4"]).stages["source"].params.path == "clip.mp4"
    with pytest.raises(ConfigError, match=r":6: stages.source.params.path: environment variable CLIP is not set"):
        load_graph(env, ["source.max_frames=3"])
    monkeypatch.setenv("CLIP", "clip.mp4")
    monkeypatch.delenv("MIN_SIZE")
    env.write_text(CONFIG.replace('min_size: !!int "${MIN_SIZE:-40}"', "&dp {min_size: '${MIN_SIZE}'}")
                   .replace("  classifier: {type: classifier, inputs: [detector]}",
                            "  d2: {type: haar, inputs: [source], params: *dp}\n"
                            "  classifier: {type: classifier, inputs: [detector, d2]}"))
    with pytest.raises(ConfigError) as refused:  # blamed on the anchor's stage, whose value --set had replaced (s43b)
        load_graph(env, ["detector.min_size=30"])
    assert str(refused.value).startswith(f"{env}:13: stages.d2.params.min_size: environment variable MIN_SIZE is "
                                         "not set"), refused.value
    cameras = tmp_path / "cameras.yaml"
    cameras.write_text(CAMERAS)
    monkeypatch.delenv("DOOR_PASSWORD", raising=False)
    monkeypatch.setenv("YARD_PASSWORD", "p%40ss")
    door = zlib.crc32(b"door") % 2
    assert zlib.crc32(b"yard") % 2 != door  # one camera in each shard
    with pytest.raises(ConfigError, match=r"^[^ ]*cameras.yaml:2: stages.door.params.url: environment variable "
                                          "DOOR_PASSWORD is not set"):
        load_shard(cameras, [], f"{door}/2")
    yard = load_shard(cameras, [], f"{1 - door}/2").graph
    assert yard.stages["yard"].params.url == "rtsp://viewer:p%40ss@192.0.2.11/stream"
    assert "door" not in yard.stages


def test_the_first_unset_in_the_file_is_said_under_the_path_written_and_the_others_named(env, monkeypatch):
    """The walk took the last node first, and a value shared through an alias under the alias's
    path. A host's operator mends its environment file once, not once per variable."""
    for name in ("FRAMES", "OUT_DIR", "REALTIME", "HOST_ID"):
        monkeypatch.delenv(name, raising=False)
    env.write_text(CONFIG.replace("max_frames: &frames ${FRAMES}", "max_frames: &frames ${FRAMES}\n      loop: *frames")
                   .replace("${OUT_DIR}/run-${FRAMES}", "${OUT_DIR}/run-${FRAMES}-${HOST_ID}"))
    with pytest.raises(ConfigError) as raised:
        load_graph(env)
    assert str(raised.value) == (f"{env}:7: stages.source.params.max_frames: environment variable FRAMES is not set "
                                 "(set it, or give a default: ${FRAMES:-VALUE}); also not set: REALTIME (line 9), "
                                 "OUT_DIR (line 20), HOST_ID (line 20)")


@pytest.mark.parametrize("value, reason", [
    ("!!int \"${UNSET_N}\"", "environment variable UNSET_N is not set"),  # not int()'s own ValueError
    ("${N:-${M}}", "the default of ${N:-...} holds a ${, which a default cannot"),  # gave the text "${M}"
    ("${LATIN1}", "environment variable LATIN1 is not UTF-8"),  # a CSV cell failed with it mid-run, exit 1
])
def test_a_tagged_unset_value_a_nested_default_and_a_value_not_utf8_are_said_as_such(env, monkeypatch, value, reason):
    monkeypatch.delenv("UNSET_N", raising=False)
    monkeypatch.setenv("LATIN1", os.fsdecode(b"caf\xe9"))
    env.write_text(CONFIG.replace("max_frames: &frames ${FRAMES}", f"max_frames: {value}"))
    with pytest.raises(ConfigError) as raised:
        load_graph(env)
    assert str(raised.value).startswith(f"{env}:7: stages.source.params.max_frames: {reason}")


def test_a_value_its_tag_cannot_hold_is_said_at_its_line(env, monkeypatch):
    """The README's ``!!int "${N}"``, N not a number: PyYAML's constructor raised a plain
    ValueError, said with the file alone; then as "invalid YAML", naming neither the key nor the
    variable (s43b). One written in the file is invalid YAML."""
    monkeypatch.setenv("FRAMES", "thirty")
    env.write_text(CONFIG.replace("max_frames: &frames ${FRAMES}", 'max_frames: !!int "${FRAMES}"'))
    done = fer_pipe("validate", str(env))
    assert (done.returncode, done.stderr) == (2, f"fer-pipe: {env}:7: stages.source.params.max_frames: !!int cannot "
                                                 "hold 'thirty', the value of ${FRAMES}\n")
    monkeypatch.setenv("FRAMES", "010")  # octal in YAML 1.1: said with the key and the variable (s44e)
    env.write_text(CONFIG)
    with pytest.raises(ConfigError) as refused:
        load_graph(env)
    assert str(refused.value).startswith(f"{env}:7: stages.source.params.max_frames: 010, the value of ${{FRAMES}}, "
                                         "is octal in YAML 1.1, which fer-pipe reads: 8; write 8, or 10 ")
    env.write_text(CONFIG.replace("max_frames: &frames ${FRAMES}", 'max_frames: !!int "thirty"'))
    done = fer_pipe("validate", str(env))
    assert (done.returncode, done.stderr) == (2, f"fer-pipe: {env}:7: invalid YAML: 'thirty' is not a valid !!int\n")


def test_values_may_not_make_the_config_over_its_limit(env, monkeypatch):
    monkeypatch.setenv("BIG", "x" * 100_000)
    env.write_text("description: [" + ", ".join(['"${BIG}"'] * 50) + "]\n")
    with pytest.raises(ConfigError, match=r":1: description.41: the environment's values make the config over 4 MiB$"):
        read_config(env)


def test_an_unquoted_name_in_a_flow_mapping_says_to_quote_it(env, monkeypatch):
    """YAML reads ``{`` there as the mapping's own; its message alone ("expected ',' or '}', but
    got '{'") points at a character the user did not think of as syntax."""
    monkeypatch.delenv("MODEL", raising=False)
    env.write_text(CONFIG.replace("  classifier: {type: classifier, inputs: [detector]}",
                                  "  classifier: {type: classifier, inputs: [detector], params: {model: ${MODEL}}}"))
    done = fer_pipe("validate", str(env))
    assert done.returncode == 2
    assert done.stderr == (f"fer-pipe: {env}:14: invalid YAML: while parsing a flow mapping, expected ',' or '}}', "
                           "but got '{' (in [...] or {...}, "
                           "YAML reads the '{' of an unquoted ${NAME} as its own: quote the value)\n")
    env.write_text(CONFIG.replace("  classifier: {type: classifier, inputs: [detector]}",
                                  "  classifier: {type: classifier, inputs: [detector], params: {model: '${MODEL}'}}"))
    assert "environment variable MODEL is not set" in fer_pipe("validate", str(env)).stderr


def test_a_set_value_is_taken_as_given(env):
    """The shell expands its own; a ${ that reached fer-pipe in a --set was quoted to keep it."""
    assert load_graph(env, ["source.path=${CLIP}"]).stages["source"].params.path == "${CLIP}"


def test_a_run_reads_and_writes_where_the_environment_says(short_clip, tmp_path):
    out = tmp_path / "rows"
    out.mkdir()
    config = tmp_path / "env.yaml"
    config.write_text(CONFIG)
    done = fer_pipe("run", str(config), env={"CLIP": str(short_clip), "FRAMES": "12", "REALTIME": "false",
                                             "OUT_DIR": str(out)})
    assert done.returncode == 0, done.stderr
    with open(out / "run-12.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted({int(row["frame"]) for row in rows}) == list(range(12))
    assert "12" in rows[0]  # the extra column named by the environment
