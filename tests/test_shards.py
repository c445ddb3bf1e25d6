"""Sharded live pipelines and the collector: real shard processes on looped real clips, PUSH/PULL
and PUB sockets on 127.0.0.1, SIGKILL of a whole shard and its restart."""
from __future__ import annotations

import contextlib
import csv
import itertools
import json
import os
import re
import resource
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
import zmq

from conftest import read_frames, write_video
from livetools import bound_again, busy_port, csv_rows, free_port, sighup_default, silencing_relay, wait_for

from fer_pipe.config import load_graph
from fer_pipe.errors import ConfigError, InputError
from fer_pipe.events import FRAME_COLUMNS
from fer_pipe.frames import SHM
from fer_pipe.shard import camera_id, select_shard, shard_of

SHARD0, SHARD1 = ["yard", "gate"], ["lobby", "door"]  # crc32(id) % 2 puts them there


def push_run_config(clip: Path, port: int, path: Path, classify: bool = True, csv_path: Path | None = None,
                    **push: float) -> Path:
    """video -> haar (-> classifier) -> push to 127.0.0.1:port, with the push sink's ``push``
    params, and a csv sink beside it when ``csv_path`` is given; without the classifier, a run
    starts in a second or two."""
    stages = {"source": {"type": "video", "params": {"path": str(clip)}},
              "detector": {"type": "haar", "inputs": ["source"]}}
    if classify:
        stages["classifier"] = {"type": "classifier", "inputs": ["detector"]}
    last = list(stages)[-1]
    stages["push"] = {"type": "push", "inputs": [last], "params": {"connect": f"tcp://127.0.0.1:{port}", **push}}
    if csv_path is not None:
        stages["csv"] = {"type": "csv", "inputs": [last], "params": {"path": str(csv_path)}}
    path.write_text(yaml.safe_dump({"stages": stages}))
    return path


def start(*args: str, log: Path) -> subprocess.Popen:
    """``fer-pipe`` in its own process group, as a unit or container would run it."""
    return subprocess.Popen([sys.executable, "-m", "fer_pipe.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=open(log, "a"), start_new_session=True, preexec_fn=sighup_default)


def end(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    return proc.wait(timeout=60)


def bound_collector(merged: Path, log: Path) -> tuple[subprocess.Popen, int]:
    """``fer-pipe collect`` into ``merged``, once it says it is bound, and its port."""
    port = free_port()
    collector = start("collect", "--bind", f"tcp://127.0.0.1:{port}", "--csv", str(merged), log=log)
    wait_for(lambda: "pulling on" in log.read_text(), 60, "the collector to bind", collector)
    return collector, port


@contextlib.contextmanager
def pushing(port: int, linger_ms: int = 5000) -> Iterator[zmq.Socket]:
    """A PUSH socket connected to a collector on ``port``, closed after what it sent is delivered
    (for ``linger_ms``)."""
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    try:
        yield push
    finally:
        push.close(linger=linger_ms)
        ctx.term()


@contextlib.contextmanager
def republishing(merged: Path, log: Path, prefix: bytes) -> Iterator[tuple[subprocess.Popen, int, zmq.Socket]]:
    """``fer-pipe collect`` into ``merged``, republishing, once it says it is bound: it, its port,
    and a subscriber of ``prefix`` on what it republishes. Stopped (``end``) after the block."""
    port, pub_port = free_port(), free_port()
    collector = start("collect", "--bind", f"tcp://127.0.0.1:{port}", "--csv", str(merged),
                      "--publish", f"tcp://127.0.0.1:{pub_port}", log=log)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, prefix)
    sub.connect(f"tcp://127.0.0.1:{pub_port}")
    try:
        wait_for(lambda: "pulling on" in log.read_text(), 60, "the collector to bind", collector)
        yield collector, port, sub
    finally:
        end(collector)
        sub.close(linger=0)
        ctx.term()


def rows_by_source(path: Path) -> Counter:
    return Counter(row["source"] for row in csv_rows(path))


def camera_config(clip: Path, cameras: list[str], port: int) -> dict:
    stages = {cam: {"type": "video", "params": {"path": str(clip), "realtime": True, "loop": True}}
              for cam in cameras}
    stages["detector"] = {"type": "haar", "inputs": list(cameras)}
    stages["classifier"] = {"type": "classifier", "inputs": ["detector"]}
    stages["push"] = {"type": "push", "inputs": ["classifier"],
                      "params": {"connect": f"tcp://127.0.0.1:{port}"}}
    return {"queue_size": 4, "stages": stages}


def test_shard_filter_keeps_its_cameras_and_drops_what_they_no_longer_feed(tmp_path):
    assert [shard_of(c, 2) for c in SHARD0 + SHARD1] == [0, 0, 1, 1]
    data = camera_config(tmp_path / "clip.avi", SHARD0 + SHARD1, 5560)
    # a per-camera branch: its own CSV, which must go with its camera
    data["stages"]["door_csv"] = {"type": "csv", "inputs": ["door_faces"], "params": {"path": "door.csv"}}
    data["stages"]["door_faces"] = {"type": "classifier", "inputs": ["door_haar"]}
    data["stages"]["door_haar"] = {"type": "haar", "inputs": ["door"]}
    zero = select_shard(data, 0, 2, "cams.yaml")
    assert sorted(zero["stages"]) == sorted(SHARD0 + ["detector", "classifier", "push"])
    assert zero["stages"]["detector"]["inputs"] == SHARD0
    load_graph(zero)  # still a valid graph
    one = select_shard(data, 1, 2, "cams.yaml")
    assert sorted(one["stages"]) == sorted(SHARD1 + ["detector", "classifier", "push", "door_haar",
                                                     "door_faces", "door_csv"])
    assert camera_id("s", {"type": "video", "params": {"path": "x", "source_id": "gate"}}) == "gate"  # when set
    empty = next(i for i in range(8) if all(shard_of(c, 8) != i for c in SHARD0 + SHARD1))
    with pytest.raises(ConfigError, match=rf"cams.yaml: --shard {empty}/8: none of its 4 source\(s\)"):
        select_shard(data, empty, 8, "cams.yaml")


def test_bad_shard_argument_is_one_line_exit_2(tmp_path):
    config = tmp_path / "cams.yaml"
    config.write_text(yaml.safe_dump(camera_config(tmp_path / "clip.avi", SHARD0, 5560)))
    for bad in ("2/2", "1", "a/b", "\u00b2/3"):  # a digit int() does not read was a traceback
        done = subprocess.run([sys.executable, "-m", "fer_pipe.cli", "run", str(config), "--shard", bad],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert f"--shard {bad}" in done.stderr
    done = subprocess.run([sys.executable, "-m", "fer_pipe.cli", "validate", str(config), str(config), "--shard",
                           "2/2"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr.count("\n")) == (2, 1), done.stderr  # once, not once per config (s39d)
    for command in ("run", "validate"):  # --shard "$SHARD", unset: it ran every camera on every host (s43c)
        done = subprocess.run([sys.executable, "-m", "fer_pipe.cli", command, str(config), "--shard", ""],
                              capture_output=True, text=True, timeout=60)
        assert (done.returncode, done.stderr) == (2, "fer-pipe: --shard is empty: expected I/N, e.g. 0/4 (an "
                                                     "unset variable?)\n")


def test_validate_shows_each_shards_cameras_before_a_unit_per_shard_is_deployed(tmp_path):
    """The README's four cameras in four shards left shard 2 none: its unit was refused at every
    restart, and validate said ok with no way to see the split (s39b)."""
    path = tmp_path / "cameras.yaml"
    path.write_text("stages:\n" + "".join(f"  {name}: {{type: video, params: {{path: {name}.mp4}}}}\n"
                                          for name in ("door", "lobby", "yard", "gate"))
                    + "  detector: {type: haar, inputs: [door, lobby, yard, gate]}\n"
                      "  classifier: {type: classifier, inputs: [detector]}\n"
                      "  csv: {type: csv, inputs: [classifier], params: {path: /dev/null}}\n")
    said = [subprocess.run([sys.executable, "-m", "fer_pipe.cli", "validate", str(path), "--shard", f"{i}/4"],
                           capture_output=True, text=True, timeout=60) for i in range(4)]
    # ok says the shard's cameras alone were checked: a bad camera of another shard passed here, and
    # failed on its own host (s65c 3)
    others = "camera(s) of other shards not checked here (validate each --shard, or all without --shard)"
    assert [(done.returncode, done.stdout, done.stderr) for done in said] == [
        (0, f"{path}: ok (5 stages: yard -> detector; gate -> detector; detector -> classifier -> csv; shard 0/4: "
            f"cameras yard, gate; 2 {others})\n", ""),
        (0, f"{path}: ok (4 stages: door -> detector -> classifier -> csv; shard 1/4: cameras door; 3 {others})\n",
         ""),
        (2, "", f"fer-pipe: {path}: --shard 2/4: none of its 4 source(s) (door, lobby, yard, gate) hashes to shard 2; "
                "use fewer shards\n"),
        (0, f"{path}: ok (4 stages: lobby -> detector -> classifier -> csv; shard 3/4: cameras lobby; 3 {others})\n",
         "")]
    # a source_id from a variable not set was hashed as its ${...} text: one shard was told it had no camera,
    # the other ran it (s65c 6)
    path.write_text(path.read_text().replace("{path: gate.mp4}", '{path: gate.mp4, source_id: "${GATE_ID}"}'))
    for i in range(4):
        done = subprocess.run([sys.executable, "-m", "fer_pipe.cli", "validate", str(path), "--shard", f"{i}/4"],
                              capture_output=True, text=True, timeout=60,
                              env={name: value for name, value in os.environ.items() if name != "GATE_ID"})
        assert (done.returncode, done.stderr) == (
            2, f"fer-pipe: {path}:5: stages.gate.params.source_id: environment variable GATE_ID is not set (set it, or "
               "give a default: ${GATE_ID:-VALUE}); --shard hashes a camera's id, so its variable is needed on every "
               "host\n")


@pytest.mark.parametrize("config", [
    "stages: {s: {type: [video]}}",
    'stages: {"\\ud800": {type: video, params: {path: a.mp4}}}',
    'stages: {s: {type: video, params: {path: a.mp4, source_id: "\\udcff"}}}',
    "stages: {s: {type: video, params: {path: a.mp4, source_id: &a [x, x]}}, t: {type: video, params: "
    "{path: b.mp4, source_id: [*a, *a]}}}"])
def test_a_config_the_shard_filter_meets_before_validation_fails_as_it_does_unsharded(tmp_path, config):
    """The shard filter reads the YAML before it is checked: a list as a type, a lone surrogate in
    a name or source id were tracebacks, and a source id made of YAML aliases was turned into
    text whole (a few levels more took 5 GB). With one shard, the run says what it says without."""
    path = tmp_path / "cams.yaml"
    path.write_text(config)
    sharded, whole = (subprocess.run([sys.executable, "-m", "fer_pipe.cli", "run", str(path), *shard],
                                     capture_output=True, text=True, timeout=60, cwd=tmp_path)
                      for shard in (["--shard", "0/1"], []))
    said_which, _, sharded_said = sharded.stderr.partition("\n")  # the run's first line says its shard
    if not said_which.startswith("fer-pipe: shard 0/1: cameras "):
        sharded_said = sharded.stderr
    assert (sharded.returncode, sharded_said) == (whole.returncode, whole.stderr) and whole.returncode == 2
    assert "Traceback" not in whole.stderr and whole.stderr.endswith("\n"), whole.stderr


@pytest.fixture(scope="module")
def looped_clip(clips, tmp_path_factory) -> Path:
    """20 real frames at 5 fps: replayed in real time and looped, a light live camera."""
    frames = read_frames(clips["WolfgangLanger_Pexels.mp4"], 20)
    return write_video(tmp_path_factory.mktemp("live") / "loop.avi", frames, fps=5.0)


@pytest.mark.parametrize("text, said", [
    ("0/0", "--shard 0/0: N, the number of shards, must be 1 or more"),  # was "I must be from 0 to N-1"
    ("2/2", "--shard 2/2: I must be from 0 to 1 (shards are numbered from 0)"),
    ("1/x", "--shard 1/x: expected I/N, e.g. 0/4")])
def test_a_shard_out_of_range_is_said_with_its_numbers(text, said):
    from fer_pipe.errors import ConfigError
    from fer_pipe.shard import parse_shard

    with pytest.raises(ConfigError) as caught:
        parse_shard(text)
    assert str(caught.value) == said
    assert parse_shard(" 3/4") == (3, 4)


def test_two_runs_of_one_source_sending_at_once_are_said_once_not_as_a_restart_each():
    """One shard index started on two hosts (a copied shard.env) sends each camera twice: every
    event was said as a restart of the other run, 572 lines in 8 s (s28b). Now one line, each
    run's sequence still checked on its own, and a count in the summary."""
    from fer_pipe.collect import SequenceTracker

    tracker = SequenceTracker()
    events = [("a", 0), ("a", 1), ("b", 0), ("a", 2), ("b", 1), ("a", 3), ("b", 3), ("a", 4)]
    lines = [tracker.observe("yard", run, seq, float(t)) for t, (run, seq) in enumerate(events)]
    assert lines[2].startswith("source yard: restart: run a last heard at seq 1, run b began at seq 0, ")
    assert lines[3] == ("source yard: events from two runs at once (b, a), so the restart said before was none: is "
                        "this camera in two shards' configs, or one shard running twice, or did a shard restarted "
                        "during a network split send its last run's held events late? Both runs' rows are written; "
                        "said once, and counted in the summary")
    assert lines[:2] + lines[4:] == [None, None, None, None, "source yard: gap: seq 2..2 missing (1 events) in run b",
                                     None]
    state = tracker.sources["yard"]
    assert (state.events, state.gaps, state.restarts, state.at_once) == (8, 1, 0, 5)  # a2 b1 a3 b3 a4
    # a real restart before the second run is kept: c began after b ended, then b and c sent at once
    tracker = SequenceTracker()
    events = [("a", 0), ("b", 0), ("b", 1), ("c", 0), ("b", 2)]
    lines = [tracker.observe("door", run, seq, float(t)) for t, (run, seq) in enumerate(events)]
    assert [line.split(":")[1] for line in lines[1:4:2]] == [" restart", " restart"]
    assert lines[4].startswith("source door: events from two runs at once (c, b), so the restart said before was none")
    assert tracker.sources["door"].restarts == 1


def test_killed_shard_shows_as_a_restart_of_its_cameras_only(looped_clip, tmp_path):
    port, pub_port = free_port(), free_port()
    config = tmp_path / "cams.yaml"
    config.write_text(yaml.safe_dump(camera_config(looped_clip, SHARD0 + SHARD1, port)))
    merged, collector_log = tmp_path / "merged.csv", tmp_path / "collect.log"
    collector = start("collect", "--bind", f"tcp://127.0.0.1:{port}", "--csv", str(merged),
                      "--publish", f"tcp://127.0.0.1:{pub_port}", log=collector_log)
    wait_for(lambda: "pulling on" in collector_log.read_text(), 60, "the collector to bind", collector)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"emotion.")
    sub.connect(f"tcp://127.0.0.1:{pub_port}")
    shards = [start("run", str(config), "--shard", f"{i}/2", "--quiet", log=tmp_path / f"shard{i}.log")
              for i in range(2)]
    try:
        wait_for(lambda: all(rows_by_source(merged)[c] >= 5 for c in SHARD0 + SHARD1), 180,
                 "rows from all four cameras", collector, *shards)
        end(shards[1], signal.SIGKILL)  # the whole shard, as systemd, Docker or Kubernetes kill a unit
        for cam in SHARD1:  # its frame rings, which only its (killed) parent would unlink
            for segment in Path(SHM).glob(f"fp*_{cam}*"):
                segment.unlink(missing_ok=True)
        at_kill = rows_by_source(merged)
        wait_for(lambda: all(rows_by_source(merged)[c] >= at_kill[c] + 5 for c in SHARD0), 60,
                 "shard 0 going on alone", collector, shards[0])
        dead = rows_by_source(merged)  # whatever shard 1 had in flight has landed by now
        wait_for(lambda: all(rows_by_source(merged)[c] >= dead[c] + 5 for c in SHARD0), 60,
                 "shard 0 going on alone", collector, shards[0])
        assert all(rows_by_source(merged)[c] == dead[c] for c in SHARD1)  # nothing from the dead shard
        at_kill = dead
        shards[1] = start("run", str(config), "--shard", "1/2", "--quiet", log=tmp_path / "shard1.log")
        wait_for(lambda: all(rows_by_source(merged)[c] >= at_kill[c] + 5 for c in SHARD1), 120,
                 "shard 1's cameras resuming", collector, *shards)
        assert sub.poll(0), "nothing was republished on the PUB socket"
        event = json.loads(sub.recv_multipart()[-1])
        assert {"seq", "run", "source", "frame", "faces"} <= set(event)
    finally:
        codes = [end(shard) for shard in shards]
        collector_code = end(collector, signal.SIGINT)
        sub.close(linger=0)
        ctx.term()
    assert codes == [128 + signal.SIGTERM] * 2, codes  # drained and closed after SIGTERM
    assert collector_code == 0, collector_log.read_text()
    # each shard's log says which it is: its lines named cameras alone (s65c 4)
    assert (tmp_path / "shard0.log").read_text().splitlines()[0] == \
        "fer-pipe: shard 0/2: cameras gate, yard; 2 more camera(s) in the other shards"
    assert (tmp_path / "shard1.log").read_text().count("fer-pipe: shard 1/2: cameras door, lobby; 2 more camera") == 2

    log = collector_log.read_text().splitlines()
    problems = [line for line in log if re.match(r"fer-pipe collect: source \S+: (restart|gap|seq went|joined)", line)]
    assert sorted(line.split()[3].rstrip(":") for line in problems) == sorted(SHARD1), log
    assert all(": restart: run " in line for line in problems), log
    for cam in SHARD0 + SHARD1:
        assert f"fer-pipe collect: source {cam}: " in "\n".join(log)
        restarts = 1 if cam in SHARD1 else 0
        assert any(re.fullmatch(rf"fer-pipe collect: source {cam}: \d+ events, 0 gaps, {restarts} restarts", line)
                   for line in log), log
    with open(merged, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == FRAME_COLUMNS and all(len(r) == len(FRAME_COLUMNS) for r in rows)  # complete to the last row


def test_collector_csv_equals_the_csv_sink_and_gaps_are_logged(clips, tmp_path):
    """The same frames through push -> collect and through the csv sink give the same rows; a
    gap and a step back in one run are each logged once, naming their source."""
    clip = write_video(tmp_path / "clip.avi", read_frames(clips["WolfgangLanger_Pexels.mp4"], 20))
    port = free_port()
    config = push_run_config(clip, port, tmp_path / "both.yaml", csv_path=tmp_path / "direct.csv")
    merged, log = tmp_path / "merged.csv", tmp_path / "collect.log"
    collector = start("collect", "--bind", f"tcp://127.0.0.1:{port}", "--csv", str(merged), log=log)
    try:
        # the push sink holds events for the collector only until it closes (linger_s): start the
        # short run once the collector listens
        wait_for(lambda: "pulling on" in log.read_text(), 60, "the collector to bind", collector)
        done = subprocess.run([sys.executable, "-m", "fer_pipe.cli", "run", str(config), "--quiet"],
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: rows_by_source(merged)["source"] >= 20, 60, "the run's rows", collector)
        ctx = zmq.Context()
        push = ctx.socket(zmq.PUSH)
        push.connect(f"tcp://127.0.0.1:{port}")
        for run, seq in (("r1", 0), ("r1", 1), ("r1", 4), ("r1", 2), ("r1", 3), ("r1", 1), ("r2", 0)):
            event = {"schema": 1, "type": "frame", "source": "handmade", "frame": seq, "timestamp": 0.0,
                     "faces": [], "seq": seq, "run": run}
            push.send_multipart([b"emotion.handmade", json.dumps(event).encode()])
        push.close(linger=5000)
        ctx.term()
        wait_for(lambda: rows_by_source(merged)["handmade"] == 7, 60, "the hand-made events", collector)
    finally:
        code = end(collector)
    assert code == 0, log.read_text()
    with open(merged, newline="") as fh:
        collected = [row for row in csv.reader(fh)]
    direct = (tmp_path / "direct.csv").read_text().splitlines()
    assert [",".join(r) for r in collected if r[0] != "handmade"] == direct
    lines = [line for line in log.read_text().splitlines() if "handmade:" in line]
    assert lines == [  # 2 and 3 came late (a connection dropped and made anew, s43c); 1 again went back
        "fer-pipe collect: source handmade: gap: seq 2..3 missing (2 events) in run r1",
        "fer-pipe collect: source handmade: seq 2..3 of run r1 came late, after seq 4: the gap said for them was none",
        "fer-pipe collect: source handmade: seq went back from 4 to 1 in run r1",
        lines[3],
        "fer-pipe collect: source handmade: 7 events, 0 gaps, 1 restarts",
    ]
    assert lines[3].startswith("fer-pipe collect: source handmade: restart: run r1 last heard at seq 4, "
                               "run r2 began at seq 0, ")

    # a restarted collector appends to its CSV: nothing written before is lost, the header stays
    # single; it goes on with the sequences the stopped one left, so seq 1 of r2 follows on from
    # seq 0 (received by the first collector) and only the real gap, seq 2, is logged
    assert json.loads(Path(f"{merged}.collect-state.json").read_text())["sources"]["handmade"]["seq"] == 0
    again = start("collect", "--bind", f"tcp://127.0.0.1:{port}", "--csv", str(merged), log=log)
    try:
        wait_for(lambda: log.read_text().count("pulling on") == 2, 60, "the collector to bind again", again)
        ctx = zmq.Context()
        push = ctx.socket(zmq.PUSH)
        push.connect(f"tcp://127.0.0.1:{port}")
        for seq in (1, 3):
            event = {"schema": 1, "type": "frame", "source": "handmade", "frame": 8 + seq, "timestamp": 0.4,
                     "faces": [], "seq": seq, "run": "r2"}
            push.send_multipart([b"emotion.handmade", json.dumps(event).encode()])
        push.close(linger=5000)
        ctx.term()
        wait_for(lambda: rows_by_source(merged)["handmade"] == 9, 60, "the events after the restart", again)
    finally:
        assert end(again) == 0
    with open(merged, newline="") as fh:
        after = list(csv.reader(fh))
    assert after[:len(collected)] == collected and after[len(collected)][:3] == ["handmade", "9", "0.400"]
    second = log.read_text().split("fer-pipe collect: source handmade: 7 events, 0 gaps, 1 restarts\n")[1]
    assert [line for line in second.splitlines() if "handmade" in line or "continuing" in line] == [
        f"fer-pipe collect: continuing the sequences of 2 source(s) where the last collector stopped "
        f"({merged}.collect-state.json)",
        "fer-pipe collect: source handmade: gap: seq 2..2 missing (1 events) in run r2",
        "fer-pipe collect: source handmade: 2 events, 1 gaps, 0 restarts",
    ]


def test_a_cameras_outage_goes_through_the_collector_to_its_subscribers_and_makes_no_row(plugin_env, tmp_path):
    """A camera that went down was said on a zmq sink's socket, but a push sink took no notice:
    a subscriber of the collector, the one socket a sharded deployment offers, could not tell a
    camera that is down from a shard that has died. The outage is one source_down (the source
    says it four times), then a source_up with the next frame, in the camera's sequence."""
    merged, log = tmp_path / "merged.csv", tmp_path / "collect.log"
    with republishing(merged, log, b"source.") as (collector, port, sub):
        config = tmp_path / "down.yaml"
        config.write_text(yaml.safe_dump({"stages": {
            "cam": {"type": "brokenframes", "params": {"mode": "outage", "at": 3, "down_s": 0.3}},
            "detector": {"type": "haar", "inputs": ["cam"]},
            "push": {"type": "push", "inputs": ["detector"], "params": {"connect": f"tcp://127.0.0.1:{port}"}}}}))
        done = subprocess.run([sys.executable, "-m", "fer_pipe.cli", "run", str(config), "--quiet"],
                              capture_output=True, text=True, timeout=180, env={**os.environ, **plugin_env})
        assert done.returncode == 0, done.stderr
        wait_for(lambda: rows_by_source(merged)["cam"] == 8, 60, "the run's rows", collector)
        said = []
        while sub.poll(2000):
            topic, body = sub.recv_multipart()
            said.append((topic.decode(), json.loads(body)))
    assert collector.returncode == 0, log.read_text()
    assert [(topic, e["type"], e["frame"], e["seq"]) for topic, e in said] == [
        ("source.cam", "source_down", 2, 3), ("source.cam", "source_up", 3, 4)]
    assert said[0][1]["since"] == said[1][1]["since"] == said[0][1]["timestamp"]
    assert [int(row["frame"]) for row in csv_rows(merged)] == list(range(8))
    assert "fer-pipe collect: source cam: 10 events, 0 gaps, 0 restarts" in log.read_text().splitlines()
    assert "malformed" not in log.read_text()


def test_a_collector_republishes_under_the_events_own_topic(tmp_path):
    """The sender's frames were republished as they came, topic and all: a subscriber of
    ``emotion.`` never saw an event sent under another topic, whose row the collector wrote (s40b)."""
    seqs = iter(range(10**6))
    log = tmp_path / "collect.log"
    with republishing(tmp_path / "merged.csv", log, b"emotion.") as (collector, port, sub), pushing(port) as push:
        def heard() -> list[bytes] | None:  # sent until the subscription has reached the collector
            event = {"schema": 1, "type": "frame", "source": "cam", "frame": 0, "timestamp": 0.0, "faces": [],
                     "seq": next(seqs), "run": "r"}
            push.send_multipart([b"whatever.topic", json.dumps(event).encode()])
            return sub.recv_multipart() if sub.poll(100) else None

        topic, body = wait_for(heard, 30, "a republished event", collector)
    assert collector.returncode == 0, log.read_text()
    assert topic == b"emotion.cam" and json.loads(body)["source"] == "cam"


def test_a_collector_whose_terminal_left_without_a_sighup_goes_on(tmp_path):
    """A collector run as a job the shell was told to ``disown``: its window closes, no SIGHUP
    comes, and the next line it said (a gap) failed with EIO and ended it, exit 1, its sequence
    state lost. Now the line goes to /dev/null and it goes on. Its terminal is a real
    pseudo-terminal, not its controlling one, whose leader is closed as a terminal emulator's is."""
    import pty
    import select

    from fer_pipe.collect import STATE_SUFFIX

    port, merged = free_port(), tmp_path / "merged.csv"
    leader, follower = pty.openpty()
    collector = subprocess.Popen([sys.executable, "-m", "fer_pipe.cli", "collect", "--bind",
                                  f"tcp://127.0.0.1:{port}", "--csv", str(merged)], stdin=subprocess.DEVNULL,
                                 stdout=follower, stderr=follower, start_new_session=True, preexec_fn=sighup_default)
    os.close(follower)
    screen = b""
    while b"pulling on" not in screen and select.select([leader], [], [], 60)[0]:
        screen += os.read(leader, 4096)
    os.close(leader)  # the terminal is gone: writes to it fail from here on
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    for seq in (0, 1, 3, 4):  # seq 2 missing: a gap, said on the terminal that is gone
        event = {"schema": 1, "type": "frame", "source": "cam", "frame": seq, "timestamp": 0.0, "faces": [],
                 "seq": seq, "run": "r1"}
        push.send_multipart([b"emotion.cam", json.dumps(event).encode()])
    push.close(linger=5000)
    ctx.term()
    try:
        wait_for(lambda: rows_by_source(merged)["cam"] == 4, 60, "the events", collector)
    finally:
        code = end(collector)
    assert code == 0
    assert json.loads(Path(f"{merged}{STATE_SUFFIX}").read_text())["sources"]["cam"]["seq"] == 4


def test_a_killed_collector_leaves_no_state_and_a_bad_state_file_is_ignored(tmp_path):
    """A collector killed outright cannot say where it stopped; the one after it must not trust the
    numbers of an earlier clean stop (it would report the killed one's events as a gap), and a
    state file it cannot read costs a line, not the collector."""
    merged, log = tmp_path / "merged.csv", tmp_path / "collect.log"
    state = Path(f"{merged}.collect-state.json")
    state.write_text(json.dumps({"sources": {"cam": {"run": "r1", "seq": 3, "last_seen": time.time()}}}))
    port = free_port()
    first = start("collect", "--bind", f"tcp://127.0.0.1:{port}", "--csv", str(merged), log=log)
    try:
        wait_for(lambda: "pulling on" in log.read_text(), 60, "the collector to bind", first)
        assert not state.exists()  # taken: a kill from here on leaves nothing stale behind
    finally:
        end(first, signal.SIGKILL)
    assert not state.exists()
    after_kill = start("collect", "--bind", f"tcp://127.0.0.1:{port}", "--csv", str(merged), log=log)
    try:  # what the killed one had taken and not written is lost: said, where "joined" lines read as harmless
        wait_for(lambda: log.read_text().count("pulling on") == 2, 60, "the collector to bind again", after_kill)
    finally:
        assert end(after_kill) == 0
    assert (f"fer-pipe collect: {merged} is there, but not the sequences a collector leaves beside it when it "
            "stops: the last one was killed (or could not save them), and events it had received but not written "
            "are lost, uncounted; each source's sequence is checked from its next event") in log.read_text().splitlines()

    stopped = start("collect", "--bind", f"tcp://127.0.0.1:{port}", "--csv", str(merged), log=log)
    try:  # a clean stop that had no event leaves its sequences (none) too: nothing was killed
        wait_for(lambda: log.read_text().count("pulling on") == 3, 60, "the collector to bind again", stopped)
    finally:
        assert end(stopped) == 0
    assert log.read_text().count("the last one was killed") == 1

    state.write_text("{not json")
    second = start("collect", "--bind", f"tcp://127.0.0.1:{port}", "--csv", str(merged), log=log)
    try:
        wait_for(lambda: log.read_text().count("pulling on") == 4, 60, "the collector to bind again", second)
    finally:
        assert end(second, signal.SIGHUP) == 0  # a closed terminal stops it as SIGTERM does, state kept
    lines = log.read_text().splitlines()
    assert lines[0].startswith("fer-pipe collect: continuing the sequences of 1 source(s)")
    assert any(line.startswith(f"fer-pipe collect: ignored {state} (JSONDecodeError: ") for line in lines), lines
    assert json.loads(state.read_text()) == {"sources": {}, "stopped": True}


def test_the_successor_of_a_collector_killed_with_its_host_logs_the_events_lost_as_a_gap(tmp_path):
    """The sequences were kept only at a clean stop: after a collector killed with its host, its
    successor said "joined run r1 at seq 9 (seq 0..8 not received by this collector)", true of
    any restart, and the events lost with the dead one were in no CSV and no gap (s43c)."""
    merged, log = tmp_path / "merged.csv", tmp_path / "collect.log"
    event = {"schema": 1, "type": "frame", "source": "cam", "timestamp": 0.1, "faces": [], "run": "r1"}
    first, port = bound_collector(merged, log)
    try:
        with pushing(port) as push:
            for seq in range(5):
                push.send_multipart([b"emotion.cam", json.dumps({**event, "frame": seq, "seq": seq}).encode()])
        state = Path(f"{merged}.collect-state.json")
        wait_for(lambda: state.exists() and json.loads(state.read_text())["sources"]["cam"]["seq"] == 4, 60,
                 "the collector to keep its sequences", first)
    finally:
        end(first, signal.SIGKILL)
    second = start("collect", "--bind", f"tcp://127.0.0.1:{port}", "--csv", str(merged), log=log)
    try:
        wait_for(lambda: log.read_text().count("pulling on") == 2, 60, "the collector to bind again", second)
        with pushing(port) as push:  # seq 5..8 went into the dead collector's connection
            push.send_multipart([b"emotion.cam", json.dumps({**event, "frame": 9, "seq": 9}).encode()])
        wait_for(lambda: ": gap: " in log.read_text(), 60, "the gap", second)
    finally:
        assert end(second) == 0
    lines = log.read_text().splitlines()
    assert (f"fer-pipe collect: continuing the sequences of 1 source(s) as the last collector kept them before it "
            f"was killed ({state}, kept every 1 s): events its socket had received but not written are lost and "
            "show as gaps, and a gap may also count events it wrote in its last second, which are in the CSV") in lines
    assert "fer-pipe collect: source cam: gap: seq 5..8 missing (4 events) in run r1" in lines
    assert [int(row["frame"]) for row in csv_rows(merged)] == [0, 1, 2, 3, 4, 9]


def test_a_collector_kept_behind_by_its_shards_still_keeps_its_sequences_every_second(tmp_path):
    """It kept them only once its socket was empty: shards that kept it behind (what they held
    through an outage) left the sequences of before, and the successor of a collector killed
    then said every event written since as a gap (s58b 2). The sender here outpaces it."""
    merged, log = tmp_path / "merged.csv", tmp_path / "collect.log"
    state = Path(f"{merged}.collect-state.json")
    collector, port = bound_collector(merged, log)
    sent, cap = 0, 500_000  # the cap a hang guard: behind, it keeps them after a second
    try:
        with pushing(port) as push:
            while sent < cap and not (sent % 1000 == 0 and state.exists()):
                push.send_multipart([b"emotion.cam", b'{"schema": 1, "type": "frame", "source": "cam", "timestamp": '
                                     b'0.1, "faces": [], "run": "r1", "frame": %d, "seq": %d}' % (sent, sent)])
                sent += 1
            kept = json.loads(state.read_text())["sources"]["cam"]["seq"] if state.exists() else None
        wait_for(lambda: merged.read_bytes().count(b"\n") == sent + 1, 60, "every event's row", collector)
    finally:
        assert end(collector) == 0, log.read_text()
    assert sent < cap and kept is not None and 0 < kept < sent - 1, (sent, kept)


def test_a_malformed_event_is_skipped_with_a_line_and_the_collector_goes_on(tmp_path):
    """Anyone who reaches the bind address can send anything: a face that is not an object used to
    end the collector in a traceback, without the sequence state it keeps for the next one. A
    bare source_down was taken into the camera's sequence ("gap: seq 3..999999 missing") and
    republished with fields missing (s30b)."""
    from test_zmq import MALFORMED, skipped_events

    down = {"schema": 1, "type": "source_down", "source": "cam", "frame": 3, "timestamp": 5.0, "since": 5.0,
            "run": "r"}
    bad_downs = [{**down, "seq": 999_999, "since": None}, {**down, "seq": 999_999, "frame": "3"},
                 {key: value for key, value in down.items() if key != "timestamp"} | {"seq": 999_999}]

    merged, log = tmp_path / "merged.csv", tmp_path / "collect.log"
    collector, port = bound_collector(merged, log)
    try:
        with pushing(port) as push:
            for body in MALFORMED:
                push.send_multipart([b"emotion.cam", body])
            good = {"schema": 1, "type": "frame", "source": "cam", "frame": 3, "timestamp": 0.1, "faces": [],
                    "seq": 2, "run": "r"}
            # republished as they came, one frame or three broke a subscriber's topic, body = recv_multipart();
            # int() took a seq of true as 1 and 1.9 as 1 (s40b)
            for frames in ([json.dumps({**good, "seq": 0}).encode()],
                           [b"emotion.cam", b"junk", json.dumps({**good, "seq": 0}).encode()],
                           # and one of 2**63: a gap of 9.2e18 events, after which no gap was said (s67a 6)
                           *([b"emotion.cam", json.dumps({**good, "seq": seq}).encode()]
                             for seq in (True, 1.9, -1, 2**63))):
                push.send_multipart(frames)
            push.send_multipart([b"emotion.cam", json.dumps(good).encode()])
            for event in [*bad_downs, {**down, "seq": 3}]:
                push.send_multipart([b"source.cam", json.dumps(event).encode()])
            # none a push sink sends: a NaN, republished as no JSON outside Python's reader and written
            # "nan"; an episode's, written as a frame's row; a source of a list, tracked as its text (s44a)
            for event in ({**good, "timestamp": float("nan")}, {**good, "type": "episode"}, {**good, "source": ["x"]}):
                push.send_multipart([b"emotion.cam", json.dumps(event).encode()])
            # ids a run refuses: a NUL made the CSV binary to grep, 200 KB ids took the collector to 470 MB (s58b 3, 7)
            for event in ({**good, "source": "a\x00b"}, {**good, "source": "c" * 257}, {**good, "run": "r\n"}):
                push.send_multipart([b"emotion.cam", json.dumps(event).encode()])
            face = {"face": 0, "x": 1, "y": 1, "w": 9, "h": 9, "source": "door", "frame": 123456}
            push.send_multipart([b"emotion.cam", json.dumps({**good, "seq": 4, "faces": [face]}).encode()])
        wait_for(lambda: rows_by_source(merged) == {"cam": 2}, 60, "the good events after the bad", collector)
    finally:
        assert end(collector) == 0, log.read_text()
    assert skipped_events(log.read_text(), "collect") == len(MALFORMED) + 15, log.read_text()
    assert rows_by_source(merged) == {"cam": 2}  # the good source_down makes no row; a face's source is not the row's
    assert [row["frame"] for row in csv_rows(merged)] == ["3", "3"]
    assert ": gap: " not in log.read_text()
    assert json.loads(Path(f"{merged}.collect-state.json").read_text())["sources"]["cam"]["seq"] == 4


def test_a_collector_writing_to_a_pipe_whose_reader_left_ends_quietly_with_no_state_beside_it(tmp_path):
    """--csv /dev/stdout | head: the reader's leaving was "cannot write ... Broken pipe", exit 1,
    where every other command ends quietly with 0; and the sequences were kept beside the pipe,
    in /dev (s39c). The collector's stdout is a real pipe into head: a named pipe stood in for
    it, and once a broken pipe was a clean stop only on stdout or stderr (as for a sink: a named
    pipe's reader leaving is a failure), that stand-in said otherwise (s50)."""
    log = tmp_path / "collect.log"
    port = free_port()
    collector = subprocess.Popen([sys.executable, "-m", "fer_pipe.cli", "collect", "--bind", f"tcp://127.0.0.1:{port}",
                                  "--csv", "/dev/stdout"], stdout=subprocess.PIPE, stderr=open(log, "a"),
                                 start_new_session=True, preexec_fn=sighup_default)
    head = subprocess.Popen(["head", "-n", "3"], stdin=collector.stdout, stdout=subprocess.PIPE, text=True)
    collector.stdout.close()  # head alone reads it now
    try:
        wait_for(lambda: "pulling on" in log.read_text(), 60, "the collector to bind", collector)
        with pushing(port, linger_ms=0) as push:
            for seq in range(1000):  # on until the collector finds the pipe closed and ends
                event = {"schema": 1, "type": "frame", "source": "cam", "frame": seq, "timestamp": seq / 25,
                         "faces": [], "seq": seq, "run": "r"}
                push.send_multipart([b"emotion.cam", json.dumps(event).encode()])
                if collector.poll() is not None:
                    break
                time.sleep(0.01)
        assert collector.wait(timeout=60) == 0, log.read_text()
    finally:
        end(collector)
    assert len(head.communicate(timeout=60)[0].splitlines()) == 3
    assert log.read_text().splitlines() == [f"fer-pipe collect: pulling on tcp://127.0.0.1:{port}, writing /dev/stdout"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["collect.log"]
    assert not list(Path("/dev").glob("*.collect-state.json"))


def test_a_collector_whose_log_disk_is_full_goes_on_collecting(tmp_path):
    """Its lines on a full disk (/dev/full) ended it at its first, exit 1, no row (s39d)."""
    merged = tmp_path / "merged.csv"
    port = free_port()
    collector = start("collect", "--bind", f"tcp://127.0.0.1:{port}", "--csv", str(merged), log=Path("/dev/full"))
    try:
        with pushing(port) as push:
            for seq in range(100):  # a restart's line and a gap's among them, each said to the full disk
                event = {"schema": 1, "type": "frame", "source": "cam", "frame": seq, "timestamp": seq / 25,
                         "faces": [], "seq": seq + (seq >= 50) * 5, "run": "r" if seq < 80 else "r2"}
                push.send_multipart([b"emotion.cam", json.dumps(event).encode()])
        wait_for(lambda: len(csv_rows(merged)) == 100, 60, "every event's row", collector)
    finally:
        assert end(collector) == 0


def test_a_collector_writing_to_dev_stdout_redirected_to_a_file_keeps_no_state_in_dev(tmp_path):
    """/dev/stdout > merged.csv is a regular file behind a name in /dev: the state went to
    /dev/stdout.collect-state.json, and each start said the last collector had been killed (s39d).
    Run in a private mount namespace, with a tmpfs over /dev, so a broken build cannot write into
    this machine's /dev; skipped where this user may not mount."""
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("a private /dev needs unshare -m (root)")
    merged, log, port = tmp_path / "merged.csv", tmp_path / "collect.log", free_port()
    collect = shlex.join([sys.executable, "-m", "fer_pipe.cli", "collect", "--bind", f"tcp://127.0.0.1:{port}",
                          "--csv", "/dev/stdout"])
    script = (f"mount -t tmpfs tmpfs /dev && ln -s /proc/self/fd/1 /dev/stdout && {collect} > {merged} 2> {log} & "
              f"pid=$!; until grep -qs pulling {log}; do sleep 0.1; done; kill -TERM $pid; wait $pid; code=$?; "
              "ls -A /dev; exit $code")
    for _ in range(2):  # the second start would say the first was killed
        log.unlink(missing_ok=True)  # else the first start's line is found before the second's
        done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120)
        assert (done.returncode, done.stdout) == (0, "stdout\n"), (done.stderr, log.read_text())
        assert log.read_text().splitlines()[0] == f"fer-pipe collect: pulling on tcp://127.0.0.1:{port}, writing " \
                                                  "/dev/stdout"
        assert len(log.read_text().splitlines()) == 1, log.read_text()


def test_a_collector_refuses_an_event_over_a_mib_from_whoever_reaches_it(tmp_path):
    """ZeroMQ read any message whole into memory: 500 MB from a peer took the collector to 1 GB,
    and a well-formed event with a 2 MB source name became a 2 MB row. The sender of a message over
    MAX_EVENT_BYTES is disconnected; others go on."""
    merged, log = tmp_path / "merged.csv", tmp_path / "collect.log"
    port = free_port()
    collector = start("collect", "--bind", f"tcp://127.0.0.1:{port}", "--csv", str(merged), log=log)
    event = {"schema": 1, "type": "frame", "source": "x" * (2 << 20), "frame": 0, "timestamp": 0.0, "faces": [],
             "seq": 0, "run": "r"}
    try:
        wait_for(lambda: "pulling on" in log.read_text(), 60, "the collector to bind", collector)
        ctx = zmq.Context()
        for source in (event["source"], "cam"):
            push = ctx.socket(zmq.PUSH)
            push.connect(f"tcp://127.0.0.1:{port}")
            push.send_multipart([b"emotion.cam", json.dumps({**event, "source": source}).encode()])
            push.close(linger=5000)
        ctx.term()
        wait_for(lambda: rows_by_source(merged).get("cam") == 1, 60, "the good event", collector)
    finally:
        assert end(collector) == 0, log.read_text()
    assert set(rows_by_source(merged)) == {"cam"} and merged.stat().st_size < 10_000


def test_a_source_name_cannot_write_lines_of_its_own_into_the_collectors_log(tmp_path):
    """A source named with a newline wrote what looked like the collector's own line ("restart:
    ... FORGED"), and an escape code cleared the terminal of whoever read the log (s24e). Such
    an id, which a run refuses, is now skipped, and the line that says so shows it escaped."""
    merged, log = tmp_path / "merged.csv", tmp_path / "collect.log"
    collector, port = bound_collector(merged, log)
    source = "door\nfer-pipe collect: source lobby: FORGED\x1b[2J"
    try:
        with pushing(port) as push:
            event = {"schema": 1, "type": "frame", "source": source, "frame": 0, "timestamp": 0.0, "faces": [],
                     "seq": 0, "run": "r"}
            push.send_multipart([b"emotion.door", json.dumps(event).encode()])
        wait_for(lambda: "skipped a malformed event" in log.read_text(), 60, "the event", collector)
    finally:
        assert end(collector) == 0, log.read_text()
    said = log.read_text()
    assert "\x1b" not in said
    assert not any(line.startswith("fer-pipe collect: source lobby") for line in said.splitlines())
    assert ("fer-pipe collect: skipped a malformed event: ValueError: 'source': 'door\\nfer-pipe collect: source "
            "lobby: FORGED\\x1b[2J' holds a line break or other control character; give a printable id\n") in said, said
    assert rows_by_source(merged) == {}


def test_a_stopped_collector_takes_what_is_queued_for_a_bounded_time(tmp_path):
    """It took events until none was waiting, so under a steady inflow a systemctl stop ended
    in SIGKILL, without the sequence state for the next collector. Here 300,000 events are
    queued at once (more than it writes in several seconds) and the stop is asked before the
    collector's last take: it must end with some of them still queued, its state matching the
    last row it wrote, so the next collector reports the rest as a gap."""
    from fer_pipe.collect import Collector
    from fer_pipe.csvfile import CsvOutput

    total, port = 300_000, free_port()
    collector = Collector(f"tcp://127.0.0.1:{port}", str(tmp_path / "merged.csv"))
    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    for sock in (pull, push):
        sock.setsockopt(zmq.SNDHWM if sock is push else zmq.RCVHWM, 0)
    pull.bind(collector.bind)
    push.connect(collector.bind)
    try:
        body = '{"schema":1,"type":"frame","source":"cam","frame":%d,"timestamp":0.0,"faces":[],"seq":%d,"run":"r"}'
        for seq in range(total):
            push.send_multipart([b"emotion.cam", (body % (seq, seq)).encode()])
        assert pull.poll(10_000)
        collector._stop = True
        with CsvOutput(collector.csv_path, "--csv", collector.columns, append=True) as writer:
            collector._loop(pull, None, writer)
    finally:
        push.close(0)
        pull.close(0)
        ctx.term()
    written = [int(row["frame"]) for row in csv_rows(collector.csv_path)]
    assert 0 < len(written) < total and written == list(range(len(written)))
    assert collector.tracker.sources["cam"].seq == written[-1]


def test_a_collector_bound_beyond_loopback_warns_that_anyone_may_write_rows():
    """Every other endpoint warns or refuses off loopback; the collector, which anyone who
    reaches it can feed rows (PUSH/PULL has no CURVE here), said nothing. The warning comes once
    bound: a host not of this machine was warned of, then "No such device (addr=...)" (s45d).
    192.0.2.1 is a documentation address on no interface here."""
    def collect(*args: str) -> tuple[int, list[str]]:
        done = subprocess.run([sys.executable, "-m", "fer_pipe.cli", "collect", *args], capture_output=True,
                              text=True, timeout=60)
        return done.returncode, done.stderr.splitlines()

    bind, publish = f"tcp://0.0.0.0:{free_port()}", f"tcp://0.0.0.0:{free_port()}"
    assert collect("--bind", bind, "--publish", publish, "--csv", "/nonexistent/rows.csv") == (2, [
        f"fer-pipe collect: WARNING: --bind {bind} is not a loopback address: anyone who can reach it can write rows "
        "into its CSV",
        f"fer-pipe collect: WARNING: --publish {publish} is not a loopback address: anyone who can reach it reads "
        "the events, unencrypted",
        "fer-pipe: --csv /nonexistent/rows.csv: folder /nonexistent does not exist"])
    assert collect("--csv", "/tmp") == (2, ["fer-pipe: --csv /tmp: is a folder, not a file"])  # s45d
    assert collect("--bind", "tcp://192.0.2.1:5560", "--csv", "/dev/null") == (2, [
        "fer-pipe: --bind tcp://192.0.2.1:5560: cannot bind: 192.0.2.1 is not an address of this machine (bind one "
        "of its own, or 0.0.0.0 for all)"])
    assert collect("--bind", "tcp://127.0.0.1:5560", "--publish", "tcp://nohost.invalid:5561", "--csv",
                   "/dev/null") == (2, ["fer-pipe: --publish tcp://nohost.invalid:5561: cannot bind: no such host or "
                                        "interface 'nohost.invalid'"])


def test_a_push_sink_reaches_a_collector_restarted_after_the_first_went_silent():
    """A collector whose host died leaves the push sink's connection open: the sink sent into
    it to the end of the run, 381 of 472 events lost, exit 0, and never reached the collector
    restarted at that address, which so could not even log the gap (s40b). It pings, and
    reconnects once pings go unanswered; the restarted collector sees the gap."""
    from fer_pipe.events import decode
    from fer_pipe.inprocess import make_stage
    from fer_pipe.messages import Packet

    target = free_port()
    ctx = zmq.Context()
    sent = iter(range(10**6))
    try:
        with silencing_relay(target) as (port, silence):
            first = ctx.socket(zmq.PULL)
            first.bind(f"tcp://127.0.0.1:{target}")
            sink = make_stage("push", {"connect": f"tcp://127.0.0.1:{port}", "linger_s": 1})
            sink.open()

            def takes(pull: zmq.Socket) -> int | None:
                sink.consume(Packet("cam", next(sent), 0.0, faces=[]))
                return decode(pull.recv_multipart())["seq"] if pull.poll(100) else None

            wait_for(lambda: takes(first), 30, "the first collector's events")
            silence()
            first.close(linger=0)
            second = bound_again(ctx, zmq.PULL, f"tcp://127.0.0.1:{target}")
            seq = wait_for(lambda: takes(second), 60, "the restarted collector's events")
            assert seq > 1  # what went into the silent connection is lost: a gap this collector logs
            sink.close()
    finally:
        ctx.destroy(linger=0)


def test_a_push_sink_says_when_its_collector_comes_leaves_and_comes_back(capfd):
    """A shard said nothing while its collector was away, until sndhwm events were held
    (10,000: minutes at a camera's rate), its status line showing the push sink's rate as if all
    were well; a stop meanwhile lost them all, the first word of it at the end (s62e 1)."""
    from fer_pipe.inprocess import make_stage
    from fer_pipe.messages import Packet

    port = free_port()
    ctx = zmq.Context()
    sent = iter(range(10**6))
    try:
        first = ctx.socket(zmq.PULL)
        first.bind(f"tcp://127.0.0.1:{port}")
        sink = make_stage("push", {"connect": f"tcp://127.0.0.1:{port}", "linger_s": 1})
        sink.open()

        def takes(pull: zmq.Socket) -> bool:
            sink.consume(Packet("cam", next(sent), 0.0, faces=[]))
            return pull.poll(100) != 0

        wait_for(lambda: takes(first), 30, "the first collector's events")
        first.close(linger=0)
        wait_for(lambda: not sink._collector_connected(0.0), 30, "the push sink to see the collector gone")
        second = bound_again(ctx, zmq.PULL, f"tcp://127.0.0.1:{port}")
        wait_for(lambda: takes(second), 60, "the second collector's events")
        sink.close()
    finally:
        ctx.destroy(linger=0)
    said = capfd.readouterr().err
    where = f"fer-pipe: push sink 'push': run {sink.run_id}:"
    first_line = f"{where} the collector at tcp://127.0.0.1:{port} connected; the run's events are numbered from " \
                 "seq 0 in each source\n"
    assert said.startswith(first_line) and said.count(" connected; ") == 1, said  # the run id, at its start (s62e 6)
    assert f"{where} the collector at tcp://127.0.0.1:{port} went away; events are held for it, up to sndhwm " \
           "10000\n" in said, said
    assert re.search(rf"{re.escape(where)} a collector at tcp://127\.0\.0\.1:{port} connected again, after \d+ s\n",
                     said), said


def test_a_push_sink_whose_collector_left_tells_held_events_without_lingering_again():
    """linger_s waited for the collector to come back, then the close lingered linger_s again
    with nobody to deliver to: a shard whose collector had gone took twice linger_s to stop
    (s45e). The close's linger is recorded from the real socket."""
    from fer_pipe.errors import OutputError
    from fer_pipe.messages import Packet
    from fer_pipe.inprocess import make_stage
    from fer_pipe.stages.push_sink import PROBE_LINGER_S

    port = free_port()
    ctx = zmq.Context()
    try:
        pull = ctx.socket(zmq.PULL)
        pull.bind(f"tcp://127.0.0.1:{port}")
        sink = make_stage("push", {"connect": f"tcp://127.0.0.1:{port}", "linger_s": 2})
        sink.open()
        sent = iter(range(10**6))

        def taken() -> bool:
            sink.consume(Packet("cam", next(sent), 0.0, faces=[]))
            return pull.poll(100) != 0

        wait_for(taken, 30, "the collector's first event")
        pull.close(linger=0)  # the collector leaves; what is sent now is held
        wait_for(lambda: not sink._collector_connected(0.0), 30, "the push sink to see the collector gone")
        for _ in range(5):
            sink.consume(Packet("cam", next(sent), 0.0, faces=[]))
        lingers, close = [], sink._sock.close
        sink._sock.close = lambda linger=None: (lingers.append(linger), close(linger=linger))[1]
        with pytest.raises(OutputError, match="events still held .* were lost"):
            sink.close()
    finally:
        ctx.destroy(linger=0)
    assert lingers == [int(PROBE_LINGER_S * 1000)]


def test_collector_refuses_a_busy_port_or_a_foreign_csv_in_one_line(tmp_path):
    with busy_port() as port:
        done = subprocess.run([sys.executable, "-m", "fer_pipe.cli", "collect", "--bind", f"tcp://127.0.0.1:{port}",
                               "--csv", str(tmp_path / "merged.csv")], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (
        2, f"fer-pipe: --bind tcp://127.0.0.1:{port}: cannot bind: Address already in use\n")  # the zmq sink's words
    with tempfile.TemporaryDirectory(prefix="fp") as folder:  # an ipc path ZeroMQ would unlink from under its owner
        held = f"ipc://{folder}/c.sock"
        ctx = zmq.Context()
        try:
            holder = ctx.socket(zmq.PULL)
            holder.bind(held)
            done = subprocess.run([sys.executable, "-m", "fer_pipe.cli", "collect", "--bind", held, "--csv",
                                   str(tmp_path / "merged.csv")], capture_output=True, text=True, timeout=60)
        finally:
            ctx.destroy(linger=0)
    assert (done.returncode, done.stderr) == (
        2, f"fer-pipe: --bind {held}: cannot bind: address already in use (another process listens on that socket)\n")
    foreign = tmp_path / "other.csv"
    foreign.write_text("a,b\n1,2\n")
    done = subprocess.run([sys.executable, "-m", "fer_pipe.cli", "collect", "--bind", f"tcp://127.0.0.1:{free_port()}",
                           "--csv", str(foreign)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "other columns" in done.stderr, done.stderr
    assert foreign.read_text() == "a,b\n1,2\n"
    latin = tmp_path / "latin.csv"  # a spreadsheet's export: before, a UnicodeDecodeError traceback
    latin.write_bytes("café,b\n".encode("latin-1"))
    for csv_path, says, code in ((latin, "exists and is not a CSV this can continue", 2),
                                 ("/dev/full", "cannot write", 1)):  # a full disk is not bad input
        done = subprocess.run([sys.executable, "-m", "fer_pipe.cli", "collect", "--bind",
                               f"tcp://127.0.0.1:{free_port()}", "--csv", str(csv_path)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == code and done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith(f"fer-pipe: --csv {csv_path}: {says}"), done.stderr
    assert latin.read_bytes() == "café,b\n".encode("latin-1")


def test_a_run_that_ends_with_no_collector_says_its_events_were_lost(clips, tmp_path):
    """PUSH queues for an absent peer and ZeroMQ drops the queue at close: before, such a run
    exited 0 saying "12 events to tcp://..." when none had been delivered."""
    clip = write_video(tmp_path / "clip.avi", read_frames(clips["WolfgangLanger_Pexels.mp4"], 12))
    port = free_port()
    config = push_run_config(clip, port, tmp_path / "push.yaml", linger_s=0.5)
    done = subprocess.run([sys.executable, "-m", "fer_pipe.cli", "run", str(config), "--quiet"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 2, done.stderr
    line, = done.stderr.splitlines()
    assert re.fullmatch(rf"fer-pipe: stage 'push' \(push\) failed: while closing: push sink 'push': no collector "
                        rf"at tcp://127\.0\.0\.1:{port} when the run ended \(waited linger_s, 0\.5 s\): none of run "
                        r"[0-9a-f]{8}'s 12 events were delivered; is fer-pipe collect running there\?", line), line


def test_a_collector_name_that_does_not_resolve_is_said_at_the_start_and_the_end(clips, tmp_path):
    """ZeroMQ retries a name it cannot resolve without a word: a typo in the collector's name
    read as a collector that was not running."""
    clip = write_video(tmp_path / "clip.avi", read_frames(clips["WolfgangLanger_Pexels.mp4"], 6))
    config = push_run_config(clip, 0, tmp_path / "push.yaml", classify=False, linger_s=0.5,
                             connect="tcp://collector.invalid:5560", public=True)
    done = subprocess.run([sys.executable, "-m", "fer_pipe.cli", "run", str(config), "--quiet"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 2, done.stderr
    assert "fer-pipe: push sink 'push': no such host 'collector.invalid' (yet?): events are held until it " \
           "resolves and a collector there takes them" in done.stderr.splitlines()
    assert done.stderr.splitlines()[-1].endswith("events were delivered; no such host 'collector.invalid'"), \
        done.stderr


def test_a_collector_that_comes_up_late_still_gets_every_event(clips, tmp_path):
    """Events wait for a collector started after the run (within linger_s) and all reach it."""
    clip = write_video(tmp_path / "clip.avi", read_frames(clips["WolfgangLanger_Pexels.mp4"], 12))
    port = free_port()
    config = push_run_config(clip, port, tmp_path / "push.yaml", linger_s=120)
    merged, log = tmp_path / "merged.csv", tmp_path / "collect.log"
    run = subprocess.Popen([sys.executable, "-m", "fer_pipe.cli", "run", str(config), "--quiet"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    collector = start("collect", "--bind", f"tcp://127.0.0.1:{port}", "--csv", str(merged), log=log)
    try:
        err = run.communicate(timeout=180)[1]
        assert run.returncode == 0, err
        assert re.fullmatch(rf"(?P<sink>fer-pipe: push sink 'push': run [0-9a-f]{{8}}: )the collector at "
                            rf"tcp://127\.0\.0\.1:{port} connected; the run's events are numbered from seq 0 in each "
                            rf"source\n(?P=sink)12 events to tcp://127\.0\.0\.1:{port}\n", err), err
        wait_for(lambda: rows_by_source(merged)["source"] >= 12, 60, "the run's rows", collector)
    finally:
        assert end(collector) == 0, log.read_text()
    with open(merged, newline="") as fh:
        assert [int(r["frame"]) for r in csv.DictReader(fh)] == list(range(12))


def test_a_collector_away_longer_than_the_stall_timeout_is_waited_for(clips, tmp_path):
    """A push sink waiting for its collector is backpressure, not a stall. Before, a collector
    away longer than --stall-timeout (a restart that takes minutes) failed the run, and the
    shard's restart lost the sndhwm events it held; now the run waits, says so, and goes on."""
    clip = write_video(tmp_path / "clip.avi", read_frames(clips["WolfgangLanger_Pexels.mp4"], 30))
    port = free_port()
    config = push_run_config(clip, port, tmp_path / "push.yaml", classify=False, sndhwm=1)
    err, merged = tmp_path / "run.err", tmp_path / "merged.csv"
    run = start("run", str(config), "--quiet", "--stall-timeout", "1", log=err)
    collector = None
    try:
        wait_for(lambda: "takes events; 1 are held and the sink waits" in err.read_text(), 60, "the push sink to wait", run)
        time.sleep(3)  # the collector stays away three stall timeouts; the old code failed the run (exit 1)
        collector = start("collect", "--bind", f"tcp://127.0.0.1:{port}", "--csv", str(merged),
                          log=tmp_path / "collect.log")
        assert run.wait(120) == 0, err.read_text()
        wait_for(lambda: rows_by_source(merged)["source"] >= 30, 60, "every event", collector)
    finally:
        end(run, signal.SIGKILL)
        if collector is not None:
            assert end(collector) == 0
    assert re.search(rf"run [0-9a-f]{{8}}: the collector at tcp://127\.0\.0\.1:{port} takes events, "
                     r"after \d+ s", err.read_text()), err.read_text()  # not "again": it is the first (s66c 1)
    with open(merged, newline="") as fh:
        assert [int(r["frame"]) for r in csv.DictReader(fh)] == list(range(30))


def test_a_connected_collector_that_falls_behind_is_not_called_absent(capfd):
    """Before, a collector that was there but slower than the events read "no collector ...
    takes events", which sent an operator looking for a process that was running. The collector
    here is a PULL socket that never reads: once its queue and the TCP buffers are full, the
    sink's sends block while it is still connected."""
    from fer_pipe.errors import OutputError
    from fer_pipe.inprocess import make_stage
    from fer_pipe.messages import Packet

    ctx = zmq.Context()
    collector = ctx.socket(zmq.PULL)
    collector.setsockopt(zmq.RCVHWM, 1)
    port = collector.bind_to_random_port("tcp://127.0.0.1")
    stage = make_stage("push", {"connect": f"tcp://127.0.0.1:{port}", "sndhwm": 1, "linger_s": 0})
    stage.open()
    stage.stop_requested = lambda: stage._waiting_since is not None  # the first wait ends the sends
    try:
        assert stage._collector_connected(30), "the collector did not connect"
        index = 0
        while stage._waiting_since is None and index < 1_000_000:
            stage.consume(Packet("cam", index, index / 30, faces=[]))
            index += 1
    finally:
        with pytest.raises(OutputError, match=r"could not be queued for .* \(sndhwm 1 were held\)$"):
            stage.close()  # the event the stop cut off is lost, which close says
        ctx.destroy(linger=0)
    err = capfd.readouterr().err
    assert f"the collector at tcp://127.0.0.1:{port} takes events slower than they come (or a network split keeps them from it); 1 are held" in err, err
    assert "no collector" not in err


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_collector_waiting_for_its_fifos_reader_stops_on_a_signal(tmp_path, sig, code):
    """``--csv`` a FIFO with no reader yet: its open waits, and Python retries it after a signal
    whose handler only sets a flag, so SIGTERM and Ctrl-C did nothing and a systemd stop waited
    for its whole timeout (s67a 4)."""
    fifo, log = tmp_path / "rows", tmp_path / "collect.log"
    os.mkfifo(fifo)
    collector = start("collect", "--bind", f"tcp://127.0.0.1:{free_port()}", "--csv", str(fifo), log=log)
    try:
        wait_for(lambda: Path(f"/proc/{collector.pid}/wchan").read_text() == "wait_for_partner", 60,
                 "the collector to wait for the FIFO's reader", collector)
        os.kill(collector.pid, sig)
        assert collector.wait(timeout=60) == code
    finally:
        end(collector, signal.SIGKILL)
    assert log.read_text() == (f"fer-pipe collect: stopped while opening {fifo} (a FIFO opens once a reader opens it); "
                               "nothing was taken\n")


def test_a_collector_whose_fifos_reader_stopped_reading_ends_on_a_second_stop(tmp_path):
    """A write to a FIFO whose reader stopped reading waits, and Python retries it after a
    signal whose handler only sets a flag: SIGTERM and Ctrl-C did nothing (s67f 1). The first
    stop still waits for the write, as a whole row is owed to a reader that reads; a second
    ends it, as a second Ctrl-C ends fer-pipe run."""
    fifo, log = tmp_path / "rows", tmp_path / "collect.log"
    os.mkfifo(fifo)
    port = free_port()
    collector = start("collect", "--bind", f"tcp://127.0.0.1:{port}", "--csv", str(fifo), log=log)
    try:
        with open(fifo, "rb"):  # a reader that opens it and never reads
            wait_for(lambda: "pulling on" in log.read_text(), 60, "the collector to bind", collector)
            with pushing(port, linger_ms=0) as push:
                sent = itertools.count()

                def blocked() -> bool:
                    """Events pushed as long as they are taken, until the collector waits on the full pipe."""
                    with contextlib.suppress(zmq.Again):
                        for seq in sent:
                            push.send_multipart([b"emotion.cam", json.dumps({
                                "schema": 1, "type": "frame", "source": "cam", "frame": seq, "timestamp": seq / 25,
                                "faces": [], "seq": seq, "run": "r"}).encode()], zmq.NOBLOCK)
                    return Path(f"/proc/{collector.pid}/wchan").read_text() == "anon_pipe_write"

                wait_for(blocked, 60, "the collector to wait on the full pipe", collector)
            os.kill(collector.pid, signal.SIGTERM)
            # taken before the next: with one pending, the kernel gives the next to another thread,
            # which cannot wake the one blocked in the write, as a second Ctrl-C seconds later would
            time.sleep(1)
            os.kill(collector.pid, signal.SIGINT)
            assert collector.wait(timeout=60) == 130
    finally:
        end(collector, signal.SIGKILL)
    assert log.read_text().splitlines()[-1] == (f"fer-pipe collect: stopped again while writing {fifo}: ending at "
                                                "once; events not yet written are lost")


def test_numbers_no_push_sink_sends_are_refused_in_events_and_state_files(tmp_path):
    """A state file's seq of 1e400 was a traceback, exit 1, the file lost; 2.9, true and -1 were
    taken as 2, 1 and -1, and a NaN time as a time. An event's seq of 2**63 was a gap of 9.2e18
    events, after which no real gap of its run was said, kept for the next collector; a seq
    that came again was said to have gone back from 3 to 3 (s67a 5, 6)."""
    from fer_pipe import collect

    state = tmp_path / "x.collect-state.json"
    for seq, last_seen in (("1e400", "1.0"), ("2.9", "1.0"), ("true", "1.0"), ("-1", "1.0"), (str(2**63), "1.0"),
                           ("3", "NaN"), ("3", '"x"'), ("3", "1e400"), ("3", "1" + "0" * 400)):  # the last: s67f 2
        state.write_text(f'{{"sources": {{"cam": {{"run": "r", "seq": {seq}, "last_seen": {last_seen}}}}}}}')
        with pytest.raises(ValueError, match=r"^(ValueError: source 'cam': seq .* and last_seen .* are not a "
                                             r"collector's|OverflowError: )"):
            collect.SequenceTracker().load(state, time.monotonic())
    tracker = collect.SequenceTracker()
    for seq in (0, 1, 2, 3):
        tracker.observe("cam", "r", seq, 0.0)
    assert tracker.observe("cam", "r", 3, 0.0) == "source cam: seq 3 came again in run r"
    assert collect.a_seq(collect.MAX_SEQ) and not collect.a_seq(collect.MAX_SEQ + 1) and not collect.a_seq(True)


def test_a_collector_on_a_full_disk_stops_with_one_line_and_a_whole_csv(clips, tmp_path):
    """The collector on a 4 KiB tmpfs in a private mount namespace. Before, it ended in a 20-line
    OSError traceback; now one line names the event it could not write, exit 1 as a run's sink."""
    from conftest import fer_pipe_on_small_tmpfs

    clip = write_video(tmp_path / "clip.avi", read_frames(clips["WolfgangLanger_Pexels.mp4"], 60))
    port = free_port()
    run = subprocess.Popen([sys.executable, "-m", "fer_pipe.cli", "run", "--quiet",
                            str(push_run_config(clip, port, tmp_path / "push.yaml", linger_s=120))],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    full = tmp_path / "full"
    full.mkdir()
    merged, copy = full / "merged.csv", tmp_path / "merged.csv"
    try:
        done = fer_pipe_on_small_tmpfs(full, "4k", "collect", "--bind", f"tcp://127.0.0.1:{port}", "--csv",
                                       str(merged), then=f"cp {merged} {copy}")
    finally:
        # the whole group: killed alone, the runner left its push sink closing for linger_s
        # (120 s) and its forkserver with it, past the end of the suite
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    lines = done.stderr.splitlines()
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    rows = list(csv.DictReader(copy.open(newline="")))
    assert [int(r["frame"]) for r in rows] == list(range(len(rows))) and 0 < len(rows) < 60
    assert re.fullmatch(rf"fer-pipe: collect: --csv {merged}: cannot write source source run [0-9a-f]{{8}} seq "
                        rf"{len(rows)}: No space left on device; the CSV holds every event before it",
                        lines[-1]), lines


def test_a_stop_while_the_push_sink_waits_for_an_absent_collector_ends_the_run(clips, tmp_path):
    """sndhwm events held and no collector: the pipeline waits, as documented. Before, a SIGTERM
    (systemctl stop) then never ended the run, the sink blocked in its send, until SIGKILL."""
    clip = write_video(tmp_path / "clip.avi", read_frames(clips["WolfgangLanger_Pexels.mp4"], 60))
    port = free_port()
    config = push_run_config(clip, port, tmp_path / "push.yaml", csv_path=tmp_path / "rows.csv", linger_s=0.5,
                             sndhwm=1)
    err = tmp_path / "run.err"
    run = start("run", str(config), "--quiet", log=err)
    try:
        # the csv branch stops short of the clip once the held push branch backs the detector up
        rows = tmp_path / "rows.csv"
        wait_for(lambda: len(csv_rows(rows)) >= 3, 120, "the first rows", run)
        run.send_signal(signal.SIGTERM)
        code = run.wait(60)  # a hang guard: before, it never ended
    finally:
        end(run, signal.SIGKILL)
    line = err.read_text().strip().splitlines()[-1]
    assert code == 2, err.read_text()
    assert re.fullmatch(rf"fer-pipe: stage 'push' \(push\) failed: while closing: push sink 'push': no collector at "
                        rf"tcp://127\.0\.0\.1:{port} when the run ended \(waited linger_s, 0\.5 s\): none of run "
                        r"[0-9a-f]{8}'s \d+ events were delivered; \d+ more could not be queued when the run "
                        r"stopped \(sndhwm 1 were held\); is fer-pipe collect running there\?", line), line


def test_a_push_sink_aimed_at_a_publisher_says_the_peer_dropped_it_before_the_handshake(clips, tmp_path):
    """Aimed at the collector's --publish by mistake, it said "10000 are held" of events ZeroMQ
    could not even queue (the PUB drops the connection before the handshake), and at its stop
    "sndhwm 10000 were held and no collector took them" (s58b 8)."""
    clip = write_video(tmp_path / "clip.avi", read_frames(clips["WolfgangLanger_Pexels.mp4"], 60))
    port = free_port()
    config = push_run_config(clip, port, tmp_path / "push.yaml", linger_s=0.5)
    ctx = zmq.Context()
    publisher = ctx.socket(zmq.PUB)
    publisher.bind(f"tcp://127.0.0.1:{port}")
    err = tmp_path / "run.err"
    run = start("run", str(config), "--quiet", log=err)
    try:
        # the sink's queue may take the clip's events before the peer drops it (the run then ends
        # once linger_s is out), or not (the sink waits, and is stopped)
        wait_for(lambda: run.poll() is not None or "and the sink waits" in err.read_text(), 120, "the push sink")
        if run.poll() is None:
            run.send_signal(signal.SIGTERM)
        code = run.wait(60)
    finally:
        end(run, signal.SIGKILL)
        publisher.close(0)
        ctx.term()
    said = ("took the connection and dropped it before ZeroMQ's handshake (the collector's --publish endpoint or a "
            "zmq sink's, which publish? or a tunnel or proxy, ssh -L or docker -p, with no collector behind it?)")
    lines = err.read_text().strip().splitlines()
    assert code == 2, err.read_text()
    # a few events may have been queued before the peer dropped the connection: "none of N delivered"
    assert lines[-1].startswith("fer-pipe: stage 'push' (push) failed: while closing: push sink 'push': ")
    assert lines[-1].count(f"the peer {said}") + lines[-1].count(f"the peer there {said}") == 1, lines[-1]
    assert "were held" not in lines[-1], lines[-1]


def test_in_a_live_run_a_sink_that_waits_holds_up_none_of_its_siblings(clips, tmp_path):
    """A camera's push sink waiting for an absent collector (or a window on a frozen display)
    held up the stage feeding it, and with it the CSV beside it: the CSV stopped a few frames in,
    and the camera's frames were dropped for every sink. The waiting sink now loses its own.
    At 10 fps a slow machine's detector and classifier keep up: at 25, a third of a core (a CI
    worker on a machine three times slower) dropped 21 frames at the source (s59c 1), where the
    bug stops the CSV a few frames in at any rate."""
    clip = write_video(tmp_path / "clip.avi", read_frames(clips["WolfgangLanger_Pexels.mp4"], 60), fps=10)
    config = push_run_config(clip, free_port(), tmp_path / "push.yaml", csv_path=tmp_path / "rows.csv", linger_s=0.1,
                             sndhwm=1)
    graph = yaml.safe_load(config.read_text())
    graph["stages"]["source"]["params"]["realtime"] = True
    config.write_text(yaml.safe_dump(graph))
    err = tmp_path / "run.err"
    run = start("run", str(config), "--quiet", log=err)
    try:
        wait_for(lambda: any(r["frame"] == "59" for r in csv_rows(tmp_path / "rows.csv")), 120,
                 "the CSV to reach the clip's last frame", run)
    finally:
        end(run, signal.SIGTERM)
    frames = {int(r["frame"]) for r in csv_rows(tmp_path / "rows.csv")}
    # from its first row on: the replay starts while a loaded machine still starts the stages after
    # it, and 18 frames went before the first row (CI 34a), as they go from any live source then
    missed = sorted(set(range(min(frames), 60)) - frames)
    assert len(missed) <= 6, sorted(frames)  # a few may go to a busy machine, as any live run's
    assert ("fer-pipe: sink 'push' fell behind the live source; the oldest frames waiting for it are dropped "
            "(counted in the dropped column of 'classifier')") in err.read_text()


def test_only_sinks_that_live_sources_alone_reach_drop_frames(tmp_path):
    """A file source's frames were dropped into a slow sink that a camera also fed (exit 0, most
    of the file missing): a sink drops only where every source reaching it is live."""
    from fer_pipe.runner import _drops_for_live

    stages = {"cam": {"type": "video", "params": {"path": "cam.avi", "realtime": True}},
              "file": {"type": "video", "params": {"path": "file.avi"}},
              "camdet": {"type": "haar", "inputs": ["cam"]},
              "camcls": {"type": "classifier", "inputs": ["camdet"]},
              "both": {"type": "haar", "inputs": ["cam", "file"]},
              "bothcls": {"type": "classifier", "inputs": ["both"]},
              "camcsv": {"type": "csv", "inputs": ["camcls"], "params": {"path": "a.csv"}},
              "bothcsv": {"type": "csv", "inputs": ["bothcls"], "params": {"path": "b.csv"}}}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({"stages": stages}))
    graph = load_graph(tmp_path / "g.yaml")
    live = {"cam"}
    assert [_drops_for_live(graph, name, live) for name in ("camcsv", "bothcsv", "camdet")] == [True, False, False]


def test_a_push_sink_waiting_for_a_collector_ends_when_the_runner_is_killed(clips, tmp_path):
    """The sink holds SIGTERM while it handles a frame, so the SIGTERM a stage gets when the
    runner dies could not reach one blocked in its send: it outlived the run."""
    from fault_plugin import descendants, stat, wait_gone

    clip = write_video(tmp_path / "clip.avi", read_frames(clips["WolfgangLanger_Pexels.mp4"], 60))
    config = push_run_config(clip, free_port(), tmp_path / "push.yaml", classify=False, linger_s=0.5, sndhwm=1)
    run = start("run", str(config), "--quiet", log=tmp_path / "run.err")
    try:
        kids = wait_for(lambda: len(descendants(run.pid)) >= 5 and descendants(run.pid), 60,  # tracker, server, 3
                        "the stages", run)
        wait_for(lambda: not run.poll() and all(stat(k)[:1] == ["S"] for k in kids), 60, "the push sink to block")
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        assert not wait_gone(kids, within=30), "a stage outlived the killed runner"
    finally:
        end(run, signal.SIGKILL)


def test_a_push_sink_behind_a_flapping_peer_still_delivers_when_the_collector_returns(monkeypatch):
    """A peer that accepts and drops connections (a proxy whose collector is down) makes two
    monitor events per attempt; unread, about 2,000 of them stopped libzmq's I/O thread and the
    sink never sent again. The reconnect interval is cut from 100 ms to 2 ms (the only change,
    through the context the sink makes) so the flapping takes seconds instead of minutes."""
    import threading

    from fer_pipe.messages import Packet
    from fer_pipe.stages import push_sink

    class QuickReconnect(zmq.Context):
        def socket(self, kind, **kwargs):
            sock = super().socket(kind, **kwargs)
            sock.setsockopt(zmq.RECONNECT_IVL, 2)
            return sock

    monkeypatch.setattr(push_sink.zmq, "Context", QuickReconnect)
    port = free_port()
    peer = socket.socket()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    peer.bind(("127.0.0.1", port))
    peer.listen(64)
    peer.settimeout(0.2)
    flapping, accepted = threading.Event(), []

    def accept_and_drop() -> None:
        while not flapping.is_set():
            try:
                peer.accept()[0].close()
                accepted.append(1)
            except socket.timeout:
                pass

    thread = threading.Thread(target=accept_and_drop)
    thread.start()
    sink = push_sink.PushSink("push", push_sink.PushParams(connect=f"tcp://127.0.0.1:{port}", linger_s=5))
    sink.open()
    frame, deadline = 0, time.monotonic() + 60
    try:
        # well past the ~2,000 unread monitor events that stopped it (and the flapping with it)
        while len(accepted) < 3000 and time.monotonic() < deadline:
            sink.consume(Packet("cam", frame, frame / 25, faces=[]))
            frame += 1
            time.sleep(0.02)
    finally:
        flapping.set()
        thread.join()
        peer.close()
    assert len(accepted) >= 2100, len(accepted)  # flapped past the ~2,000 monitor events that stopped the old sink
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind(f"tcp://127.0.0.1:{port}")
    try:
        for _ in range(20):
            sink.consume(Packet("cam", frame, frame / 25, faces=[]))
            frame += 1
        got = []
        while len(got) < frame and pull.poll(10_000):
            got.append(json.loads(pull.recv_multipart()[-1])["seq"])
        if got == list(range(frame)):
            sink.close()  # while the collector is there; not on failure, where the stuck I/O thread would hang it
    finally:
        pull.close(0)
        ctx.term()
    assert got == list(range(frame))


def test_a_collector_too_slow_to_take_everything_within_linger_s_is_a_failure_not_a_success():
    """A collector connected but not reading (busy, or on a slow link) when the run ended: what
    ZeroMQ still held after linger_s was dropped, and the sink said "N events to ..." as if all
    had been delivered. The peer here is a real PULL socket that never reads; the events are
    large enough (40 faces) that they cannot all sit in the kernel's socket buffers."""
    from fer_pipe.errors import OutputError
    from fer_pipe.messages import Face, Packet
    from fer_pipe.stages.push_sink import PushParams, PushSink

    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 1)
    pull.setsockopt(zmq.RCVBUF, 4096)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    sink = PushSink("push", PushParams(connect=f"tcp://127.0.0.1:{port}", sndhwm=5000, linger_s=0.5))
    sink.open()
    faces = [Face((1, 2, 3, 4), np.full(7, 1 / 7))] * 40
    try:
        for frame in range(2000):
            sink.consume(Packet("cam", frame, frame / 25, faces=faces))
        with pytest.raises(OutputError) as failed:
            sink.close()
    finally:
        pull.close(0)
        ctx.term()
    assert str(failed.value) == (
        f"push sink 'push': the collector at tcp://127.0.0.1:{port} had not taken all of run "
        f"{sink.run_id}'s 2000 events when linger_s (0.5 s) ran out: those still held then were lost; give a "
        "slow collector a longer linger_s")


def test_a_stalled_collector_leaves_the_events_it_did_not_take_in_view_of_linger_s():
    """A collector stalled (a paused VM, a partition) as a shard ended: the kernel took the
    sink's events into a send buffer that grew to megabytes, the close returned at once, the
    sink said "6000 events to ..." and exited 0, and the exited shard's socket, left with a
    collector whose window stayed shut, was dropped by the kernel with 3,900 to 5,100 of them
    (s43c 3). The sink's send buffer is small now, so what the collector has not taken stays
    in ZeroMQ's queue, where linger_s sees it. The peer is a real PULL socket that never reads."""
    from fer_pipe.errors import OutputError
    from fer_pipe.messages import Packet
    from fer_pipe.stages.push_sink import PushParams, PushSink

    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 1)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    sink = PushSink("push", PushParams(connect=f"tcp://127.0.0.1:{port}", linger_s=0.5))
    sink.open()
    try:
        for frame in range(6000):
            sink.consume(Packet("gate", frame, frame / 25, faces=[]))
        with pytest.raises(OutputError, match="had not taken all of run .*'s 6000 events when linger_s"):
            sink.close()
    finally:
        pull.close(0)
        ctx.term()


def test_a_collector_that_took_every_event_and_then_left_is_not_reported_as_a_loss(capfd):
    """A collector that took all 50 events and then stopped (a redeploy) before the run ended:
    the sink said "events still held (of 50 sent) were lost" and failed the run, though none
    was held. A close with a linger time returns at once when nothing is held, which tells."""
    from fer_pipe.messages import Packet
    from fer_pipe.stages.push_sink import PushParams, PushSink

    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    sink = PushSink("push", PushParams(connect=f"tcp://127.0.0.1:{port}", linger_s=0.5))
    sink.open()
    try:
        for frame in range(50):
            sink.consume(Packet("cam", frame, frame / 25, faces=[]))
        got = [json.loads(pull.recv_multipart()[-1])["seq"] for _ in range(50) if pull.poll(10_000)]
    finally:
        pull.close(0)
        ctx.term()
    assert got == list(range(50))
    sink.close()
    assert capfd.readouterr().err.endswith(f"push sink 'push': run {sink.run_id}: 50 events to tcp://127.0.0.1:{port}\n")


def test_every_network_stage_and_command_takes_the_ipv6_loopback(clips, tmp_path):
    """``tcp://[::1]:PORT`` passes every loopback check, and then failed in the stage or the
    command with "No such device" (ZeroMQ leaves IPv6 off): the zmq sink, the episodes
    publisher, the push sink, the collector and the subscriber all take it now."""
    try:
        pull, republish, events, episodes = (free_port("::1") for _ in range(4))
    except OSError as exc:
        pytest.skip(f"this machine has no IPv6 loopback ({exc})")
    clip = write_video(tmp_path / "clip.avi", read_frames(clips["WolfgangLanger_Pexels.mp4"], 10))
    stages = {"source": {"type": "video", "params": {"path": str(clip)}},
              "detector": {"type": "haar", "inputs": ["source"]},
              "track": {"type": "track", "inputs": ["detector"]},
              "classifier": {"type": "classifier", "inputs": ["track"]},
              "smooth": {"type": "smooth", "inputs": ["classifier"]},
              "push": {"type": "push", "inputs": ["smooth"], "params": {"connect": f"tcp://[::1]:{pull}"}},
              "events": {"type": "zmq", "inputs": ["smooth"],
                         "params": {"endpoint": f"tcp://[::1]:{events}", "wait_subscribers": 1}},
              "episodes": {"type": "episodes", "inputs": ["smooth"],
                           "params": {"path": str(tmp_path / "episodes.csv"), "publish": episodes, "host": "[::1]"}}}
    config = tmp_path / "v6.yaml"
    config.write_text(yaml.safe_dump({"stages": stages}))
    merged, log = tmp_path / "merged.csv", tmp_path / "collect.log"
    collector = start("collect", "--bind", f"tcp://[::1]:{pull}", "--publish", f"tcp://[::1]:{republish}",
                      "--csv", str(merged), log=log)
    subscriber = subprocess.Popen([sys.executable, "-m", "fer_pipe.cli", "subscribe", f"tcp://[::1]:{events}",
                                   "--count", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: "pulling on" in log.read_text(), 60, "the collector to bind", collector)
        done = subprocess.run([sys.executable, "-m", "fer_pipe.cli", "run", str(config), "--quiet"],
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        out, err = subscriber.communicate(timeout=60)
        assert subscriber.returncode == 0, err
        assert json.loads(out)["source"] == "source"
        wait_for(lambda: rows_by_source(merged)["source"] >= 10, 60, "the run's rows", collector)
    finally:
        subscriber.kill()
        code = end(collector)
    assert code == 0, log.read_text()


def test_an_ipv6_host_is_written_in_brackets_given_with_or_without_them():
    from fer_pipe.endpoints import tcp_endpoint

    assert tcp_endpoint("::1", 5571) == tcp_endpoint("[::1]", 5571) == "tcp://[::1]:5571"
    assert tcp_endpoint("127.0.0.1", 5571) == "tcp://127.0.0.1:5571"


def test_a_push_sink_reads_its_monitor_on_an_outage_with_nothing_to_send():
    """libzmq's I/O thread stops every send once about 2,000 monitor events lie unread, and the
    push sink read them only as it sent: with down_again_s 0, a camera down all night sent
    nothing after its first source_down, and 200 s of a tunnel with no collector behind it
    (a connection made and dropped ten times a second) stopped the sink for good (s63b 1)."""
    from fer_pipe.inprocess import make_stage
    from fer_pipe.messages import outage

    port = free_port()
    sink = make_stage("push", {"connect": f"tcp://127.0.0.1:{port}", "down_again_s": 0, "linger_s": 1})
    sink.open()
    ctx = zmq.Context()
    try:
        sink.outage(outage("cam", -1, 1.0))  # its source_down, held for the collector
        pull = ctx.socket(zmq.PULL)
        pull.bind(f"tcp://127.0.0.1:{port}")
        wait_for(lambda: pull.poll(100), 30, "the held source_down")  # connected: its events lie in the monitor
        sink.outage(outage("cam", -1, 2.0))  # nothing due to send
        assert not sink._monitor.poll(0)
        sink.close()
    finally:
        ctx.destroy(linger=0)


def test_a_push_sink_says_a_source_down_again_every_down_again_s(monkeypatch):
    """The collector republishes each outage event once: a subscriber that connected to it during
    an outage heard nothing until the camera came back, and could not tell a camera that is down
    from a shard that has died (s30b). The push sink says it again about every down_again_s, at
    the outage packet nearest each beat, as the zmq sink does every heartbeat_s."""
    from types import SimpleNamespace

    from fer_pipe import outage_notices
    from fer_pipe.inprocess import run_stage
    from fer_pipe.messages import Packet, outage

    ticks = iter(range(1000))
    monkeypatch.setattr(outage_notices, "time", SimpleNamespace(monotonic=lambda: 1000.0 + next(ticks)))
    port = free_port()
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind(f"tcp://127.0.0.1:{port}")
    try:
        packets = [Packet("cam", 0, 0.0, faces=[]), *[outage("cam", 0, 5.0 + i) for i in range(6)],
                   Packet("cam", 1, 11.0, faces=[])]
        run_stage("push", packets, {"connect": f"tcp://127.0.0.1:{port}", "down_again_s": 2})
        got = []
        while pull.poll(1000):
            got.append(json.loads(pull.recv_multipart()[-1]))
    finally:
        pull.close(linger=0)
        ctx.term()
    assert [(e["type"], e["seq"], e["timestamp"]) for e in got] == [
        ("frame", 0, 0.0), ("source_down", 1, 5.0), ("source_down", 2, 7.0), ("source_down", 3, 9.0),
        ("source_up", 4, 11.0), ("frame", 5, 11.0)]
    assert {e["since"] for e in got[1:5]} == {5.0}


def test_late_events_fill_only_what_is_still_missing_in_the_run_they_belong_to():
    """A seq that came twice filled a gap twice, so "came late ... was none" was said with seq 7
    never come; and while two runs sent at once a late seq was "seq went back" and then another
    gap (s43e)."""
    from fer_pipe.collect import SequenceTracker

    def said(events):
        tracker = SequenceTracker()
        lines = [tracker.observe("cam", run, seq, 0.0) for run, seq in events]
        return [line for line in lines if line], tracker.sources["cam"].gaps

    r = [("r", seq) for seq in (0, 1, 2, 3, 4, 8, 9, 10, 5, 5, 6)]
    assert said(r) == (["source cam: gap: seq 5..7 missing (3 events) in run r",
                        "source cam: seq went back from 10 to 5 in run r"], 1)
    both = [("a", 0), ("a", 1), ("b", 0), ("a", 2), ("b", 1), ("a", 5), ("b", 2), ("a", 3), ("a", 4), ("a", 6)]
    lines, gaps = said(both)
    assert lines[2:] == ["source cam: gap: seq 3..4 missing (2 events) in run a",
                         "source cam: seq 3..4 of run a came late, after seq 5: the gap said for them was none"]
    assert lines[1].startswith("source cam: events from two runs at once (b, a)") and gaps == 0
    # a seq that came again took the count back: the 50 after it were said missing, all written (s58b 1)
    assert said([("r", seq) for seq in (*range(101), 50, *range(101, 111))]) == (
        ["source cam: seq went back from 100 to 50 in run r"], 0)


def test_a_collector_takes_every_descriptor_its_hard_limit_allows(tmp_path):
    """Each shard holds one, and each peer that has connected and said nothing yet: under
    systemd's soft limit of 1,024 (128 here), 200 such peers shut the shards out (s58b 5)."""
    merged, log = tmp_path / "merged.csv", tmp_path / "collect.log"
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    collector = subprocess.Popen([sys.executable, "-m", "fer_pipe.cli", "collect", "--bind",
                                  f"tcp://127.0.0.1:{free_port()}", "--csv", str(merged)],
                                 stdout=subprocess.DEVNULL, stderr=open(log, "a"), start_new_session=True,
                                 preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard)))
    try:
        wait_for(lambda: "pulling on" in log.read_text(), 60, "the collector to bind", collector)
        limits = Path(f"/proc/{collector.pid}/limits").read_text()
    finally:
        assert end(collector) == 0, log.read_text()
    assert re.search(rf"^Max open files +{hard} +{hard} +files", limits, re.M), limits


def test_a_collector_follows_a_bounded_number_of_sources_and_gap_pieces(tmp_path, monkeypatch, capfd):
    """A stranger's 162,000 sources took it to 150 MB, a 10.8 MB state file written every
    second and as many lines at its stop; late seqs that split a gap of 10^12 took it down to
    400 events a second (s58b 3). The least recently heard from source is forgotten for a new
    one, said once and at the stop; a gap split into too many pieces is no longer followed."""
    from fer_pipe import collect
    from fer_pipe.csvfile import CsvOutput

    monkeypatch.setattr(collect, "SOURCES_KEPT", 3)
    port = free_port()
    collector = collect.Collector(f"tcp://127.0.0.1:{port}", str(tmp_path / "merged.csv"))
    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    pull.bind(collector.bind)
    push.connect(collector.bind)
    try:
        body = '{"schema":1,"type":"frame","source":"%s","frame":0,"timestamp":0.0,"faces":[],"seq":%d,"run":"r"}'
        for source, seq in (("a", 0), ("b", 0), ("c", 0), ("a", 1), ("d", 0), ("e", 0), ("a", 2)):
            push.send_multipart([b"emotion.x", (body % (source, seq)).encode()])
        with CsvOutput(collector.csv_path, "--csv", collector.columns, append=True) as writer:
            # taken as they come: a take ends where the socket is empty, and one began once the
            # first event was there took it alone in a CI run, the others still on their way
            wait_for(lambda: collector._take(pull, None, writer, time.monotonic() + 10) or collector._taken == 7,
                     30, "the seven events")
        collector._summary()
    finally:
        push.close(0)
        pull.close(0)
        ctx.term()
    assert list(collector.tracker.sources) == ["d", "e", "a"]  # b, then c: a was heard from again
    assert capfd.readouterr().err.splitlines() == [
        "fer-pipe collect: following 3 sources, the most a collector does: source b, heard from least recently, is "
        "forgotten for d, as the least recent will be for each new one (its next event is said as a join); said once",
        "fer-pipe collect: 2 sources forgotten for newer ones, the first b, c",
        "fer-pipe collect: source a: 3 events, 0 gaps, 0 restarts",
        "fer-pipe collect: source d: 1 events, 0 gaps, 0 restarts",
        "fer-pipe collect: source e: 1 events, 0 gaps, 0 restarts"]
    tracker = collect.SequenceTracker()
    for seq in (0, 10**12, *range(2, 400, 2)):
        tracker.observe("cam", "r", seq, 0.0)
    assert tracker.sources["cam"].gaps == 1 and not tracker.sources["cam"].missing  # 100 pieces at most
    # and as many pieces of all a source's gaps: 100 gaps of 100 pieces each grew without bound (s66b 2)
    tracker = collect.SequenceTracker()
    for seq in (0, *range(10**9, 101 * 10**9, 10**9), *(gap * 10**9 + 2 * k for gap in range(100) for k in (1, 2, 3))):
        tracker.observe("cam", "r", seq, 0.0)
    missing = tracker.sources["cam"].missing
    assert tracker.sources["cam"].gaps == 100 and sum(map(len, missing.values())) <= collect.PIECES_KEPT
    assert tracker.observe("cam", "r", 99 * 10**9 + 8, 0.0) is None  # the newest still followed
    assert tracker.observe("cam", "r", 8, 0.0) == "source cam: seq went back from 100000000000 to 8 in run r"
    # an older collector's state held any number: the most recently heard from are taken, in that order
    state = tmp_path / "old.collect-state.json"
    state.write_text(json.dumps({"sources": {name: {"run": "r", "seq": 1, "last_seen": 1000.0 + at} for name, at in
                                             (("d", 4), ("a", 1), ("e", 5), ("b", 2), ("c", 3))}, "stopped": True}))
    tracker = collect.SequenceTracker()
    assert tracker.load(state, time.monotonic()) == (3, True)
    assert list(tracker.sources) == ["c", "d", "e"]


def test_a_state_the_collector_could_not_keep_leaves_no_older_one_behind(tmp_path):
    """The file kept a second before stayed, and the next collector took its numbers for the
    last ones: a gap of 20 events that were all in the CSV (s43e)."""
    from fer_pipe.collect import SequenceTracker

    state = tmp_path / "merged.csv.collect-state.json"
    state.write_text('{"sources": {}}')
    # as a full disk would, a file size limit keeps the draft from being written whole
    script = ("import resource, signal, sys\nfrom pathlib import Path\nfrom fer_pipe.collect import SequenceTracker\n"
              "tracker = SequenceTracker()\ntracker.observe('cam', 'r', 0, 0.0)\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\nresource.setrlimit(resource.RLIMIT_FSIZE, (10, 10))\n"
              "try:\n    tracker.save(Path(sys.argv[1]), 1.0, stopped=True)\n"
              "except OSError as exc:\n    print(exc.strerror)\n")
    done = subprocess.run([sys.executable, "-c", script, str(state)], capture_output=True, text=True, timeout=60)
    assert (done.stdout, done.stderr) == ("File too large\n", "")
    assert list(tmp_path.iterdir()) == []
    tracker = SequenceTracker()
    tracker.observe("cam", "r", 0, 0.0)
    # a name of 255 bytes, the most Linux takes, has its state kept: its draft's name is cut (s66d 3)
    longest = tmp_path / ("é" * 100 + "m" * (255 - 200 - len(".csv.collect-state.json")) + ".csv.collect-state.json")
    tracker.save(longest, 1.0, stopped=True)
    assert json.loads(longest.read_text())["sources"]["cam"]["seq"] == 0
    assert list(tmp_path.iterdir()) == [longest]


def test_the_collector_keeps_its_state_through_no_link_planted_beside_the_csv(tmp_path):
    """The state's draft had a fixed name beside the CSV: in a folder another user could write,
    a link planted there had the collector write its state over any file it could write (s66b 4)."""
    from fer_pipe.collect import SequenceTracker

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    state = tmp_path / "merged.csv.collect-state.json"
    (tmp_path / f".{state.name}.tmp").symlink_to(victim)
    tracker = SequenceTracker()
    tracker.observe("cam", "r", 0, 0.0)
    tracker.save(state, 0.0, stopped=True)
    assert victim.read_text() == "precious"
    assert json.loads(state.read_text())["sources"]["cam"]["seq"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{state.name}.tmp", state.name, "victim.txt"]


def test_a_push_sink_whose_collector_never_comes_says_so_before_its_events_fill_sndhwm(monkeypatch, capfd):
    """A shard whose collector was never there (a wrong address, one not started) said nothing
    until its sndhwm events were held, 17 minutes at a camera's 10 a second, its status line
    showing the sink's rate as if all were well (s65c 1). NONE_YET_S is shortened here, the
    socket and the missing collector are real."""
    from fer_pipe.inprocess import make_stage
    from fer_pipe.messages import Packet
    from fer_pipe.stages import push_sink

    monkeypatch.setattr(push_sink, "NONE_YET_S", 0.5)
    port = free_port()
    stage = make_stage("push", {"connect": f"tcp://127.0.0.1:{port}", "linger_s": 0})
    stage.open()
    try:
        for index in range(3):
            stage.consume(Packet("cam", index, index / 30, faces=[]))
        time.sleep(0.6)
        for index in range(3, 6):
            stage.consume(Packet("cam", index, index / 30, faces=[]))
    finally:
        with pytest.raises(InputError, match="none of run .*'s 6 events were delivered"):
            stage.close()
    err = capfd.readouterr().err
    assert err.count("has connected") == 1, err
    assert (f"fer-pipe: push sink 'push': run {stage.run_id}: no collector at tcp://127.0.0.1:{port} has connected "
            "in 0.5 s; the sink holds its events for one (so far 3, up to sndhwm 10000), and then waits\n") in err


def test_the_collector_says_a_source_gone_silent_once_until_its_next_event(tmp_path):
    """A shard killed and not restarted, or its host gone, was said by no one: the collector's
    log was as quiet as for shards at work, and its summary said nothing either (s65c 2). One
    whose last event said its camera down is said too, marked so, and one a collector after it
    hears nothing from is marked as heard before it (s65d 1)."""
    merged, log = tmp_path / "merged.csv", tmp_path / "collect.log"
    port = free_port()
    collector = start("collect", "--bind", f"tcp://127.0.0.1:{port}", "--csv", str(merged), "--silent-after", "1",
                      log=log)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    try:
        wait_for(lambda: "pulling on" in log.read_text(), 60, "the collector to bind", collector)
        push.connect(f"tcp://127.0.0.1:{port}")

        def send(source: str, seq: int, kind: str = "frame") -> None:
            event = {"schema": 1, "type": kind, "source": source, "frame": seq, "timestamp": seq / 10, "seq": seq,
                     "run": "r1", **({"since": 0.0} if kind == "source_down" else {"faces": []})}
            push.send_multipart([f"emotion.{source}".encode(), json.dumps(event).encode()])

        send("door", 0)
        send("gate", 0)
        send("gate", 1, "source_down")
        wait_for(lambda: "no events for 1 s or more from door (run r1 seq 0, " in log.read_text(), 60,
                 "the silence to be said", collector)
        time.sleep(1.5)  # said once: not again while it stays silent
        send("door", 1)
        wait_for(lambda: rows_by_source(merged)["door"] == 2, 60, "door's second event", collector)
        wait_for(lambda: log.read_text().count("no events for 1 s or more from door") == 2, 60,
                 "the second silence to be said", collector)
    finally:
        push.close(linger=0)
        ctx.term()
        code = end(collector)
    text = log.read_text()
    assert code == 0, text
    assert re.search(r"no events for 1 s or more from door \(run r1 seq 0, \d+ s\), gate \(run r1 seq 1, \d+ s, its "
                     r"camera down\): its shard stopped or was killed, or its run ended, or its host is gone; said again "
                     r"only after its next event\n", text), text
    assert [line for line in text.splitlines() if "door:" in line][0].startswith(
        "fer-pipe collect: source door: 2 events, 0 gaps, 0 restarts; silent for the last "), text
    again = start("collect", "--bind", f"tcp://127.0.0.1:{port}", "--csv", str(merged), "--silent-after", "1", log=log)
    try:
        wait_for(lambda: "before this collector started" in log.read_text(), 60, "the silence to be said", again)
    finally:
        assert end(again) == 0, log.read_text()
    assert re.search(r"from gate \(run r1 seq 1, \d+ s, its camera down, before this collector started\), door \(run r1 "
                     r"seq 1, \d+ s, before this collector started\)", log.read_text()), log.read_text()


def test_a_source_dated_in_the_future_by_a_clock_set_back_does_not_hide_the_silent_ones(tmp_path, capsys):
    """A wall clock set back between two collectors (a host with no real-time clock, started
    before its time sync) put a source the last one kept in the future; the silence check stops
    at the first source heard of lately, and said none (s65g 2)."""
    from fer_pipe.collect import Collector

    collector = Collector("tcp://127.0.0.1:5999", str(tmp_path / "merged.csv"), silent_after_s=60)
    state = tmp_path / "merged.csv.collect-state.json"
    state.write_text(json.dumps({"sources": {"gate": {"run": "r1", "seq": 5, "last_seen": time.time() + 3600}},
                                 "stopped": True}))
    now = time.monotonic()
    assert collector.tracker.load(state, now) == (1, True)
    collector.tracker.observe("door", "r2", 0, now)  # heard here, after the state was taken
    collector._say_silent(now + 100)
    said = capsys.readouterr().err
    assert "from gate (run r1 seq 5, 100 s, before this collector started), door (run r2 seq 0, 100 s)" in said, said


def test_a_push_sink_aimed_at_a_peer_that_refuses_it_says_so_in_its_first_line(monkeypatch, capfd):
    """Aimed at a collector's --publish (a PUB socket, which ZeroMQ's handshake refuses), the sink's
    first line said no collector had connected, and named the refusing peer only later (s65g 3)."""
    from fer_pipe.inprocess import make_stage
    from fer_pipe.messages import Packet
    from fer_pipe.stages import push_sink

    monkeypatch.setattr(push_sink, "NONE_YET_S", 0.5)
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    stage = make_stage("push", {"connect": f"tcp://127.0.0.1:{port}", "linger_s": 0})
    stage.open()
    # between the peer's drop and the next connection the socket has no pipe, and a send there
    # waits for a collector until a stop: this run is stopping, so such a send is counted unsent
    stage.stop_requested = lambda: True
    try:
        stage.consume(Packet("cam", 0, 0.0, faces=[]))
        wait_for(lambda: stage._collector_connected(0.0) or stage._refused, 30, "the peer to refuse the sink")
        time.sleep(0.6)
        stage.consume(Packet("cam", 1, 0.1, faces=[]))
    finally:
        with pytest.raises(InputError):
            stage.close()
        pub.close(linger=0)
        ctx.term()
    first = next(line for line in capfd.readouterr().err.splitlines() if "has connected in" in line)
    assert re.fullmatch(rf"fer-pipe: push sink 'push': run {stage.run_id}: no collector has connected in 0\.5 s: the "
                        rf"peer at tcp://127\.0\.0\.1:{port} {re.escape(push_sink.REFUSED)}; the sink holds its events "
                        r"for one \(so far 1, up to sndhwm 10000\), and then waits", first), first


def test_a_collector_that_falls_behind_leaves_what_waits_in_the_shards(tmp_path):
    """ZeroMQ's 1,000 events a connection, each up to 1 MiB, were held in the collector: one peer
    of four connections took it to 3.5 GB in 20 s (s66b 1). A collector that reads nothing (its
    socket real, bound, never read) holds no more than RECEIVE_HWM of 64 KiB events a connection,
    besides what the kernel's buffers hold, and the sender is made to wait."""
    from fer_pipe import collect

    ctx = zmq.Context()
    address = f"tcp://127.0.0.1:{free_port()}"
    pull, push = collect.pull_socket(ctx, address), ctx.socket(zmq.PUSH)
    pull.bind(address)
    push.sndhwm = 1
    push.connect(address)
    event = b"x" * 65536
    sent = refused = 0
    try:
        while refused < 10 and sent < 2000:  # the sender waits once 10 tries 0.1 s apart were refused
            try:
                push.send_multipart([b"emotion.cam", event], zmq.NOBLOCK)
                sent, refused = sent + 1, 0
            except zmq.Again:
                refused += 1
                time.sleep(0.1)
    finally:
        push.close(0)
        pull.close(0)
        ctx.term()
    assert collect.RECEIVE_HWM <= sent < 600, sent


def test_the_sequence_bookkeeping_holds_where_a_broken_one_would_not():
    """What mutation testing found no test would catch (s66f 2-4, 9, 10): gaps alone, with no late
    event, kept within the budget; a late seq of one run filling another's gap, hiding a loss; a
    run evicted by newer ones while it sends; the state's times carried across collectors."""
    from fer_pipe import collect

    tracker = collect.SequenceTracker()
    for seq in range(0, 2 * (collect.PIECES_KEPT + 50), 2):  # a lossy shard: every other event lost
        tracker.observe("cam", "r", seq, 0.0)
    assert sum(map(len, tracker.sources["cam"].missing.values())) <= collect.PIECES_KEPT
    assert tracker.sources["cam"].gaps == collect.PIECES_KEPT + 49

    tracker = collect.SequenceTracker()
    lines = [tracker.observe("cam", run, seq, 0.0) for run, seq in
             [("a", 0), ("a", 1), ("a", 2), ("a", 5), *(("b", seq) for seq in range(8)), ("b", 3)]]
    assert lines[-1] == "source cam: seq went back from 7 to 3 in run b"
    assert tracker.sources["cam"].gaps == 1 and tracker.sources["cam"].missing

    tracker = collect.SequenceTracker()
    lines = [tracker.observe("cam", run, seq, 0.0) for run, seq in
             [("a", 0), ("b", 0), ("a", 1), ("c", 0), ("a", 2), ("d", 0), ("a", 3), ("e", 0), ("a", 4)]]
    assert not any("run a began" in line for line in lines if line), lines
    assert tracker.sources["cam"].restarts == 3


def test_a_collector_hands_on_how_long_each_source_was_silent_and_names_ten(tmp_path, capfd):
    """A kept source's last_seen is a wall-clock time in the file and a monotonic one in memory:
    kept as it was, the next collector said every source silent for 1.8e9 s (s66f 4). The silence
    line names ten sources and counts the rest, and a source heard again loses its mark (s66f 9)."""
    from fer_pipe import collect

    now = time.monotonic()
    tracker = collect.SequenceTracker()
    tracker.observe("gate", "r1", 6, now - 30)
    state = tmp_path / "merged.csv.collect-state.json"
    tracker.save(state, now, stopped=True)
    taken = collect.SequenceTracker()
    assert taken.load(state, now) == (1, True)
    assert abs((now - taken.sources["gate"].last_seen) - 30) < 2

    collector = collect.Collector("tcp://127.0.0.1:1", str(tmp_path / "m.csv"))
    for index in range(15):
        collector.tracker.observe(f"s{index:02}", "r", 0, 0.0)
    collector._say_silent(100.0)
    collector._say_silent(101.0)
    line, = capfd.readouterr().err.splitlines()
    assert line.count("s0") + line.count("s1") == 10 and " and 5 more: " in line, line
    collector.tracker = taken
    taken.observe("gate", "r1", 7, now)
    collector._say_silent(now + 100)
    assert "from gate (run r1 seq 7, 100 s): " in capfd.readouterr().err


def test_the_collectors_socket_refuses_an_event_over_a_mib_before_reading_it():
    """Without its MAXMSGSIZE the event was read whole into memory and only then refused by its
    fields (s66f 5); the other options are as their reasons say."""
    from fer_pipe import collect
    from fer_pipe.events import MAX_EVENT_BYTES

    ctx = zmq.Context()
    address = f"tcp://127.0.0.1:{free_port()}"
    pull, push = collect.pull_socket(ctx, address), ctx.socket(zmq.PUSH)
    try:
        pull.bind(address)
        push.connect(address)
        push.send_multipart([b"emotion.cam", b"x" * (MAX_EVENT_BYTES + 1)])
        assert not pull.poll(1500)
        assert (pull.heartbeat_ivl, pull.tcp_keepalive, pull.tcp_keepalive_idle, pull.tcp_keepalive_intvl,
                pull.tcp_keepalive_cnt, pull.handshake_ivl) == (0, 1, 60, 10, 3, collect.HANDSHAKE_MS)
    finally:
        push.close(0)
        pull.close(0)
        ctx.term()
