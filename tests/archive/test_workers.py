"""The DIMSE listener as several worker processes sharing one listening socket: associations go to the least
loaded, their metrics are merged, a busy port is one line, and a kill -9 of ``cubepacs serve`` takes them along."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from cubepacs.archive.services.workers import runtime_folder
from tests.archive.conftest import dcmtk, free_port, start_server, stop_server, wait_until, write_config
from tests.conftest import SERIES, dicom_files

pytestmark = pytest.mark.dcmtk


def _children(pid: int, name: str = "cubepacs-dimse") -> list[int]:
    """The DIMSE worker processes of a server (forked, or spawned by multiprocessing), by the name they give
    themselves; ``name="cubepacs-build"``: its web worker."""
    pids = [int(c) for task in Path(f"/proc/{pid}/task").glob("*") for c in (task / "children").read_text().split()]
    return [p for p in pids if Path(f"/proc/{p}/comm").read_text().startswith(name)]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_workers_share_the_port_and_their_metrics(tmp_path: Path) -> None:
    data, dimse, http = tmp_path / "data", free_port(), free_port()
    config = write_config(tmp_path / "w.toml", data, dimse, http, quiet_seconds=3600.0, dimse_workers=2)
    server = start_server(data, config, dimse, http)
    try:
        workers = _children(server.proc.pid)
        assert len(workers) == 2
        assert not _children(server.proc.pid, "cubepacs-build")  # builds run in a process only while series are due
        files = dicom_files(next(s for s in SERIES if s.name.startswith("mr_ge_mr750")))[:32]
        results: list[int] = []
        threads = [threading.Thread(target=lambda chunk: results.append(dcmtk(
            "storescu", "-aec", "CUBEPACS", "127.0.0.1", str(dimse), *map(str, chunk)).returncode),
            args=(files[k::16],)) for k in range(16)]  # 16 connections: both workers get some
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [0] * 16
        # each worker counted its own C-STOREs (prometheus-client multiprocess files, one per process) …
        folder = runtime_folder(str(data), xdg_runtime_dir=os.environ.get("XDG_RUNTIME_DIR")) / "metrics"
        counted = {int(f.stem.rsplit("_", 1)[1]) for f in folder.glob("counter_*.db")}
        assert set(workers) <= counted
        # … and /metrics shows their sum
        text = httpx.get(f"http://127.0.0.1:{http}/metrics").text
        stored = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                     if line.startswith("cubepacs_cstore_total{") and 'status="0x0000"' in line)
        assert stored == len(files)

        def indexed() -> int:
            r = httpx.get(f"http://127.0.0.1:{http}/dicom-web/instances", params={"limit": 1000},
                          headers=server.headers())
            return 0 if r.status_code == 204 else len(r.json())

        wait_until(lambda: indexed() == len(files))
    finally:
        stop_server(server)
    assert all(not Path(f"/proc/{w}").exists() for w in workers)  # stopped with serve
    assert not folder.exists()  # the metrics files (in RAM) removed when serve ended


def _owners(port: int) -> dict[int, int]:
    """The established connections to ``port``: client port → the pid of the process holding it (``ss``)."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"( sport = :{port} )"], check=True,
                         capture_output=True, text=True).stdout
    return {int(line.split()[3].rsplit(":", 1)[1]): int(line.split("pid=")[1].split(",")[0])
            for line in out.splitlines() if "pid=" in line}


def test_associations_go_to_the_least_loaded_worker(tmp_path: Path) -> None:
    """Six connections, one after another, to two workers: three each (the kernel's SO_REUSEPORT hash split them
    evenly in a third of trials). Once one worker's three close, it has none open and takes the next two."""
    data, dimse, http = tmp_path / "data", free_port(), free_port()
    config = write_config(tmp_path / "w.toml", data, dimse, http, quiet_seconds=3600.0, dimse_workers=2)
    server = start_server(data, config, dimse, http)
    held: list[socket.socket] = []

    def connect() -> None:  # an association waiting for its A-ASSOCIATE-RQ counts as open
        held.append(socket.create_connection(("127.0.0.1", dimse)))
        wait_until(lambda: held[-1].getsockname()[1] in _owners(dimse), timeout=10)
        time.sleep(0.05)

    try:
        workers = _children(server.proc.pid)
        for _ in range(6):
            connect()
        owner = _owners(dimse)
        assert sorted(list(owner.values()).count(w) for w in workers) == [3, 3]
        first = [s for s in held if owner[s.getsockname()[1]] == workers[0]]
        for sock in first:  # closed before associating: counted out at once, not after the 30 s ACSE timeout
            sock.close()
            held.remove(sock)
        wait_until(lambda: workers[0] not in _owners(dimse).values(), timeout=10)
        time.sleep(0.2)
        connect()
        connect()
        owner = _owners(dimse)
        assert [owner[s.getsockname()[1]] for s in held[-2:]] == [workers[0]] * 2
        for sock in held:
            sock.close()
        held.clear()
        assert dcmtk("echoscu", "-aec", "CUBEPACS", "127.0.0.1", str(dimse)).returncode == 0  # still serving
    finally:
        for sock in held:
            sock.close()
        stop_server(server)


def test_crafted_pdus_are_refused_in_one_log_line(tmp_path: Path) -> None:
    """Bytes that are no PDU, an A-ASSOCIATE-RQ whose AE titles cannot be decoded, a PDU header announcing 4 GB:
    each connection gets an A-ABORT or is closed, the log says why in one line (pynetdicom logged a traceback),
    and the workers go on serving (crafted here: no real file is a broken PDU)."""
    data, dimse, http = tmp_path / "data", free_port(), free_port()
    config = write_config(tmp_path / "w.toml", data, dimse, http, quiet_seconds=3600.0, dimse_workers=2)
    server = start_server(data, config, dimse, http)
    try:
        for payload in (bytes(range(256)) * 4, b"\x01\x00\x00\x00\x00\x10" + b"A" * 16,
                        b"\x01\x00\xff\xff\xff\xf0" + bytes(10)):
            with socket.create_connection(("127.0.0.1", dimse), timeout=10) as sock:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)  # the truncated one: nothing more is coming
                answer = sock.recv(10)
            assert answer[:1] in (b"\x07", b""), answer  # A-ABORT-RQ, or closed
        assert dcmtk("echoscu", "-aec", "CUBEPACS", "127.0.0.1", str(dimse)).returncode == 0
    finally:
        stop_server(server)
    log = (data.parent / f"{data.name}.log").read_text(errors="replace")
    assert "Unable to decode the received PDU data" in log and "Invalid 'Calling AE Title'" in log
    assert "Traceback" not in log


def test_a_busy_port_is_one_line_and_kill_9_takes_the_workers_along(tmp_path: Path) -> None:
    data, dimse, http = tmp_path / "data", free_port(), free_port()
    config = write_config(tmp_path / "w.toml", data, dimse, http, dimse_workers=2)
    with socket.socket() as taken:  # another program holds the DIMSE port
        taken.bind(("127.0.0.1", dimse))
        taken.listen()
        res = subprocess.run([sys.executable, "-m", "cubepacs", "serve", "--config", str(config)],
                             check=False, capture_output=True, text=True, timeout=120)
    assert res.returncode == 3, res.stderr
    assert f"cannot listen on 127.0.0.1:{dimse}" in res.stderr and "Traceback" not in res.stderr
    server = start_server(data, config, dimse, http)
    workers = _children(server.proc.pid)
    assert len(workers) == 2
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    wait_until(lambda: all(not Path(f"/proc/{w}").exists() for w in workers), timeout=15)
    wait_until(lambda: _port_free(dimse), timeout=15)
    stop_server(server)
    time.sleep(0.1)
