"""Log tables appended in batches to Delta Lake: access logs (who — ``key:ID``, ``user:NAME`` or ``oidc:SUB`` —,
role, tenant, endpoint, the action and study it concerned, status, bytes, duration),
and the per-object and per-image rows of the reference design (``dicom_object_meta``, ``dicom_image_meta``).

Rows are appended as JSON lines to a local spool (one file write per row, so a killed server keeps them) and a
short-lived writer process (:mod:`cubepacs.archive.observability.logwriter`) appends the spooled rows to the Delta
table every ``interval`` seconds, when ``batch`` rows wait, and at close. The server itself never loads pyarrow or
delta-rs: their libraries are ≈ 130 MB of resident pages, more than the rest of the archive (``docs/design.md``).

Example
-------
>>> import tempfile
>>> log = AccessLog(tempfile.mkdtemp() + "/access", batch=2, interval=None)
>>> log.add(tenant="t", method="GET", path="/x", status=200, bytes=1, duration_ms=0.5, client="127.0.0.1")
>>> log.close(); log.rows_written
1
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("cubepacs.accesslog")

# Columns of each table: (name, Arrow type name); logwriter turns them into Arrow schemas.
SCHEMA = (("time", "timestamp"), ("tenant", "string"), ("method", "string"), ("path", "string"),
          ("status", "int32"), ("bytes", "int64"), ("duration_ms", "float64"), ("client", "string"),
          ("request_id", "string"), ("user", "string"), ("role", "string"), ("action", "string"),
          ("study_uid", "string"))  # the last four since roles: older tables gain them (schema merge)
OBJECT_SCHEMA = (("time", "timestamp"), ("tenant_id", "string"), ("patient_id", "string"), ("study_uid", "string"),
                 ("series_uid", "string"), ("sop_uid", "string"), ("sop_class_uid", "string"),
                 ("transfer_syntax", "string"), ("storage_key", "string"), ("size", "int64"))
IMAGE_SCHEMA = (("time", "timestamp"), ("tenant_id", "string"), ("study_uid", "string"), ("series_uid", "string"),
                ("sop_uid", "string"), ("modality", "string"), ("study_date", "string"),
                ("instance_number", "int64"), ("rows", "int64"), ("columns", "int64"), ("frames", "int64"))
Columns = tuple[tuple[str, str], ...]
WRITER_TIMEOUT = 300.0  # seconds one writer run may take (a slow object store); its rows stay spooled after


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


_SERIAL = itertools.count()


def _adopt_orphans(spool: Path) -> None:
    """The spool files of processes that died (a ``kill -9``) become segments for this writer run."""
    for f in spool.glob("current-*.jsonl"):
        try:
            pid = int(f.name.split("-")[1])
            if pid == os.getpid():
                continue
            os.kill(pid, 0)
        except ProcessLookupError:
            if f.stat().st_size:
                os.replace(f, spool / f"{time.time_ns()}-{pid}.jsonl")
            else:
                f.unlink()
        except (ValueError, IndexError, OSError):
            continue


class DeltaLog:
    """Spool rows; a writer process appends them to the Delta table every ``interval`` seconds, when ``batch``
    rows wait, and at close. ``spool``: the local folder for the waiting rows (default: ``.spool/<name>`` beside
    a local table, a temporary folder for a remote one). The logs of one process with the same ``interval`` are
    written together, by one writer run (``flush_logs``)."""

    schema: Columns = SCHEMA

    def __init__(self, table_uri: str, storage_options: dict[str, str] | None = None, batch: int = 10_000,
                 interval: float | None = 300.0, schema: Columns | None = None, spool: str | None = None) -> None:
        self.table_uri = table_uri
        self.schema = schema or self.schema
        self.storage_options = storage_options
        self.batch = batch
        self.rows_written = 0
        if spool is None:
            local = "://" not in table_uri
            spool = (str(Path(table_uri).parent / ".spool" / Path(table_uri).name) if local
                     else tempfile.mkdtemp(prefix="cubepacs-log-"))
        self.spool = Path(spool)
        self.spool.mkdir(parents=True, exist_ok=True)
        # one file per process and log (several indexers or webs may share a data_dir); closed into segments
        self._current = self.spool / f"current-{os.getpid()}-{next(_SERIAL)}.jsonl"
        self._fd = self._open_current()
        self._pending = 0  # rows since the last flush (a full batch wakes the writer)
        self.lost = 0  # rows not spooled since the spool last took one (a full disk)
        self._lock = threading.Lock()  # the spool file
        self._group = _group(interval) if interval else None
        if self._group is not None:
            self._group.add(self)

    def _open_current(self) -> int:
        return os.open(self._current, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def add(self, **row: Any) -> None:
        """Record one row: a line appended to the spool (it never waits on the Delta table)."""
        row["time"] = time.time_ns() // 1000
        line = (json.dumps(row, separators=(",", ":"), default=str) + "\n").encode()
        with self._lock:
            try:
                os.write(self._fd, line)
            except OSError as exc:  # a full disk: the row is lost, the request it records is not (one line said)
                if not self.lost:
                    log.error("%s log rows are being lost: spool %s: %s", Path(self.table_uri).name, self.spool,
                              exc.strerror or exc)
                self.lost += 1
                return
            if self.lost:
                log.warning("%s log spool writable again; %d row(s) were lost", Path(self.table_uri).name,
                            self.lost)
                self.lost = 0
            self._pending += 1
            full = self._pending >= self.batch
        if full and self._group is not None:
            self._group.wake.set()

    def flush(self) -> None:
        """Append every spooled row to the Delta table (rows stay spooled for the next flush if that fails)."""
        flush_logs([self])

    def _segments(self, held: contextlib.ExitStack) -> list[str]:
        """Take the spool's lock (held until ``held`` closes), close the current file into a segment, take over
        the files of dead processes; the segments to write."""
        lock = held.enter_context(open(self.spool / ".lock", "a"))
        fcntl.flock(lock, fcntl.LOCK_EX)  # one writer run at a time, over threads and processes alike
        with self._lock:
            if os.fstat(self._fd).st_size:
                os.close(self._fd)
                os.replace(self._current, self.spool / f"{time.time_ns()}-{os.getpid()}.jsonl")
                self._fd = self._open_current()
            self._pending = 0
        _adopt_orphans(self.spool)
        return sorted(str(p) for p in self.spool.glob("[0-9]*.jsonl"))

    def close(self) -> None:
        """Stop the timer and write what is left."""
        close_logs([self])

    def _detach(self) -> None:
        if self._group is not None:
            self._group.remove(self)

    def _release(self) -> None:
        with self._lock:
            empty = not os.fstat(self._fd).st_size
            os.close(self._fd)
            if empty:
                self._current.unlink()


def close_logs(logs: Sequence[DeltaLog]) -> None:
    """Close ``logs``, what is left of all of them written by one writer run (as their timer does)."""
    for lg in logs:
        lg._detach()
    flush_logs(logs)
    for lg in logs:
        lg._release()


def flush_logs(logs: Sequence[DeltaLog]) -> None:
    """Append the spooled rows of ``logs`` to their Delta tables in one writer process — pyarrow and delta-rs
    are loaded once for all of them (≈ 0.35 s of CPU and ≈ 100–160 MB while it runs). A table whose write fails
    keeps its rows spooled for the next run; the others are written."""
    with contextlib.ExitStack() as held:
        jobs = [(lg, files) for lg in sorted(logs, key=lambda x: str(x.spool)) if (files := lg._segments(held))]
        if not jobs:
            return
        payload = [{"uri": lg.table_uri, "options": lg.storage_options, "columns": lg.schema, "files": files}
                   for lg, files in jobs]
        try:  # storage options (credentials) go on stdin, never on a command line
            done = subprocess.run([sys.executable, "-m", "cubepacs.archive.observability.logwriter"],
                                  input=json.dumps({"jobs": payload}), capture_output=True, text=True,
                                  timeout=WRITER_TIMEOUT, check=False)
            results = json.loads(done.stdout) if done.returncode == 0 else None
            reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
        except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
            results, reason = None, str(exc)
        if not isinstance(results, list) or len(results) != len(jobs):
            results = [{"error": reason}] * len(jobs)
        for (lg, files), result in zip(jobs, results, strict=True):
            if not isinstance(result, dict) or "written" not in result:
                why = result.get("error") if isinstance(result, dict) else result
                log.warning("writing the %s log table failed: %s; its rows stay spooled in %s",
                            lg.table_uri, why, lg.spool)
                continue
            for f in files:  # a crash before this line writes these rows again: at least once, never lost
                os.unlink(f)
            lg.rows_written += int(result["written"])


class _Group:
    """The logs of a process written together every ``interval`` seconds (one thread, one writer run)."""

    def __init__(self, interval: float) -> None:
        self.logs: list[DeltaLog] = []
        self.wake = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._loop, args=(interval,), daemon=True, name="log-writer").start()

    def add(self, log_: DeltaLog) -> None:
        with self._lock:
            self.logs.append(log_)

    def remove(self, log_: DeltaLog) -> None:
        with self._lock:
            if log_ in self.logs:
                self.logs.remove(log_)

    def _loop(self, interval: float) -> None:
        while True:
            self.wake.wait(interval)
            self.wake.clear()
            with self._lock:
                logs = list(self.logs)
            if logs:
                flush_logs(logs)


_GROUPS: dict[float, _Group] = {}
_GROUPS_LOCK = threading.Lock()


def _group(interval: float) -> _Group:
    with _GROUPS_LOCK:
        if interval not in _GROUPS:
            _GROUPS[interval] = _Group(interval)
        return _GROUPS[interval]


class AccessLog(DeltaLog):
    """The web's access log."""

    schema = SCHEMA
