"""kill -9 mid-ingest loses no acknowledged instance, the DIMSE workers die with serve at once; the indexer is
idempotent; a stop is one log line."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.archive.conftest import dcmtk, free_port, start_server, stop_server, wait_until, write_config
from tests.conftest import SERIES, dicom_files

pytestmark = pytest.mark.dcmtk


def _workers(pid: int) -> list[int]:
    """The DIMSE worker processes of ``serve`` (by the name they give themselves)."""
    pids = [int(c) for task in Path(f"/proc/{pid}/task").glob("*") for c in (task / "children").read_text().split()]
    return [p for p in pids if Path(f"/proc/{p}/comm").read_text().startswith("cubepacs-dimse")]


def _running(pid: int) -> bool:
    """Alive: neither gone nor a zombie (dead, waiting for init to reap it — this sandbox's init is slow to)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_kill_9_loses_no_acknowledged_instance(tmp_path: Path) -> None:
    data = tmp_path / "data"
    dimse, http = free_port(), free_port()
    # two DIMSE worker processes whatever the machine: the kill lands on serve, the workers go with it
    config = write_config(tmp_path / "cfg.toml", data, dimse, http, quiet_seconds=3600.0, dimse_workers=2)
    server = start_server(data, config, dimse, http)
    files = dicom_files(next(s for s in SERIES if s.name.startswith("mr_ge_mr750")))
    # storescu reports per file; kill the server while it is still sending
    import subprocess

    sender = subprocess.Popen(["storescu", "-v", "-aec", "CUBEPACS", "127.0.0.1", str(dimse), *map(str, files)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"})
    assert sender.stdout is not None
    seen = []  # kill once 20 instances are acknowledged (a fixed delay missed: the whole series took < 0.8 s)
    for line in sender.stdout:
        seen.append(line)
        if sum("Received Store Response (Success)" in x for x in seen) >= 20:
            break
    workers = _workers(server.proc.pid)
    assert len(workers) == 2
    server.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    server.proc.wait()
    while any(_running(w) for w in workers) and time.monotonic() - killed < 5:
        time.sleep(0.01)
    gone = time.monotonic() - killed
    assert gone < 1.0, f"DIMSE workers outlived serve by {gone:.2f} s"  # PR_SET_PDEATHSIG: at once
    out, _ = sender.communicate(timeout=60)
    acknowledged = ("".join(seen) + out).count("Received Store Response (Success)")
    assert 0 < acknowledged < len(files), "the kill should land mid-series"
    stop_server(server)
    server = start_server(data, config, dimse, http)
    try:
        def count() -> int:
            r = httpx.get(f"http://127.0.0.1:{http}/dicom-web/instances", params={"limit": 10000},
                          headers=server.headers())
            return 0 if r.status_code == 204 else len(r.json())

        wait_until(lambda: count() >= acknowledged)
        assert count() >= acknowledged  # every acknowledged instance is there (a stored-but-unacked one may be too)
        # sending everything again is harmless: the indexer is idempotent
        assert dcmtk("storescu", "-aec", "CUBEPACS", "127.0.0.1", str(dimse), *map(str, files)).returncode == 0
        wait_until(lambda: count() == len(files))
        time.sleep(1.0)
        assert count() == len(files)
    finally:
        stop_server(server)
    # a stop is one line saying why and what was in flight, for serve and for each DIMSE worker
    log = (tmp_path / "data.log").read_text().splitlines()
    said = ("indexer+storescp+web+webworker stopping (SIGTERM); in flight: 0 DIMSE association(s) open, 0 storage "
            "event(s) not yet indexed")
    assert any(said in x for x in log), log[-10:]
    assert sum("DIMSE worker" in x and "stopping (SIGTERM); in flight: 0 association(s) open" in x
               for x in log) == 2
