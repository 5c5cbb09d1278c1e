"""Export a cohort from the archive: de-identified DICOM, de-identified cubes and a Delta table of their headers.

Layout of an export folder::

    dicom/<study>/<series>/<sop>.dcm    de-identified instances (new UIDs)
    cubes/<study>/<series>.dcbs         one cube per series, made from the de-identified instances
    delta/                              their headers, the lake's schema (cubepacs.lake.scan)
    manifest.json                       what is there: per series its outputs, counts, burned-in flags, instances
                                        left out and why — no original identifier
    mapping.json                        original → new UIDs and pseudonyms (mode 0600: keep it apart)
    .progress.json                      per series, the outputs already written (an interrupted export, or one
                                        asking for more outputs, continues from there)

Every file is written atomically and every new UID is derived from the project secret, so an export run again
(after a crash, or with a larger cohort, or with more formats) rewrites identical files and never duplicates rows
or instances. A folder holds one profile (options) and one secret: an export into it with others is refused.

Every instance is read back before it counts: pydicom parses the de-identified file and its pixel data items,
the cube's own parser splits it, and every cube is opened again and gives back each file byte for byte. An
instance that fails is left out, counted and named (by its new UID) in the manifest; the rest goes on.

Example
-------
>>> folder_key(b"project-secret-0123") == folder_key(b"project-secret-0123") != folder_key(b"other-secret-01")
True
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cubepacs._atomic import atomic_write
from cubepacs.errors import ConfigError
from cubepacs.research.deid import Options, Result, deidentify, new_uid
from cubepacs.research.query import plan_key, select

__all__ = ["FORMATS", "Report", "check_plan", "export_cohort", "folder_key", "plan_key", "select"]
FORMATS = ("dicom", "cube", "delta")
Groups = dict[tuple[str, str], list[dict[str, Any]]]


@dataclass
class Report:
    """What an export did (this run), and what it left out."""

    series: int = 0  # series written (or completed) by this run
    instances: int = 0
    resumed: int = 0  # series found complete by an earlier run
    failed: list[str] = field(default_factory=list)  # "<new sop>: reason" (or "<new series> cube: reason")
    excluded: dict[str, int] = field(default_factory=dict)  # reason → instances left out on purpose
    burned_in: list[dict[str, str]] = field(default_factory=list)
    delta_committed: bool | None = None

    def summary(self) -> dict[str, Any]:
        """The report as JSON-able counts (no original identifier)."""
        return {"series": self.series, "instances": self.instances, "resumed": self.resumed,
                "failed": len(self.failed), "excluded": dict(self.excluded), "burned_in": len(self.burned_in),
                "delta_committed": self.delta_committed}


def folder_key(secret: bytes) -> str:
    """A fingerprint of the project secret (an HMAC: it tells nothing of the secret) kept in the folder."""
    return hmac.new(secret, b"cubepacs export folder", hashlib.sha256).hexdigest()[:16]


def _json(path: Path, doc: Any, private: bool = False) -> None:
    atomic_write(path, [json.dumps(doc, indent=1, sort_keys=True).encode()])
    if private:
        os.chmod(path, 0o600)


def _load(path: Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.is_file() else default


def check_formats(formats: tuple[str, ...]) -> tuple[str, ...]:
    """The formats asked for, checked (known, at least one), in canonical order."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ConfigError(f"formats: {', '.join(unknown) or 'none given'}: choose among {', '.join(FORMATS)}")
    return tuple(f for f in FORMATS if f in formats)


def prepare(out: Path, options: Options, formats: tuple[str, ...]) -> dict[str, Any]:
    """Check ``out`` can take this export (before anything is written); returns the progress found there."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--to {out}: is a file, not a folder")
    progress = _load(out / ".progress.json", None)
    if progress is None:
        if out.is_dir() and any(out.iterdir()):
            raise ConfigError(f"--to {out}: the folder holds other files and no export: choose an empty folder")
        return {"version": 2, "profile": options.profile(), "key": folder_key(options.secret), "series": {}}
    if not isinstance(progress, dict) or progress.get("version") != 2:
        raise ConfigError(f"--to {out}: holds an export of an older version: choose another folder")
    if progress["key"] != folder_key(options.secret):
        raise ConfigError(f"--to {out}: holds an export made with another project secret: choose another folder")
    if progress["profile"] != options.profile():
        raise ConfigError(f"--to {out}: holds an export with other options ({progress['profile']}), not "
                          f"({options.profile()}): choose another folder or the same options")
    return dict(progress)


def check_plan(out: Path, options: Options, formats: tuple[str, ...], groups: Groups) -> dict[str, Any]:
    """:func:`prepare`, and Delta only where the DICOM files it is made from are (or will be) in ``out``."""
    state = prepare(out, options, formats)
    if "delta" in formats and "dicom" not in formats:
        done = state["series"]
        for _, series in groups:
            if "dicom" not in done.get(new_uid(series, options.secret) if not options.retain_uids else series, []):
                raise ConfigError("formats: delta is made from the exported DICOM files: add dicom")
    return state


def _check_instance(res: Result, name: str) -> Any:
    """Read a de-identified instance back (pydicom, its pixel items, the cube's parser); the cube's instance."""
    import pydicom
    from pydicom.encaps import generate_fragments

    from cubepacs.cube.sources import read_instance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(res.data))
        if "PixelData" in ds and ds.file_meta.TransferSyntaxUID.is_compressed:
            for _ in generate_fragments(ds.PixelData):
                pass
    return ds, read_instance(res.data, name)


def _write_cube(instances: list[Any], datas: dict[str, bytes], path: Path, codec: str) -> None:
    from cubepacs.cube.reader import CubeReader
    from cubepacs.cube.writer import write_cube

    buf = io.BytesIO()
    write_cube(instances, buf, codec=codec, threads=1)
    tmp = path.with_name(path.name + ".check")
    atomic_write(tmp, [buf.getvalue()])
    try:
        reader = CubeReader(str(tmp))
        for name, data in datas.items():
            k = reader.position(name)
            if k is None or reader.instance_bytes(k) != data:
                raise ConfigError(f"{name}: the cube does not give it back byte for byte")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def export_cohort(load: Callable[[dict[str, Any]], bytes], groups: Groups, out: Path, options: Options,
                  formats: tuple[str, ...] = FORMATS, codec: str = "htj2k",
                  progress: Callable[[int, int], None] | None = None) -> Report:
    """Export the series of ``groups`` (from :func:`select`), reading instance bytes with ``load(row)``.

    Raises :class:`~cubepacs.errors.ConfigError` (before anything is written) for unknown formats, a folder that
    holds another export or other files, or Delta without DICOM files to build it from.
    """
    formats = check_formats(formats)
    state = check_plan(out, options, formats, groups)
    done: dict[str, list[str]] = state["series"]
    wanted = {series: new_uid(series, options.secret) if not options.retain_uids else series
              for _, series in groups}
    out.mkdir(parents=True, exist_ok=True)
    progress_file, mapping_file, manifest_file = out / ".progress.json", out / "mapping.json", out / "manifest.json"
    mapping: dict[str, str] = _load(mapping_file, {})
    manifest: dict[str, Any] = _load(manifest_file, {"series": {}})
    manifest["options"] = {"profile": state["profile"], "codec": codec}
    report = Report()
    total = sum(len(rows) for rows in groups.values())
    finished = 0
    for (_study, series), rows in sorted(groups.items()):
        new_series = wanted[series]
        missing = [f for f in formats if f != "delta" and f not in done.get(new_series, [])]
        if not missing:
            report.resumed += 1
            finished += len(rows)
            if progress:
                progress(finished, total)
            continue
        before = finished

        def tick(n: int, before: int = before) -> None:  # per instance: progress while a large series runs
            if progress:
                progress(before + n, total)

        entry = _export_series(load, rows, out, options, missing, codec, new_series, mapping, report, tick)
        finished += len(rows)
        old = manifest["series"].get(new_series, {})
        entry["formats"] = sorted(set(old.get("formats", [])) | set(entry["formats"]), key=FORMATS.index)
        manifest["series"][new_series] = entry
        nothing = not entry["instances"] and not entry["failed"]  # every instance left out on purpose
        done[new_series] = sorted(set(done.get(new_series, [])) | set(entry["formats"]) | set(missing if nothing
                                                                                             else []))
        _json(mapping_file, mapping, private=True)
        _json(manifest_file, manifest)
        _json(progress_file, state)
        report.series += 1
    if "delta" in formats and (out / "dicom").is_dir():
        from cubepacs.lake.scan import scan

        report.delta_committed = scan([str(out / "dicom")], str(out / "delta"), workers=1).committed
        for series, entry in manifest["series"].items():
            if "dicom" in entry["formats"] and "delta" not in entry["formats"]:
                entry["formats"].append("delta")
                done[series] = sorted(set(done.get(series, [])) | {"delta"})
        _json(progress_file, state)
    entries = manifest["series"].values()
    manifest["totals"] = {"series": len(manifest["series"]), "instances": sum(e["instances"] for e in entries),
                          "burned_in": sum(len(e["burned_in"]) for e in entries),
                          "failed": sum(len(e["failed"]) for e in entries),
                          "excluded": sum(len(e["excluded"]) for e in entries)}
    _json(manifest_file, manifest)
    return report


def _export_series(load: Callable[[dict[str, Any]], bytes], rows: list[dict[str, Any]], out: Path,
                   options: Options, missing: list[str], codec: str, new_series: str, mapping: dict[str, str],
                   report: Report, tick: Callable[[int], None] = lambda n: None) -> dict[str, Any]:
    """One series: every instance de-identified and checked, the missing outputs written; its manifest entry."""
    entry: dict[str, Any] = {"instances": 0, "burned_in": [], "failed": [], "excluded": [], "formats": []}
    instances: list[Any] = []
    datas: dict[str, bytes] = {}
    for n, row in enumerate(rows, 1):
        tick(n - 1)
        sop = new_uid(str(row["sop_uid"]), options.secret) if not options.retain_uids else str(row["sop_uid"])
        try:
            res = deidentify(load(row), options)
            if res.excluded:
                report.excluded[res.excluded] = report.excluded.get(res.excluded, 0) + 1
                entry["excluded"].append({"sop": sop, "reason": res.excluded})
                continue
            ds, instance = _check_instance(res, f"{sop}.dcm")
            absent = [k for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID") if not ds.get(k)]
            if absent:
                raise ValueError(f"no {absent[0]} (a truncated or partial instance)")
        except Exception as exc:  # one instance that cannot be exported never stops the cohort
            reason = f"{type(exc).__name__}: {str(exc).replace(str(row['sop_uid']), sop)}"[:300]
            report.failed.append(f"{sop}: {reason}")
            entry["failed"].append({"sop": sop, "reason": reason})
            continue
        mapping.update(res.uids)
        mapping[f"patient:{res.patient_key}"] = res.patient
        new_study, new_sop = str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)
        entry.update(study=new_study, modality=str(ds.get("Modality", "")))
        if res.burned_in:
            entry["burned_in"].append({"sop": new_sop, "reason": res.burned_in})
            report.burned_in.append({"series": new_series, "sop": new_sop, "reason": res.burned_in})
        if "dicom" in missing:
            atomic_write(out / "dicom" / new_study / new_series / f"{new_sop}.dcm", [res.data])
        if "cube" in missing:
            instances.append(instance)
            datas[f"{new_sop}.dcm"] = res.data
        entry["instances"] += 1
        report.instances += 1
    if entry["instances"] and "dicom" in missing:
        entry["formats"].append("dicom")
    if instances:
        try:
            _write_cube(instances, datas, out / "cubes" / entry["study"] / f"{new_series}.dcbs", codec)
            entry["formats"].append("cube")
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"[:300]
            report.failed.append(f"{new_series} cube: {reason}")
            entry["failed"].append({"cube": new_series, "reason": reason})
    tick(len(rows))  # the series' outputs are written: all its instances count
    return entry
