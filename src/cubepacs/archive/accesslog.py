"""Access logs (who, tenant, endpoint, status, bytes, duration) appended in batches to a Delta table.

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

log = logging.getLogger("cubepacs.accesslog")

SCHEMA = pa.schema([
    ("time", pa.timestamp("us", tz="UTC")), ("tenant", pa.string()), ("method", pa.string()),
    ("path", pa.string()), ("status", pa.int32()), ("bytes", pa.int64()), ("duration_ms", pa.float64()),
    ("client", pa.string()),
])


class AccessLog:
    """Buffer rows; write them every ``batch`` rows, every ``interval`` seconds and at close."""

    def __init__(self, table_uri: str, batch: int = 1000, interval: float | None = 5.0) -> None:
        self.table_uri = table_uri
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
        from deltalake import write_deltalake

        try:
            write_deltalake(self.table_uri, pa.Table.from_pylist(rows, schema=SCHEMA), mode="append")
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
