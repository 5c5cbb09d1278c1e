"""Read DICOM inputs (folders, paths, file-like objects, bytes) into split instances ready for a cube.

Example
-------
>>> insts = read_instances(["../shared/data/single/ct_ge_small_signed.dcm"])
>>> insts[0].attrs["Rows"], insts[0].desc.mode
(128, 'native')
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import IO, Any

import pydicom
from pydicom.dataset import Dataset

from cubepacs.cube.pixels import PixelDesc, describe
from cubepacs.dicom.rawfile import RawFile, split_file
from cubepacs.dicom.values import parse_elements
from cubepacs.errors import DicomReadError, SeriesError

_FOLDER = "\0folder:"  # marks names of files found by walking a folder (DICOMDIRs there are skipped)
Source = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]
Sources = Source | Iterable[Source]

# Attributes read for every instance at import (grouping, sorting, pixel geometry, QC, typed columns).
ATTR_TAGS = {
    "SeriesInstanceUID": 0x0020000E, "StudyInstanceUID": 0x0020000D, "SOPInstanceUID": 0x00080018,
    "InstanceNumber": 0x00200013, "Rows": 0x00280010, "Columns": 0x00280011, "SamplesPerPixel": 0x00280002,
    "BitsAllocated": 0x00280100, "BitsStored": 0x00280101, "PixelRepresentation": 0x00280103,
    "PlanarConfiguration": 0x00280006,
    "NumberOfFrames": 0x00280008, "PhotometricInterpretation": 0x00280004, "PatientID": 0x00100020,
    "Modality": 0x00080060, "ImagePositionPatient": 0x00200032, "ImageOrientationPatient": 0x00200037,
    "SliceLocation": 0x00201041, "RescaleSlope": 0x00281053, "RescaleIntercept": 0x00281052,
    "PixelSpacing": 0x00280030, "SliceThickness": 0x00180050, "AcquisitionNumber": 0x00200012,
}
_WANTED = frozenset(ATTR_TAGS.values()) | {0x00080005}


@dataclass
class Instance:
    """One DICOM file split into chunks, with the attributes the cube needs and its pixel storage plan."""

    name: str
    raw: RawFile
    attrs: dict[str, Any]
    desc: PixelDesc | None


_US = ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored", "PixelRepresentation",
       "PlanarConfiguration")
_IS = ("InstanceNumber", "NumberOfFrames", "AcquisitionNumber")
_DS = ("ImagePositionPatient", "ImageOrientationPatient", "SliceLocation", "RescaleSlope", "RescaleIntercept",
       "PixelSpacing", "SliceThickness")
_KIND = {**dict.fromkeys(_US, "US"), **dict.fromkeys(_IS, "IS"), **dict.fromkeys(_DS, "DS")}
_NAME_OF = {tag: name for name, tag in ATTR_TAGS.items()}
_LONG = (b"OB", b"OW", b"UN", b"SQ", b"UT", b"UC")


def _fast_value(name: str, value: bytes, little: bool) -> Any:
    """Decode the few VRs of ATTR_TAGS without pydicom's general machinery (import speed)."""
    kind = _KIND.get(name, "STR")
    if kind == "US":
        if len(value) != 2:
            raise ValueError("US value of unexpected length")
        return int.from_bytes(value, "little" if little else "big")
    text = value.decode("latin-1").strip(" \x00")
    if kind == "STR":
        return text
    parts = [p.strip() for p in text.split("\\")] if text else []
    if not parts:
        return None
    nums = [int(p) if kind == "IS" else float(p) for p in parts]
    return nums[0] if len(nums) == 1 else nums


def _attrs_fast(raw: RawFile) -> dict[str, Any]:
    out: dict[str, Any] = {"_has_pixels": False}
    for c in raw.chunks:
        name = _NAME_OF.get(c.key)
        if name is None:
            continue
        hsize = 12 if not raw.implicit and c.data[4:6] in _LONG else 8
        value = _fast_value(name, c.data[hsize:], raw.little_endian)
        if value is not None and value != "":
            out[name] = value
    return out


def _attrs_of(raw: RawFile) -> dict[str, Any]:
    if raw.deflated_body is None:
        try:
            return _attrs_fast(raw)
        except ValueError:
            pass  # an odd value (IS "1A", a US of the wrong length): let pydicom be lenient
    ds: Dataset
    if raw.deflated_body is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(BytesIO(raw.deflated_body), force=True)
    else:
        ds = parse_elements([c.data for c in raw.chunks if c.key in _WANTED], raw.implicit, raw.little_endian)
    out: dict[str, Any] = {"_has_pixels": raw.deflated_body is not None and "PixelData" in ds}
    for name, tag in ATTR_TAGS.items():
        if tag in ds:
            try:
                value = ds[tag].value
            except Exception:  # an undecodable value: treat as absent, QC reports empty keys
                continue
            if isinstance(value, pydicom.multival.MultiValue):
                value = list(value)
            out[name] = value
    return out


def read_instance(data: bytes, name: str, pixel_view: bool = False) -> Instance:
    """Split one encoded DICOM file and plan its pixel storage (``pixel_view``: the pixel value a view of
    ``data``, not a copy — see ``split_file``).

    Raises
    ------
    DicomReadError
        When the bytes are not DICOM or are truncated; the message names ``name``.
    """
    raw = split_file(data, name, pixel_view)
    try:
        attrs = _attrs_of(raw)
    except Exception as exc:
        raise DicomReadError(name, f"dataset cannot be parsed: {exc}") from exc
    desc = None
    if attrs.pop("_has_pixels"):  # deflated: pixels live inside the deflated body, decoded by pydicom
        desc = describe(attrs, 0x7FE00010, "OW", True, False, 0)
        desc = PixelDesc(**{**desc.to_json(), "mode": "file"})
    elif raw.pixel_tag is not None:
        desc = describe(attrs, raw.pixel_tag, raw.pixel_vr, raw.little_endian, raw.encapsulated,
                        len(raw.pixel_value))
    return Instance(name, raw, attrs, desc)


def _safe_name(name: str) -> str:
    parts = [p for p in Path(name).parts if p not in ("", ".", "..", "/", "\\") and not p.endswith(":")]
    return "/".join(parts) or "instance.dcm"


DICOMDIR_CLASS = b"1.2.840.10008.1.3.10"


def is_dicomdir(inst: Instance) -> bool:
    """True for a DICOMDIR (Media Storage Directory): an index of a file set, not an image."""
    return any(c.key == 0x00020002 and DICOMDIR_CLASS in c.data for c in inst.raw.chunks)


def iter_sources(src: Sources) -> Iterator[tuple[str, bytes]]:
    """Yield (name, bytes) for a folder (recursively, sorted), a path, bytes, a file-like object or a list.

    Names of files found in a folder are relative to it, prefixed with a marker that read_instances removes.
    """
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            for p in files:
                yield _FOLDER + _safe_name(str(p.relative_to(path))), p.read_bytes()
        elif path.is_file():
            yield _safe_name(path.name), path.read_bytes()
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
        return
    if isinstance(src, (bytes, bytearray, memoryview)):
        yield "instance_00000.dcm", bytes(src)
        return
    if hasattr(src, "read"):
        yield _safe_name(getattr(src, "name", "") or "instance_00000.dcm"), src.read()
        return
    for i, item in enumerate(src):
        unnamed = isinstance(item, (bytes, bytearray, memoryview)) or hasattr(item, "read")
        for name, data in iter_sources(item):
            yield (f"instance_{i:05d}.dcm" if unnamed and name == "instance_00000.dcm" else name), data


def read_instances(src: Sources, errors: str = "skip-non-dicom") -> list[Instance]:
    """Read every DICOM input in ``src``; DICOMDIR files met while walking a folder are skipped.

    ``errors``: ``"raise"`` fails on any unreadable input; ``"skip-non-dicom"`` (default) skips files found
    in a folder that are not DICOM at all (a README) but fails on broken DICOM and on named non-DICOM inputs;
    ``"skip"`` skips both.
    """
    if errors not in ("raise", "skip-non-dicom", "skip"):
        raise ValueError(f"errors must be 'raise', 'skip-non-dicom' or 'skip', not {errors!r}")
    out = []
    for tagged, data in iter_sources(src):
        from_folder = tagged.startswith(_FOLDER)
        name = tagged.removeprefix(_FOLDER)
        try:
            inst = read_instance(data, name)
            if not (from_folder and errors != "raise" and is_dicomdir(inst)):
                out.append(inst)
        except DicomReadError as exc:
            not_dicom = exc.reason.startswith("not a DICOM file")
            if errors == "raise" or (errors == "skip-non-dicom" and (not not_dicom or not from_folder)):
                raise
    if not out:
        raise SeriesError(f"no DICOM instance found in {src if isinstance(src, (str, os.PathLike)) else 'input'}")
    return out
