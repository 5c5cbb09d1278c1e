"""The log tables' spool: rows survive a killed server, a failed write keeps them, the server never loads delta-rs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from cubepacs.archive.observability.accesslog import OBJECT_SCHEMA, AccessLog, DeltaLog
from tests.archive.conftest import wait_until


def _logging(table: Path, rows: int, interval: float | None, pause: float, end: str) -> str:
    """A Python script logging ``rows`` access rows (tenant: its first argument) to ``table``, then ``end``."""
    return (f"import sys, time\nfrom cubepacs.archive.observability.accesslog import AccessLog\n"
            f"log = AccessLog({str(table)!r}, interval={interval})\n"
            f"for n in range({rows}):\n"
            f"    log.add(tenant=sys.argv[1], method='GET', path=f'/{{n}}', status=200, bytes=n, duration_ms=1.0)\n"
            f"    time.sleep({pause})\n"
            f"{end}\n")


def test_rows_of_a_killed_process_are_written_by_the_next(tmp_path: Path) -> None:
    table = tmp_path / "logs" / "access"
    script = _logging(table, rows=5, interval=None, pause=0, end="print('spooled', flush=True); time.sleep(60)")
    with subprocess.Popen([sys.executable, "-c", script, "t"], stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "spooled"
        os.kill(proc.pid, signal.SIGKILL)
    assert not (table / "_delta_log").exists()  # nothing was written: the rows are only in the spool
    log = AccessLog(str(table), interval=None)
    log.close()
    rows = DeltaTable(str(table)).to_pyarrow_table().to_pylist()
    assert sorted(r["path"] for r in rows) == [f"/{n}" for n in range(5)]
    assert all(r["time"].tzinfo is not None and r["status"] == 200 for r in rows)
    assert log.rows_written == 5 and not list((tmp_path / "logs" / ".spool" / "access").glob("[0-9]*"))


def test_a_failed_write_keeps_the_rows_spooled(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the table's folder should be")
    log = DeltaLog(str(blocker / "t"), schema=OBJECT_SCHEMA, interval=None, spool=str(tmp_path / "spool"))
    log.add(tenant_id="t", sop_uid="1.2.3", study_uid="1.2", series_uid="1.2.3.4", size=7)
    log.flush()
    assert log.rows_written == 0
    (segment,) = (tmp_path / "spool").glob("[0-9]*.jsonl")
    assert json.loads(segment.read_text())["sop_uid"] == "1.2.3"
    log.table_uri = str(tmp_path / "t")  # the storage is back
    log.close()
    assert log.rows_written == 1
    assert DeltaTable(str(tmp_path / "t")).to_pyarrow_table().column("size").to_pylist() == [7]


def test_batch_wakes_the_writer_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "1.jsonl").write_text('{"time": 1, "tenant": "old", "status": 200}\n{"time": 2, "ten')
    log = AccessLog(str(tmp_path / "access"), batch=3, interval=3600, spool=str(spool))
    for n in range(3):
        log.add(tenant="t", method="GET", path="/x", status=200 + n, bytes=0, duration_ms=0.1)
    wait_until(lambda: log.rows_written == 4, timeout=30)  # the timer is an hour: the batch woke the writer
    log.close()
    assert sorted(DeltaTable(str(tmp_path / "access")).to_pyarrow_table().column("tenant").to_pylist()) == \
        ["old", "t", "t", "t"]


def test_the_server_process_never_loads_delta_rs(tmp_path: Path) -> None:
    script = ("import sys\nfrom cubepacs.archive.services import service, indexer\n"
              "from cubepacs.archive.web import app\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('deltalake', 'pyarrow')))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_processes_sharing_a_spool_write_every_row_once(tmp_path: Path) -> None:
    table = tmp_path / "logs" / "access"
    script = _logging(table, rows=150, interval=0.3, pause=0.005, end="log.close()")
    procs = [subprocess.Popen([sys.executable, "-c", script, name]) for name in ("a", "b", "c")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    rows = DeltaTable(str(table)).to_pyarrow_table().to_pylist()
    keys = [(r["tenant"], r["path"]) for r in rows]
    assert len(keys) == len(set(keys)) == 450  # each row once: the writer runs take turns (a lock file)
    assert not [f for f in (tmp_path / "logs" / ".spool" / "access").iterdir() if f.name != ".lock"]


def test_the_tables_of_a_process_are_written_by_one_writer_run(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """``flush_logs`` starts one writer process for several tables (pyarrow and delta-rs loaded once); a table
    whose write fails keeps its rows, the others are written."""
    from cubepacs.archive.observability import accesslog

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a table's folder should be")
    logs = [DeltaLog(str(tmp_path / "objects"), schema=OBJECT_SCHEMA, interval=None),
            AccessLog(str(tmp_path / "access"), interval=None),
            DeltaLog(str(blocker / "t"), schema=OBJECT_SCHEMA, interval=None, spool=str(tmp_path / "spool"))]
    logs[0].add(tenant_id="t", sop_uid="1.2.3", study_uid="1.2", series_uid="1.2.3.4", size=7)
    logs[1].add(tenant="t", method="GET", path="/x", status=200, bytes=0, duration_ms=0.1)
    logs[2].add(tenant_id="t", sop_uid="9.9", study_uid="9", series_uid="9.9.9", size=1)
    runs: list[list[str]] = []
    real_run = accesslog.subprocess.run

    def counting_run(args: list[str], **kw: Any) -> Any:
        runs.append(args)
        return real_run(args, **kw)

    monkeypatch.setattr(accesslog.subprocess, "run", counting_run)
    accesslog.flush_logs(logs)
    monkeypatch.undo()
    assert len(runs) == 1 and runs[0][-1] == "cubepacs.archive.observability.logwriter"
    assert [lg.rows_written for lg in logs] == [1, 1, 0]
    assert DeltaTable(str(tmp_path / "objects")).to_pyarrow_table().column("size").to_pylist() == [7]
    assert len(list((tmp_path / "spool").glob("[0-9]*.jsonl"))) == 1  # the failed table's row stays spooled
    for lg in logs[:2]:
        lg.close()
