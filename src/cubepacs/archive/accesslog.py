"""Log tables appended in batches to Delta Lake: access logs (who, tenant, endpoint, status, bytes, duration),
and the per-object and per-image rows of the reference design (``dicom_object_meta``, ``dicom_image_meta``).

Example
-------
>>> import tempfile
>>> log = AccessLog(tempfile.mkdtemp() + "/access", batch=2, interval=None)
>>> log.add(tenant="t", method="GET", path="/x", status=200, bytes=1, duration_ms=0.5, client="127.0.0.1")
>>> log.close(); log.rows_written
1
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any

import pyarrow as pa
from deltalake import write_deltalake

log = logging.getLogger("cubepacs.accesslog")

SCHEMA = pa.schema([
    ("time", pa.timestamp("us", tz="UTC")), ("tenant", pa.string()), ("method", pa.string()),
    ("path", pa.string()), ("status", pa.int32()), ("bytes", pa.int64()), ("duration_ms", pa.float64()),
    ("client", pa.string()), ("request_id", pa.string()),
])
_TS = pa.timestamp("us", tz="UTC")
OBJECT_SCHEMA = pa.schema([
    ("time", _TS), ("tenant_id", pa.string()), ("patient_id", pa.string()), ("study_uid", pa.string()),
    ("series_uid", pa.string()), ("sop_uid", pa.string()), ("sop_class_uid", pa.string()),
    ("transfer_syntax", pa.string()), ("storage_key", pa.string()), ("size", pa.int64()),
])
IMAGE_SCHEMA = pa.schema([
    ("time", _TS), ("tenant_id", pa.string()), ("study_uid", pa.string()), ("series_uid", pa.string()),
    ("sop_uid", pa.string()), ("modality", pa.string()), ("study_date", pa.string()),
    ("instance_number", pa.int64()), ("rows", pa.int64()), ("columns", pa.int64()), ("frames", pa.int64()),
])


def object_row(ev: dict[str, Any]) -> dict[str, Any]:
    """A ``dicom_object_meta`` row from a storage event (also the ``log_queue`` JSON for Doris)."""
    return {"tenant_id": ev["tenant"], "patient_id": ev.get("attrs", {}).get("PatientID"),
            "study_uid": ev["study_uid"], "series_uid": ev["series_uid"], "sop_uid": ev["sop_uid"],
            "sop_class_uid": ev.get("sop_class_uid"), "transfer_syntax": ev.get("transfer_syntax"),
            "storage_key": ev["key"], "size": ev.get("size")}


def image_row(ev: dict[str, Any]) -> dict[str, Any]:
    """A ``dicom_image_meta`` row from a storage event (also the ``dicom_image_queue`` JSON for Doris)."""
    a = ev.get("attrs", {})

    def num(k: str) -> int | None:
        try:
            return int(a[k]) if a.get(k) not in (None, "") else None
        except (TypeError, ValueError):
            return None

    return {"tenant_id": ev["tenant"], "study_uid": ev["study_uid"], "series_uid": ev["series_uid"],
            "sop_uid": ev["sop_uid"], "modality": a.get("Modality"), "study_date": a.get("StudyDate"),
            "instance_number": num("InstanceNumber"), "rows": num("Rows"), "columns": num("Columns"),
            "frames": num("NumberOfFrames") or 1}


class DeltaLog:
    """Buffer rows; write them every ``batch`` rows, every ``interval`` seconds and at close."""

    schema = SCHEMA

    def __init__(self, table_uri: str, storage_options: dict[str, str] | None = None, batch: int = 1000,
                 interval: float | None = 5.0, schema: pa.Schema | None = None) -> None:
        self.table_uri = table_uri
        self.schema = schema or self.schema
        self.storage_options = storage_options
        self.batch = batch
        self.rows: list[dict[str, Any]] = []
        self.rows_written = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if interval:
            self._thread = threading.Thread(target=self._loop, args=(interval,), daemon=True, name="access-log")
            self._thread.start()

    def add(self, **row: Any) -> None:
        """Record one request (never blocks on I/O unless the batch is full)."""
        row["time"] = dt.datetime.now(dt.UTC)
        with self._lock:
            self.rows.append(row)
            full = len(self.rows) >= self.batch
        if full:
            self.flush()

    def flush(self) -> None:
        """Append the buffered rows to the Delta table."""
        with self._lock:
            rows, self.rows = self.rows, []
        if not rows:
            return
        try:
            write_deltalake(self.table_uri, pa.Table.from_pylist(rows, schema=self.schema), mode="append",
                            storage_options=self.storage_options, schema_mode="merge")
            self.rows_written += len(rows)
        except Exception:
            log.exception("writing %d access-log rows failed; keeping them for the next flush", len(rows))
            with self._lock:
                self.rows = rows + self.rows

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.flush()

    def close(self) -> None:
        """Stop the timer and write what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()


class AccessLog(DeltaLog):
    """The web's access log."""

    schema = SCHEMA
