"""Frames of the instances a cube keeps whole (``encapsulated``, ``opaque``, ``file``): decoded here, not by a
cube codec.

An RLE frame is decoded straight from the stored value (:func:`rle_frame`): its fragment found by walking the
value's items in place, the segments decoded into the frame's array (``cube/rle.py``) — no copy of the value, no
DICOM parsing, memory the frame and one byte plane. Any other frame goes through pydicom
(:func:`decode_with_pydicom`): the instance rebuilt, parsed, its geometry checked (``guard.check_dicom_frame``)
and the frame decoded by pydicom's plugins, which ``codecs.harden_pydicom`` wraps.

Example
-------
>>> import struct
>>> value = struct.pack("<II", 0xE000FFFE, 0) + struct.pack("<II", 0xE000FFFE, 2) + b"ab" \\
...         + struct.pack("<II", 0xE000FFFE, 4) + b"cdef"
>>> bytes(fragment(memoryview(value), 1, 2))
b'cdef'
"""

from __future__ import annotations

import struct
import warnings
from io import BytesIO, RawIOBase
from typing import Any

import numpy as np

from cubepacs.cube import guard, rle
from cubepacs.cube.codecs import native_call
from cubepacs.cube.pixels import PixelDesc, to_stored_values
from cubepacs.errors import CodecError

_ITEM, _DELIMITER = 0xE000FFFE, 0xE0DDFFFE


def fragment(value: memoryview, index: int, frames: int) -> memoryview | None:
    """Fragment ``index`` of an encapsulated value when it holds one fragment a frame (``frames`` of them: RLE's
    rule, PS3.5 A.4.2) — a view, nothing copied; None when the fragments are not one a frame (pydicom then finds
    the frame); :class:`CodecError` when the items run past the value."""
    n, pos, found, count = len(value), 0, None, -1  # count -1: the Basic Offset Table item comes first
    while pos + 8 <= n and count <= frames:
        tag, length = struct.unpack_from("<II", value, pos)
        if tag == _DELIMITER:
            break
        if tag != _ITEM or pos + 8 + length > n:
            raise CodecError(f"encapsulated pixel data: item at {pos} is not an item inside the value")
        if count == index:
            found = value[pos + 8:pos + 8 + length]
        count += 1
        pos += 8 + length
    return found if count == frames else None


def rle_frame(value: memoryview, d: PixelDesc, index: int, name: str) -> np.ndarray | None:
    """Frame ``index`` (stored values, as pydicom's ``pixel_array(raw=True)`` gives them) of an RLE instance whose
    whole Pixel Data value is ``value``; None when the value is not one fragment a frame or the description is one
    pydicom must judge (an odd Bits Allocated…)."""
    dtype = d.native_dtype
    if not (d.bits in (8, 16, 32, 64) and dtype.kind in "iu" and dtype.itemsize * 8 == d.bits
            and 1 <= d.spp <= 4 and d.rows > 0 and d.cols > 0 and 0 <= index < d.frames):
        return None
    try:
        data = fragment(value, index, d.frames)
        if data is None:
            return None
        if len(data) > guard.work_bound(d.rows * d.cols * d.spp * dtype.itemsize, 4):
            raise CodecError(f"a {len(data)}-byte RLE frame for {d.rows} × {d.cols} × {d.spp}, {d.bits} bits")
        out = np.empty(d.frame_shape, dtype)
        rle.decode_into(data, out)
    except CodecError as exc:
        raise CodecError(f"{name}: frame {index} cannot be decoded: {exc}") from None
    return to_stored_values(d, out)


def encapsulated_frame(value: memoryview, d: PixelDesc, syntax: str, index: int, name: str) -> np.ndarray:
    """Frame ``index`` of an encapsulated instance (stored values, as ``pixel_array(raw=True)`` gives them) whose
    whole Pixel Data value is ``value`` and transfer syntax ``syntax``: pydicom's decoder for the syntax is given
    the value as a file it reads in place (:class:`_View`: only the frame's fragments are copied) and the geometry of
    the instance's description — no dataset is parsed, so the work is bounded by the frame, not by the instance's
    metadata; a one-fragment frame's size is bounded before anything is copied, and the plugins check the
    codestream against the geometry (``codecs.harden_pydicom``)."""
    from pydicom.pixels.decoders.base import get_decoder

    try:
        guard.check_geometry(d.rows, d.cols, d.spp, d.bits, d.frames, index)
        data = fragment(value, index, d.frames)
        if data is not None and len(data) > guard.work_bound(d.rows * d.cols * d.spp * max(d.bits, 8) // 8, 4):
            raise CodecError(f"a {len(data)}-byte codestream for a frame of {d.rows} × {d.cols} × {d.spp}, "
                             f"{d.bits} bits")  # before pydicom copies it
        opts = {"rows": d.rows, "columns": d.cols, "samples_per_pixel": d.spp, "bits_allocated": d.bits,
                "bits_stored": d.stored or d.bits, "pixel_representation": int(d.signed),
                "photometric_interpretation": d.photometric, "number_of_frames": d.frames,
                "planar_configuration": d.planar}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr, _ = native_call("pydicom", get_decoder(syntax).as_array, _View(value), index=index, raw=True,
                                 **opts)
        return np.asarray(arr)
    except Exception as exc:  # native_call made a decoder's panic an Exception
        raise CodecError(f"{name}: frame {index} cannot be decoded: {exc}") from None


class _View(RawIOBase):
    """A read-only file over a memoryview: pydicom finds the frame's fragments in it and copies only those (given
    bytes, it would work on a copy of the whole value).

    Example
    -------
    >>> f = _View(memoryview(b"abcdef")); _ = f.seek(2); f.read(3), f.tell()
    (b'cde', 5)
    """

    def __init__(self, view: memoryview) -> None:
        self.view, self.pos = view, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        end = len(self.view) if size is None or size < 0 else min(self.pos + size, len(self.view))
        out = bytes(self.view[self.pos:end])
        self.pos = max(self.pos, end)
        return out

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = max(0, offset if whence == 0 else self.pos + offset if whence == 1 else len(self.view) + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos


_PARSED: dict[int, Any] = {}  # id(file bytes) -> parsed dataset, for decoding several frames of one instance


def decode_with_pydicom(file_bytes: bytes, frame: int, name: str) -> np.ndarray:
    """Decode one frame of a compressed or unusual-layout instance with pydicom (stored values, raw=True).

    Example
    -------
    >>> from pathlib import Path
    >>> data = Path("../shared/data/single/seg_1bit_liver.dcm").read_bytes()
    >>> decode_with_pydicom(data, 0, "seg.dcm").shape
    (512, 512)
    """
    import pydicom
    from pydicom.pixels.utils import pixel_array

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = _PARSED.get(id(file_bytes))
            if ds is None or ds[0] is not file_bytes:
                ds = (file_bytes, pydicom.dcmread(BytesIO(file_bytes), force=True))
                _PARSED.clear()
                _PARSED[id(file_bytes)] = ds
            guard.check_dicom_frame(ds[1], frame)
            return np.asarray(native_call("pydicom", pixel_array, ds[1], index=frame, raw=True))
    except Exception as exc:  # native_call made a decoder's panic an Exception
        raise CodecError(f"{name}: frame {frame} cannot be decoded: {exc}") from None
