"""No injected identifier survives an export, anywhere: synthetic PHI put into copies of every file of
../shared/data (tests/research/phi.py), exported to DICOM, cubes and Delta, and every output searched byte for byte
by a checker that is not the exporter; references followed; dicognito run on the same inputs as a second opinion."""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest

from cubepacs.research.deid import Options, deidentify
from cubepacs.research.export import Report, export_cohort
from tests.research import phi

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning",  # odd values of real files
                                        "ignore:The value length:UserWarning")
SECRET = b"phi-test-secret-0123456789"
OPTIONS = Options(SECRET, retain_dates=True)


@dataclass
class Exported:
    copies: list[phi.Injected]
    out: Path
    report: Report
    originals: set[str]  # every non-standard UID of the injected inputs


def _quiet_read(data: bytes | Path, **kw: Any) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data) if isinstance(data, bytes) else data, **kw)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    root = tmp_path_factory.mktemp("phi")
    (root / "in").mkdir()
    copies = phi.make_copies(root / "in")
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    originals: set[str] = set()
    seen: set[str] = set()
    kept = []
    for c in copies:
        if c.sop in seen:  # test-suite files that share a SOP Instance UID: an archive holds one of them
            continue
        seen.add(c.sop)
        kept.append(c)
        ds = _quiet_read(c.path)
        originals.update(phi.uids_in(ds))
        originals.update(phi.uids_in(ds.file_meta))
        row = {"study_uid": str(ds.StudyInstanceUID), "series_uid": str(ds.SeriesInstanceUID),
               "sop_uid": c.sop, "path": str(c.path), "patient_id": c.patient_id}
        groups.setdefault((row["study_uid"], row["series_uid"]), []).append(row)
    out = root / "out"
    report = export_cohort(lambda r: Path(r["path"]).read_bytes(), groups, out, OPTIONS, codec="zstd")
    return Exported(kept, out, report, {u for u in originals if len(u) >= 8})


def _outputs(out: Path) -> Iterator[tuple[str, bytes]]:
    """Every output as bytes: each file as written (except mapping.json, the key kept apart), each instance a cube
    gives back, every cell of the Delta table as text."""
    import pyarrow as pa
    from deltalake import DeltaTable

    from cubepacs.cube.reader import CubeReader

    for path in sorted(out.rglob("*")):
        if path.is_file() and path.name != "mapping.json":
            yield str(path.relative_to(out)), path.read_bytes()
    for cube in sorted(out.rglob("*.dcbs")):
        reader = CubeReader(str(cube))
        for i in range(len(reader.meta)):
            yield f"{cube.name}#{i}", reader.instance_bytes(i)
    table = DeltaTable(str(out / "delta")).to_pyarrow_table()
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            yield f"delta:{name}", b"\n".join(v for v in column.to_pylist() if v)
        else:
            yield f"delta:{name}", "\n".join(str(v) for v in column.to_pylist()).encode()


def test_every_readable_file_is_exported_or_left_out_with_a_reason(exported: Exported) -> None:
    report = exported.report
    assert not report.failed, report.failed[:3]
    assert report.instances + sum(report.excluded.values()) == len(exported.copies) > 400
    assert report.excluded == {"structured report": 1}  # sr_comprehensive_nested.dcm, removed by default
    assert report.delta_committed


def test_not_one_injected_value_survives_anywhere(exported: Exported) -> None:
    inputs = b"".join(c.path.read_bytes() for c in exported.copies[200:203])
    assert all(needle.encode() in inputs for needle in phi.needles())  # the search finds what is there
    searched = 0
    found = []
    for name, data in _outputs(exported.out):
        searched += len(data)
        for needle in phi.needles():
            if needle.encode() in data:
                found.append((name, needle))
    assert searched > 10_000_000 and not found, found[:10]


def test_not_one_original_uid_survives_anywhere(exported: Exported) -> None:
    assert len(exported.originals) > 700
    token = re.compile(rb"[0-9]+(?:\.[0-9]+)+")  # every dotted number in the bytes: any UID, wherever it is

    def leaks(text: str) -> bool:  # an original UID, or one with components added after it
        parts = text.split(".")
        return any(".".join(parts[:n]) in exported.originals for n in range(2, len(parts) + 1))

    found = [(name, uid) for name, data in _outputs(exported.out)
             for uid in {t.decode() for t in token.findall(data)} if leaks(uid)]
    assert not found, found[:10]


def _exported_files(out: Path) -> list[pydicom.Dataset]:
    return [_quiet_read(p, stop_before_pixels=True) for p in sorted((out / "dicom").rglob("*.dcm"))]


def test_references_point_to_the_exported_instances(exported: Exported) -> None:
    files = _exported_files(exported.out)
    sops = {str(d.SOPInstanceUID) for d in files}
    references = [str(d.ReferencedImageSequence[0].ReferencedSOPInstanceUID) for d in files
                  if "ReferencedImageSequence" in d and d.ReferencedImageSequence]
    expected = sum(1 for c in exported.copies if c.referenced)
    assert len(references) >= expected - 1 > 350  # (the SR's reference went with it)
    assert not [r for r in references if r not in sops]


def test_nested_dates_move_with_the_patient_and_say_so(exported: Exported) -> None:
    import datetime as dt

    def day(value: str) -> dt.date:
        return dt.datetime.strptime(str(value)[:8], "%Y%m%d").date()

    for d in _exported_files(exported.out):
        shift = day(phi.NEEDLES["StudyDate"]) - day(d.StudyDate)
        assert 1 <= shift.days <= 3650
        nested = d.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime
        assert day(phi.RAW_DATE_TIME) - day(nested) == shift and str(nested)[8:] == phi.RAW_DATE_TIME[8:]
        equipment = d.ContributingEquipmentSequence[0]
        assert day(phi.CONTRIBUTION) - day(equipment.ContributionDateTime) == shift
        assert d.LongitudinalTemporalInformationModified == "MODIFIED" and d.PatientIdentityRemoved == "YES"
        assert "ReferencedPerformedProcedureStepSequence" not in d and not d.get("PatientBirthDate")


def test_patients_without_an_id_are_kept_apart(exported: Exported) -> None:
    by_name: dict[str, set[str]] = {}
    for d in _exported_files(exported.out):
        by_name.setdefault(str(d.PatientID), set()).add(str(d.StudyInstanceUID))
    inputs = {(c.patient_id, c.patient_name) for c in exported.copies if not c.source.name.startswith("sr_")}
    assert sum(1 for pid, _ in inputs if not pid) >= 5
    # one pseudonym per injected patient (name, or ID): people with an empty ID are not merged into one
    assert len(by_name) == len(inputs)


def test_the_same_secret_gives_the_same_bytes(exported: Exported) -> None:
    for c in exported.copies[::97]:
        data = c.path.read_bytes()
        assert deidentify(data, OPTIONS).data == deidentify(data, OPTIONS).data


def _flat(ds: pydicom.Dataset, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out: dict[tuple[str, ...], Any] = {}
    for elem in ds:
        if elem.tag.is_private or elem.tag == 0x7FE00010:
            continue
        path = (*prefix, elem.keyword or str(elem.tag))
        if elem.VR == "SQ":
            for item in elem.value:
                out.update(_flat(item, path))
        else:
            out[path] = str(elem.value)
    return out


# What dicognito changes and the export keeps: with the Basic Profile alone, nothing (measured: none of the
# attributes it changes in 89 files); with Retain Longitudinal Temporal Information, the times of day (dicognito
# moves them with the dates, the export keeps them: PS3.15 E.3.6 shifts dates, a time of day does not identify).
KEPT_ON_PURPOSE = {"retain_dates": ("Time",), "basic": ()}


@pytest.mark.parametrize("profile", sorted(KEPT_ON_PURPOSE))
def test_dicognito_as_a_second_opinion(exported: Exported, profile: str) -> None:
    from dicognito.anonymizer import Anonymizer

    options = OPTIONS if profile == "retain_dates" else Options(SECRET)
    kept_by_us: dict[str, int] = {}
    for c in exported.copies[::5]:
        data = c.path.read_bytes()
        before = _flat(_quiet_read(data, stop_before_pixels=True))
        theirs = _quiet_read(data, stop_before_pixels=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Anonymizer(seed="phi-test").anonymize(theirs)
        res = deidentify(data, options)
        if res.excluded:
            continue
        ours = _flat(_quiet_read(res.data, stop_before_pixels=True))
        for path, value in _flat(theirs).items():
            if path in before and before[path] != value and ours.get(path) == before[path] and before[path]:
                key = ".".join(path)
                kept_by_us[key] = kept_by_us.get(key, 0) + 1
    explained = KEPT_ON_PURPOSE[profile]
    unexplained = {k: n for k, n in kept_by_us.items() if not (explained and k.endswith(explained))}
    assert not unexplained, unexplained
