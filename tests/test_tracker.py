"""The ``track`` stage on hand-built packets: stable ids, new ids, ends, and skipped frames."""
from __future__ import annotations

import numpy as np
import pytest

from fer_pipe.boxes import iou_matrix
from fer_pipe.inprocess import make_stage, run_stage
from fer_pipe.messages import Face, Packet, ended_tracks, outage, stream_ended

FPS = 25.0


def packet(index: int, boxes: list[tuple[int, int, int, int]], source: str = "cam") -> Packet:
    return Packet(source, index, index / FPS, faces=[Face(box) for box in boxes])


def skipped(index: int, source: str = "cam") -> Packet:
    """A frame the detector did not look at, as the detector marks it."""
    return Packet(source, index, index / FPS, faces=[], extra={"detected": False})


def ids(out: list[Packet]) -> list[list[int | None]]:
    return [[f.track_id for f in p.faces] for p in out]


def test_iou_matrix_matches_hand_computed_values() -> None:
    a = np.array([[0, 0, 10, 10], [100, 100, 10, 10]], float)
    b = np.array([[5, 0, 10, 10]], float)
    assert iou_matrix(a, b) == pytest.approx(np.array([[50 / 150], [0.0]]))


def test_ids_stay_with_two_faces_moving_past_each_other() -> None:
    # face A moves right along the top, face B left along the bottom; the detector lists them
    # in x order, so their order in the list swaps halfway: ids must follow the boxes, not the order
    packets = []
    for i in range(60):
        a, b = (10 + 9 * i, 20, 80, 80), (550 - 9 * i, 200, 80, 80)
        packets.append(packet(i, sorted([a, b])))
    out = run_stage("track", packets, {"min_hits": 3})
    by_row: dict[int, set] = {20: set(), 200: set()}
    for p in out[2:]:
        for face in p.faces:
            by_row[face.box[1]].add(face.track_id)
    assert by_row[20] == {1} and by_row[200] == {2}
    assert ids(out)[:2] == [[None, None], [None, None]], "ids are given only after min_hits matches"
    assert out[2].extra["track_appeared"] == [1, 2]


def test_a_new_face_gets_a_new_id_and_a_one_frame_false_hit_gets_none() -> None:
    packets = [packet(i, [(100 + 2 * i, 100, 90, 90)]) for i in range(10)]
    packets[4].faces.append(Face((400, 50, 60, 60)))  # a single false hit of the cascade
    packets += [packet(i, [(100 + 2 * i, 100, 90, 90), (400, 200, 90, 90)]) for i in range(10, 20)]
    out = run_stage("track", packets, {"min_hits": 3, "max_age": 2})
    assert out[4].faces[1].track_id is None
    assert [f.track_id for f in out[19].faces] == [1, 2]
    assert out[12].extra["track_appeared"] == [2]
    assert all(f.track_id in (None, 1, 2) for p in out for f in p.faces)


def test_a_track_ends_after_max_age_missed_detections_and_a_return_gets_a_new_id() -> None:
    box = (200, 100, 100, 100)
    seen = [packet(i, [box]) for i in range(5)]
    gap_short = [packet(i, []) for i in range(5, 8)]          # 3 misses <= max_age 3: kept
    back = [packet(i, [box]) for i in range(8, 12)]
    gap_long = [packet(i, []) for i in range(12, 16)]         # the 4th miss ends the track
    again = [packet(i, [box]) for i in range(16, 20)]
    out = run_stage("track", seen + gap_short + back + gap_long + again, {"max_age": 3, "min_hits": 2})
    assert {f.track_id for p in out[8:12] for f in p.faces} == {1}
    assert [p.extra.get("track_lost") for p in out[12:16]] == [None, None, None, [1]]
    assert {f.track_id for p in out[17:20] for f in p.faces} == {2}


def test_a_camera_down_for_longer_than_max_gap_s_ends_its_tracks() -> None:
    """A camera that is down sends no frames, so no detection missed its track: the same box
    after a minute's outage carried the old id on (and its episode over the outage)."""
    box = (200, 100, 100, 100)
    before = [packet(i, [box]) for i in range(10)]
    after = [Packet("cam", i, 60 + i / FPS, faces=[Face(box)]) for i in range(10, 20)]
    out = run_stage("track", before + after, {"min_hits": 2})
    assert (out[10].extra["track_lost"], out[10].extra["tracks"]) == ([1], [])
    assert {f.track_id for p in out[11:] for f in p.faces} == {2}
    brief = [Packet("cam", i, 4.0 + i / FPS, faces=[Face(box)]) for i in range(10, 20)]  # under 5 s
    out = run_stage("track", [packet(i, [box]) for i in range(10)] + brief, {"min_hits": 2})
    assert {f.track_id for p in out[1:] for f in p.faces} == {1}


def test_a_source_that_says_it_is_down_ends_its_tracks_once_max_gap_s_has_passed() -> None:
    """A camera down all night sent no frame, so its tracks (and their episodes, and face_lost)
    waited for its return in the morning. Its outage packets end them while it is down, once
    the gap since the last frame passes max_gap_s; another source's tracks go on."""
    box = (200, 100, 100, 100)
    frames = [packet(i, [box], source) for i in range(10) for source in ("cam", "cam2")]  # the last at 0.36 s
    down = [outage("cam", 9, 2.0), outage("cam", 9, 5.5), outage("cam", 9, 6.5)]
    out = run_stage("track", frames + down + [packet(10, [box], "cam2")], {"min_hits": 2})
    said = out[20:23]
    assert ["track_lost" in p.extra for p in said] == [False, True, False]  # under 5 s; over it; ended already
    assert (said[1].extra["track_lost"], said[1].extra["tracks"]) == ([1], [])
    # the live ids on each, as on a frame: where the packet that ended the track is dropped from a
    # live sink's full queue, the next one ends it there, not the camera's return (s30a)
    assert [p.extra["tracks"] for p in said] == [[1], [], []]
    assert ended_tracks([("cam", 1)], said[2]) == [("cam", 1)]
    assert all(p.faces is None and p.image is None for p in said)  # still no frame
    assert out[23].extra["tracks"] == [1] and "track_lost" not in out[23].extra  # cam2's track goes on
    # a camera down since the run started has no track, and its outage packets say so (s30c)
    assert run_stage("track", [outage("cam3", -1, 1.0)])[0].extra == {"tracks": []}
    # the clock set back an hour while it is down: its outage packets are dated before its last
    # frame, and the tracks waited until the clock had caught up, the whole outage (s46b)
    stepped = run_stage("track", frames[::2] + [outage("cam", 9, 2.0 - 3600)], {"min_hits": 2})
    assert stepped[-1].extra["track_lost"] == [1]


def test_a_source_whose_stream_ended_ends_its_tracks_at_once_and_the_others_go_on() -> None:
    """A file that ended beside another source kept its face in view (no track_lost, so no
    face_lost or last episode) until the whole run ended: with a camera beside it, never (s40b)."""
    box = (200, 100, 100, 100)
    frames = [packet(i, [box], source) for i in range(10) for source in ("cam", "cam2")]
    out = run_stage("track", frames + [stream_ended("cam", 9, 0.36), packet(10, [box], "cam2")], {"min_hits": 2})
    assert (out[20].extra["track_lost"], out[20].extra["tracks"]) == ([1], [])
    assert out[21].extra["tracks"] == [1] and "track_lost" not in out[21].extra
    assert ended_tracks([("cam", 1), ("cam2", 1)], out[20]) == [("cam", 1)]


def test_a_clock_set_back_ends_the_sources_tracks() -> None:
    """A camera's frames are dated by the wall clock: set back an hour, the track went on and
    its episode ended before it began (and was dropped)."""
    box = (200, 100, 100, 100)
    before = [Packet("cam", i, 7200 + i / FPS, faces=[Face(box)]) for i in range(10)]
    after = [Packet("cam", i, 3600 + i / FPS, faces=[Face(box)]) for i in range(10, 20)]
    out = run_stage("track", before + after, {"min_hits": 2})
    assert (out[10].extra["track_lost"], out[10].extra["tracks"]) == ([1], [])
    assert {f.track_id for p in out[11:] for f in p.faces} == {2}


def test_a_time_lapse_is_tracked_and_only_a_gap_well_over_its_usual_one_ends_its_tracks() -> None:
    """Photos 10 s apart: every frame was a gap of over max_gap_s, so every frame ended every
    track and none ever got an id."""
    box = (200, 100, 100, 100)
    photos = [Packet("cam", i, 10.0 * i, faces=[Face(box)]) for i in range(12)]
    photos += [Packet("cam", i, 10.0 * i + 600, faces=[Face(box)]) for i in range(12, 16)]  # ten minutes off
    out = run_stage("track", photos, {"min_hits": 2})
    # the first gap, with no usual one to go by, ended the first track before its second sighting
    assert [[f.track_id for f in p.faces] for p in out] == [[None]] + [[1]] * 11 + [[None]] + [[2]] * 3
    assert out[12].extra["track_lost"] == [1]


def test_a_face_appearing_elsewhere_while_a_track_lives_gets_a_new_id() -> None:
    """Person A on the left, gone; B appears on the right while A's track is still alive (within
    max_age): the assignment pairs them at IoU 0, and only the threshold keeps B from A's id (s38c)."""
    out = run_stage("track", [packet(i, [(50, 100, 80, 80)]) for i in range(10)]
                    + [packet(i, [(500, 100, 80, 80)]) for i in range(10, 20)], {"min_hits": 1})
    assert ids(out) == [[1]] * 10 + [[2]] * 10


@pytest.mark.parametrize("step", [65, 100])
def test_a_face_moving_fast_between_detector_runs_keeps_one_id(step: int) -> None:
    """A 120 px face moving 65 or 100 px between runs of a detector on every third frame (two to
    three widths a second at 10 fps): a new track predicts its face where it was first seen,
    so each detection overlapped no track, started a new one, and the face never got an id;
    nor did one that had stood still and then moved off, which now gets a new one (s51a 1)."""
    moving = [packet(i, [(step * i // 3, 100, 120, 120)]) if i % 3 == 0 else skipped(i) for i in range(30)]
    assert ids(run_stage("track", moving))[::3] == [[None], [None]] + [[1]] * 8
    assert ids(run_stage("track", moving, {"min_hits": 1}))[::3] == [[1]] * 10  # an id at once: a new one each run (s51f 1)
    standing = [packet(i, [(100, 100, 120, 120)]) if i % 3 == 0 else skipped(i) for i in range(21)]
    off = [packet(i, [(100 + step * (i - 21) // 3, 100, 120, 120)]) if i % 3 == 0 else skipped(i) for i in range(21, 45)]
    assert ids(run_stage("track", standing + off))[-12::3] == [[2]] * 4


@pytest.mark.parametrize("min_hits", [1, 3])
@pytest.mark.parametrize("listed", ["left to right", "right to left"])
def test_a_row_of_faces_walking_in_one_after_another_keeps_one_id_each(min_hits: int, listed: str) -> None:
    """Six 90 px faces 27 px apart walking right at 68 px per detector run (the detector on every
    third frame): a new track started still, so at the next run the face behind its own was the
    nearer; the tracks took turns on the faces behind them, faces 3 and 4 got no id in 4 s, face
    5 a new id at every run, and ids were carried backwards onto empty background (s52b 1). A
    new track starts at the speed of the tracked face nearest it, whatever order the detector
    lists them in (s52f 3); until its next match its box is carried where it was seen, up to
    two frames' walk behind its face."""
    size, pitch, per_run = 90, 117, 68
    truth: list[dict[int, int]] = []
    packets = []
    for i in range(60):
        truth.append({k: x for k in range(6) if (x := per_run * i // 3 - 100 - pitch * k) >= 0})
        boxes = sorted(((x, 300, size, size) for x in truth[i].values()), reverse=listed == "right to left")
        packets.append(packet(i, boxes) if i % 3 == 0 else skipped(i))
    out = run_stage("track", packets, {"min_hits": min_hits})
    given: dict[int, set[int]] = {k: set() for k in range(6)}
    for p, where in zip(out, truth):
        for face in p.faces:
            k = min(where, key=lambda k: abs(where[k] - face.box[0]))
            assert abs(where[k] - face.box[0]) <= 2 * per_run / 3, f"frame {p.index}: a box on no face"
            if face.track_id is not None:
                given[k].add(face.track_id)
    assert given == {k: {k + 1} for k in range(6)}


def test_a_face_standing_beside_a_walker_is_carried_where_it_stands() -> None:
    """With min_hits 1 a new face has its id at once, and its box is carried over the frames the
    detector skips: one that came into view standing beside a walker slid off with the walker's
    speed, which it had taken, half a face in two frames (s52f 4)."""
    packets = []
    for i in range(30):
        boxes = [(50 + 68 * i // 3, 300, 90, 90)] + ([(405, 420, 90, 90)] if i >= 9 else [])
        packets.append(packet(i, boxes) if i % 3 == 0 else skipped(i))
    out = run_stage("track", packets, {"min_hits": 1})
    assert {p.index: [f.box for f in p.faces if f.box[1] == 420] for p in out[9:12]} == {
        i: [(405, 420, 90, 90)] for i in (9, 10, 11)}


def passing(frames: int, per_run: int, ahead: int, row: int) -> list[Packet]:
    """Two people passing, 90 px faces, the detector on every third frame: A walks right along
    row 300 at ``per_run`` px a detector run; B comes into view at frame 30, ``ahead`` px ahead of
    A, along ``row``, and walks left as fast."""
    packets = []
    for i in range(frames):
        xs = {300: 50 + per_run * i // 3}
        if i >= 30:
            xs[row] = 50 + per_run * 30 // 3 + ahead - per_run * (i - 30) // 3
        boxes = sorted((x, y, 90, 90) for y, x in xs.items() if -45 < x < 1235)
        packets.append(packet(i, boxes) if i % 3 == 0 else skipped(i))
    return packets


@pytest.mark.parametrize("min_hits", [1, 3])
def test_a_face_coming_into_view_beside_a_walker_that_walks_the_other_way_keeps_one_id(min_hits: int) -> None:
    """Two people passing, 90 px faces at 68 px a detector run (every third frame): B comes into
    view 220 px ahead of A and 120 px lower. Started at A's speed, B's track was a run of A's
    speed off: each detection started a new track (five ids with min_hits 1), and B's id came
    12 frames late (s52d 1). It is matched where it was first seen too."""
    rows: dict[int, dict[int, int]] = {}
    for p in run_stage("track", passing(120, 68, 220, 420), {"min_hits": min_hits}):
        for face in p.faces:
            if face.track_id is not None:
                rows.setdefault(face.box[1], {}).setdefault(face.track_id, p.index)
    assert rows == {300: {1: 3 * (min_hits - 1)}, 420: {2: 30 + 3 * (min_hits - 1)}}


def test_with_max_jump_0_a_face_coming_into_view_beside_a_walker_is_matched_where_it_was_seen() -> None:
    """With ``max_jump: 0`` (overlap alone) the match at a new track's first place is its only
    one: B, coming into view beside A and walking the other way at 40 px a detector run, was
    given a new id at every run without it, which no test showed (s53d 4b)."""
    rows: dict[int, set[int]] = {}
    for p in run_stage("track", passing(90, 40, 150, 400), {"min_hits": 1, "max_jump": 0}):
        for face in p.faces:
            rows.setdefault(face.box[1], set()).add(face.track_id)
    assert rows == {300: {1}, 400: {2}}


def test_a_false_hit_beside_a_missed_face_or_its_neighbour_takes_no_id_by_distance() -> None:
    """Matching by distance is for tracks without an id: a track with one moved onto a false hit
    85 px beside its still face on the run the detector missed it, drifted off with it, and the
    face came back as id 2; a face that moved towards its neighbour on the run the neighbour was
    missed took the neighbour's id (s51e 1, 2)."""
    still = (100, 100, 100, 100)
    out = run_stage("track", [packet(i, [(185, 100, 90, 90)] if i == 15 else [still]) if i % 3 == 0 else skipped(i)
                              for i in range(40)])
    assert ids(out)[15] == [None] and {f.track_id for p in out[18:] for f in p.faces} == {1}
    packets = []
    for i in range(0, 45, 3):
        a = (100, 100, 100, 100) if i < 15 else (180, 140, 100, 100)
        packets += [packet(i, sorted([a] if i == 15 else [a, (210, 100, 100, 100)])), skipped(i + 1), skipped(i + 2)]
    out = run_stage("track", packets)
    assert {f.track_id for p in out[18:] for f in p.faces if f.box[0] == 210} == {2}
    assert 2 not in {f.track_id for p in out[15:] for f in p.faces if f.box[0] == 180}


def test_a_face_too_far_or_of_another_size_is_not_matched_by_distance() -> None:
    """Matching by distance is for the same face moved: one beyond max_jump face sizes from the
    new track's place, or half or twice its size (another person, nearer the camera), starts a
    track of its own. A track that takes the box has its fifth hit, and its id, on frame 4."""
    first = [packet(i, [(100, 100, 100, 100)]) for i in range(3)]

    def id_on_frame_4(box: tuple[int, int, int, int], **params) -> list[int | None]:
        return ids(run_stage("track", first + [packet(i, [box]) for i in range(3, 8)], {"min_hits": 5, **params}))[4]

    for box in [(260, 100, 100, 100), (110, 110, 200, 200), (170, 120, 50, 50)]:
        assert id_on_frame_4(box) == [None], box
    near = (190, 100, 100, 100)
    assert id_on_frame_4(near) == [1]
    assert id_on_frame_4(near, max_jump=0.0) == [None]


def test_frames_dropped_by_a_live_source_are_predicted_over() -> None:
    """A face moving 8 px a frame with frames 10-19 lost (a live source's full queue): the
    filter steps over the frame numbers missed, so the face is met where it now is and keeps
    its id; predicted one frame on, it was missed and its episode split in two (s38c)."""
    out = run_stage("track", [packet(i, [(100 + 8 * i, 200, 48, 48)]) for i in [*range(10), *range(20, 30)]],
                    {"min_hits": 1})
    assert ids(out) == [[1]] * 20


def test_a_face_that_walked_on_through_frames_a_recording_lost_keeps_its_id() -> None:
    """Its frames numbered one after another, as every source numbers what it hands on, with
    0.48 s missing from its timestamps: predicted one frame on, the face was met half its width
    away, got a new id, and its episode was split in two (s63c 1)."""
    times = [i / FPS if i < 15 else (i + 12) / FPS for i in range(30)]
    packets = [Packet("cam", i, t, faces=[Face((100 + round(6 * t * FPS), 200, 130, 130))])
               for i, t in enumerate(times)]
    out = run_stage("track", packets, {"min_hits": 1})
    assert ids(out) == [[1]] * 30


def test_a_cameras_bursts_and_a_still_face_over_a_stall_make_no_new_id() -> None:
    """Frames dated as they come: a connect's burst (five 1 ms apart), then pairs that come
    together, then a still face over a 2 s stall, its box jittering as the cascade's do. My
    first answer to s63c 1, predicting over the time a gap held, gave each of these a new id
    or none (s63d 1)."""
    for seed in range(10):
        rng = np.random.default_rng(seed)
        times = [0.001 * i for i in range(5)]
        times += [times[-1] + k / 24 for k in range(1, 40)]  # walking at 24 fps
        times += [times[-1] + k / 12 + (0.001 if j else 0.0) for k in range(1, 20) for j in (0, 1)]  # in pairs
        walked = len(times)
        times += [times[-1] + k / 24 for k in range(1, 20)]  # stopped
        times += [times[-1] + 2.0 + k / 24 for k in range(20)]  # after a 2 s stall
        packets = []
        for i, t in enumerate(times):
            x = 100 + 5 * min(i, walked) + rng.normal(0, 2)
            box = (round(x), round(200 + rng.normal(0, 2)), round(60 + rng.normal(0, 1)), 60)
            packets.append(Packet("cam", i, t, faces=[Face(box)]))
        out = run_stage("track", packets, {})
        assert {i for p in out[2:] for i in ids([p])[0]} == {1}, seed


def test_a_cameras_frames_in_groups_make_no_hole_that_moves_a_track_onto_a_false_hit() -> None:
    """A 25 fps camera whose frames come four at a time, dated as they come, and one frame where
    the cascade misses the face and fires on the wall beside it: the mean of the gaps made a hole
    of every group, and the track was moved onto the false hit, the face's id lost (s63f 1)."""
    times = [0.16 * (i // 4) + 0.001 * (i % 4) for i in range(120)]
    packets = [Packet("cam", i, t, faces=[Face((242, 200, 60, 60) if i == 60 else (200, 200, 60, 60))],
                      extra={"fps": 25.0}) for i, t in enumerate(times)]
    out = run_stage("track", packets, {})
    assert {i for p in out[2:] if p.index != 60 for i in ids([p])[0]} == {1}


def test_sources_are_tracked_separately() -> None:
    packets = []
    for i in range(6):
        packets += [packet(i, [(100, 100, 80, 80)], "cam1"), packet(i, [(100, 100, 80, 80)], "cam2")]
    out = run_stage("track", packets, {"min_hits": 1})
    assert {(p.source, f.track_id) for p in out for f in p.faces} == {("cam1", 1), ("cam2", 1)}


def test_skipped_frames_carry_predicted_boxes_with_their_ids() -> None:
    # the detector runs on every 4th frame only; the face moves 5 px per frame to the right
    def truth(i: int) -> tuple[int, int, int, int]:
        return (50 + 5 * i, 120, 100, 100)

    packets = [packet(i, [truth(i)]) if i % 4 == 0 else skipped(i) for i in range(60)]
    out = run_stage("track", packets, {"min_hits": 2, "max_age": 1})
    for p in out[8:]:
        assert len(p.faces) == 1, f"frame {p.index}: the track must not end on skipped frames"
        face = p.faces[0]
        assert face.track_id == 1
        assert face.extra.get("predicted", False) == (p.index % 4 != 0)
        if p.index >= 24:  # the filter has learnt the velocity: boxes follow the face between detections
            assert abs(face.box[0] - truth(p.index)[0]) <= 6, (p.index, face.box)
            assert iou_matrix(np.array([face.box], float), np.array([truth(p.index)], float))[0, 0] > 0.8
    assert not any("track_lost" in p.extra for p in out)


def test_faces_carried_over_skipped_frames_are_numbered_left_to_right_like_detections() -> None:
    """Two faces cross; the detector, on every 2nd frame, lists them left to right. The carried
    boxes come out in the same order, not in track order, so the CSV's face number means the
    same on every frame."""
    def boxes(i: int) -> list[tuple[int, int, int, int]]:
        return sorted([(10 + 12 * i, 20, 80, 80), (490 - 12 * i, 200, 80, 80)])

    packets = [packet(i, boxes(i)) if i % 2 == 0 else skipped(i) for i in range(40)]
    out = run_stage("track", packets, {"min_hits": 2, "max_age": 1})
    carried = [p for p in out[4:] if p.index % 2]
    assert all(len(p.faces) == 2 for p in carried)
    assert all(p.faces[0].box[0] <= p.faces[1].box[0] for p in carried)
    assert {p.faces[0].track_id for p in carried} == {1, 2}  # the order is not the tracks' order


def test_skipped_frames_show_only_confirmed_tracks_seen_at_the_last_detection() -> None:
    tracker = make_stage("track", {"min_hits": 3, "max_age": 5})
    packets = [packet(0, [(0, 0, 50, 50), (300, 0, 50, 50)]), packet(1, [(0, 0, 50, 50), (300, 0, 50, 50)]),
               packet(2, [(0, 0, 50, 50), (300, 0, 50, 50), (150, 200, 50, 50)]),  # third: tentative
               packet(3, [(300, 0, 50, 50), (150, 200, 50, 50)]),                   # first face missed
               skipped(4)]
    out = run_stage(tracker, packets)
    assert [f.track_id for f in out[4].faces] == [2]
    assert out[4].faces[0].box == (300, 0, 50, 50)


def test_a_frame_without_detector_output_is_treated_as_skipped() -> None:
    packets = [packet(i, [(100, 100, 80, 80)]) for i in range(3)]
    packets.append(Packet("cam", 3, 3 / FPS, faces=None))
    out = run_stage("track", packets, {"min_hits": 1})
    assert [f.track_id for f in out[3].faces] == [1]


@pytest.mark.parametrize("start, step, cut", [
    ((300, 200), (12, 0), lambda x, y, w, h: x + w == 640),
    ((276, 200), (-12, 0), lambda x, y, w, h: x == 0),
    ((300, 140), (0, 12), lambda x, y, w, h: y + h == 480),  # s38c: the height's half of the check was untested
    ((300, 276), (0, -12), lambda x, y, w, h: y == 0)], ids=["right", "left", "down", "up"])
def test_a_face_leaving_the_frame_between_detections_is_cut_to_the_frame_then_dropped(start, step, cut) -> None:
    """The detector looks at every frame while the track forms, then at none (every_n large):
    the face, moving towards an edge at 12 px a frame, is carried past it by its velocity. Before,
    its predicted box ran off the frame and its crop came out empty, which OpenCV refuses: the
    classifier failed the run."""
    from fer_pipe.preprocess import crop_faces

    image = np.zeros((480, 640, 3), np.uint8)
    packets = [Packet("cam", i, i / FPS, image, faces=[Face((start[0] + step[0] * i, start[1] + step[1] * i, 64, 64))])
               for i in range(10)]
    packets += [Packet("cam", i, i / FPS, image, faces=[], extra={"detected": False}) for i in range(10, 40)]
    out = run_stage("track", packets, {"min_hits": 3})
    carried = [p.faces[0].box if p.faces else None for p in out[10:]]
    assert all(0 <= x and x + w <= 640 and 0 <= y and y + h <= 480 and w > 0 and h > 0
               for x, y, w, h in filter(None, carried))
    assert carried[15] is not None and cut(*carried[15])  # cut at the edge
    assert carried[-1] is None  # wholly out of view by then
    assert [i for i, box in enumerate(carried) if box is None] == list(range(carried.index(None), 30))
    for p in out:
        crop_faces(p.pixels(), [f.box for f in p.faces])  # every carried face can be classified
