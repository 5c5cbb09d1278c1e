"""Series quality checks: reported and stored in the cube, never silently "fixed".

Checks: missing or duplicate InstanceNumbers, slice gaps and non-uniform spacing along the slice normal, mixed
orientation, mixed frame size, empty key tags, several series mixed together.

Example
-------
>>> from cubepacs.cube.sources import read_instances
>>> report = run_qc(read_instances("../shared/data/series/ct_philips_ingenuity_tilt_54sl"))
>>> report["ok"], report["instances"]
(True, 54)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from cubepacs.cube.columns import INT_MISSING, column_values

if TYPE_CHECKING:
    from cubepacs.cube.sources import Instance

KEY_TAGS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "Modality")
SPACING_TOLERANCE = 0.01  # relative deviation from the median slice spacing that counts as non-uniform


def _instance_number_issues(numbers: np.ndarray) -> tuple[list[str], dict[str, Any]]:
    present = numbers[numbers != INT_MISSING]
    issues = []
    counts = Counter(present.tolist())
    dups = sorted(n for n, c in counts.items() if c > 1)
    missing: list[int] = []
    if len(present):
        full = set(range(int(present.min()), int(present.max()) + 1))
        missing = sorted(full - set(counts))
    if len(present) < len(numbers):
        issues.append(f"{len(numbers) - len(present)} instance(s) without InstanceNumber")
    if dups:
        issues.append(f"duplicate InstanceNumber: {dups[:10]}")
    if missing:
        issues.append(f"missing InstanceNumber: {missing[:10]}{' …' if len(missing) > 10 else ''}")
    return issues, {"duplicates": dups, "missing": missing}


def _spacing_issues(ipp: np.ndarray, iop: np.ndarray) -> tuple[list[str], dict[str, Any]]:
    ok = ~np.isnan(ipp).any(axis=1) & ~np.isnan(iop).any(axis=1)
    if ok.sum() < 2:
        return [], {}
    issues = []
    iop_ok = iop[ok]
    if np.abs(iop_ok - iop_ok[0]).max() > 1e-4:
        issues.append("mixed ImageOrientationPatient")
    normal = np.cross(iop_ok[0][:3], iop_ok[0][3:])
    pos = np.sort(ipp[ok] @ normal)
    diffs = np.diff(pos)
    info: dict[str, Any] = {}
    if (diffs < 1e-6).any():
        issues.append(f"{int((diffs < 1e-6).sum())} slice(s) at the same position")
    moving = diffs[diffs >= 1e-6]
    if len(moving):
        med = float(np.median(moving))
        info = {"median_spacing": round(med, 6), "min_spacing": round(float(moving.min()), 6),
                "max_spacing": round(float(moving.max()), 6)}
        if (np.abs(moving - med) > SPACING_TOLERANCE * med).any():
            gaps = int((moving > 1.5 * med).sum())
            issues.append(f"non-uniform slice spacing ({info['min_spacing']}–{info['max_spacing']} mm, "
                          f"median {info['median_spacing']} mm{f', {gaps} gap(s)' if gaps else ''})")
    return issues, info


def run_qc(instances: Sequence[Instance]) -> dict[str, Any]:
    """Check one series; return ``{"ok", "issues", "instances", …}`` (JSON-ready)."""
    issues: list[str] = []
    series = {str(i.attrs.get("SeriesInstanceUID", "")) for i in instances}
    if len(series) > 1:
        issues.append(f"{len(series)} different SeriesInstanceUIDs")
    n_issues, n_info = _instance_number_issues(column_values(instances, "InstanceNumber"))
    issues += n_issues
    s_issues, s_info = _spacing_issues(column_values(instances, "ImagePositionPatient"),
                                       column_values(instances, "ImageOrientationPatient"))
    issues += s_issues
    sizes = {(i.desc.rows, i.desc.cols) for i in instances if i.desc is not None}
    if len(sizes) > 1:
        issues.append(f"mixed frame sizes: {sorted(sizes)}")
    empty = sorted({t for i in instances for t in KEY_TAGS if str(i.attrs.get(t, "") or "").strip() == ""})
    if empty:
        issues.append(f"empty or missing key tags: {', '.join(empty)}")
    return {"ok": not issues, "issues": issues, "instances": len(instances), "instance_numbers": n_info,
            "spacing": s_info, "sizes": [list(s) for s in sorted(sizes)], "empty_keys": empty}
