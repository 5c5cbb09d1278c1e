"""Export a cohort from the archive: de-identified DICOM, de-identified cubes and a Delta table of their headers.

Layout of an export folder::

    dicom/<study>/<series>/<sop>.dcm    de-identified instances (new UIDs)
    cubes/<study>/<series>.dcbs         one cube per series, made from the de-identified instances
    delta/                              their headers, the lake's schema (cubepacs.lake.scan)
    manifest.json                       what was exported: new UIDs, counts, options, burned-in flags — no
                                        original identifier
    mapping.json                        original → new UIDs and pseudonyms (mode 0600: keep it apart)
    .progress.json                      series already done (an interrupted export continues from there)

Every file is written atomically and every new UID is derived from the project secret, so an export run again
(after a crash, or with a larger cohort) rewrites identical files and never duplicates rows or instances.

Example
-------
>>> plan_key({"study_uid": "1.2", "series_uid": "1.2.3"})
('1.2', '1.2.3')
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cubepacs._atomic import atomic_write
from cubepacs.research.deid import Options, deidentify, new_uid

FORMATS = ("dicom", "cube", "delta")


@dataclass
class Report:
    """What an export did."""

    series: int = 0
    instances: int = 0
    resumed: int = 0  # series found done by an earlier run
    failed: list[str] = field(default_factory=list)  # "<new sop>: reason"
    burned_in: list[dict[str, str]] = field(default_factory=list)
    delta_committed: bool | None = None


def plan_key(row: dict[str, Any]) -> tuple[str, str]:
    """The (study, series) an instance row belongs to."""
    return str(row["study_uid"]), str(row["series_uid"])


def select(index: Any, tenant: str, filters: dict[str, Any] | None = None, studies: list[str] | None = None,
           series: list[str] | None = None) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Instance rows of ``tenant`` by series: a QIDO-style study query (keywords → values), study UIDs, series UIDs."""
    chosen: list[dict[str, Any]] = []
    if filters and "Modality" in filters:  # a study query: the studies holding that modality
        filters = {("ModalitiesInStudy" if k == "Modality" else k): v for k, v in filters.items()}
    if filters:
        for s in index.search_studies(tenant, filters, limit=100_000):
            chosen += index.instances_of(tenant, s["study_uid"])
    for uid in studies or []:
        chosen += index.instances_of(tenant, uid)
    for uid in series or []:
        chosen += index.search_instances(tenant, {"SeriesInstanceUID": [uid]}, limit=1_000_000)
    by_series: dict[tuple[str, str], list[dict[str, Any]]] = {}
    seen: set[str] = set()
    for row in chosen:
        if row["sop_uid"] not in seen:
            seen.add(row["sop_uid"])
            by_series.setdefault(plan_key(row), []).append(row)
    return by_series


def _json(path: Path, doc: Any, private: bool = False) -> None:
    atomic_write(path, [json.dumps(doc, indent=1, sort_keys=True).encode()])
    if private:
        os.chmod(path, 0o600)


def _load(path: Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.is_file() else default


def export_cohort(load: Callable[[dict[str, Any]], bytes], groups: dict[tuple[str, str], list[dict[str, Any]]],
                  out: Path, options: Options, formats: tuple[str, ...] = FORMATS, codec: str = "htj2k",
                  progress: Callable[[int, int], None] | None = None) -> Report:
    """Export the series of ``groups`` (from :func:`select`), reading instance bytes with ``load(row)``."""
    from cubepacs.cube.sources import read_instance
    from cubepacs.cube.writer import write_cube

    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown export format(s) {sorted(unknown)}; known: {', '.join(FORMATS)}")
    out.mkdir(parents=True, exist_ok=True)
    progress_file, mapping_file, manifest_file = out / ".progress.json", out / "mapping.json", out / "manifest.json"
    done: list[str] = _load(progress_file, [])
    mapping: dict[str, str] = _load(mapping_file, {})
    manifest: dict[str, Any] = _load(manifest_file, {"series": {}})
    manifest["options"] = {"profile": [name for _, name in options.codes()], "formats": list(formats)}
    report = Report()
    total = sum(len(rows) for rows in groups.values())
    finished = 0
    for (_study, series), rows in sorted(groups.items()):
        new_series = new_uid(series, options.secret) if not options.retain_uids else series
        if new_series in done:
            report.resumed += 1
            finished += len(rows)
            if progress:
                progress(finished, total)
            continue
        instances = []
        entry: dict[str, Any] = {"instances": 0, "burned_in": []}
        for row in rows:
            try:
                res = deidentify(load(row), options)
            except Exception as exc:
                report.failed.append(f"{new_uid(row['sop_uid'], options.secret)}: {type(exc).__name__}: {exc}")
                continue
            mapping.update(res.uids)
            import pydicom

            ds = pydicom.dcmread(io.BytesIO(res.data), stop_before_pixels=True)
            new_study, new_sop = str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)
            mapping[f"patient:{row.get('patient_id') or ''}"] = str(ds.PatientID)
            entry.update(study=new_study, modality=str(ds.get("Modality", "")))
            if res.burned_in:
                entry["burned_in"].append({"sop": new_sop, "reason": res.burned_in})
                report.burned_in.append({"series": new_series, "sop": new_sop, "reason": res.burned_in})
            if "dicom" in formats:
                atomic_write(out / "dicom" / new_study / new_series / f"{new_sop}.dcm", [res.data])
            if "cube" in formats:
                instances.append(read_instance(res.data, f"{new_sop}.dcm"))
            entry["instances"] += 1
            report.instances += 1
            finished += 1
            if progress:
                progress(finished, total)
        if instances:
            buf = io.BytesIO()
            write_cube(instances, buf, codec=codec, threads=1)
            atomic_write(out / "cubes" / entry["study"] / f"{new_series}.dcbs", [buf.getvalue()])
        manifest["series"][new_series] = entry
        _json(mapping_file, mapping, private=True)
        _json(manifest_file, manifest)
        done.append(new_series)
        _json(progress_file, done)
        report.series += 1
    if "delta" in formats and (out / "dicom").is_dir():
        from cubepacs.lake.scan import scan

        report.delta_committed = scan([str(out / "dicom")], str(out / "delta"), workers=1).committed
    manifest["totals"] = {"series": len(manifest["series"]),
                          "instances": sum(e["instances"] for e in manifest["series"].values()),
                          "burned_in": sum(len(e["burned_in"]) for e in manifest["series"].values())}
    _json(manifest_file, manifest)
    return report
