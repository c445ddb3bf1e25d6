"""How many streams a file whose frame count OpenCV takes from its duration holds: MPEG-TS
(and M2TS), MPEG-PS, FLV and Ogg keep no frame count, so OpenCV's is the container's duration,
its longest stream's, at the video's rate. Where audio runs on past the last frame (a camera's,
a DVB or OBS recording's), or a second video stream is longer, that count is more than the
video plays, and an intact file was failed as cut short (s64e 1, 3).

Read from the file's head alone: each format declares its streams before (or among) its first
packets.
"""
from __future__ import annotations

import re

HEAD_BYTES = 1 << 20
"""What is read: the tables and first packets of every stream of a real file fit in it."""
TS_SYNC = 0x47
PES_START = re.compile(rb"\x00\x00\x01([\xbd\xc0-\xef])")
"""An MPEG-PS stream's packets: private stream 1 (AC-3, DTS, subtitles), audio, video. No
video elementary stream holds these start codes."""


def streams_in(head: bytes) -> int | None:
    """The number of streams the file starting with ``head`` declares, or None where it is none
    of these formats (or its tables were not found)."""
    if head[:3] == b"FLV" and len(head) > 4:
        return bin(head[4] & 0x05).count("1")  # its header's flags: audio 4, video 1
    if head[:4] == b"OggS":
        return _ogg_streams(head)
    if head[:4] == b"\x00\x00\x01\xba":
        return len(set(PES_START.findall(head))) or None
    for size, offset in ((188, 0), (192, 4)):  # TS, and M2TS with its 4-byte time before each packet
        if len(head) > offset + 2 * size and head[offset] == head[offset + size] == head[offset + 2 * size] == TS_SYNC:
            return _ts_streams(head, size, offset)
    return None


def _ogg_streams(head: bytes) -> int | None:
    """Every logical stream of an Ogg file begins with a page marked so (BOS), and they all come
    first."""
    count, pos = 0, 0
    while head[pos:pos + 4] == b"OggS" and pos + 27 <= len(head):
        if not head[pos + 5] & 0x02:
            break
        count += 1
        segments = head[pos + 26]
        pos += 27 + segments + sum(head[pos + 27:pos + 27 + segments])
    return count or None


def _ts_streams(head: bytes, size: int, offset: int) -> int | None:
    """The elementary streams the first program map table lists, found through the program
    association table (PID 0)."""
    pmt_pid = None
    for start in range(offset, len(head) - 188 + 1, size):
        packet = head[start:start + 188]
        section = _section(packet)
        if section is None:
            continue
        pid = (packet[1] & 0x1F) << 8 | packet[2]
        if pid == 0 and section[0] == 0x00 and pmt_pid is None and len(section) >= 8:
            entries = section[8:3 + _length(section) - 4]
            pids = [(e[2] & 0x1F) << 8 | e[3] for e in _chunks(entries, 4) if e[0] << 8 | e[1]]
            pmt_pid = pids[0] if pids else None
        elif pid == pmt_pid and section[0] == 0x02 and len(section) >= 12:
            # a map longer than its packet (many streams, long descriptors) goes on in the next:
            # the streams in this one are enough to tell one from several
            end = min(3 + _length(section) - 4, len(section))
            pos = 12 + ((section[10] & 0x0F) << 8 | section[11])
            count = 0
            while pos + 5 <= end:
                count += 1
                pos += 5 + ((section[pos + 3] & 0x0F) << 8 | section[pos + 4])
            return count or None
    return None


def _section(packet: bytes) -> bytes | None:
    """The table section a packet starts (its payload begins one), else None."""
    if packet[0] != TS_SYNC or not packet[1] & 0x40 or not packet[3] & 0x10:
        return None
    pos = 4 + (1 + packet[4] if packet[3] & 0x20 else 0)
    if pos >= len(packet):  # an adaptation field that fills the packet, or says it is longer
        return None
    pos += 1 + packet[pos]  # the pointer field
    return packet[pos:] if pos + 3 <= len(packet) else None


def _length(section: bytes) -> int:
    return (section[1] & 0x0F) << 8 | section[2]


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data) - size + 1, size)]
