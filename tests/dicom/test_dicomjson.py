"""The fast DICOM JSON converter agrees with pydicom's to_json_dict on every real file it handles."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pydicom
import pytest

from cubepacs.dicom.dicomjson import InvalidValue, Unsupported, dataset_to_json
from cubepacs.dicom.rawfile import PIXEL_TAGS, split_file
from tests.conftest import MALFORMED, SERIES, SINGLES, dicom_files

FILES = SINGLES + [dicom_files(s)[1] for s in SERIES] + MALFORMED


def _same(ours: dict[str, Any], ref: dict[str, Any], where: str = "") -> list[str]:
    """Differences that matter; tolerated: "" vs null in multi-valued strings, bulk/inline representation of
    binary values, UN kept as UN (pydicom re-reads some as their dictionary VR), trailing padding elements."""
    problems = []
    for key in set(ours) | set(ref):
        if key == "FFFCFFFC":
            continue
        if key not in ours or key not in ref:
            problems.append(f"{where}{key} only in {'pydicom' if key in ref else 'ours'}")
            continue
        a, b = ours[key], ref[key]
        if a["vr"] == "UN" or (a["vr"] == "US" and b["vr"] == "SS"):
            continue
        if a["vr"] != b["vr"]:
            problems.append(f"{where}{key} VR {a['vr']} vs {b['vr']}")
        elif a["vr"] == "SQ":
            for i, (x, y) in enumerate(zip(a.get("Value", []), b.get("Value", []), strict=True)):
                problems += _same(x or {}, y or {}, f"{where}{key}[{i}].")
        elif "Value" in a or "Value" in b:
            norm = [None if v == "" else v for v in b.get("Value", [])]
            if a.get("Value", []) != norm:
                problems.append(f"{where}{key}: {a.get('Value')} vs {b.get('Value')}")
    return problems


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_fast_json_matches_pydicom(path: Path) -> None:
    try:
        raw = split_file(path.read_bytes(), path.name)
    except Exception:
        pytest.skip("not readable as DICOM (covered by the malformed-input tests)")
    if raw.deflated_body is not None:
        pytest.skip("deflated: the lake reads it through pydicom")
    body = b"".join(c.data for c in raw.chunks if c.key >= 0 and c.key >> 16 != 2 and c.key not in PIXEL_TAGS)
    try:
        ours, _, _, _ = dataset_to_json(body, raw.implicit, raw.little_endian, 1024)
    except Unsupported:
        pytest.skip("character set handled by the pydicom path")
    except InvalidValue as exc:
        assert path.name == "bad_vr_value_rtdose.dcm" and "(0028,0008)" in str(exc)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = pydicom.dcmread(path, force=True, stop_before_pixels=True).to_json_dict(
            bulk_data_threshold=1024, bulk_data_element_handler=lambda e: "bulk")
    assert _same(ours, ref) == []
