"""The cohort of an export: a study query checked before anything is read or written, and the instances it selects.

A query is QIDO-style: DICOM keywords of the study and series levels (:data:`KEYS`) → values. An unknown or
mistyped key, a value that cannot be one of its VR (``StudyDate=notadate``) or a ``KEY`` without ``=VALUE`` is a
:class:`~cubepacs.errors.ConfigError` naming the parameter: nothing is exported on a query that would select the
whole archive by accident.

Example
-------
>>> parse_query(["Modality=CT", "StudyDate=20200101-20211231"])
{'Modality': 'CT', 'StudyDate': '20200101-20211231'}
>>> try:
...     parse_query(["modality=CT"])
... except ConfigError as exc:
...     print(str(exc)[:68])
--query modality=CT: unknown key 'modality' (did you mean Modality?)
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cubepacs.errors import ConfigError

# keyword → (VR, what a value looks like); the keys the archive's index answers for studies and series
KEYS = {
    "StudyInstanceUID": "UI", "PatientID": "LO", "PatientName": "PN", "PatientSex": "CS", "PatientBirthDate": "DA",
    "StudyDate": "DA", "StudyTime": "TM", "AccessionNumber": "SH", "StudyID": "SH", "StudyDescription": "LO",
    "ReferringPhysicianName": "PN", "ModalitiesInStudy": "CS", "Modality": "CS", "SeriesInstanceUID": "UI",
    "SeriesNumber": "IS", "SeriesDescription": "LO", "SeriesDate": "DA",
}
SERIES_KEYS = ("SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "SeriesDate")
_DATE = r"\d{8}"
_TIME = r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?"
_FORMS = {
    "DA": (re.compile(rf"({_DATE}|{_DATE}-|-{_DATE}|{_DATE}-{_DATE})"), "YYYYMMDD or a range YYYYMMDD-YYYYMMDD"),
    "TM": (re.compile(rf"({_TIME}|{_TIME}-|-{_TIME}|{_TIME}-{_TIME})"), "HHMMSS or a range HHMMSS-HHMMSS"),
    "UI": (re.compile(r"[0-9]+(\.[0-9]+)*"), "a UID (digits and dots)"),
    "IS": (re.compile(r"[+-]?[0-9]{1,12}"), "an integer"),
    "CS": (re.compile(r"[A-Z0-9 _*?]{1,16}"), "upper-case letters, digits, space or _ (at most 16)"),
}


def _check(key: str, value: str, param: str) -> None:
    vr = KEYS[key]
    if not value.strip():
        raise ConfigError(f"{param}: an empty value for {key}")
    if "\0" in value or len(value) > 1024:
        raise ConfigError(f"{param}: the value of {key} is not text of at most 1024 characters")
    form = _FORMS.get(vr)
    if form is None:
        return
    for item in value.split(","):
        if not form[0].fullmatch(item.strip()):
            raise ConfigError(f"{param}: {item!r} is not a valid {key} ({vr}): expected {form[1]}")


def check_filters(filters: dict[str, Any], where: str = "query") -> dict[str, str]:
    """``filters`` (keyword → value) checked: every key known, every value of its VR; returns them as text.

    Raises :class:`~cubepacs.errors.ConfigError` naming the key (with the nearest known one) or the value.
    """
    out: dict[str, str] = {}
    for key, value in filters.items():
        param = f"{where} {key}={value}"
        if key not in KEYS:
            near = difflib.get_close_matches(key, KEYS, n=1, cutoff=0.6) or \
                [k for k in KEYS if k.lower() == str(key).lower()]
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ConfigError(f"{param}: unknown key {key!r}{hint}; keys: {', '.join(KEYS)}")
        text = ",".join(str(v) for v in value) if isinstance(value, list) else value
        if not isinstance(text, str | int):
            raise ConfigError(f"{param}: the value of {key} must be text")
        _check(key, str(text), param)
        out[key] = str(text)
    return out


def parse_query(items: Iterable[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings (the command line's ``--query``) → checked filters."""
    filters: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--query {item}: expected KEY=VALUE, e.g. Modality=CT or StudyDate=20200101-20211231")
        if key.strip() in filters:
            raise ConfigError(f"--query {item}: {key.strip()} given twice (a list is KEY=A,B)")
        filters.update(check_filters({key.strip(): value.strip()}, "--query"))
    return filters


def plan_key(row: dict[str, Any]) -> tuple[str, str]:
    """The (study, series) an instance row belongs to.

    >>> plan_key({"study_uid": "1.2", "series_uid": "1.2.3"})
    ('1.2', '1.2.3')
    """
    return str(row["study_uid"]), str(row["series_uid"])


@dataclass(frozen=True)
class Selection:
    """What a query selects: instance rows by (study, series), and their counts."""

    groups: dict[tuple[str, str], list[dict[str, Any]]]

    @property
    def studies(self) -> int:
        """Number of studies."""
        return len({study for study, _ in self.groups})

    @property
    def series(self) -> int:
        """Number of series."""
        return len(self.groups)

    @property
    def instances(self) -> int:
        """Number of instances."""
        return sum(len(rows) for rows in self.groups.values())

    def summary(self) -> str:
        """``"2 studies, 3 series, 154 instances"``."""
        return f"{self.studies} studies, {self.series} series, {self.instances} instances"


def select(index: Any, tenant: str, filters: dict[str, Any] | None = None, studies: list[str] | None = None,
           series: list[str] | None = None) -> Selection:
    """Instance rows of ``tenant`` by series: a checked study query (keywords → values), study UIDs, series UIDs.

    A query with series keys selects the matching series; one with study keys only, the whole matching studies
    (``Modality`` then means the studies holding that modality).
    """
    filters = check_filters(filters or {})
    for uid in [*(studies or []), *(series or [])]:
        _check("StudyInstanceUID", uid, f"UID {uid}")
    chosen: list[dict[str, Any]] = []
    if filters and any(k in SERIES_KEYS for k in filters):
        for s in index.search_series(tenant, filters, limit=1_000_000):
            chosen += index.instances_of(tenant, s["study_uid"], s["series_uid"])
    elif filters:
        study_filters = {("ModalitiesInStudy" if k == "Modality" else k): v for k, v in filters.items()}
        for s in index.search_studies(tenant, study_filters, limit=1_000_000):
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
    return Selection(by_series)
