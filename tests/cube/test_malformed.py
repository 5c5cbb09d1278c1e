"""Broken input: a clear error naming the file and the problem, or a lossless conversion."""

from __future__ import annotations

from pathlib import Path

import pytest

import cubepacs
from cubepacs.errors import DicomReadError
from tests.conftest import MALFORMED

# What each malformed file must give: an error mentioning these words, or None for a byte-exact conversion.
EXPECTED = {
    "truncated_dataset_rtplan.dcm": "truncated",
    "truncated_pixel_data_mr.dcm": "truncated",
    "j2k_stream_too_short.dcm": "truncated",
    "no_preamble_no_meta_ct.dcm": "not a DICOM file",
}


@pytest.mark.parametrize("path", MALFORMED, ids=lambda p: p.name)
def test_malformed_file_errors_clearly_or_round_trips(path: Path, tmp_path: Path) -> None:
    reason = EXPECTED.get(path.name)
    if reason is not None:
        with pytest.raises(DicomReadError) as err:
            cubepacs.load_from_dicom_folder([path])
        assert path.name in str(err.value) and reason in str(err.value)
        assert not list(tmp_path.iterdir())
        return
    cube = tmp_path / "x.dcbs"
    cubepacs.save(cubepacs.load_from_dicom_folder([path]), cube)
    out = tmp_path / "out"
    cubepacs.save_to_dicom_folder(cubepacs.load(cube), out)
    assert (out / path.name).read_bytes() == path.read_bytes()
    assert cubepacs.verify(cube) == []


def test_folder_with_a_broken_file_names_it(tmp_path: Path) -> None:
    bad = next(p for p in MALFORMED if p.name == "truncated_dataset_rtplan.dcm")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.dcm").write_bytes(bad.read_bytes())
    with pytest.raises(DicomReadError, match=r"broken\.dcm: element \(300A,00B0\) declares 976 bytes"):
        cubepacs.load_from_dicom_folder(tmp_path / "in")


def test_non_dicom_input_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DicomReadError, match="not a DICOM file"):
        cubepacs.load_from_dicom_folder([b"hello world, this is not DICOM"], errors="raise")
