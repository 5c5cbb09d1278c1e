"""How an instance's Pixel Data value is cut into frames, and turned back into the exact original bytes.

Three storage modes, recorded per instance:

* ``native``: uncompressed 8/16/32/64-bit frames; each frame is a numpy array (rows × cols [× samples]) in
  native byte order, encoded by the cube's codec; bytes past the last frame (padding) are kept apart.
* ``encapsulated``: compressed input (JPEG, JPEG-LS, J2K, HTJ2K, RLE…); the value (offset table and fragments)
  is kept byte for byte, frames are decoded by pydicom on demand.
* ``opaque``: any other layout (1-bit, YBR_*_422, 8-bit OW big endian…); the value is zstd-compressed as one
  block, frames are decoded by pydicom on demand.
* ``file``: pixels inside a deflated dataset, kept in the deflated body; frames decoded by pydicom.

Example
-------
>>> d = PixelDesc(mode="native", rows=2, cols=2, spp=1, bits=16, signed=True, planar=0, frames=1,
...               dtype="<i2", photometric="MONOCHROME2")
>>> d.frame_bytes, d.frame_shape
(8, (2, 2))
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

_SUBSAMPLED = ("YBR_FULL_422", "YBR_PARTIAL_422", "YBR_PARTIAL_420")


@dataclass(frozen=True)
class PixelDesc:
    """The geometry and storage mode of one instance's pixel data."""

    mode: str
    rows: int
    cols: int
    spp: int
    bits: int
    signed: bool
    planar: int
    frames: int
    dtype: str  # numpy dtype string in the file's byte order ("<i2", ">u2", "<f4" …)
    photometric: str
    stored: int = 0  # BitsStored (0: same as bits)

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """Shape of one frame as stored values: rows × cols, or rows × cols × samples."""
        return (self.rows, self.cols) if self.spp == 1 else (self.rows, self.cols, self.spp)

    @property
    def frame_bytes(self) -> int:
        """Bytes of one frame in the file (native mode)."""
        return self.rows * self.cols * self.spp * (self.bits // 8)

    @property
    def native_dtype(self) -> np.dtype[Any]:
        """The frame dtype in this machine's byte order."""
        return np.dtype(self.dtype).newbyteorder("=")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (see :meth:`from_json`)."""
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PixelDesc:
        """Inverse of :meth:`to_json`."""
        return cls(**d)


def _int(v: Any, default: int) -> int:
    try:
        return int(v) if v not in (None, "") else default
    except (TypeError, ValueError):
        return default


def describe(attrs: dict[str, Any], pixel_tag: int, pixel_vr: str | None, little: bool, encapsulated: bool,
             value_len: int) -> PixelDesc:
    """Decide how to store one instance's pixel data from its image pixel attributes.

    ``attrs`` holds Rows, Columns, SamplesPerPixel, BitsAllocated, PixelRepresentation, PlanarConfiguration,
    NumberOfFrames and PhotometricInterpretation as read from the instance (missing ones absent).
    """
    rows, cols = _int(attrs.get("Rows"), 0), _int(attrs.get("Columns"), 0)
    spp = _int(attrs.get("SamplesPerPixel"), 1)
    bits = _int(attrs.get("BitsAllocated"), 0)
    signed = _int(attrs.get("PixelRepresentation"), 0) == 1
    planar = _int(attrs.get("PlanarConfiguration"), 0)
    frames = max(_int(attrs.get("NumberOfFrames"), 1), 1)
    photometric = str(attrs.get("PhotometricInterpretation") or "")
    order = "<" if little else ">"
    if pixel_tag == 0x7FE00008:
        kind = "f"
    elif pixel_tag == 0x7FE00009:
        kind = "f"
    else:
        kind = "i" if signed else "u"
    dtype = f"{order}{kind}{max(bits // 8, 1)}"
    mode = "native"
    if encapsulated:
        mode = "encapsulated"
    elif (
        bits not in (8, 16, 32, 64)
        or rows <= 0
        or cols <= 0
        or spp not in (1, 3, 4)
        or photometric in _SUBSAMPLED
        or (bits == 8 and not little and pixel_vr != "OB")
        or frames * rows * cols * spp * (bits // 8) > value_len
        or (kind == "f" and bits not in (32, 64))
    ):
        mode = "opaque"
    stored = _int(attrs.get("BitsStored"), bits)
    return PixelDesc(mode, rows, cols, spp, bits, signed, planar, frames, dtype, photometric,
                     stored if 0 < stored < bits else 0)


def split_frames(desc: PixelDesc, value: bytes | memoryview) -> tuple[list[np.ndarray], bytes]:
    """Cut a native pixel value into frames (native byte order, stored values) and the trailing bytes."""
    n = desc.frame_bytes
    flat = np.frombuffer(value, dtype=np.dtype(desc.dtype), count=desc.frames * n // np.dtype(desc.dtype).itemsize)
    frames = []
    for k in range(desc.frames):
        part = flat[k * (n // flat.itemsize) : (k + 1) * (n // flat.itemsize)]
        if desc.spp > 1 and desc.planar == 1:
            arr = part.reshape(desc.spp, desc.rows, desc.cols).transpose(1, 2, 0)
        else:
            arr = part.reshape(desc.frame_shape)
        frames.append(np.ascontiguousarray(arr, dtype=desc.native_dtype))
    return frames, bytes(value[desc.frames * n :])


def frame_to_bytes(desc: PixelDesc, frame: np.ndarray) -> bytes:
    """The exact file bytes of one native frame (inverse of :func:`split_frames`)."""
    arr = frame
    if desc.spp > 1 and desc.planar == 1:
        arr = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr, dtype=np.dtype(desc.dtype)).tobytes()


def native_layout(desc: PixelDesc, frame: np.ndarray) -> np.ndarray:
    """One frame of stored values (rows × cols [× samples], as decoded) laid out as the instance's own attributes
    say a native frame is (PS3.3 C.7.6.3.1.2–3, PS3.5 8.2): colour-by-plane (samples × rows × cols) where Planar
    Configuration is 1; for YBR_FULL_422 / YBR_PARTIAL_422, each pair of pixels as Y₁ Y₂ Cb Cr (rows × cols/2 ×
    4), the pair's chroma the mean of the two decoded values, rounded half up (a decoder that repeats the pair's
    chroma — a native 422 frame read back — gives the stored bytes again); for Bits Allocated 1, the frame's
    pixels packed eight to a byte, the first in the lowest bit (PS3.5 8.1.1, D.2), the last byte padded with
    zeros; unchanged otherwise (and for an odd number of columns, which 422 cannot describe).

    Example
    -------
    >>> d = PixelDesc("native", 1, 2, 3, 8, False, 0, 1, "<u1", "YBR_FULL_422")
    >>> native_layout(d, np.array([[[10, 100, 200], [20, 101, 200]]], np.uint8)).ravel().tolist()
    [10, 20, 101, 200]
    >>> native_layout(PixelDesc("native", 1, 2, 3, 8, False, 1, 1, "<u1", "RGB"),
    ...               np.array([[[1, 2, 3], [4, 5, 6]]], np.uint8)).ravel().tolist()
    [1, 4, 2, 5, 3, 6]
    >>> native_layout(PixelDesc("opaque", 1, 9, 1, 1, False, 0, 1, "<u1", "MONOCHROME2"),
    ...               np.array([[1, 0, 0, 0, 0, 0, 0, 1, 1]], np.uint8)).tolist()
    [129, 1]
    """
    if desc.bits == 1:
        return np.packbits(frame.ravel() & 1, bitorder="little")
    if frame.ndim != 3 or frame.shape[2] != 3:
        return frame
    if desc.photometric in ("YBR_FULL_422", "YBR_PARTIAL_422") and frame.shape[1] % 2 == 0:
        pairs = frame.reshape(frame.shape[0], frame.shape[1] // 2, 2, 3)
        out = np.empty((frame.shape[0], frame.shape[1] // 2, 4), frame.dtype)
        out[..., :2] = pairs[..., 0]
        out[..., 2:] = (pairs[..., 1:].astype(np.uint64).sum(axis=2) + 1) // 2
        return out
    if desc.planar == 1:
        return np.ascontiguousarray(frame.transpose(2, 0, 1))
    return frame


def to_stored_values(desc: PixelDesc, frame: np.ndarray) -> np.ndarray:
    """Interpret container values as stored values, in place: bits above BitsStored are masked off
    (unsigned) or replaced by the sign (signed), as pydicom's ``pixel_array`` does.
    """
    if desc.stored and frame.dtype.kind in "iu":
        if frame.dtype.kind == "u":
            np.bitwise_and(frame, frame.dtype.type((1 << desc.stored) - 1), out=frame)
        else:
            shift = frame.dtype.type(desc.bits - desc.stored)
            np.left_shift(frame, shift, out=frame)
            np.right_shift(frame, shift, out=frame)
    return frame
