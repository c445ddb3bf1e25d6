"""The Python API: a graph run in the multi-process runner, its results yielded in this process."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap

import cv2
import pytest
from conftest import read_frames, write_video
from fault_plugin import assert_valid_prefix
from livetools import csv_rows

from fer_pipe.api import RunFailed, results
from fer_pipe.errors import ConfigError, InputError, UserError


def test_results_stream_every_frame_of_a_real_clip_as_the_csv_has_them(short_clip, tmp_path):
    csv_path = tmp_path / "rows.csv"
    with results("configs/video_to_csv.yaml", [f"source.path={short_clip}", f"csv.path={csv_path}"]) as stream:
        events = list(stream)
    assert stream.result.exit_code == 0
    assert [e["frame"] for e in events] == list(range(60))  # every frame once, in order, faces or not
    assert {e["source"] for e in events} == {"source"}
    from_api = [(e["frame"], f["x"], f["y"], f["w"], f["h"], f["label"], f["confidence"])
                for e in events for f in e["faces"]]
    from_csv = [(int(r["frame"]), int(r["x"]), int(r["y"]), int(r["w"]), int(r["h"]), r["label"],
                 float(r["confidence"])) for r in csv_rows(csv_path) if r["label"]]
    assert from_csv and [t[:6] for t in from_api] == [t[:6] for t in from_csv]
    assert all(abs(api[6] - row[6]) <= 1e-4 for api, row in zip(from_api, from_csv))  # CSV keeps 4 decimals


def test_a_config_dict_and_stopping_early(short_clip):
    config = {"stages": {
        "cam": {"type": "video", "params": {"path": str(short_clip), "source_id": "desk"}},
        "detector": {"type": "haar", "inputs": ["cam"]},
        "classifier": {"type": "classifier", "inputs": ["detector"]},
    }}
    seen = []
    with results(config) as stream:
        for event in stream:
            seen.append(event["frame"])
            if event["frame"] == 4:
                break
    assert seen == [0, 1, 2, 3, 4]
    assert stream.result is not None and stream.result.exit_code == 130  # drained and closed, as on Ctrl-C
    assert event["faces"] and all(f["probs"] for f in event["faces"]) and event["source"] == "desk"


def test_bad_config_raises_before_anything_starts(tmp_path):
    with pytest.raises(ConfigError, match="scale_factor"):
        results("configs/video_to_csv.yaml", ["detector.scale_factor=0.5"])
    with pytest.raises(ConfigError, match="scale_factor"):  # one override as a string, not its characters
        results("configs/video_to_csv.yaml", "detector.scale_factor=0.5")
    with pytest.raises(ConfigError, match="tap='nope'"):
        results("configs/video_to_csv.yaml", tap="nope")


def test_a_tmpdir_too_long_for_the_results_socket_is_one_error_and_leaves_nothing(tmp_path, monkeypatch):
    """An ipc:// path is limited to about 107 bytes; under a long TMPDIR the bind failed with a bare
    ZMQError and left its private folder behind."""
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    with pytest.raises(InputError, match="results: cannot listen on ipc://.*a shorter TMPDIR helps"):
        results("configs/video_to_csv.yaml")
    assert not list(deep.iterdir())


def test_bad_input_raises_its_one_line_error(tmp_path):
    (tmp_path / "fake.mp4").write_text("not a video")
    stream = results("configs/video_to_csv.yaml", [f"source.path={tmp_path / 'fake.mp4'}",
                                                   f"csv.path={tmp_path / 'o.csv'}"])
    with pytest.raises(UserError, match="fake.mp4"):
        list(stream)


def test_a_stage_failing_mid_run_raises_run_failed(clips, tmp_path):
    big = write_video(tmp_path / "big.avi", read_frames(clips["single_face.mp4"], 10))
    small = write_video(tmp_path / "small.avi", [cv2.resize(f, (320, 180)) for f in read_frames(big)])
    config = {"stages": {
        "a": {"type": "video", "params": {"path": str(big)}},
        "b": {"type": "video", "params": {"path": str(small)}},
        "detector": {"type": "haar", "inputs": ["a", "b"]},
        "classifier": {"type": "classifier", "inputs": ["detector"]},
        "out": {"type": "video_writer", "inputs": ["classifier"], "params": {"path": str(tmp_path / "o.avi")}},
    }}
    with pytest.raises(RunFailed) as caught:
        list(results(config))  # one file cannot take frames of two sizes: the writer raises mid-run
    assert caught.value.result.exit_code == 2 and "stage 'out' (video_writer) failed" in str(caught.value)


def test_a_slow_loop_body_gets_every_result_and_is_not_called_a_stall(tmp_path):
    """The hidden sink sends faster than a loop body of 2 ms reads: about 2,000 results wait in
    ZeroMQ's queues when its stream ends. Before, its process ended once they were handed to the
    kernel, and the last 181 of 2,200 never arrived, with exit code 0; and once its wait at the
    end was watched by the stall timeout, such a run failed as "stalled while closing"."""
    import time

    import numpy as np

    clip = write_video(tmp_path / "tiny.avi", [np.full((48, 64, 3), 90, np.uint8)] * 30)
    config = {"stages": {"cam": {"type": "video", "params": {"path": str(clip), "loop": True, "max_frames": 2200}},
                         "detector": {"type": "haar", "inputs": ["cam"]}}}
    frames = []
    with results(config, stall_timeout=1.0) as stream:
        for event in stream:
            frames.append(event["frame"])
            time.sleep(0.002)
    assert stream.result.exit_code == 0
    assert len(frames) == 2200


@pytest.mark.parametrize("then, code", [("pass", 0), ("raise RuntimeError('the setup after it failed')", 1)])
def test_a_stream_never_read_is_stopped_at_exit_not_torn_down(short_clip, tmp_path, then, code):
    """A script that made a stream and ended (or raised) before its loop: the interpreter tore
    the runner's thread down mid-run, "terminate called without an active exception", exit
    134, the CSV never written and the socket's folder left behind."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""\
        from fer_pipe.api import results

        if __name__ == "__main__":
            stream = results("video_to_csv", ["source.path={short_clip}", "csv.path={tmp_path / 'rows.csv'}"])
            {then}
        """))
    temp = tmp_path / "tmp"
    temp.mkdir()
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TMPDIR": str(temp)})
    assert done.returncode == code, done.stderr
    assert "terminate" not in done.stderr and "Abort" not in done.stderr
    assert_valid_prefix(tmp_path / "rows.csv")  # closed whole: its header, then whole frames in order
    assert not [p for p in temp.iterdir() if p.name.startswith("fer-pipe-api-")]
