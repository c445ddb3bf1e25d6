"""Whether a video's pictures are interlaced, read from its coded headers.

opencv-python 4.13 and later bundle an FFmpeg whose converter refuses an interlaced picture,
and OpenCV hands back its untouched buffer as a frame read: black frames, or stale memory, or
the last progressive frame again, every row of the CSV wrong and exit 0. No pixel test tells
such frames from a black leader or a still picture, and no OpenCV property differs. The headers
do: OpenCV's own demuxer in raw mode (``CAP_PROP_FORMAT`` -1) gives the first packets without
decoding them, and FFmpeg's own rule on them says what its decoder will flag. H.264 and MPEG-2
only (what DVRs, camcorders and broadcast captures write); another codec reads as not
interlaced, as does a stream that turns interlaced after the packets read here.
"""
from __future__ import annotations

import re

import cv2

BLANKS_INTERLACED = tuple(int(part) for part in cv2.__version__.split(".")[:2]) >= (4, 13)
"""This OpenCV reads an interlaced picture as a blank frame (4.12's FFmpeg converted it)."""
PACKETS = 30
"""Packets read: a few ms, and past an H.264 stream's leading parameter sets and SEI."""
H264 = ("h264", "avc1", "x264")
MPEG2 = ("mpg2", "mpgv", "mp2v", "hdv2", "xdvd")
START = re.compile(b"\x00\x00\x01")


class _Bits:
    """Reads a header's bits, its Exp-Golomb codes too; past the end, zeros."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.data[self.at >> 3] if self.at >> 3 < len(self.data) else 0
            value = value << 1 | byte >> (7 - (self.at & 7)) & 1
            self.at += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros > 31:
                raise ValueError("not an Exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        code = self.ue()
        return (code + 1) // 2 if code & 1 else -(code // 2)


def _unescaped(unit: bytes) -> bytes:
    """A NAL unit's payload without its emulation-prevention bytes."""
    return unit.replace(b"\x00\x00\x03", b"\x00\x00")


def _units(data: bytes) -> list[bytes]:
    """The NAL units (or MPEG-2 start-code payloads) of an Annex B stream."""
    starts = [m.end() for m in START.finditer(data)]
    return [_unescaped(data[a:b - 3].rstrip(b"\x00")) for a, b in zip(starts, [*starts[1:], len(data) + 3])]


HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}
"""H.264 profiles whose sequence parameter set carries chroma format and scaling lists."""


def _h264_sps(sps: bytes) -> tuple[bool, bool, int, bool]:
    """(frame_mbs_only, MBAFF, bits of frame_num, separate colour planes) of an SPS payload."""
    bits = _Bits(sps)
    profile = bits.u(8)
    bits.u(16)
    bits.ue()
    separate = False
    if profile in HIGH_PROFILES:
        chroma = bits.ue()
        if chroma > 3:
            raise ValueError("not a valid sequence parameter set")
        if chroma == 3:
            separate = bool(bits.u(1))
        bits.ue()
        bits.ue()
        bits.u(1)
        if bits.u(1):  # scaling matrices: each list present is skipped code by code
            for i in range(12 if chroma == 3 else 8):
                if bits.u(1):
                    last = following = 8
                    for _ in range(16 if i < 6 else 64):
                        if following:
                            following = (last + bits.se() + 256) % 256
                        last = following or last
    frame_num_bits = bits.ue() + 4
    order = bits.ue()
    cycle = 0
    if order == 0:
        bits.ue()
    elif order == 1:
        bits.u(1)
        bits.se()
        bits.se()
        cycle = bits.ue()
    # the standard's bounds: a damaged SPS read on had a slice's frame_num of a million bits
    # and more (minutes of preflight), where FFmpeg drops that SPS and decodes on
    if frame_num_bits > 16 or order > 2 or cycle > 255:
        raise ValueError("not a valid sequence parameter set")
    for _ in range(cycle):
        bits.se()
    bits.ue()
    bits.u(1)
    bits.ue()
    bits.ue()
    frame_mbs_only = bool(bits.u(1))
    return frame_mbs_only, not frame_mbs_only and bool(bits.u(1)), frame_num_bits, separate


def _h264(packets: list[bytes], extradata: bytes) -> bool:
    """Whether a picture is coded as a field or as MBAFF (FFmpeg's interlaced flag). An MP4's
    SPS is in its avcC box, a transport stream's in its packets."""
    sps = None
    if extradata[:1] == b"\x01" and len(extradata) > 8:  # an avcC box: its first SPS's length, then the SPS
        sps = _h264_sps(_unescaped(extradata[9:8 + int.from_bytes(extradata[6:8], "big")]))
    else:
        packets = [extradata, *packets]
    for unit in (unit for packet in packets for unit in _units(packet) if unit):
        kind = unit[0] & 31
        if kind == 7:
            sps = _h264_sps(unit[1:])
        elif kind in (1, 5) and sps is not None and not sps[0]:  # a slice where frames may be interlaced
            frame_mbs_only, mbaff, frame_num_bits, separate = sps
            if mbaff:  # a frame coded as MBAFF is flagged interlaced
                return True
            bits = _Bits(unit[1:])
            bits.ue()
            bits.ue()
            bits.ue()
            bits.u(2 * separate + frame_num_bits)
            if bits.u(1):  # field_pic_flag
                return True
    return False


def _mpeg2(packets: list[bytes], extradata: bytes) -> bool:
    """Whether a picture is of an interlaced sequence and not itself marked progressive."""
    progressive_sequence = True
    for unit in (unit for packet in (extradata, *packets) for unit in _units(packet)):
        if unit[:1] != b"\xb5":  # an extension
            continue
        bits = _Bits(unit[1:9])
        kind = bits.u(4)
        if kind == 1:  # sequence extension
            bits.u(8)
            progressive_sequence = bool(bits.u(1))
        elif kind == 8 and not progressive_sequence:  # picture coding extension
            bits.u(28)
            if not bits.u(1):
                return True
    return False


def interlaced_codec(name: str) -> str | None:
    """"H.264" or "MPEG-2" where the first packets of the video OpenCV opens as ``name`` hold an
    interlaced picture, else None (also where the headers cannot be read: a damaged file is
    the reader's to report)."""
    capture = cv2.VideoCapture(name, cv2.CAP_FFMPEG, [cv2.CAP_PROP_FORMAT, -1])
    try:
        if not capture.isOpened():
            return None
        fourcc = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("latin-1").lower()
        codec = "H.264" if fourcc in H264 else "MPEG-2" if fourcc in MPEG2 or fourcc.startswith("mx") else None
        if codec is None:
            return None
        ok, extradata = capture.retrieve(flag=int(capture.get(cv2.CAP_PROP_CODEC_EXTRADATA_INDEX)))
        packets = []
        for _ in range(PACKETS):
            if not capture.grab():
                break
            ok_, packet = capture.retrieve()
            if ok_ and packet is not None:
                packets.append(packet.tobytes())
        found = (_h264 if codec == "H.264" else _mpeg2)(packets, extradata.tobytes() if ok and extradata is not None
                                                        else b"")
        return codec if found else None
    except (ValueError, IndexError, cv2.error):
        return None
    finally:
        capture.release()
