"""SIGINT and SIGTERM during a file run: drain, close, exit 130/143; a second Ctrl-C exits at once.

The run is video -> a slowed plug-in stage -> CSV, so it is still going when the signal comes.
SIGINT goes to the whole process group, as a terminal's Ctrl-C does; SIGTERM to the parent
alone, as ``kill PID`` or a service manager does.
"""
from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import REPO, ffmpeg
from fault_plugin import (assert_valid_prefix, broken_source_config, descendants, fault_config, group_killed_at_exit,
                          run_lock, start_run, stats_row, wait_gone)
from fer_pipe.frames import SHM
from fer_pipe.ring_lease import SEMAPHORES
from fer_pipe.runner import HELD_S, TOGETHER_S
from livetools import csv_rows, sighup_default, wait_for


def _start(tmp_path: Path, clip: Path, env: dict[str, str], delay_s: float, after: int):
    out, seen = tmp_path / "out.csv", tmp_path / "seen.txt"
    config = fault_config(tmp_path / "run.yaml", clip, out, delay_s=delay_s, seen_file=str(seen))
    proc = start_run(config, env, quiet=False)
    wait_for(lambda: seen.exists() and len(seen.read_text().split()) >= after)
    return proc, out, descendants(proc.pid)


@pytest.mark.parametrize("signum, to_group, code", [(signal.SIGINT, True, 130),
                                                    (signal.SIGTERM, False, 143)])
def test_signal_drains_and_closes(signum, to_group, code, plugin_env, short_clip, tmp_path):
    proc, out, kids = _start(tmp_path, short_clip, plugin_env, delay_s=0.1, after=5)
    (os.killpg if to_group else os.kill)(proc.pid, signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "fer-pipe: interrupted: drained and closed" in err
    assert "Traceback" not in err
    frames = assert_valid_prefix(out)  # header, complete last line, in order, no duplicates
    read = stats_row(err, "source")["items"]
    assert frames == list(range(read))  # drained: every frame the source read reached the CSV
    assert 5 <= read < 60  # it stopped early
    assert not wait_gone(kids)


def test_a_sigterm_ends_a_slow_realtime_replay_between_its_frames(short_clip, tmp_path):
    """A realtime replay slept a whole frame time at once: a time-lapse at 0.01 fps held a
    SIGTERM for up to 100 s, past systemd's 90 s stop timeout (s64e 4)."""
    clip, out = tmp_path / "lapse.mp4", tmp_path / "out.csv"
    ffmpeg("-i", str(short_clip), "-an", "-frames:v", "3", "-vf", "setpts=N/0.01/TB", "-r", "0.01", str(clip))
    proc = start_run(REPO / "configs" / "video_to_csv.yaml", {}, "--set", f"source.path={clip}", "--set",
                     "source.realtime=true", "--set", f"csv.path={out}")
    with group_killed_at_exit(proc):
        wait_for(lambda: len(csv_rows(out)) == 1, 60, "the first frame's row", proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    # the frame read and waiting for its time is handed on, as every frame read is; the third never read
    assert proc.returncode == 143 and [row["frame"] for row in csv_rows(out)] == ["0", "1"], err


def test_a_stage_that_exits_without_a_word_during_the_drain_fails_the_run_rather_than_hang_it(plugin_env, short_clip,
                                                                                              tmp_path):
    """A stage that ends with exit code 0 and no report (a plug-in's or a native library's
    exit(0)) while the others drain after a SIGTERM to the runner alone sent no end of stream:
    the run took it for stopped by the signal and waited for ever, the stall watch quiet (s30a).
    Only a signal that reached the stages too (another stage reports it) excuses it."""
    out, seen = tmp_path / "out.csv", tmp_path / "seen.txt"
    config = fault_config(tmp_path / "run.yaml", short_clip, out, mode="exit_on_stop", delay_s=0.1,
                          seen_file=str(seen))
    with group_killed_at_exit(start_run(config, plugin_env)) as proc:
        wait_for(lambda: seen.exists() and len(seen.read_text().split()) >= 5)
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (1, "fer-pipe: stage 'faulty' (faulty) failed: its process died (exit code 0)\n")
    assert_valid_prefix(out)


def test_sigterm_to_the_whole_group_closes_every_stage(plugin_env, short_clip, tmp_path):
    """As systemd stops a service: every process gets SIGTERM at once, so nothing drains, but
    each stage unwinds through close and the CSV holds each frame its sink consumed, whole."""
    proc, out, kids = _start(tmp_path, short_clip, plugin_env, delay_s=0.1, after=5)
    # the sink opens in its own time: on a loaded machine after the 5 frames, and the run then
    # rightly said it "had not opened its output yet" (s39a)
    wait_for(lambda: csv_rows(out), 60, "a row in the CSV", proc)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    # it said "drained and closed", though frames the source had read never reached the CSV
    assert ("fer-pipe: interrupted: stopped at once, as the stages got the signal too (sent to the process group: "
            "timeout, a service manager); each sink's file holds the frames it had taken") in err
    assert assert_valid_prefix(out) == list(range(stats_row(err, "csv")["items"]))
    assert not wait_gone(kids)


def test_a_stage_killed_in_its_close_after_a_group_sigterm_is_said(plugin_env, short_clip, tmp_path):
    """A stage still in its close when the grace period ran out was killed, unsaid (it had sent
    its statistics before its close), and the run said each sink's file held the frames it had
    taken (s28c)."""
    out, seen = tmp_path / "out.csv", tmp_path / "seen.txt"
    config = fault_config(tmp_path / "run.yaml", short_clip, out, delay_s=0.1, seen_file=str(seen), mode="hang_close")
    with group_killed_at_exit(start_run(config, plugin_env)) as proc:
        wait_for(lambda: seen.exists() and len(seen.read_text().split()) >= 5)
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (143, "fer-pipe: interrupted: stopped at once, as the stages got the signal too "
                                           "(sent to the process group: timeout, a service manager)\n"
                                           "fer-pipe: also, stage 'faulty' (faulty) was killed 3 s into its close, "
                                           "which had not returned: what it was writing may be incomplete (a stage "
                                           "whose close needs longer says so with closing_s)\n")


def test_a_close_cut_short_by_a_second_ctrl_c_does_not_send_to_closing_s(plugin_env, short_clip, tmp_path):
    """A second stop signal gives every close 3 s, whatever its stage's ``closing_s``: the line
    still told the user to declare ``closing_s``, which would have changed nothing (s31b)."""
    out, seen = tmp_path / "out.csv", tmp_path / "seen.txt"
    config = fault_config(tmp_path / "run.yaml", short_clip, out, delay_s=0.05, seen_file=str(seen), mode="hang_close")
    with group_killed_at_exit(start_run(config, plugin_env)) as proc:
        wait_for(lambda: seen.exists() and len(seen.read_text().split()) >= 3)
        kids = descendants(proc.pid)
        os.kill(proc.pid, signal.SIGINT)
        wait_for(lambda: not _holding(kids, seen), 30, "the stage to start its close", proc)  # it closes the file first
        time.sleep(TOGETHER_S)  # one sent again at once is the same stop
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (130, "fer-pipe: interrupted twice: stopped at once, without draining\n"
                                           "fer-pipe: also, stage 'faulty' (faulty) was killed in its close, which "
                                           "had not returned 3 s after the second stop signal: what it was writing "
                                           "may be incomplete\n")


def test_a_stop_signal_after_the_verdict_leaves_the_exit_code_the_runs(plugin_env, short_clip, tmp_path):
    """The run had printed its failure and statistics, and the interpreter took 0.2-0.3 s more
    to end with the default action back: a SIGTERM then made a failed run's exit 1 read as 143
    (s28c). Sent as soon as the statistics' last line is out."""
    out = tmp_path / "out.csv"
    config = fault_config(tmp_path / "run.yaml", short_clip, out, mode="raise", at=[5])
    with group_killed_at_exit(start_run(config, plugin_env, quiet=False)) as proc:
        said = ""
        while not said.startswith("wall "):
            said = proc.stderr.readline()
            assert said, "the run ended without its statistics"
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (1, "")


def test_a_sigint_the_caller_ignores_stays_ignored(plugin_env, short_clip, tmp_path):
    """A shell starts `fer-pipe run ... &` with SIGINT ignored, so that a Ctrl-C meant for the
    script in the foreground leaves the job alone: it was ignored while the run started, and
    stopped the run once it was going (s28c)."""
    out, seen = tmp_path / "out.csv", tmp_path / "seen.txt"
    config = fault_config(tmp_path / "run.yaml", short_clip, out, delay_s=0.05, seen_file=str(seen))

    def ignoring_sigint() -> None:
        sighup_default()
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen([sys.executable, "-m", "fer_pipe.cli", "run", str(config), "--quiet"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **plugin_env},
                            start_new_session=True, preexec_fn=ignoring_sigint)
    with group_killed_at_exit(proc):
        wait_for(lambda: seen.exists() and len(seen.read_text().split()) >= 10)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (0, "")
    assert assert_valid_prefix(out) == list(range(60))


def test_a_group_signal_before_a_sink_opened_says_so_not_that_its_file_holds_its_frames():
    """A sink stopped before its open made no file (or left an earlier run's as it was), while
    the line said that each sink's file held the frames it had taken (s28c)."""
    from fer_pipe.config import load_graph
    from fer_pipe.runner import Runner, _Reports

    runner = Runner(load_graph("video_to_csv"))
    runner._stage_of = {"source": "source", "detector[0]": "detector", "detector[1]": "detector",
                        "classifier": "classifier", "csv": "csv"}
    runner._signals.append((signal.SIGTERM, 0.0))
    reports = _Reports(stopped="source", opened={"source", "detector[0]", "detector[1]", "classifier"})
    assert runner._verdict(reports, [], None).message == (
        "interrupted: stopped at once, as the stages got the signal too (sent to the process group: timeout, a "
        "service manager); stage 'csv' (csv) had not opened its output yet")
    reports.opened.add("csv")
    assert runner._verdict(reports, [], None).message.endswith("; each sink's file holds the frames it had taken")


def test_a_sighup_handled_inside_the_sigterms_handler_is_not_a_second_stop(monkeypatch):
    """Python may run a signal's handler in the middle of another's: systemd's SIGTERM and its
    SendSIGHUP right after made "interrupted twice" in 2 of 25 stops (s29), the SIGHUP's handler
    having run while the SIGTERM's was setting the stop. Here it runs at the SIGTERM handler's
    first look at the clock."""
    from fer_pipe import runner as runner_module
    from fer_pipe.config import load_graph
    from fer_pipe.runner import Runner

    runner = Runner(load_graph("video_to_csv"))
    runner._hung_up = True  # the hangup's move of the terminal's streams to /dev/null is not this test's
    nested: list[int] = []

    def clock() -> float:
        if not nested:
            nested.append(signal.SIGHUP)
            runner._on_signal(signal.SIGHUP, None)
        return time.monotonic()

    monkeypatch.setattr(runner_module, "time", SimpleNamespace(monotonic=clock))
    runner._on_signal(signal.SIGTERM, None)
    assert nested and (runner._signal, runner._signals_seen) == (signal.SIGTERM, 1)


def test_a_hangup_during_a_drain_is_not_a_second_ctrl_c(plugin_env, short_clip, tmp_path):
    """Ctrl-C, then the terminal closes while the graph drains (or systemd's SendSIGHUP right
    after its SIGTERM): before, the SIGHUP counted as a second interrupt and cut the drain short."""
    proc, out, kids = _start(tmp_path, short_clip, plugin_env, delay_s=0.3, after=3)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.5)  # two signals sent back to back can merge into one pending signal
    os.killpg(proc.pid, signal.SIGHUP)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert assert_valid_prefix(out) == list(range(stats_row(err, "source")["items"]))  # drained
    assert not wait_gone(kids)
    # multiprocessing's resource tracker, in the same process group, ignores SIGINT and SIGTERM
    # but died of the SIGHUP: its traceback, "died unexpectedly", and a stage that used it failed
    assert "Traceback" not in err and "resource_tracker" not in err, err


def test_a_stop_signal_while_the_interpreter_frees_its_modules_leaves_the_exit_code(tmp_path):
    """The stop signals got a no-op Python handler after the verdict, but CPython puts the
    default action back for Python handlers before it frees the modules: a SIGTERM then made a
    failed run's exit 1 read as 143 (seen in CI, s29). Here an object freed with its module
    sends it, at that very moment."""
    script = tmp_path / "late.py"
    script.write_text(textwrap.dedent("""\
        import os
        import signal
        import sys

        from fer_pipe import cli


        class Late:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGTERM)


        late = Late()
        cli._after_the_run()
        sys.exit(1)
        """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (1, "")


@pytest.mark.parametrize("stop, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_hangup_pending_with_the_stop_signal_is_not_a_second_one(stop, code, plugin_env, short_clip, tmp_path):
    """Signals pending together are handled lowest number first: a Ctrl-C with the terminal
    closing, or systemd's SIGTERM with its SendSIGHUP right after, came to the runner as SIGHUP
    and then a "second" signal, and the stop was cut short with exit 129 (s29a). The runner is
    held stopped while both are sent, as a loaded machine may hold it."""
    proc, out, kids = _start(tmp_path, short_clip, plugin_env, delay_s=0.3, after=3)
    os.kill(proc.pid, signal.SIGSTOP)
    os.killpg(proc.pid, stop)
    os.killpg(proc.pid, signal.SIGHUP)
    os.kill(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    if stop == signal.SIGINT:
        assert "fer-pipe: interrupted: drained and closed" in err
        assert assert_valid_prefix(out) == list(range(stats_row(err, "source")["items"]))
    else:  # the stages got the SIGTERM too
        assert "fer-pipe: interrupted: stopped at once, as the stages got the signal too" in err
    assert not wait_gone(kids)


@pytest.mark.parametrize("stop, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_one_signal_sent_twice_at_once_is_one_stop(stop, code, plugin_env, short_clip, tmp_path):
    """GNU timeout (and kill -- -PGID) sends its signal to the command and to its process group:
    the runner got it twice, milliseconds apart, and said "interrupted twice: stopped at once,
    without draining", frames the source had read missing from the CSV (s40c)."""
    proc, out, kids = _start(tmp_path, short_clip, plugin_env, delay_s=0.3, after=3)
    os.kill(proc.pid, stop)
    time.sleep(0.02)  # handled apart, not merged into one pending signal by the kernel
    os.kill(proc.pid, stop)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "fer-pipe: interrupted: drained and closed" in err, err
    assert assert_valid_prefix(out) == list(range(stats_row(err, "source")["items"]))
    assert not wait_gone(kids)


def test_a_stop_signal_well_after_a_hangup_is_a_second_one(plugin_env, short_clip, tmp_path):
    """The terminal went (SIGHUP: the run drains), and the operator then stops the slow drain:
    the mend above had taken any stop signal after a SIGHUP for the one it came with, and the
    drain went on (s29b)."""
    proc, out, kids = _start(tmp_path, short_clip, plugin_env, delay_s=1.0, after=2)
    os.kill(proc.pid, signal.SIGHUP)
    time.sleep(2.0)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 129, err
    assert "fer-pipe: interrupted twice: stopped at once, without draining" in err
    assert not wait_gone(kids)


def _holding(pids: set[int], path: Path) -> bool:
    """Whether any of ``pids`` has ``path`` open."""
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(FileNotFoundError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                        return True
    return False


def test_second_ctrl_c_exits_at_once(plugin_env, short_clip, tmp_path):
    """With one second per frame, draining the queues would take seconds; after the second
    Ctrl-C the CSV lacks frames the source had read, and no process is left behind."""
    proc, out, kids = _start(tmp_path, short_clip, plugin_env, delay_s=1.0, after=1)
    os.killpg(proc.pid, signal.SIGINT)
    # Two sent while the runner waits to be scheduled merge into one pending signal, and the run
    # drained (s29a): the second goes once the first has stopped the source, which then lets go
    # of its file; the drain of the queued frames, a second each, is still to come.
    wait_for(lambda: not _holding(kids, short_clip), 30, "the source to stop on the first Ctrl-C", proc)
    time.sleep(TOGETHER_S)  # one sent again at once is the same stop (timeout sends it twice)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "fer-pipe: interrupted twice: stopped at once, without draining" in err
    assert "Traceback" not in err
    assert len(assert_valid_prefix(out)) < stats_row(err, "source")["items"]  # not drained
    assert not wait_gone(kids)


def test_a_drain_held_by_a_source_blocked_in_its_read_says_so(plugin_env, tmp_path):
    """A source whose read never returns holds the drain of a first Ctrl-C until a second one;
    the run said nothing meanwhile, even without --quiet, and nothing told the user that a
    second Ctrl-C would end it (s68a 4)."""
    out = tmp_path / "out.csv"
    config = broken_source_config(tmp_path / "run.yaml", out, "mode: hang, at: 3")
    with group_killed_at_exit(start_run(config, plugin_env)) as proc:
        wait_for(lambda: out.exists() and len(out.read_text().splitlines()) == 4, 60, "frames 0-2 in the CSV", proc)
        os.killpg(proc.pid, signal.SIGINT)
        assert select.select([proc.stderr], [], [], 30)[0], "no line on what the drain waits for"
        assert proc.stderr.readline() == (
            f"fer-pipe: stopping: after {HELD_S:g} s, still waiting for stage 'source' (brokenframes) to return from "
            "its read; a second Ctrl-C (or SIGTERM) stops at once, without draining\n")
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert (proc.returncode, err) == (130, "fer-pipe: interrupted twice: stopped at once, without draining\n")
    assert assert_valid_prefix(out) == [0, 1, 2]


def test_the_line_on_a_held_drain_names_what_holds_it_or_is_not_said():
    """A stage still opening holds the source before it, which was said to be in its read
    (s68d 4); and where every process had ended as the line came due, it failed the run with an
    IndexError traceback, exit 1 (s68d 1)."""
    from fer_pipe.config import load_graph
    from fer_pipe.runner import Runner, _Reports

    runner = Runner(load_graph("video_to_csv"))
    runner._stage_of = {name: name for name in ("source", "detector", "classifier", "csv")}
    procs = {name: SimpleNamespace(exitcode=None) for name in runner._stage_of}
    reports = _Reports(sources={"source"}, opened={"source", "detector", "csv"})
    tail = "; a second Ctrl-C (or SIGTERM) stops at once, without draining"
    assert runner._held_by(procs, reports) == (
        f"fer-pipe: stopping: after {HELD_S:g} s, still waiting for stage 'classifier' (classifier) to open{tail}")
    reports.opened.add("classifier")
    assert runner._held_by(procs, reports) == (
        f"fer-pipe: stopping: after {HELD_S:g} s, still waiting for stage 'source' (video) to return from its read{tail}")
    procs["source"].exitcode = 0
    assert runner._held_by(procs, reports) == (
        f"fer-pipe: stopping: after {HELD_S:g} s, still waiting for stage 'detector' (haar), stage 'classifier' "
        f"(classifier), stage 'csv' (csv) to drain{tail}")
    for proc in procs.values():
        proc.exitcode = 0
    assert runner._held_by(procs, reports) is None


def test_sigterm_while_a_sink_handles_a_frame_waits_for_that_frame(plugin_env, short_clip, tmp_path):
    """The last stage of a chain (a sink to the runner) holds SIGTERM while it handles a frame,
    so the frame is written and counted whole. Before, the hold blocked the signal in the main
    thread only: the kernel gave it to another thread (numpy's), Python ran the handler at the
    next line anyway, and the frame the stage was inside was cut off, uncounted."""
    seen = tmp_path / "seen.txt"
    config = tmp_path / "hold.yaml"
    config.write_text(
        "stages:\n"
        f"  source: {{type: video, params: {{path: '{short_clip}'}}}}\n"
        "  hold: {type: faulty, inputs: [source], params: {mode: pause, at: [2], pause_s: 2.0, "
        f"seen_file: '{seen}'}}}}\n")
    proc = start_run(config, plugin_env, quiet=False)
    wait_for(lambda: seen.exists() and "2" in seen.read_text().split(), 60, "frame 2 in the stage", proc)
    os.killpg(proc.pid, signal.SIGTERM)  # as systemd's control-group stop: every process at once
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert stats_row(err, "hold")["items"] == 3, err  # frames 0-2: the one it was inside, whole


def test_a_sigterm_to_one_stage_stops_the_others_instead_of_leaving_them_waiting(plugin_env, short_clip,
                                                                                 tmp_path):
    """A stage stopped by a SIGTERM of its own (an operator's ``kill PID``, or a signal to the
    process group before the later stages had started) sends no end of stream: the stages after
    it waited for one for ever, and so did the run. The others are now stopped too (exit 143)."""
    out, pid_file = tmp_path / "out.csv", tmp_path / "faulty.pid"
    config = fault_config(tmp_path / "run.yaml", short_clip, out, delay_s=0.1, pid_file=str(pid_file))
    proc = start_run(config, plugin_env, quiet=False)
    with group_killed_at_exit(proc):
        wait_for(lambda: pid_file.exists(), 60, "the stage to open", proc)
        wait_for(lambda: csv_rows(out), 60, "a frame through, into the CSV", proc)  # not a sleep: the sink
        os.kill(int(pid_file.read_text()), signal.SIGTERM)  # may open late on a loaded machine (s39a)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "fer-pipe: stage 'faulty' (faulty) was stopped by a SIGTERM of its own, so nothing could drain past " \
           "it: the run was stopped" in err
    assert "Traceback" not in err
    assert assert_valid_prefix(out) == list(range(stats_row(err, "csv")["items"]))


def test_a_stage_whose_opening_the_stop_cuts_short_is_stopped_not_failed(plugin_env, short_clip, tmp_path):
    """One stage fails at once while another is still opening: the runner's SIGTERM lands in
    the opening, where a library turns it into its own error (an import cut off raises
    "ImportError: initialization failed"). That stage was stopped; it used to be reported as
    a second failure, a misleading line after the real one."""
    config = tmp_path / "run.yaml"
    config.write_text(
        "stages:\n"
        f"  source: {{type: video, params: {{path: '{short_clip}'}}}}\n"
        "  failing: {type: faulty, inputs: [source], params: {mode: raise, at: [0]}}\n"
        "  opening: {type: faulty, inputs: [failing], params: {mode: slow_open}}\n"
        f"  csv: {{type: csv, inputs: [opening], params: {{path: '{tmp_path / 'out.csv'}'}}}}\n")
    proc = start_run(config, plugin_env)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert err == "fer-pipe: stage 'failing' (faulty) failed: on source frame 0: ValueError: injected fault on " \
                  "frame 0\n"


def test_rings_of_a_run_killed_outright_are_removed_by_the_next_run(plugin_env, short_clip, tmp_path):
    """SIGKILL to the whole group (a service manager's stop timeout) leaves no process to unlink
    the source's frame ring from /dev/shm, which is memory; the next run on the machine does.
    The queues' semaphores too: the resource tracker that would unlink them went with the group."""
    proc, _, kids = _start(tmp_path, short_clip, plugin_env, delay_s=0.1, after=2)
    lock = run_lock(proc.pid)  # not any lock made meanwhile: another run on the machine has its own (s29e)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not wait_gone(kids)
    left = list(Path(SHM).glob(f"{lock.stem}_source_*"))
    assert left  # nobody was left to remove it
    semaphores = list(Path(SEMAPHORES).glob(f"sem.{lock.stem}_sem-*"))
    assert len(semaphores) >= 3  # a queue's three, at least: the run's name is on them
    proc = start_run(fault_config(tmp_path / "next.yaml", short_clip, tmp_path / "next.csv"), plugin_env)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert re.search(r"fer-pipe: removed \d+ frame ring\(s\), [\d,]+ MiB, that a killed run left in "
                     + re.escape(SHM), err), err
    assert not lock.exists() and not any(p.exists() for p in left + semaphores)


def test_a_sigterm_while_the_stage_processes_start_stops_the_run(short_clip, tmp_path, monkeypatch):
    """Before, SIGINT and SIGTERM were ignored while the runner started its processes, so a stop
    sent then (``systemctl stop`` just after a start) was lost and the run went on to its end.
    The signal is sent from inside the first process start (the one patched call), which makes
    the moment exact; the processes and the signal are real."""
    from multiprocessing.context import SpawnProcess

    from fer_pipe.config import load_graph
    from fer_pipe.runner import Runner

    out = tmp_path / "out.csv"
    graph = load_graph({"stages": {
        "source": {"type": "video", "params": {"path": str(short_clip)}},
        "detector": {"type": "haar", "inputs": ["source"]},
        "classifier": {"type": "classifier", "inputs": ["detector"]},
        "csv": {"type": "csv", "inputs": ["classifier"], "params": {"path": str(out)}}}})
    start = SpawnProcess.start

    def start_after_a_sigterm(process: SpawnProcess) -> None:
        monkeypatch.setattr(SpawnProcess, "start", start)
        os.kill(os.getpid(), signal.SIGTERM)
        start(process)

    monkeypatch.setattr(SpawnProcess, "start", start_after_a_sigterm)
    handler = signal.getsignal(signal.SIGTERM)
    result = Runner(graph, progress=False).run()
    assert (result.exit_code, result.message) == (143, "interrupted: drained and closed")
    assert signal.getsignal(signal.SIGTERM) is handler  # the caller's handler is back
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # and unblocked
    read = next(row for row in result.stats if row["stage"] == "source")["items"]
    assert read < 60  # the short clip's 60 frames were not all read


def test_a_ctrl_c_while_the_queues_are_made_stops_the_run(short_clip, tmp_path, monkeypatch):
    """The queues were made before the stop signals were blocked: a Ctrl-C then was a
    KeyboardInterrupt out of the run, which left a semaphore in /dev/shm where it came between
    one's making and its registering, and a SIGTERM killed the runner with Python's warning of
    leaked semaphores (s67d 1). The signal is sent from inside the making (the one patched
    call); the queues, processes and signal are real."""
    from fer_pipe import runner
    from fer_pipe.config import load_graph

    graph = load_graph({"stages": {
        "source": {"type": "video", "params": {"path": str(short_clip)}},
        "detector": {"type": "haar", "inputs": ["source"]},
        "csv": {"type": "csv", "inputs": ["detector"], "params": {"path": str(tmp_path / "out.csv")}}}})
    made = runner._Shared.made.__func__

    def made_then_stopped(cls, *args):
        shared = made(cls, *args)
        os.kill(os.getpid(), signal.SIGINT)
        return shared

    monkeypatch.setattr(runner._Shared, "made", classmethod(made_then_stopped))
    result = runner.Runner(graph, progress=False).run()
    assert (result.exit_code, result.message) == (130, "interrupted: drained and closed")
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # unblocked again


@pytest.mark.parametrize("hangup, code", [(True, 128 + signal.SIGHUP), (False, 0)])
def test_a_closed_terminal_leaves_the_video_and_the_csv_whole(hangup, code, plugin_env, short_clip, tmp_path):
    """A shell whose terminal closes (an SSH session that drops) sends SIGHUP to its jobs'
    process groups, and every write to the terminal then fails with EIO. Before, SIGHUP killed
    each process where it stood: the MP4 had no index (OpenCV could not open it) and the CSV
    lost what was buffered. Now the run drains and closes, exit 129. A job the shell was told
    to ``disown`` gets no SIGHUP, only the EIO of its progress bar, which failed the run (exit
    1); it now goes on to its end. The run is on a real pseudo-terminal, whose leader is closed
    as a terminal emulator's is."""
    import cv2

    out, video, seen = tmp_path / "out.csv", tmp_path / "out.mp4", tmp_path / "seen.txt"
    # frame 40 fails and is skipped: the stage says so on the terminal, gone by then; the disowned
    # job failed there too, with EIO in the stage's process
    config = fault_config(tmp_path / "run.yaml", short_clip, out, on_error="skip", delay_s=0.1,
                          seen_file=str(seen), mode="raise", at=[40])
    config.write_text(config.read_text() + f"  annotated:\n    type: video_writer\n    inputs: [faulty]\n"
                                           f"    params: {{path: '{video}'}}\n")
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "fer_pipe.cli", "run", str(config)], stdin=follower,
                            stdout=follower, stderr=follower, env={**os.environ, **plugin_env},
                            start_new_session=True, preexec_fn=sighup_default)
    os.close(follower)
    while not (seen.exists() and len(seen.read_text().split()) >= 5):  # reading, so that no write blocks
        if select.select([leader], [], [], 0.1)[0]:
            os.read(leader, 65536)
    kids = descendants(proc.pid)
    os.close(leader)  # the terminal is gone: writes to it fail from here on
    if hangup:
        os.killpg(proc.pid, signal.SIGHUP)
    assert proc.wait(timeout=60) == code
    frames = sorted({int(row["frame"]) for row in csv_rows(out)})
    assert 5 <= len(frames) < 60 if hangup else frames == [i for i in range(60) if i != 40]
    capture = cv2.VideoCapture(str(video))
    decoded = 0
    while capture.read()[0]:
        decoded += 1
    capture.release()
    # drained: both sinks got every frame the source read (the video holds skipped frame 40's
    # place with a copy of frame 39, keeping its timing)
    assert decoded == frames[-1] + 1
    assert not wait_gone(kids)


def test_a_terminal_stream_left_by_its_terminal_goes_to_dev_null():
    """What a stage or the collector writes once its terminal is gone (EIO), by any of the
    stream's write methods, goes to /dev/null instead of failing."""
    from fer_pipe.hangup import GuardedStream

    leader, follower = pty.openpty()
    with open(follower, "w", buffering=1) as stream:
        guarded = GuardedStream(stream)
        os.close(leader)  # the terminal is gone
        guarded.writelines(["a skipped frame\n", "a camera reconnecting\n"])
        guarded.write("and a last line\n")
        guarded.flush()
        assert os.path.samestat(os.fstat(follower), os.stat(os.devnull))


def test_a_run_whose_log_reader_left_goes_on_to_its_end(plugin_env, short_clip, tmp_path):
    """stderr to a reader that went away (``2>&1 | tee`` or a logger that died): the next status
    line killed every stage, unclosed, exit 0, and a stage's next line (a skipped frame, a
    camera reconnecting) failed the run (s39b). Both now go to /dev/null, and the run goes on."""
    out = tmp_path / "out.csv"
    config = fault_config(tmp_path / "run.yaml", short_clip, out, on_error="skip", mode="raise", at=[30, 45],
                          delay_s=0.03)
    proc = subprocess.Popen([sys.executable, "-m", "fer_pipe.cli", "run", str(config), "--quiet", "--status-every",
                             "0.2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **plugin_env}, start_new_session=True)
    with group_killed_at_exit(proc):
        assert proc.stderr.readline()  # the first line came, then the reader leaves
        proc.stderr.close()
        assert proc.wait(timeout=120) == 0
    assert [int(row["frame"]) for row in csv_rows(out)] == [i for i in range(60) if i not in (30, 45)]


def test_a_run_whose_log_disk_is_full_from_its_start_goes_on_to_its_end(plugin_env, short_clip, tmp_path):
    """stderr on a full disk (/dev/full) from the start: a graph warning said before the run
    starts (a stage that feeds nothing) ended the command there, exit 1, no frame read (s39d)."""
    out = tmp_path / "out.csv"
    config = fault_config(tmp_path / "run.yaml", short_clip, out)
    config.write_text(config.read_text() + "  spare:\n    type: faulty\n    inputs: [source]\n")
    with open(os.devnull, "w") as nowhere, open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "fer_pipe.cli", "run", str(config), "--status-every", "0.2"],
                              stdout=nowhere, stderr=full, env={**os.environ, **plugin_env}, timeout=120)
    assert done.returncode == 0
    assert [int(row["frame"]) for row in csv_rows(out)] == list(range(60))


SIGNAL_AT_FIRST_NUMPY_IMPORT = """
import os, signal, sys
SENT = getattr(signal, sys.argv[1])
class Signal:
    def find_spec(self, name, path=None, target=None):
        if name == "numpy":
            os.kill(os.getpid(), SENT)
sys.meta_path.insert(0, Signal())
sys.argv = ["fer-pipe", "validate", "webcam.yaml"]
from fer_pipe.entry import main
sys.exit(main())
"""


def test_a_sigterm_to_fer_pipe_as_pid_1_while_it_loads_ends_it(tmp_path):
    """A container's PID 1 (Docker without --init, a pod's exec) gets no signal left at its
    default action: a docker stop in the command's first half second was dropped, and the run
    went on to its end, to be killed at the grace period's end without a drain (s50h 4)."""
    if subprocess.run(["unshare", "-fp", "--mount-proc", "true"], capture_output=True).returncode:
        pytest.skip("no PID namespace can be made here (unshare -fp needs root or user namespaces)")
    proc = subprocess.run(["unshare", "-fp", "--mount-proc", sys.executable, "-c", SIGNAL_AT_FIRST_NUMPY_IMPORT,
                           "SIGTERM"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (143, "", "")


def test_a_ctrl_c_while_the_command_imports_numpy_is_exit_130_without_a_traceback(tmp_path):
    """Half a second of a command's start goes to importing numpy, OpenCV and pydantic; a Ctrl-C
    then (a user who saw a typo) printed a KeyboardInterrupt traceback while the
    command's own module imported them before ``main`` could catch it."""
    proc = subprocess.run([sys.executable, "-c", SIGNAL_AT_FIRST_NUMPY_IMPORT, "SIGINT"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stderr) == (130, "")
