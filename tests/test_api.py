"""The Python API: a graph run in the multi-process runner, its results yielded in this process."""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest
import yaml
from conftest import REPO, write_video
from fault_plugin import assert_valid_prefix, fault_config
from livetools import csv_rows, wait_for

from fer_pipe.api import BadInputFound, RunFailed, results
from fer_pipe.errors import ConfigError, InputError, UserError
from fer_pipe.inprocess import run_stage
from fer_pipe.messages import Packet


def test_run_stage_fails_a_packet_that_cannot_go_between_processes_as_a_run_does():
    """A lambda in extra passed a plug-in's run_stage tests, and failed every run of it (s56a 3);
    what the stage emitted before is kept, as a run keeps it."""
    from fer_pipe.stage import Stage, StageFailure

    class Remember(Stage):
        def process(self, packet):
            if packet.index == 1:
                packet.extra["then"] = lambda: packet.index
            return (packet,)

    with pytest.raises(StageFailure, match=r"^on cam frame 1: cannot pass the packet on: AttributeError: Can't (pickle|"
                                           r"get) local object .*\(what a stage puts in packet.extra or a face's extra must "
                                           r"pickle\)$") as failed:
        run_stage(Remember, [Packet("cam", index, 0.0) for index in range(3)])
    assert [packet.index for packet in failed.value.emitted] == [0]


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


def test_run_stage_with_a_bad_param_raises_a_config_error_naming_it():
    """It raised pydantic's ValidationError, four lines and a link, where the CLI names the param."""
    with pytest.raises(ConfigError) as bad:
        run_stage("smooth", [], {"margin": 5})
    assert str(bad.value) == "params.margin: Input should be less than or equal to 1"
    with pytest.raises(ConfigError) as misspelt:
        run_stage("smooth", [], {"margn": 0.1})
    assert str(misspelt.value) == "params.margn: unknown parameter (did you mean 'margin'?)"
    with pytest.raises(ConfigError) as typed:  # no word of YAML, which Python's caller did not write
        run_stage("csv", [], {"path": 5})
    assert str(typed.value) == "params.path: Input should be a valid string"


def test_run_stage_given_other_than_packets_or_frames_names_the_item():
    with pytest.raises(TypeError, match=r"^run_stage: packets\[1\] is a dict, not a Packet$"):
        run_stage("smooth", [Packet("cam", 0, 0.0), {"index": 1}])
    image = np.zeros((48, 64, 3), np.float32)  # a common way to hold an image: an OpenCV assertion blamed scaleFactor
    with pytest.raises(TypeError, match=r"^run_stage: packets\[0\] has an array of float32 shaped \(48, 64, 3\) for its "
                                        r"image; a frame is a uint8 array, H x W x 3 \(BGR\) or grey, of at "
                                        r"least one pixel$"):
        run_stage("haar", [Packet("cam", 0, 0.0, image)])
    with pytest.raises(TypeError, match=r"^run_stage: packets\[0\] has an array of uint8 shaped \(0, 640, 3\)"):
        run_stage("haar", [Packet("cam", 0, 0.0, np.zeros((0, 640, 3), np.uint8))])  # an OpenCV assertion (s42a)
    for channels in (4, 2):  # BGRA (a PNG's alpha, a screen grab): the detector found no face in it, without a word
        with pytest.raises(TypeError, match=rf"^run_stage: packets\[0\] has an array of uint8 shaped \(48, 64, "
                                            rf"{channels}\) for its image"):
            run_stage("haar", [Packet("cam", 0, 0.0, np.zeros((48, 64, channels), np.uint8))])
    with pytest.raises(TypeError, match=r"^run_stage: packets is a Packet, not an iterable of packets \(pass "
                                        r"\[packet\]\)$"):  # the README's comment said to pass one so
        run_stage("smooth", Packet("cam", 0, 0.0))


def test_bad_config_raises_before_anything_starts(tmp_path):
    with pytest.raises(ConfigError, match="scale_factor"):
        results("configs/video_to_csv.yaml", ["detector.scale_factor=0.5"])
    with pytest.raises(ConfigError, match="scale_factor"):  # one override as a string, not its characters
        results("configs/video_to_csv.yaml", "detector.scale_factor=0.5")
    with pytest.raises(ConfigError, match="tap='nope'"):
        results("configs/video_to_csv.yaml", tap="nope")
    two_taps = yaml.safe_load((REPO / "configs" / "episodes.yaml").read_text())
    two_taps["stages"]["csv"]["inputs"] = ["classifier"]  # and episodes reads the smoother: which is meant?
    with pytest.raises(ConfigError, match="the graph's sinks read from smoother, classifier; name the stage whose "
                                          "results you want with tap="):  # it took one of them (untested: s38c)
        results(two_taps)
    own = yaml.safe_load((REPO / "configs" / "video_to_csv.yaml").read_text())
    own["stages"]["_api_results"] = own["stages"].pop("csv")  # replaced by the hidden sink, its CSV lost (s42a)
    with pytest.raises(ConfigError, match="stage '_api_results': the name results\\(\\) gives its hidden sink; "
                                          "rename the stage"):
        results(own)


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


def test_bad_input_found_mid_run_is_run_failed_and_input_error_with_the_stage_traceback(short_clip, tmp_path):
    """A video cut short raised a plain RunFailed: a caller that tells bad input (``except
    UserError``) from a fault of the pipeline took a damaged upload for a crash, and an uncaught
    failure showed nothing of the stage's traceback. The frames before the cut still arrive."""
    data = short_clip.read_bytes()
    video = tmp_path / "cut.avi"
    video.write_bytes(data[: len(data) // 2])
    stream = results("configs/video_to_csv.yaml", [f"source.path={video}", f"csv.path={tmp_path / 'o.csv'}"])
    frames = []
    with pytest.raises(BadInputFound) as caught:
        for event in stream:
            frames.append(event["frame"])
    failed = caught.value
    assert isinstance(failed, RunFailed) and isinstance(failed, InputError) and failed.result.exit_code == 2
    assert str(failed).startswith(f"stage 'source' (video) failed: video {video}: decoding stopped at frame "
                                  f"{len(frames)} of 60")
    assert frames == list(range(len(frames))) and 0 < len(frames) < 60
    assert list(stream) == []  # a stream read to its end gives nothing more (it raised ZMQError)


def test_outage_events_come_in_order_where_asked_for_and_only_there(tmp_path, plugin_env):
    """A loop over a camera heard nothing while it was down, as if it saw no face (s31b): with
    ``outages=True`` it gets the zmq sink's source_down once and source_up with the next frame,
    per source; one down since the start names no frame."""
    config = tmp_path / "down.yaml"
    config.write_text("stages:\n  source: {type: brokenframes, params: {mode: outage, at: 3, count: 6, down_s: 0.5}}\n"
                      "  early: {type: brokenframes, params: {mode: outage, at: 0, count: 2, down_s: 0.5}}\n"
                      "  faulty: {type: faulty, inputs: [source, early]}\n"
                      f"  csv: {{type: csv, inputs: [faulty], params: {{path: '{tmp_path / 'out.csv'}'}}}}\n")
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""\
        import sys
        from fer_pipe.api import results

        if __name__ == "__main__":
            for event in results("{config}", outages=sys.argv[1] == "yes"):
                print(event["type"], event["frame"], event["source"], event.get("since") is not None)
        """))
    said = {}
    for asked in ("yes", "no"):
        done = subprocess.run([sys.executable, str(script), asked], capture_output=True, text=True, timeout=120,
                              env={**os.environ, **plugin_env})
        assert done.returncode == 0, done.stderr
        said[asked] = done.stdout.splitlines()

    def of(source: str, lines: list[str]) -> list[str]:
        return [line for line in lines if line.split()[2] == source]

    frames = [f"frame {i} source False" for i in range(6)]
    assert of("source", said["no"]) == frames and of("early", said["no"]) == ["frame 0 early False", "frame 1 early False"]
    assert of("source", said["yes"]) == [*frames[:3], "source_down 2 source True", "source_up 3 source True", *frames[3:]]
    assert of("early", said["yes"]) == ["source_down None early True", "source_up 0 early True", "frame 0 early False",
                                        "frame 1 early False"]
    assert len(said["yes"]) == 12 and len(said["no"]) == 8


def test_numpy_frame_numbers_reach_the_loop_as_numbers(tmp_path, plugin_env):
    """The contract takes a numpy integer as a frame number; the hidden sink of ``results()`` sent
    its events with pyzmq's send_json, which failed on it at frame 0, where a run's sinks took it
    (s54e 2)."""
    config = tmp_path / "numbered.yaml"
    config.write_text("stages:\n  source: {type: brokenframes, params: {mode: numpy, count: 4}}\n"
                      "  faulty: {type: faulty, inputs: [source]}\n"
                      f"  csv: {{type: csv, inputs: [faulty], params: {{path: '{tmp_path / 'out.csv'}'}}}}\n")
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""\
        from fer_pipe.api import results

        if __name__ == "__main__":
            print([event["frame"] for event in results("{config}")])
        """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **plugin_env})
    assert (done.returncode, done.stdout) == (0, "[0, 1, 2, 3]\n"), done.stderr


def test_an_uncaught_stage_failure_shows_where_in_the_stage_it_failed(short_clip, tmp_path, plugin_env):
    """The worker's traceback was in ``result.traceback`` only: an uncaught RunFailed, logging
    and pytest showed the one-line message and the API's own frames."""
    config = fault_config(tmp_path / "g.yaml", short_clip, tmp_path / "rows.csv", mode="raise", at=[5])
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""\
        from fer_pipe.api import results

        if __name__ == "__main__":
            for event in results("{config}"):
                pass
        """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **plugin_env})
    assert done.returncode == 1
    cause, _, raised = done.stderr.partition("The above exception was the direct cause of the following exception:")
    assert re.search(r'fer_faults_plugin.py", line \d+, in process\n.*\nValueError: injected fault on frame 5',
                     cause), done.stderr
    assert raised.strip().endswith("fer_pipe.api.RunFailed: stage 'faulty' (faulty) failed: on source frame 5: "
                                   "ValueError: injected fault on frame 5")


def test_the_stage_traceback_a_failure_is_raised_from_has_its_passwords_masked():
    """The message was masked, but the traceback the API chains to RunFailed (and --debug
    prints) showed a camera's password to every log."""
    from fer_pipe.runner import RunResult

    said = 'Traceback (most recent call last):\nRuntimeError: cannot upload to rtsp://admin:hunter2@10.0.0.5/s\n'
    result = RunResult(1, message="x", traceback=said)
    assert "hunter2" not in result.traceback and "rtsp://admin:***@10.0.0.5/s" in result.traceback


def test_bad_input_raised_to_the_caller_holds_no_password_in_its_context():
    """Its message was masked, but the exception kept the unmasked one as its (hidden) context,
    which error reporters send on (s24e)."""
    with pytest.raises(InputError) as raised:
        with results("configs/video_to_csv.yaml", ["source.path=http://admin:S3cretPW@192.0.2.10/x.mp4"]) as stream:
            list(stream)
    chain, exc = [], raised.value
    while exc is not None:
        chain.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    assert "admin:***@192.0.2.10" in chain[0] and not any("S3cretPW" in text for text in chain), chain


@pytest.mark.parametrize("call", ["results", "run_graph"])
@pytest.mark.parametrize("value", ["120", -1, float("nan"), True])
def test_a_stall_timeout_that_is_not_seconds_is_a_config_error_before_anything_starts(value, call):
    """"120" (from an environment variable) started the graph, then killed every stage with a
    TypeError from the runner's first stall check; -1 was taken for no stall timeout. In one
    process, NaN or -1 made every call that lasted two looks a stall (s59d)."""
    from fer_pipe.config import load_graph
    from fer_pipe.inprocess import run_graph

    with pytest.raises(ConfigError, match=re.escape(f"{call}: stall_timeout: expected seconds, a finite number "
                                                    f"of at least 0 (0: none), got {value!r}")):
        if call == "results":
            results("configs/video_to_csv.yaml", stall_timeout=value)
        else:
            run_graph(load_graph("configs/video_to_csv.yaml"), print, value)


def test_outages_that_are_not_a_bool_are_a_config_error_before_anything_starts():
    """As for stall_timeout: pydantic would read "no" as False, and other text (``"maybe"``)
    would raise its ValidationError page rather than the API's one line."""
    with pytest.raises(ConfigError, match=re.escape("results: outages: expected True or False, got 'no'")):
        results("configs/video_to_csv.yaml", outages="no")


def test_a_numpy_stall_timeout_is_seconds_too(short_clip, tmp_path):
    import numpy as np

    with results("configs/video_to_csv.yaml", [f"source.path={short_clip}", f"csv.path={tmp_path / 'o.csv'}"],
                 stall_timeout=np.int64(60)) as stream:
        assert len(list(stream)) == 60


def _looped_tiny_clip(tmp_path, frames: int) -> dict:
    """A graph that sends results faster than a loop reads them: a 64x48 grey clip looped to
    ``frames`` frames, through the detector alone."""
    import numpy as np

    clip = write_video(tmp_path / "tiny.avi", [np.full((48, 64, 3), 90, np.uint8)] * 30)
    return {"stages": {"cam": {"type": "video", "params": {"path": str(clip), "loop": True, "max_frames": frames}},
                       "detector": {"type": "haar", "inputs": ["cam"]}}}


def test_a_slow_loop_body_gets_every_result_and_is_not_called_a_stall(tmp_path):
    """The hidden sink sends faster than a loop body of 2 ms reads: about 2,000 results wait in
    ZeroMQ's queues when its stream ends. Before, its process ended once they were handed to the
    kernel, and the last 181 of 2,200 never arrived, with exit code 0; and once its wait at the
    end was watched by the stall timeout, such a run failed as "stalled while closing". That wait
    (about 6 s at 3 ms a result) is well past the stall timeout, which is 3 s rather than 1: a
    CI worker given a sixth of a core was called "stalled between packets" (s59c 2)."""
    import time

    frames = []
    with results(_looped_tiny_clip(tmp_path, 2200), stall_timeout=3.0) as stream:
        for event in stream:
            frames.append(event["frame"])
            time.sleep(0.003)
    assert stream.result.exit_code == 0
    assert len(frames) == 2200


def test_a_loop_paused_past_the_stall_timeout_is_waited_for(tmp_path):
    """Once the sockets between the processes were full, a loop stopped at a breakpoint or a
    prompt for longer than stall_timeout failed the run as a stall of the hidden stage, and the
    results queued for it (about 1,000) were lost. The timeout is 3 s, not 1, for a slow machine
    (s59c 2), and the pause more than twice that."""
    import time

    frames = []
    with results(_looped_tiny_clip(tmp_path, 2600), stall_timeout=3.0) as stream:
        for event in stream:
            frames.append(event["frame"])
            if len(frames) == 10:
                time.sleep(7)  # the user at a breakpoint
    assert stream.result.exit_code == 0, stream.result.message
    assert frames == list(range(2600))


def test_a_script_read_from_standard_input_is_one_error_before_anything_starts(short_clip, tmp_path):
    """Every spawned stage process died importing '<stdin>' as the caller's script, and the run
    blamed whichever stage the supervisor saw die first, "exit code 1"."""
    script = textwrap.dedent(f"""\
        from fer_pipe.api import results

        if __name__ == "__main__":
            list(results("video_to_csv", ["source.path={short_clip}", "csv.path={tmp_path / 'rows.csv'}"]))
        """)
    done = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == ("fer_pipe.errors.InputError: results: the stage processes import the "
                                            "calling script again, and <stdin> is not a file (a script read from "
                                            "standard input?); save it to a file and run that")
    assert not (tmp_path / "rows.csv").exists()


@pytest.mark.parametrize("guard", ["", "if __name__ == '__main__':\n    ", "if multiprocessing.current_process().name == 'MainProcess':\n    "])
def test_a_script_without_the_main_guard_is_one_error_naming_the_line(short_clip, tmp_path, guard):
    """Without the guard, each spawned stage process ran the script's top level again, called
    results() and died with multiprocessing's bootstrapping traceback: six of them, then a RunFailed
    blaming whichever stage died first. A guard of another spelling is still a guard."""
    script = tmp_path / "script.py"
    script.write_text("import multiprocessing\nfrom fer_pipe.api import results\n\n" + guard +
                      f"rows = list(results('video_to_csv', ['source.path={short_clip}', "
                      f"'csv.path={tmp_path / 'rows.csv'}']))\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    if guard:
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "rows.csv").exists()
        return
    assert done.returncode == 1
    assert done.stderr.count("Traceback") == 1
    assert done.stderr.splitlines()[-1] == (
        f"fer_pipe.errors.InputError: results: called from line 4 of {script}, outside an `if __name__ == "
        "\"__main__\":` block; each stage process imports the script and would run that line again, starting "
        "runs of its own: put it under the guard")
    assert not (tmp_path / "rows.csv").exists()


def test_code_of_a_main_that_has_no_file_is_not_refused_without_the_guard(short_clip, tmp_path):
    """A notebook's __main__ has no file, so the stage processes import nothing of it; but once
    JupyterLab's debugger had written a cell to a file, the check read that file, and refused the
    cell "from line 4 of None", also after the debugger was off (s49g 1). Code compiled from a
    file and run in ``__main__``'s namespace, the outermost such frame of its thread, as a
    kernel runs a cell, is the same case."""
    cell = tmp_path / "cell.py"
    cell.write_text("from fer_pipe.api import results\n\n\n"
                    f"rows = list(results('video_to_csv', ['source.path={short_clip}', "
                    f"'csv.path={tmp_path / 'rows.csv'}']))\n")
    run = (f"import __main__, threading\ncode = compile(open({str(cell)!r}).read(), {str(cell)!r}, 'exec')\n"
           "cell = threading.Thread(target=exec, args=(code, __main__.__dict__))\ncell.start()\ncell.join()\n")
    done = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "rows.csv").exists()


def test_a_packages_main_without_the_guard_is_not_refused(short_clip, tmp_path):
    """multiprocessing never imports a package's __main__ in its processes (python -m pkg), so
    such a script works without the guard, and the check refused it (s43d)."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "__main__.py").write_text(
        "from fer_pipe.api import results\n\n"
        f"rows = list(results('video_to_csv', ['source.path={short_clip}', 'csv.path={tmp_path / 'rows.csv'}']))\n")
    done = subprocess.run([sys.executable, "-m", "pkg"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "rows.csv").exists()


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


def test_a_second_ctrl_c_while_the_stream_drains_stops_it_at_once_and_cleans_up(short_clip, tmp_path, plugin_env):
    """The second Ctrl-C ended the drain's wait with nothing cleaned up and the stop at exit
    already unregistered: the interpreter then tore the run down mid-drain, leaving the socket's
    folder and a shared-memory ring for the resource tracker to find."""
    config = fault_config(tmp_path / "g.yaml", short_clip, tmp_path / "rows.csv", delay_s=0.2)
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""\
        import sys
        import time

        from fer_pipe.api import results

        if __name__ == "__main__":
            for event in results("{config}"):
                print("event", flush=True)
                time.sleep(0.05)
        """))
    temp = tmp_path / "tmp"
    temp.mkdir()
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **plugin_env, "TMPDIR": str(temp)},
                            start_new_session=True)  # a shell job: Ctrl-C reaches its whole group
    assert proc.stdout.readline() == "event\n"
    wait_for(lambda: csv_rows(tmp_path / "rows.csv"), 60, "a row in the CSV", proc)  # its sink may open late (s39a)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode in (-signal.SIGINT, 130), stderr
    assert "leaked" not in stderr and "Exception ignored" not in stderr, stderr
    assert not [p for p in temp.iterdir() if p.name.startswith("fer-pipe-api-")], stderr
    assert_valid_prefix(tmp_path / "rows.csv")


@pytest.mark.parametrize("moment", ["as_start_returns", "inside_start"])
def test_a_ctrl_c_as_the_run_begins_leaves_no_run_going(short_clip, tmp_path, plugin_env, moment):
    """A Ctrl-C landing while ``results`` started its runner's thread, which ran the graph at
    once, left a run that nobody held a stream to stop: the script's exit then waited for ever
    on its stages (s60b 4). Landing inside ``Thread.start``, before the thread was seen alive,
    it could not be stopped as a run is (s60f 2). The thread now runs the graph only once told
    to, after its start. The Ctrl-C is stood in for by the start raising it as it returns, or
    from its wait for the thread, which is held back from running meanwhile."""
    config = fault_config(tmp_path / "g.yaml", short_clip, tmp_path / "rows.csv", delay_s=0.05)
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""\
        import os
        import threading
        import time

        from fer_pipe.api import results

        started = threading.Thread.start


        def interrupted(timeout=None):
            raise KeyboardInterrupt


        def start_then_interrupted(thread):
            if thread.name != "fer-pipe-runner":
                return started(thread)
            if "{moment}" == "inside_start":
                bootstrap = thread._bootstrap_inner

                def late():
                    time.sleep(1)  # not yet alive when the Ctrl-C lands
                    bootstrap()

                thread._bootstrap_inner = late
                thread._started.wait = interrupted
            started(thread)
            raise KeyboardInterrupt


        if __name__ == "__main__":
            threading.Thread.start = start_then_interrupted
            try:
                results("{config}")
            except KeyboardInterrupt:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and "fer-pipe-runner" in [t.name for t in threading.enumerate()]:
                    time.sleep(0.05)
                print("interrupted", sorted(t.name for t in threading.enumerate()), flush=True)
            os._exit(0)  # no wait at exit for a run left going: its thread is listed above
        """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **plugin_env})
    assert done.stdout == "interrupted ['MainThread']\n", done.stderr
    assert not (tmp_path / "rows.csv").exists()  # the run never began


def test_close_from_another_thread_stops_the_run_and_the_reader_ends_its_loop(short_clip, tmp_path):
    """A stop button's close() used the socket while the reading thread polled it (a ZMQError
    in one of them), and the reader got RunFailed for a plain stop. A slow loop then went on
    with every result already come, 268 more events 13 s after the stop (s42a); it gets at most
    the one it was handed as the stop came."""
    import threading
    import time

    stream = results("configs/video_to_csv.yaml", [f"source.path={short_clip}", f"csv.path={tmp_path / 'o.csv'}",
                                                   "source.realtime=true"])
    seen, raised, first = [], [], threading.Event()

    def read() -> None:
        try:
            for event in stream:
                seen.append(event["frame"])
                first.set()
                time.sleep(0.2)  # a loop body slower than the source: results wait in the socket
        except BaseException as exc:  # noqa: BLE001  what the reader would see
            raised.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    assert first.wait(120), "no result came"
    time.sleep(1)
    stream.close()
    handed = len(seen)
    reader.join(60)
    assert not reader.is_alive() and raised == []
    assert len(seen) <= handed + 1
    assert stream.result.exit_code == 130 and seen and seen[-1] < 59
    assert seen == sorted(seen)  # in order (a live source drops what a busy machine cannot take)


def test_a_dict_of_overrides_and_a_config_for_run_graph_are_refused_naming_the_form(short_clip):
    """A dict's keys alone were read as overrides, said in --set's words ("--set source.path:
    expected STAGE.PARAM=VALUE"), and run_graph given a config raised AttributeError: 'dict'
    object has no attribute 'stages' (s64f 7)."""
    from fer_pipe.inprocess import run_graph

    with pytest.raises(TypeError, match=r"overrides are 'stage.param=value' strings, as --set takes them, not a dict"):
        results("configs/video_to_csv.yaml", {"source.path": str(short_clip)})
    with pytest.raises(TypeError, match="run_graph takes a Graph, not a dict: make one .* with "
                                        "fer_pipe.config.load_graph"):
        run_graph({"stages": {}})


def test_a_host_started_without_stderr_runs_a_graph(short_clip, tmp_path):
    """``python host.py 2>&-`` (sys.stderr None): every results() failed, "ConfigError: stage
    'detector' (haar): params: the stage's own check failed: AttributeError: 'NoneType' object
    has no attribute 'flush'" (s64f 5)."""
    script = tmp_path / "host.py"
    script.write_text(textwrap.dedent(f"""\
        from fer_pipe.api import results

        if __name__ == "__main__":
            stream = results("configs/video_to_csv.yaml", ["source.path={short_clip}",
                                                           "csv.path={tmp_path / 'o.csv'}"])
            print(len(list(stream)), stream.result.exit_code)
        """))
    done = subprocess.run(["bash", "-c", f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} 2>&-"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.stdout.split()[1:] == ["0"] and int(done.stdout.split()[0]) > 0, done.stdout + done.stderr


def test_close_from_the_loops_own_body_ends_the_loop_as_at_the_end_of_the_stream(short_clip, tmp_path):
    """close() in the loop's body (or a SIGTERM handler of the host's, which runs there) closed
    the socket under the loop, whose next step raised a ZMQError (s64f 1)."""
    stream = results("configs/video_to_csv.yaml", [f"source.path={short_clip}", f"csv.path={tmp_path / 'o.csv'}"])
    seen = []
    for event in stream:
        seen.append(event["frame"])
        if event["frame"] == 2:
            stream.close()
    assert seen == [0, 1, 2] and stream.result.exit_code == 130 and stream._results.closed


def test_close_from_another_thread_frees_a_stream_whose_reader_waits_at_a_yield(short_clip, tmp_path):
    """A service reads with next() from worker threads (asyncio.to_thread), then its shutdown
    closes the stream from the event loop's thread: the socket and context were left to a
    reader never resumed, 7 descriptors a stream for good (s64f 2)."""
    import threading

    stream = results("configs/video_to_csv.yaml", [f"source.path={short_clip}", f"csv.path={tmp_path / 'o.csv'}",
                                                   "source.realtime=true"])
    events = iter(stream)
    read = threading.Thread(target=lambda: [next(events) for _ in range(3)])
    read.start()
    read.join(120)
    stream.close()
    assert stream._results.closed and stream.result.exit_code == 130
    assert list(events) == []  # resumed later, the loop ends as at the end of the stream
    # the same from the reading thread itself, as a pool of one thread reuses it (s64g 4)
    stream = results("configs/video_to_csv.yaml", [f"source.path={short_clip}", f"csv.path={tmp_path / 'p.csv'}"])
    events = iter(stream)
    next(events)
    stream.close()
    assert stream._results.closed and stream.result.exit_code == 130 and list(events) == []


@pytest.mark.parametrize("ending", ["sigterm", "daemon_reader"])
def test_a_script_that_ends_mid_stream_leaves_no_folder_behind(short_clip, tmp_path, plugin_env, ending):
    """SIGTERM's default (timeout, a scheduler, docker stop) ran no clean-up, and a script that
    ended while a daemon thread read its stream left the clean-up to that thread, which the
    interpreter stops: a /tmp/fer-pipe-api-* folder was left each time (s42a)."""
    config = fault_config(tmp_path / "g.yaml", short_clip, tmp_path / "rows.csv", delay_s=0.1)
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""\
        import threading
        import time

        from fer_pipe.api import results


        first = threading.Event()


        def read(stream):
            for event in stream:
                print("event", flush=True)
                first.set()


        if __name__ == "__main__":
            stream = results("{config}")
            if "{ending}" == "sigterm":
                read(stream)
            else:
                threading.Thread(target=read, args=(stream,), daemon=True).start()
                if not first.wait(120):  # mid-stream, however long a loaded machine takes to its first result
                    raise SystemExit("no result in 120 s")
                time.sleep(0.5)
        """))
    temp = tmp_path / "tmp"
    temp.mkdir()
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **plugin_env, "TMPDIR": str(temp)}, start_new_session=True)
    assert proc.stdout.readline() == "event\n"
    if ending == "sigterm":
        proc.terminate()
    proc.communicate(timeout=120)  # the stages hold its output until they end
    assert not [p for p in temp.iterdir() if p.name.startswith("fer-pipe-api-")]


def test_two_threads_pointing_stderr_away_at_once_leave_it_where_it_was():
    """Two threads of a host calling results() at once each checked their model with fd 2 on
    /dev/null; the second saved the first's /dev/null as the stderr to restore, and the host's
    tracebacks and log lines went nowhere for the rest of the process (s45c)."""
    import threading

    from fer_pipe.native_stderr import stderr_dropped

    before = os.readlink("/proc/self/fd/2")
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with stderr_dropped():
            first_in.set()
            second_in.wait(1)  # where there is a lock, the second waits for it: no waiting for it here
        first_out.set()

    def second() -> None:  # without a lock: saves the first's /dev/null, and puts it back after the first left
        first_in.wait()
        with stderr_dropped():
            second_in.set()
            first_out.wait(5)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert os.readlink("/proc/self/fd/2") == before


def test_a_stream_kept_for_its_result_holds_no_descriptors_of_its_run(short_clip, tmp_path):
    """A service keeping its jobs' streams for their result kept each run's 24 file descriptors
    and 23 semaphores, and ran out of descriptors after about 40 jobs (s45c)."""
    import gc

    def one_run() -> object:
        with results("configs/video_to_csv.yaml", [f"source.path={short_clip}", "csv.path=/dev/null"]) as stream:
            assert len(list(stream)) == 60
        return stream

    one_run()  # the imports and the resource tracker
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    kept = [one_run() for _ in range(3)]
    gc.collect()
    assert all(stream.result.exit_code == 0 for stream in kept)
    assert len(os.listdir("/proc/self/fd")) - before < 5  # 72 more where each kept its run's queues


@pytest.mark.parametrize("host", ["pool", "sigchld"])
def test_a_process_that_cannot_watch_children_of_its_own_is_one_error_before_anything_starts(short_clip, tmp_path,
                                                                                            host):
    """In a Pool worker (a daemon process) the runner's thread raised multiprocessing's
    AssertionError and leaked 31 semaphores; with SIGCHLD ignored the kernel took the stages'
    exit statuses, and the loop hung after the last result, saying nothing (s45c)."""
    call = f"len(list(results('video_to_csv', ['source.path={short_clip}', 'csv.path={tmp_path / 'rows.csv'}'])))"
    script = tmp_path / "host.py"
    script.write_text(textwrap.dedent(f"""\
        import multiprocessing, signal
        from fer_pipe.api import results

        def job(_):
            return {call}

        if __name__ == "__main__":
            if {host == "pool"}:
                with multiprocessing.Pool(1) as pool:
                    pool.map(job, [0])
            else:
                signal.signal(signal.SIGCHLD, signal.SIG_IGN)
                job(0)
        """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    why = ("this is a daemon process (a multiprocessing.Pool worker?), which may not start the stage processes a "
           "run needs; call it from a process that is not a daemon, or run the graph in this process with "
           "fer_pipe.inprocess.run_graph" if host == "pool" else
           "this process ignores SIGCHLD, so the exits of the stage processes a run starts cannot be watched; "
           "restore it first: signal.signal(signal.SIGCHLD, signal.SIG_DFL)")
    assert done.stderr.splitlines()[-1] == f"fer_pipe.errors.InputError: results: {why}"
    assert "leaked" not in done.stderr and not (tmp_path / "rows.csv").exists()
