"""The lake without Spark: reader rows, partition planning, Delta round trip, idempotent commits."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import duckdb
import pydicom
import pytest
from deltalake import DeltaTable

import cubepacs
from cubepacs.lake.partitions import plan
from cubepacs.lake.reader import read_item, row_id
from cubepacs.lake.scan import scan
from tests.conftest import MALFORMED, SINGLES
from tests.lake.conftest import BAD_NAMES, FMRI

FMRI_FILES = 150


def _rows(paths: list[Path]) -> list[dict[str, object]]:
    return [r for p in plan([str(x) for x in paths], 4) for item in p.items for r in read_item(item)]


def test_zip_entries_found_case_insensitively_without_extension(lake_inputs: dict[str, Path]) -> None:
    rows = _rows([lake_inputs["series_zip"]])
    assert len(rows) == FMRI_FILES  # README, __MACOSX and the folder entry are skipped
    assert all(r["error"] is None for r in rows)
    assert {r["entry"].rsplit(".", 1)[-1] for r in rows if "." in str(r["entry"]).rsplit("/", 1)[-1]} == {"DCM", "dcm"}
    assert len({r["id"] for r in rows}) == FMRI_FILES
    r = rows[0]
    canonical = str(lake_inputs["series_zip"].resolve())
    assert r["id"] == row_id(canonical, str(r["entry"]), f"{r['entry_size']}:{r['crc32']}")
    assert r["archive"] == canonical
    assert r["crc32"] and r["entry_size"] and r["compressed_size"]
    assert r["bulk_tags"] and r["bulk_tags"][-1] == "7FE00010" and r["pixel_offset"]


def test_json_matches_pydicom_reading_of_the_same_file(lake_inputs: dict[str, Path]) -> None:
    rows = {Path(str(r["entry"])).stem.lower(): r for r in _rows([lake_inputs["series_zip"]])}
    for f in sorted(FMRI.iterdir())[:40:7]:
        if f.suffix != ".dcm":
            continue
        row = rows[f.stem.lower()]
        doc = json.loads(str(row["header_json"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = pydicom.Dataset.from_json(doc, bulk_data_uri_handler=lambda *a: b"")
        ref = pydicom.dcmread(f, stop_before_pixels=True)
        for kw in ("PatientID", "SOPInstanceUID", "SeriesInstanceUID", "InstanceNumber", "Rows",
                   "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "StudyDate", "PatientName"):
            assert ours[kw].value == ref[kw].value, kw
        assert row["sop_uid"] == ref.SOPInstanceUID and row["instance_number"] == ref.InstanceNumber
        assert row["modality"] == "MR" and row["rows"] == ref.Rows and row["transfer_syntax"] == "1.2.840.10008.1.2.1"


def test_bad_entries_become_error_rows(lake_inputs: dict[str, Path]) -> None:
    rows = _rows([lake_inputs["mixed"], lake_inputs["zips"] / "broken.zip"])
    by_name = {Path(str(r["entry"])).name: r for r in rows}
    for name in BAD_NAMES:
        assert by_name[name]["error"] and by_name[name]["error_stage"] in ("magic", "parse"), name
    broken = [r for r in rows if str(r["archive"]).endswith("broken.zip")]
    assert len(broken) == 1 and broken[0]["error_stage"] == "zip" and "unreadable ZIP" in str(broken[0]["error"])
    nested = [r for r in rows if r["container"] == "nested-zip"]
    assert sorted(Path(str(r["entry"])).name for r in nested) == sorted(f.name for f in SINGLES[:3])
    assert all(str(r["entry"]).startswith("nested/singles.zip/inner/") for r in nested)
    assert "truncated" in str(by_name["truncated_dataset_rtplan.dcm"]["error"])
    bad_vr = by_name["bad_vr_value_rtdose.dcm"]
    assert bad_vr["error_stage"] == "json" and "(0028,0008)" in str(bad_vr["error"]) and "1A" in str(bad_vr["error"])
    readable = {m.name for m in MALFORMED} - set(BAD_NAMES) - {"bad_vr_value_rtdose.dcm"}
    assert readable <= {n for n, r in by_name.items() if r["error"] is None}


def test_plain_folders_and_cubes(lake_inputs: dict[str, Path], tmp_path: Path) -> None:
    plain = _rows([lake_inputs["plain"]])
    assert len(plain) == 5 and all(r["container"] == "folder" and r["error"] is None for r in plain)
    cube = tmp_path / "fmri.dcbs"
    cubepacs.save(cubepacs.load_from_dicom_folder(FMRI), cube, codec="blosc2")
    rows = _rows([cube])
    assert len(rows) == FMRI_FILES and all(r["container"] == "cube" and r["error"] is None for r in rows)
    assert {r["sop_uid"] for r in rows} == {r["sop_uid"] for r in _rows([lake_inputs["series_zip"]])}


def test_partitions_balance_compressed_bytes(lake_inputs: dict[str, Path]) -> None:
    parts = plan([str(lake_inputs["zips"])], num_partitions=6)
    assert 2 <= len(parts) <= 6
    big = [p for p in parts if any(i.path.endswith("fmri.zip") for i in p.items)]
    assert len(big) >= 2  # the large ZIP is split into entry ranges
    weights = sorted(p.weight for p in parts)
    assert weights[-1] <= 3 * sum(weights) / len(weights)
    entries = [e for p in parts for i in p.items if i.path.endswith("fmri.zip") for e in i.entries]
    assert len(entries) == len(set(entries)) == FMRI_FILES + 1  # every entry exactly once (README too)


def test_scan_to_delta_read_back_with_duckdb_and_idempotent(lake_inputs: dict[str, Path], tmp_path: Path) -> None:
    table = tmp_path / "table"
    inputs = [str(lake_inputs["zips"]), str(lake_inputs["plain"])]
    first = scan(inputs, str(table), workers=2, num_partitions=5)
    assert first.committed and first.files >= FMRI_FILES + 5 and first.errors == len(BAD_NAMES) + 2
    again = scan(inputs, str(table), workers=2, num_partitions=5)
    assert not again.committed
    files = DeltaTable(str(table)).file_uris()
    assert len(files) == 5 and all(Path(f).exists() for f in files)
    ((total, ids, errors, ct),) = duckdb.sql(
        f"select count(*), count(distinct id), count(error), count(*) filter (where modality = 'MR') "
        f"from read_parquet({files!r})").fetchall()
    assert total == ids == first.files + first.errors
    assert errors == first.errors and ct >= FMRI_FILES
    assert len(list(table.glob("*.parquet"))) == 5  # the refused duplicate's parts were removed
    other = scan(inputs, str(table), workers=1, num_partitions=2, batch_id="explicit")
    assert other.committed and DeltaTable(str(table)).to_pyarrow_table().num_rows == 2 * total


def test_scan_rejects_missing_input(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        scan([str(tmp_path / "nowhere")], str(tmp_path / "t"))


def test_headers_read_in_small_pieces_give_the_same_rows(lake_inputs: dict[str, Path],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    whole = {r["id"]: r for r in _rows([lake_inputs["series_zip"], lake_inputs["mixed"]])}
    from cubepacs.lake import reader

    monkeypatch.setattr(reader, "_FIRST_READ", 300)  # every header needs several reads
    pieces = {r["id"]: r for r in _rows([lake_inputs["series_zip"], lake_inputs["mixed"]])}
    assert pieces.keys() == whole.keys()
    for key, row in whole.items():
        assert pieces[key]["header_json"] == row["header_json"], row["entry"]
        assert pieces[key]["error_stage"] == row["error_stage"]
        assert pieces[key]["pixel_offset"] == row["pixel_offset"]
