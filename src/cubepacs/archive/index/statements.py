"""The index's prepared statements and row helpers, built once per dialect.

Example
-------
>>> sorted(statements("sqlite"))[:3]
['count', 'doc', 'docs']
>>> int_or_none("12"), int_or_none("1A"), int_or_none(2**40)
(12, None, None)
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import and_, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite

from cubepacs.archive.index.models import dicom_instance, dicom_instance_json, dicom_json_meta, dicom_state_meta


@functools.cache
def statements(dialect: str) -> dict[str, Any]:
    """The indexer's statements, built once per dialect: SQLAlchemy then reuses their compiled SQL without
    building (and cache-keying) a new statement object per instance."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    i, s, j, ij = dicom_instance, dicom_state_meta, dicom_json_meta, dicom_instance_json
    state = insert(s)
    kept = [c.name for c in s.columns if c.name not in ("tenant_id", "study_uid", "series_uid", "study_uid_hash",
                                                        "series_uid_hash", "created_time")]
    # a series' attributes are those its first instances gave ("state_first": a later instance with other values,
    # as the eight transfer-syntax copies of one Siemens series have other Series Numbers, changes no answer to a
    # query — as Orthanc does); a replaced instance (overwrite) sets them ("state")
    first = insert(s)
    first = first.on_conflict_do_update(
        index_elements=["tenant_id", "study_uid", "series_uid"],
        set_={c: first.excluded[c] if c in ("series_related_instances", "updated_time")
              else func.coalesce(s.c[c], first.excluded[c]) for c in kept})
    state = state.on_conflict_do_update(
        index_elements=["tenant_id", "study_uid", "series_uid"], set_={c: state.excluded[c] for c in kept})
    flag = insert(j)
    flag = flag.on_conflict_do_update(
        index_elements=["tenant_id", "study_uid", "series_uid"],
        set_={c: flag.excluded[c] for c in ("flag_time", "json_status", "retry_times", "updated_time")})
    doc = insert(ij)
    doc = doc.on_conflict_do_update(index_elements=["tenant_id", "sop_uid"], set_={"doc": doc.excluded.doc})
    return {
        "doc": doc,
        "docs": select(ij.c.sop_uid, ij.c.doc).join(
            i, and_(i.c.tenant_id == ij.c.tenant_id, i.c.sop_uid == ij.c.sop_uid)).where(
            i.c.tenant_id == bindparam("t"), i.c.study_uid == bindparam("st"), i.c.series_uid == bindparam("se")),
        "instances": insert(i).on_conflict_do_nothing().returning(i.c.tenant_id, i.c.sop_uid),
        "count": select(func.count()).select_from(i).where(
            i.c.tenant_id == bindparam("t"), i.c.study_uid == bindparam("st"), i.c.series_uid == bindparam("se")),
        "state": state, "state_first": first, "flag": flag,
        "frame_source": select(i, j.c.json_status, j.c.cube_key, j.c.updated_time.label("cube_time")).join(
            j, and_(j.c.tenant_id == i.c.tenant_id, j.c.study_uid == i.c.study_uid, j.c.series_uid == i.c.series_uid),
            isouter=True).where(i.c.tenant_id == bindparam("t"), i.c.study_uid == bindparam("st"),
                                i.c.series_uid == bindparam("se"), i.c.sop_uid == bindparam("sop")),
        "frame_sources": select(i, j.c.json_status, j.c.cube_key, j.c.updated_time.label("cube_time")).join(
            j, and_(j.c.tenant_id == i.c.tenant_id, j.c.study_uid == i.c.study_uid, j.c.series_uid == i.c.series_uid),
            isouter=True).where(i.c.tenant_id == bindparam("t"), i.c.study_uid == bindparam("st"),
                                i.c.series_uid == bindparam("se")).order_by(i.c.instance_number, i.c.sop_uid),
    }


def instance_row(ev: dict[str, Any]) -> dict[str, Any]:
    """The dicom_instance columns of a storage event (beside tenant, SOP Instance UID and created time)."""
    a = ev.get("attrs", {})
    return fit(dicom_instance, {
        "study_uid": ev["study_uid"], "series_uid": ev["series_uid"], "sop_class_uid": ev.get("sop_class_uid"),
        "instance_number": int_or_none(a.get("InstanceNumber")), "transfer_syntax": ev.get("transfer_syntax"),
        "storage_key": ev["key"], "size": ev.get("size"), "rows": int_or_none(a.get("Rows")),
        "columns": int_or_none(a.get("Columns")), "frames": int_or_none(a.get("NumberOfFrames")) or 1})


def fit(table: Any, values: dict[str, Any]) -> dict[str, Any]:
    """Values cut to their column's length (an over-long value in a non-conformant file must not make the index
    refuse the instance, and the indexer retry it for ever)."""
    out = {}
    for k, v in values.items():
        length = getattr(table.c[k].type, "length", None)
        out[k] = v[:length] if isinstance(v, str) and length else v
    return out


def int_or_none(v: Any) -> int | None:
    """An integer column value; None for what is not one or does not fit 32 bits."""
    try:
        n = int(v) if v not in (None, "") else None
    except (TypeError, ValueError, OverflowError):
        return None
    return n if n is None or -(2**31) <= n < 2**31 else None
