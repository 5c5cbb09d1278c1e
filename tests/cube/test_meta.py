"""Metadata: dicube-compatible accessors agree with pydicom; typed columns; QC; the public API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

import cubepacs
from cubepacs.dicom import CommonTags
from cubepacs.errors import SeriesError
from tests.conftest import SERIES, SINGLES, dicom_files


@pytest.fixture(scope="module", params=SERIES, ids=lambda p: p.name)
def series_meta(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, cubepacs.DicomMeta]:
    path = tmp_path_factory.mktemp("m") / "x.dcbs"
    cubepacs.save(cubepacs.load_from_dicom_folder(request.param), path, codec="blosc2")
    return request.param, cubepacs.load_meta(path)


def test_values_agree_with_pydicom(series_meta: tuple[Path, cubepacs.DicomMeta]) -> None:
    folder, meta = series_meta
    datasets = {f.name: pydicom.dcmread(f, stop_before_pixels=True) for f in dicom_files(folder)}
    order = [datasets[n] for n in meta.names]
    assert meta.get_values(CommonTags.InstanceNumber) == [int(d.InstanceNumber) for d in order]
    assert meta.get_values(CommonTags.SOPInstanceUID) == [d.SOPInstanceUID for d in order]
    ipp = meta.get_array(CommonTags.ImagePositionPatient)
    np.testing.assert_allclose(ipp, [[float(v) for v in d.ImagePositionPatient] for d in order])
    assert meta.get_shared_value(CommonTags.PatientName) == {"Alphabetic": str(order[0].PatientName)}
    assert meta.get_shared_value(CommonTags.Rows) == order[0].Rows
    assert meta.is_shared(CommonTags.StudyInstanceUID)
    assert not meta.is_shared(CommonTags.SOPInstanceUID)
    with pytest.raises(ValueError, match="not shared"):
        meta.get_shared_value(CommonTags.SOPInstanceUID)
    assert meta.get_vr(CommonTags.PatientName) == "PN"
    assert meta.get_values("TransferSyntaxUID")[0] == order[0].file_meta.TransferSyntaxUID
    assert "00100010" in meta.keys()
    assert meta.get_values(0x00991099) == [None] * len(meta)
    assert meta.is_missing(0x00991099)


def test_instances_are_sorted_by_instance_number(series_meta: tuple[Path, cubepacs.DicomMeta]) -> None:
    _, meta = series_meta
    numbers = meta.get_array("InstanceNumber")
    assert (np.diff(numbers) >= 0).all()
    assert meta.qc["instances"] == len(meta)


def test_dataset_of_one_instance(series_meta: tuple[Path, cubepacs.DicomMeta]) -> None:
    folder, meta = series_meta
    ds = meta.dataset(3)
    original = pydicom.dcmread(folder / meta.names[3], stop_before_pixels=True)
    assert ds.SOPInstanceUID == original.SOPInstanceUID
    assert len(ds) == len([e for e in original if e.tag.group != 0x7FE0])


def test_deflated_and_private_values() -> None:
    deflated = next(p for p in SINGLES if p.name.startswith("deflated"))
    meta = cubepacs.load_from_dicom_folder([deflated]).dicom_meta
    assert meta.get_values(CommonTags.Rows) == [pydicom.dcmread(deflated).Rows]
    csa = next(p for p in SINGLES if "csa" in p.name)
    meta = cubepacs.load_from_dicom_folder([csa]).dicom_meta
    assert meta.get_values(CommonTags.Modality) == ["MR"]


def test_several_series_are_never_stacked(tmp_path: Path) -> None:
    files = dicom_files(SERIES[0])[:3] + dicom_files(SERIES[1])[:2]
    with pytest.raises(SeriesError, match="2 series"):
        cubepacs.load_from_dicom_folder(files)
    groups = cubepacs.load_series(files)
    assert sorted(img.num_frames for img in groups.values()) == [2, 3]
    uid = next(u for u, img in groups.items() if img.num_frames == 2)
    assert cubepacs.load_from_dicom_folder(files, series_uid=uid).num_frames == 2


def test_qc_reports_missing_and_duplicate_instance_numbers() -> None:
    files = dicom_files(SERIES[0])
    gap = cubepacs.load_from_dicom_folder(files[:10] + files[12:20]).dicom_meta.qc
    assert not gap["ok"]
    assert gap["instance_numbers"]["missing"]
    assert any("non-uniform slice spacing" in i for i in gap["issues"])
    dup = cubepacs.load_from_dicom_folder(files[:5] + files[4:5]).dicom_meta.qc
    assert any("duplicate InstanceNumber" in i for i in dup["issues"])
    assert any("same position" in i for i in dup["issues"])
    clean = cubepacs.load_from_dicom_folder(files).dicom_meta.qc
    assert clean["ok"], clean["issues"]


def test_get_fdata_applies_per_slice_rescale() -> None:
    image = cubepacs.load_from_dicom_folder(dicom_files(SERIES[0])[:4])
    ds = pydicom.dcmread(dicom_files(SERIES[0])[0])
    f = image.get_fdata()
    np.testing.assert_allclose(f[0], ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))


def test_public_api_is_exported() -> None:
    assert cubepacs.__all__ == sorted(cubepacs.__all__)
    for name in cubepacs.__all__:
        assert hasattr(cubepacs, name)
    for name in ("load_from_dicom_folder", "save", "load", "load_meta", "save_to_dicom_folder"):
        assert callable(getattr(cubepacs, name))
