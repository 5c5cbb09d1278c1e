"""A real archive (``cubepacs serve`` in a subprocess) on free 127.0.0.1 ports, with two tenants."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

KEYS = {"alpha": "key-alpha-0123456789", "beta": "key-beta-0123456789"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running archive."""

    data_dir: Path
    dimse_port: int
    http_port: int
    proc: subprocess.Popen[bytes]
    config: Path
    log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    def headers(self, tenant: str = "alpha") -> dict[str, str]:
        return {"Authorization": f"Bearer {KEYS[tenant]}"}


DEST_PORT = free_port()  # the C-MOVE destination the tests run (a pynetdicom storage SCP on 127.0.0.1)
COMMIT_PORT = free_port()  # where the storage commitment requestor of the tests listens for N-EVENT-REPORT


def write_config(path: Path, data_dir: Path, dimse: int, http: int, **extra: object) -> Path:
    cfg = {"data_dir": str(data_dir), "dimse_port": dimse, "http_port": http, "quiet_seconds": 1.0, "log_interval": 1.0,
           "ae_tenants": {"CUBEPACS": "alpha", "BETAPACS": "beta"},
           "api_keys": {KEYS["alpha"]: "alpha", KEYS["beta"]: "beta"},
           "remote_aes": {"DEST": f"127.0.0.1:{DEST_PORT}", "COMMITSCU": f"127.0.0.1:{COMMIT_PORT}"}, **extra}
    lines = ["[cubepacs]"]
    for k, v in cfg.items():
        lines.append(f"{k} = {json.dumps(v) if not isinstance(v, dict) else _inline(v)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _inline(d: dict[str, object]) -> str:
    return "{ " + ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in d.items()) + " }"


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"port {port} not open after {timeout} s")


def start_server(data_dir: Path, config: Path | None = None, dimse: int | None = None,
                 http: int | None = None) -> Server:
    dimse = dimse or free_port()
    http = http or free_port()
    config = config or write_config(data_dir.parent / f"{data_dir.name}.toml", data_dir, dimse, http)
    log = open(data_dir.parent / f"{data_dir.name}.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "cubepacs", "serve", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    server = Server(data_dir, dimse, http, proc, config, log)
    try:
        wait_port(dimse, proc)
        wait_port(http, proc)
    except BaseException:
        stop_server(server)
        raise
    return server


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    if server.log is not None:
        server.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("archive")
    srv = start_server(root / "data")
    yield srv
    stop_server(srv)


def dcmtk(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool (TCP_NODELAY=1, as DCMTK honours it)."""
    return subprocess.run(list(args), check=False, capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, "TCP_NODELAY": "1"})


def wait_until(check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise TimeoutError("condition not reached")


def compact_now(server: Server, timeout: float = 180.0) -> None:
    """Make every series of ``server`` (started with a long ``quiet_seconds``) due now and wait until the web worker
    has written a cube for each (its pass runs each second)."""
    from cubepacs.archive.index.store import Index

    index = Index.from_url(f"sqlite:///{server.data_dir}/index.db")
    try:
        with index.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE dicom_json_meta SET flag_time = '2000-01-01 00:00:00.000000'")
            series = int(conn.exec_driver_sql("SELECT COUNT(*) FROM dicom_json_meta").scalar() or 0)
        wait_until(lambda: len(list((server.data_dir / "storage").rglob("*.dcbs"))) >= series, timeout=timeout)
    finally:
        index.close()


def stop_all(procs: list[subprocess.Popen[bytes]], logs: list[Any]) -> None:
    """Terminate processes (kill those that do not stop) and close their log files."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    for log in logs:
        log.close()


def serve_jwks(doc: dict[str, Any]) -> http.server.ThreadingHTTPServer:
    """A JWKS endpoint on 127.0.0.1 serving ``doc`` at any path, in a thread (shut it down with ``shutdown()`` and
    ``server_close()``): the identity provider's keys for the OIDC tests."""
    body = json.dumps(doc).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
