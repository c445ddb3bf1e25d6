"""The README's "Writing a stage" example, installed as a real plug-in and run in a real graph,
so the code a user copies from the README is code that works."""
from __future__ import annotations

import re
from pathlib import Path

import yaml
from conftest import fer_pipe
from fault_plugin import install_distribution
from livetools import csv_rows

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> tuple[str, str, str, str]:
    """The example's file name, its Python code, its entry-point lines and its YAML snippet."""
    section = README.read_text().split("## Writing a stage", 1)[1].split("\n## ", 1)[0]
    blocks: dict[str, str] = {}
    for language, text in re.findall(r"```(\w+)\n(.*?)```", section, re.S):
        blocks.setdefault(language, text)  # the first of each language is the example's
    path = re.match(r"# (\S+\.py)\n", blocks["python"]).group(1)
    entry_points = blocks["ini"].split("fer_pipe.stages =\n", 1)[1]
    return path, blocks["python"], entry_points, blocks["yaml"]


def test_the_readme_stage_installs_lists_and_filters_faces(short_clip, tmp_path):
    path, code, entry_points, snippet = readme_example()
    package = path.split("/")[0]
    entries = "".join(f"{line.strip()}\n" for line in entry_points.splitlines())
    env = install_distribution(tmp_path / "plugin", "my-stages", {f"{package}/__init__.py": "", path: code},
                               f"[fer_pipe.stages]\n{entries}")
    listed = fer_pipe("stages", env=env, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "confident" in listed.stdout and "min_confidence" in listed.stdout

    stages = {
        "source": {"type": "video", "params": {"path": str(short_clip)}},
        "detector": {"type": "haar", "inputs": ["source"]},
        "classifier": {"type": "classifier", "inputs": ["detector"]},
        "all": {"type": "csv", "inputs": ["classifier"], "params": {"path": str(tmp_path / "all.csv")}},
        **yaml.safe_load(snippet),  # the README's lines: classifier -> confident -> csv
    }
    stages["csv"]["params"]["path"] = str(tmp_path / "confident.csv")
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
