"""The MP4 header reader behind the video source's truncation check, on real files."""
from __future__ import annotations

import struct

import pytest
from conftest import read_frames, write_video

from fer_pipe.mp4 import video_seconds


def test_the_video_track_duration_of_real_clips(clips):
    assert video_seconds(clips["WolfgangLanger_Pexels.mp4"]) == pytest.approx(19.685)
    assert video_seconds(clips["no_face.mp4"]) == pytest.approx(3.945)  # its edit list's, not 98 frames'


def test_other_files_give_none(clips, tmp_path):
    """None keeps OpenCV's count: an AVI, text, a box that runs past the end, an empty file,
    headers cut short (a struct.error there failed the video source's open)."""
    avi = write_video(tmp_path / "a.avi", read_frames(clips["single_face.mp4"], 3))
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n" * 10)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clips["single_face.mp4"].read_bytes()[:64])
    bad_size = tmp_path / "bad.mp4"
    bad_size.write_bytes(struct.pack(">I4s", 4, b"ftyp") + b"\0" * 32)
    empty = tmp_path / "empty.mp4"
    empty.touch()
    cut_large_size = tmp_path / "cut_large.mp4"  # a 64-bit box size that the file ends inside
    cut_large_size.write_bytes(struct.pack(">I4s", 1, b"ftyp") + b"\0" * 4)
    short_v1_mvhd = tmp_path / "short_v1.mp4"  # a version-1 movie header too short for its timescale
    mvhd = struct.pack(">I4s", 8 + 20, b"mvhd") + b"\x01" + b"\0" * 19
    short_v1_mvhd.write_bytes(struct.pack(">I4s", 8 + len(mvhd), b"moov") + mvhd)
    for path in (avi, text, cut, bad_size, empty, cut_large_size, short_v1_mvhd, tmp_path / "missing.mp4"):
        assert video_seconds(path) is None, path.name


def test_a_file_cut_short_is_told_by_its_containers_own_sizes(tmp_path):
    """What decides the truncation allowance (fer_pipe.truncation): a frame count cannot tell a
    cut copy from an AVI whose count holds the empty frames of a variable-rate source."""
    from fer_pipe.truncation import ends_early

    def riff(body: bytes, size: int | None = None) -> bytes:
        return b"RIFF" + struct.pack("<I", len(body) + 4 if size is None else size) + b"AVI " + body

    def box(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body) + 8) + kind + body

    def element(kind: bytes, body: bytes, size: bytes | None = None) -> bytes:
        return kind + (size or bytes([0x40 | len(body) >> 8, len(body) & 0xFF])) + body

    avi = riff(b"LIST" + struct.pack("<I", 4) + b"movi" + b"\0" * 100)
    mkv = element(b"\x1a\x45\xdf\xa3", b"\x42\x86\x81\x01") + element(b"\x18\x53\x80\x67", b"\0" * 300)
    live_mkv = mkv[:10] + element(b"\x18\x53\x80\x67", b"\0" * 30, size=b"\x01" + b"\xff" * 7)
    mp4 = box(b"ftyp", b"isom" * 3) + box(b"moov", b"\0" * 40) + box(b"mdat", b"\0" * 400)
    cases = {"whole.avi": (avi, False), "cut.avi": (avi[:-30], True),
             "piped.avi": (riff(b"\0" * 100, 0xFFFFFFFF), False),  # a writer that could not seek back
             "trailing.avi": (avi + b"ABCDEFGHIJKL", False),
             "whole.mp4": (mp4, False), "cut.mp4": (mp4[:-100], True), "trailing.mp4": (mp4 + b"more text", False),
             # a recorder writes mdat's size (0: to the end) and the index (moov) as it closes:
             # killed before, its file was "not a video, or a codec it lacks" (s41a)
             "crashed.mp4": (mp4[:20] + struct.pack(">I", 0) + b"mdat" + b"\0" * 400, True),
             "streamed.mp4": (mp4[:68] + struct.pack(">I", 0) + b"mdat" + b"\0" * 400, False),  # moov first
             "whole.mkv": (mkv, False), "cut.mkv": (mkv[:-100], True), "cut_in_an_id.mkv": (mkv[:12], True),
             "live.mkv": (live_mkv, False),  # a recorder that never went back to set the segment's size
             "not_a_container.y4m": (b"YUV4MPEG2 W64 H48 F30:1\n" + b"\0" * 50, False), "empty.mp4": (b"", False)}
    for name, (data, cut) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert ends_early(tmp_path / name) is cut, name


def test_an_avi_index_is_read_only_where_it_covers_the_whole_file(clips, tmp_path):
    """idx1 indexes the first RIFF part alone: in an OpenDML file past 1 GiB (parts RIFF AVIX
    after it) its count would be a fraction of the frames, and the last batch chunk all the rest."""
    from fer_pipe.avi import frames_in_index

    whole = write_video(tmp_path / "a.avi", read_frames(clips["single_face.mp4"], 3))
    assert frames_in_index(whole) == 3
    opendml = tmp_path / "opendml.avi"
    opendml.write_bytes(whole.read_bytes() + b"RIFF" + struct.pack("<I", 4) + b"AVIX")
    assert frames_in_index(opendml) is None
