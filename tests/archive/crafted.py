"""Odd instances the real data set lacks, made in the tests from real files (each function says what it changes).

Synthetic by necessity: no file of ../shared/data has an IS value "1A", hundreds of nested sequences, undecodable
JPEG fragments, a re-sent SOP Instance UID with other content, or every element tagged UN.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, generate_uid

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
CT = DATA / "single" / "ct_ge_small_signed.dcm"
IMPLICIT_MR = sorted((DATA / "series" / "mr_ge_signa_3dt1_100sl").iterdir())[0]


def _save(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def renamed(path: Path = CT, study: str | None = None, series: str | None = None) -> bytes:
    """A real file with new SOP (and optionally study/series) UIDs."""
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    return _save(ds)


def variant(data: bytes, name: str, pixel_delta: int) -> bytes:
    """The same instance (same UIDs) with another patient name and pixels shifted by ``pixel_delta``."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.PatientName = name
    arr = ds.pixel_array + pixel_delta
    ds.PixelData = arr.astype(ds.pixel_array.dtype).tobytes()
    return _save(ds)


def poison_is(path: Path = CT) -> bytes:
    """A real CT with InstanceNumber (IS) encoded as the value "1A", which no reader can convert."""
    data = renamed(path)
    ds = pydicom.dcmread(io.BytesIO(data))
    raw = ds.get_item(0x00200013)
    old = struct.pack("<HH", 0x0020, 0x0013) + b"IS" + struct.pack("<H", len(raw.value)) + raw.value
    assert data.count(old) == 1
    value = b"1A"
    return data.replace(old, struct.pack("<HH", 0x0020, 0x0013) + b"IS" + struct.pack("<H", 2) + value)


def undecodable_pixels(path: Path = CT) -> bytes:
    """A real CT whose pixel data is declared JPEG Baseline but holds a fragment of garbage."""
    ds = pydicom.dcmread(io.BytesIO(renamed(path)))
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xdb" + b"\x13" * 200])
    ds["PixelData"].VR = "OB"
    return _save(ds)


def deep_nesting(levels: int = 300, path: Path = CT, defined: bool = False) -> bytes:
    """A real CT (explicit VR LE) with a Content Sequence nested ``levels`` deep, written byte by byte with
    undefined lengths (pydicom itself cannot write that deep) or, with ``defined``, with every sequence and item
    length given; placed in tag order."""
    from cubepacs.dicom.rawfile import KEY_PIXEL_VALUE, split_file

    inner = struct.pack("<HH", 0x0008, 0x0100) + b"SH" + struct.pack("<H", 2) + b"X "
    for _ in range(levels):
        if defined:
            item = struct.pack("<HHI", 0xFFFE, 0xE000, len(inner)) + inner
            inner = struct.pack("<HH", 0x0040, 0xA730) + b"SQ\0\0" + struct.pack("<I", len(item)) + item
            continue
        inner = (struct.pack("<HH", 0x0040, 0xA730) + b"SQ\0\0" + b"\xff" * 4
                 + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + inner
                 + struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
    raw = split_file(renamed(path))
    out, placed = [], False
    for c in raw.chunks:
        if not placed and c.key > 0x0040A730:
            out.append(inner)
            placed = True
        out.append(raw.pixel_value if c.key == KEY_PIXEL_VALUE else c.data)
    return b"".join(out)


def all_un(path: Path = IMPLICIT_MR) -> bytes:
    """A real implicit-VR MR rewritten as Explicit VR Little Endian with every element but Pixel Data tagged UN
    (the value bytes unchanged: a UN value is implicit little endian)."""
    from cubepacs.dicom.rawfile import KEY_PIXEL_VALUE, split_file

    raw = split_file(path.read_bytes(), str(path))
    assert raw.implicit
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    meta = io.BytesIO()
    fm = ds.file_meta
    fm.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    pydicom.filewriter.write_file_meta_info(pydicom.filebase.DicomFileLike(meta), fm, enforce_standard=True)
    body = []
    for c in raw.chunks:
        if (c.key < 0 and c.key != KEY_PIXEL_VALUE) or (c.key >= 0 and c.key >> 16 == 2):
            continue
        if c.key == KEY_PIXEL_VALUE:
            continue
        tag, length = c.data[:4], struct.unpack_from("<I", c.data, 4)[0]
        value = c.data[8:]
        if c.key == raw.pixel_tag:
            body.append(tag + b"OW\0\0" + struct.pack("<I", len(raw.pixel_value)) + raw.pixel_value)
        else:
            body.append(tag + b"UN\0\0" + struct.pack("<I", length) + value)
    return b"\0" * 128 + b"DICM" + meta.getvalue() + b"".join(body)
