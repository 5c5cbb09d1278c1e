"""Query matching as PS3.4 C.2.2.2 specifies, as SQL conditions on the index's columns (C-FIND and QIDO alike).

Each query key is matched by the rules of its attribute's VR:

* **Multiple values** (``CT\\MR``; in QIDO also ``CT,MR``, PS3.18 8.3.4.1, as Orthanc reads it): an entity
  matches when any one value matches (UID lists C.2.2.2.2; ``ModalitiesInStudy`` when any of its series'
  modalities is one of them).
* **Universal** (empty, or ``*``): no condition (C.2.2.2.3).
* **Wild cards** ``*`` and ``?`` (C.2.2.2.4) for AE, CS, LO, LT, PN, SH, ST, UC, UR, UT only; in a UID, date,
  time or number they are literal characters (so ``1.2*`` matches no UID), and so they are in one of several
  values (``CT*\\MR``: the standard defines lists for UIDs only, C.2.2.2.2; Orthanc matches list values exactly).
* **Ranges** (C.2.2.2.5) for DA and TM: only stored values that are dates (``YYYYMMDD``) or times
  (``HH[MM[SS[.F{1,6}]]]``) are compared; a malformed stored value (``***``, ``1995.05.01``) never falls in a
  range, and is returned as it was stored. A time range's bounds count at their precision (``-10`` is up to
  10:59:59.999999).
* **Case** (C.2.2.2.1): exact and wild-card matching are case-sensitive, except for PN, where the archive's
  ``pn_case_sensitive`` setting decides (default: insensitive, as Orthanc's ``CaseSensitivePN`` default).
* **Person Names** are stored with their three component groups (``Alphabetic=Ideographic=Phonetic``, PS3.5
  6.2.1.2). A query value without ``=`` matches a name when any one group matches it; a value with groups
  matches group by group (an empty query group matches anything).

Example
-------
>>> from sqlalchemy import column
>>> from sqlalchemy.dialects import sqlite
>>> cond = condition(column("modality"), "CS", "CT\\\\MR", "sqlite")
>>> str(cond.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
"modality IN ('CT', 'MR')"
>>> split_values("CT,MR", qido=True), split_values("CT,MR")
(['CT', 'MR'], ['CT,MR'])
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import and_, false, func, or_

WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
_DATE = "^[0-9]{8}$"
_TIME = r"^[0-9]{2}([0-9]{2}([0-9]{2}(\.[0-9]{1,6})?)?)?$"


def split_values(value: str | list[str], qido: bool = False) -> list[str]:
    """The values of a query key: a list as given; a string split at ``\\`` (and at ``,`` in QIDO), each value
    stripped of padding spaces.

    Example
    -------
    >>> split_values("1.2\\\\1.3"), split_values(["1.2"])
    (['1.2', '1.3'], ['1.2'])
    """
    items = value if isinstance(value, list) else value.split("\\")
    if qido:
        items = [part for item in items for part in item.split(",")]
    return [item.strip(" ") for item in items]


def condition(col: Any, vr: str, value: str | list[str], dialect: str, qido: bool = False,
              pn_case_sensitive: bool = False, fuzzy: bool = False) -> Any:
    """The SQL condition for one query key on ``col`` (None when it matches everything).

    ``fuzzy`` is QIDO's ``fuzzymatching=true``: a PN value then matches names that contain it, in any case.

    Example
    -------
    >>> from sqlalchemy import column
    >>> condition(column("patient_name"), "PN", "*", "sqlite") is None
    True
    """
    items = split_values(value, qido)
    if any(item in ("", "*") for item in items):
        return None
    wild = len(items) == 1  # in a list, * and ? are characters (as Orthanc reads it: see the module docstring)
    if vr in ("UI", "CS", "AE", "SH", "LO") and not wild:
        return col.in_(items)
    conds = [_single(col, vr, item, dialect, pn_case_sensitive, fuzzy, wild) for item in items]
    if any(c is None for c in conds):  # a PN value of empty groups (``=``) matches everything
        return None
    return conds[0] if len(conds) == 1 else or_(*conds)


def _has_wildcard(item: str, vr: str) -> bool:
    return vr in WILDCARD_VRS and ("*" in item or "?" in item)


def _single(col: Any, vr: str, item: str, dialect: str, pn_case_sensitive: bool, fuzzy: bool, wild: bool) -> Any:
    if vr in ("DA", "TM", "DT") and "-" in item:
        return _range(col, vr, item)
    if vr in ("IS", "US", "UL", "SL", "SS"):
        try:
            return col == int(item)
        except ValueError:
            return false()
    if vr == "PN":
        return _person_name(col, item, dialect, not pn_case_sensitive, fuzzy, wild)
    if wild and _has_wildcard(item, vr):
        if item.endswith("*") and not _has_wildcard(item[:-1], vr):
            # a prefix (P0012*): a range the column's index serves, on SQLite as on PostgreSQL
            prefix = item[:-1]
            return and_(col >= prefix, col < prefix[:-1] + chr(ord(prefix[-1]) + 1))
        return _regexp(col, "^" + _pattern(item, ".") + "$", dialect, False)
    return col == item


def _pattern(item: str, any_char: str, wild: bool = True) -> str:
    """A DICOM wild-card value as a regular expression (``any_char``: what ``?`` and ``*`` may stand for; with
    ``wild`` False they are characters)."""
    if not wild:
        return re.escape(item)
    return "".join(f"{any_char}*" if c == "*" else any_char if c == "?" else re.escape(c) for c in item)


def _regexp(col: Any, pattern: str, dialect: str, insensitive: bool) -> Any:
    if dialect == "sqlite":  # SQLAlchemy's SQLite REGEXP is Python's re.search, which takes no flags argument
        return col.regexp_match(("(?i)" if insensitive else "") + pattern)
    return col.regexp_match(pattern, flags="i" if insensitive else None)


def _person_name(col: Any, item: str, dialect: str, insensitive: bool, fuzzy: bool, wild: bool) -> Any:
    if fuzzy:
        return _regexp(col, _pattern(item, "[^=]", wild), dialect, True)
    groups = item.split("=")
    if len(groups) == 1:  # any component group
        return _regexp(col, "(^|=)" + _pattern(item, "[^=]", wild) + "(=|$)", dialect, insensitive)
    parts = []
    for n, group in enumerate(groups[:3]):
        if group in ("", "*"):
            continue
        parts.append(_regexp(col, "^" + "[^=]*=" * n + _pattern(group, "[^=]", wild) + ("(=|$)" if n < 2 else "$"),
                             dialect, insensitive))
    return and_(*parts) if parts else None


def _range(col: Any, vr: str, item: str) -> Any:
    """A DA/TM range over well-formed stored values only (DT ranges compare the stored strings)."""
    lo, _, hi = item.partition("-")
    lo, hi = lo.strip(), hi.strip()
    if vr == "DA":
        value, parts = col, [col.regexp_match(_DATE)]
    elif vr == "TM":
        # HH, HHMM, HHMMSS.FFFFFF compared at HHMMSS; the bounds at their own precision
        value, parts = func.substr(col.concat("000000"), 1, 6), [col.regexp_match(_TIME)]
        lo, hi = (lo.partition(".")[0] + "000000")[:6] if lo else "", (hi.partition(".")[0] + "999999")[:6] if hi \
            else ""
    else:
        value, parts = col, []
    if lo:
        parts.append(value >= lo)
    if hi:
        parts.append(value <= hi)
    return and_(*parts)


# the study list's sort keys (``search_studies(order=…)``) → the aggregates they sort on
STUDY_ORDERS = {"date": ("study_date", "study_time"), "patient": ("patient_name",), "patient_id": ("patient_id",),
                "accession": ("accession_number",), "description": ("study_description",),
                "modality": ("modality",), "series": (), "instances": (), "uid": ()}


def study_order(order: str) -> list[Any]:
    """ORDER BY terms of a study list order (``date``, ``-date``, …; "" → none). ValueError for an unknown one.

    Example
    -------
    >>> [str(t) for t in study_order("-date")]
    ['max(dicom_state_meta.study_date) DESC NULLS LAST', 'max(dicom_state_meta.study_time) DESC NULLS LAST']
    """
    from cubepacs.archive.index.models import dicom_state_meta as s

    name = order.removeprefix("-")
    if not order:
        return []
    if name not in STUDY_ORDERS:
        raise ValueError(f"unknown sort order {order!r}: one of {', '.join(STUDY_ORDERS)} (- before it: descending)")
    terms: list[Any] = ([func.min(s.c.modality)] if name == "modality" else
                        [func.count()] if name == "series" else
                        [func.sum(s.c.series_related_instances)] if name == "instances" else
                        [s.c.study_uid] if name == "uid" else
                        [func.max(s.c[c]) for c in STUDY_ORDERS[name]])
    # a missing value first, ascending, and last, descending, in SQLite and PostgreSQL alike
    return [t.desc().nulls_last() if order.startswith("-") else t.asc().nulls_first() for t in terms]
