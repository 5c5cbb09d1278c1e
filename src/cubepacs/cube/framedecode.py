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
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from cubepacs.cube import guard, rle, validate
from cubepacs.cube.codecs import native_call
from cubepacs.cube.format import WHOLE_VALUE
from cubepacs.cube.pixels import PixelDesc, to_stored_values
from cubepacs.cube.pydicomview import FrameView
from cubepacs.dicom.rawfile import KEY_OPAQUE, PIXEL_TAGS, inflate
from cubepacs.errors import CodecError, DicomReadError, InvalidCubeError

if TYPE_CHECKING:
    from cubepacs.cube.meta import DicomMeta

_ITEM, _DELIMITER = 0xE000FFFE, 0xE0DDFFFE


class WholeValues(Protocol):
    """What :func:`whole_frame` reads of a cube (``CubeReader`` has it; a protocol, so that this module does not
    import the reader that imports it)."""

    @property
    def meta(self) -> DicomMeta: ...

    @property
    def index(self) -> np.ndarray: ...

    @property
    def source(self) -> str: ...

    def _row(self, i: int, f: int) -> int: ...

    def _blob(self, row: int) -> memoryview: ...

    def _whole_size(self, i: int, d: PixelDesc, data: memoryview, row: int) -> int: ...

    def instance_bytes(self, i: int) -> bytes: ...


def whole_frame(reader: WholeValues, i: int, f: int, d: PixelDesc) -> np.ndarray:
    """Frame ``f`` of ``reader``'s instance ``i`` kept whole (``d``: its description): an encapsulated one from its
    stored value (RLE decoded in place, the others by pydicom's decoders given the frame alone), an opaque one by
    pydicom's native decoder reading the frame alone from the value decompressed as it is read
    (:func:`opaque_frame`), a deflated one by pydicom from the rebuilt instance. A value stored otherwise than its
    mode says (format.md: encapsulated raw, opaque zstd) is refused before it is read."""
    syntax, first, name, index = reader.meta.syntaxes[i], reader._row(i, 0), reader.meta.names[i], reader.index
    codec = -1
    if 0 <= first < len(index) and int(index[first]["instance"]) == i and int(index[first]["frame"]) == WHOLE_VALUE:
        codec = int(index[first]["codec"])
    block = f"frame {f} of {name}"
    if d.mode in ("encapsulated", "opaque") and codec != (0 if d.mode == "encapsulated" else 1):
        want = "raw" if d.mode == "encapsulated" else "zstd"
        raise InvalidCubeError(reader.source, block, f"an {d.mode} instance's value stored with codec {codec} "
                               f"(format.md: {want})")  # fmt: skip
    if d.mode == "encapsulated":
        value = reader._blob(first)
        arr = rle_frame(value, d, f, name) if syntax == guard.RLE else None
        return arr if arr is not None else encapsulated_frame(value, d, syntax, f, name)
    if d.mode == "opaque":
        refs = reader.meta.instance_refs(i).tolist()
        validate.check_element_list(refs, [reader.meta.pool_key(p) for p in refs], reader.source, i)
        value = reader._blob(first)
        size = reader._whole_size(i, d, value, first)
        tag, vr, declared = pixel_element(reader.meta, i)
        if declared is None:
            raise InvalidCubeError(reader.source, block, "an opaque value without a Pixel Data element of defined "
                                   "length")  # fmt: skip
        return opaque_frame(value, size, d, syntax, f, name, tag, vr)
    if d.mode == "file":  # pydicom inflates the body itself, unbounded: it must inflate within the bound first
        try:
            for p in reader.meta.instance_refs(i).tolist():
                if reader.meta.pool_key(p) == KEY_OPAQUE:
                    inflate(reader.meta.chunk(p), name)
        except DicomReadError as exc:
            raise CodecError(f"{name}: frame {f} cannot be decoded: {exc}") from None
    return decode_with_pydicom(reader.instance_bytes(i), f, name)


def pixel_element(meta: DicomMeta, i: int) -> tuple[int, str | None, int | None]:
    """Instance ``i``'s first top-level Pixel Data element header: (tag, VR of an explicit big endian one, defined
    length) — (0, None, None) when there is none, the length None when undefined."""
    for p in meta.instance_refs(i).tolist():
        key = meta.pool_key(p)
        if key in PIXEL_TAGS:
            head = meta.chunk(p)
            if len(head) < 8:
                return key, None, None
            big = meta.syntaxes[i] == "1.2.840.10008.1.2.2"
            n = int.from_bytes(head[-4:], "big" if big else "little")
            vr = bytes(head[4:6]).decode("ascii", "replace") if big and len(head) >= 12 else None
            return key, vr, None if n == 0xFFFFFFFF else n
    return 0, None, None


def fragment(value: memoryview, index: int, frames: int) -> memoryview | None:
    """Fragment ``index`` of an encapsulated value when it holds one fragment a frame (``frames`` of them: RLE's
    rule, PS3.5 A.4.2) and its Basic Offset Table, if any, lists them in order — a view, nothing copied; None
    otherwise (pydicom then finds the frame, following the table); :class:`CodecError` when the items run past
    the value."""
    n, pos, found, count = len(value), 0, None, -1  # count -1: the Basic Offset Table item comes first
    table, first, offsets = b"", 0, []
    while pos + 8 <= n and count <= frames:
        tag, length = struct.unpack_from("<II", value, pos)
        if tag == _DELIMITER:
            break
        if tag != _ITEM or pos + 8 + length > n:
            raise CodecError(f"encapsulated pixel data: item at {pos} is not an item inside the value")
        if count == -1:
            table, first = bytes(value[pos + 8 : pos + 8 + min(length, 4 * (frames + 1))]), pos + 8 + length
        else:
            offsets.append(pos - first)
        if count == index:
            found = value[pos + 8 : pos + 8 + length]
        count += 1
        pos += 8 + length
    if table and list(struct.unpack(f"<{len(table) // 4}I", table[: len(table) // 4 * 4])) != offsets:
        return None  # a Basic Offset Table that does not list the fragments in order: pydicom follows it
    return found if count == frames else None


def rle_frame(value: memoryview, d: PixelDesc, index: int, name: str) -> np.ndarray | None:
    """Frame ``index`` (stored values, as pydicom's ``pixel_array(raw=True)`` gives them) of an RLE instance whose
    whole Pixel Data value is ``value``; None when the value is not one fragment a frame or the description is one
    pydicom must judge (an odd Bits Allocated…)."""
    dtype = d.native_dtype
    if not (
        d.bits in (8, 16, 32, 64)
        and dtype.kind in "iu"
        and dtype.itemsize * 8 == d.bits
        and 1 <= d.spp <= 4
        and d.rows > 0
        and d.cols > 0
        and 0 <= index < d.frames
    ):
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


def _options(d: PixelDesc, **more: Any) -> dict[str, Any]:
    """pydicom's decoding options for a frame of description ``d`` (what it would read from the dataset)."""
    return {"rows": d.rows, "columns": d.cols, "samples_per_pixel": d.spp, "bits_allocated": d.bits,
            "bits_stored": d.stored or d.bits, "pixel_representation": int(d.signed),
            "photometric_interpretation": d.photometric, "number_of_frames": d.frames,
            "planar_configuration": d.planar, **more}  # fmt: skip


def encapsulated_frame(value: memoryview, d: PixelDesc, syntax: str, index: int, name: str) -> np.ndarray:
    """Frame ``index`` of an encapsulated instance (stored values, as ``pixel_array(raw=True)`` gives them) whose
    whole Pixel Data value is ``value`` and transfer syntax ``syntax``: pydicom's decoder for the syntax is given
    the value as a file it reads in place (``pydicomview.FrameView``) and the geometry of the instance's
    description — no dataset is parsed, so the work is bounded by the frame, not by the instance's metadata. A
    one-fragment frame's size and header (``guard.check_codestream``) are checked on a view of the value, and the
    decoder is given that view (``pydicomview.install``): nothing of the codestream is copied; a frame of several
    fragments is joined by pydicom (only its fragments are copied)."""
    from pydicom.pixels.decoders.base import get_decoder

    try:
        guard.check_geometry(d.rows, d.cols, d.spp, d.bits, d.frames, index)
        data = fragment(value, index, d.frames)
        if data is not None:  # size and header checked on the view, before pydicom copies the stream
            guard.check_codestream(syntax, data, d.rows, d.cols, d.spp, d.bits)
        opts = _options(d)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            src = FrameView(value, {} if data is None else {index: data})  # decoded from the view when found
            arr, _ = native_call("pydicom", get_decoder(syntax).as_array, src, index=index, raw=True, **opts)
        return np.asarray(arr)
    except Exception as exc:  # native_call made a decoder's panic an Exception
        raise CodecError(f"{name}: frame {index} cannot be decoded: {exc}") from None


NATIVE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2")
SKIP = 64 << 10  # the scratch buffer the value before a frame is decompressed into (1.08 GB/s here; 1 MiB: 0.93)
MAX_WINDOW = 8 << 20  # the largest Zstandard window an opaque value's frames are read through (the writer: 2 MiB)
_KEYWORDS = {0x7FE00010: "PixelData", 0x7FE00008: "FloatPixelData", 0x7FE00009: "DoubleFloatPixelData"}


def opaque_frame(
    value: memoryview, size: int, d: PixelDesc, syntax: str, index: int, name: str, tag: int, vr: str | None
) -> np.ndarray:
    """Frame ``index`` (stored values, as ``pixel_array(raw=True)`` gives them) of an ``opaque`` instance whose
    whole Pixel Data value, ``size`` bytes, is the Zstandard frame ``value`` and whose element is ``tag`` (VR
    ``vr``): pydicom's native decoder for the syntax, given the instance's geometry and the value as a file that
    decompresses as it is read (:class:`_Inflating`), reads the frame's bytes alone — the value before them is
    decompressed and discarded a chunk at a time, nothing after them at all. Time grows with the frame's offset,
    memory with the frame (a chunk, the frame's bytes, pydicom's array; the decoder's window, C memory, at most
    :data:`MAX_WINDOW`). The value's size was checked against its element and bounds by the reader."""
    from pydicom.pixels.decoders.base import get_decoder

    try:
        if syntax not in NATIVE or tag not in _KEYWORDS:
            raise CodecError(f"an opaque value under transfer syntax {syntax!r}, element {tag:08X}: not native data")
        guard.check_geometry(d.rows, d.cols, d.spp, d.bits, d.frames, index)
        guard.check_native_value(d.rows, d.cols, d.spp, d.bits, d.frames, d.photometric, size)
        expected = guard.native_value_bytes(d.rows, d.cols, d.spp, d.bits, d.frames, d.photometric)
        full = expected // 2 * 3  # pydicom's rule: a YBR_FULL_422 value as long as unsubsampled data is refused
        if d.photometric == "YBR_FULL_422" and size > expected + expected % 2 and size >= full + full % 2:
            raise CodecError(f"Pixel Data of {size} bytes is not subsampled: not YBR_FULL_422")
        if min(guard.zstd_window(value), size) > MAX_WINDOW:
            raise CodecError(f"a Zstandard window of {guard.zstd_window(value)} bytes (at most {MAX_WINDOW})")
        frame = d.rows * d.cols * d.spp * max(d.bits, 8) // 8
        opts = _options(d, pixel_keyword=_KEYWORDS[tag])
        if vr is not None:
            opts["pixel_vr"] = vr
        stream = _Inflating(value, size, min(max(frame, 64 << 10), 1 << 20))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr, _ = native_call("pydicom", get_decoder(syntax).as_array, stream, index=index, raw=True, **opts)
        return np.asarray(arr)
    except Exception as exc:  # native_call made a decoder's panic an Exception
        raise CodecError(f"{name}: frame {index} cannot be decoded: {exc}") from None


class _Inflating(RawIOBase):
    """A read-only file over the ``size`` bytes a Zstandard frame holds, decompressed as they are read (pyarrow's
    streaming decompressor): a forward seek costs decompressing up to it, a chunk at a time into one scratch
    buffer; a read after a backward seek starts over. A value of no random access read for one frame.

    Example
    -------
    >>> import imagecodecs
    >>> f = _Inflating(memoryview(imagecodecs.zstd_encode(bytes(range(200)) * 50)), 10000, 64)
    >>> _ = f.seek(1234); bytes(f.read(4)).hex(), f.tell()
    ('22232425', 1238)
    >>> _ = f.seek(0); bytes(f.read(2)).hex()
    '0001'
    """

    def __init__(self, value: memoryview, size: int, chunk: int) -> None:
        self.value, self.size, self.chunk = value, size, chunk
        self.pos, self._at, self._stream = 0, 0, None  # position asked, position decompressed, the decompressor

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = max(0, offset if whence == 0 else self.pos + offset if whence == 1 else self.size + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def _fill(self, view: memoryview) -> int:
        """Decompress into ``view`` (at most a chunk a call to the decompressor); the bytes written."""
        assert self._stream is not None
        done = 0
        while done < len(view):
            got = self._stream.readinto(view[done : done + self.chunk])
            if not got:
                break
            done += got
        self._at += done
        return done

    def read(self, size: int | None = -1) -> bytes:
        import pyarrow as pa

        end = self.size if size is None or size < 0 else min(self.pos + size, self.size)
        if end <= self.pos:
            return b""
        if self._stream is None or self._at > self.pos:
            self._stream = pa.CompressedInputStream(pa.BufferReader(pa.py_buffer(self.value)), "zstd")
            self._at = 0
        if self._at < self.pos:
            scratch = memoryview(bytearray(min(SKIP, self.chunk, self.pos - self._at)))
            while self._at < self.pos:
                if not self._fill(scratch[: self.pos - self._at]):
                    return b""  # the value ends before the position
            scratch.release()
        out = bytearray(end - self.pos)
        with memoryview(out) as view:
            done = self._fill(view)
        del out[done:]
        self.pos += done
        return out  # type: ignore[return-value]  # a bytearray: what pydicom reads the frame from, not copied


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
