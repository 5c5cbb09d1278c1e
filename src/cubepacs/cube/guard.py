"""Codestream headers read in Python before any native decoder sees the bytes.

A crafted codestream can kill the process inside a C decoder (a JPEG 2000 tile width of 0 is a division by zero
in OpenJPH). So every frame is decoded only once its header has been parsed here, every size bounded, and found
to agree with the geometry the frame index and the DICOM header declare. Failures are
:class:`~cubepacs.errors.CodecError` saying what disagrees.

Example
-------
>>> import numpy as np, imagecodecs
>>> frame = np.zeros((16, 24), np.uint16)
>>> j2k_header(imagecodecs.htj2k_encode(frame))
(16, 24, 1, 16)
>>> check(2, imagecodecs.htj2k_encode(frame), (16, 24), 16)
>>> check(2, imagecodecs.htj2k_encode(frame), (24, 16), 16)
Traceback (most recent call last):
...
cubepacs.errors.CodecError: HTJ2K codestream is 16 rows × 24 columns × 1 samples, 16 bits; expected 24 × 16 × 1
"""

from __future__ import annotations

import itertools
import struct

from cubepacs.cube.jpegstream import JPEG_SOF, jpeg_header, jpeg_sof, scans_over, u16
from cubepacs.errors import CodecError

MAX_DIM = 65535  # DICOM Rows/Columns are US
MAX_TILES = 65535


def j2k_header(data: bytes | memoryview) -> tuple[int, int, int, int]:
    """(rows, columns, components, bits) of a JPEG 2000 / HTJ2K codestream, after checking SIZ and COD."""
    b = bytes(data[:65536])
    start = b.find(b"\xff\x4f\xff\x51")  # SOC then SIZ (a JP2 wrapper may come first)
    if start < 0:
        raise CodecError("not a JPEG 2000 codestream (no SOC/SIZ)")
    pos = start + 4
    if pos + 38 > len(b):
        raise CodecError("JPEG 2000 SIZ segment truncated")
    lsiz, _rsiz, x, y, xo, yo, xt, yt, xto, yto, c = struct.unpack_from(">HHIIIIIIIIH", b, pos)
    if not 1 <= c <= 4 or lsiz != 38 + 3 * c or pos + lsiz > len(b):
        raise CodecError(f"JPEG 2000 SIZ: {c} components or length {lsiz} not supported")
    if not (x > xo and y > yo and xt and yt and xto <= xo and yto <= yo and xto + xt > xo and yto + yt > yo):
        raise CodecError("JPEG 2000 SIZ: inconsistent image/tile geometry")
    rows, cols = y - yo, x - xo
    if rows > MAX_DIM or cols > MAX_DIM:
        raise CodecError(f"JPEG 2000 SIZ: {rows} × {cols} exceeds {MAX_DIM}")
    tiles = -(-(x - xto) // xt) * -(-(y - yto) // yt)
    if tiles > MAX_TILES:
        raise CodecError(f"JPEG 2000 SIZ: {tiles} tiles")
    bits = 0
    for k in range(c):
        ssiz, xr, yr = b[pos + 38 + 3 * k : pos + 41 + 3 * k]
        if xr != 1 or yr != 1:
            raise CodecError("JPEG 2000 SIZ: subsampled components are not supported")
        depth = (ssiz & 0x7F) + 1
        if depth > 16 or (bits and depth != bits):
            raise CodecError(f"JPEG 2000 SIZ: component depth {depth}")
        bits = depth
    pos += lsiz
    while pos + 4 <= len(b):  # main header markers up to the first tile (SOT)
        marker, length = u16(b, pos), u16(b, pos + 2)
        if marker == 0xFF90 or length < 2:
            break
        if marker == 0xFF52:  # COD: decomposition levels and code-block size
            if pos + 14 > len(b):
                raise CodecError("JPEG 2000 COD segment truncated")
            layers, levels, xcb, ycb = u16(b, pos + 6), b[pos + 9], b[pos + 10], b[pos + 11]
            if not layers or levels > 32 or xcb > 8 or ycb > 8 or xcb + ycb > 8:
                raise CodecError(f"JPEG 2000 COD: {levels} levels, code-blocks 2^{xcb + 2} × 2^{ycb + 2}")
        pos += 2 + length
    return rows, cols, c, bits


def jxl_header(data: bytes | memoryview) -> tuple[int, int]:
    """(rows, columns) from the SizeHeader of a JPEG XL codestream (bare, or in its ISO BMFF container)."""
    b = bytes(data[:4096])
    if b[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n":
        pos = 0
        while pos + 8 <= len(b):
            size, kind = struct.unpack_from(">I4s", b, pos)
            head = 8
            if size == 1 and pos + 16 <= len(b):
                size, head = int.from_bytes(b[pos + 8 : pos + 16], "big"), 16
            if kind in (b"jxlc", b"jxlp"):
                b = b[pos + head + (4 if kind == b"jxlp" else 0) :]
                break
            if size < head:
                raise CodecError("JPEG XL container: bad box size")
            pos += size
        else:
            raise CodecError("JPEG XL container without a codestream box in its first 4 KB")
    if b[:2] != b"\xff\x0a":
        raise CodecError("not a JPEG XL codestream")
    bitpos = 16

    def bits(n: int) -> int:
        nonlocal bitpos
        v = 0
        for k in range(n):
            byte = bitpos >> 3
            if byte >= len(b):
                raise CodecError("JPEG XL header truncated")
            v |= ((b[byte] >> (bitpos & 7)) & 1) << k
            bitpos += 1
        return v

    def u32() -> int:
        return 1 + bits((9, 13, 18, 30)[bits(2)])

    ratios = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}
    if bits(1):  # small
        rows = (bits(5) + 1) * 8
        ratio = bits(3)
        cols = (bits(5) + 1) * 8 if ratio == 0 else 0
    else:
        rows = u32()
        ratio = bits(3)
        cols = u32() if ratio == 0 else 0
    if ratio:
        num, den = ratios[ratio]
        cols = rows * num // den
    return rows, cols


def rle_header(data: bytes | memoryview, segments: int) -> None:
    """Check a DICOM RLE frame header: ``segments`` segments with increasing offsets inside the frame."""
    if len(data) < 64:
        raise CodecError("RLE frame shorter than its 64-byte header")
    n, *offsets = struct.unpack_from("<16I", data, 0)
    if n != segments or offsets[0] != 64:
        raise CodecError(f"RLE header: {n} segments, expected {segments}")
    used = offsets[:n]
    if any(a >= b for a, b in itertools.pairwise(used)) or used[-1] >= len(data):
        raise CodecError("RLE header: segment offsets out of order or beyond the frame")


def blosc2_header(data: bytes | memoryview, nbytes: int) -> None:
    """Check a Blosc2 chunk header: ``nbytes`` uncompressed, its own length compressed."""
    if len(data) < 32:
        raise CodecError("Blosc2 chunk shorter than its header")
    version, _lz, _flags, typesize, size, blocksize, cbytes = struct.unpack_from("<BBBBIII", data, 0)
    if not (
        1 <= version <= 5
        and typesize
        and size == nbytes
        and cbytes == len(data)
        and 0 < blocksize
        and blocksize <= max(size, 1 << 20)
    ):
        raise CodecError(
            f"Blosc2 header: {size} bytes of {typesize}-byte items in {cbytes}; expected {nbytes} in {len(data)}"
        )


def zstd_size(data: bytes | memoryview) -> int:
    """The content size a Zstandard frame declares (CodecError when it declares none)."""
    b = bytes(data[:18])
    if b[:4] != b"\x28\xb5\x2f\xfd" or len(b) < 6:
        raise CodecError("not a Zstandard frame")
    fhd = b[4]
    fcs_flag, single, dict_flag = fhd >> 6, (fhd >> 5) & 1, fhd & 3
    pos = 5 + (0 if single else 1) + (0, 1, 2, 4)[dict_flag]
    width = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if not width or pos + width > len(b):
        raise CodecError("Zstandard frame without a content size")
    value = int.from_bytes(b[pos : pos + width], "little")
    return value + 256 if width == 2 else value


def zstd_window(data: bytes | memoryview) -> int:
    """The window a Zstandard frame declares: what a streaming decoder keeps of the output (its content size when
    the frame is one segment). ``zstd`` level 3, the writer's, declares at most 2 MiB.

    Example
    -------
    >>> import imagecodecs
    >>> zstd_window(imagecodecs.zstd_encode(bytes(1000))), zstd_window(imagecodecs.zstd_encode(bytes(1 << 24)))
    (1000, 2097152)
    """
    b = bytes(data[:6])
    if b[:4] != b"\x28\xb5\x2f\xfd" or len(b) < 6:
        raise CodecError("not a Zstandard frame")
    if (b[4] >> 5) & 1:  # single segment: the window is the content
        return zstd_size(data)
    base = 1 << (10 + (b[5] >> 3))
    return base + base // 8 * (b[5] & 7)


def ends_complete(data: bytes | memoryview, what: str) -> None:
    """A JPEG-LS (or JPEG 2000) codestream ends with its EOI (EOC) marker, ``FF D9``, maybe followed by a few bytes
    of padding (``00`` or ``FF``: DICOM fragments have an even length). CharLS spent 4–8 s on a truncated 7 KB
    JPEG-LS stream of a 384 × 384 frame (found by the codestream harness) and fails at once when the stream is
    complete, so an incomplete one is refused before it is decoded.

    Example
    -------
    >>> ends_complete(bytes.fromhex("ffd8 0102 ffd9 00"), "JPEG-LS")
    >>> ends_complete(bytes.fromhex("ffd8 0102 1234"), "JPEG-LS")
    Traceback (most recent call last):
    ...
    cubepacs.errors.CodecError: JPEG-LS codestream does not end with its end marker (truncated, or bytes after it?)
    """
    tail = bytes(data[-16:]).rstrip(b"\x00\xff") if len(data) >= 2 else b""
    if not tail.endswith(b"\xff\xd9") and not bytes(data[-16:]).rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise CodecError(f"{what} codestream does not end with its end marker (truncated, or bytes after it?)")


def work_bound(frame_bytes: int, factor: int) -> int:
    """The largest codestream a decoder is given for a frame of ``frame_bytes`` bytes: ``factor`` times the frame
    and 64 KB of headers. A decoder's work grows with its input; a corrupted stream far larger than any encoder
    writes for the frame is refused before a decoder spends seconds on it.

    Example
    -------
    >>> work_bound(512 * 512 * 2, 2)
    1114112
    """
    return factor * frame_bytes + 65536


def check(codec_id: int, data: bytes | memoryview, shape: tuple[int, ...], bits: int) -> None:
    """Check a cube frame blob for codec ``codec_id`` against its frame shape and bits per sample."""
    rows, cols = shape[0], shape[1]
    spp = shape[2] if len(shape) > 2 else 1
    nbytes = rows * cols * spp * max(bits // 8, 1)
    if codec_id in (2, 3, 4) and (bits not in (8, 16) or spp not in (1, 3)):
        raise CodecError(f"an image codec for {bits}-bit samples × {spp}: the writer never makes one")
    if codec_id in (2, 3, 4) and len(data) > work_bound(nbytes, 2):
        raise CodecError(
            f"a {len(data)}-byte codestream for a frame of {nbytes} bytes: a lossless encoder never writes that much"
        )
    if codec_id == 2:
        ends_complete(data, "HTJ2K")
        got = j2k_header(data)
        if got[:3] != (rows, cols, spp) or got[3] > bits:
            raise CodecError(
                f"HTJ2K codestream is {got[0]} rows × {got[1]} columns × {got[2]} samples, "
                f"{got[3]} bits; expected {rows} × {cols} × {spp}"
            )
    elif codec_id == 3:
        ends_complete(data, "JPEG-LS")
        got = jpeg_header(data)
        if got[:3] != (rows, cols, spp) or got[3] > bits:
            raise CodecError(f"JPEG-LS codestream is {got[0]} × {got[1]} × {got[2]}; expected {rows} × {cols} × {spp}")
    elif codec_id == 4:
        if jxl_header(data) != (rows, cols):
            raise CodecError(f"JPEG XL codestream is {jxl_header(data)}; expected {rows} × {cols}")
    elif codec_id == 5:
        blosc2_header(data, nbytes)
    elif codec_id == 1:
        if zstd_size(data) != nbytes:
            raise CodecError(f"Zstandard frame declares {zstd_size(data)} bytes; expected {nbytes}")
    elif codec_id == 0:
        if len(data) != nbytes:
            raise CodecError(f"raw frame of {len(data)} bytes; expected {nbytes}")


J2K = (
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.92",
    "1.2.840.10008.1.2.4.93",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
)
JPEG = (
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
)
RLE = "1.2.840.10008.1.2.5"
JPEG_LS = ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81")


def native_value_bytes(rows: int, cols: int, spp: int, bits: int, frames: int, photometric: str = "") -> int:
    """The bytes ``frames`` native frames take in a Pixel Data value (PS3.5 8.1.1, 8.2): bits packed without gaps
    across frames (Bits Allocated 1), a pair of pixels as four samples for YBR_FULL_422 / YBR_PARTIAL_422.

    Example
    -------
    >>> native_value_bytes(512, 512, 1, 16, 2), native_value_bytes(3, 3, 1, 1, 1)
    (1048576, 2)
    >>> native_value_bytes(2, 4, 3, 8, 1, "YBR_FULL_422")
    16
    """
    samples = 2 if spp == 3 and photometric in ("YBR_FULL_422", "YBR_PARTIAL_422") else spp
    return (frames * rows * cols * samples * bits + 7) // 8


def check_geometry(rows: int, cols: int, spp: int, bits: int, frames: int, index: int) -> None:
    """The image pixel attributes of a frame pydicom is to decode, bounded: rows and columns 1–65535, 1–4 samples
    (0 is invalid, not 1), Bits Allocated 1, 8, 16, 32 or 64, 1–2²⁴ frames, ``index`` one of them, a frame of at
    most 2 GiB.

    Example
    -------
    >>> check_geometry(512, 512, 1, 16, 1, 0)
    >>> check_geometry(512, 512, 0, 16, 1, 0)
    Traceback (most recent call last):
    ...
    cubepacs.errors.CodecError: image geometry out of bounds: 512 × 512 × 0, 16 bits, frame 1 of 1
    """
    if not (
        0 < rows <= MAX_DIM
        and 0 < cols <= MAX_DIM
        and 1 <= spp <= 4
        and bits in (1, 8, 16, 32, 64)
        and 0 < frames <= 1 << 24
        and 0 <= index < frames
    ):
        raise CodecError(
            f"image geometry out of bounds: {rows} × {cols} × {spp}, {bits} bits, frame {index + 1} of {frames}"
        )
    if rows * cols * spp * max(bits, 8) // 8 > 1 << 31:
        raise CodecError("a frame larger than 2 GiB")


def check_dicom_frame(ds: object, index: int) -> None:
    """Before pydicom decodes frame ``index`` of a dataset: bounded geometry (Samples per Pixel 1–4: 0 is invalid,
    not 1; only an absent one means 1); for native syntaxes a Pixel Data value that holds every frame the
    attributes declare (frames × frame size ≤ its length); for encapsulated ones a codestream of a bounded size
    whose header agrees with Rows, Columns, Samples per Pixel and Bits.

    Example
    -------
    >>> from pydicom import Dataset
    >>> from pydicom.dataset import FileMetaDataset
    >>> ds = Dataset(); ds.file_meta = FileMetaDataset(); ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    >>> ds.Rows, ds.Columns, ds.BitsAllocated, ds.NumberOfFrames, ds.PixelData = 4, 4, 16, 2, bytes(32)
    >>> check_dicom_frame(ds, 1)
    Traceback (most recent call last):
    ...
    cubepacs.errors.CodecError: Pixel Data holds 32 bytes; 2 frames of 4 × 4 × 1, 16 bits need 64
    >>> ds.SamplesPerPixel = 0; check_dicom_frame(ds, 0)
    Traceback (most recent call last):
    ...
    cubepacs.errors.CodecError: image geometry out of bounds: 4 × 4 × 0, 16 bits, frame 1 of 2
    """
    from pydicom.encaps import get_frame

    get = getattr(ds, "get")  # noqa: B009 - a pydicom Dataset, typed loosely to keep pydicom out of the signature
    try:
        rows, cols = int(get("Rows", 0) or 0), int(get("Columns", 0) or 0)
        spp_value = get("SamplesPerPixel")
        spp = 1 if spp_value is None or spp_value == "" else int(spp_value)
        bits = int(get("BitsAllocated", 0) or 0)
        frames = int(get("NumberOfFrames", 1) or 1)
        photometric = str(get("PhotometricInterpretation", "") or "")
    except (TypeError, ValueError) as exc:
        raise CodecError(f"image pixel attributes cannot be read: {exc}") from None
    check_geometry(rows, cols, spp, bits, frames, index)
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", ""))
    if ts not in J2K and ts not in JPEG and ts != RLE:
        value = next(
            (v for v in (get(k) for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")) if v is not None),
            None,
        )
        check_native_value(rows, cols, spp, bits, frames, photometric, None if value is None else len(value))
        return
    try:
        data = get_frame(get("PixelData"), index, number_of_frames=frames)
    except Exception as exc:
        raise CodecError(f"frame {index + 1} cannot be found in the encapsulated pixel data: {exc}") from None
    try:
        check_codestream(ts, data, rows, cols, spp, bits)
    except CodecError as exc:
        raise CodecError(f"frame {index + 1}: {exc}") from None


def check_native_value(
    rows: int, cols: int, spp: int, bits: int, frames: int, photometric: str, length: int | None
) -> None:
    """A native Pixel Data value of ``length`` bytes (None: no value) holds every frame the attributes declare
    (:func:`native_value_bytes`).

    Example
    -------
    >>> check_native_value(4, 4, 1, 16, 2, "MONOCHROME2", 64)
    >>> check_native_value(4, 4, 1, 16, 2, "MONOCHROME2", 32)
    Traceback (most recent call last):
    ...
    cubepacs.errors.CodecError: Pixel Data holds 32 bytes; 2 frames of 4 × 4 × 1, 16 bits need 64
    """
    need = native_value_bytes(rows, cols, spp, bits, frames, photometric)
    if length is None or length < need:
        raise CodecError(
            f"Pixel Data holds {length or 0} bytes; {frames} frames of {rows} × {cols} × {spp}, {bits} bits need {need}"
        )


def check_codestream(ts: str, data: bytes | memoryview, rows: int, cols: int, spp: int, bits: int) -> None:
    """The codestream of one frame under transfer syntax ``ts``, checked against the frame's geometry before any
    decoder (or a copy) sees it: at most :func:`work_bound` (4 × the frame + 64 KB), an RLE header of samples ×
    bytes segments, a JPEG-LS stream — or any JPEG / J2K stream larger than its frame — that ends with its end
    marker (nothing trails a stream the decoder is given), a JPEG / JPEG-LS / J2K header (SOF, SIZ) of these rows,
    columns and samples and at most these bits; a JPEG stream of its syntax's process (:data:`JPEG_SOF`: no
    progressive or hierarchical stream, whose scans multiply the work) with at most one scan a component. Reads
    the stream's first 64 KB and last 16 bytes, and a JPEG stream's scan markers in place, so
    ``data`` may be a view of a larger value. Other syntaxes: only the size bound.

    Example
    -------
    >>> import numpy as np, imagecodecs
    >>> stream = imagecodecs.htj2k_encode(np.zeros((16, 24), np.uint16))
    >>> check_codestream(J2K[-1], stream, 16, 24, 1, 16)
    >>> check_codestream(J2K[-1], stream, 16, 2, 1, 16)
    Traceback (most recent call last):
    ...
    cubepacs.errors.CodecError: codestream is 16 × 24 × 1, 16 bits; the dataset says 16 × 2 × 1, 16 bits
    """
    if len(data) > work_bound(rows * cols * spp * max(bits, 8) // 8, 4):
        raise CodecError(f"a {len(data)}-byte codestream for a frame of {rows} × {cols} × {spp}, {bits} bits")
    if ts == RLE:
        rle_header(data, spp * max(bits // 8, 1))
        return
    if ts not in J2K and ts not in JPEG:
        return
    if ts in JPEG_LS or len(data) > rows * cols * spp * max(bits, 8) // 8:  # larger than its frame: nothing trails
        ends_complete(data, "JPEG-LS" if ts in JPEG_LS else "JPEG 2000" if ts in J2K else "JPEG")
    if ts in J2K:
        got = j2k_header(data)
    else:  # a sequential or lossless process (its syntax's SOF), each component in one scan: scans ≤ components
        sof, r, c, n, b = jpeg_sof(data)
        got = (r, c, n, b)
        if sof not in JPEG_SOF[ts]:
            raise CodecError(f"a JPEG stream of SOF{sof - 0xC0} (marker FF{sof:02X}) under transfer syntax {ts}")
        if scans_over(data, got[2], ts in JPEG_LS):
            raise CodecError(f"a JPEG stream of more scans than its {got[2]} components")
    if got[:3] != (rows, cols, spp) or got[3] > max(bits, 8):
        raise CodecError(
            f"codestream is {got[0]} × {got[1]} × {got[2]}, {got[3]} bits; the dataset says "
            f"{rows} × {cols} × {spp}, {bits} bits"
        )
