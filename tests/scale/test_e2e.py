"""Scale-out end to end: storescp, two indexers, a web worker and web as separate OS processes wired through
PostgreSQL + Redis (cache) + the Kafka mock cluster + SeaweedFS; one indexer is killed with SIGKILL mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from tests.archive.conftest import KEYS, free_port, stop_all, wait_port, wait_until, write_config
from tests.conftest import SERIES, dicom_files

pytestmark = [pytest.mark.postgres, pytest.mark.kafka, pytest.mark.s3, pytest.mark.redis, pytest.mark.dcmtk]
ADMIN = os.environ.get("CUBEPACS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def pg_url() -> Iterator[str]:
    import psycopg

    name = f"cubepacs_e2e_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield ADMIN.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_services_across_processes_survive_a_killed_indexer(tmp_path: Path, pg_url: str, kafka_url: str,
                                                          seaweedfs: str) -> None:
    dimse, http = free_port(), free_port()
    # metadata_at_ingest: each event carries its instance's DICOM JSON through Kafka into PostgreSQL
    config = write_config(tmp_path / "cfg.toml", tmp_path / "data", dimse, http, quiet_seconds=2.0,
                          metadata_at_ingest=True)
    prefix = uuid.uuid4().hex[:8]
    storage = seaweedfs.split("?", maxsplit=1)[0].rstrip("/") + f"/{prefix}?" + seaweedfs.split("?")[1]
    urls = {"--storage": storage, "--queue": kafka_url, "--index": pg_url, "--cache": f"redis://127.0.0.1:6379/13?prefix={prefix}:"}
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}

    logs: list[Any] = []

    def start(name: str, *keys: str) -> subprocess.Popen[bytes]:
        args = [a for k in keys for a in (k, urls[k])]
        log = open(tmp_path / f"{name}.log", "ab")
        logs.append(log)
        command = name.split("-", maxsplit=1)[0]
        return subprocess.Popen([sys.executable, "-m", "cubepacs", command, "--config", str(config), *args],
                                stdout=log, stderr=subprocess.STDOUT, env=env)

    procs = {
        "storescp": start("storescp", "--storage", "--queue", "--index"),
        "indexer-1": start("indexer-1", "--queue", "--index", "--cache"),
        "indexer-2": start("indexer-2", "--queue", "--index", "--cache"),
        "webworker": start("webworker", "--storage", "--index"),
        "web": start("web", "--storage", "--queue", "--index", "--cache"),
    }
    try:
        wait_port(dimse, procs["storescp"])
        wait_port(http, procs["web"])
        files = dicom_files(next(s for s in SERIES if s.name.startswith("ct_philips")))
        sender = subprocess.Popen(["storescu", "-aec", "CUBEPACS", "127.0.0.1", str(dimse), *map(str, files)],
                                  env={**os.environ, "TCP_NODELAY": "1"}, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
        time.sleep(1.5)
        procs["indexer-1"].send_signal(signal.SIGKILL)  # mid-run
        _, err = sender.communicate(timeout=120)
        assert sender.returncode == 0, err.decode()
        headers = {"Authorization": f"Bearer {KEYS['alpha']}"}

        def instances() -> list[str]:
            r = httpx.get(f"http://127.0.0.1:{http}/dicom-web/instances", headers=headers, params={"limit": 999})
            return [] if r.status_code == 204 else [i["00080018"]["Value"][0] for i in r.json()]

        wait_until(lambda: len(instances()) >= len(files), timeout=120)
        got = instances()
        assert len(got) == len(set(got)) == len(files)  # every instance indexed exactly once
        import psycopg

        with psycopg.connect(pg_url) as conn:  # and the index itself agrees
            rows = conn.execute("select count(*), count(distinct sop_uid) from dicom_instance").fetchone()
            docs = conn.execute("select count(*) from dicom_instance_json").fetchone()
        assert rows == (len(files), len(files))
        assert docs == (len(files),)  # every instance's document kept, once
        ds = pydicom.dcmread(files[7])
        r = httpx.get(f"http://127.0.0.1:{http}/dicom-web/studies/{ds.StudyInstanceUID}/series/"
                      f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/frames/1", headers=headers)
        listing = httpx.get(f"http://127.0.0.1:{http}/dicom-web/studies/{ds.StudyInstanceUID}/series",
                            headers=headers)
        assert r.status_code == 200, (r.text, listing.status_code)
        assert len(r.content) > ds.Rows * ds.Columns * 2
        meta = httpx.get(f"http://127.0.0.1:{http}/dicom-web/studies/{ds.StudyInstanceUID}/series/"
                         f"{ds.SeriesInstanceUID}/metadata", headers=headers)
        assert meta.status_code == 200 and len(meta.json()) == len(files)
        assert {d["00080018"]["Value"][0] for d in meta.json()} == set(got)

        def built() -> bool:
            with psycopg.connect(pg_url) as conn:
                return conn.execute("select json_status from dicom_json_meta").fetchone() == (1,)

        wait_until(built, timeout=120)  # compacted into a cube on S3: a frame as stored is ranged reads of it
        url = (f"http://127.0.0.1:{http}/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/"
               f"instances/{ds.SOPInstanceUID}/frames/1")
        stored = httpx.get(url, headers={**headers, "Accept": "multipart/related; type=application/octet-stream; "
                                                              "transfer-syntax=*"})
        assert stored.status_code == 200 and 'type="image/jphc"' in stored.headers["content-type"]
        import imagecodecs

        from cubepacs.archive.web import multipart

        (part,) = multipart.parse(stored.content, stored.headers["content-type"])
        assert (imagecodecs.htj2k_decode(part) == ds.pixel_array).all()
    finally:
        stop_all(list(procs.values()), logs)
