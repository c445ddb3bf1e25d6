"""The README's "Writing a stage" example, installed as a real plug-in and run in a real graph,
so the code a user copies from the README is code that works."""
from __future__ import annotations

import fcntl
import json
import re
from pathlib import Path

import yaml
from conftest import fer_pipe
from fault_plugin import install_distribution
from livetools import csv_rows

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> tuple[dict[str, str], str, str]:
    """The example's modules (each Python block that starts with its file's name), its
    entry-point lines and its YAML snippet."""
    section = README.read_text().split("## Writing a stage", 1)[1].split("\n## ", 1)[0]
    blocks: dict[str, str] = {}
    modules: dict[str, str] = {}
    for language, text in re.findall(r"```(\w+)\n(.*?)```", section, re.S):
        blocks.setdefault(language, text)  # the first of each language is the example's
        named = re.match(r"# (\S+\.py)\n", text)
        if language == "python" and named:
            modules[named.group(1)] = text
    entry_points = blocks["ini"].split("fer_pipe.stages =\n", 1)[1]
    return modules, entry_points, blocks["yaml"]


def test_the_readme_stages_install_list_filter_faces_and_write_them(short_clip, tmp_path):
    modules, entry_points, snippet = readme_example()
    assert set(modules) == {"my_stages/confident.py", "my_stages/faces_jsonl.py"}
    entries = "".join(f"{line.strip()}\n" for line in entry_points.splitlines())
    env = install_distribution(tmp_path / "plugin", "my-stages", {"my_stages/__init__.py": "", **modules},
                               f"[fer_pipe.stages]\n{entries}")
    listed = fer_pipe("stages", env=env, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "confident" in listed.stdout and "min_confidence" in listed.stdout and "faces_jsonl" in listed.stdout

    stages = {
        "source": {"type": "video", "params": {"path": str(short_clip)}},
        "detector": {"type": "haar", "inputs": ["source"]},
        "classifier": {"type": "classifier", "inputs": ["detector"]},
        "all": {"type": "csv", "inputs": ["classifier"], "params": {"path": str(tmp_path / "all.csv")}},
        **yaml.safe_load(snippet),  # the README's lines: classifier -> confident -> csv and faces_jsonl
    }
    stages["csv"]["params"]["path"] = str(tmp_path / "confident.csv")
    stages["faces"]["params"]["path"] = str(tmp_path / "faces.jsonl")
    threshold = stages["confident"]["params"]["min_confidence"]
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({"stages": stages}))
    done = fer_pipe("run", str(tmp_path / "g.yaml"), "--quiet", env=env, timeout=180)
    assert done.returncode == 0, done.stderr

    everything, kept = csv_rows(tmp_path / "all.csv"), csv_rows(tmp_path / "confident.csv")
    faces = [r for r in everything if r["label"]]
    sure = [(r["frame"], r["x"], r["label"]) for r in faces if float(r["confidence"]) >= threshold]
    assert 0 < len(sure) < len(faces)  # the clip has faces on both sides of the threshold
    assert [(r["frame"], r["x"], r["label"]) for r in kept if r["label"]] == sure
    assert {r["frame"] for r in kept} == {str(i) for i in range(60)}  # no frame lost, faces or not
    lines = [json.loads(line) for line in (tmp_path / "faces.jsonl").read_text().splitlines()]
    assert [(str(o["frame"]), str(o["box"][0]), o["label"]) for o in lines] == sure

    # the sink's file is locked for the run: a second run given it stops at its start, exit 2
    stages["csv"]["params"]["path"] = str(tmp_path / "second.csv")
    (tmp_path / "second.yaml").write_text(yaml.safe_dump({"stages": stages}))
    with open(tmp_path / "faces.jsonl", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        second = fer_pipe("run", str(tmp_path / "second.yaml"), "--quiet", env=env, timeout=180)
    assert second.returncode == 2, second.stderr
    assert second.stderr.startswith("fer-pipe: stage 'faces' (faces_jsonl): faces_jsonl ") and \
        "faces.jsonl: another process is writing it" in second.stderr, second.stderr
    assert len((tmp_path / "faces.jsonl").read_text().splitlines()) == len(sure)  # the first run's, untouched
