"""DICOM RLE Lossless (PS3.5 Annex G), decoded here around imagecodecs' PackBits decoder.

An RLE frame is a 64-byte header (the segment count and up to 15 offsets) and one PackBits segment per byte plane
— for each sample, its most significant byte first. pydicom's RLE plugins were pylibjpeg-rle (whose decoder
panics, a Rust ``PanicException`` printed with its backtrace on stderr, on a segment that decodes past its plane)
and pydicom's pure-Python one; both return a new frame-sized buffer that pydicom copies again. Here the header is
checked first (:func:`cubepacs.cube.guard.rle_header`), each segment is decoded by imagecodecs' bounds-checked
PackBits decoder into one scratch plane (rows × columns bytes, + 256 for the slack some encoders leave) and copied
into its place in the frame: no decoder writes past what the geometry declares, a segment that decodes to less is
an error, one that decodes to more is cut as pydicom's own decoder does, and the memory used is the frame and one
plane.

:func:`decode_into` fills a frame array (the cube's frames of RLE instances); :func:`pydicom_plugin` is pydicom's
RLE decoding plugin (``codecs.harden_pydicom`` makes it the only one).

Example
-------
>>> import numpy as np
>>> frame = _encode(np.arange(12, dtype=np.uint16).reshape(3, 4))
>>> out = np.empty((3, 4), np.uint16); decode_into(frame, out); out.ravel().tolist()
[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
"""

from __future__ import annotations

import struct
from typing import Any

import imagecodecs
import numpy as np

from cubepacs.cube import guard
from cubepacs.errors import CodecError

_ic: Any = imagecodecs
SLACK = 256  # bytes a segment may decode past its plane (an encoder's padding run), cut as pydicom cuts them


def _planes(src: bytes | memoryview, rows: int, cols: int, spp: int, itemsize: int) -> Any:
    """Yield (sample, byte index from the least significant, decoded plane) for each segment of ``src``."""
    count = spp * itemsize
    guard.rle_header(src, count)
    offsets = [*struct.unpack_from(f"<{count}I", src, 4), len(src)]
    n = rows * cols
    scratch = np.empty(n + SLACK, np.uint8)
    view = memoryview(src)
    for k in range(count):
        try:
            got = _ic.packbits_decode(view[offsets[k]:offsets[k + 1]], out=scratch)
        except Exception as exc:  # imagecodecs' C decoder: ImcdError (input corrupt, output too small)
            raise CodecError(f"RLE segment {k + 1} of a {rows} × {cols} plane: {type(exc).__name__}: {exc}") from None
        if len(got) < n:
            raise CodecError(f"RLE segment {k + 1} decodes to {len(got)} bytes; its plane of {rows} × {cols} "
                             f"holds {n}")
        yield k // itemsize, itemsize - 1 - k % itemsize, scratch[:n]


def decode_into(src: bytes | memoryview, out: np.ndarray) -> None:
    """Decode the RLE frame ``src`` into ``out`` (rows × columns [× samples], 1, 2, 4 or 8-byte integers in this
    machine's byte order, C-contiguous): :class:`CodecError` on anything the geometry does not admit."""
    if not out.flags.c_contiguous or out.dtype.kind not in "iu" or out.ndim not in (2, 3):
        raise CodecError(f"RLE frames decode into C-contiguous integer frames, not {out.dtype} × {out.shape}")
    rows, cols = out.shape[:2]
    spp, itemsize = (out.shape[2] if out.ndim == 3 else 1), out.dtype.itemsize
    little = out.dtype.byteorder == "<" or (out.dtype.byteorder in "=|" and np.little_endian)
    planes = out.view(np.uint8).reshape(rows * cols, spp, itemsize)
    for sample, byte, plane in _planes(src, rows, cols, spp, itemsize):
        planes[:, sample, byte if little else itemsize - 1 - byte] = plane


def pydicom_plugin(src: bytes, runner: Any) -> bytearray:
    """pydicom's RLE decoding plugin: the frame as pydicom's own RLE decoder returns it (little endian, colour by
    plane: planar configuration 1, which it tells the runner).

    Example
    -------
    >>> from pathlib import Path
    >>> import pydicom
    >>> ds = pydicom.dcmread("../shared/data/single/rle_rgb_sc.dcm")
    >>> ds.pixel_array.shape, ds.pixel_array[0, 0].tolist()
    ((100, 100, 3), [255, 0, 0])
    """
    rows, cols, spp = int(runner.rows), int(runner.columns), int(runner.samples_per_pixel)
    bits = int(runner.bits_allocated)
    if bits not in (8, 16, 32, 64) or not 1 <= spp <= 4:
        raise CodecError(f"RLE frames of {bits}-bit samples × {spp} are not decoded")
    itemsize = bits // 8
    order = runner.get_option("rle_segment_order", ">")
    frame = bytearray(rows * cols * spp * itemsize)
    planes = np.frombuffer(frame, np.uint8).reshape(spp, rows * cols, itemsize)
    for sample, byte, plane in _planes(src, rows, cols, spp, itemsize):
        planes[sample, :, byte if order == ">" else itemsize - 1 - byte] = plane
    runner.set_option("planar_configuration", 1)
    return frame


def _encode(frame: np.ndarray) -> bytes:
    """An RLE frame of a rows × columns [× samples] integer array (for tests and examples)."""
    rows, cols = frame.shape[:2]
    spp, itemsize = (frame.shape[2] if frame.ndim == 3 else 1), frame.dtype.itemsize
    be = np.ascontiguousarray(frame, frame.dtype.newbyteorder(">")).view(np.uint8)
    be = be.reshape(rows * cols, spp, itemsize)
    segments = [bytes(_ic.packbits_encode(be[:, s, b].tobytes())) for s in range(spp) for b in range(itemsize)]
    segments = [s + b"\x80" * (len(s) % 2) for s in segments]  # even lengths; 0x80 is a no-op
    offsets, pos = [], 64
    for s in segments:
        offsets.append(pos)
        pos += len(s)
    return struct.pack("<16I", len(segments), *offsets, *[0] * (15 - len(offsets))) + b"".join(segments)
