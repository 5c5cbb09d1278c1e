"""The marker structure of a JPEG or JPEG-LS codestream (ISO/IEC 10918-1 Annex B, 14495-1 Annex C), read in place
before any decoder sees it: its SOF (process, geometry) and how many scans it holds. ``guard.check_codestream``
holds every JPEG frame to these (issue #27: a progressive or many-scan stream multiplies a decoder's work).

Example
-------
>>> stream = bytes.fromhex("ffd8 ffc0 000b 08 0010 0018 01 011100 ffda 0008 01 0100 003f00 12 ffd9")
>>> jpeg_sof(stream), scans_over(stream, 1)
((192, 16, 24, 1, 8), False)
"""

from __future__ import annotations

import re
import struct

from cubepacs.errors import CodecError


def u16(b: bytes | memoryview, pos: int) -> int:
    """The big endian 16-bit value at ``pos``; :class:`CodecError` past the end.

    >>> u16(b"\\x01\\x02", 0)
    258
    """
    if pos + 2 > len(b):
        raise CodecError("codestream truncated in a marker segment")
    return int(struct.unpack_from(">H", b, pos)[0])


def jpeg_header(data: bytes | memoryview) -> tuple[int, int, int, int]:
    """(rows, columns, components, bits) from the SOF segment of a JPEG or JPEG-LS codestream."""
    return jpeg_sof(data)[1:]


def jpeg_sof(data: bytes | memoryview) -> tuple[int, int, int, int, int]:
    """(SOF marker, rows, columns, components, bits) of a JPEG or JPEG-LS codestream, from its first 64 KB."""
    b = bytes(data[:65536])
    if b[:2] != b"\xff\xd8":
        raise CodecError("not a JPEG codestream (no SOI)")
    pos = 2
    while pos + 4 <= len(b):
        if b[pos] != 0xFF:
            raise CodecError("JPEG: marker expected")
        marker = b[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = u16(b, pos + 2)
        if (0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)) or marker == 0xF7:  # SOFn, SOF55 (LS)
            if pos + 10 > len(b):
                raise CodecError("JPEG SOF segment truncated")
            bits, rows, cols, comps = b[pos + 4], u16(b, pos + 5), u16(b, pos + 7), b[pos + 9]
            if not (2 <= bits <= 16 and rows and cols and 1 <= comps <= 4):
                raise CodecError(f"JPEG SOF: {rows} × {cols} × {comps}, {bits} bits")
            return marker, rows, cols, comps, bits
        if marker in (0xDA, 0xD9) or length < 2:
            break
        pos += 2 + length
    raise CodecError("JPEG: no SOF segment before the scan")


_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # in entropy-coded data: not stuffing, not a restart
_NEXT_LS_MARKER = re.compile(rb"\xff[\x80-\xcf\xd8-\xfe]")  # JPEG-LS: a bit stuffed after FF (A.1), so FF 8x+
MAX_SEGMENTS = 4096  # marker segments a JPEG stream may have (real ones: tens; the size bound's COM padding: < 300)


def scans_over(data: bytes | memoryview, most: int, ls: bool = False) -> bool:
    """Whether a JPEG (``ls``: JPEG-LS) stream holds more than ``most`` scans: its markers walked from SOI to EOI,
    each segment skipped by its length (an APP thumbnail's or a comment's bytes are not markers), a scan's data
    searched for the next marker that is not a restart (``FF 00`` is stuffing, ``FF D0``–``D7`` restarts; JPEG-LS
    stuffs a bit instead). In place; a stream whose markers cannot be walked is left to the decoder, one of more
    than :data:`MAX_SEGMENTS` segments refused.

    >>> scans_over(bytes.fromhex("ffd8 fffe 0004 ffda ffda 0003 00 12 ff00 ffd0 ffda 0003 00 34 ffd9 ffda"), 1)
    True
    >>> scans_over(bytes.fromhex("ffd8 fffe 0004 ffda ffda 0003 00 12 ff00 ffd0 34 ffd9 ffda 0003 00"), 1)
    False
    """
    n, pos, scans, find = len(data), 2, 0, (_NEXT_LS_MARKER if ls else _NEXT_MARKER).search
    for _ in range(MAX_SEGMENTS):
        while pos + 1 < n and data[pos] == 0xFF and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        if pos + 4 > n or data[pos] != 0xFF or data[pos + 1] == 0xD9:
            return False  # EOI, or not a marker: the decoder judges
        marker, end = data[pos + 1], pos + 2 + u16(data, pos + 2)
        if marker != 0xDA:
            pos = end
            continue
        scans += 1
        if scans > most:
            return True
        found = find(data, end)
        if found is None:
            return False
        pos = found.start()
    raise CodecError(f"a JPEG stream of more than {MAX_SEGMENTS} marker segments")


# the SOF each JPEG transfer syntax admits (PS3.5 A.4.1, 8.2.1; ISO/IEC 10918-1 Table B.1): processes 1 (and SOF1
# as pydicom decodes it: the same work); 2 and 4 (baseline is a subset); 14; 14 SV1; JPEG-LS (SOF55). Progressive
# and hierarchical streams are not these syntaxes.
JPEG_SOF = {"1.2.840.10008.1.2.4.50": (0xC0, 0xC1), "1.2.840.10008.1.2.4.51": (0xC0, 0xC1),
            "1.2.840.10008.1.2.4.57": (0xC3,), "1.2.840.10008.1.2.4.70": (0xC3,),
            "1.2.840.10008.1.2.4.80": (0xF7,), "1.2.840.10008.1.2.4.81": (0xF7,)}  # fmt: skip
