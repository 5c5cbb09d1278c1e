"""The row schema of the lake: one row per DICOM instance (or per error), as Arrow and as Spark DDL.

Example
-------
>>> ARROW_SCHEMA.field("instance_number").type
DataType(int32)
>>> SPARK_DDL.split(",")[0]
'id STRING'
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("id", pa.string(), "STRING"),
    ("archive", pa.string(), "STRING"),
    ("entry", pa.string(), "STRING"),
    ("container", pa.string(), "STRING"),
    ("entry_size", pa.int64(), "BIGINT"),
    ("compressed_size", pa.int64(), "BIGINT"),
    ("crc32", pa.int64(), "BIGINT"),
    ("patient_id", pa.string(), "STRING"),
    ("study_uid", pa.string(), "STRING"),
    ("series_uid", pa.string(), "STRING"),
    ("sop_uid", pa.string(), "STRING"),
    ("sop_class_uid", pa.string(), "STRING"),
    ("modality", pa.string(), "STRING"),
    ("transfer_syntax", pa.string(), "STRING"),
    ("instance_number", pa.int32(), "INT"),
    ("rows", pa.int32(), "INT"),
    ("columns", pa.int32(), "INT"),
    ("study_date", pa.date32(), "DATE"),
    ("header_json", pa.string(), "STRING"),
    ("bulk_tags", pa.list_(pa.string()), "ARRAY<STRING>"),
    ("pixel_offset", pa.int64(), "BIGINT"),
    ("error", pa.string(), "STRING"),
    ("error_stage", pa.string(), "STRING"),
]
ARROW_SCHEMA = pa.schema([pa.field(n, t) for n, t, _ in COLUMNS])
SPARK_DDL = ", ".join(f"{n} {s}" for n, _, s in COLUMNS)
NAMES = [n for n, _, _ in COLUMNS]


_KEEP = ("id", "archive", "entry", "container", "entry_size", "compressed_size", "crc32")  # kept in an error row


def _value(v: Any, typ: pa.DataType) -> Any:
    """``v`` as column type ``typ`` takes it (an int32 out of range: None); TypeError naming what it got."""
    ok = (v is None or (pa.types.is_string(typ) and isinstance(v, str))
          or (pa.types.is_integer(typ) and isinstance(v, int) and not isinstance(v, bool))
          or (pa.types.is_date32(typ) and isinstance(v, datetime.date) and not isinstance(v, datetime.datetime))
          or (pa.types.is_list(typ) and isinstance(v, list) and all(isinstance(x, str) for x in v)))
    if not ok:
        raise TypeError(f"{type(v).__name__} where {typ} is expected")
    if pa.types.is_int32(typ) and v is not None and not -(2**31) <= v < 2**31:
        return None
    if pa.types.is_int64(typ) and v is not None and not -(2**63) <= v < 2**63:
        raise TypeError(f"{v} beyond int64")
    return v


def checked_row(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with every value of its column's type; an entry with a value of another type (Rows as a string, a
    dict where a string is expected) becomes its one error row (``error_stage`` ``schema``), never a failed batch.

    Example
    -------
    >>> bad = checked_row({**dict.fromkeys(NAMES), "entry": "a.dcm", "rows": "512"})
    >>> bad["entry"], bad["rows"], bad["error_stage"], bad["error"]
    ('a.dcm', None, 'schema', 'column rows: str where int32 is expected')
    """
    out: dict[str, Any] = {}
    for name, typ, _ in COLUMNS:
        try:
            out[name] = _value(row.get(name), typ)
        except TypeError as exc:
            error: dict[str, Any] = dict.fromkeys(NAMES)
            for n in _KEEP:
                try:
                    error[n] = _value(row.get(n), ARROW_SCHEMA.field(n).type)
                except TypeError:
                    pass
            error.update(error=f"column {name}: {exc}", error_stage="schema")
            return error
    return out


def to_batch(rows: Sequence[dict[str, Any]]) -> pa.RecordBatch:
    """Rows (dicts from the reader) as one Arrow record batch of ARROW_SCHEMA; a row with a value of another type
    than its column's is that entry's error row (:func:`checked_row`)."""
    checked = [checked_row(r) for r in rows]
    arrays = [pa.array([r[name] for r in checked], type=typ) for name, typ, _ in COLUMNS]
    return pa.RecordBatch.from_arrays(arrays, schema=ARROW_SCHEMA)
