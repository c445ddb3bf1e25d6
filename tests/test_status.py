"""``--status-every``: a line every so often saying how far each stage has got, for services.

The run is a live replay of a real clip into a plug-in stage slowed below the clip's frame
rate, so the source drops frames; the lines must count what the statistics table counts.
"""
from __future__ import annotations

import re
import signal
import time

import yaml

from fault_plugin import fault_config, start_run, stats_row
from livetools import free_port

LINE = re.compile(r"fer-pipe: status (?:at the end, )?after \d+:\d\d:\d\d: (.*)")
PART = re.compile(r"(\w+) (\d+) \((?:\d+\.\d/s|down for \d+ s|no frame in \d+ s|ended)(?:, (\d+) dropped)?\)")


def test_status_lines_count_each_stage_and_the_frames_a_live_source_drops(plugin_env, short_clip, tmp_path):
    config = fault_config(tmp_path / "run.yaml", short_clip, tmp_path / "out.csv", live=True, delay_s=0.2)
    proc = start_run(config, plugin_env, "--status-every", "0.2", quiet=False)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    lines = [m.group(1) for m in map(LINE.fullmatch, err.splitlines()) if m]
    assert lines, err
    counts = []
    for line in lines:
        parts = list(PART.finditer(line))
        assert ", ".join(p.group(0) for p in parts) == line
        assert [p.group(1) for p in parts] == ["source", "faulty", "csv"], line
        counts.append({p.group(1): (int(p.group(2)), int(p.group(3) or 0)) for p in parts})
    for before, after in zip(counts, counts[1:]):
        assert all(a >= b for s in before for a, b in zip(after[s], before[s]))  # counters only grow
    # the last line comes while the slowed stage drains, after the source has read its last frame
    source = stats_row(err, "source")
    assert counts[-1]["source"] == (source["items"], source["dropped"])
    assert source["dropped"] > 0
    assert counts[-1]["csv"][0] <= stats_row(err, "csv")["items"]


def test_a_live_source_that_is_down_is_said_so_in_the_status_line(plugin_env, tmp_path):
    """A camera that was down showed as "cam 184 (0.0/s)", as a stage that is stuck or a scene
    with no motion does (s28a). Its outage packets now mark it down, from its last frame."""
    config = tmp_path / "down.yaml"
    config.write_text("stages:\n  source: {type: brokenframes, params: {mode: outage, at: 4, down_s: 2.5}}\n"
                      "  faulty: {type: faulty, inputs: [source]}\n"
                      f"  csv: {{type: csv, inputs: [faulty], params: {{path: '{tmp_path / 'out.csv'}'}}}}\n")
    proc = start_run(config, plugin_env, "--status-every", "0.2")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    sources = [list(PART.finditer(m.group(1)))[0].group(0) for m in map(LINE.fullmatch, err.splitlines()) if m]
    assert "source 4 (down for 2 s)" in sources, sources
    assert re.fullmatch(r"source 8 \(\d+\.\d/s\)", sources[-1]), sources  # up again, and read to its end


def test_the_last_status_line_of_a_run_stopped_while_a_camera_is_down_counts_its_drops_as_the_table_does(
        plugin_env, tmp_path):
    """The shared count was set at each frame only: a camera's reads that timed out while it was
    down reached no status line until it was back, and the last line of a run stopped then
    could say fewer than the table."""
    config = tmp_path / "down.yaml"
    config.write_text("stages:\n  source: {type: brokenframes, params: {mode: outage, at: 4, down_s: 60, "
                      "drops_while_down: true}}\n"
                      "  faulty: {type: faulty, inputs: [source]}\n"
                      f"  csv: {{type: csv, inputs: [faulty], params: {{path: '{tmp_path / 'out.csv'}'}}}}\n")
    proc = start_run(config, plugin_env, "--status-every", "0.5", quiet=False)
    time.sleep(4)  # some 30 outage packets, each a drop
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    lines = [LINE.fullmatch(line).group(1) for line in err.splitlines() if LINE.fullmatch(line)]
    said = [{p.group(1): int(p.group(3) or 0) for p in PART.finditer(line)} for line in lines]
    assert any(0 < counts["source"] for counts in said[:-1]), lines  # while down
    assert said[-1]["source"] == stats_row(err, "source")["dropped"] > 0, err


def test_a_camera_never_reached_is_said_to_have_sent_no_frame(plugin_env, tmp_path):
    """A camera that never connected showed as "cam 0 (0.0/s)" for as long as the run retried
    it, as a quiet stage would (s28a). A real RTSP source on a port where nothing listens."""
    url = f"rtsp://127.0.0.1:{free_port()}/nothing"
    config = tmp_path / "cam.yaml"
    config.write_text(yaml.safe_dump({"stages": {
        "cam": {"type": "rtsp", "params": {"url": url, "timeout_s": 1, "backoff_initial_s": 0.2,
                                           "backoff_max_s": 0.5, "give_up_after_s": 2.5}},
        "faulty": {"type": "faulty", "inputs": ["cam"]},
        "csv": {"type": "csv", "inputs": ["faulty"], "params": {"path": str(tmp_path / "out.csv")}}}}))
    proc = start_run(config, plugin_env, "--status-every", "0.5")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    cams = [list(PART.finditer(m.group(1)))[0].group(0) for m in map(LINE.fullmatch, err.splitlines()) if m]
    assert cams and all(re.fullmatch(r"cam 0 \(no frame in \d+ s\)", cam) for cam in cams), cams
    assert cams[-1] != "cam 0 (no frame in 0 s)", cams  # counted from the start, not from each tick


def test_status_lines_come_with_quiet_too_as_the_systemd_unit_runs(plugin_env, short_clip, tmp_path):
    """The shipped unit runs `--quiet --status-every 60`: --quiet leaves out the progress bar and
    the statistics table, not the lines a journal shows the run alive by."""
    config = fault_config(tmp_path / "run.yaml", short_clip, tmp_path / "out.csv", live=True, delay_s=0.2)
    proc = start_run(config, plugin_env, "--status-every", "0.2", quiet=True)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    lines = [m.group(1) for m in map(LINE.fullmatch, err.splitlines()) if m]
    assert lines and all([p.group(1) for p in PART.finditer(line)] == ["source", "faulty", "csv"] for line in lines)
    assert not any(line.split()[:1] == ["csv"] for line in err.splitlines())  # no statistics table


def test_a_last_status_line_gives_the_counts_at_the_end(plugin_env, short_clip, tmp_path):
    """The frames of a run's last interval were in no line, and a service run with --quiet,
    which prints no statistics table, never logged its final counts (s29a)."""
    config = fault_config(tmp_path / "run.yaml", short_clip, tmp_path / "out.csv")
    proc = start_run(config, plugin_env, "--status-every", "3600", quiet=True)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    (line,) = [line for line in err.splitlines() if LINE.fullmatch(line)]
    assert line.startswith("fer-pipe: status at the end, after ")
    parts = list(PART.finditer(LINE.fullmatch(line).group(1)))
    assert [(p.group(1), p.group(2)) for p in parts] == [("source", "60"), ("faulty", "60"), ("csv", "60")]
    assert all(float(p.group(0).split("(")[1].split("/")[0]) > 0 for p in parts)  # over the run, not 0.0/s


def test_the_last_status_line_counts_the_frames_dropped_for_a_slow_sink_as_the_table_does(plugin_env, short_clip,
                                                                                        tmp_path):
    """Frames dropped from a slow sink's full queue are counted in the emit after the stage's
    packet, which published its count before it: the last emit's drops never reached the status
    line at the end, which said 140 where the table said 141 (s40c)."""
    config = tmp_path / "slow.yaml"
    config.write_text(f"stages:\n  source: {{type: video, params: {{path: '{short_clip}', realtime: true}}}}\n"
                      "  faulty: {type: faulty, inputs: [source]}\n"
                      "  slow: {type: slowsink, inputs: [faulty], params: {delay_s: 0.3}}\n")
    proc = start_run(config, plugin_env, "--status-every", "3600", quiet=False)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    (line,) = [line for line in err.splitlines() if LINE.fullmatch(line) and "at the end" in line]
    said = {p.group(1): int(p.group(3) or 0) for p in PART.finditer(LINE.fullmatch(line).group(1))}
    assert said["faulty"] == stats_row(err, "faulty")["dropped"] > 0, err


def test_the_statistics_table_gives_each_stages_rate_times_and_a_sinks_latency():
    """The README's table: items, items/s, mean and p95 ms per item, dropped, skipped, CPU s,
    and for a sink the capture-to-sink latency's p50 and p95. No test read any but the counts."""
    from fer_pipe.stats import StageStats, format_table

    stats = StageStats("csv", dropped=2, skipped=1, wall_s=4.0, cpu_s=1.5)
    for ms in range(1, 101):
        stats.record(ms / 1000)
        stats.latencies.append(ms / 100)
    summary = stats.summary()
    assert {k: summary[k] for k in ("items", "per_s", "mean_ms", "p95_ms", "latency_p50_ms", "latency_p95_ms")} == \
        {"items": 100, "per_s": 25.0, "mean_ms": 50.5, "p95_ms": 95.05, "latency_p50_ms": 505.0,
         "latency_p95_ms": 950.5}
    assert format_table([summary]).splitlines()[1].split() == [
        "csv", "100", "25.0", "50.50", "95.05", "2", "1", "1.50", "latency", "p50", "505.0", "ms,", "p95", "950.5",
        "ms"]
    assert len(format_table([summary]).splitlines()) == 2
    long_run = {**summary, "items": 20_001}  # percentiles of the last 20,000: said, or read as the whole run's (s63b 4)
    assert format_table([long_run]).splitlines()[2] == "(p95 and latency: each stage's last 20,000 items)"
