"""The four services as separate OS processes sharing only storage, queue and index URLs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.archive.conftest import KEYS, dcmtk, free_port, stop_all, wait_port, wait_until, write_config
from tests.conftest import SERIES, dicom_files

pytestmark = pytest.mark.dcmtk


def test_storescp_indexer_webworker_web_as_separate_processes(tmp_path: Path) -> None:
    dimse, http = free_port(), free_port()
    data = tmp_path / "data"
    config = write_config(tmp_path / "cfg.toml", data, dimse, http)
    urls = ["--storage", f"file://{data}/objects", "--index", f"sqlite:///{data}/index.db"]
    queue = ["--queue", f"embedded://{data}/queue.db"]
    commands = {
        "storescp": [*urls, *queue],
        "indexer": [*queue, "--index", f"sqlite:///{data}/index.db"],
        "webworker": [*urls, "--quiet-seconds", "1"],
        "web": [*urls, *queue],
    }
    logs = []
    procs = []
    try:
        for name, args in commands.items():
            log = open(tmp_path / f"{name}.log", "wb")
            logs.append(log)
            procs.append(subprocess.Popen([sys.executable, "-m", "cubepacs", name, "--config", str(config), *args],
                                          stdout=log, stderr=subprocess.STDOUT,
                                          env={**os.environ, "PYTHONWARNINGS": "ignore"}))
        wait_port(dimse, procs[0])
        wait_port(http, procs[3])
        series = next(s for s in SERIES if s.name.startswith("ct_philips"))
        files = dicom_files(series)
        assert dcmtk("storescu", "-aec", "CUBEPACS", "127.0.0.1", str(dimse), *map(str, files)).returncode == 0
        headers = {"Authorization": f"Bearer {KEYS['alpha']}"}

        def indexed() -> int:
            r = httpx.get(f"http://127.0.0.1:{http}/dicom-web/instances", headers=headers, params={"limit": 999})
            return 0 if r.status_code == 204 else len(r.json())

        wait_until(lambda: indexed() == len(files), timeout=60)
        wait_until(lambda: bool(list((data / "objects" / "alpha").rglob("*.dcbs"))), timeout=60)
        cubes = list((data / "objects" / "alpha").rglob("*.dcbs"))
        assert len(cubes) == 1
    finally:
        stop_all(procs, logs)
