"""WADO-RS metadata of stored instances (archive/metadata.py): bulk values pointed at by their paths give the same
document as the walk over the whole of it did, on every real file, and resolve to their bytes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from cubepacs.archive import metadata
from cubepacs.errors import DicomReadError
from tests.conftest import MALFORMED, SERIES, SINGLES, dicom_files

FILES = [*SINGLES, *MALFORMED, *(dicom_files(s)[0] for s in SERIES)]


def _walked(data: bytes, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any] | str:
    with monkeypatch.context() as m:
        m.setattr(metadata, "_point_bulk", lambda doc, paths, base: metadata._fix_uris(doc, base))
        return _converted(data)


def _converted(data: bytes) -> dict[str, Any] | str:
    try:
        return metadata.instance_metadata(data, "/base")
    except DicomReadError as exc:
        return f"DicomReadError: {exc.reason}"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_bulk_paths_give_the_walks_document(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = path.read_bytes()
    assert _converted(data) == _walked(data, monkeypatch)


def test_a_bulk_value_inside_a_sequence_points_at_its_bytes() -> None:
    """Built here (no real file holds a large binary value inside a sequence): an OB of 2,000 bytes in the second
    item of a sequence and another at the top level."""
    item0, item1 = Dataset(), Dataset()
    item0.CodeValue = "A"
    item1.add_new(0x00091010, "OB", bytes(range(250)) * 8)
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", "1.2.3.4"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3", "1.2.3.5"
    ds.ReferencedImageSequence = Sequence([item0, item1])
    ds.add_new(0x00111010, "OB", b"\x01" * 3000)
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    data = out.getvalue()
    doc = metadata.instance_metadata(data, "/base")
    inner = doc["00081140"]["Value"][1]["00091010"]["BulkDataURI"]
    top = doc["00111010"]["BulkDataURI"]
    assert (inner, top) == ("/base/bulkdata/00081140/1/00091010", "/base/bulkdata/00111010")
    assert metadata.bulk_value(data, inner[len("/base/bulkdata/"):]) == bytes(range(250)) * 8
    assert metadata.bulk_value(data, top[len("/base/bulkdata/"):]) == b"\x01" * 3000
    assert doc["00081140"]["Value"][0]["00080100"]["Value"] == ["A"]


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_the_direct_walk_gives_the_split_files_document(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An image instance walked from its bytes up to its Pixel Data (``_direct``) gives what the walk of the
    split file gives; a file the split refuses is refused by the direct walk too (it falls back to the split)."""
    data = path.read_bytes()
    direct = _converted(data)
    with monkeypatch.context() as m:
        m.setattr(metadata, "_direct", lambda *args: None)
        split = _converted(data)
    assert direct == split
