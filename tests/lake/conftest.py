"""Real ZIP archives built in the test from ../shared/data (and real malformed files among them)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from tests.conftest import MALFORMED, SERIES, SINGLES, dicom_files

FMRI = next(s for s in SERIES if s.name.startswith("mr_ge_mr750"))
# Malformed files whose *header* is broken (truncated pixel data does not matter to a header reader).
BAD_NAMES = ("truncated_dataset_rtplan.dcm", "no_preamble_no_meta_ct.dcm")


@pytest.fixture(scope="session")
def lake_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lake")
    series_zip = root / "zips" / "fmri.zip"
    series_zip.parent.mkdir()
    with zipfile.ZipFile(series_zip, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, f in enumerate(dicom_files(FMRI)):
            # names as archives really have them: upper case, no extension, nested folders
            name = f"Patient/Series1/{f.stem.upper()}.DCM" if i % 3 == 0 else (
                f"Patient/Series1/{f.stem}" if i % 3 == 1 else f"Patient/Series1/{f.name}")
            zf.write(f, name)
        zf.writestr("Patient/README.txt", "not dicom")
        zf.writestr("__MACOSX/Patient/._IMG0001", b"\x00\x05\x16\x07resource fork")
        zf.writestr("Patient/", b"")
    mixed = root / "zips" / "mixed.zip"
    nested = io.BytesIO()
    with zipfile.ZipFile(nested, "w", zipfile.ZIP_DEFLATED) as inner:
        for f in SINGLES[:3]:
            inner.write(f, f"inner/{f.name}")
    with zipfile.ZipFile(mixed, "w", zipfile.ZIP_STORED) as zf:
        for f in MALFORMED:
            zf.write(f, f"malformed/{f.name}")
        zf.writestr("nested/singles.zip", nested.getvalue())
    (root / "zips" / "broken.zip").write_bytes(b"PK\x03\x04 this is not a zip archive at all")
    plain = root / "plain"
    plain.mkdir()
    for f in SINGLES[3:8]:
        (plain / f.name).write_bytes(f.read_bytes())
    return {"root": root, "zips": root / "zips", "series_zip": series_zip, "mixed": mixed, "plain": plain}
