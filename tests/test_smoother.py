"""The ``smooth`` stage on hand-built packets: hysteresis, real changes, seconds not frames."""
from __future__ import annotations

import math

import numpy as np
import pytest

from fer_pipe.inprocess import run_stage
from fer_pipe.messages import EMOTIONS, Face, Packet


def probs(**weights: float) -> np.ndarray:
    """Seven probabilities: the named ones as given, the rest sharing what is left equally."""
    p = np.full(len(EMOTIONS), (1.0 - sum(weights.values())) / (len(EMOTIONS) - len(weights)), np.float32)
    for name, value in weights.items():
        p[EMOTIONS.index(name)] = value
    return p


def stream(per_frame: list[np.ndarray], fps: float, track_id: int | None = 1) -> list[Packet]:
    return [Packet("cam", i, i / fps, faces=[Face((10, 10, 50, 50), p, track_id)])
            for i, p in enumerate(per_frame)]


def changes(labels: list[str | None]) -> int:
    settled = [x for x in labels if x is not None]
    return sum(a != b for a, b in zip(settled, settled[1:]))


def test_hysteresis_holds_against_flicker() -> None:
    # 10 s at 25 fps of 6 frames sad, 4 frames neutral: raw labels change 5 times a second, and
    # so does the moving average alone (bursts of 0.16 s outlast its ripple); hysteresis must not
    sad, neutral = probs(sad=0.6, neutral=0.3), probs(sad=0.3, neutral=0.6)
    raw = stream([sad if i % 10 < 6 else neutral for i in range(250)], 25.0)
    average_only = run_stage("smooth", raw, {"margin": 0.0, "hold_s": 0.0})
    assert changes([p.faces[0].smoothed_label for p in average_only]) >= 40
    out = run_stage("smooth", stream([p.faces[0].probs for p in raw], 25.0))
    assert changes([p.faces[0].label for p in out]) >= 45
    smoothed = [p.faces[0].smoothed_label for p in out]
    assert changes(smoothed) == 0
    assert smoothed[-1] == "sad"


def test_a_real_change_goes_through_once_and_is_dated_from_when_it_led() -> None:
    fps, tau, hold = 25.0, 0.4, 0.25
    raw = [probs(sad=0.8)] * 75 + [probs(happy=0.8)] * 75  # the expression changes at 3.0 s
    out = run_stage("smooth", stream(raw, fps), {"time_constant_s": tau, "hold_s": hold, "margin": 0.1})
    labels = [p.faces[0].smoothed_label for p in out]
    assert changes(labels) == 1 and labels[-1] == "happy"
    switch = labels.index("happy")
    # the averages cross after tau*ln(2) s, then need margin, then hold: all well under one second
    assert 3.0 + hold < switch / fps < 3.0 + tau * math.log(2) + 0.15 + hold + 0.1
    since_frame, since_time = out[switch].faces[0].extra["label_since"]
    assert since_time == pytest.approx(switch / fps - hold, abs=1 / fps + 1e-9)
    assert since_frame == round(since_time * fps)


def test_a_lead_of_exactly_hold_s_takes_the_label_wherever_in_the_clip_it_comes() -> None:
    """Three frames at 10 fps are 0.2 s, but 0.5 - 0.3 is 0.19999999999999998: the label turned a
    frame later, and a spell of exactly hold_s made an episode or none, by its start (s50e 1)."""
    happy, neutral = probs(happy=0.9), probs(neutral=0.9)
    for start in range(3, 30):
        raw = [happy] * start + [neutral] * 4
        out = run_stage("smooth", stream(raw, 10.0), {"time_constant_s": 0.001, "margin": 0.15, "hold_s": 0.2})
        assert [p.faces[0].smoothed_label for p in out].index("neutral") == start + 2, start


def test_a_challenger_that_falls_back_starts_its_hold_afresh() -> None:
    # two blips of happy, each shorter than hold_s, two seconds apart: the second must not count
    # the time since the first lead towards the hold (s38c: a challenger never forgotten switched here)
    sad, happy = probs(sad=0.9, happy=0.02), probs(happy=0.9, sad=0.02)
    raw = [sad] * 50 + [happy] * 2 + [sad] * 50 + [happy] * 2 + [sad] * 25
    out = run_stage("smooth", stream(raw, 25.0), {"time_constant_s": 0.05, "hold_s": 0.2})
    labels = [p.faces[0].smoothed_label for p in out]
    assert set(labels[5:]) == {"sad"}
    assert "challenger_since" in out[51].faces[0].extra  # the blip did lead: the hold is what held
    assert "challenger_since" not in out[60].faces[0].extra


def test_two_close_classes_taking_turns_in_the_lead_take_the_label_from_one_both_left_behind() -> None:
    """Happy and surprise close to each other (an open-mouthed smile), their lead swapping every
    few frames after a second of sad at 0.8: the hold counted one class's unbroken lead, so it
    began again at each swap, and the label stayed sad at 0.02 for as long as they did (s44b)."""
    sad = probs(sad=0.8)
    turns = [probs(happy=0.48, surprise=0.46, sad=0.02) if (i // 3) % 2 else probs(surprise=0.48, happy=0.46, sad=0.02)
             for i in range(120)]
    out = run_stage("smooth", stream([sad] * 30 + turns, 30.0))
    labels = [p.faces[0].smoothed_label for p in out]
    assert labels[29] == "sad" and labels[-1] in ("happy", "surprise")
    assert changes(labels) == 1 and labels.index(labels[-1]) < 30 + 30  # within a second of the change


def test_the_time_constant_is_in_seconds_not_frames() -> None:
    # the same step at 10 and at 30 fps gives nearly the same smoothed value at the same time;
    # each sample stands for the interval since the one before, so the step counts from one
    # frame interval before the first happy frame (a per-frame average would differ threefold)
    tau = 0.5
    values = {}
    for fps in (10.0, 30.0):
        n = int(2 * fps)
        out = run_stage("smooth", stream([probs(sad=0.9)] * n + [probs(happy=0.9)] * n, fps),
                        {"time_constant_s": tau})
        at = next(p for p in out if p.timestamp >= 2.5 - 1e-9)  # 0.5 s after the step
        values[fps] = float(at.faces[0].smoothed[EMOTIONS.index("happy")])
        expected = 0.9 - (0.9 - 0.1 / 6) * math.exp(-(0.5 + 1 / fps) / tau)
        assert values[fps] == pytest.approx(expected, abs=1e-3)
    assert abs(values[10.0] - values[30.0]) < 0.06


@pytest.mark.parametrize("said", [{"track_lost": [1], "tracks": []}, {"tracks": []}, {"track_lost": [1]}])
def test_faces_without_a_track_are_left_alone_and_lost_tracks_start_afresh(said) -> None:
    """The tracker says both; the list of live ids alone (the frame with track_lost was dropped),
    or track_lost alone (a tracker plug-in that lists no live ids) ends a track too."""
    untracked = stream([probs(fear=0.9)] * 3, 25.0, track_id=None)
    assert all(p.faces[0].smoothed is None for p in run_stage("smooth", untracked))
    first = stream([probs(sad=0.9)] * 10, 25.0)
    first[-1].extra.update(said)
    later = [Packet("cam", 10, 0.4, faces=[Face((0, 0, 9, 9), probs(happy=0.7), 1)])]
    out = run_stage("smooth", first + later, {"hold_s": 0.0})
    np.testing.assert_allclose(out[-1].faces[0].smoothed, probs(happy=0.7))
    assert out[-1].faces[0].smoothed_label == "happy"
    assert out[0].faces[0].smoothed_label == "sad", "with hold_s 0 a first label settles at once"


def test_sinks_get_raw_and_smoothed_values_side_by_side(tmp_path) -> None:
    import csv

    from fer_pipe.events import event_rows, frame_event
    from fer_pipe.events import FRAME_COLUMNS

    raw = [probs(sad=0.7)] * 10 + [probs(sad=0.4, happy=0.45)] * 3  # raw turns happy, smoothed stays sad
    out = run_stage("smooth", stream(raw, 25.0), {"hold_s": 0.2})
    # a plug-in smoother's label without its probabilities: no smoothed value, in every sink (s61d 1)
    out.append(Packet("cam", 13, 0.52, faces=[Face((0, 0, 9, 9), probs(happy=0.7), 1, smoothed_label="happy")]))
    run_stage("csv", out, {"path": str(tmp_path / "f.csv")})
    with open(tmp_path / "f.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["smoothed_label"] for r in rows] == [""] * 5 + ["sad"] * 8 + [""]  # settles after 0.2 s
    assert rows[-2]["label"] == "happy" and rows[-2]["smoothed_label"] == "sad"
    assert float(rows[-2]["smoothed_confidence"]) == pytest.approx(float(out[-2].faces[0].smoothed[4]), abs=1e-4)
    published = [event_rows(frame_event(p), FRAME_COLUMNS, 4)[0][-2:] for p in out]  # as `fer-pipe subscribe`
    assert list(rows[0])[-2:] == ["smoothed_label", "smoothed_confidence"]
    assert published == [[r["smoothed_label"], r["smoothed_confidence"]] for r in rows]
