"""QIDO-RS: the study, series and instance searches (PS3.18 10.6), their query parameters checked and the rows of
the index answered as DICOM JSON; matching itself is the index's (``index/matching.py``).

Example
-------
>>> to_json({"study_uid": "1.2", "patient_name": "DOE^JOHN"}, {"StudyInstanceUID": "study_uid",
...                                                             "PatientName": "patient_name"})["0020000D"]
{'vr': 'UI', 'Value': ['1.2']}
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import Response
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from cubepacs.archive.index.matching import split_values
from cubepacs.archive.web.context import ROOT, Services, cached, json_items, tenant_of
from cubepacs.dicom.dicomjson import pn_groups

_STUDY = {"StudyDate": "study_date", "StudyTime": "study_time", "AccessionNumber": "accession_number",
          "ReferringPhysicianName": "referring_physician", "PatientName": "patient_name", "PatientID": "patient_id",
          "PatientBirthDate": "patient_birth_date", "PatientSex": "patient_sex", "StudyInstanceUID": "study_uid",
          "StudyID": "study_id", "StudyDescription": "study_description"}
_SERIES = {"SeriesInstanceUID": "series_uid", "Modality": "modality", "SeriesNumber": "series_number",
           "SeriesDescription": "series_description", "SeriesDate": "series_date"}
_INSTANCE = {"SOPInstanceUID": "sop_uid", "SOPClassUID": "sop_class_uid", "InstanceNumber": "instance_number",
             "Rows": "rows", "Columns": "columns", "NumberOfFrames": "frames"}
_PAGING = {"limit", "offset", "fuzzymatching", "includefield"}



def _element(keyword: str, value: Any) -> dict[str, Any] | None:
    if value in (None, "", []):
        return None
    vr = str(dictionary_VR(keyword))
    values = value if isinstance(value, list) else [value]
    if vr == "PN":  # the index keeps a name's component groups: Alphabetic=Ideographic=Phonetic
        values = [pn_groups(str(v)) for v in values]
    elif vr in ("IS", "US", "UL"):
        values = [int(v) for v in values]
    return {"vr": vr, "Value": values}


def to_json(row: dict[str, Any], fields: dict[str, str], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A QIDO result as DICOM JSON (tags as ``GGGGEEEE``)."""
    out: dict[str, Any] = {}
    for kw, col in fields.items():
        el = _element(kw, row.get(col))
        if el is not None:
            out[f"{tag_for_keyword(kw):08X}"] = el
    for kw, value in (extra or {}).items():
        el = _element(kw, value)
        if el is not None:
            out[f"{tag_for_keyword(kw):08X}"] = el
    return dict(sorted(out.items()))


_INTEGER = {"SeriesNumber", "InstanceNumber", "Rows", "Columns", "NumberOfFrames"}
_INT = re.compile(r"-?[0-9]{1,12}")
_DATE = re.compile(r"(\d{8})?(-(\d{8})?)?")
_UID = re.compile(r"[0-9.]{1,64}")


def _check_value(keyword: str, key: str, value: str) -> None:
    """400 for a query value the attribute can never match (a number that is not one, a malformed date); each of
    several values (``\\`` or ``,``: PS3.18 8.3.4.1) is checked."""
    if value in ("", "*"):
        return
    vr = str(dictionary_VR(keyword))
    for item in split_values(value, qido=True):
        if keyword in _INTEGER and not (_INT.fullmatch(item) and abs(int(item)) < 2**31):
            raise HTTPException(400, f"query attribute {key!r} must be an integer, not {item[:40]!r}")
        if vr == "DA" and not _DATE.fullmatch(item):
            raise HTTPException(400, f"query attribute {key!r} must be a date YYYYMMDD or a range, not {item[:40]!r}")
        if vr == "UI" and not _UID.fullmatch(item):
            raise HTTPException(400, f"query attribute {key!r} must be UIDs (digits and dots), not {item[:40]!r}")


def _bounded_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    if not _INT.fullmatch(text) or not low <= int(text) <= high:
        raise HTTPException(400, f"{name} must be an integer from {low} to {high}, not {text[:40]!r}")
    return int(text)


def query_filters(request: Request) -> tuple[dict[str, Any], int, int, bool]:
    """QIDO query parameters → (filters by keyword, limit, offset, fuzzy); 400 with the reason for an unknown
    attribute or a value it can never have."""
    filters: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        if key.lower() in _PAGING:
            continue
        keyword = key
        if len(key) == 8 and all(c in "0123456789abcdefABCDEF" for c in key):
            keyword = keyword_for_tag(int(key, 16)) or key
        if tag_for_keyword(keyword) is None:
            raise HTTPException(400, f"unknown query attribute {key[:64]!r}")
        _check_value(keyword, key, value)
        filters[keyword] = value
    limit = min(_bounded_int(request, "limit", 100, 1, 2**31 - 1), 10_000)
    offset = _bounded_int(request, "offset", 0, 0, 2**31 - 1)
    fuzzy = request.query_params.get("fuzzymatching", "false").lower() == "true"
    return filters, limit, offset, fuzzy


def add_routes(app: FastAPI, services: Services) -> None:
    """The three QIDO-RS searches under ``/dicom-web``, answered from the cache when nothing changed."""

    @app.get(ROOT + "/studies")
    def search_studies(request: Request, tenant: str = Depends(tenant_of)) -> Response:
        filters, limit, offset, fuzzy = query_filters(request)

        def build() -> Response:
            rows = services.index.search_studies(tenant, filters, limit, offset, fuzzy, qido=True)
            return json_items([to_json(r, _STUDY, {"ModalitiesInStudy": r.get("modalities"),
                                              "NumberOfStudyRelatedSeries": r.get("series"),
                                              "NumberOfStudyRelatedInstances": r.get("instances")}) for r in rows])

        return cached(services, tenant, "qido", request, build)

    @app.get(ROOT + "/series")
    @app.get(ROOT + "/studies/{study}/series")
    def search_series(request: Request, study: str | None = None, tenant: str = Depends(tenant_of)) -> Response:
        filters, limit, offset, fuzzy = query_filters(request)

        def build() -> Response:
            rows = services.index.search_series(tenant, filters, study, limit, offset, fuzzy, qido=True)
            return json_items([to_json(r, {**_STUDY, **_SERIES},
                                  {"NumberOfSeriesRelatedInstances": r.get("series_related_instances")})
                          for r in rows])

        return cached(services, tenant, "qido", request, build)

    @app.get(ROOT + "/instances")
    @app.get(ROOT + "/studies/{study}/instances")
    @app.get(ROOT + "/studies/{study}/series/{series}/instances")
    def search_instances(request: Request, study: str | None = None, series: str | None = None,
                         tenant: str = Depends(tenant_of)) -> Response:
        filters, limit, offset, fuzzy = query_filters(request)

        def build() -> Response:
            rows = services.index.search_instances(tenant, filters, study, series, limit, offset, fuzzy,
                                                     qido=True)
            return json_items([to_json(r, {**_STUDY, **_SERIES, **_INSTANCE}) for r in rows])

        return cached(services, tenant, "qido", request, build)
