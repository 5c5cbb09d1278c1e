"""Shared fixtures: the real DICOM data set beside the repository (../shared/data)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SERIES = sorted(p for p in (DATA / "series").iterdir() if p.is_dir())
SINGLES = sorted((DATA / "single").glob("*.dcm"))
MALFORMED = sorted((DATA / "malformed").iterdir())


def dicom_files(folder: Path) -> list[Path]:
    """Files of a series folder that are DICOM (skips DIRFILE, README)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix not in (".txt",) and p.name != "DIRFILE")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"test data not found at {DATA}: clone the repository beside shared/")
    return DATA


S3_PORT = 8333


def _open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``weed mini`` (every listener on 127.0.0.1) in a temporary folder, stopped at the end."""
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    proc = None
    if not _open(S3_PORT):
        folder = tmp_path_factory.mktemp("seaweedfs")
        log = open(folder / "weed.log", "wb")
        proc = subprocess.Popen([weed, "mini", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                                 "-admin.ui=false"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not _open(S3_PORT):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS did not start: see {folder / 'weed.log'}")
            time.sleep(0.2)
    url = f"s3://cubepacs-test/{uuid.uuid4().hex[:8]}?endpoint=http://127.0.0.1:{S3_PORT}"
    from cubepacs._registry import open_backend

    storage = open_backend("storage", url, access_key="test", secret_key="test")
    for _ in range(50):  # the S3 gateway answers before the filer is ready
        try:
            storage.ensure_bucket()
            break
        except Exception:
            time.sleep(0.3)
    yield url
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()




@pytest.fixture(scope="session")
def kafka_url() -> Iterator[str]:
    """librdkafka's mock Kafka cluster (3 brokers on 127.0.0.1), alive as long as the holder client."""
    from confluent_kafka import Producer

    holder = Producer({"test.mock.num.brokers": 3, "log_level": 0})
    brokers = holder.list_topics(timeout=10).brokers.values()
    yield "kafka://" + ",".join(f"{b.host}:{b.port}" for b in brokers)
    holder.flush(1)
