"""Files OpenCV cannot seek in by frame number (MPEG transport and program streams), made by a
real ffmpeg from a real clip: a start frame and a loop read them as a read from the start does."""
from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import ffmpeg

from fer_pipe.inprocess import run_stage
from fer_pipe.seeking import seeks_by_frame


@pytest.fixture(scope="module")
def streams(clips, tmp_path_factory) -> dict[str, Path]:
    """single_face.mp4 (72 frames) as a transport stream, an M2TS and two AVIs, and as an MP4 whose
    second second plays at a quarter of the rate (a phone's in low light), a key frame every 24;
    and two program streams of 1 s joined end to end, as ``cat`` joins a recorder's segments (60
    frames, whose times start again at frame 30)."""
    folder, clip = tmp_path_factory.mktemp("streams"), str(clips["single_face.mp4"])
    made = {name: folder / name for name in ("plain.ts", "plain.m2ts", "plain.avi", "a.mpg", "b.mpg", "raw.h264",
                                             "raw.mjpg", "parts.mjpg", "curl.mjpg", "live.webm", "sound.avi",
                                             "vfr.mp4")}
    ffmpeg("-i", clip, "-an", "-c:v", "libx264", "-f", "mpegts", str(made["plain.ts"]))
    ffmpeg("-i", clip, "-an", "-c:v", "libx264", "-mpegts_m2ts_mode", "1", "-f", "mpegts", str(made["plain.m2ts"]))
    ffmpeg("-i", clip, "-an", "-c:v", "mjpeg", str(made["plain.avi"]))
    ffmpeg("-i", clip, "-c:v", "mjpeg", str(made["sound.avi"]))  # with its sound: an empty "drop" chunk in its index
    ffmpeg("-i", clip, "-t", "1", "-an", "-c:v", "mpeg2video", "-f", "mpeg", str(made["a.mpg"]))
    ffmpeg("-ss", "1", "-i", clip, "-t", "1", "-an", "-c:v", "mpeg2video", "-f", "mpeg", str(made["b.mpg"]))
    ffmpeg("-i", clip, "-an", "-c:v", "libx264", "-f", "h264", str(made["raw.h264"]))
    ffmpeg("-i", clip, "-an", "-c:v", "mjpeg", "-f", "mjpeg", str(made["raw.mjpg"]))
    ffmpeg("-i", clip, "-an", "-c:v", "mjpeg", "-f", "mpjpeg", str(made["curl.mjpg"]))  # curl of a camera's video.mjpg
    made["parts.mjpg"].write_bytes(b"\r\n" + made["curl.mjpg"].read_bytes())  # as an ESP32-CAM's begins (s53g 5)
    ffmpeg("-i", clip, "-an", "-vf", "setpts='if(lt(N,24),N/24,if(lt(N,48),1+(N-24)/8,4+(N-48)/24))/TB'",
           "-fps_mode", "passthrough", "-c:v", "libx264", "-g", "24", str(made["vfr.mp4"]))
    with open(made["live.webm"], "wb") as piped:  # written to a pipe, as a live recorder writes: no index
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", clip, "-an", "-c:v", "libvpx", "-deadline",
                        "realtime", "-f", "webm", "pipe:1"], stdout=piped, check=True, timeout=120)
    made["joined.mpg"] = folder / "joined.mpg"
    made["joined.mpg"].write_bytes(made["a.mpg"].read_bytes() + made["b.mpg"].read_bytes())
    return made


def test_mpeg_streams_are_told_by_their_first_bytes(streams, clips, tmp_path):
    assert not seeks_by_frame(streams["plain.ts"]) and not seeks_by_frame(streams["plain.m2ts"])
    assert not seeks_by_frame(streams["joined.mpg"])
    assert seeks_by_frame(streams["plain.avi"]) and seeks_by_frame(clips["single_face.mp4"])
    assert not seeks_by_frame(streams["vfr.mp4"])  # OpenCV names its key frame 48 by its time at the average rate
    assert seeks_by_frame(clips["no_face.mp4"])  # its last frame lasts longer: its key frames are where they were
    assert not seeks_by_frame(streams["sound.avi"])  # OpenCV's frame numbers count its drop chunk
    renamed = tmp_path / "camera.mp4"  # a camera's ".mp4" that is a transport stream
    renamed.write_bytes(streams["plain.ts"].read_bytes())
    assert not seeks_by_frame(renamed)
    assert seeks_by_frame(tmp_path / "missing.ts")  # its reader says why it cannot be read
    data = streams["plain.ts"].read_bytes()
    for name, cut in (("cut.ts", data[100:]), ("after_junk.ts", bytes(64) + data)):  # not at a packet's start
        (tmp_path / name).write_bytes(cut)
        assert not seeks_by_frame(tmp_path / name), name


def _read(path: Path, **params: object) -> list:
    return run_stage("video", params={"path": str(path), **params})


@pytest.mark.parametrize("name", ["plain.ts", "plain.m2ts", "joined.mpg", "raw.h264", "raw.mjpg", "live.webm",
                                  "plain.avi", "sound.avi", "vfr.mp4"])
def test_a_start_frame_gives_the_frames_a_read_from_the_start_gives(streams, name):
    """OpenCV's seek left a transport stream with no frame to decode ("no frame could be decoded
    from start 20 on", exit 2), and in joined program streams read on only to the join. In a
    raw stream and a WebM with no index it did nothing: frames 0-51 came numbered 20-71. In an
    AVI with a drop chunk it said 20 and read frame 19 (s38b). In an MP4 of variable frame rate
    it said 50 and read frame 60 (s44b)."""
    whole = _read(streams[name])
    assert len(whole) == (60 if name == "joined.mpg" else 72)
    start = 50 if name == "vfr.mp4" else 20  # past its slow second
    started = _read(streams[name], start=start)
    assert [p.index for p in started] == [p.index for p in whole[start:]]
    assert [p.timestamp for p in started] == [p.timestamp for p in whole[start:]]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(started, whole[start:]))


@pytest.mark.parametrize("name", ["plain.ts", "raw.h264"])
def test_a_loop_starts_again_at_its_start_frame(streams, name):
    """A seek back to the start read nothing, so the loop ended after one pass."""
    whole = _read(streams[name])
    looped = _read(streams[name], start=10, loop=True, max_frames=100)
    assert [p.index for p in looped] == list(range(10, 110))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(looped[62:], whole[10:]))  # the second pass
    assert np.diff([p.timestamp for p in looped]).min() > 0


def test_a_start_past_the_end_of_a_transport_stream_is_one_line(streams):
    from fer_pipe.errors import InputError

    with pytest.raises(InputError, match=r"start 72 is past its end \(by its header it plays 72 frames, 0-71\)"):
        _read(streams["plain.ts"], start=72)


@pytest.mark.parametrize("name", ["raw.h264", "raw.mjpg", "parts.mjpg", "curl.mjpg"])
def test_a_raw_stream_is_dated_by_frame_number_and_says_so(streams, capfd, name):
    """OpenCV dates every frame of a raw stream 0: a smoother never settled, and the episodes
    CSV of a clip that has two held none, exit 0 and not a word. FFmpeg makes up times at 25 fps
    for an MJPEG stream's frames, raw or multipart, taken for the file's own: ``fps`` was not
    heeded, and nothing said (s53c 2, s53f 3)."""
    frames = _read(streams[name])
    assert [p.timestamp for p in frames] == [index / 25 for index in range(72)]  # the rate OpenCV reports
    assert capfd.readouterr().err.count(f"video {streams[name]}: the file carries no timestamps (a raw "
                                        "stream?); its frames are dated by their number at 25 fps, the rate OpenCV "
                                        "reports (25 is FFmpeg's guess): give the camera's with source.fps\n") == 1
    assert [p.timestamp for p in _read(streams[name], start=30)][:2] == [30 / 25, 31 / 25]
    capfd.readouterr()
    # 25 is FFmpeg's guess for any raw stream: a 10 fps camera's was dated 2.5x too fast, with no way to say (s44b)
    assert [p.timestamp for p in _read(streams[name], fps=10)][:3] == [0.0, 0.1, 0.2]
    assert "carries no timestamps" not in capfd.readouterr().err
    assert [p.timestamp for p in _read(streams["plain.avi"], fps=10)][:2] == [0.0, 1 / 30]  # a dated file's own
    # said so: a user of ffmpeg's -r took it for a rate to read at, and got every frame, not a word (s62a 9)
    assert capfd.readouterr().err.count(f"video {streams['plain.avi']}: source.fps 10 is not used: the file's frames "
                                        "carry their own timestamps (source.fps dates a raw stream's); every frame "
                                        "is read, at whatever rate the file has\n") == 1


def test_a_file_whose_second_frame_repeats_the_firsts_time_keeps_its_timestamps(clips, tmp_path, capfd):
    """As a recorder that duplicates its first frame writes: the second frame alone dated 0 made
    it a file without timestamps, every frame dated by its number, seconds off after a slower
    stretch, and the run then failed as truncated (s44b)."""
    path = tmp_path / "repeated.mkv"
    ffmpeg("-i", str(clips["single_face.mp4"]), "-an", "-vf", "setpts='if(lt(N,2),0,(N-1)/30)/TB'", "-fps_mode",
           "passthrough", "-c:v", "libx264", str(path))
    frames = _read(path)
    assert len(frames) == 72 and [round(p.timestamp, 3) for p in frames[:4]] == [0.0, 0.0, 0.033, 0.067]
    assert "carries no timestamps" not in capfd.readouterr().err


def test_a_loop_over_one_frame_goes_on_and_dates_it_as_a_file(clips, tmp_path, capfd):
    """A seek back to the start of a one-frame video read nothing: the loop ended after one pass."""
    one = tmp_path / "one.mp4"
    ffmpeg("-i", str(clips["single_face.mp4"]), "-frames:v", "1", str(one))
    looped = _read(one, loop=True, max_frames=5)
    assert [p.index for p in looped] == list(range(5))
    assert np.diff([p.timestamp for p in looped]).min() > 0
    assert "carries no timestamps" not in capfd.readouterr().err


@pytest.fixture(scope="module")
def damaged(clips, tmp_path_factory) -> Path:
    """single_face.mp4 with a key frame every 12 and its middle tenth zeroed: OpenCV fails reads
    there and decodes on after them; its seek to a frame past the damage lands short."""
    whole = tmp_path_factory.mktemp("damaged") / "whole.mp4"
    ffmpeg("-i", str(clips["single_face.mp4"]), "-an", "-c:v", "libx264", "-g", "12", str(whole))
    data = bytearray(whole.read_bytes())
    data[len(data) * 45 // 100:len(data) * 55 // 100] = bytes(len(data) * 55 // 100 - len(data) * 45 // 100)
    video = whole.with_name("damaged.mp4")
    video.write_bytes(bytes(data))
    return video


def _frames_and_error(path: Path, **params: object) -> tuple[list[tuple[int, float]], str]:
    from fer_pipe.errors import InputError
    from fer_pipe.inprocess import make_stage

    stage, seen = make_stage("video", {"path": str(path), **params}), []
    stage.open()
    try:
        for packet in stage.frames():
            seen.append((packet.index, round(packet.timestamp, 3)))
    except InputError as exc:
        return seen, str(exc)
    finally:
        stage.close()
    return seen, ""


def test_a_start_past_damage_numbers_frames_as_a_read_from_the_start_does(damaged):
    """The way to the start stopped at the first failed grab: the frame a read from the start
    numbers 25 came as 30, and the damage was said to be at the file's start."""
    whole, said = _frames_and_error(damaged)
    assert "damaged after frame" in said and len(whole) < 72
    started, said = _frames_and_error(damaged, start=30)
    assert started == whole[30:]
    assert said == ""  # the damage lies before the start: every frame from there on decodes


def test_damage_within_max_frames_is_said(damaged):
    """A run of 40 frames passed over the lost ones, exit 0 and not a word."""
    seen, said = _frames_and_error(damaged, max_frames=40)
    assert len(seen) == 40 and "damaged after frame" in said


def test_a_recording_begun_mid_stream_is_whole_from_a_start_frame_too(clips, tmp_path):
    whole_ts, late = tmp_path / "whole.ts", tmp_path / "late.ts"
    ffmpeg("-i", str(clips["single_face.mp4"]), "-an", "-c:v", "libx264", "-g", "12", "-f", "mpegts", str(whole_ts))
    data = whole_ts.read_bytes()
    late.write_bytes(data[len(data) // 4 // 188 * 188:])  # cut in at a packet a quarter in
    whole, said = _frames_and_error(late)
    assert said == "" and whole[0][1] > 0.2
    started, said = _frames_and_error(late, start=20)
    assert said == "" and started == whole[20:]


def test_reading_the_way_to_a_start_frame_tells_the_stall_watch(streams):
    """Inside open, under the stall watch: a start far into a stream that cannot seek failed as
    stalled while opening. Every READ_SAY frames grabbed are said."""
    from fer_pipe.stages.video import READ_SAY, _opened_at

    said = []
    capture = _opened_at(str(streams["plain.ts"]), 70, False, lambda: said.append(1))
    capture.release()
    assert READ_SAY > 70 and not said
    long = streams["plain.ts"].with_name("long.ts")
    ffmpeg("-stream_loop", "9", "-i", str(streams["plain.ts"]), "-c", "copy", "-f", "mpegts", str(long))
    capture = _opened_at(str(long), 700, False, lambda: said.append(1))
    capture.release()
    assert len(said) == 700 // READ_SAY


def _box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", 8 + len(body)) + kind + body


def _header_only_mp4(path: Path, runs: list[tuple[int, int]], keys: list[int]) -> Path:
    """An MP4 of a moov box alone: one video track whose sample table has ``runs`` of (frames,
    ticks each) and key frames ``keys`` (numbered from 1), what numbered_by_time reads."""
    stts = _box(b"stts", struct.pack(">II", 0, len(runs)) + b"".join(struct.pack(">II", *run) for run in runs))
    stss = _box(b"stss", struct.pack(">II", 0, len(keys)) + b"".join(struct.pack(">I", key) for key in keys))
    hdlr = _box(b"hdlr", bytes(8) + b"vide" + bytes(12))
    mdia = _box(b"mdia", hdlr + _box(b"minf", _box(b"stbl", stts + stss)))
    path.write_bytes(_box(b"ftyp", b"isom" + bytes(4)) + _box(b"moov", _box(b"trak", mdia)))
    return path


def test_a_last_frame_that_lasts_longer_is_no_variable_frame_rate(tmp_path):
    """The average rate counted the last frame's duration, so a constant-rate file whose last
    frame lasts longer, with key frames after its first, was read as one of variable rate: no
    seek, and batch said so wrongly (s44e)."""
    from fer_pipe.mp4 import numbered_by_time

    keys = [1, 25, 49, 73, 97, 121, 145, 169, 193, 217, 241, 265, 289]
    assert numbered_by_time(_header_only_mp4(tmp_path / "long_last.mp4", [(299, 512), (1, 5120)], keys))
    assert not numbered_by_time(_header_only_mp4(tmp_path / "slow_middle.mp4", [(24, 512), (24, 1536), (252, 512)],
                                                 keys))
