"""WADO-RS frames in the transfer syntax they are stored in, when the request's Accept allows it.

A viewer such as OHIF asks for frames with ``multipart/related; type=application/octet-stream;
transfer-syntax=*``: any syntax will do. A frame kept compressed is then sent as it is — the codestream of a
JPEG-lossless (or JPEG-LS, JPEG 2000, RLE…) file, the HTJ2K codestream of a compacted series' cube — instead of
being decoded on the server and sent as 512 KB of values: no decoding here, a smaller body, and the viewer's
own decoder (OHIF decodes all of these in web workers). Each part says what it holds, as Orthanc does:
``image/jphc; transfer-syntax=1.2.840.10008.1.2.4.201``. Without a wildcard or the frame's own syntax in the
Accept header, frames are decoded and sent uncompressed as before (PS3.18: Explicit VR Little Endian is the
default of ``application/octet-stream``).

A cube's HTJ2K frame is sent only where it encodes exactly the values a viewer must see: one sample per pixel,
and Bits Stored equal to Bits Allocated or nothing above Bits Stored in any frame of the instance (the cube keeps
all bits of each value and its writer records which instances are clean: ``CubeReader.values_exact``; a 12-bit
image whose upper bits carry something else is decoded and masked as before).

Example
-------
>>> sorted(accepted('multipart/related; type="application/octet-stream"; transfer-syntax=*'))
['*']
>>> accepted('multipart/related; type="application/octet-stream"')
frozenset()
>>> pieces([b"x"], "1.2.840.10008.1.2.4.70")[1].split(";")[:2]
['multipart/related', ' type="image/jpeg"']
"""

from __future__ import annotations

from typing import Any

from pydicom.encaps import get_frame

from cubepacs.archive.web import multipart

HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"

# the media type of each compressed syntax's frames (PS3.18 Table 8.7.3-5; image/jpeg for every JPEG process,
# as Orthanc answers and viewers read)
MEDIA = {
    "1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg", "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx", "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc", "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc", "1.2.840.10008.1.2.5": "image/dicom-rle",
}


def accepted(accept: str) -> frozenset[str]:
    """The compressed transfer syntaxes an Accept header lets a frames response use: ``*`` for any, else the
    UIDs it names; empty when only uncompressed frames are asked for."""
    out: set[str] = set()
    for media_range in accept.split(","):
        kind, *params = (p.strip() for p in media_range.split(";"))
        if kind.lower() != "multipart/related":
            continue
        for param in params:
            key, _, value = param.partition("=")
            value = value.strip().strip('"')
            if key.strip().lower() == "transfer-syntax" and (value == "*" or value in MEDIA):
                out.add(value)
    return frozenset(out)


def allows(ok: frozenset[str], syntax: str) -> bool:
    """Whether ``ok`` (from :func:`accepted`) lets a frame stored in ``syntax`` go as it is."""
    return syntax in MEDIA and ("*" in ok or syntax in ok)


def pieces(frames: list[Any], syntax: str) -> tuple[list[Any], str]:
    """The multipart body (pieces, Content-Type) of ``frames`` sent in ``syntax`` (one of :data:`MEDIA`)."""
    return multipart.pieces(frames, MEDIA[syntax], f"; transfer-syntax={syntax}")


def cube_frames(cube: Any, i: int, wanted: list[int], ok: frozenset[str]) -> tuple[list[Any], str] | None:
    """Frames ``wanted`` (from 1) of instance ``i`` of a cube as stored, or None where they must be decoded."""
    d = cube.desc(i)
    if d is None or max(wanted) > d.frames:
        return None
    if d.mode == "encapsulated":  # the original codestreams, inside the instance's whole pixel value
        return encapsulated_frames(cube.pixel_value(i), cube.meta.syntaxes[i], d.frames, wanted, ok)
    if d.mode != "native" or d.spp != 1 or not cube.values_exact(i) or not allows(ok, HTJ2K_LOSSLESS):
        return None
    start = int(cube.frame_starts[i])
    blobs = []
    for f in wanted:
        got = cube.encoded(start + f - 1)
        if got is None or got[0] != "htj2k":  # a frame the codec could not take went to Zstandard
            return None
        blobs.append(got[1])
    return pieces(blobs, HTJ2K_LOSSLESS)


def encapsulated_frames(value: bytes | memoryview, syntax: str, count: int, wanted: list[int],
                        ok: frozenset[str]) -> tuple[list[Any], str] | None:
    """Frames ``wanted`` (from 1) of an encapsulated Pixel Data value as stored, or None where they must be
    decoded (a syntax not allowed, fragments that do not say which frame they belong to)."""
    if not allows(ok, syntax) or max(wanted) > count:
        return None
    try:
        data = value if isinstance(value, bytes) else bytes(value)  # pydicom reads bytes (or a file)
        frames = [get_frame(data, f - 1, number_of_frames=count) for f in wanted]
    except Exception:  # no offset table and several fragments per frame, a damaged item: the decoder decides
        return None
    return pieces(frames, syntax)
