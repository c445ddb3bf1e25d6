"""The CLI forks its stage processes from a forkserver of its own (``fer_pipe.launch``): started
under the run's blocked stop signals, in a folder where nothing shadows the standard library,
and given up for spawn where its socket cannot be made."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fault_plugin import (assert_valid_prefix, descendants, fault_config, group_killed_at_exit, start_run, stat,
                          wait_gone)
from livetools import csv_rows, wait_for

from fer_pipe.oom import oom_raise

CLI = str(Path(sys.executable).parent / "fer-pipe")  # the console script: its sys.path has no working folder


def _blocked(pid: int) -> set[int]:
    mask = next(int(line.split()[1], 16) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("SigBlk:"))
    return {signum for signum in range(1, 65) if mask >> (signum - 1) & 1}


def _server(runner: int) -> int:
    """The runner's forkserver, its one child of that command line (the stages have it too)."""
    servers = [pid for pid in descendants(runner)
               if b"multiprocessing.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
               and stat(pid)[1:2] == [str(runner)]]
    assert len(servers) == 1
    return servers[0]


def _slowed_run(tmp_path: Path, clip: Path, env: dict[str, str], delay_s: float) -> tuple[subprocess.Popen, Path]:
    """``fer-pipe run`` of video -> a plug-in stage slowed by ``delay_s`` per frame -> CSV, and its CSV."""
    out = tmp_path / "out.csv"
    config = fault_config(tmp_path / "run.yaml", clip, out, delay_s=delay_s, seen_file=str(tmp_path / "seen.txt"))
    return start_run(config, env), out


def _frames_seen(tmp_path: Path) -> int:
    """Frames the slowed stage of ``_slowed_run`` has taken so far."""
    seen = tmp_path / "seen.txt"
    return seen.read_text().count("\n") if seen.exists() else 0


def test_the_stages_come_from_a_forkserver_that_keeps_the_stop_signals_blocked(plugin_env, short_clip, tmp_path):
    """A signal to the process group while a stage starts stays pending until its handlers are
    in: the stage gets the mask from the server. A server started with the signals unblocked
    would hand every stage an unblocked mask, and a Ctrl-C during its start would kill it
    half-started."""
    proc, out = _slowed_run(tmp_path, short_clip, plugin_env, delay_s=0.05)
    with group_killed_at_exit(proc):
        wait_for(lambda: _frames_seen(tmp_path) >= 3, 60, "the first frames", proc)
        server = _server(proc.pid)
        assert {signal.SIGINT, signal.SIGTERM, signal.SIGHUP} <= _blocked(server)
        assert len(descendants(server)) == 3  # video, faulty and csv
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert assert_valid_prefix(out) == list(range(60))


def test_the_stages_not_the_runner_are_what_the_oom_killer_takes_first(plugin_env, short_clip, tmp_path):
    """Out of memory, the kernel killed the runner, the largest process (it holds the model for
    its preflight): exit 137 and not a line, the CSV cut short (s48g 1). A stage it kills is named."""
    proc, _ = _slowed_run(tmp_path, short_clip, plugin_env, delay_s=0.05)
    with group_killed_at_exit(proc):
        wait_for(lambda: _frames_seen(tmp_path) >= 3, 60, "the first frames", proc)
        runner = int(Path(f"/proc/{proc.pid}/oom_score_adj").read_text())
        stages = descendants(_server(proc.pid))
        assert len(stages) == 3
        raised = min(1000, runner + oom_raise())
        assert raised > runner
        wait_for(lambda: {int(Path(f"/proc/{pid}/oom_score_adj").read_text()) for pid in stages} == {raised}, 30,
                 "each stage to raise its score", proc)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err


@pytest.mark.parametrize("cgroup, limits", [
    ("9:memory:/slice/scope", {"memory/slice/memory.limit_in_bytes": "178257920"}),  # on the group above (v1)
    ("9:memory:/docker/abc", {"memory/memory.limit_in_bytes": "178257920"}),  # a container's, at the root (v1)
    ("0::/slice/scope", {"slice/memory.max": "178257920", "slice/scope/memory.max": "max"}),  # v2
])
def test_the_memory_a_stage_raises_its_score_against_is_the_least_limit_over_it(tmp_path, cgroup, limits):
    """Only the process's own group was read: a limit on a slice above it, or a container's on a
    cgroup v1 host, was missed, and the raise was the machine's, too small (s48l 1)."""
    from fer_pipe.oom import memory_bytes

    (tmp_path / "cgroup").write_text(f"{cgroup}\n1:cpu:/other\n")
    for path, value in limits.items():
        (tmp_path / "fs" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "fs" / path).write_text(value + "\n")
    assert memory_bytes(tmp_path / "cgroup", tmp_path / "fs") == 178257920


@pytest.mark.parametrize("cgroup, files, kills", [
    ("0::/slice/scope", {"slice/memory.events": "low 0\noom 3\noom_kill 3\n", "slice/scope/memory.events": "oom_kill 1\n"},
     3),  # v2: each group counts its subtree, the slice's limit the scope's kills too
    ("9:memory:/docker/abc", {"memory/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"}, 2),
])
def test_the_out_of_memory_kills_a_run_counts_are_its_cgroups(tmp_path, cgroup, files, kills):
    """/proc/vmstat's count is the machine's: another container's kill during a long run was
    said to have likely ended a stage that an operator's kill -9 had ended (s50l 5)."""
    from fer_pipe.oom import oom_kills

    (tmp_path / "cgroup").write_text(f"{cgroup}\n1:cpu:/other\n")
    for path, value in files.items():
        (tmp_path / "fs" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "fs" / path).write_text(value)
    assert oom_kills(tmp_path / "cgroup", tmp_path / "fs") == kills


def test_a_forkserver_killed_mid_run_is_named_and_the_stages_still_close_their_files(plugin_env, short_clip,
                                                                                  tmp_path):
    """multiprocessing reads a forked stage's exit code from the server: with the server gone, it
    says 255 for every stage still running, and the run said the source had died. No stage is
    named now: none of them failed."""
    proc, out = _slowed_run(tmp_path, short_clip, plugin_env, delay_s=0.1)
    with group_killed_at_exit(proc):
        wait_for(lambda: _frames_seen(tmp_path) >= 3, 60, "the first frames", proc)
        wait_for(lambda: csv_rows(out), 60, "a row in the CSV", proc)  # its sink may open late (s39a)
        server = _server(proc.pid)
        stages = descendants(server)
        os.kill(server, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert err.splitlines()[-1] == ("fer-pipe: the forkserver that started the stage processes died, so the run "
                                    "could not watch them; they stop, closing their files, as the run ends")
    assert not wait_gone(stages)
    assert assert_valid_prefix(out)  # whole rows, in order: the csv stage closed its file


def test_a_stage_killed_together_with_the_forkserver_is_named(plugin_env, short_clip, tmp_path):
    """A kill of both at once (a cgroup's) read as the server's death alone, the stage that died
    with it unnamed (or, were it the only stage left, "exit code 255": what multiprocessing says
    once the server, which alone knew, is gone). The runner is paused meanwhile, so that it
    sees both gone at its next look."""
    proc, out = _slowed_run(tmp_path, short_clip, plugin_env, delay_s=0.1)
    with group_killed_at_exit(proc):
        wait_for(lambda: _frames_seen(tmp_path) >= 3, 60, "the first frames", proc)
        server = _server(proc.pid)
        stages = descendants(server)
        seen = str(tmp_path / "seen.txt")  # the faulty stage's: the process that has it open
        faulty = next(pid for pid in stages for fd in Path(f"/proc/{pid}/fd").iterdir()
                      if os.path.realpath(fd) == seen)
        os.kill(proc.pid, signal.SIGSTOP)
        os.kill(server, signal.SIGKILL)
        os.kill(faulty, signal.SIGKILL)
        assert not wait_gone({server, faulty})
        os.kill(proc.pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert err.splitlines()[-1] == (
        "fer-pipe: stage 'faulty' (faulty) failed: its process died, and so did the forkserver that started it, "
        "which alone knew how it ended; the other stages stop, closing their files, as the run ends")
    assert not wait_gone(stages - {faulty})


def test_a_csv_py_in_the_working_folder_is_not_imported_into_the_stages(plugin_env, short_clip, tmp_path):
    """The forkserver is a `python -c`, whose sys.path starts with the folder it starts in."""
    (tmp_path / "csv.py").write_text('raise RuntimeError("the csv.py of the working folder was imported")\n')
    out = tmp_path / "out.csv"
    config = fault_config(tmp_path / "run.yaml", short_clip, out)
    done = subprocess.run([CLI, "run", str(config), "--quiet"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **plugin_env})
    assert done.returncode == 0, done.stderr
    assert assert_valid_prefix(out) == list(range(60))


def test_a_tmpdir_too_long_for_the_forkservers_socket_still_runs(plugin_env, short_clip, tmp_path):
    """The forkserver listens on a Unix socket under TMPDIR, whose path may be at most 107 bytes;
    the stages are spawned instead (the run ended with "AF_UNIX path too long")."""
    tmp = tmp_path / ("t" * max(1, 100 - len(str(tmp_path))))
    tmp.mkdir()
    out = tmp_path / "out.csv"
    config = fault_config(tmp_path / "run.yaml", short_clip, out)
    done = subprocess.run([CLI, "run", str(config), "--quiet"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **plugin_env, "TMPDIR": str(tmp)})
    assert done.returncode == 0, done.stderr
    assert assert_valid_prefix(out) == list(range(60))


def test_a_stage_with_more_queues_than_a_forkserver_can_hand_over_is_spawned(short_clip):
    """A forkserver passes at most 256 file descriptors to a new process, two per queue: the
    source here has 128 queues, one to each worker of its two consumers ("too many fds")."""
    from fer_pipe import launch
    from fer_pipe.config import load_graph

    def branch(n: int) -> dict:
        return {f"detector{n}": {"type": "haar", "inputs": ["source"], "workers": 64},
                f"classifier{n}": {"type": "classifier", "inputs": [f"detector{n}"]},
                f"csv{n}": {"type": "csv", "inputs": [f"classifier{n}"], "params": {"path": f"faces{n}.csv"}}}

    graph = load_graph({"stages": {"source": {"type": "video", "params": {"path": str(short_clip)}},
                                   **branch(1), **branch(2)}})
    assert launch.context(graph, fork=True).get_start_method() == "spawn"
