"""Transcoding a stored instance to another transfer syntax without changing what it is.

The one place where an instance is re-encoded for a peer or a client (C-MOVE, C-GET, ``cubepacs send`` and
``/api/send``, WADO-RS). A transcoded copy keeps every element and value of the original — its SOP Instance UID
first of all (pydicom 3's ``Dataset.decompress`` and ``compress`` make a new one unless told not to) — except the
Transfer Syntax UID and the pixel encoding: Pixel Data, and where a decoder changes them with it, Photometric
Interpretation (YBR decoded to RGB), Planar Configuration and Number of Frames (the same count, written again).
Lossy Image Compression and its ratio/method are left as they were (PS3.3 C.7.6.1.1.5: once lossy, always
lossy; a lossless re-encoding adds nothing).

What is done, by case (``stored`` → ``target``):

* the same syntax: the stored bytes;
* Deflated Explicit VR Little Endian ↔ Explicit VR Little Endian: the dataset bytes inflated or deflated, not
  parsed (so not a byte of the dataset changes);
* an encapsulated syntax without Pixel Data → Explicit VR Little Endian: the dataset bytes as they are (every
  encapsulated syntax encodes the dataset in Explicit VR Little Endian), nothing decoded;
* otherwise the dataset is read with pydicom, its pixels decoded by pydicom where they are compressed (or
  swapped where big endian), then written in the target: uncompressed (Explicit or Implicit VR Little Endian,
  Deflated), or encoded losslessly with pydicom's encoders (RLE Lossless, JPEG-LS Lossless, JPEG 2000 Lossless,
  where the encoder's plugin is installed: :func:`can_encode`).

A lossy target is produced only from an instance stored in it (as stored); anything else is a
:class:`~cubepacs.errors.CodecError` naming the instance and both syntaxes.

Example
-------
>>> can_encode("1.2.840.10008.1.2.1"), can_encode("1.2.840.10008.1.2.4.50")
(True, False)
>>> [lossless_rank(ts) for ts in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.50")]
[0, 5, None]
"""

from __future__ import annotations

import warnings
import zlib
from io import BytesIO
from typing import Any

from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from cubepacs.errors import CodecError

EXPLICIT_LE = str(ExplicitVRLittleEndian)
IMPLICIT_LE = str(ImplicitVRLittleEndian)
DEFLATED = str(DeflatedExplicitVRLittleEndian)
BIG_ENDIAN = str(ExplicitVRBigEndian)
UNCOMPRESSED = (EXPLICIT_LE, IMPLICIT_LE)
# what an instance can be re-encoded to without losing anything, best first: Explicit VR LE keeps every VR,
# deflate is Explicit VR LE compressed, the lossless codecs next, Implicit VR LE last (private elements lose their
# VR: read back as UN)
LOSSLESS_ORDER = (EXPLICIT_LE, DEFLATED, str(JPEGLSLossless), str(RLELossless), str(JPEG2000Lossless), IMPLICIT_LE)
_ENCODED = (str(JPEGLSLossless), str(RLELossless), str(JPEG2000Lossless))


def can_encode(syntax: str) -> bool:
    """Whether any instance can be re-encoded in ``syntax`` losslessly here (its encoder's plugin installed)."""
    if syntax in (EXPLICIT_LE, IMPLICIT_LE, DEFLATED):
        return True
    if syntax not in _ENCODED:
        return False
    from pydicom.pixels.encoders.base import get_encoder

    return bool(get_encoder(syntax).is_available)


def lossless_rank(syntax: str) -> int | None:
    """Where ``syntax`` stands in :data:`LOSSLESS_ORDER` when it can be encoded here (0 best); None otherwise."""
    return LOSSLESS_ORDER.index(syntax) if syntax in LOSSLESS_ORDER and can_encode(syntax) else None


def dataset_offset(data: bytes | memoryview) -> int:
    """Where the dataset starts in a Part 10 file (after the preamble and group 0002, always Explicit VR LE).

    Example
    -------
    >>> dataset_offset(bytes(128) + b"DICM")
    132
    """
    import struct

    pos = 132 if bytes(data[128:132]) == b"DICM" else 0
    while pos + 8 <= len(data):
        group, _ = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            break
        vr = bytes(data[pos + 4:pos + 6])
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            pos += 12 + struct.unpack_from("<I", data, pos + 8)[0]
        else:
            pos += 8 + struct.unpack_from("<H", data, pos + 6)[0]
    return pos


def stored_syntax(data: bytes) -> str:
    """The transfer syntax a Part 10 file is in: its Transfer Syntax UID, or for a file without one the encoding
    its dataset starts in; "" when it is not DICOM.

    Example
    -------
    >>> from pathlib import Path
    >>> stored_syntax(Path("../shared/data/single/rle_rgb_sc.dcm").read_bytes())
    '1.2.840.10008.1.2.5'
    """
    from cubepacs.dicom.rawfile import read_meta

    try:
        return read_meta(data)[0].transfer_syntax
    except Exception:
        return ""


def _deflate(dataset: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = c.compress(dataset) + c.flush()
    return out + b"\x00" if len(out) % 2 else out


def _inflate(dataset: bytes) -> bytes:
    return zlib.decompress(dataset, -zlib.MAX_WBITS)


def _read(data: bytes) -> Any:
    import pydicom

    return pydicom.dcmread(BytesIO(data), force=True)


def _stored_syntax(ds: Any) -> str:
    """The file's Transfer Syntax UID; for a file without one, the encoding pydicom found its dataset in."""
    found = str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", "") or "")
    if found:
        return found
    implicit, little = ds.original_encoding
    return IMPLICIT_LE if implicit else (EXPLICIT_LE if little else BIG_ENDIAN)


def is_encapsulated(syntax: str) -> bool:
    """Whether ``syntax`` encapsulates its Pixel Data (JPEG, JPEG-LS, JPEG 2000, RLE, …): not one of the native
    ones (Implicit/Explicit VR Little Endian, Big Endian, Deflated), nor an unknown or private UID."""
    try:
        return bool(UID(syntax).is_encapsulated)
    except ValueError:
        return False


def _native(ds: Any, stored: str) -> None:
    """Pixel Data of ``ds`` (read from ``stored``) made native little endian, every other element kept."""
    if "PixelData" not in ds:
        return
    if is_encapsulated(stored):
        ds.decompress(generate_instance_uid=False)
    elif stored == BIG_ENDIAN:
        import numpy as np

        arr = np.asarray(ds.pixel_array)
        if int(ds.get("SamplesPerPixel", 1)) > 1:
            ds.PlanarConfiguration = 0  # pixel_array is interleaved whatever the stored layout
        if int(ds.BitsAllocated) == 1:
            from pydicom.pixels.utils import pack_bits

            ds.PixelData = pack_bits(arr)
        else:
            ds.PixelData = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"))).tobytes()
        ds["PixelData"].VR = "OW" if int(ds.BitsAllocated) > 8 else "OB"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def _encode(ds: Any, syntax: str) -> bytes:
    """The dataset of ``ds`` (native pixels) written in ``syntax``: its bytes after the file meta."""
    from pydicom.filewriter import write_dataset

    if syntax in _ENCODED:
        if "PixelData" in ds:
            ds.compress(syntax, generate_instance_uid=False)
        syntax_uid = UID(syntax)
    else:
        syntax_uid = UID(IMPLICIT_LE if syntax == IMPLICIT_LE else EXPLICIT_LE)
    out = BytesIO()
    from pydicom.filebase import DicomFileLike

    fp = DicomFileLike(out)
    fp.is_little_endian = True
    fp.is_implicit_VR = syntax_uid == IMPLICIT_LE
    write_dataset(fp, ds)
    encoded = out.getvalue()
    return _deflate(encoded) if syntax == DEFLATED else encoded


def transcode_dataset(data: bytes, syntax: str) -> bytes:
    """The dataset of the Part 10 file ``data`` (everything after its file meta) encoded in ``syntax``.

    Raises :class:`~cubepacs.errors.CodecError` (naming the instance and both syntaxes) when it cannot be done
    losslessly: a lossy or unknown target the instance is not stored in, pixel data no decoder reads.

    Example
    -------
    >>> from pathlib import Path
    >>> data = Path("../shared/data/single/rle_rgb_sc.dcm").read_bytes()
    >>> len(transcode_dataset(data, "1.2.840.10008.1.2.1")) > 100 * 100 * 3  # the RGB values, decoded
    True
    """
    return _transcode(data, syntax)[0]


def transcode_file(data: bytes, syntax: str) -> bytes:
    """The Part 10 file ``data`` in ``syntax``: its file meta kept (Transfer Syntax UID changed, group length
    recomputed), its dataset from :func:`transcode_dataset`; ``data`` itself when already in ``syntax``.

    Example
    -------
    >>> from pathlib import Path
    >>> import pydicom
    >>> data = Path("../shared/data/single/rle_rgb_sc.dcm").read_bytes()
    >>> out = pydicom.dcmread(BytesIO(transcode_file(data, "1.2.840.10008.1.2.1")))
    >>> out.SOPInstanceUID == pydicom.dcmread(BytesIO(data)).SOPInstanceUID, out.file_meta.TransferSyntaxUID
    (True, '1.2.840.10008.1.2.1')
    """
    body, meta, ids = _transcode(data, syntax)
    if not ids:
        return data
    sop_class, sop_uid = ids
    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info

    fm = FileMetaDataset(meta) if meta is not None else FileMetaDataset()
    fm.TransferSyntaxUID = UID(syntax)
    # a file that came without them gets the two a Part 10 file needs, from its dataset
    if not fm.get("MediaStorageSOPClassUID") and sop_class:
        fm.MediaStorageSOPClassUID = UID(sop_class)
    if not fm.get("MediaStorageSOPInstanceUID") and sop_uid:
        fm.MediaStorageSOPInstanceUID = UID(sop_uid)
    if "FileMetaInformationGroupLength" in fm:
        del fm.FileMetaInformationGroupLength
    out = BytesIO()
    out.write(bytes(128) + b"DICM")
    from pydicom.filebase import DicomFileLike

    # (a dataset without SOP Class/Instance UIDs, which no archive keeps, is written without them)
    complete = bool(fm.get("MediaStorageSOPClassUID") and fm.get("MediaStorageSOPInstanceUID"))
    write_file_meta_info(DicomFileLike(out), fm, enforce_standard=complete)
    return out.getvalue() + body


def _transcode(data: bytes, syntax: str) -> tuple[bytes, Any, tuple[str, ...]]:
    """(dataset bytes in ``syntax``, the original file meta, (SOP Class UID, SOP Instance UID)); the last empty
    when ``data`` is already in ``syntax``."""
    from cubepacs.dicom.rawfile import PIXEL_TAGS, split_file

    offset = dataset_offset(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = _read(data)
        except Exception as exc:
            raise CodecError(f"instance cannot be read to transcode it to {syntax}: {exc}") from None
        stored = _stored_syntax(ds)
        meta = getattr(ds, "file_meta", None)
        ids = (str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", "")))
        where = f"instance {ids[1] or '?'}: cannot transcode {stored} to {syntax}"
        if stored == syntax:
            return data[offset:], meta, ()
        if not can_encode(syntax):
            raise CodecError(f"{where}: not a syntax it can be re-encoded to losslessly")
        dataset = data[offset:]
        if stored == DEFLATED and syntax == EXPLICIT_LE:  # byte-preserving: nothing parsed again
            return _inflate(dataset), meta, ids
        try:
            raw = split_file(data)
        except Exception as exc:  # truncated, elements past the end: only its own bytes can be trusted
            raise CodecError(f"{where}: the stored file is damaged ({exc})") from None
        pixel_tag = raw.pixel_tag if stored != DEFLATED else next((t for t in PIXEL_TAGS if t in ds), None)
        if pixel_tag is not None and pixel_tag != 0x7FE00010 and is_encapsulated(syntax):
            raise CodecError(f"{where}: float pixel data has no encapsulated form")
        if pixel_tag is None or stored == EXPLICIT_LE:
            # an encapsulated syntax's dataset is Explicit VR LE: without Pixel Data, nothing to decode
            if syntax == DEFLATED and (stored == EXPLICIT_LE or is_encapsulated(stored)):
                return _deflate(dataset), meta, ids
            if syntax == EXPLICIT_LE and is_encapsulated(stored):
                return dataset, meta, ids
        if not getattr(ds, "file_meta", None) or "TransferSyntaxUID" not in ds.file_meta:
            from pydicom.dataset import FileMetaDataset

            ds.file_meta = FileMetaDataset(getattr(ds, "file_meta", None) or {})
            ds.file_meta.TransferSyntaxUID = UID(stored)
        try:
            _native(ds, stored)
            return _encode(ds, syntax), meta, ids
        except Exception as exc:  # a codec's own errors, numpy's: the stored pixel data is at fault
            raise CodecError(f"{where}: {type(exc).__name__}: {str(exc)[:200]}") from None
