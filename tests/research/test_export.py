"""De-identified cohorts: the profile's own table checked on every exported instance, deterministic UIDs, pixels
unchanged, exports to DICOM, cubes and Delta from a running archive, resumed without
duplicates (the PyTorch dataset: test_dataset.py)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest

from cubepacs.archive.web import multipart
from cubepacs.research.deid import Options, deidentify
from tests.archive.conftest import Server, free_port, start_server, stop_server, wait_until, write_config
from tests.conftest import SERIES, SINGLES, dicom_files

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning")  # odd values of real files
SECRET = "project-secret-0123456789"
CT = next(s for s in SERIES if s.name.startswith("ct_ge"))
T1 = next(s for s in SERIES if s.name.startswith("mr_ge_signa"))
US = next(s for s in SINGLES if s.name == "jpeg_baseline_ybr422_us_cine_30f.dcm")
SAMPLES = [dicom_files(s)[0] for s in SERIES] + [s for s in SINGLES if s.name in (
    "mr_siemens_csa_private_overlays.dcm", "enhanced_mr_philips_64f.dcm",
    "jpeg_baseline_ybr422_us_cine_30f.dcm", "rtdose_32bit_15f.dcm", "seg_1bit_liver.dcm")]


def _table() -> dict[str, list[tuple[int, int]]]:
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector

    return dicom_anonymization_database_selector("dicomfields_2026c")


def _elements(ds: pydicom.Dataset) -> Iterator[pydicom.DataElement]:
    for elem in ds:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _elements(item)


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_every_attribute_of_the_profile_is_handled(path: Path) -> None:
    data = path.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = pydicom.dcmread(io.BytesIO(data))
        res = deidentify(data, Options(SECRET.encode()))
        after = pydicom.dcmread(io.BytesIO(res.data))  # a valid Part 10 file again
    table = {k: [t for t in v if len(t) == 2] for k, v in _table().items()}
    masked = [t for t in _table()["X_TAGS"] if len(t) == 4]  # repeating groups (curves, overlay text…)
    tags = {e.tag: e for e in _elements(after)}
    for group, element, gmask, emask in masked:
        assert not [t for t in tags if t.group & gmask == group & gmask and t.element & emask == element & emask
                    and not tags[t].is_empty], hex(group)
    for group, element in table["X_TAGS"]:
        assert (group, element) not in tags or tags[(group, element)].is_empty, hex(group << 16 | element)
    for group, element in table["Z_TAGS"]:
        t = (group, element)
        assert t not in tags or tags[t].is_empty or tags[t].VR in ("DA", "DT", "TM", "SQ") or \
            tags[t].value in ("0", 0, "ANONYMIZED"), hex(group << 16 | element)
    for group, element in table["D_TAGS"] + table["Z_D_TAGS"] + table["X_D_TAGS"] + table["X_Z_D_TAGS"]:
        t = (group, element)
        if t in before and not before[t].is_empty and before[t].VR not in ("SQ",):
            assert t not in after or after[t].value != before[t].value or after[t].VR in ("US", "SS"), hex(t[0])
    for group, element in table["U_TAGS"]:
        t = (group, element)
        if t in before and before[t].value:
            assert after[t].value != before[t].value and str(after[t].value).startswith("2.25."), hex(t[1])
    assert not any(e.tag.is_private for e in _elements(after))
    assert after.PatientIdentityRemoved == "YES" and after.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert after.PatientName != before.get("PatientName") and after.PatientID.startswith("P")
    if "PixelData" in before:
        assert after.PixelData == before.PixelData  # byte for byte
    if path == US:
        assert res.burned_in and "US" in res.burned_in


def test_uids_are_deterministic_and_linkable() -> None:
    files = dicom_files(T1)[:3]
    a = [deidentify(f.read_bytes(), Options(SECRET.encode())) for f in files]
    b = [deidentify(f.read_bytes(), Options(SECRET.encode())) for f in files]
    c = deidentify(files[0].read_bytes(), Options(b"another-secret-0123456789"))
    ds = [pydicom.dcmread(io.BytesIO(r.data)) for r in a]
    assert len({d.StudyInstanceUID for d in ds}) == 1 and len({d.SOPInstanceUID for d in ds}) == 3
    assert [r.data for r in a] == [r.data for r in b]
    assert pydicom.dcmread(io.BytesIO(c.data)).StudyInstanceUID != ds[0].StudyInstanceUID
    kept = deidentify(files[0].read_bytes(), Options(SECRET.encode(), retain_uids=True, retain_dates=True,
                                                     retain_patient=True, retain_device=True))
    k = pydicom.dcmread(io.BytesIO(kept.data))
    orig = pydicom.dcmread(files[0])
    assert k.SOPInstanceUID == orig.SOPInstanceUID and k.StudyDate != orig.StudyDate and len(k.StudyDate) == 8
    assert k.PatientSex == orig.PatientSex and k.get("StationName") == orig.get("StationName")
    codes = [i.CodeValue for i in k.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113110", "113107", "113108", "113109"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("research")
    dimse, http = free_port(), free_port()
    cfg = write_config(root / "r.toml", root / "data", dimse, http, export_secret=SECRET,
                       export_dir=str(root / "exports"))
    srv = start_server(root / "data", cfg, dimse, http)
    datas = [f.read_bytes() for f in dicom_files(CT)[:20]] + [US.read_bytes()]
    body, ctype = multipart.encode(datas, "application/dicom")
    assert httpx.post(f"{srv.url}/studies", content=body, headers={**srv.headers(), "Content-Type": ctype},
                      timeout=120).status_code == 200
    wait_until(lambda: httpx.get(f"{srv.url}/instances", params={"limit": 100},
                                 headers=srv.headers()).status_code == 200
               and len(httpx.get(f"{srv.url}/instances", params={"limit": 100}, headers=srv.headers()).json()) == 21)
    yield srv
    stop_server(srv)


def _cli(archive: Server, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    study = pydicom.dcmread(dicom_files(CT)[0], stop_before_pixels=True).StudyInstanceUID
    us_study = pydicom.dcmread(US, stop_before_pixels=True).StudyInstanceUID
    return subprocess.run([sys.executable, "-m", "cubepacs", "export-cohort", "--config", str(archive.config),
                           "--tenant", "alpha", "--to", str(out), "--study", study, "--study", us_study, *extra],
                          check=False, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "CUBEPACS_EXPORT_SECRET": SECRET})


def test_export_to_dicom_cubes_and_delta_then_resume(archive: Server, tmp_path: Path) -> None:
    from deltalake import DeltaTable

    import cubepacs

    out = tmp_path / "cohort"
    run = _cli(archive, out)
    assert run.returncode == 0, run.stdout + run.stderr
    said = " ".join(run.stdout.split())
    assert "2 series, 21 instances" in said and "1 flagged for burned-in" in said
    files = sorted((out / "dicom").rglob("*.dcm"))
    assert len(files) == 21
    originals = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in dicom_files(CT)[:20]}
    manifest = (out / "manifest.json").read_text()
    assert not any(uid in manifest for uid in originals) and "CMB-CRC" not in manifest
    mapping = json.loads((out / "mapping.json").read_text())
    assert originals <= set(mapping) and oct((out / "mapping.json").stat().st_mode)[-3:] == "600"
    cubes = sorted((out / "cubes").rglob("*.dcbs"))
    assert len(cubes) == 2
    by_name = {f.name: f.read_bytes() for f in files}
    for k, cube in enumerate(cubes):  # each cube gives back the de-identified files byte for byte
        back = tmp_path / f"back{k}"
        cubepacs.save_to_dicom_folder(cubepacs.load(cube), back)
        for f in back.iterdir():
            assert f.read_bytes() == by_name[f.name]
    table = DeltaTable(str(out / "delta")).to_pyarrow_table()
    assert table.num_rows == 21 and not set(table.column("sop_uid").to_pylist()) & originals
    before = {f: f.read_bytes() for f in files}
    again = _cli(archive, out)  # resumed: everything done, nothing duplicated
    assert again.returncode == 0 and "2 series already done" in " ".join(again.stdout.split())
    assert sorted((out / "dicom").rglob("*.dcm")) == files and all(f.read_bytes() == before[f] for f in files)
    assert DeltaTable(str(out / "delta")).to_pyarrow_table().num_rows == 21
    # an interrupted export: the progress file lost one series → it is redone, identically
    progress = json.loads((out / ".progress.json").read_text())
    progress["series"].pop(sorted(progress["series"])[0])
    (out / ".progress.json").write_text(json.dumps(progress))
    third = _cli(archive, out)
    assert third.returncode == 0 and "1 series already done" in " ".join(third.stdout.split())
    assert all(f.read_bytes() == before[f] for f in files)
    assert DeltaTable(str(out / "delta")).to_pyarrow_table().num_rows == 21


def test_export_endpoint_is_tenant_scoped(archive: Server) -> None:
    api = archive.url.replace("/dicom-web", "/api")
    study = pydicom.dcmread(dicom_files(CT)[0], stop_before_pixels=True).StudyInstanceUID
    body = {"name": "api-cohort", "studies": [study], "formats": ["dicom", "cube"], "options": {"retain_dates": True}}
    with httpx.stream("POST", f"{api}/export", json=body, headers=archive.headers(), timeout=300) as r:
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert r.status_code == 200 and lines[-1]["instances"] == 20 and lines[-1]["series"] == 1
    assert lines[0]["selected"] == {"studies": 1, "series": 1, "instances": 20}
    assert [line["progress"] for line in lines if "progress" in line][-1] == 20  # progress while it runs
    exported = archive.data_dir.parent / "exports" / "alpha" / "api-cohort"
    assert len(list((exported / "dicom").rglob("*.dcm"))) == 20
    r = httpx.post(f"{api}/export", json=body, headers=archive.headers("beta"))
    assert r.status_code == 404  # tenant beta has no such study
    assert httpx.post(f"{api}/export", json={**body, "name": "../x"}, headers=archive.headers()).status_code == 400
    for bad, named in (({"query": {"PatientNam": "X"}}, "PatientNam"), ({"query": {"StudyDate": "notadate"}},
                                                                         "StudyDate"),
                       ({"options": {"retain_date": True}}, "options.retain_date"), ({"formats": ["nifti"]}, "nifti"),
                       ({"formats": ["delta"]}, "delta is made from the exported DICOM")):
        r = httpx.post(f"{api}/export", json={**body, "name": "bad", **bad}, headers=archive.headers())
        assert r.status_code == 400 and named in r.json()["detail"], r.text
    assert not (archive.data_dir.parent / "exports" / "alpha" / "bad").exists()
    number = pydicom.dcmread(dicom_files(CT)[0], stop_before_pixels=True).SeriesNumber
    for query, selected in (({"Modality": "US"}, 1), ({"SeriesNumber": str(number), "Modality": "CT"}, 20)):
        q = {"name": f"q{selected}", "query": query, "formats": ["dicom"]}
        with httpx.stream("POST", f"{api}/export", json=q, headers=archive.headers(), timeout=300) as r:
            first = json.loads(next(r.iter_lines()))
        assert first["selected"]["instances"] == selected, (query, first)


def test_safe_private_attributes_are_kept() -> None:
    path = next(s for s in SINGLES if s.name == "mr_siemens_csa_private_overlays.dcm")
    before = pydicom.dcmread(path, stop_before_pixels=True)
    res = deidentify(path.read_bytes(), Options(SECRET.encode(), safe_private=(("SIEMENS MEDCOM HEADER", 0x31),)))
    after = pydicom.dcmread(io.BytesIO(res.data), stop_before_pixels=True)
    private = [e for e in after if e.tag.is_private and not e.tag.is_private_creator]
    assert len(private) == 1 and private[0].value == before[0x00291031].value
    assert after.private_block(0x0029, "SIEMENS MEDCOM HEADER")[0x31].value == before[0x00291031].value
    codes = [i.CodeValue for i in after.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113111"]


def test_bad_parameters_are_one_error_before_anything_is_written(archive: Server, tmp_path: Path) -> None:
    out = tmp_path / "never"
    for extra, named in ((["--query", "Foo=bar"], "Foo"), (["--query", "PatientNam=X"], "PatientName"),
                         (["--query", "modality=CT"], "Modality"), (["--query", "StudyDate=notadate"], "StudyDate"),
                         (["--query", "Modality"], "KEY=VALUE"), (["--keep-private", "GEMS_IDEN_01"], "CREATOR:0xEE"),
                         (["--formats", "dicom,nifti"], "nifti")):
        run = _cli(archive, out, *extra)
        said = " ".join(run.stderr.split())
        assert run.returncode == 2 and named in said and len(run.stderr.strip().splitlines()) == 1, said
        assert not out.exists()
    (tmp_path / "a-file").write_text("x")
    run = _cli(archive, tmp_path / "a-file")
    assert run.returncode == 2 and "is a file" in run.stderr
    run = _cli(archive, out, "--confirm-above", "10")  # 21 instances selected: --yes needed
    assert run.returncode == 2 and "2 studies, 2 series, 21 instances" in " ".join(run.stderr.split())
    assert not out.exists()


def test_a_second_run_completes_the_missing_formats_or_refuses(archive: Server, tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    first = _cli(archive, out, "--formats", "dicom")
    assert first.returncode == 0, first.stderr
    assert not (out / "cubes").exists() and len(list((out / "dicom").rglob("*.dcm"))) == 21
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(e["formats"] == ["dicom"] for e in manifest["series"].values())
    second = _cli(archive, out, "--formats", "cube,delta")  # completes what is missing
    assert second.returncode == 0, second.stderr
    assert len(list((out / "cubes").rglob("*.dcbs"))) == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(e["formats"] == ["dicom", "cube", "delta"] for e in manifest["series"].values())
    other = _cli(archive, out, "--retain-dates")  # other options into the same folder: refused, nothing changed
    assert other.returncode == 2 and "other options" in other.stderr


def _odd_j2k() -> bytes:
    """Crafted from a real file (no real one has it): a JPEG 2000 instance whose one fragment has an odd length,
    stored as received."""
    import struct

    from pydicom.encaps import generate_fragments

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(next(s for s in SINGLES if s.name == "ts_j2k_lossless_siemens_mr.dcm"))
    fragment = list(generate_fragments(ds.PixelData))[-1].rstrip(b"\0")
    if len(fragment) % 2 == 0:
        fragment += b"\0"  # a trailing zero after the end-of-codestream marker: odd again
    ds.PixelData = b"\xfe\xff\x00\xe0\0\0\0\0" + b"\xfe\xff\x00\xe0" + struct.pack("<I", len(fragment)) + fragment
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def _private_pixels() -> bytes:
    """Crafted from a real file: the pixels moved to a private group, as ELSCINT1 does (no real file here has it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(next(s for s in SINGLES if s.name == "ct_ge_small_signed.dcm"))
    ds.private_block(0x7FDF, "ELSCINT1", create=True).add_new(0x10, "OW", ds.PixelData)
    del ds.PixelData
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".9"
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def test_an_odd_instance_never_stops_the_cohort(tmp_path: Path) -> None:
    from cubepacs.research.export import export_cohort

    good = [f.read_bytes() for f in dicom_files(T1)[:3]]
    broken = good[0][:400]  # cut in its header: cannot be de-identified
    inputs = {"odd": _odd_j2k(), "private": _private_pixels(), "broken": broken,
              **{f"good{k}": d for k, d in enumerate(good)}}
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for name, data in inputs.items():
        ds = pydicom.dcmread(io.BytesIO(inputs["good0"] if name == "broken" else data), stop_before_pixels=True)
        row = {"study_uid": str(ds.StudyInstanceUID), "series_uid": str(ds.SeriesInstanceUID),
               "sop_uid": str(ds.SOPInstanceUID) + ("x" if name == "broken" else ""), "name": name}
        groups.setdefault((row["study_uid"], row["series_uid"]), []).append(row)
    seen: list[tuple[int, int]] = []
    report = export_cohort(lambda r: inputs[r["name"]], groups, tmp_path / "out", Options(SECRET.encode()),
                           formats=("dicom", "cube"), codec="zstd", progress=lambda n, t: seen.append((n, t)))
    assert seen == sorted(seen) and seen[-1] == (6, 6)  # instance by instance, inside each series too
    assert {n for n, _ in seen} == set(range(7))
    assert report.instances == 4 and len(report.failed) == 1 and report.excluded == {
        "pixels only in private groups": 1}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["totals"] == {"series": 3, "instances": 4, "burned_in": 0, "failed": 1, "excluded": 1}
    odd = next(f for f in (tmp_path / "out" / "dicom").rglob("*.dcm")
               if pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID.is_compressed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported, original = pydicom.dcmread(odd), pydicom.dcmread(io.BytesIO(inputs["odd"]))
    np.testing.assert_array_equal(exported.pixel_array, original.pixel_array)  # pydicom decodes both alike
    assert len(list((tmp_path / "out" / "cubes").rglob("*.dcbs"))) == 2  # the odd one's series has its cube


def test_documents_and_flagged_instances_are_left_out_with_a_reason() -> None:
    sr = next(s for s in SINGLES if s.name == "sr_comprehensive_nested.dcm")
    assert deidentify(sr.read_bytes(), Options(SECRET.encode())).excluded == "structured report"
    flagged = deidentify(US.read_bytes(), Options(SECRET.encode()))
    assert flagged.burned_in and not flagged.excluded
    after = pydicom.dcmread(io.BytesIO(flagged.data), stop_before_pixels=True)
    assert after.BurnedInAnnotation == "YES" and after.LongitudinalTemporalInformationModified == "REMOVED"
    left_out = deidentify(US.read_bytes(), Options(SECRET.encode(), exclude_burned_in=True))
    assert left_out.excluded and left_out.excluded.startswith("burned-in") and not left_out.data
