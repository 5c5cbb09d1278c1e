"""The row schema of the lake: one row per DICOM instance (or per error), as Arrow and as Spark DDL.

Example
-------
>>> ARROW_SCHEMA.field("instance_number").type
DataType(int32)
>>> SPARK_DDL.split(",")[0]
'id STRING'
"""

from __future__ import annotations

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


def _int32(v: Any) -> int | None:
    return v if v is None or -(2**31) <= v < 2**31 else None


def to_batch(rows: Sequence[dict[str, Any]]) -> pa.RecordBatch:
    """Rows (dicts from the reader) as one Arrow record batch of ARROW_SCHEMA."""
    arrays = []
    for name, typ, _ in COLUMNS:
        values = [r[name] for r in rows]
        if pa.types.is_int32(typ):
            values = [_int32(v) for v in values]
        arrays.append(pa.array(values, type=typ))
    return pa.RecordBatch.from_arrays(arrays, schema=ARROW_SCHEMA)
