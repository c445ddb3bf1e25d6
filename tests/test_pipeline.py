"""End to end: a real multi-process graph on real face clips, checked frame by frame."""
from __future__ import annotations

import csv
import resource
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import fer_pipe, read_frames, write_video
from fer_pipe.config import load_graph
from fer_pipe.events import FRAME_COLUMNS
from fer_pipe.runner import Runner

FACE_FRAMES = 30
EMPTY_FRAMES = 20


@pytest.fixture(scope="module")
def face_then_empty(clips, tmp_path_factory):
    """30 frames of a woman's face, then 20 frames of a scene with no face, at 640x360."""
    faces = read_frames(clips["WolfgangLanger_Pexels.mp4"], FACE_FRAMES)
    empty = [cv2.resize(f, (640, 360)) for f in read_frames(clips["no_face.mp4"], EMPTY_FRAMES)]
    return write_video(tmp_path_factory.mktemp("clip") / "face_then_empty.avi", faces + empty)


def graph_for(video, out_csv, **detector):
    return load_graph({"queue_size": 4, "stages": {
        "source": {"type": "video", "params": {"path": str(video)}},
        "detector": {"type": "haar", "inputs": ["source"], "params": detector},
        "classifier": {"type": "classifier", "inputs": ["detector"]},
        "csv": {"type": "csv", "inputs": ["classifier"], "params": {"path": str(out_csv)}},
    }})


def read_rows(path):
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        return header, [dict(zip(header, row)) for row in reader]


def test_every_frame_once_in_order_with_faces_where_the_clip_has_them(face_then_empty, tmp_path):
    out = tmp_path / "out.csv"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = Runner(graph_for(face_then_empty, out), progress=False).run()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert result.exit_code == 0, result.message
    header, rows = read_rows(out)
    assert header == FRAME_COLUMNS
    frames = [int(r["frame"]) for r in rows]
    assert frames == sorted(frames)
    assert sorted(set(frames)) == list(range(FACE_FRAMES + EMPTY_FRAMES))
    by_frame = {}
    for r in rows:
        by_frame.setdefault(int(r["frame"]), []).append(r)
    with_face = [f for f, rs in by_frame.items() if rs[0]["label"]]
    assert all(len(rs) == 1 for f, rs in by_frame.items() if f >= FACE_FRAMES), "faces in an empty scene"
    assert set(with_face) <= set(range(FACE_FRAMES))
    assert len(with_face) >= FACE_FRAMES - 2
    for f in with_face:
        for r in by_frame[f]:
            probs = [float(r[c]) for c in FRAME_COLUMNS if c.startswith("p_")]
            assert abs(sum(probs) - 1.0) < 1e-2
            assert r["label"] == FRAME_COLUMNS[FRAME_COLUMNS.index("p_angry") + int(np.argmax(probs))][2:]
            x, y, w, h = (int(r[k]) for k in "xywh")
            assert 150 < x + w / 2 < 500 and w > 60  # the woman's face is in the middle of the frame
    stats = {s["stage"]: s for s in result.stats}
    assert stats["source"]["items"] == FACE_FRAMES + EMPTY_FRAMES
    assert stats["csv"]["items"] == FACE_FRAMES + EMPTY_FRAMES
    assert all(s["dropped"] == 0 for s in result.stats)
    # Each stage reports its own process's CPU time: together no more than the kernel counts for
    # the stage processes (their parent's time, or wall time, would be more). Which stage costs
    # most is left out: start-up dominates on a clip this short, and it varies with the load.
    assert all(s["cpu_s"] > 0 for s in result.stats)
    children = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    assert sum(s["cpu_s"] for s in result.stats) <= children + 0.01, (result.stats, children)


def test_several_workers_write_what_one_process_writes_in_the_same_order(face_then_empty, tmp_path):
    """The detector on 2 processes and the classifier on 3 (one number of workers feeding another,
    queues of 2 so the dealing blocks often): the CSV is byte for byte the single-process one."""
    one, several = tmp_path / "one.csv", tmp_path / "several.csv"
    assert Runner(graph_for(face_then_empty, one), progress=False).run().exit_code == 0
    graph = graph_for(face_then_empty, several)
    graph.queue_size = 2
    graph.stages["detector"].workers = 2
    graph.stages["classifier"].workers = 3
    result = Runner(graph, progress=False).run()
    assert result.exit_code == 0, result.message
    assert several.read_text() == one.read_text()
    stats = {s["stage"]: s["items"] for s in result.stats}
    assert list(stats) == ["source", "detector[0]", "detector[1]", "classifier[0]", "classifier[1]",
                           "classifier[2]", "csv"]
    assert stats["detector[0]"] == stats["detector[1]"] == (FACE_FRAMES + EMPTY_FRAMES) // 2
    assert sum(stats[f"classifier[{i}]"] for i in range(3)) == FACE_FRAMES + EMPTY_FRAMES


def test_a_last_stage_with_several_workers_runs_to_the_end(face_then_empty):
    """A graph may end at a parallel stage (a benchmark of the detector): the runner follows the
    progress of its workers, not of a process named after the stage (a KeyError and a traceback)."""
    graph = load_graph({"stages": {
        "source": {"type": "video", "params": {"path": str(face_then_empty)}},
        "detector": {"type": "haar", "inputs": ["source"], "workers": 2},
    }})
    result = Runner(graph, progress=True).run()
    assert result.exit_code == 0, result.message + result.traceback
    stats = {s["stage"]: s["items"] for s in result.stats}
    assert stats["detector[0]"] + stats["detector[1]"] == FACE_FRAMES + EMPTY_FRAMES
    assert result.first_result_s is not None


def test_workers_are_set_from_the_command_line(face_then_empty, tmp_path):
    from conftest import REPO

    out = tmp_path / "cli.csv"
    done = fer_pipe("run", str(REPO / "configs" / "video_to_csv.yaml"), "--set", f"source.path={face_then_empty}",
                    "--set", f"csv.path={out}", "--set", "source.max_frames=10", "--set", "detector.workers=3")
    assert done.returncode == 0, done.stderr
    assert [int(r["frame"]) for r in read_rows(out)[1]] == list(range(10))
    assert "detector[2]" in done.stderr and "detector[3]" not in done.stderr  # the config says 2


def test_fan_out_feeds_both_sinks_the_same_rows(face_then_empty, tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    graph = load_graph({"stages": {
        "source": {"type": "video", "params": {"path": str(face_then_empty), "max_frames": 12}},
        "detector": {"type": "haar", "inputs": ["source"]},
        "classifier": {"type": "classifier", "inputs": ["detector"]},
        "csv": {"type": "csv", "inputs": ["classifier"], "params": {"path": str(a)}},
        "copy": {"type": "csv", "inputs": ["classifier"], "params": {"path": str(b)}},
    }})
    assert Runner(graph, progress=False).run().exit_code == 0
    assert a.read_text() == b.read_text()
    assert len(read_rows(a)[1]) >= 12


def test_a_detection_only_graph_writes_its_boxes_without_a_classifier(face_then_empty, tmp_path):
    """The sinks declared they read expressions, though each writes faces without them: haar into
    csv or video_writer was refused, and a user ran the classifier only to be let through (s66a 2).
    The boxes are the classified run's, the label columns empty; the video has every frame."""
    bare, classified, video = tmp_path / "bare.csv", tmp_path / "classified.csv", tmp_path / "boxes.mp4"
    graph = load_graph({"stages": {
        "source": {"type": "video", "params": {"path": str(face_then_empty), "max_frames": 12}},
        "detector": {"type": "haar", "inputs": ["source"]},
        "csv": {"type": "csv", "inputs": ["detector"], "params": {"path": str(bare)}},
        "video": {"type": "video_writer", "inputs": ["detector"], "params": {"path": str(video)}},
        "classifier": {"type": "classifier", "inputs": ["detector"]},
        "labelled": {"type": "csv", "inputs": ["classifier"], "params": {"path": str(classified)}},
    }})
    assert Runner(graph, progress=False).run().exit_code == 0
    boxes, labelled = read_rows(bare)[1], read_rows(classified)[1]
    place = FRAME_COLUMNS[:FRAME_COLUMNS.index("label")]  # source, frame, timestamp, face, box, track_id
    assert [[row[c] for c in place] for row in boxes] == [[row[c] for c in place] for row in labelled]
    assert sum(bool(row["face"]) for row in boxes) >= 6
    assert {row[c] for row in boxes for c in FRAME_COLUMNS[len(place):]} == {""}
    assert all(row["label"] for row in labelled if row["face"])
    assert len(read_frames(video)) == 12


def test_a_branch_that_changes_packets_leaves_the_other_branch_alone_in_and_out_of_process(face_then_empty,
                                                                                          tmp_path):
    """classifier feeds a smoother (on one branch) and a csv sink (on another). Between processes
    each gets its own copy; in one process (run_graph: batch tasks) the smoother used to fill
    the csv's smoothed columns, and run_stage changed the caller's packets."""
    from fer_pipe.inprocess import run_graph, run_stage

    def config(out):
        return {"stages": {
            "source": {"type": "video", "params": {"path": str(face_then_empty), "max_frames": 20}},
            "detector": {"type": "haar", "inputs": ["source"]},
            "tracker": {"type": "track", "inputs": ["detector"]},
            "classifier": {"type": "classifier", "inputs": ["tracker"]},
            "smoother": {"type": "smooth", "inputs": ["classifier"]},
            "episodes": {"type": "episodes", "inputs": ["smoother"], "params": {"path": "/dev/null"}},
            "csv": {"type": "csv", "inputs": ["classifier"], "params": {"path": str(out)}},
        }}

    apart, together = tmp_path / "apart.csv", tmp_path / "together.csv"
    assert Runner(load_graph(config(apart)), progress=False).run().exit_code == 0
    run_graph(load_graph(config(together)))
    assert together.read_text() == apart.read_text()
    rows = read_rows(together)[1]
    assert any(r["track_id"] for r in rows) and not any(r["smoothed_label"] for r in rows)

    frames = run_stage("video", params={"path": str(face_then_empty), "max_frames": 3})
    faces = run_stage("haar", frames)
    assert all(p.faces is None for p in frames) and any(p.faces for p in faces)


def test_run_stage_and_run_graph_keep_each_frame_of_a_source_that_reuses_its_buffer():
    """A source may draw each frame into one array (as cap.read(buf) does): a run's ring copies
    each, but run_stage and run_graph kept the array itself, so every frame it gave back, or a
    stage kept, had the last's pixels."""
    from fer_pipe.config import build_graph
    from fer_pipe.inprocess import run_graph, run_stage
    from fer_pipe.messages import FRAME, Packet
    from fer_pipe.registry import registry
    from fer_pipe.stage import Sink, Source

    class Reusing(Source):
        def frames(self):
            buffer = np.zeros((8, 8, 3), np.uint8)
            for i in range(4):
                buffer[...] = i
                yield Packet(self.source_id, i, i / 25, buffer)

    kept = []

    class Keeping(Sink):
        reads = FRAME

        def consume(self, packet):
            kept.append(packet.pixels())

    class Fresh(Reusing):  # a false promise, so that the copy it saves shows
        fresh_frames = True

    assert [int(p.pixels()[0, 0, 0]) for p in run_stage(Reusing, params={})] == [0, 1, 2, 3]
    assert [int(p.pixels()[0, 0, 0]) for p in run_stage(Fresh, params={})] == [3, 3, 3, 3]
    registry().types.update(reusing=Reusing, fresh=Fresh, keeping=Keeping)
    try:
        for source in ("reusing", "fresh"):
            run_graph(build_graph({"stages": {"s": {"type": source}, "k": {"type": "keeping", "inputs": ["s"]}}},
                                  {}, "<dict>"))
    finally:
        del registry().types["reusing"], registry().types["fresh"], registry().types["keeping"]
    # a source declaring fresh_frames (video, image_folder: OpenCV makes a new array a frame) is not
    # copied, which was 0.2 ms a 720p frame in every batch task (s50a 1)
    assert [int(pixels[0, 0, 0]) for pixels in kept] == [0, 1, 2, 3, 3, 3, 3, 3]


def test_a_ctrl_c_in_one_close_of_run_graph_closes_the_others_and_says_their_failures(capsys):
    """A KeyboardInterrupt in one stage's close (a host's Ctrl-C, a Ray cancel's) left every stage
    closed after it unclosed (s60b 2), and then the other closes' failures went unsaid (s60f 6):
    the interrupt goes on once every stage is closed, the failures said before it."""
    from fer_pipe.config import build_graph
    from fer_pipe.inprocess import run_graph
    from fer_pipe.messages import FRAME, Packet
    from fer_pipe.registry import registry
    from fer_pipe.stage import Sink, Source

    closed = []

    class Two(Source):
        def frames(self):
            for i in range(2):
                yield Packet(self.source_id, i, i / 25, np.zeros((8, 8, 3), np.uint8))

        def close(self):
            closed.append("source")

    class Failing(Sink):
        reads = FRAME

        def consume(self, packet):
            pass

        def close(self):
            closed.append(self.name)
            raise RuntimeError("upload failed")

    class Interrupted(Failing):
        def close(self):
            closed.append(self.name)
            raise KeyboardInterrupt

    registry().types.update(two=Two, failing=Failing, interrupted=Interrupted)
    try:  # closed the last first: interrupted, then failing, then the source
        graph = build_graph({"stages": {"s": {"type": "two"}, "f": {"type": "failing", "inputs": ["s"]},
                                        "i": {"type": "interrupted", "inputs": ["s"]}}}, {}, "<dict>")
        with pytest.raises(KeyboardInterrupt):
            run_graph(graph)
    finally:
        del registry().types["two"], registry().types["failing"], registry().types["interrupted"]
    assert closed == ["i", "f", "source"]
    assert capsys.readouterr().err == ("fer-pipe: also, stage 'f' (failing) failed: while closing: RuntimeError: "
                                       "upload failed\n")


def test_run_stage_refuses_an_output_path_holding_a_control_character_as_a_config_does(tmp_path):
    """A Python string's backslash escapes as double-quoted YAML's does: run_stage("csv", ...,
    params={"path": "res\\new.csv"}) wrote a file whose name holds a line feed (s50j 2)."""
    from fer_pipe.errors import ConfigError
    from fer_pipe.inprocess import run_stage

    with pytest.raises(ConfigError, match=r"^params.path: the path holds a control character \(\\n\)"):
        run_stage("csv", [], {"path": str(tmp_path / "res\new.csv")})
    assert not list(tmp_path.iterdir())


def test_run_stage_names_an_unknown_type():
    from fer_pipe.errors import ConfigError
    from fer_pipe.inprocess import run_stage

    with pytest.raises(ConfigError, match=r"^unknown stage type 'hear' \(did you mean 'haar'\?\) \(known: "
                                          r"classifier, csv, .*haar"):
        run_stage("hear", [])


def test_run_stage_refuses_params_for_a_stage_already_made():
    """Before, the params were dropped silently and the stage ran with those it was made with."""
    from fer_pipe.inprocess import make_stage, run_stage

    with pytest.raises(TypeError, match=r"^run_stage: stage 'haar' is already made with its params"):
        run_stage(make_stage("haar"), [], {"min_size": 30})


def test_run_stage_checks_a_stages_files_and_expands_their_tilde_as_a_run_does(tmp_path, monkeypatch):
    """A plug-in sink given ~/x.jsonl, or a folder that is not there, worked or failed in one line
    (exit 2) in a run, and met a bare FileNotFoundError under run_stage: neither the ~ nor the
    stage's preflight were done there. The folders of its output_paths are checked with no code
    of its own: a sink that did not call check_writable itself failed after every stage had
    started (s50f 3). Only the folders: a plug-in may name a folder it fills, or a URL (s50g 3)."""
    from fer_pipe.errors import InputError
    from fer_pipe.inprocess import run_stage
    from fer_pipe.messages import FRAME, Packet
    from fer_pipe.stage import Sink, StageParams

    class PathParams(StageParams):
        path: str

    class Jsonl(Sink):
        Params = PathParams
        reads = FRAME
        output_paths = ("path",)

        def open(self):
            self._file = open(self.params.path, "w")

        def consume(self, packet):
            self._file.write("{}\n")

        def close(self):
            self._file.close()

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    run_stage(Jsonl, [Packet("cam", 0, 0.0)], {"path": "~/x.jsonl"})
    assert (tmp_path / "x.jsonl").read_text() == "{}\n"
    with pytest.raises(InputError, match=r"^jsonl .*/nope/x.jsonl: folder .*/nope does not exist$"):
        run_stage(Jsonl, [], {"path": str(tmp_path / "nope" / "x.jsonl")})

    class Crops(Sink):  # writes into a folder, or a bucket: tried by nothing but its own code
        Params = PathParams
        reads = FRAME
        output_paths = ("path",)

        def consume(self, packet):
            pass

    for path in (str(tmp_path), "s3://bucket/crops/"):
        run_stage(Crops, [Packet("cam", 0, 0.0)], {"path": path})


@pytest.mark.parametrize("where", ["process", "finish", "close"])
def test_run_stage_hands_back_what_the_stage_emitted_before_it_raised(where):
    """A failure kept nothing: the frames read before a video's cut, or a close that failed
    after every packet was handled, lost all the stage had given (s42a, s43d)."""
    from fer_pipe.inprocess import run_stage
    from fer_pipe.messages import FRAME, Packet
    from fer_pipe.stage import Stage

    class Failing(Stage):
        reads = writes = FRAME

        def process(self, packet):
            if where == "process" and packet.index == 3:
                raise ValueError("on frame 3")
            return (packet,)

        def finish(self):
            if where == "finish":
                raise ValueError("in finish")
            return ()

        def close(self):
            if where == "close":
                raise ValueError("in close")

    with pytest.raises(ValueError) as failed:
        run_stage(Failing, [Packet("cam", i, i / 25) for i in range(5)])
    assert [p.index for p in failed.value.emitted] == ([0, 1, 2] if where == "process" else [0, 1, 2, 3, 4])


def test_run_stage_gives_the_stage_read_only_pixels_as_a_run_does():
    """A stage writing into the frame fails under the runner (shared memory is read-only), so
    it must fail under run_stage too; before, it passed there and changed the caller's array."""
    from fer_pipe.inprocess import run_stage
    from fer_pipe.messages import Packet
    from fer_pipe.stage import Stage

    class Painter(Stage):
        def process(self, packet):
            packet.pixels()[:2, :2] = 0
            return (packet,)

    class Scribbler(Stage):
        def process(self, packet):
            packet.image[:2, :2] = 0
            return (packet,)

    class Unlocker(Stage):  # as users of torch.from_numpy do: it passed, and changed the caller's array (s49c 1)
        def process(self, packet):
            pixels = packet.pixels()
            pixels.flags.writeable = True
            pixels[:2, :2] = 0
            return (packet,)

    image = np.full((8, 8, 3), 200, np.uint8)
    for stage in (Painter, Scribbler, Unlocker):
        with pytest.raises(ValueError, match="read-only|cannot set WRITEABLE flag"):
            run_stage(stage, [Packet("cam", 0, 0.0, image)])
    assert (image == 200).all()


def test_run_stage_numbers_a_sources_packets_on_from_its_last_frame_not_an_outage():
    """An outage packet numbered wrong after an outage before the first frame was said "after
    frame -1" by run_stage and run_graph, and "before any frame" by a run (s37c)."""
    from fer_pipe.inprocess import run_stage
    from fer_pipe.messages import Packet, outage
    from fer_pipe.stage import Source

    class Flaky(Source):
        def frames(self):
            yield outage(self.source_id, -1, 0.0)
            yield Packet(self.source_id, 0, 0.1, np.zeros((4, 4, 3), np.uint8))
            yield outage(self.source_id, 0, 0.2)
            yield Packet(self.source_id, 1, 0.3, np.zeros((4, 4, 3), np.uint8))

    assert [(p.index, p.outage) for p in run_stage(Flaky)] == [(-1, True), (0, False), (0, True), (1, False)]

    class Misnumbered(Source):
        def frames(self):
            yield outage(self.source_id, -1, 0.0)
            yield outage(self.source_id, 0, 0.1)

    with pytest.raises(TypeError, match="an outage packet numbered 0 before any frame"):
        run_stage(Misnumbered)


def test_run_stage_keeps_what_a_stage_gave_before_it_ended_the_run_and_finishes_it():
    """A StopRun escaped run_stage, with what the stage had given and without its finish, where
    a run ends cleanly on it (s37a)."""
    from fer_pipe.inprocess import run_stage
    from fer_pipe.messages import Packet
    from fer_pipe.stage import Source, Stage, StopRun

    class Enough(Stage):
        def process(self, packet):
            if packet.index == 2:
                raise StopRun("enough")
            return (packet,)

        def finish(self):
            return (Packet("cam", 99, 9.9),)

    assert [p.index for p in run_stage(Enough, [Packet("cam", i, i / 10) for i in range(5)])] == [0, 1, 99]

    class Short(Source):
        def frames(self):
            yield Packet(self.source_id, 0, 0.0, np.zeros((4, 4, 3), np.uint8))
            raise StopRun("enough")

    assert [p.index for p in run_stage(Short)] == [0]


def test_run_graph_gives_every_branch_read_only_pixels_as_a_run_does():
    """The first (here the only) branch of a source got the source's own writable array, the
    others read-only views of it: a stage there could paint into the frame the others then
    read, and pass here to fail in a run."""
    from fer_pipe.graph import Graph, StageSpec
    from fer_pipe.inprocess import run_graph
    from fer_pipe.messages import Packet
    from fer_pipe.stage import Source, Stage, StageFailure, StageParams

    class Frames(Source):
        def frames(self):
            yield Packet("cam", 0, 0.0, np.full((8, 8, 3), 200, np.uint8))

    class Scribbler(Stage):
        def process(self, packet):
            packet.image[:2, :2] = 0
            return ()

    params = StageParams()
    graph = Graph({"cam": StageSpec("cam", "frames", Frames, params),
                   "paint": StageSpec("paint", "scribbler", Scribbler, params, ["cam"])})
    with pytest.raises(StageFailure, match=r"^stage 'paint' \(scribbler\) failed: on cam frame 0: ValueError: "
                                            ".*read-only") as failed:
        run_graph(graph)
    assert isinstance(failed.value.__cause__, ValueError)


def test_run_graph_says_the_first_ten_skips_of_each_stage(capfd):
    """In one process (a batch task) the count was the graph's: once one stage had skipped ten
    packets, another stage's skips were never said (s24f)."""
    from fer_pipe.graph import Graph, StageSpec
    from fer_pipe.inprocess import run_graph
    from fer_pipe.messages import Packet
    from fer_pipe.stage import Source, Stage, StageParams

    class Frames(Source):
        def frames(self):
            for i in range(30):
                yield Packet("cam", i, i / 25)

    class Early(Stage):
        def process(self, packet):
            if packet.index < 12:
                raise ValueError("early")
            return [packet]

    class Late(Stage):
        def process(self, packet):
            if packet.index in (20, 21):
                raise ValueError("late")
            return ()

    params = StageParams()
    graph = Graph({"cam": StageSpec("cam", "frames", Frames, params),
                   "a": StageSpec("a", "early", Early, params, ["cam"], "skip"),
                   "b": StageSpec("b", "late", Late, params, ["a"], "skip")})
    assert run_graph(graph).skipped == 14
    said = capfd.readouterr().err.splitlines()
    assert said == [f"fer-pipe: stage 'a' skipped cam frame {i}: ValueError: early" for i in range(10)] + [
        "fer-pipe: stage 'a': further packets it skips are counted in its skipped column, not said one by one",
        "fer-pipe: stage 'b' skipped cam frame 20: ValueError: late",
        "fer-pipe: stage 'b' skipped cam frame 21: ValueError: late"]


def test_cli_run_with_overrides(face_then_empty, tmp_path):
    from conftest import REPO

    out = tmp_path / "cli.csv"
    done = fer_pipe("run", str(REPO / "configs" / "video_to_csv.yaml"), "--set", f"source.path={face_then_empty}",
                    "--set", f"csv.path={out}", "--set", "source.max_frames=10")
    assert done.returncode == 0, done.stderr
    assert sorted({int(r["frame"]) for r in read_rows(out)[1]}) == list(range(10))
    assert "items/s" in done.stderr  # the statistics table


def test_missing_video_is_one_line_exit_2(tmp_path):
    from conftest import REPO

    missing = tmp_path / "nope.mp4"
    done = fer_pipe("run", str(REPO / "configs" / "video_to_csv.yaml"), "--set", f"source.path={missing}",
                    "--set", f"csv.path={tmp_path / 'x.csv'}")
    assert done.returncode == 2
    assert done.stderr.strip() == f"fer-pipe: stage 'source' (video): video {missing}: no such file"


def test_image_folder_rows_name_their_image(clips, tmp_path):
    """A frame index alone does not say which photo a row is about: ``csv.extra`` adds the path."""
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    for name, image in zip(["b.png", "a.jpg", "more/c.png"], read_frames(clips["WolfgangLanger_Pexels.mp4"], 3)):
        cv2.imwrite(str(folder / name), image)
    out = tmp_path / "photos.csv"
    config = tmp_path / "photos.yaml"
    config.write_text(f"""\
stages:
  source: {{type: image_folder, params: {{path: {folder}, recursive: true}}}}
  detector: {{type: haar, inputs: [source]}}
  classifier: {{type: classifier, inputs: [detector]}}
  csv: {{type: csv, inputs: [classifier], params: {{path: {out}, extra: [file]}}}}
""")
    done = fer_pipe("run", str(config), "--quiet")
    assert done.returncode == 0, done.stderr
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[-1] == "file"
    assert sorted({(r["frame"], r["file"]) for r in rows}) == [("0", "a.jpg"), ("1", "b.png"), ("2", "more/c.png")]
    assert all(r["label"] for r in rows)
    clash = fer_pipe("validate", str(config), "--set", "csv.extra=[file, label]")
    assert clash.returncode == 2
    assert clash.stderr == "fer-pipe: --set csv.extra=[file, label]: stage 'csv' (csv): params.extra: 'label' is a column already\n"


def test_csv_extra_takes_a_faces_extra_data_before_its_frames(tmp_path, capfd):
    """A plug-in's per-face score (face.extra) reached no output: the csv's extra read the
    frame's data only, and warned that the frame lacked the key the faces had."""
    from fer_pipe.inprocess import run_stage
    from fer_pipe.messages import Face, Packet

    out = tmp_path / "out.csv"
    probs = np.full(7, 1 / 7, np.float32)
    packets = [Packet("cam", 0, 0.0, extra={"file": "a.png"}),  # no face: nothing to say of 'blur' yet
               Packet("cam", 1, 0.1, extra={"file": "b.png"},
                      faces=[Face((0, 0, 9, 9), probs, extra={"blur": 3.5}), Face((20, 0, 9, 9), probs),
                             Face((40, 0, 9, 9), probs, extra={"file": "crop.png"})])]
    run_stage("csv", packets, {"path": str(out), "extra": ["blur", "file"]})
    with open(out, newline="") as fh:
        rows = [(r["frame"], r["face"], r["blur"], r["file"]) for r in csv.DictReader(fh)]
    assert rows == [("0", "", "", "a.png"), ("1", "0", "3.5", "b.png"), ("1", "1", "", "b.png"),
                    ("1", "2", "", "crop.png")]
    assert "WARNING" not in capfd.readouterr().err
    run_stage("csv", packets, {"path": str(out), "extra": ["blurr"]})
    assert capfd.readouterr().err == (
        "fer-pipe: WARNING: csv sink 'csv': the first frame with faces has no extra data 'blurr' on it or its faces "
        "(they have: blur, file); those columns stay empty where a face or its frame lacks it\n")


def test_a_looping_realtime_replay_that_skips_past_the_end_keeps_time_with_its_frames(clips, tmp_path):
    """The replay is held up for 0.4 s (10 frames' time) three frames before the end of a
    30-frame clip: it skips to the frame due then, in the next pass. Each frame's timestamp
    must stay its index over the frame rate; a rewind that went on from the last frame sent
    rather than the last one skipped put every later frame 0.28 s early. The hold comes at the
    first frame from 26 on: a replay already catching up on a loaded machine may skip frame 26
    itself, and then was never held (CI, s29)."""
    import time

    from fer_pipe.inprocess import make_stage

    video = write_video(tmp_path / "clip.avi", read_frames(clips["single_face.mp4"], 30), fps=25)
    source = make_stage("video", {"path": str(video), "realtime": True, "loop": True, "max_frames": 60})
    source.open()
    try:
        got = []
        for packet in source.frames():
            got.append((packet.index, packet.timestamp))
            if packet.index >= 26 and not any(26 <= i for i, _ in got[:-1]):
                time.sleep(0.4)
    finally:
        source.close()
    indexes = [i for i, _ in got]
    assert max(b - a for a, b in zip(indexes, indexes[1:])) >= 5  # it did skip, across the end
    assert source.dropped == 60 - len(got)
    assert all(abs(t - i / 25) < 0.002 for i, t in got), got


@pytest.mark.parametrize("max_frames, length", [(150, 150), (0, None)])
def test_a_looping_replay_gives_the_progress_bar_its_max_frames_or_no_total(short_clip, max_frames, length):
    """A loop reads max_frames frames, or without end: the 60 frames of one pass made the bar
    end at 60 and then run past 100 %."""
    from fer_pipe.inprocess import make_stage

    source = make_stage("video", {"path": str(short_clip), "loop": True, "max_frames": max_frames})
    source.open()
    try:
        assert source.length() == length
    finally:
        source.close()


@pytest.mark.parametrize("start", [60, 500])
def test_a_start_at_or_past_the_end_is_still_an_error_where_preflight_did_not_run(short_clip, start):
    """Only a start within a few frames before the header's end may decode nothing (a batch
    chunk planned from an estimate); in one process, where no preflight runs, a start past the
    end of the 60-frame clip must not pass as a video with no frames."""
    from fer_pipe.errors import InputError
    from fer_pipe.inprocess import make_stage

    source = make_stage("video", {"path": str(short_clip), "start": start})
    source.open()  # as a batch task's run_graph opens it, without preflight (which run_stage runs)
    try:
        with pytest.raises(InputError, match=f"no frame could be decoded from start {start} on"):
            list(source.frames())
    finally:
        source.close()


def test_a_realtime_replay_above_the_paced_bound_neither_waits_nor_skips(clips, tmp_path):
    """A container can report its time base as its frame rate (1000 or 90000); pacing on that
    would skip nearly every frame, so above MAX_PACED_FPS a replay sends each frame as read.
    Held up for 50 ms (50 frames' time at 1000 fps), it must still send all 30 frames."""
    import time

    from fer_pipe.inprocess import make_stage

    video = write_video(tmp_path / "fast.avi", read_frames(clips["single_face.mp4"], 30), fps=1000)
    source = make_stage("video", {"path": str(video), "realtime": True})
    source.open()
    try:
        assert source.fps == 1000
        got = []
        for packet in source.frames():
            got.append(packet.index)
            if packet.index == 5:
                time.sleep(0.05)
    finally:
        source.close()
    assert got == list(range(30)) and source.dropped == 0


def test_the_demo_writes_its_csv_and_video_and_says_what_it_saw(clips, tmp_path):
    """The README's first command ends in fer-pipe demo, and only its failures had a test. The
    clips come from the cache the suite fetched them into, named by FER_PIPE_CACHE (which wins
    over XDG_CACHE_HOME), so nothing is fetched again."""
    out = tmp_path / "out"
    env = {"FER_PIPE_CACHE": str(clips["WolfgangLanger_Pexels.mp4"].parent.parent),
           "XDG_CACHE_HOME": str(tmp_path / "elsewhere")}
    done = fer_pipe("demo", "--quiet", "--out", str(out), env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    header, rows = read_rows(out / "emotions.csv")
    assert header == FRAME_COLUMNS and sorted({int(r["frame"]) for r in rows}) == list(range(472))
    assert len(read_frames(out / "annotated.mp4", 1000)) == 472
    with_face = len({r["frame"] for r in rows if r["label"]})
    assert done.stdout.splitlines()[:2] == [f"demo clip: {clips['WolfgangLanger_Pexels.mp4']}",
                                            f"frames: 472, with a face: {with_face}"]
    assert done.stdout.splitlines()[-1] == f"outputs: {out / 'emotions.csv'}, {out / 'annotated.mp4'}"
    assert not (tmp_path / "elsewhere").exists()


def test_run_stage_warns_where_no_packet_given_to_a_stage_that_reads_faces_had_any():
    """A notebook's face crops given to the classifier as plain packets came back unclassified,
    faces None, without a word, where a run refuses that wiring (s49g 2). One frame without is a
    detection skipped, as the tracker takes it: no warning then."""
    import warnings

    from fer_pipe.inprocess import run_stage
    from fer_pipe.messages import Packet

    crops = [Packet("crops", i, float(i), np.full((64, 64, 3), 120, np.uint8)) for i in range(3)]
    with pytest.warns(RuntimeWarning, match=r"^run_stage: stage 'classifier' reads faces, and none of the 3 "
                                            r"packet\(s\) had faces \(None: no detector had seen them\)") as said:
        out = run_stage("classifier", crops)
    assert said[0].filename == __file__  # said where the caller called it
    assert [p.faces for p in out] == [None, None, None]
    crops[1].faces = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_stage("classifier", crops)


def test_python_dash_m_fer_pipe_runs_the_command_with_its_stage_processes(short_clip, tmp_path):
    """``python -m fer_pipe`` is the command where only an interpreter is at hand: the same
    parser, the same exit codes, a run whose stages start in their own processes."""
    out = tmp_path / "out.csv"
    done = subprocess.run([sys.executable, "-m", "fer_pipe", "run", "configs/video_to_csv.yaml",
                           "--set", f"source.path={short_clip}", "--set", "source.max_frames=5",
                           "--set", f"csv.path={out}"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with out.open(newline="") as f:
        assert {row["frame"] for row in csv.DictReader(f)} == {"0", "1", "2", "3", "4"}
    refused = subprocess.run([sys.executable, "-m", "fer_pipe", "run", "configs/no-such.yaml"],
                             capture_output=True, text=True, timeout=120)
    assert (refused.returncode, refused.stderr.count("\n")) == (2, 1), refused.stderr
    assert refused.stderr.startswith("fer-pipe: ")
