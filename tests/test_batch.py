"""``fer-pipe batch`` on a real Ray cluster (a head and two worker nodes on 127.0.0.1), and the
in-process graph run that its tasks use, against the multi-process runner."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import cv2
import pytest
import yaml
from pydantic import AliasChoices, Field

from conftest import (REPO, fer_pipe, fer_pipe_on_a_terminal, fer_pipe_on_small_tmpfs, ffmpeg, read_frames, read_terminal,
                      start_on_a_terminal, write_video)
from livetools import free_port

from fer_pipe.batch_inputs import VIDEO_SUFFIXES
from fer_pipe.batch_settings import first_difference, recorded_settings, settings_of, version_change
from fer_pipe.batch_task import Job, enter, job_config
from fer_pipe.config import load_graph
from fer_pipe.config_file import shipped_configs
from fer_pipe.errors import ConfigError, InputError
from fer_pipe.inprocess import run_graph
from fer_pipe.messages import EXPRESSIONS
from fer_pipe.model import DEFAULT_MODEL
from fer_pipe.registry import registry
from fer_pipe.stage import Stage, StageParams

ray_cluster_utils = pytest.importorskip("ray.cluster_utils", reason="fer-pipe batch needs the batch extra (ray)")

CLIP_FRAMES = 36
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "video_to_csv.yaml"
MB = 1024 * 1024
LOOPBACK_RAY = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""Keep Ray on 127.0.0.1 (it otherwise swaps loopback for the machine's routable address) and silent."""


@pytest.fixture(scope="module")
def six_clips(clips, tmp_path_factory) -> list[Path]:
    """Six short real clips: five parts of the WolfgangLanger clip (a face in most frames) and one
    part of no_face.mp4 (no face at all), so both kinds of row are checked."""
    folder = tmp_path_factory.mktemp("clips")
    face = read_frames(clips["WolfgangLanger_Pexels.mp4"], 5 * 2 * CLIP_FRAMES)
    out = [write_video(folder / f"face{i}.avi", face[2 * i * CLIP_FRAMES:(2 * i + 1) * CLIP_FRAMES])
           for i in range(5)]
    out.append(write_video(folder / "empty_room.avi", read_frames(clips["no_face.mp4"], CLIP_FRAMES)))
    return out


def in_process_csv(clip: Path, out: Path, start: int = 0, max_frames: int = 0) -> str:
    run_graph(load_graph(CONFIG, [f"source.path={clip}", f"csv.path={out}", f"source.start={start}",
                                  f"source.max_frames={max_frames}"]))
    return out.read_text()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One Ray cluster for the module: starting one takes ~10 s on two cores. The head has no
    CPUs, so every task runs on one of the two worker nodes. Its nodes and the batch drivers
    find the fault-injection plug-in (``faulty_config``)."""
    from fault_plugin import install_plugin

    with pytest.MonkeyPatch.context() as env:
        for name, value in {**LOOPBACK_RAY, **install_plugin(tmp_path_factory.mktemp("plugin"))}.items():
            env.setenv(name, value)
        c = ray_cluster_utils.Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "object_store_memory": 80 * MB, "include_dashboard": False,
            "node_ip_address": "127.0.0.1"})
        try:
            for _ in range(2):
                c.add_node(num_cpus=1, object_store_memory=80 * MB, node_ip_address="127.0.0.1")
            c.wait_for_nodes()
            yield c
        finally:
            c.shutdown()


def faulty_config(path: Path, on_error: str = "stop", **params: object) -> Path:
    """configs/video_to_csv.yaml with the fault-injection plug-in stage before the CSV. With
    ``delay_s`` alone it sleeps per frame and changes nothing: its CSV is the config's, and a
    task is still running when a test kills it (a 36-frame task took about a second, and
    sometimes ended before its node died)."""
    config = yaml.safe_load(CONFIG.read_text())
    config["stages"]["faulty"] = {"type": "faulty", "inputs": ["classifier"], "on_error": on_error,
                                  "params": params}
    config["stages"]["csv"]["inputs"] = ["faulty"]
    path.write_text(yaml.safe_dump(config))
    return path


def batch(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    """The CLI as a user's shell starts it: with SIGHUP at its default, also where the tests run
    under nohup."""
    return subprocess.Popen([sys.executable, "-m", "fer_pipe.cli", "batch", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **LOOPBACK_RAY}, cwd=cwd,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))


def test_in_process_run_gives_the_multi_process_csv(six_clips, tmp_path):
    clip = six_clips[0]
    done = fer_pipe("run", str(CONFIG), "--quiet", "--set", f"source.path={clip}",
                    "--set", f"csv.path={tmp_path / 'multi.csv'}")
    assert done.returncode == 0, done.stderr
    multi = (tmp_path / "multi.csv").read_text()
    assert in_process_csv(clip, tmp_path / "single.csv") == multi
    rows = multi.splitlines()[1:]
    assert sorted({int(r.split(",")[1]) for r in rows}) == list(range(CLIP_FRAMES))


def running_attempt(work: Path, out: Path, proc: subprocess.Popen, not_job: str | None = None) -> dict | None:
    """The attempt that started last of those seen running (logged once, its CSV not yet in
    place), or None if the run ended first. The newest has the most work left, so it is still
    running when the test kills it; the first one found by name could be about to finish."""
    while proc.poll() is None:
        running = []
        for log in (work / "attempts").glob("*.jsonl"):
            job = log.name[:-len(".jsonl")]
            if job == not_job or (out / f"{job}.csv").exists() or (work / "parts" / f"{job}.csv").exists():
                continue
            lines = log.read_text().splitlines()
            if len(lines) == 1:
                running.append(json.loads(lines[0]))
        if running:
            return max(running, key=lambda attempt: attempt["time"])
        time.sleep(0.02)
    return None


def test_address_auto_with_no_cluster_on_the_machine_is_one_line_before_anything_is_made(cluster, six_clips,
                                                                                          tmp_path):
    """Ray's "Could not find any running Ray instance" came out as exit 1, after --out/_work was
    made; and Ray's ``auto`` took any Ray process it found, another batch's own (the module's
    cluster stands for one here): it dialled it at the machine's address and waited minutes,
    saying nothing of its own (s45d). ``auto`` is RAY_ADDRESS, or the last ``ray start`` here."""
    env = {**LOOPBACK_RAY, "RAY_TMPDIR": str(tmp_path)}  # the file ray start leaves: none yet
    done = fer_pipe("batch", str(six_clips[0]), "--out", "out", "--address", "auto", cwd=tmp_path, env=env,
                    timeout=120)
    assert (done.returncode, done.stderr) == (
        2, "fer-pipe: --address auto: no Ray cluster runs on this machine; start one (ray start --head) "
           "or leave out --address for a Ray of this run's own\n")
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}\n")  # a cluster since stopped
    done = fer_pipe("batch", str(six_clips[0]), "--out", "out", "--address", "auto", cwd=tmp_path, env=env,
                    timeout=120)
    assert done.returncode == 2 and re.fullmatch(
        r"fer-pipe: --address auto: no Ray cluster answers at 127\.0\.0\.1:\d+, which RAY_ADDRESS or the last "
        r"ray start here gave \(Connection refused\); is its head node started \(ray start --head\)\?\n",
        done.stderr), done.stderr
    assert not (tmp_path / "out").exists()


def test_a_cluster_whose_head_dies_is_said_in_one_line_and_the_finished_tasks_kept(six_clips, tmp_path):
    """The driver waited 60 s, then Ray ended it natively: exit 1 with Ray's log lines and no
    word of the batch's (s28b). A cluster of its own: its head is killed; Ray's wait is cut to
    20 s, so the batch speaks at 5 s."""
    from fault_plugin import install_plugin

    out = tmp_path / "out"
    config = faulty_config(tmp_path / "slowed.yaml", delay_s=0.5)
    with pytest.MonkeyPatch.context() as env:
        for name, value in {**LOOPBACK_RAY, **install_plugin(tmp_path / "plugin"),
                            "RAY_gcs_rpc_server_reconnect_timeout_s": "20"}.items():
            env.setenv(name, value)
        lost = ray_cluster_utils.Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "object_store_memory": 80 * MB, "include_dashboard": False,
            "node_ip_address": "127.0.0.1"})
        try:
            lost.add_node(num_cpus=1, object_store_memory=80 * MB, node_ip_address="127.0.0.1")
            lost.wait_for_nodes()
            address = lost.address
            proc = batch(*map(str, six_clips[:2]), "--out", str(out), "--address", address, "--config", str(config))
            assert running_attempt(out / "_work", out, proc) is not None, "the batch ended before the cluster"
            lost.head_node.kill_gcs_server()
            _, stderr = proc.communicate(timeout=180)
        finally:
            lost.shutdown()
    assert proc.returncode == 1, stderr
    assert stderr.splitlines()[-1] == (f"fer-pipe batch: the Ray cluster at {address} stopped answering for "
                                       f"5 s (its head stopped, or the network to it); the tasks that finished are "
                                       f"kept in {out / '_work'}, and the same command again runs only the others")


def test_batch_survives_a_killed_task_and_a_killed_node_and_resumes(cluster, six_clips, tmp_path):
    out = tmp_path / "out"
    config = faulty_config(tmp_path / "slowed.yaml", delay_s=0.05)
    proc = batch(*map(str, six_clips), "--out", str(out), "--address", cluster.address, "--config", str(config))
    first = running_attempt(out / "_work", out, proc)
    assert first is not None, "the batch ended before a task could be killed"
    os.kill(first["pid"], signal.SIGKILL)  # a task's process dies
    second = running_attempt(out / "_work", out, proc, not_job=first["job"])
    assert second is not None, "the batch ended before a node could be killed"
    node = next(n for n in cluster.list_all_nodes() if n.node_id == second["node"])
    cluster.remove_node(node, allow_graceful=False)  # then a whole worker node, with a task on it
    try:
        _, stderr = proc.communicate(timeout=300)
    finally:
        cluster.add_node(num_cpus=1, object_store_memory=80 * MB, node_ip_address="127.0.0.1")
    assert proc.returncode == 0, stderr

    manifest = json.loads((out / "_manifest.json").read_text())
    by_input = {Path(e["input"]).stem: e for e in manifest["inputs"]}
    assert by_input[first["job"]]["attempts"] >= 2, manifest
    assert by_input[second["job"]]["attempts"] >= 2, manifest
    assert all(e["status"] == "done" for e in manifest["inputs"])
    assert (out / "_SUCCESS").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{c.stem}.csv" for c in six_clips] + ["_manifest.json", "_SUCCESS", "_settings.json", "_sources.json", ".fer-pipe.lock"])  # nothing temporary
    for clip in six_clips:
        got = (out / f"{clip.stem}.csv").read_text()
        assert got == in_process_csv(clip, tmp_path / f"{clip.stem}.expected.csv"), clip.name
        assert by_input[clip.stem]["rows"] == len(got.splitlines()) - 1
        frames = [int(r.split(",")[1]) for r in got.splitlines()[1:]]
        assert sorted(set(frames)) == list(range(CLIP_FRAMES)), clip.name

    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    folder = six_clips[0].parent
    (folder / "notes.txt").write_text("not a video\n")
    again = batch(str(folder), "--out", str(out), "--address", cluster.address, "--config", str(config))  # six videos
    _, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr
    assert f"fer-pipe batch: nothing to do: all 6 inputs already have their CSV in {out}" in stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before

    (out / "_SUCCESS").unlink()  # deleted by hand, or the CSVs copied into a new --out: no _work either
    again = batch(str(folder), "--out", str(out), "--address", cluster.address, "--config", str(config))
    _, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr
    assert (out / "_SUCCESS").exists()


KEPT = ("fer-pipe batch: interrupted; the tasks that finished are kept in {}, and the same command again runs "
        "only the others")


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_says_what_is_kept(cluster, six_clips, tmp_path, stop):
    """Exit 130 with nothing said: whether the work done so far was lost went unanswered. Six
    inputs of a slowed config, so tasks are still running or waiting when the signal comes (with
    three quick ones, the last one once ended before it). SIGTERM (a timeout, a scheduler, systemd)
    met Ray's crash handler: a native stack dump and exit 1 or 134, which a script took for a
    failure; SIGHUP (the terminal closed) ended it with nothing said."""
    out = tmp_path / "out"
    config = faulty_config(tmp_path / "slowed.yaml", delay_s=0.05)
    proc = batch(*map(str, six_clips), "--out", str(out), "--address", cluster.address, "--config", str(config))
    assert running_attempt(out / "_work", out, proc) is not None, "the batch ended before it could be stopped"
    proc.send_signal(stop)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + stop, stderr
    assert "SIGTERM received" not in stderr
    assert stderr.splitlines()[-1] == KEPT.format(out / "_work")


def test_a_ctrl_c_pressed_again_while_ray_shuts_down_still_ends_the_batch_cleanly(six_clips, plugin_env, tmp_path):
    """People press Ctrl-C again when the first seems slow: the later ones cut a local Ray's
    shutdown short (it stops the node, seconds long), the batch ended with exit 1 or an
    "Exception ignored in atexit callback" traceback, and Ray's agents ran on for minutes (s38b)."""
    out = tmp_path / "out"
    config = faulty_config(tmp_path / "slowed.yaml", delay_s=0.05)
    proc = subprocess.Popen([sys.executable, "-m", "fer_pipe.cli", "batch", *map(str, six_clips), "--out", str(out),
                             "--num-cpus", "1", "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **LOOPBACK_RAY, **plugin_env})
    assert running_attempt(out / "_work", out, proc) is not None, "the batch ended before it could be stopped"
    for _ in range(4):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert stderr.splitlines()[-1] == KEPT.format(out / "_work")


def test_a_ctrl_c_at_a_terminal_leaves_the_progress_bar_standing(cluster, six_clips, tmp_path):
    """The interrupt's line was written over the bar, which hid how far the batch had come."""
    out = tmp_path / "out"
    config = faulty_config(tmp_path / "slowed.yaml", delay_s=0.05)
    proc, terminal = start_on_a_terminal("batch", *map(str, six_clips[:3]), "--out", str(out), "--address",
                                         cluster.address, "--config", str(config), env=LOOPBACK_RAY)
    assert running_attempt(out / "_work", out, proc) is not None, "the batch ended before it could be stopped"
    proc.send_signal(signal.SIGINT)
    screen = read_terminal(terminal, timeout=120)
    assert proc.wait(timeout=60) == 130, screen
    # the terminal ends each line with CR LF; Ray's own core may log a cancelled task it could not
    # report to the stopping driver ("[2026-12-06 01:42:55,659 E 31396 31433] task_manager.cc:1545:
    # Failed to push error to driver"), under the bar, which it leaves standing
    lines = [line for line in screen.rstrip("\r\n").split("\r\n")
             if not re.match(r"\[[\d-]+ [\d:,]+ [A-Z] \d+ \d+\] ", line)]
    assert re.search(r"\d/3 videos\]$", lines[-2]), screen  # the bar, and nothing after it on its line
    assert lines[-1] == KEPT.format(out / "_work")


def test_a_csv_that_cannot_be_placed_fails_its_input_alone_and_keeps_its_tasks(cluster, six_clips, tmp_path):
    """A folder where one input's CSV goes (or a disk that fills while parts are joined) ended
    the whole batch in one line naming a file under _work: no manifest, no summary, and the
    other inputs' finished CSVs never placed. The same command again, once the way is clear,
    places it from the kept parts without running its tasks again."""
    first, second = six_clips[0], six_clips[1]
    out = tmp_path / "out"
    (out / f"{first.stem}.csv").mkdir(parents=True)
    proc = batch(str(first), str(second), "--out", str(out), "--address", cluster.address, "--chunk-frames", "16")
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 2, stderr
    assert f"fer-pipe: batch: {first}: cannot write {out / first.stem}.csv: Is a directory; its finished tasks " \
           f"are kept in {out / '_work'}, and the same command again writes it from them" in stderr.splitlines()
    manifest = {Path(e["input"]).name: e for e in json.loads((out / "_manifest.json").read_text())["inputs"]}
    assert (manifest[first.name]["status"], manifest[second.name]["status"]) == ("failed", "done")
    assert (out / f"{second.stem}.csv").read_text() == in_process_csv(second, tmp_path / "second.csv")
    (out / f"{first.stem}.csv").rmdir()
    again = batch(str(first), str(second), "--out", str(out), "--address", cluster.address, "--chunk-frames", "16")
    _, stderr = again.communicate(timeout=240)
    assert again.returncode == 0, stderr
    manifest = {Path(e["input"]).name: e for e in json.loads((out / "_manifest.json").read_text())["inputs"]}
    assert (manifest[first.name]["status"], manifest[first.name]["attempts"]) == ("done", 0)
    assert (out / f"{first.stem}.csv").read_text() == in_process_csv(first, tmp_path / "first.csv")


def test_a_full_disk_still_names_each_failed_input_and_leaves_no_temporary_file(six_clips, tmp_path):
    """The manifest was written before the failed inputs were named: on a full disk its write
    failed first, and all the user saw was "fer-pipe: No space left on device", with an empty
    _manifest.json.tmp left. Here the two pages of the tmpfs go to _sources.json and _settings.json, so the task's
    CSV and the manifest find the disk full. A full disk is exit 1, not bad input. (A Ray of the
    run's own, started inside the mount namespace: a cluster's nodes would not see the tmpfs.)"""
    out, clip = tmp_path / "full", six_clips[0]
    out.mkdir()
    done = fer_pipe_on_small_tmpfs(out, "8k", "batch", str(clip), "--out", str(out / "res"), "--quiet",
                                   "--num-cpus", "1", then=f"ls -A {out / 'res'}")
    assert done.returncode == 1, done.stderr
    res = re.escape(str(out / "res"))
    assert re.fullmatch(rf"fer-pipe: batch: {re.escape(str(clip))}: .*No space left on device\n"
                        rf"fer-pipe: batch {res}/_manifest\.json: cannot write: No space left on device\n",
                        done.stderr), done.stderr
    assert done.stdout.split() == [".fer-pipe.lock", "_settings.json", "_sources.json", "_work"]


def test_a_video_whose_name_is_not_utf8_fails_alone(cluster, six_clips, tmp_path):
    """Planning its chunks opened it with OpenCV in the driver, whose bindings crash on such a
    name: the whole batch died (exit 139) with nothing said and nothing written."""
    folder, out = tmp_path / "videos", tmp_path / "out"
    folder.mkdir()
    latin = Path(os.fsdecode(os.fsencode(folder) + b"/caf\xe9.avi"))
    shutil.copy(six_clips[0], latin)
    shutil.copy(six_clips[1], folder / "ok.avi")
    proc = batch(str(folder), "--out", str(out), "--address", cluster.address, "--chunk-frames", "16", "--quiet")
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 2, stderr
    assert stderr.splitlines() == [f"fer-pipe: batch: video {folder}/caf\\udce9.avi: its "
                                   "name is not valid UTF-8, which OpenCV cannot open; rename it"]
    assert (out / "ok.csv").read_text() == in_process_csv(folder / "ok.avi", tmp_path / "ok.csv")


def test_an_out_folder_holding_a_control_character_is_refused_before_anything_is_made(cluster, six_clips, tmp_path):
    """A batch line from a script saved on Windows gave --out "res\\r": the CSVs went into a
    folder nobody finds, exit 0 (s50c 1). A video's own name may hold one, and its CSV is named
    as it is (my first check refused such a video's CSV: s50g 1)."""
    done = fer_pipe("batch", str(six_clips[0]), "--out", "res\r", cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "argument --out: the path holds a control character (\\r)" in done.stderr
    assert not list(tmp_path.iterdir())
    shutil.copy(six_clips[0], tmp_path / "lobby\tcam.avi")
    done = fer_pipe("batch", str(tmp_path / "lobby\tcam.avi"), "--out", str(tmp_path / "res"), "--quiet",
                    "--address", cluster.address, env=LOOPBACK_RAY, timeout=240)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "res" / "lobby\tcam.csv").is_file()


def test_a_name_ray_cannot_take_on_the_command_line_or_as_the_folder_is_one_line(six_clips, tmp_path):
    """Given by name (a glob's), as --out, or as the folder batch ran in, a name that is not UTF-8
    ended the batch in Ray's UnicodeEncodeError traceback, exit 1, with nothing done and the
    results folder made. Refused before anything is made; the folder given instead still works
    (the test above)."""
    latin = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9"))
    latin.mkdir()
    shutil.copy(six_clips[0], latin / "a.avi")
    done = fer_pipe("batch", str(latin / "a.avi"), "--out", str(tmp_path / "out"), timeout=120)
    assert (done.returncode, done.stderr) == (2, f"fer-pipe: batch: the argument {tmp_path}/caf\\udce9/a.avi is not "
                                                 "valid UTF-8, and Ray cannot start with it on the command line; give "
                                                 "the folder it is in (its files of such names then fail alone, named), "
                                                 "or rename it\n")
    done = fer_pipe("batch", str(six_clips[0]), "--out", str(latin / "out"), cwd=tmp_path, timeout=120)
    assert done.stderr.endswith(f"{tmp_path}/caf\\udce9/out is not valid UTF-8, and Ray cannot start with it on the "
                                "command line; rename it, or give another name\n"), done.stderr  # no folder to give
    done = fer_pipe("batch", "a.avi", "--out", str(tmp_path / "out"), cwd=latin, timeout=120)
    assert (done.returncode, done.stderr) == (2, f"fer-pipe: batch: the folder it runs in, {tmp_path}/caf\\udce9, "
                                                 "has a name that is not valid UTF-8, which Ray cannot take; run it "
                                                 "from another folder\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("delay_s", [1.5, 2.0, 2.5])
def test_a_ctrl_c_while_its_own_ray_starts_leaves_no_process(six_clips, tmp_path, delay_s):
    """A Ctrl-C about 2 s in, while the batch's own Ray was starting, left its dashboard and
    runtime-env agents running for ever (180 MB each time), orphaned in the batch's process
    group. Where a delay lands in Ray's start-up differs by machine; wherever it lands, nothing
    of the run may be left, and the batch says it was interrupted: its task is slowed to take
    seconds, so that the Ctrl-C cannot come after its end."""
    from fault_plugin import install_plugin, stat, wait_gone

    slowed = faulty_config(tmp_path / "slowed.yaml", delay_s=0.2)
    proc = subprocess.Popen([sys.executable, "-m", "fer_pipe.cli", "batch", str(six_clips[0]), "--out",
                             str(tmp_path / "out"), "--num-cpus", "1", "--quiet", "--config", str(slowed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **LOOPBACK_RAY, **install_plugin(tmp_path / "plugin")},
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(delay_s)
    os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C sends it, to the whole foreground group
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    group = {int(pid) for pid in os.listdir("/proc") if pid.isdigit() and stat(int(pid))[2:3] == [str(proc.pid)]}
    left = wait_gone(group, within=15)
    assert not left, [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in left]


def test_the_default_number_of_tasks_is_the_cpus_this_process_may_use():
    """--num-cpus defaulted to os.cpu_count(), the machine's: under taskset, or on a Slurm
    allocation of 4 cores of a 64-core node, it started a task per core of the node."""
    code = "from fer_pipe.machine import usable_cpus; print(usable_cpus())"
    done = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.split() == ["1"]


@pytest.mark.parametrize("cgroup, files", [
    ("4:cpu,cpuacct:/docker/abc", {"cpu/cpu.cfs_quota_us": "100000", "cpu/cpu.cfs_period_us": "100000"}),  # v1 root
    ("4:cpu,cpuacct:/slice/scope", {"cpu/slice/cpu.cfs_quota_us": "150000", "cpu/slice/cpu.cfs_period_us": "100000",
                                    "cpu/slice/scope/cpu.cfs_quota_us": "-1",
                                    "cpu/slice/scope/cpu.cfs_period_us": "100000"}),  # v1, on the group above
    ("0::/slice/scope", {"slice/cpu.max": "100000 100000", "slice/scope/cpu.max": "max 100000"}),  # v2, above
])
def test_the_cpus_a_batch_may_use_are_capped_by_any_cgroup_quota_over_it(tmp_path, cgroup, files):
    """Only cgroup v2's cpu.max of the process's own group was read: docker --cpus 1 on a cgroup
    v1 host (its group at the mount's root), or a quota on a systemd slice above the process,
    gave a batch a task per core, overriding Ray's own count, which reads them (s50h 2)."""
    from fer_pipe.machine import usable_cpus

    (tmp_path / "cgroup").write_text(f"{cgroup}\n9:memory:/other\n")
    for path, value in files.items():
        (tmp_path / "fs" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "fs" / path).write_text(value + "\n")
    assert usable_cpus(tmp_path / "cgroup", tmp_path / "fs") == 1


def test_chunks_after_a_damaged_one_are_cancelled(cluster, six_clips, tmp_path):
    """A header that counts 200,000 frames in a 36-frame AVI without an index: every one of its
    200 chunks ran, each reading nothing past the end, though the first already showed the
    damage (a file counting 5 million ran 5,000 tasks for minutes). The first failure cancels
    the rest."""
    data = bytearray(six_clips[0].read_bytes())
    del data[data.index(b"idx1"):]  # no index either, whose chunks fer_pipe.avi would count
    struct.pack_into("<I", data, 4, len(data) - 8)  # the RIFF list's size: a whole file
    for chunk, offset in ((b"avih", 16), (b"strh", 32)):  # the main header's and the stream's frame counts
        struct.pack_into("<I", data, data.index(chunk) + 8 + offset, 200_000)
    video = tmp_path / "counted.avi"
    video.write_bytes(bytes(data))
    out = tmp_path / "out"
    proc = batch(str(video), "--out", str(out), "--address", cluster.address, "--chunk-frames", "1000", "--quiet")
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 2, stderr
    assert f"decoding stopped at frame {CLIP_FRAMES} of 200000 (truncated or corrupt file)" in stderr
    entry = json.loads((out / "_manifest.json").read_text())["inputs"][0]
    assert (entry["status"], entry["chunks"]) == ("failed", 200)
    assert entry["attempts"] < 20, entry
    assert len((out / "counted.partial.csv").read_text().splitlines()) == CLIP_FRAMES + 1


def test_a_name_too_long_for_the_work_files_is_refused_before_anything_runs(six_clips, tmp_path):
    """A title of 245 bytes (80 CJK characters) is a name fer-pipe run takes; batch's work files
    add 17 bytes, and its task failed with "File name too long" on one of them, as a failure of
    the run (exit 1), not of the input."""
    video = tmp_path / f"{'b' * 245}.avi"
    shutil.copy(six_clips[0], video)
    done = fer_pipe("batch", str(video), "--out", str(tmp_path / "out"), "--quiet", timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"fer-pipe: batch: video {video}: its name is too long for batch's work files, which add up "
        "to 17 bytes to it; 255 bytes is Linux's limit; rename it"]


def test_bad_input_is_named_and_the_others_complete_in_chunks(cluster, six_clips, tmp_path):
    bad = tmp_path / "notes.avi"
    bad.write_text("this is not a video\n")
    no_videos = tmp_path / "empty"
    no_videos.mkdir()
    good = six_clips[1]
    out = tmp_path / "out"
    proc = batch(str(good), str(bad), str(no_videos), "--out", str(out), "--address", cluster.address,
                 "--chunk-frames", "16")
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 2, stderr
    # the summary comes after the failures too (it was left out, so what got done went unsaid)
    assert re.fullmatch(rf"fer-pipe batch: 1 done \(0 retried\), 2 failed, 0 already there, in [0-9.]+ s; "
                        rf"manifest {re.escape(str(out / '_manifest.json'))}", stderr.splitlines()[-1]), stderr
    assert [line for line in stderr.splitlines() if "notes.avi" in line] == [
        f"fer-pipe: batch: video {bad}: OpenCV cannot open it (not a video, or a codec it lacks)"]
    assert [line for line in stderr.splitlines() if "empty" in line] == [
        f"fer-pipe: batch: folder {no_videos}: no videos in it ({', '.join(VIDEO_SUFFIXES)})"]
    assert "Traceback" not in stderr
    manifest = {Path(e["input"]).name: e for e in json.loads((out / "_manifest.json").read_text())["inputs"]}
    assert manifest["notes.avi"]["status"] == "failed"
    assert manifest["notes.avi"]["attempts"] == 1  # bad input is not retried
    assert manifest[good.name]["chunks"] == 3 and manifest[good.name]["attempts"] == 3
    assert not (out / "_SUCCESS").exists()
    assert not (out / "notes.csv").exists()
    # three chunks of 16, 16 and 4 frames, joined: the same CSV as the whole clip in one go
    assert (out / f"{good.stem}.csv").read_text() == in_process_csv(good, tmp_path / "whole.csv")


@pytest.mark.parametrize("suffix, encoder", [(".m2ts", ["-c:v", "libx264", "-f", "mpegts"]),
                                             (".3gp", ["-c:v", "libx264"]),
                                             (".vob", ["-c:v", "mpeg2video", "-f", "vob"]),
                                             (".mxf", ["-c:v", "mpeg2video", "-r", "25"]),
                                             (".h264", ["-c:v", "libx264", "-f", "h264"]),
                                             (".ogv", ["-c:v", "libtheora", "-vf", "scale=320:240"]),
                                             (".asf", ["-c:v", "wmv2"])])
def test_a_folder_gives_every_kind_of_video_opencv_reads(six_clips, tmp_path, suffix, encoder, capsys):
    """A folder of AVCHD copies (.m2ts) gave none of them, and the batch ended complete (s38b);
    a Raspberry Pi's raw .h264 streams too, and the Mac's ._ twin of each video failed the
    batch of a folder copied from one (s51d 2, 3). What it leaves alone is said: the batch of a
    folder with a file or subfolder it does not read ended complete without naming them (s64a 3)."""
    from fer_pipe.batch_inputs import expand_folders

    folder = tmp_path / "recordings"
    (folder / "results").mkdir(parents=True)  # --out in the folder a glob gives: not an input
    video = folder / f"CAM1{suffix.upper()}"
    ffmpeg("-i", str(six_clips[0]), *encoder, str(video))
    (folder / "notes.txt").write_text("not a video\n")
    (folder / f"._CAM1{suffix}").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64))
    assert expand_folders([str(folder), str(folder / "results")], folder / "results") == [str(video)]
    assert capsys.readouterr().err == f"fer-pipe: batch: folder {folder}: left alone: 1 file of no video suffix " \
                                      "(notes.txt)\n"
    assert expand_folders([str(folder)], folder) == [str(video)]  # the videos' own folder as --out (s45f)
    assert capsys.readouterr().err == f"fer-pipe: batch: folder {folder}: left alone: 1 file of no video suffix " \
                                      "(notes.txt); 1 subfolder, not searched (results)\n"
    assert len(read_frames(video, 1)) == 1  # OpenCV's FFmpeg reads it


def test_a_folders_entries_named_as_videos_that_are_no_files_are_named_and_fail(cluster, six_clips, tmp_path):
    """A link to a share that is not mounted, a link that loops and a folder named as a video
    were left out of a folder's inputs in silence: no line, no manifest entry, _SUCCESS, exit 0."""
    folder, out = tmp_path / "videos", tmp_path / "out"
    folder.mkdir()
    shutil.copy(six_clips[0], folder / "a.avi")
    (folder / "b.mp4").symlink_to("/mnt/not-mounted/cam2.mp4")
    (folder / "loop.mp4").symlink_to(folder / "loop2")
    (folder / "loop2").symlink_to(folder / "loop.mp4")
    (folder / "c.mp4").mkdir()
    proc = batch(str(folder), "--out", str(out), "--address", cluster.address)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 2, stderr
    assert stderr.splitlines()[:-1] == [
        f"fer-pipe: batch: folder {folder}: left alone: 1 file of no video suffix (loop2)",
        f"fer-pipe: batch: video {folder / 'b.mp4'}: a broken link (to /mnt/not-mounted/cam2.mp4)",
        f"fer-pipe: batch: video {folder / 'c.mp4'}: a folder, not a file",
        f"fer-pipe: batch: video {folder / 'loop.mp4'}: a link that loops"]
    manifest = json.loads((out / "_manifest.json").read_text())["inputs"]
    assert [(Path(e["input"]).name, e["status"]) for e in manifest] == [
        ("a.avi", "done"), ("b.mp4", "failed"), ("c.mp4", "failed"), ("loop.mp4", "failed")]
    assert not (out / "_SUCCESS").exists()


def test_an_out_folder_given_with_a_tilde_the_shell_left_is_under_home(tmp_path):
    """'--out=~/results' (the shell expands no '~' after '=') made './~/results' while the tasks'
    CSVs, params, went to the home folder's 'results', which did not exist: every input failed,
    and a folder named '~' was left where 'rm -rf ~' clears it up, and the home with it."""
    (tmp_path / "empty.mp4").touch()  # refused before any Ray starts: the folder is still made and written
    (tmp_path / "a: b.mp4").touch()  # named once too, though ": " is in its name (s46h)
    done = fer_pipe("batch", "empty.mp4", "a: b.mp4", "--out=~/results", cwd=tmp_path,
                    env={**os.environ, "HOME": str(tmp_path)}, timeout=120)
    assert (done.returncode, done.stderr.splitlines()[:2]) == (2, ["fer-pipe: batch: video empty.mp4: the file is empty",
                                                                   "fer-pipe: batch: video a: b.mp4: the file is empty"])
    assert json.loads((tmp_path / "results" / "_manifest.json").read_text())["inputs"][0]["status"] == "failed"
    assert not (tmp_path / "~").exists()


def chunked_as_one_run(cluster, video: Path, chunk_frames: int, tmp_path: Path) -> tuple[str, int, int]:
    """Batch ``video`` alone in chunks, check that it succeeds with the CSV one in-process run
    writes, and give its manifest entry's status, chunks and rows."""
    out = tmp_path / "out"
    proc = batch(str(video), "--out", str(out), "--address", cluster.address, "--chunk-frames", str(chunk_frames),
                 "--quiet")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    (entry,) = json.loads((out / "_manifest.json").read_text())["inputs"]
    assert (out / f"{video.stem}.csv").read_text() == in_process_csv(video, tmp_path / "whole.csv")
    return entry["status"], entry["chunks"], entry["rows"]


def test_chunks_of_a_trimmed_video_stop_at_what_it_plays(cluster, trimmed_clip, tmp_path):
    """A trim without re-encoding lists 86 frames, its header says 53 and it plays 50 (see the
    fixture). Chunks of 26 are planned from the header's 53, not the 86 listed (that planned
    chunks past the end); the one at frame 52 decodes nothing, and used to fail the video after
    three attempts: it is the end of the video."""
    assert chunked_as_one_run(cluster, trimmed_clip, 26, tmp_path) == ("done", 3, 50)


def test_chunks_of_a_matroska_file_whose_audio_runs_on_end_with_its_video(cluster, long_audio_mkv, tmp_path):
    """Its count (271, from the audio's 9 s) is a ceiling: the chunks planned past the video's 72
    frames read nothing, which is its end, not a chunk that failed."""
    assert chunked_as_one_run(cluster, long_audio_mkv, 50, tmp_path) == ("done", 6, 72)


def test_the_progress_bar_counts_every_frame_of_videos_and_chunks(cluster, six_clips, clips, tmp_path):
    """On a terminal the bar counts frames, read from the CSVs the tasks are writing (so a long
    video moves it, not just each finished video), and ends at every frame of every input, also
    where the container's count was off (no_face.mp4 lists 98 frames, its header says 93, it
    plays 95). Inputs that fail, in their task or before any runs, are not counted as videos
    done, and do not keep the bar from its total (it used to lose it, at 95 frames of 93)."""
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video\n")
    code, screen = fer_pipe_on_a_terminal("batch", str(six_clips[2]), str(six_clips[3]),
                                          str(clips["no_face.mp4"]), str(notes), str(tmp_path / "gone.mp4"),
                                          "--out", str(tmp_path / "out"),
                                          "--address", cluster.address, "--chunk-frames", "16",
                                          env=LOOPBACK_RAY)
    assert code == 2, screen
    states = [s for s in screen if "frame" in s]
    assert states, screen
    total = 2 * CLIP_FRAMES + 95
    assert f" {total}/{total} " in states[-1], states[-1]
    assert "3/5 videos" in states[-1], states[-1]


def test_a_batch_after_a_stop_does_not_count_the_rows_its_unfinished_tasks_left(cluster, six_clips, tmp_path):
    """A Ctrl-C can leave a task's unfinished CSV in _work: the next run's bar counted its rows
    as that run's task's until the task wrote its own, then went back (325 frames, then 15,
    s64a 1). Here one left with ten times the rows of its clip, for the last of three inputs, which
    waits for one of the cluster's two CPUs."""
    from fer_pipe.batch_task import temp_csv

    out = tmp_path / "out"
    (out / "_work").mkdir(parents=True)
    write_rows(temp_csv(out / "_work", six_clips[2].stem), 10 * CLIP_FRAMES)
    config = faulty_config(tmp_path / "slowed.yaml", delay_s=0.05)
    code, screen = fer_pipe_on_a_terminal("batch", *map(str, six_clips[:3]), "--out", str(out), "--address",
                                          cluster.address, "--config", str(config), env=LOOPBACK_RAY)
    assert code == 0, screen
    counts = [int(n) for n in re.findall(r"\b(\d+)(?:/\d+ |frame \[)", "\n".join(s for s in screen if "frame" in s))]
    assert counts and max(counts) == 3 * CLIP_FRAMES, screen


def test_a_resumed_batch_counts_an_input_whose_tasks_were_all_done_as_a_video_done(cluster, six_clips, tmp_path):
    """A stop after every task of an input had finished, before its CSV was joined: the same
    command again runs none of its tasks and joins it, and the bar ended at "1/2 videos" under a
    summary of 2 done (s38b). Its whole-video task's part is what a stop there leaves."""
    first, second = six_clips[0], six_clips[1]
    out = tmp_path / "out"
    proc = batch(str(first), "--out", str(out), "--address", cluster.address)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr
    (out / "_work" / "parts").mkdir(parents=True, exist_ok=True)
    (out / f"{first.stem}.csv").rename(out / "_work" / "parts" / f"{first.stem}.csv")
    code, screen = fer_pipe_on_a_terminal("batch", str(first), str(second), "--out", str(out),
                                          "--address", cluster.address, env=LOOPBACK_RAY)
    assert code == 0, screen
    states = [s for s in screen if "frame" in s]
    assert "2/2 videos" in states[-1], states[-1]
    assert (out / f"{first.stem}.csv").read_text() == in_process_csv(first, tmp_path / "first.csv")


def test_the_bar_counts_the_rows_a_task_made_before_its_input_turned_out_bad(six_clips, tmp_path):
    """Such a task writes its rows beside its part, as a partial CSV: the bar left them out, and
    a folder with one damaged video ended at 94 % (s28b). They count, and its total is them."""
    from fer_pipe.batch_progress import FrameProgress
    from fer_pipe.batch_task import Job, partial_path

    job, part = Job(str(six_clips[0]), "clip"), tmp_path / "clip.csv"
    write_rows(partial_path(part), 30)
    progress = FrameProgress([job], tmp_path, 1, 0)
    progress.job_done(job, part, video_done=False)
    progress.close()
    assert (progress.bar.n, progress.bar.total) == (30, 30)


def test_the_bar_has_no_total_while_a_video_of_unknown_length_runs(six_clips, tmp_path):
    """A Matroska file written to a pipe has no count: taken as 0, the bar stood at 100 % with
    the 1,200-frame video not begun, then dropped its total (s47b). It counts without one until
    that video is done, and then ends at the frames read."""
    from fer_pipe.batch_progress import FrameProgress
    from fer_pipe.batch_task import Job

    piped = piped_matroska(six_clips[0], tmp_path)
    jobs = [Job(str(six_clips[1]), "known"), Job(str(piped), "piped")]
    progress = FrameProgress(jobs, tmp_path, 2, 0)
    progress._counter.join()
    progress.job_done(jobs[0], write_rows(tmp_path / "known.csv", 36), video_done=True)
    progress.update()
    assert (progress.bar.n, progress.bar.total) == (36, None)
    progress.job_done(jobs[1], write_rows(tmp_path / "piped.csv", 36), video_done=True)
    progress.close()
    assert (progress.bar.n, progress.bar.total) == (72, 72)


def test_a_video_of_unknown_length_is_said_to_run_as_one_task(six_clips, tmp_path, capsys):
    """Chunks are planned from a video's frame count: a 3-hour Matroska file written to a pipe
    ran as one task on one core, without a word (s47b)."""
    from fer_pipe.batch import plan
    from fer_pipe.batch_task import Job

    piped = str(piped_matroska(six_clips[0], tmp_path))
    assert plan([piped], 10) == ({piped: [Job(piped, "piped")]}, {})
    assert capsys.readouterr().err == (f"fer-pipe: batch: {piped}: its frame count is unknown (its container keeps "
                                       "none: a raw stream, or a Matroska file written to a pipe), read as one task: "
                                       "chunks are planned from the count\n")


def piped_matroska(clip: Path, folder: Path) -> Path:
    """``clip`` as FFmpeg writes it to a pipe: a Matroska file with no duration, so no count."""
    piped = folder / "piped.mkv"
    with piped.open("wb") as out:
        subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(clip), "-c", "copy", "-f", "matroska", "-"],
                       stdout=out, check=True)
    return piped


def write_rows(path: Path, frames: int) -> Path:
    """A task's CSV of ``frames`` frames without faces."""
    from fer_pipe.csvfile import CsvOutput
    from fer_pipe.events import FRAME_COLUMNS

    out = CsvOutput(path, "csv", FRAME_COLUMNS)
    out.write([["clip", frame] + [""] * (len(FRAME_COLUMNS) - 2) for frame in range(frames)])
    out.close()
    return path


def test_frames_written_reads_the_frame_of_the_last_row(tmp_path):
    """What the bar reads from a task's CSV: frames done in its chunk, not rows (a frame with
    two faces has two rows)."""
    from fer_pipe.batch_progress import frames_written
    from fer_pipe.batch_task import Job
    from fer_pipe.csvfile import CsvOutput
    from fer_pipe.events import FRAME_COLUMNS

    path = tmp_path / "part.csv"
    out = CsvOutput(path, "csv", FRAME_COLUMNS)
    chunk = Job("clip.mp4", "clip", start=32, max_frames=16)
    assert frames_written(path, chunk) == 0
    for frame, faces in ((32, 2), (33, 0), (34, 2)):
        out.write([["clip", frame] + [""] * (len(FRAME_COLUMNS) - 2)] * max(faces, 1))
    out.close()
    assert frames_written(path, chunk) == 3
    assert frames_written(tmp_path / "not-there.csv", chunk) == 0


def test_batch_without_ray_says_how_to_install_it(tmp_path, short_clip):
    """A ``ray`` that cannot be imported stands in for an install without the batch extra."""
    (tmp_path / "ray.py").write_text("raise ImportError('no ray here')\n")
    done = fer_pipe("batch", str(short_clip), "--out", str(tmp_path / "out"), "--num-cpus", "1",
                    env={"PYTHONPATH": str(tmp_path)}, timeout=60)
    assert (done.returncode, done.stderr) == (2, "fer-pipe: batch needs Ray, which is not installed: pip install -e "
                                                 "'.[batch]' in a source checkout, pip install 'fer-pipe[batch]' "
                                                 "otherwise\n")
    assert not (tmp_path / "out").exists()  # made before: an empty folder left behind


@pytest.mark.parametrize("param", ["max_frames", "start"])
def test_a_frame_range_for_the_video_source_is_refused_before_any_task(six_clips, tmp_path, param):
    """Each task sets its own range, so a trial batch of 100 frames a video gave whole CSVs,
    exit 0, and the manifest listed the --set among what made them (s38b)."""
    assert refused_before_any_task(six_clips[0], tmp_path, "--set", f"source.{param}=10") == (
        f"fer-pipe: {shipped_configs() / 'video_to_csv.yaml'}: stage 'source' (video): params.{param}: fer-pipe "
        "batch reads every frame of each video, its chunks setting their own ranges; leave it out (cut the videos "
        "first to batch a part of each)\n")


def refused_before_any_task(video: Path, folder: Path, *args: str) -> str:
    """What a batch of ``video`` into ``folder``/out says, refused before anything runs (exit 2,
    no results folder made)."""
    done = fer_pipe("batch", str(video), "--out", "out", *args, cwd=folder, env=LOOPBACK_RAY, timeout=120)
    assert done.returncode == 2 and not (folder / "out").exists(), done.stderr
    return done.stderr


def test_a_config_with_another_file_sink_is_refused_before_any_task(cluster, six_clips, tmp_path):
    """configs/episodes.yaml also writes episodes.csv: before, every task wrote that one path at
    once, over the user's file in the working folder, and the batch failed an input part-way.
    The line's advice is taken as given: batch had no --set to take it with. On a cluster, whose
    workers start in the folder its ``ray start`` ran in: the relative --out failed every task,
    its work files left in that folder, and a relative input was not found."""
    mine = tmp_path / "episodes.csv"
    mine.write_text("my episodes\n")
    done = fer_pipe("batch", str(six_clips[0]), "--out", "out", "--config", "episodes", cwd=tmp_path,
                    env=LOOPBACK_RAY, timeout=120)
    assert (done.returncode, done.stderr) == (
        2, f"fer-pipe: {shipped_configs() / 'episodes.yaml'}: stage 'episodes' (episodes): params.path: fer-pipe "
           "batch writes one CSV per video, but every task would write episodes.csv; remove the stage or --set "
           "episodes.path=/dev/null\n")
    assert mine.read_text() == "my episodes\n" and not (tmp_path / "out").exists()
    done = fer_pipe("batch", str(six_clips[0]), "--out", "out", "--config", "demo", cwd=tmp_path, env=LOOPBACK_RAY,
                    timeout=120)  # a video writer's path must name a video: /dev/null was a second refusal
    assert (done.returncode, done.stderr) == (
        2, f"fer-pipe: {shipped_configs() / 'demo.yaml'}: stage 'annotated' (video_writer): params.path: fer-pipe "
           "batch writes one CSV per video, but every task would write demo-output/annotated.mp4; remove the stage\n")
    shutil.copy(six_clips[0], tmp_path)  # a relative input, read in the batch's folder as the relative --out is written
    done = fer_pipe("batch", six_clips[0].name, "--out", "out", "--config", "episodes", "--quiet",
                    "--set", "episodes.path=/dev/null", "--set", "smoother.hold_s=0.5", "--address", cluster.address,
                    cwd=tmp_path, env=LOOPBACK_RAY, timeout=240)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / f"{six_clips[0].stem}.csv").is_file() and mine.read_text() == "my episodes\n"
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())  # what made the CSVs, all of it
    assert (manifest["config"], manifest["set"]) == (str(shipped_configs() / "episodes.yaml"),
                                                     ["episodes.path=/dev/null", "smoother.hold_s=0.5"])
    done = fer_pipe("batch", str(six_clips[0]), "--out", "out2", "--set", "nothere.path=x", cwd=tmp_path,
                    env=LOOPBACK_RAY, timeout=120)
    assert (done.returncode, done.stderr) == (
        2, f"fer-pipe: --set nothere.path=x: {shipped_configs() / 'video_to_csv.yaml'} has no stage named "
           "'nothere'\n")
    # --config "$UNSET" ran the default config where the user meant their own (s41e)
    done = fer_pipe("batch", str(six_clips[0]), "--out", "out3", "--config", "", cwd=tmp_path, timeout=120)
    assert (done.returncode, done.stderr) == (2, "fer-pipe: the config's path is empty\n")
    assert not (tmp_path / "out3").exists()


def test_a_node_without_the_batchs_folder_refuses_a_relative_input_as_such(tmp_path, monkeypatch):
    """Such a node's task stayed in the folder its ``ray start`` ran in and said the video was
    not there, "the folder fer-pipe runs in", a folder the user never ran fer-pipe in (s58a 1)."""
    gone = tmp_path / "gone"
    with pytest.raises(InputError) as refused:
        enter(str(gone), Job("videos/clip.mp4", "clip"))
    assert str(refused.value) == (f"video videos/clip.mp4: this node cannot enter {gone}, the folder the batch "
                                  "runs in, to read it (No such file or directory): give the videos on storage "
                                  "every node sees at the same path")
    monkeypatch.chdir(tmp_path)
    enter(str(gone), Job(str(tmp_path / "clip.mp4"), "clip"))  # an absolute one is read where the node is
    assert os.getcwd() == str(tmp_path)


@pytest.mark.parametrize("stage, param", [
    ({"type": "zmq", "inputs": ["classifier"], "params": {"endpoint": "tcp://127.0.0.1:5587"}}, "endpoint"),
    ({"type": "episodes", "inputs": ["classifier"], "params": {"path": "/dev/null", "publish": 5588}}, "publish")])
def test_a_config_with_a_stage_that_listens_on_a_port_is_refused_before_any_task(six_clips, tmp_path, stage,
                                                                                   param):
    """Every task bound the one port: those side by side with another failed, at random and as
    bad input (so never retried)."""
    config = yaml.safe_load(CONFIG.read_text())
    config["stages"]["events"] = stage
    path = tmp_path / "listens.yaml"
    path.write_text(yaml.safe_dump(config))
    assert refused_before_any_task(six_clips[0], tmp_path, "--config", str(path)) == (
        f"fer-pipe: {path}: stage 'events' ({stage['type']}): params.{param}: fer-pipe batch runs its tasks "
        "side by side, and every one would listen there, so all but one would find it taken; remove the "
        "stage (batch results are the CSVs)\n")


def test_a_stage_whose_preflight_fails_is_refused_before_any_task_and_in_a_task(six_clips, tmp_path, monkeypatch):
    """Batch ran no stage's preflight: a window with no display crashed every task's process
    (Qt aborts it), four attempts each, then exit 1 per video, where a run says one line (s39c).
    The driver checks them; a task, on a machine of its own, checks them again."""
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    config = yaml.safe_load(CONFIG.read_text())
    config["stages"]["window"] = {"type": "window", "inputs": ["classifier"]}
    path = tmp_path / "window.yaml"
    path.write_text(yaml.safe_dump(config))
    no_display = ("stage 'window' (window): no display (DISPLAY and WAYLAND_DISPLAY are unset): a window cannot "
                  "open here; use the video_writer sink to write the overlay to a file instead")
    assert refused_before_any_task(six_clips[0], tmp_path, "--config", str(path)) == f"fer-pipe: {no_display}\n"
    task = (f"from fer_pipe.batch_task import Job, job_config\nfrom fer_pipe.config import load_graph\n"
            f"from fer_pipe.inprocess import run_graph\nimport yaml\n"
            f"data = yaml.safe_load(open({str(path)!r}))\n"
            f"run_graph(load_graph(job_config(data, {str(path)!r}, Job({str(six_clips[0])!r}, 'a'), "
            f"{str(tmp_path / 'a.csv')!r})))\n")
    done = subprocess.run([sys.executable, "-c", task], capture_output=True, text=True, timeout=120)
    unnamed = no_display.removeprefix("stage 'window' (window): ")  # a task's line names its video, not the stage
    assert done.returncode == 1 and done.stderr.splitlines()[-1] == f"fer_pipe.errors.InputError: {unnamed}", \
        done.stderr


@pytest.mark.parametrize("stage", ["source", "csv"])
def test_a_config_whose_video_or_csv_params_are_no_mapping_is_one_line_before_any_task(six_clips, tmp_path,
                                                                                        stage):
    """Batch sets the video's and the CSV's paths in the config before it is checked: params given
    as a list were a traceback, exit 1, where validate names them."""
    config = yaml.safe_load(CONFIG.read_text())
    config["stages"][stage]["params"] = ["path"]
    path = tmp_path / "listed.yaml"
    path.write_text(yaml.safe_dump(config))
    done = fer_pipe("batch", str(six_clips[0]), "--out", "out", "--config", str(path), cwd=tmp_path,
                    env=LOOPBACK_RAY, timeout=120)
    assert (done.returncode, done.stderr) == (2, fer_pipe("validate", str(path)).stderr)
    assert done.stderr.endswith(f"stage {stage!r} ({config['stages'][stage]['type']}): params must be a mapping\n")
    config["stages"][stage]["params"] = []  # none, as validate takes it: batch's own path was said to be missing
    made = job_config(config, str(path), Job("a.mp4", "a"), tmp_path / "a.csv")["stages"][stage]["params"]
    assert made["path"] == {"source": "a.mp4", "csv": str(tmp_path / "a.csv")}[stage]
    assert not (tmp_path / "out").exists()


def test_a_config_with_another_source_is_refused_before_any_task(six_clips, tmp_path):
    """A second source's frames went into every video's CSV, and in chunks into every chunk's,
    which were then said not to line up, the video blamed."""
    config = yaml.safe_load(CONFIG.read_text())
    (tmp_path / "pics").mkdir()
    config["stages"]["pics"] = {"type": "image_folder", "params": {"path": str(tmp_path / "pics")}}
    config["stages"]["detector"]["inputs"] = ["source", "pics"]
    path = tmp_path / "two_sources.yaml"
    path.write_text(yaml.safe_dump(config))
    done = fer_pipe("batch", str(six_clips[0]), "--out", "out", "--config", str(path), cwd=tmp_path,
                    env=LOOPBACK_RAY, timeout=120)
    assert (done.returncode, done.stderr) == (
        2, f"fer-pipe: {path}: stage 'pics' (image_folder): fer-pipe batch reads each video through stage 'source' "
           "alone, and this source's frames would go into every video's CSV; remove the stage\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("names, chunks, line", [
    (("cam.avi", "cam@0-9.avi"), ["--chunk-frames", "10"],
     "inputs {0} and {1} would share the work files named cam@0-9; rename one"),
    (("door.avi", "door@0-9.avi", "long"), ["--chunk-frames", "10"],  # both in chunks; the second's one task
     "inputs {0} and {1} would share the work files named door@0-9; rename one"),
    (("door.avi", "door@0-9.partial.avi"), ["--chunk-frames", "10"],  # where a damaged chunk keeps its rows
     "inputs {0} and {1} would share the work files named door@0-9.partial; rename one"),
    (("x.avi", "x.partial.avi"), [],
     "inputs {0} and {1}: the second's CSV, x.partial.csv, is where the first's rows would be kept if it turned "
     "out damaged; rename all but one of each")])
def test_inputs_whose_files_would_meet_are_refused_before_anything_is_made(six_clips, tmp_path, names, chunks,
                                                                           line):
    """cam@0-9.avi's work files were those of cam.avi's first chunk: cam.csv got the other video's
    rows, and the batch died with no manifest. x.partial.avi's CSV was x.avi's partial rows, which
    a rerun then removed, under _SUCCESS."""
    videos = tmp_path / "videos"
    videos.mkdir()
    paths = [videos / name for name in names[:2]]
    paths[0].write_bytes(six_clips[0].read_bytes())  # 36 frames: chunks of 10
    if names[2:]:  # in chunks too: should they not line up, it runs as one task, named as the input
        paths[1].write_bytes(six_clips[1].read_bytes())
    else:  # one chunk: named as the input
        write_video(paths[1], read_frames(six_clips[0], 8))
    done = fer_pipe("batch", str(videos), "--out", "out", *chunks, cwd=tmp_path, env=LOOPBACK_RAY, timeout=120)
    assert (done.returncode, done.stderr) == (2, "fer-pipe: " + line.format(*paths) + "\n")
    assert not (tmp_path / "out").exists()


def test_every_pair_of_inputs_that_would_write_one_csv_is_said_at_once(tmp_path):
    """Said a pair at a time, a camera's folder of .h264 and .h265 recordings of each name took a
    run per pair to learn them all (s54c 4)."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("door.h264", "door.h265", "door.mp4", "yard.h264", "yard.h265", "yard.partial.mp4"):
        (videos / name).write_bytes(b"")
    done = fer_pipe("batch", str(videos), "--out", "out", cwd=tmp_path, env=LOOPBACK_RAY, timeout=120)
    # three of one name were told to rename one of each pair, which left two, and the partial
    # rows' clash came in a later run (s55a 7)
    assert (done.returncode, done.stderr) == (
        2, f"fer-pipe: inputs {videos / 'door.h264'}, {videos / 'door.h265'} and {videos / 'door.mp4'} would all "
           f"write door.csv; {videos / 'yard.h264'} and {videos / 'yard.h265'} would both write yard.csv; "
           f"{videos / 'yard.h264'} and {videos / 'yard.partial.mp4'}: the second's CSV, yard.partial.csv, is where "
           "the first's rows would be kept if it turned out damaged; rename all but one of each\n")
    assert not (tmp_path / "out").exists()


def test_a_chunk_that_fails_where_one_run_does_not_is_said_as_the_chunks_failure(cluster, clips, tmp_path):
    """A variable-rate Matroska file counts its duration at the nominal rate, so its last chunk
    starts past its last frame and fails; the video ran again as one task, whole, and the line
    called it "damaged" (s54c 5). The line says the chunk's failure."""
    video = tmp_path / "vfr.mkv"
    ffmpeg("-i", str(clips["single_face.mp4"]), "-an", "-vf", r"select='not(mod(n\,2))+lt(n\,20)'", "-fps_mode",
           "passthrough", "-c:v", "libx264", str(video))
    proc = batch(str(video), "--out", str(tmp_path / "out"), "--address", cluster.address, "--chunk-frames", "20",
                 "--quiet")
    _, stderr = proc.communicate(timeout=300)
    assert (proc.returncode, stderr) == (0, f"fer-pipe: batch: {video}: a chunk of it failed (video {video}: no "
                                            "frame could be decoded from start 60 on (past its end?) (truncated "
                                            "or corrupt file)); it runs again as one task, so that the rows kept "
                                            "are those one run keeps\n")
    assert len(list(csv.DictReader((tmp_path / "out" / "vfr.csv").open()))) == 46


def test_chunks_of_one_frame_each_are_checked_for_a_frame_twice(tmp_path):
    """With --chunk-frames 1 no chunk had a period of its own, and the check gave up: a seek
    that landed a frame early joined that frame twice."""
    from fer_pipe.batch_parts import misaligned
    from fer_pipe.events import FRAME_COLUMNS

    def parts(times: list[float]) -> list[Path]:
        out = []
        for frame, seconds in enumerate(times):
            path = tmp_path / f"{len(times)}-{frame}.csv"
            row = ["clip", str(frame), f"{seconds:.3f}"] + [""] * (len(FRAME_COLUMNS) - 3)
            path.write_text(",".join(FRAME_COLUMNS) + "\n" + ",".join(row) + "\n")
            out.append(path)
        return out

    assert misaligned(parts([i / 30 for i in range(5)])) is None
    assert misaligned(parts([0 / 30, 1 / 30, 2 / 30, 2 / 30, 3 / 30, 4 / 30])) == (2, 0.067, 3, 0.067)
    assert misaligned(parts([0 / 30, 1 / 30, 2 / 30, 4 / 30, 5 / 30])) == (2, 0.067, 3, 0.133)  # one late


def test_the_chunks_of_a_clip_that_changes_its_rate_line_up_and_a_late_seek_is_still_found(tmp_path):
    """Each edge was judged by the median period of all the chunks: where a clip turns from 30 fps
    to 10, the edges in its 30 fps part were called misaligned, the video run again as one task
    (s64a 2). Each is judged by the frames either side of it now; a seek that lands a frame late
    there is still found."""
    from fer_pipe.batch_parts import misaligned
    from fer_pipe.events import FRAME_COLUMNS

    times = [i / 30 for i in range(30)] + [1 + i / 10 for i in range(31)]  # 30 fps, then 10 fps

    def chunks(folder: Path, late: bool) -> list[Path]:
        folder.mkdir()
        paths = []
        for start in range(0, 60, 20):
            path = folder / f"{start}.csv"
            shift = late and start == 20  # its frames come a frame late: numbered 20 on, timed as 21 on
            path.write_text(",".join(FRAME_COLUMNS) + "\n" + "".join(
                ",".join(["clip", str(f), f"{times[f + shift]:.3f}"] + [""] * (len(FRAME_COLUMNS) - 3)) + "\n"
                for f in range(start, start + 20)))
            paths.append(path)
        return paths

    assert misaligned(chunks(tmp_path / "vfr", late=False)) is None
    assert misaligned(chunks(tmp_path / "late", late=True)) == (19, 0.633, 20, 0.7)
    for part in chunks(tmp_path / "wide", late=True):  # a plug-in's extra column wider than the tail read (s64d 7)
        part.write_text("".join(line + ",x" * 3000 + "\n" for line in part.read_text().splitlines()))
    assert misaligned(sorted((tmp_path / "wide").iterdir(), key=lambda p: int(p.stem))) == (19, 0.633, 20, 0.7)


def one_folder_then_another(cluster, first: Path, second: Path, out: Path) -> tuple[int, int, str]:
    """Batch folder ``first``, then folder ``second``, into one results folder ``out``: the two
    exit codes and the second run's stderr."""
    code = batch(str(first), "--out", str(out), "--address", cluster.address, "--quiet").wait(timeout=240)
    later = batch(str(second), "--out", str(out), "--address", cluster.address, "--quiet")
    _, stderr = later.communicate(timeout=240)
    return code, later.returncode, stderr


def test_another_video_of_the_same_name_is_refused_in_a_later_run(cluster, six_clips, tmp_path):
    """Two days of one camera, one results folder: the second day's cam.avi was "nothing to do"
    (its name's CSV was there), never read, exit 0. It is refused, named; the first day's
    videos, moved to another folder, are still taken as themselves."""
    day1, day2, out = tmp_path / "day1", tmp_path / "day2", tmp_path / "out"
    day1.mkdir()
    day2.mkdir()
    shutil.copy(six_clips[0], day1 / "cam.avi")
    shutil.copy(six_clips[5], day2 / "cam.avi")
    then = datetime(2026, 1, 2, 3, 4, 5).timestamp()
    zone = datetime.fromtimestamp(then).astimezone().isoformat()[-6:]  # +00:00, the machine's offset then
    os.utime(day1 / "cam.avi", (then, then))
    first, second, stderr = one_folder_then_another(cluster, day1, day2, out)
    assert (first, second) == (0, 2), stderr
    rows = (out / "cam.csv").read_text()
    size1, size2 = (day1 / "cam.avi").stat().st_size, (day2 / "cam.avi").stat().st_size
    assert stderr.splitlines() == [
        f"fer-pipe: batch: {day2 / 'cam.avi'}: {out / 'cam.csv'} was made by an earlier run from "
        f"{day1 / 'cam.avi'} ({size1:,} bytes), not from this video ({size2:,} bytes); give another --out, "
        "or rename one of the two"]
    assert (out / "cam.csv").read_text() == rows
    assert not (out / "_SUCCESS").exists()
    moved = tmp_path / "moved"
    day1.rename(moved)
    again = batch(str(moved), "--out", str(out), "--address", cluster.address, "--quiet")
    _, stderr = again.communicate(timeout=240)
    assert again.returncode == 0, stderr
    assert json.loads((out / "_manifest.json").read_text())["inputs"][0]["status"] == "skipped"
    copied = tmp_path / "copied"  # copied anew without its time: the sizes alone told the two apart by nothing
    copied.mkdir()
    shutil.copy(moved / "cam.avi", copied / "cam.avi")
    os.utime(copied / "cam.avi", (then + 60, then + 60))
    again = batch(str(copied), "--out", str(out), "--address", cluster.address, "--quiet")
    _, stderr = again.communicate(timeout=240)
    assert (again.returncode, stderr.splitlines()) == (2, [
        f"fer-pipe: batch: {copied / 'cam.avi'}: {out / 'cam.csv'} was made by an earlier run from "
        f"{moved / 'cam.avi'} (modified 2026-01-02 03:04:05{zone}), not from this video (modified 2026-01-02 "
        f"03:05:05{zone}, the same size); give another --out, or rename one of the two (a copy made without cp -p "
        "has a new time)"])
    again = batch("cam.avi", "--out", str(out), "--address", cluster.address, "--quiet", cwd=copied)  # given as a name
    _, stderr = again.communicate(timeout=240)  # that the other video's path ends with: named still (s46f)
    assert stderr.startswith(f"fer-pipe: batch: cam.avi: {out / 'cam.csv'} was made by an earlier run from "), stderr
    shutil.copy(six_clips[5], moved / "cam.avi")  # a recording replaced at its path
    again = batch(str(moved), "--out", str(out), "--address", cluster.address, "--quiet")
    _, stderr = again.communicate(timeout=240)
    assert (again.returncode, stderr.splitlines()) == (2, [
        f"fer-pipe: batch: {moved / 'cam.avi'}: {out / 'cam.csv'} was made by an earlier run from the video at this "
        f"path then ({size1:,} bytes), replaced since ({size2:,} bytes); give another --out"])


def test_a_second_batch_into_a_folder_in_use_is_refused_and_a_run_with_work_unmarks_success(cluster, six_clips,
                                                                                            tmp_path):
    """Two batches into one folder removed each other's work and temporary files, and the first to
    end marked the folder complete; and _SUCCESS of an earlier run stayed while a run with new
    videos was going (and after it was stopped), so a step waiting for it went ahead without them."""
    folder, out = tmp_path / "videos", tmp_path / "out"
    folder.mkdir()
    shutil.copy(six_clips[0], folder)
    config = faulty_config(tmp_path / "slowed.yaml", delay_s=0.05)
    first = batch(str(folder), "--out", str(out), "--address", cluster.address, "--config", str(config), "--quiet")
    assert first.wait(timeout=240) == 0
    assert (out / "_SUCCESS").exists()
    for clip in six_clips[1:4]:
        shutil.copy(clip, folder)
    running = batch(str(folder), "--out", str(out), "--address", cluster.address, "--config", str(config), "--quiet")
    try:
        assert running_attempt(out / "_work", out, running) is not None, "the batch ended before the test"
        assert not (out / "_SUCCESS").exists()
        second = batch(str(six_clips[4]), "--out", str(out), "--address", cluster.address, "--quiet")
        _, stderr = second.communicate(timeout=120)
        assert (second.returncode, stderr.splitlines()) == (2, [
            f"fer-pipe: --out {out}: another fer-pipe batch is writing into it; wait for it to end, or give this "
            "one another folder"])
    finally:
        running.send_signal(signal.SIGINT)
        running.communicate(timeout=120)
    assert running.returncode == 130
    assert not (out / "_SUCCESS").exists()


def test_a_rerun_with_other_settings_is_refused_while_the_folder_holds_what_the_first_made(cluster, six_clips,
                                                                                          tmp_path):
    """A rerun with another --set took the first run's CSVs as done and made the rest with the
    new settings: one folder of CSVs made two ways, exit 0. It is refused, with the difference;
    a value given at its default, or the folder spelt another way, is no difference; a folder
    whose outputs are gone is free for other settings."""
    out, other = tmp_path / "out", tmp_path / "elsewhere"
    other.mkdir()
    assert batch(str(six_clips[0]), "--out", str(out), "--address", cluster.address, "--quiet").wait(timeout=240) == 0
    made = (out / f"{six_clips[0].stem}.csv").read_text()

    changed = batch(str(six_clips[0]), str(six_clips[1]), "--out", str(out), "--address", cluster.address, "--quiet",
                    "--set", "detector.min_neighbors=3")
    _, stderr = changed.communicate(timeout=240)
    assert (changed.returncode, stderr.splitlines()) == (2, [
        f"fer-pipe: --out {out}: the CSVs or finished tasks in it were made with other settings: stage 'detector' "
        "(haar) min_neighbors was 5, is now 3; give another --out, or the config, --set and environment variables "
        "that made them (_settings.json in it holds the values)"])
    assert not (out / f"{six_clips[1].stem}.csv").exists()

    same = batch(str(six_clips[0]), str(six_clips[1]), "--out", str(other / ".." / "out"), "--address",
                 cluster.address, "--quiet", "--set", "detector.min_neighbors=5", "--set", "detector.workers=1")
    _, stderr = same.communicate(timeout=240)
    assert same.returncode == 0, stderr
    assert (out / f"{six_clips[0].stem}.csv").read_text() == made
    assert (out / f"{six_clips[1].stem}.csv").is_file()

    for made_csv in out.glob("*.csv"):
        made_csv.unlink()
    fresh = batch(str(six_clips[0]), "--out", str(out), "--address", cluster.address, "--quiet",
                  "--set", "detector.min_neighbors=3")
    _, stderr = fresh.communicate(timeout=240)
    assert fresh.returncode == 0, stderr
    assert json.loads((out / "_settings.json").read_text())["detector"]["params"]["min_neighbors"] == 3


def test_a_file_a_stage_reads_counts_in_the_settings_by_its_content(tmp_path, monkeypatch):
    """The model's path was recorded as text: a model retrained in place made the rest of a
    folder's CSVs with other weights, unnoticed, and the same model named from another checkout
    was refused. Its content decides now; a cascade named among OpenCV's is OpenCV's file, whatever
    a file of that name in the working folder holds (it was that file's digest, which the stage
    never reads)."""
    model = tmp_path / "model.tflite"
    shutil.copy(DEFAULT_MODEL, model)

    def settings(*sets: str) -> dict:
        return settings_of(load_graph(CONFIG, ["csv.path=out.csv", *sets]), "csv")

    shipped = settings()
    assert first_difference(shipped, settings(f"classifier.model={model}")) is None
    opencvs = Path(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
    assert shipped["detector"]["params"]["cascade"] == f"sha256:{hashlib.sha256(opencvs.read_bytes()).hexdigest()}"
    (tmp_path / "haarcascade_frontalface_default.xml").write_text("mine")
    monkeypatch.chdir(tmp_path)
    assert settings() == shipped  # run from a folder that holds such a file
    monkeypatch.undo()
    older = {**shipped, "classifier": {**shipped["classifier"], "params": {  # recorded by path, before digests
        **shipped["classifier"]["params"], "model": str(DEFAULT_MODEL)}},
        "detector": {**shipped["detector"], "params": {**shipped["detector"]["params"],
                                                      "cascade": "haarcascade_frontalface_default.xml"}}}
    assert first_difference(older, shipped) is None
    model.write_bytes(model.read_bytes()[:-1] + b"\0")
    why = first_difference(shipped, settings(f"classifier.model={model}"))
    assert re.fullmatch(r"stage 'classifier' \(classifier\) model was a file of sha256:[0-9a-f]{12}…, "
                        r"is now a file of sha256:[0-9a-f]{12}…", why or ""), why


def test_a_settings_record_of_another_shape_is_no_record_and_a_gone_stage_is_called_gone(tmp_path):
    """A _settings.json edited by hand, its params a string, was a traceback at the rerun's
    comparison; a stage the config no longer has was said to be new."""
    settings = settings_of(load_graph(CONFIG, ["csv.path=out.csv"]), "csv")
    (tmp_path / "_settings.json").write_text(json.dumps({**settings, "detector": {"type": "haar", "params": "x"}}))
    assert recorded_settings(tmp_path) is None
    (tmp_path / "_settings.json").write_text("{}")  # emptied by hand: "stage 'classifier' is new" (s48j 7)
    assert recorded_settings(tmp_path) is None
    (tmp_path / "_settings.json").write_text(json.dumps({**settings, "blur": {"type": "mine", "params": {}}}))
    assert first_difference(recorded_settings(tmp_path), settings) == "stage 'blur' (mine) is gone"
    assert first_difference(settings, recorded_settings(tmp_path)) == "stage 'blur' is new"


class KeepParams(StageParams):
    emotions: set[str] = Field(default_factory=lambda: {"angry", "fear", "happy", "neutral", "sad", "surprise"})


class Keep(Stage):
    """Keeps the faces whose label is one of emotions (a plug-in's set param)."""
    Params = KeepParams
    reads = writes = EXPRESSIONS


def test_a_set_param_is_recorded_sorted_and_a_stages_version_counts(tmp_path, monkeypatch):
    """A set dumped as a list in its hash order, which changes from process to process: the same
    batch command's rerun was refused as made with other settings, at random (s48c 2). A plug-in's
    raised ``version``, which the README asks for when its output changes meaning, was not
    recorded, and one folder was finished by two versions (s48c 4); a folder recorded before
    versions counted is not refused for it."""
    monkeypatch.setitem(registry().types, "keep", Keep)
    config = tmp_path / "keep.yaml"
    config.write_text(CONFIG.read_text().replace("    inputs: [classifier]", "    inputs: [keep]").replace(
        "  csv:\n", "  keep:\n    type: keep\n    inputs: [classifier]\n  csv:\n"))

    def settings(*sets: str) -> dict:
        return settings_of(load_graph(config, ["csv.path=out.csv", *sets]), "csv")

    first = settings()
    assert first["keep"]["params"]["emotions"] == ["angry", "fear", "happy", "neutral", "sad", "surprise"]
    assert first["keep"]["version"] == 1
    monkeypatch.setattr(Keep, "version", 2)
    assert version_change(first, settings()) == "stage 'keep' (keep) was at version 1, is now at 2"
    assert first_difference(first, settings()) is None  # said apart: no config brings back a version (s48f 8)
    # recorded before versions were, a stage counts as at 1: haar's boxes changed at 2 (s48a 2)
    older = {name: {k: v for k, v in stage.items() if k != "version"} for name, stage in first.items()}
    monkeypatch.setattr(Keep, "version", 1)
    assert version_change(older, first) == "stage 'detector' (haar) was at version 1, is now at 2"
    older["detector"]["version"] = 2
    assert version_change(older, first) is None and first_difference(older, first) is None
    # a param gained since a folder was recorded: as it was while at its default; before, the
    # folder was refused as "set otherwise", naming nothing (s48a 1)
    del older["detector"]["params"]["min_neighbors"]
    assert first_difference(older, first) is None
    assert first_difference(older, settings("detector.min_neighbors=3")) == (
        "stage 'detector' (haar) min_neighbors was not a param, is now 3")


def test_a_folder_an_older_fer_pipe_made_is_named_as_such(tmp_path):
    """A folder whose outputs have no _settings.json was finished with this fer-pipe's rows
    beside the old ones; one with no _sources.json had its finished CSVs called strangers' and
    marked failed (s48a 2, 3). A folder whose every input was bad has neither, and is no older."""
    from fer_pipe.batch import _older_folder

    settings = settings_of(load_graph(CONFIG, ["csv.path=out.csv"]), "csv")
    (tmp_path / "door.csv").write_text("source,frame\n")
    assert "no _settings.json" in _older_folder(tmp_path, {"door": object()}, None)
    (tmp_path / "_settings.json").write_text("{}")  # there, but not of fer-pipe's shape (s48f 8)
    assert "_settings.json is not one fer-pipe wrote" in _older_folder(tmp_path, {"door": object()}, None)
    (tmp_path / "_settings.json").unlink()
    assert _older_folder(tmp_path, {"door": object()}, settings) is None
    (tmp_path / "_manifest.json").write_text(json.dumps({"inputs": [{"input": "door.mp4", "status": "done"}]}))
    assert "lists finished inputs, and it has no _sources.json" in _older_folder(tmp_path, {}, None)
    (tmp_path / "_manifest.json").write_text(json.dumps({"inputs": [{"input": "door.mp4", "status": "failed"}]}))
    assert _older_folder(tmp_path, {}, None) is None


def test_an_input_named_like_another_ones_partial_rows_keeps_its_csv(cluster, six_clips, tmp_path):
    """take.partial.mp4's CSV is take.partial.csv, where a later run's take.mp4 keeps its rows
    if it turns out damaged: a whole take.mp4 removed that CSV as its own partial rows once its
    CSV was whole, and a damaged one wrote over it. The later run refuses take.mp4, as one run
    refuses the two together; and a cut video's kept rows hold its name as its CSV would."""
    first, second, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    first.mkdir()
    second.mkdir()
    shutil.copy(six_clips[0], first / "take.partial.avi")
    shutil.copy(six_clips[1], second / "take.avi")
    codes = one_folder_then_another(cluster, first, second, out)
    assert codes[:2] == (0, 2), codes[2]
    stderr = codes[2]
    assert stderr.splitlines() == [
        f"fer-pipe: batch: {second / 'take.avi'}: {out}/take.partial.csv, where this video's rows would be kept if "
        f"it turned out damaged, is the CSV of {first / 'take.partial.avi'}, from an earlier run; give another "
        "--out, or rename one of the two"]
    assert (out / "take.partial.csv").read_text() == in_process_csv(first / "take.partial.avi", tmp_path / "t.csv")


def test_a_cut_videos_kept_rows_hold_its_name_for_a_later_run(cluster, six_clips, tmp_path):
    """Day 1's cam.avi was cut short, so its rows went to cam.partial.csv, which did not hold the
    name: day 2's different cam.avi ran, and its whole CSV removed day 1's kept rows."""
    day1, day2, out = tmp_path / "day1", tmp_path / "day2", tmp_path / "out"
    day1.mkdir()
    day2.mkdir()
    data = six_clips[0].read_bytes()
    (day1 / "cam.avi").write_bytes(data[: len(data) // 2])
    shutil.copy(six_clips[1], day2 / "cam.avi")
    first, second, stderr = one_folder_then_another(cluster, day1, day2, out)
    assert (first, second) == (2, 2), stderr
    assert f"the rows kept in {out}/cam.partial.csv were made by an earlier run from {day1 / 'cam.avi'}" in stderr
    decodable = len(read_frames(day1 / "cam.avi"))
    assert len((out / "cam.partial.csv").read_text().splitlines()) == decodable + 1 and not (out / "cam.csv").exists()


def test_a_name_is_held_while_its_csv_or_chunks_are_there(tmp_path):
    """An interrupted run's chunks are the video's as its CSV is; a name with neither is free."""
    from fer_pipe.batch_sources import Source, record_sources, recorded_sources

    parts = tmp_path / "_work" / "parts"
    parts.mkdir(parents=True)
    (tmp_path / "done.csv").write_text("x\n")
    (parts / "half@0-99.csv").write_text("x\n")
    sources = {key: Source(f"/videos/{key}.mp4", 10, 1) for key in ("done", "half", "gone")}
    record_sources(tmp_path, sources)
    assert recorded_sources(tmp_path, parts) == {key: sources[key] for key in ("done", "half")}
    (tmp_path / "_sources.json").write_text("[1, 2]")  # not one of ours
    assert recorded_sources(tmp_path, parts) == {}


def test_which_video_a_name_belongs_to():
    """Moved with its time kept, a video is itself; replaced at its path by one of the same size
    (a camera's fixed-size segments), it is not. A video named like another's kept rows
    (done.partial.mp4, with done's rows kept in done.partial.csv) may not replace them."""
    from fer_pipe.batch_sources import Source, clash, same_video

    cam = Source("/v/cam.mp4", 10, 1)
    assert same_video(cam, Source("/w/cam.mp4", 10, 1))
    assert not same_video(cam, Source("/v/cam.mp4", 10, 2))
    # copied with its time to a file system that keeps it coarser (s50c 2): SMB/NTFS, exFAT, FAT
    ext4 = Source("/v/lobby.mp4", 10, 1764958698_123456789)
    for kept in (1764958698_123456700, 1764958698_120000000, 1764958700_000000000):
        assert same_video(ext4, Source("/share/lobby.mp4", 10, kept)) and same_video(Source("/s/l.mp4", 10, kept), ext4)
    assert not same_video(ext4, Source("/share/lobby.mp4", 10, 1764958698_123456000 - 10**6))
    assert not same_video(Source("/v/a.mp4", 10, 1764958698 * 10**9), Source("/v/a.mp4", 10, 1764958703 * 10**9))
    out = Path("/nonexistent")
    assert clash("cam", cam, {"cam": cam}, out, out / "_work") is None


def test_a_recording_that_grew_while_a_batch_read_it_is_failed_with_its_rows_kept_and_said_so_after(tmp_path):
    """A Matroska file still being written, in blocks a read falls between, was read to where the
    recorder had got, marked done under _SUCCESS, and every later batch refused it as "replaced
    since; give another --out" (s68c 1)."""
    from fer_pipe.batch import InputReport, _fail_if_changed
    from fer_pipe.batch_sources import Source, clash, source_of

    video = tmp_path / "cam.mkv"
    video.write_bytes(b"x" * 1000)
    planned = source_of(str(video))

    def failed(planned: Source) -> tuple[str, str]:
        report = InputReport(str(video), str(tmp_path / "cam.csv"))
        _fail_if_changed(report, planned)
        assert report.failed_at is None and report.bad_input == (report.status == "failed")  # no chunk failed
        return report.status, report.error.removeprefix(f"video {video}: ")

    assert failed(planned) == ("pending", "")  # the same file: done as read
    again = "; the same command once it is whole reads it again"
    os.utime(video, ns=(planned.mtime_ns + 10**9, planned.mtime_ns + 10**9))
    # a size then and now alike read as no change at all (s68f 6)
    assert failed(planned) == ("failed", f"the file changed while it was read (modified again, the same size: "
                                         f"rewritten?){again}")
    with open(video, "ab") as recording:
        recording.write(b"x" * 500)
    assert failed(planned) == ("failed", "the file changed while it was read (1,000 bytes then, 1,500 now: still "
                                         f"being recorded?){again}")
    # a smaller file, a link moved on, a file gone: no recording going on, nor a promise the rerun breaks (s68g 4, 5)
    assert failed(planned._replace(size=2000)) == (
        "failed", f"the file changed while it was read (2,000 bytes then, 1,500 now: cut short or replaced?){again}")
    assert failed(planned._replace(path=str(tmp_path / "day1.mkv"))) == (
        "failed", f"the path leads to {video} now, where its tasks read {tmp_path / 'day1.mkv'}")
    grown = source_of(str(video))
    parts = tmp_path / "_work" / "parts"
    parts.mkdir(parents=True)
    # a stopped batch's chunk and whole task (s68f 8), named one by one: a glob cam@* missed cam.csv and took
    # cam@night's (s68g 1), and a match of the name's start took cam.v2's (s68h 2)
    for name in ("cam@0-49.csv", "cam.csv", "cam@night.csv", "cam.v2.csv", "cam.v2.partial.csv"):
        (parts / name).write_text("x\n")
    (tmp_path / "cam.csv").write_text("x\n")  # as a batch before this check left it
    for held, were in ((tmp_path / "cam.csv", "was"), (f"{parts / 'cam.csv'}, {parts / 'cam@0-49.csv'}", "were")):
        # a larger video put in its place cannot be told from it grown: the advice is for both (s68f 3)
        assert clash("cam", grown, {"cam": planned}, tmp_path, tmp_path / "_work") == (
            f"{held} {were} made by an earlier run from the video at this path when it was 1,000 bytes; it is 1,500 "
            f"now: if it was still being recorded then, remove {held} to read it again; if another video replaced "
            "it, give another --out")
        (tmp_path / "cam.csv").unlink(missing_ok=True)
    assert clash("cam", Source(str(video), 900, planned.mtime_ns + 10**9), {"cam": planned}, tmp_path,
                 tmp_path / "_work").endswith("replaced since (900 bytes); give another --out")  # a smaller one
    video.unlink()
    assert failed(planned) == ("failed", "the file is gone since its tasks began to read it")


def test_a_videos_finished_tasks_are_its_own_files_not_those_of_a_name_it_begins(tmp_path):
    """cam@night's task files kept cam's record alive (a prefix match), and a new cam.mp4 was
    refused as 'the rows kept in cam.partial.csv', a file that was not there (s68h 3)."""
    from fer_pipe.batch_sources import SOURCES, Source, clash, kept_besides, recorded_sources

    parts = tmp_path / "_work" / "parts"
    parts.mkdir(parents=True)
    (parts / "cam@night.csv").write_text("x\n")
    (tmp_path / SOURCES).write_text(json.dumps({"cam": {"path": "/day1/cam.mp4", "size": 10, "mtime_ns": 1},
                                                "cam@night": {"path": "/n/cam@night.mp4", "size": 20, "mtime_ns": 2}}))
    assert set(recorded_sources(tmp_path, parts)) == {"cam@night"}
    assert kept_besides(tmp_path, parts, {"other"}) == ["cam@night"]
    new = Source("/day2/cam.mp4", 30, 3)
    assert clash("cam", new, recorded_sources(tmp_path, parts), tmp_path, tmp_path / "_work") is None


def test_a_changed_files_rows_kept_stop_where_a_stage_stopped_its_run(tmp_path):
    """No chunk failed: the rows kept are those its CSV would join, none from a chunk after the
    one in which a stage ended the run, as fer-pipe run would not have read them (s68f 4, s68h 5)."""
    from fer_pipe.batch import InputReport, _partial_pieces

    parts = tmp_path / "parts"
    parts.mkdir()
    jobs = [Job("cam.mp4", "cam", start, 50) for start in (0, 50, 100)]
    for job in jobs:
        (parts / f"{job.name}.csv").write_text("x\n")
    report = InputReport("cam.mp4", str(tmp_path / "cam.csv"))
    assert [p.name for p in _partial_pieces(report, jobs, tmp_path)] == ["cam@0-49.csv", "cam@50-99.csv",
                                                                         "cam@100-149.csv"]
    (parts / f"{jobs[1].name}.stopped").write_text("")
    assert [p.name for p in _partial_pieces(report, jobs, tmp_path)] == ["cam@0-49.csv", "cam@50-99.csv"]


GROWN_AFTER_ITS_TASKS = """
import runpy, sys
from fer_pipe import batch
video, run_round = sys.argv.pop(1), batch._run_round
def grown(*args, **kwargs):  # the recorder's next block, written once the tasks have read the file
    run_round(*args, **kwargs)
    with open(video, "ab") as recording:
        recording.write(bytes(4096))
batch._run_round = grown
runpy.run_module("fer_pipe.cli", run_name="__main__", alter_sys=True)
"""


def test_a_batch_whose_video_grew_under_its_tasks_keeps_its_rows_and_reads_it_whole_again(cluster, six_clips,
                                                                                         tmp_path):
    """The whole way, which the test above takes in parts (s68f 7): the input fails, exit 2, no
    _SUCCESS, its rows in cam.partial.csv; run again once the file is whole, it is read again."""
    video, out = tmp_path / "cam.avi", tmp_path / "out"
    shutil.copy(six_clips[0], video)
    args = ["batch", str(video), "--out", str(out), "--quiet", "--address", cluster.address]
    done = subprocess.run([sys.executable, "-c", GROWN_AFTER_ITS_TASKS, str(video), *args], capture_output=True,
                          text=True, timeout=240, env={**os.environ, **LOOPBACK_RAY})
    assert done.returncode == 2, done.stderr
    assert (f"video {video}: the file changed while it was read (" in done.stderr
            and "still being recorded?" in done.stderr), done.stderr
    assert not (out / "cam.csv").exists() and not (out / "_SUCCESS").exists()
    assert [int(row["frame"]) for row in csv.DictReader((out / "cam.partial.csv").open())] == list(range(CLIP_FRAMES))
    again = fer_pipe(*args, env=LOOPBACK_RAY, timeout=240)
    assert again.returncode == 0, again.stderr
    assert len(list(csv.DictReader((out / "cam.csv").open()))) == CLIP_FRAMES and (out / "_SUCCESS").exists()
    assert not (out / "cam.partial.csv").exists()


def test_a_video_named_like_another_ones_kept_rows_is_refused(tmp_path):
    from fer_pipe.batch_sources import Source, clash

    (tmp_path / "done.partial.csv").write_text("x\n")
    done, other = Source("/v/done.mp4", 10, 1), Source("/v/done.partial.mp4", 20, 2)
    assert clash("done.partial", other, {"done": done}, tmp_path, tmp_path / "_work") == (
        f"{tmp_path}/done.partial.csv holds the rows kept of /v/done.mp4, which turned out damaged in an earlier "
        "run; give another --out, or rename one of the two")


def test_a_video_whose_tasks_would_take_the_names_of_another_ones_kept_tasks_is_refused(tmp_path):
    """lobby.mp4's first chunk, kept by a stopped run as lobby@0-99.csv, was taken as the whole of
    a later clip named lobby@0-99.mp4: its CSV held lobby's frames, exit 0 and _SUCCESS (s45a)."""
    from fer_pipe.batch_sources import Source, clash

    work = tmp_path / "_work"
    (work / "parts").mkdir(parents=True)
    (work / "parts" / "lobby@0-99.csv").write_text("x\n")
    lobby, cut = Source("/v/lobby.mp4", 10, 1), Source("/w/lobby@0-99.mp4", 20, 2)
    why = ("the finished tasks named lobby@0-99 in {}, kept by a stopped run, may be {}'s or this video's, and "
           "their names cannot tell which; give another --out, or rename one of the two")
    assert clash("lobby@0-99", cut, {"lobby": lobby}, tmp_path, work) == why.format(work / "parts", lobby.path)
    assert clash("lobby", lobby, {"lobby@0-99": cut}, tmp_path, work) == why.format(work / "parts", cut.path)
    assert clash("lobby", lobby, {"lobby": lobby}, tmp_path, work) is None
    assert clash("lobby@home", cut, {"lobby": lobby}, tmp_path, work) is None  # no task of that name kept
    (work / "parts" / "cam@night@0-19.csv").write_text("x\n")  # cam@night's chunk: no name of cam's (s45f)
    cam, night = Source("/v/cam.mp4", 10, 1), Source("/v/cam@night.mp4", 20, 2)
    assert clash("cam", cam, {"cam@night": night}, tmp_path, work) is None
    assert clash("cam@night", night, {"cam": cam}, tmp_path, work) is None


def test_a_batch_of_other_videos_keeps_a_stopped_runs_tasks_and_marks_no_success(cluster, six_clips, tmp_path):
    """A batch of other videos into the folder removed all of _work, an earlier stopped run's
    finished tasks with it, and wrote _SUCCESS over a folder still missing that run's CSV (s45a)."""
    out, stopped, other = tmp_path / "out", six_clips[0], six_clips[5]
    (out / f"{stopped.stem}.csv").mkdir(parents=True)  # its CSV cannot be written: its tasks are kept
    common = ("--out", str(out), "--address", cluster.address, "--quiet")
    first = batch(str(stopped), "--chunk-frames", "10", *common)
    _, stderr = first.communicate(timeout=240)
    assert first.returncode == 2, stderr
    kept = sorted(os.listdir(out / "_work" / "parts"))
    assert f"{stopped.stem}@0-9.csv" in kept
    (out / f"{stopped.stem}.csv").rmdir()

    second = batch(str(other), *common)
    _, stderr = second.communicate(timeout=240)
    assert (second.returncode, stderr.splitlines()) == (0, [
        f"fer-pipe: batch: {out / '_work'} keeps the finished tasks of 1 other video(s) ({stopped.stem}) that a "
        "stopped run left; no _SUCCESS until the command that started them runs again"])
    assert sorted(os.listdir(out / "_work" / "parts")) == kept and not (out / "_SUCCESS").exists()

    third = batch(str(stopped), "--chunk-frames", "10", *common)
    _, stderr = third.communicate(timeout=240)
    assert third.returncode == 0, stderr
    entry, = json.loads((out / "_manifest.json").read_text())["inputs"]
    assert (entry["chunks_run"], (out / "_SUCCESS").exists(), (out / "_work").exists()) == (0, True, False)
    assert (out / f"{stopped.stem}.csv").read_text() == in_process_csv(stopped, tmp_path / "whole.csv")
    fourth = batch(str(stopped), "--out", str(out), "--address", cluster.address)
    _, stderr = fourth.communicate(timeout=240)
    assert (fourth.returncode, stderr) == (0, f"fer-pipe batch: nothing to do: its one input already has its CSV in "
                                              f"{out}\n")  # not "all 1 inputs" (s45d)


def test_a_csv_no_batch_made_is_not_taken_for_the_videos(cluster, six_clips, tmp_path):
    """A file 'hello' at out/clip.csv was taken as the video's CSV: "nothing to do", exit 0,
    _SUCCESS, and the folder's record then said it was made from that video (s45a)."""
    out, clip = tmp_path / "out", six_clips[0]
    out.mkdir()
    (out / f"{clip.stem}.csv").write_text("hello\n")
    proc = batch(str(clip), "--out", str(out), "--address", cluster.address, "--quiet")
    _, stderr = proc.communicate(timeout=240)
    assert (proc.returncode, stderr.splitlines()) == (2, [
        f"fer-pipe: batch: {clip}: {out / clip.stem}.csv is there, and no batch into {out} made it (a fer-pipe "
        "run's CSV, or another file?); remove it, or give another --out"])
    assert (out / f"{clip.stem}.csv").read_text() == "hello\n" and not (out / "_SUCCESS").exists()
    recorded = out / "_sources.json"
    assert not recorded.exists() or clip.stem not in json.loads(recorded.read_text())


def test_one_file_given_twice_is_one_input(cluster, six_clips, tmp_path):
    """It was refused as two inputs that would both write clip.csv. One file under two names (a
    link) is two inputs, each with its CSV: taken for one, the second name's CSV was not written."""
    clip = six_clips[0]
    link = tmp_path / "linked.avi"
    link.symlink_to(clip)
    proc = batch(str(clip), f"{clip.parent}/./{clip.name}", str(link), "--out", str(tmp_path / "out"),
                 "--address", cluster.address, "--quiet")
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr
    entries = json.loads((tmp_path / "out" / "_manifest.json").read_text())["inputs"]
    assert [(e["input"], e["status"]) for e in entries] == [(str(clip), "done"), (str(link), "done")]
    assert (tmp_path / "out" / "linked.csv").is_file()


def test_chunks_of_a_config_with_a_tracker_are_refused_before_any_task(six_clips, tmp_path):
    """Each chunk's task starts the tracker afresh: the fast config's chunked CSV lost the faces
    it carries between detections after every chunk's start, and their track ids."""
    done = fer_pipe("batch", str(six_clips[0]), "--out", "out", "--config", "video_to_csv_fast",
                    "--chunk-frames", "10", cwd=tmp_path, env=LOOPBACK_RAY, timeout=120)
    assert (done.returncode, done.stderr) == (
        2, f"fer-pipe: {shipped_configs() / 'video_to_csv_fast.yaml'}: stage 'track' (track): --chunk-frames "
           "runs each chunk of a video in a task of its own, but this stage is not declared parallel: it may carry "
           "state from frame to frame, which would start afresh at every chunk; leave out --chunk-frames\n")
    assert not (tmp_path / "out").exists()


def test_a_task_reads_its_video_once_whatever_the_configs_loop_and_realtime_say():
    """A config made for a demo or a soak (loop: true) ran each task for ever; realtime: true
    skipped the frames a task fell behind on."""
    config = {"stages": {"source": {"type": "video", "params": {"path": "x.mp4", "loop": True, "realtime": True}},
                         "csv": {"type": "csv", "inputs": ["source"], "params": {"path": "x.csv"}}}}
    source = job_config(config, "run.yaml", Job("clip.mp4", "clip", 40, 20), Path("part.csv"))["stages"]["source"]
    assert source["params"] == {"path": "clip.mp4", "start": 40, "max_frames": 20, "loop": False, "realtime": False}


def test_a_task_runs_each_stage_on_the_one_thread_its_cpu_gives():
    """A task set a param to 1 wherever it was called threads, a plug-in's of another meaning
    too, and only where the config gave one. The stages now declare theirs (thread_params), and
    a task sets exactly those."""
    config = {"stages": {"source": {"type": "video", "params": {"path": "x.mp4"}},
                         "detector": {"type": "haar", "inputs": ["source"]},
                         "classifier": {"type": "classifier", "inputs": ["detector"], "params": {"threads": 4}},
                         "csv": {"type": "csv", "inputs": ["classifier"], "params": {"path": "x.csv"}}}}
    stages = job_config(config, "run.yaml", Job("clip.mp4", "clip"), Path("part.csv"))["stages"]
    assert (stages["detector"]["params"], stages["classifier"]["params"]) == ({"threads": 1}, {"threads": 1})
    assert stages["csv"]["params"] == {"path": "part.csv"} and "threads" not in stages["source"]["params"]


class AliasedParams(StageParams):
    n_threads: int = Field(2, ge=1, alias="threads")
    out_file: str = Field("", alias="out-file")


class Aliased(Stage):
    """A plug-in whose thread count and file are given by their aliases."""
    Params = AliasedParams
    reads = writes = EXPRESSIONS
    thread_params = ("n_threads",)
    output_paths = ("out_file",)


class ChoicesParams(StageParams):
    n_threads: int = Field(2, ge=1, alias="n", validation_alias=AliasChoices("threads", "num_threads"))


class Choices(Stage):
    """A plug-in whose thread count takes either of two names (and is dumped by a third)."""
    Params = ChoicesParams
    reads = writes = EXPRESSIONS
    thread_params = ("n_threads",)


def test_a_plug_ins_aliased_params_are_set_and_named_by_their_aliases(tmp_path, monkeypatch):
    """A task set the field's name to one thread, which the params refuse (only the alias is
    taken): no batch of such a stage could run, and the line blamed the config. The advice for
    its file said --set tee.out_file=/dev/null, refused in turn (s48f 2, 3)."""
    from fer_pipe.batch_checks import refuse_shared_outputs
    from fer_pipe.config import build_graph

    monkeypatch.setitem(registry().types, "aliased", Aliased)
    log = tmp_path / "log.txt"
    log.write_text("")
    config = yaml.safe_load(CONFIG.read_text())
    config["stages"]["tee"] = {"type": "aliased", "inputs": ["classifier"], "params": {"threads": 2, "out-file": str(log)}}
    made = job_config(config, "run.yaml", Job("clip.mp4", "clip"), tmp_path / "clip.csv")
    graph = build_graph(made, {}, "run.yaml")
    assert graph.stages["tee"].params.n_threads == 1
    with pytest.raises(ConfigError) as refused:
        refuse_shared_outputs(graph, "csv", "run.yaml")
    assert str(refused.value) == (f"run.yaml: stage 'tee' (aliased): params.out-file: fer-pipe batch writes one CSV per "
                                  f"video, but every task would write {log}; remove the stage or --set "
                                  "tee.out-file=/dev/null")
    config["stages"]["tee"]["params"]["out-file"] = "/tmp/" + "x" * 300  # said by the field's name too (s48j 5)
    with pytest.raises(ConfigError, match=r"stage 'tee' \(aliased\): params\.out-file: a name in the path is longer"):
        build_graph(config, {}, "run.yaml")
    monkeypatch.setitem(registry().types, "choices", Choices)  # validated by its validation_alias (s48j 4)
    config["stages"]["tee"] = {"type": "choices", "inputs": ["classifier"], "params": {"threads": 2}}
    made = job_config(config, "run.yaml", Job("clip.mp4", "clip"), tmp_path / "clip.csv")
    assert build_graph(made, {}, "run.yaml").stages["tee"].params.n_threads == 1


def test_a_stage_type_that_is_not_a_name_is_the_config_checks_one_line(six_clips, tmp_path):
    """Looking up the stages' declared thread params hashed the type first: a list was a
    TypeError traceback, exit 1, where validate says one line (s24f)."""
    config = yaml.safe_load(CONFIG.read_text())
    config["stages"]["detector"]["type"] = ["haar"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    done = fer_pipe("batch", str(six_clips[0]), "--out", str(tmp_path / "out"), "--config", str(path), timeout=120)
    assert done.returncode == 2 and done.stderr.endswith("stage 'detector': 'type' is missing or not a string\n"), \
        done.stderr


def test_without_an_address_batch_runs_a_ray_of_its_own_beside_a_cluster(cluster, six_clips, tmp_path):
    """Given no address, Ray joins the cluster that RAY_ADDRESS (or the last `ray start` on the
    machine) names, and then refused the num_cpus batch passes: a Ray traceback, exit 1."""
    clip = six_clips[0]
    done = fer_pipe("batch", str(clip), "--out", str(tmp_path / "out"), "--num-cpus", "1", "--quiet",
                    env={**LOOPBACK_RAY, "RAY_ADDRESS": cluster.address}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out" / "_manifest.json").read_text())["cluster"] == "local"
    assert (tmp_path / "out" / f"{clip.stem}.csv").read_text() == in_process_csv(clip, tmp_path / "expected.csv")


def test_an_address_where_no_cluster_answers_is_one_line_before_anything_is_made(six_clips, tmp_path):
    """ray.init retried such an address for minutes, printing Ray's log lines, and left --out/_work."""

    address = f"127.0.0.1:{free_port()}"
    done = fer_pipe("batch", str(six_clips[0]), "--out", "out", "--address", address, cwd=tmp_path,
                    env=LOOPBACK_RAY, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"fer-pipe: --address {address}: no Ray cluster answers there (")
    assert len(done.stderr.splitlines()) == 1 and not (tmp_path / "out").exists()


def test_a_cluster_that_does_not_take_the_driver_is_said_with_the_token_setting(monkeypatch):
    """Ray says only "Failed to connect to Ray cluster", also where the cluster takes only drivers
    with its token, as a head that `ray start` of Ray 2.60 started does (s28b)."""
    from fer_pipe.batch_cluster import not_connected

    refused = ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:6379")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    assert not_connected(refused) == (
        "Failed to connect to Ray cluster at 127.0.0.1:6379; if the cluster takes only drivers with its token "
        "(Ray's token authentication), set RAY_AUTH_MODE=token, with the token in ~/.ray/auth_token or RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # set: the hint would mislead
    assert not_connected(refused) == "Failed to connect to Ray cluster at 127.0.0.1:6379"


@pytest.mark.parametrize("address", ["headnode", "[]:6379", "127.0.0.1:99999", "ray://127.0.0.1:port"])
def test_an_address_that_is_no_host_and_port_is_one_line(six_clips, tmp_path, address):
    done = fer_pipe("batch", str(six_clips[0]), "--out", "out", "--address", address, cwd=tmp_path, timeout=120)
    assert (done.returncode, done.stderr) == (
        2, f"fer-pipe: --address {address}: expected HOST:PORT, ray://HOST:PORT or auto\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("chunks", [[], ["--chunk-frames", "10"]])
def test_a_truncated_video_keeps_its_rows_as_partial_until_a_rerun_succeeds(cluster, six_clips, tmp_path, chunks):
    """The rows decoded before the damage are kept beside the outputs and named; once the file
    is whole again, a rerun writes its CSV and removes the partial one (it stayed, before).
    In chunks, the chunk the cut fell in ended 2 frames short of its 10, which passed for the
    container's estimate being off: it was taken as finished, without its last frames, and a
    rerun of the mended file joined it in. The partial rows are the chunks before it and its
    own, as one run's are, and nothing else of the damaged file is kept for a rerun; a file cut
    short in a chunk's rows is not run again as one task to give the same rows (s51e 3)."""
    videos = tmp_path / "videos"
    videos.mkdir()
    whole = six_clips[0].read_bytes()
    clip = videos / "cut.avi"
    clip.write_bytes(whole[: len(whole) // 2])
    decodable = len(read_frames(clip))
    assert decodable % 10 not in (0, 9)  # the cut falls inside a chunk, not at its end
    out = tmp_path / "out"
    proc = batch(str(videos), "--out", str(out), "--address", cluster.address, "--quiet", *chunks)
    _, stderr = proc.communicate(timeout=240)
    partial = out / "cut.partial.csv"
    assert proc.returncode == 2, stderr
    assert f"decoding stopped at frame {decodable} of " in stderr
    # a later chunk said "frames 20-24 before it were processed", as if from its own start (s28b)
    assert (f"before it were processed; {decodable} rows of it are kept in {partial}\n" in stderr
            and (f"; frames 0-{decodable - 1} before it" in stderr if chunks else f"; the {decodable} frames" in stderr))
    assert "runs again as one task" not in stderr
    assert [int(line.split(",")[1]) for line in partial.read_text().splitlines()[1:]] == list(range(decodable))
    assert not (out / "cut.csv").exists() and not list((out / "_work" / "parts").iterdir())
    (entry,) = json.loads((out / "_manifest.json").read_text())["inputs"]
    assert (entry["status"], entry["rows"], entry["partial"]) == ("failed", decodable, [str(partial)])
    # chunks cancelled after the damage: counted as run only where they began, and their attempts
    # with them (attempts were fewer than chunks run, which no retry explains)
    assert entry["chunks_run"] <= entry["attempts"] and entry["chunks_run"] <= entry["chunks"], entry

    clip.write_bytes(whole)
    proc = batch(str(videos), "--out", str(out), "--address", cluster.address, "--quiet", *chunks)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr
    assert (out / "cut.csv").read_text() == in_process_csv(clip, tmp_path / "whole.csv")
    assert not partial.exists() and (out / "_SUCCESS").exists()
    (entry,) = json.loads((out / "_manifest.json").read_text())["inputs"]
    assert entry["attempts"] == entry["chunks_run"] == entry["chunks"]  # the failed run's are not this run's


def test_a_video_damaged_inside_keeps_the_rows_one_run_keeps_whatever_its_chunks(cluster, clips, tmp_path):
    """Damage FFmpeg decodes on after: one run keeps every frame that decodes, 77 of 80 here. A
    chunk stopped at the damage it found and the later chunks' rows were dropped, so chunks of
    20 kept 40 rows, and a chunk that started in the damage decoded its frames from damaged
    ones, so chunks of 39 kept 77 rows with 17 others' boxes (s51d 1). The frames FFmpeg conceals
    after the damage, up to the next keyframe (every 20th), come out as its decoding threads'
    timing has them: their boxes moved by up to 3 px between two reads (once in six suites), so
    those rows are held to the same frames and boxes within 8 px, and every other row to the one
    run's exactly."""
    clip = tmp_path / "mid.mp4"
    ffmpeg("-i", str(clips["WolfgangLanger_Pexels.mp4"]), "-frames:v", "80", "-an", "-c:v", "libx264", "-g", "20",
           str(clip))
    data = bytearray(clip.read_bytes())
    data[len(data) // 2:len(data) // 2 + 20000] = bytes(20000)
    clip.write_bytes(data)
    done = fer_pipe("run", "configs/video_to_csv.yaml", "--quiet", "--set", f"source.path={clip}", "--set",
                    f"csv.path={tmp_path / 'run.csv'}", cwd=REPO, timeout=120)
    assert done.returncode == 2 and "damaged after frame" in done.stderr, done.stderr
    damaged = int(re.search(r"damaged after frame (\d+)", done.stderr).group(1))
    one_run = (tmp_path / "run.csv").read_text().splitlines()
    assert 60 < len(one_run) - 1 < 80
    for size in ("20", "39"):
        out = tmp_path / f"out{size}"
        proc = batch(str(clip), "--out", str(out), "--address", cluster.address, "--quiet", "--chunk-frames", size)
        _, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 2, stderr
        kept = (out / "mid.partial.csv").read_text().splitlines()
        assert len(kept) == len(one_run), size
        for mine, its in zip(kept, one_run):
            fields, expected = mine.split(","), its.split(",")
            if expected[1].isdigit() and damaged < int(expected[1]) < damaged + 20:  # concealed
                assert fields[:4] == expected[:4] and all(a == b or a and b and abs(int(a) - int(b)) <= 8
                                                          for a, b in zip(fields[4:8], expected[4:8])), (size, mine, its)
            else:
                assert mine == its, size


def test_an_avi_with_drop_frames_is_read_as_one_task_not_in_chunks(cluster, clips, tmp_path):
    """An AVI re-encoded with its sound: an empty "drop" chunk in its index, which OpenCV's frame
    numbers count, so its seek to frame 20 lands on frame 19. The chunked CSV held that frame
    twice under _SUCCESS; then the chunks' times showed it and the video ran again as one task,
    every such AVI read twice (s38b). It is read as one task from the start."""
    clip = tmp_path / "reencoded.avi"
    ffmpeg("-i", str(clips["WolfgangLanger_Pexels.mp4"]), "-frames:v", "40", "-c:v", "mjpeg", "-q:v", "5", str(clip))
    out = tmp_path / "out"
    skips = faulty_config(tmp_path / "skip.yaml", on_error="skip", mode="raise", at=[5])  # counted once
    proc = batch(str(clip), "--out", str(out), "--address", cluster.address, "--quiet", "--chunk-frames", "10",
                 "--config", str(skips))
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr
    assert f"fer-pipe: batch: {clip}: an AVI with empty drop frames, read as one task" in stderr
    assert "do not line up" not in stderr
    one = in_process_csv(clip, tmp_path / "one.csv").splitlines(keepends=True)
    assert (out / "reencoded.csv").read_text() == "".join(line for line in one if line.split(",")[1] != "5")
    (entry,) = json.loads((out / "_manifest.json").read_text())["inputs"]
    assert entry["chunks_run"] == entry["chunks"] == 1
    assert entry["skipped"] == 1


def test_an_mpeg_stream_is_read_as_one_task_not_in_chunks(cluster, clips, tmp_path):
    """No frame decodes after OpenCV's seek in a transport stream: every chunk but the first
    failed the whole file as "truncated or corrupt". In program streams joined end to end,
    OpenCV counts the first part's 30 frames and a chunk's reads stop at the join: the CSV
    held 30 of 60 rows, under _SUCCESS."""
    videos = tmp_path / "videos"
    videos.mkdir()
    clip = str(clips["single_face.mp4"])
    ffmpeg("-i", clip, "-an", "-c:v", "libx264", "-f", "mpegts", str(videos / "dvr.ts"))
    parts = [tmp_path / "a.mpg", tmp_path / "b.mpg"]
    ffmpeg("-i", clip, "-t", "1", "-an", "-c:v", "mpeg2video", "-f", "mpeg", str(parts[0]))
    ffmpeg("-ss", "1", "-i", clip, "-t", "1", "-an", "-c:v", "mpeg2video", "-f", "mpeg", str(parts[1]))
    (videos / "joined.mpg").write_bytes(parts[0].read_bytes() + parts[1].read_bytes())
    out = tmp_path / "out"
    proc = batch(str(videos), "--out", str(out), "--address", cluster.address, "--quiet", "--chunk-frames", "20")
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr
    for name, rows in (("dvr.ts", 72), ("joined.mpg", 60)):
        assert f"fer-pipe: batch: {videos / name}: an MPEG stream, read as one task" in stderr
        csv = (out / name).with_suffix(".csv").read_text()
        assert csv == in_process_csv(videos / name, tmp_path / "one.csv") and csv.count("\n") == rows + 1
    assert {e["chunks"] for e in json.loads((out / "_manifest.json").read_text())["inputs"]} == {1}


def test_a_rerun_with_other_chunks_takes_no_part_of_the_first_runs_chunks(cluster, six_clips, tmp_path):
    """Finished chunks are kept for a rerun; named by their first frame alone, a rerun with
    another --chunk-frames took the first run's chunk at frame 0 (frames 0-11) for its own
    (0-7), and the joined CSV had frames 8-11 twice."""
    out, bug = tmp_path / "out", tmp_path / "bug"
    bug.touch()
    failing = faulty_config(tmp_path / "fails.yaml", mode="raise", at=[30],  # a stage's bug: parts are kept
                            armed_file=str(bug))
    proc = batch(str(six_clips[0]), "--out", str(out), "--address", cluster.address, "--quiet",
                 "--chunk-frames", "12", "--config", str(failing))
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 1, stderr
    assert len(list((out / "_work" / "parts").iterdir())) == 2  # the chunks before frame 30
    # as fer-pipe run says it: which stage, which frame (a bare "ValueError: ..." before)
    assert stderr == (f"fer-pipe: batch: {six_clips[0]}: stage 'faulty' (faulty) failed: on source frame 30: "
                      "ValueError: injected fault on frame 30\n")

    bug.unlink()  # the stage mended, its config the same
    proc = batch(str(six_clips[0]), "--out", str(out), "--address", cluster.address, "--chunk-frames", "8",
                 "--config", str(failing))
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr
    assert (out / f"{six_clips[0].stem}.csv").read_text() == in_process_csv(six_clips[0], tmp_path / "whole.csv")
    assert sorted(p.name for p in out.iterdir()) == [".fer-pipe.lock", "_SUCCESS", "_manifest.json", "_settings.json",
                                                     "_sources.json", f"{six_clips[0].stem}.csv"]
    (entry,) = json.loads((out / "_manifest.json").read_text())["inputs"]
    assert (entry["chunks"], entry["chunks_run"], entry["attempts"]) == (5, 5, 5)
    assert " (0 retried)" in stderr.splitlines()[-1]


def test_a_task_stuck_in_a_stage_call_fails_its_video_as_a_run_fails_the_stage(cluster, six_clips, tmp_path):
    """A stage stuck inside one packet held its task, and the batch, until the batch was stopped:
    one process has no runner to watch it (s54b 2). The task's own watch says it, the driver
    cancels the task, which kills its process (a thread cannot end the call), and Ray, which
    retries a dead worker's task, does not retry a cancelled one."""
    out = tmp_path / "out"
    hangs = faulty_config(tmp_path / "hangs.yaml", mode="hang", at=[5])
    proc = batch(str(six_clips[0]), str(six_clips[1]), "--out", str(out), "--address", cluster.address, "--quiet",
                 "--config", str(hangs), "--stall-timeout", "1", "--set", "faulty.once_file=" + str(tmp_path / "once"))
    _, stderr = proc.communicate(timeout=240)
    manifest = {e["input"]: e for e in json.loads((out / "_manifest.json").read_text())["inputs"]}
    (stuck,) = [clip for clip in six_clips[:2] if manifest[str(clip)]["status"] == "failed"]
    (other,) = {*six_clips[:2]} - {stuck}
    assert (proc.returncode, stderr) == (1, f"fer-pipe: batch: {stuck}: stage 'faulty' (faulty) failed: no progress "
                                            "for 1 s (stalled)\n")
    assert manifest[str(stuck)]["attempts"] == 1
    assert (out / f"{other.stem}.csv").read_text() == in_process_csv(other, tmp_path / "whole.csv")


def test_frames_skipped_in_tasks_are_counted_and_said(cluster, six_clips, tmp_path):
    """A batch task's own lines go to Ray's worker logs: the frames a stage with on_error: skip
    dropped were gaps in the CSV that nothing mentioned. Frame 20 starts the second chunk: the
    gap it leaves there was taken for chunks that do not line up, and the video ran again."""
    config = faulty_config(tmp_path / "skip.yaml", on_error="skip", mode="raise", at=[7, 20])
    out = tmp_path / "out"
    proc = batch(str(six_clips[0]), "--out", str(out), "--address", cluster.address, "--config", str(config),
                 "--chunk-frames", "20")
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr
    assert (f"fer-pipe: batch: {six_clips[0]}: 2 packet(s) skipped by stages with on_error: skip (the first ten "
            "of each task and stage: Ray's worker logs)") in stderr.splitlines()
    (entry,) = json.loads((out / "_manifest.json").read_text())["inputs"]
    assert (entry["status"], entry["skipped"], entry["rows"], entry["chunks_run"]) == ("done", 2, CLIP_FRAMES - 2, 2)
    assert "do not line up" not in stderr
    frames = [int(line.split(",")[1]) for line in (out / f"{six_clips[0].stem}.csv").read_text().splitlines()[1:]]
    assert frames == [i for i in range(CLIP_FRAMES) if i not in (7, 20)]


def test_a_chunk_failing_after_a_stage_ended_the_run_fails_nothing(cluster, six_clips, tmp_path):
    """A stage's StopRun ends a run, so `fer-pipe run` never reads what comes after: a damaged
    tail in a later chunk failed the input all the same (exit 2, no CSV)."""
    videos = tmp_path / "videos"
    videos.mkdir()
    whole = six_clips[0].read_bytes()
    clip = videos / "cut.avi"
    clip.write_bytes(whole[: len(whole) * 3 // 4])  # decodes to within the third chunk of 12
    config = faulty_config(tmp_path / "stop.yaml", mode="stop_run", at=[5])
    out = tmp_path / "out"
    proc = batch(str(videos), "--out", str(out), "--address", cluster.address, "--config", str(config),
                 "--chunk-frames", "12", "--quiet")
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr
    frames = [int(line.split(",")[1]) for line in (out / "cut.csv").read_text().splitlines()[1:]]
    assert frames == list(range(5))  # as `fer-pipe run` writes it
    assert sorted(p.name for p in out.iterdir()) == [".fer-pipe.lock", "_SUCCESS", "_manifest.json", "_settings.json",
                                                     "_sources.json", "cut.csv"]


def test_a_rerun_that_reuses_the_chunk_a_stage_ended_the_run_in_ends_the_csv_there(cluster, six_clips,
                                                                                   tmp_path):
    """The chunks after the one a stage ended the run in ran on, and the joined CSV had their
    rows after a gap; a rerun that reused the stopped chunk joined them on again. The first
    run here fails (a stage's bug, whose chunks are kept) in the chunk before the stop."""
    bug = tmp_path / "bug"
    bug.touch()
    config = yaml.safe_load(CONFIG.read_text())
    config["stages"]["bug"] = {"type": "faulty", "inputs": ["classifier"],
                               "params": {"mode": "raise", "at": [2], "armed_file": str(bug)}}
    config["stages"]["stop"] = {"type": "faulty", "inputs": ["bug"], "params": {"mode": "stop_run", "at": [15]}}
    config["stages"]["csv"]["inputs"] = ["stop"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    args = (str(six_clips[0]), "--out", str(out), "--address", cluster.address, "--chunk-frames", "12", "--quiet",
            "--config", str(path))
    proc = batch(*args)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 1, stderr
    bug.unlink()  # the stage mended, its config the same
    proc = batch(*args)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr
    frames = [int(line.split(",")[1]) for line in (out / f"{six_clips[0].stem}.csv").read_text().splitlines()[1:]]
    assert frames == list(range(15))
    (entry,) = json.loads((out / "_manifest.json").read_text())["inputs"]
    assert (entry["status"], entry["rows"], entry["chunks_run"]) == ("done", 15, 1)


def test_a_rerun_removes_its_inputs_partial_rows_and_no_other_inputs(six_clips, tmp_path):
    """Only names known to be the input's: door@2024-05.partial.csv could be a chunk of door's,
    or the input door@2024-05's own rows, and a rerun of door alone took it."""
    from fer_pipe.batch import MANIFEST, _listed_before, _remove_partials, _strings

    for name in ("door.partial.csv", "door@24-35.partial.csv", "door@2024-05.partial.csv"):
        (tmp_path / name).write_text("x\n")
    (tmp_path / MANIFEST).write_text(json.dumps({"inputs": [
        {"input": "v/door.mp4", "partial": [str(tmp_path / "door@24-35.partial.csv")]},
        {"input": "v/door@2024-05.mp4", "partial": [str(tmp_path / "door@2024-05.partial.csv")]}]}))
    earlier = _listed_before(tmp_path)
    _remove_partials(tmp_path, ["door.partial.csv", *(Path(p).name for p in _strings(earlier["v/door.mp4"], "partial"))])
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST, "door@2024-05.partial.csv"]


def test_the_partial_rows_of_chunks_that_do_not_line_up_come_from_one_task(tmp_path):
    """A chunked video that failed part-way: its chunks' rows were joined into NAME.partial.csv
    unchecked, so where a seek landed a frame early (a variable-rate AVI) the file held frames
    twice, renumbered (161 rows of a 143-frame file). Such an input now runs again as one task,
    whose partial rows are those one run keeps."""
    from fer_pipe.batch import InputReport, _part_path, _rejoin_unaligned
    from fer_pipe.batch_task import Job, partial_path
    from fer_pipe.events import FRAME_COLUMNS

    def rows(path: Path, frames: range, first_time: float) -> None:
        path.write_text(",".join(FRAME_COLUMNS) + "\n" + "".join(
            ",".join(["v", str(f), f"{first_time + (f - frames[0]) / 24:.3f}"] + [""] * (len(FRAME_COLUMNS) - 3)) + "\n"
            for f in frames))

    work = tmp_path / "_work"
    (work / "parts").mkdir(parents=True)
    jobs = {"v.avi": [Job("v.avi", "v", 0, 25), Job("v.avi", "v", 25, 25), Job("v.avi", "v", 50, 25)]}
    rows(_part_path(work, jobs["v.avi"][0]), range(0, 25), 0.0)
    rows(partial_path(_part_path(work, jobs["v.avi"][1])), range(25, 40), 1.0)  # frame 25 shown at frame 24's time
    report = InputReport("v.avi", str(tmp_path / "v.csv"), status="failed", error="decoding stopped",
                         bad_input=True, failed_at=25)
    rerun = _rejoin_unaligned(["v.avi"], {"v.avi": report}, jobs, work)
    assert rerun == [Job("v.avi", "v")] == jobs["v.avi"]
    assert (report.status, report.failed_at) == ("pending", None)
    assert not list((work / "parts").iterdir())  # the chunks' parts and partial rows are gone

    jobs["v.avi"] = [Job("v.avi", "v", 0, 25), Job("v.avi", "v", 25, 25)]  # cut short in rows that line up: kept
    rows(_part_path(work, jobs["v.avi"][0]), range(0, 25), 0.0)
    rows(partial_path(_part_path(work, jobs["v.avi"][1])), range(25, 40), 25 / 24)
    report = InputReport("v.avi", str(tmp_path / "v.csv"), status="failed", error="x", bad_input=True, failed_at=25,
                         truncated=True)
    assert _rejoin_unaligned(["v.avi"], {"v.avi": report}, jobs, work) == []
    assert report.status == "failed"
    report = InputReport("v.avi", str(tmp_path / "v.csv"), status="failed", error="x", bad_input=True, failed_at=25)
    assert _rejoin_unaligned(["v.avi"], {"v.avi": report}, jobs, work) == [Job("v.avi", "v")]  # damage: one task
    jobs["v.avi"] = [Job("v.avi", "v", 0, 25), Job("v.avi", "v", 25, 25)]  # one with no rows is left as it is
    report = InputReport("v.avi", str(tmp_path / "v.csv"), status="failed", error="x", bad_input=True, failed_at=0)
    assert _rejoin_unaligned(["v.avi"], {"v.avi": report}, jobs, work) == []
    assert report.status == "failed"


def test_a_tasks_failures_after_the_one_it_raised_are_kept_in_the_manifest(cluster, clips, tmp_path):
    """A stage failing on a frame, and another failing in its close after it: run_graph raised the
    first and dropped the second, which fer-pipe run says as "also, ..." (s52f 2); said, the
    line went to Ray's worker log alone (s52f 1). It is said under its input's failure, named:
    said after every input's, it read as the last one's (s53d 1). A rerun that runs the input
    again, the bug mended, keeps none of it: a done input's manifest said a stage had failed,
    on every rerun after (s53d 2)."""
    bug = tmp_path / "bug"
    bug.touch()
    config = faulty_config(tmp_path / "two.yaml", mode="raise", at=[2], armed_file=str(bug))
    graph = yaml.safe_load(config.read_text())
    graph["stages"]["closing"] = {"type": "faulty", "inputs": ["faulty"],
                                  "params": {"mode": "close", "armed_file": str(bug)}}
    graph["stages"]["csv"]["inputs"] = ["closing"]
    config.write_text(yaml.safe_dump(graph))
    clips_in = {name: tmp_path / name for name in ("a.mp4", "b.mp4")}
    for clip in clips_in.values():
        ffmpeg("-i", str(clips["single_face.mp4"]), "-frames:v", "6", "-an", str(clip))
    out = tmp_path / "out"
    proc = batch(*map(str, clips_in.values()), "--out", str(out), "--address", cluster.address, "--config",
                 str(config), "--quiet")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr
    entries = json.loads((out / "_manifest.json").read_text())["inputs"]
    for entry in entries:
        assert entry["error"] == ("stage 'faulty' (faulty) failed: on source frame 2: ValueError: injected fault "
                                  "on frame 2")
        assert entry["warnings"] == ["fer-pipe: also, stage 'closing' (faulty) failed: while closing: "
                                     "RuntimeError: upload of the summary failed"]
    assert stderr.splitlines() == [
        line for clip in clips_in.values()
        for line in (f"fer-pipe: batch: {clip}: stage 'faulty' (faulty) failed: on source frame 2: ValueError: "
                     "injected fault on frame 2",
                     f"fer-pipe: batch: {clip}: also, stage 'closing' (faulty) failed: while closing: RuntimeError: "
                     "upload of the summary failed")]
    bug.unlink()
    proc = batch(*map(str, clips_in.values()), "--out", str(out), "--address", cluster.address, "--config",
                 str(config), "--quiet")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert [(e["status"], e.get("warnings")) for e in json.loads((out / "_manifest.json").read_text())["inputs"]] == [
        ("done", None), ("done", None)]


def test_a_tasks_warnings_are_said_once_per_input_and_kept_in_the_manifest(cluster, clips, tmp_path):
    """A raw stream is dated at FFmpeg's guess of 25 fps, and ``fer-pipe run`` says so; a batch
    task's line went to Ray's worker logs alone, and the batch ended 0 without a word, its CSV's
    times 2.5 times too short for a 10 fps camera (s49b 2). Each chunk says it: once is enough."""
    raw = tmp_path / "camera.h264"
    ffmpeg("-i", str(clips["single_face.mp4"]), "-frames:v", "40", "-an", "-c:v", "libx264", "-f", "h264", str(raw))
    out = tmp_path / "out"
    proc = batch(str(raw), "--out", str(out), "--address", cluster.address, "--chunk-frames", "20", "--quiet")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    said = [line for line in stderr.splitlines() if "WARNING" in line]
    assert said == [f"fer-pipe: WARNING: video {raw}: the file carries no timestamps (a raw stream?); its frames are "
                    "dated by their number at 25 fps, the rate OpenCV reports (25 is FFmpeg's guess): give the "
                    "camera's with source.fps"]
    (entry,) = json.loads((out / "_manifest.json").read_text())["inputs"]
    assert entry["warnings"] == said
    other = tmp_path / "other.mp4"
    ffmpeg("-i", str(clips["single_face.mp4"]), "-frames:v", "5", "-an", str(other))
    again = batch(str(raw), str(other), "--out", str(out), "--address", cluster.address, "--quiet")
    _, stderr = again.communicate(timeout=300)  # the raw stream found done: its warning is not said again,
    assert again.returncode == 0 and "WARNING" not in stderr, stderr  # and the manifest keeps it (s49h 2)
    entry, added = json.loads((out / "_manifest.json").read_text())["inputs"]
    assert (entry["status"], entry["warnings"], "warnings" in added) == ("skipped", said, False)
