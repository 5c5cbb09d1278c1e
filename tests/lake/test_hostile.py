"""The lake reading bytes from strangers: bounded header reads, nested archives, stable ids, no false errors.

Crafted inputs are built here from real files (the data set has no zero flood, ZIP bomb or icon with encapsulated
pixel data).
"""

from __future__ import annotations

import json
import os
import resource
import struct
import time
import zipfile
from pathlib import Path

import pydicom
from deltalake import DeltaTable

from cubepacs.lake.partitions import WorkItem
from cubepacs.lake.reader import read_item
from cubepacs.lake.scan import scan
from tests.conftest import SINGLES
from tests.lake.conftest import FMRI

CT = next(s for s in SINGLES if s.name == "ct_ge_small_signed.dcm")


def _one(path: Path, **kw: int) -> dict[str, object]:
    (row,) = list(read_item(WorkItem("file", str(path)), **kw))
    return row


def test_zero_flood_is_an_error_row_quickly(tmp_path: Path) -> None:
    head = CT.read_bytes()[:400]  # preamble, DICM, file meta, the first elements
    cut = head.rfind(b"\x08\x00")  # end inside the header, at an element boundary of group 0008
    path = tmp_path / "flood.dcm"
    with open(path, "wb") as f:
        f.write(head[:cut])
        f.write(b"\0" * (64 * 1024 * 1024))
    t, cpu = time.perf_counter(), time.process_time()
    row = _one(path)
    assert time.process_time() - cpu < 2 and time.perf_counter() - t < 5
    assert row["error"] and "(0000,0000)" in str(row["error"]) and str(path.resolve()) in str(row["error"])


def test_header_cap_is_settable(tmp_path: Path) -> None:
    ds = pydicom.dcmread(CT)
    ds.add_new(0x00091010, "LO", "P")  # private creator
    ds.add_new(0x00091001, "OB", b"\1" * (3 * 1024 * 1024))  # a 3 MB value before Pixel Data
    path = tmp_path / "big.dcm"
    ds.save_as(path)
    assert _one(path)["error"] is None
    capped = _one(path, max_header=1024 * 1024)
    assert "max_header_bytes" in str(capped["error"])


def test_nested_zip_is_streamed_not_held_in_memory(tmp_path: Path) -> None:
    inner = tmp_path / "inner.zip"
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(CT, "ct.dcm")
        zf.writestr("zeros.bin", b"\0" * (256 * 1024 * 1024))  # compresses to ~0.25 MB
    outer = tmp_path / "outer.zip"
    with zipfile.ZipFile(outer, "w", zipfile.ZIP_STORED) as zf:
        zf.write(inner, "nested/inner.zip")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = list(read_item(WorkItem("zip", str(outer))))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert [r["entry"] for r in rows if r["error"] is None] == ["nested/inner.zip/ct.dcm"]
    assert grown_mb < 100, grown_mb
    capped = list(read_item(WorkItem("zip", str(outer)), max_nested=1000))
    assert len(capped) == 1 and "max_nested_bytes" in str(capped[0]["error"])


def test_rescan_with_other_partitions_or_a_relative_path_adds_nothing(tmp_path: Path) -> None:
    table = str(tmp_path / "t")
    first = scan([str(FMRI)], table, workers=1, num_partitions=2)
    cwd = os.getcwd()
    try:
        os.chdir(FMRI.parent)
        again = scan([FMRI.name], table, workers=1, num_partitions=7)
    finally:
        os.chdir(cwd)
    assert first.committed and not again.committed and first.batch_id == again.batch_id
    assert DeltaTable(table).to_pyarrow_table().num_rows == 150


def test_icon_with_encapsulated_pixel_data_and_all_un_file(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(CT)
    icon = Dataset()
    icon.Rows, icon.Columns, icon.SamplesPerPixel, icon.BitsAllocated = 8, 8, 1, 8
    icon.PixelData = encapsulate([b"\xff\xd8" + b"\0" * 30 + b"\xff\xd9"])
    icon["PixelData"].VR = "OB"
    icon["PixelData"].is_undefined_length = True
    ds.IconImageSequence = [icon]
    path = tmp_path / "icon.dcm"
    ds.save_as(path)
    row = _one(path)
    assert row["error"] is None and row["sop_uid"] == ds.SOPInstanceUID
    doc = json.loads(str(row["header_json"]))
    assert "7FE00010" in doc["00880200"]["Value"][0]
    from tests.archive.crafted import all_un

    un = tmp_path / "un.dcm"
    un.write_bytes(all_un())
    row = _one(un)
    ref = pydicom.dcmread(un)
    assert row["error"] is None and row["study_uid"] == ref.StudyInstanceUID and row["modality"] == "MR"
    assert row["sop_uid"] == ref.SOPInstanceUID and row["series_uid"] == ref.SeriesInstanceUID


def test_error_rows_name_the_entry(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dcm"
    data = CT.read_bytes()
    bad.write_bytes(data[:200] + struct.pack("<HH", 0x0010, 0x0010) + b"PN" + struct.pack("<H", 4000) + b"x")
    row = _one(bad)
    assert row["error"] and str(bad.resolve()) in str(row["error"])
    zipped = tmp_path / "a.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.write(bad, "dir/bad.dcm")
    (zrow,) = list(read_item(WorkItem("zip", str(zipped))))
    assert "dir/bad.dcm" in str(zrow["error"])



def test_deep_nesting_is_an_error_row(tmp_path: Path) -> None:
    from tests.archive.crafted import deep_nesting

    path = tmp_path / "deep.dcm"
    path.write_bytes(deep_nesting())
    row = _one(path)
    assert row["error"] and str(path.resolve()) in str(row["error"])


def test_values_of_an_unexpected_type_are_one_error_row(tmp_path: Path) -> None:
    """Crafted from the real CT: Rows (US) re-encoded as SH "512", so its DICOM JSON value is a string; the scan
    keeps every other entry and gives this one its error row (it aborted the whole scan before)."""
    data = CT.read_bytes()
    rows_elem = struct.pack("<HH", 0x0028, 0x0010) + b"US" + struct.pack("<H", 2)
    at = data.index(rows_elem)
    bad = data[:at] + struct.pack("<HH", 0x0028, 0x0010) + b"SH" + struct.pack("<H", 4) + b"512 " + data[at + 10:]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "good.dcm").write_bytes(data)
    (tmp_path / "in" / "bad.dcm").write_bytes(bad)
    scan([str(tmp_path / "in")], str(tmp_path / "table"), workers=1)
    got = {Path(r["entry"]).name: r for r in DeltaTable(str(tmp_path / "table")).to_pyarrow_table().to_pylist()}
    assert got["good.dcm"]["rows"] == 128 and got["good.dcm"]["error"] is None
    assert got["bad.dcm"]["error_stage"] == "schema" and "column rows: str" in got["bad.dcm"]["error"]
