"""``--status-every``: a line every so often saying how far each stage has got, for services.

The run is a live replay of a real clip into a plug-in stage slowed below the clip's frame
rate, so the source drops frames; the lines must count what the statistics table counts.
"""
from __future__ import annotations

import re

from fault_plugin import fault_config, start_run, stats_row

LINE = re.compile(r"fer-pipe: status after \d+:\d\d:\d\d: (.*)")
PART = re.compile(r"(\w+) (\d+) \(\d+\.\d/s(?:, (\d+) dropped)?\)")


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
