"""Backup, restore, upgrade: a backup taken beside a running archive restores into an empty folder that serves every
instance byte-identical; damage is found and named; an index of the previous schema (built here from
``schema_v2.py``, the tables as of a699df5) is migrated, not recreated, on SQLite and PostgreSQL; a newer one is
refused."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread
from sqlalchemy import create_engine, insert, select, text

from cubepacs.archive.index.models import SCHEMA_VERSION
from cubepacs.archive.index.store import Index
from cubepacs.archive.web import multipart
from cubepacs.errors import BackendError
from tests.archive import schema_v2
from tests.archive.conftest import Server, free_port, start_server, stop_server, wait_until, write_config
from tests.conftest import SERIES, SINGLES, dicom_files

AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'  # the bytes as stored, no transcoding


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cubepacs", *args], check=False, capture_output=True, text=True,
                          timeout=300)


def _words(res: subprocess.CompletedProcess[str]) -> str:
    return " ".join((res.stdout + res.stderr).split())  # (the terminal may have wrapped lines)


def _retrieve(server: Server, path: Path) -> bytes:
    ds = dcmread(path, stop_before_pixels=True)
    r = httpx.get(f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/"
                  f"{ds.SOPInstanceUID}", headers={**server.headers(), "Accept": AS_STORED}, timeout=60)
    assert r.status_code == 200, (path.name, r.status_code)
    (part,) = multipart.parse(r.content, r.headers["content-type"])
    return bytes(part)


def _count(server: Server) -> int:
    r = httpx.get(f"{server.url}/instances", params={"limit": 10000}, headers=server.headers())
    return 0 if r.status_code == 204 else len(r.json())


def _stow_all(server: Server, files: list[Path]) -> tuple[list[Path], Any]:
    """STOW-RS every file, one request each; the files stored (two files of the data share one SOP Instance UID:
    the first is kept. STOW-RS keeps the bytes as sent: what comes back must be them) once all are indexed and the
    last one's series has its metadata, and that last file's header."""
    first: dict[str, Path] = {}
    for f in files:
        body, ctype = multipart.encode([f.read_bytes()], "application/dicom")
        r = httpx.post(f"{server.url}/studies", content=body,
                       headers={**server.headers(), "Content-Type": ctype}, timeout=60)
        if r.status_code == 200:
            first.setdefault(str(dcmread(f, stop_before_pixels=True).SOPInstanceUID), f)
    stored = list(first.values())
    assert len(stored) >= len(files) - 4, "nearly every real file is stored (3 lack a UID, 2 share one)"
    wait_until(lambda: _count(server) == len(stored))
    series = dcmread(stored[-1], stop_before_pixels=True)
    wait_until(lambda: httpx.get(f"{server.url}/studies/{series.StudyInstanceUID}/series/"
                                 f"{series.SeriesInstanceUID}/metadata", headers=server.headers()
                                 ).status_code == 200)
    return stored, series


def _back_up_while_serving(cfg: Path, data: Path, dimse: int, http: int, files: list[Path],
                           target: Path) -> tuple[list[Path], Any, str]:
    """Start the archive of ``cfg``, STOW-RS ``files`` into it, ``cubepacs backup`` into ``target`` while it serves,
    stop it; the files stored, the last one's header, and what the backup said."""
    server = start_server(data, cfg, dimse, http)
    try:
        stored, series = _stow_all(server, files)
        made = _cli("backup", str(target), "--config", str(cfg))
        assert made.returncode == 0, _words(made)
    finally:
        stop_server(server)
    return stored, series, _words(made)


def test_backup_beside_a_running_archive_restores_into_an_empty_folder_byte_identical(tmp_path: Path) -> None:
    files = [*SINGLES, *dicom_files(next(s for s in SERIES if s.name.startswith("mr_ge_mr750")))[:20]]
    data, dimse, http = tmp_path / "data", free_port(), free_port()
    cfg = write_config(tmp_path / "a.toml", data, dimse, http)
    stored, series, made = _back_up_while_serving(cfg, data, dimse, http, files, tmp_path / "backup")
    assert f"{len(stored)} object(s)" not in made  # more objects than instances: metadata, cubes
    assert (tmp_path / "backup").stat().st_mode & 0o777 == 0o700  # the owner's only
    assert not list((tmp_path / "backup").rglob("initial-api-key"))  # a key in clear is never copied
    checked = _cli("verify-backup", str(tmp_path / "backup"))
    assert checked.returncode == 0 and f"{len(stored)} instance(s)" in _words(checked) and "ok" in _words(checked), \
        _words(checked)

    restored, dimse2, http2 = tmp_path / "restored", free_port(), free_port()
    cfg2 = write_config(tmp_path / "r.toml", restored, dimse2, http2)
    done = _cli("restore", str(tmp_path / "backup"), "--config", str(cfg2))
    assert done.returncode == 0 and "ok" in _words(done), _words(done)
    assert _cli("restore", str(tmp_path / "backup"), "--config", str(cfg2)).returncode == 2  # not into a used one
    assert all(p.stat().st_mode & 0o077 == 0 for p in restored.glob("*.db"))  # accounts.db stays 0600
    forged = json.loads((tmp_path / "backup" / "manifest.json").read_text())  # a manifest naming ../ is refused
    forged["data"] = ["../../outside.txt"]
    shutil.copytree(tmp_path / "backup", tmp_path / "forged")
    (tmp_path / "forged" / "manifest.json").write_text(json.dumps(forged))
    cfg3 = write_config(tmp_path / "f.toml", tmp_path / "f-data", free_port(), free_port())
    refused = _cli("restore", str(tmp_path / "forged"), "--config", str(cfg3))
    assert refused.returncode == 2 and "outside" in _words(refused) and not (tmp_path / "outside.txt").exists()
    server = start_server(restored, cfg2, dimse2, http2)
    try:
        assert _count(server) == len(stored)
        for f in stored:
            assert _retrieve(server, f) == f.read_bytes(), f.name
        r = httpx.get(f"{server.url}/studies/{series.StudyInstanceUID}/series/{series.SeriesInstanceUID}/metadata",
                      headers=server.headers())
        assert r.status_code == 200 and len(r.json()) == sum(
            dcmread(f, stop_before_pixels=True).SeriesInstanceUID == series.SeriesInstanceUID for f in stored)
    finally:
        stop_server(server)

    # damage in the restored archive is found and named: one file changed, one gone
    changed = next((restored / "storage").rglob("*.dcm"))
    changed.write_bytes(changed.read_bytes()[:-1] + b"\x01")
    gone = next(p for p in (restored / "storage").rglob("*.dcm") if p != changed)
    gone.unlink()
    bad = _cli("verify-backup", str(tmp_path / "backup"), "--archive", "--config", str(cfg2))
    words = _words(bad)
    assert bad.returncode == 1 and "2 problem(s)" in words, words
    assert f"{changed.name}: SHA-256 differs" in words and f"{gone.name}: missing" in words


def _old_index(url: str) -> None:
    """An index as the previous schema (version 2) left it: its tables, version row, a study and an instance."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    schema_v2.metadata.create_all(engine)
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        conn.execute(insert(schema_v2.schema_version).values(version=1))
        conn.execute(insert(schema_v2.schema_version).values(version=2))
        conn.execute(insert(schema_v2.dicom_state_meta).values(
            tenant_id="t", study_uid="1.2.3", series_uid="1.2.3.4", patient_id="P1", patient_name="Doe^Jane",
            study_date="20240131", modality="CT", series_related_instances=1, created_time=now, updated_time=now))
        conn.execute(insert(schema_v2.dicom_instance).values(
            tenant_id="t", sop_uid="1.2.3.4.5", study_uid="1.2.3", series_uid="1.2.3.4", storage_key="t/x.dcm",
            size=10, created_time=now))
    engine.dispose()


def _check_migrated(url: str) -> None:
    index = Index.from_url(url)  # the current code: migrates
    try:
        with index.engine.connect() as conn:
            versions = [v for (v,) in conn.execute(text("SELECT version FROM cubepacs_schema ORDER BY version"))]
            assert versions == list(range(1, SCHEMA_VERSION + 1))
            assert conn.execute(select(schema_v2.dicom_instance.c.storage_key)).scalar() == "t/x.dcm"  # kept
        rows = index.search_studies("t", {"PatientID": "P1"})
        assert [r["study_uid"] for r in rows] == ["1.2.3"]
        with index.engine.begin() as conn:  # what schema 3 allows: a malformed date kept as stored, whole
            conn.execute(text("UPDATE dicom_state_meta SET study_date = '2024-01-31 (approx.)'"))
    finally:
        index.close()
    again = Index.from_url(url)  # opened again: nothing left to migrate, nothing recreated
    again.close()


def test_an_index_of_the_previous_schema_is_migrated_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _old_index(url)
    _check_migrated(url)
    engine = create_engine(url)
    with engine.begin() as conn:  # a newer cubepacs wrote this one: refused, not touched
        conn.execute(text(f"INSERT INTO cubepacs_schema (version) VALUES ({SCHEMA_VERSION + 1})"))
    engine.dispose()
    with pytest.raises(BackendError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this cubepacs"):
        Index.from_url(url)


@pytest.mark.postgres
def test_an_index_of_the_previous_schema_is_migrated_postgresql() -> None:
    name = f"cubepacs_migrate_{uuid.uuid4().hex[:8]}"
    admin_url = os.environ.get("CUBEPACS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
    admin = create_engine(admin_url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        url = admin_url.rsplit("/", 1)[0] + f"/{name}"
        _old_index(url)
        _check_migrated(url)  # (schema 3 widens the date columns: the long date above would not fit before)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        admin.dispose()


@contextlib.contextmanager
def _two_databases() -> Iterator[list[str]]:
    """Two new empty PostgreSQL databases (their URLs), dropped afterwards."""
    admin_url = os.environ.get("CUBEPACS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
    admin = create_engine(admin_url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    names = [f"cubepacs_backup_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield [admin_url.rsplit("/", 1)[0] + f"/{name}" for name in names]
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@pytest.mark.postgres
def test_backup_and_restore_with_a_postgresql_index(tmp_path: Path) -> None:
    """The services layout's index: pg_dump into the backup, pg_restore into another empty database, verified."""
    from cubepacs.archive import backup
    from cubepacs.archive.ingest import ingest
    from cubepacs.archive.services.service import open_backends
    from cubepacs.archive.settings import load_settings

    with _two_databases() as urls:
        first, second = (load_settings(overrides={"data_dir": str(tmp_path / d), "index_url": url})
                         for d, url in zip(("a", "b"), urls, strict=True))
        b = open_backends(first)
        for f in SINGLES[:5]:
            b.index.add_instances([ingest(f.read_bytes(), "t", b.storage, b.queue)])
        b.queue.close()
        b.index.close()
        manifest = backup.backup(first, tmp_path / "backup")
        assert manifest["index"] == "index.pgdump" and len(manifest["objects"]) == 5
        report = backup.restore(tmp_path / "backup", second)
        assert report.ok and report.instances == 5, report.problems


@pytest.mark.s3
@pytest.mark.postgres
def test_backup_of_the_services_layout_restores_into_an_empty_bucket_and_database_byte_identical(
        tmp_path: Path, seaweedfs: str) -> None:
    """S3 storage (SeaweedFS) and a PostgreSQL index: a backup taken while the archive serves, restored into a
    bucket that did not exist (``create_bucket=true``) and another empty database, serves every instance
    byte-identical to the file sent."""
    from cubepacs._registry import open_backend
    from cubepacs.archive import backup

    endpoint = seaweedfs.split("endpoint=", 1)[1]
    s3 = f"?endpoint={endpoint}&access_key=test&secret_key=test&create_bucket=true"
    buckets = [f"{role}-{uuid.uuid4().hex[:8]}" for role in ("pacs", "restored")]
    files = [*SINGLES, *dicom_files(next(s for s in SERIES if s.name.startswith("mr_ge_mr750")))[:10]]
    with _two_databases() as urls:
        data, dimse, http = tmp_path / "data", free_port(), free_port()
        cfg = write_config(tmp_path / "a.toml", data, dimse, http, storage_url=f"s3://{buckets[0]}/prod{s3}",
                           index_url=urls[0])
        stored, _, _ = _back_up_while_serving(cfg, data, dimse, http, files, tmp_path / "backup")
        checked = _cli("verify-backup", str(tmp_path / "backup"))  # (a pg_dump is checked by the restore)
        assert checked.returncode == 0 and "ok" in _words(checked), _words(checked)

        restored, dimse2, http2 = tmp_path / "restored", free_port(), free_port()
        cfg2 = write_config(tmp_path / "r.toml", restored, dimse2, http2, storage_url=f"s3://{buckets[1]}{s3}",
                            index_url=urls[1])
        done = _cli("restore", str(tmp_path / "backup"), "--config", str(cfg2))
        assert done.returncode == 0 and f"{len(stored)} instance(s)" in _words(done) and "ok" in _words(done), \
            _words(done)
        saved = backup.load_manifest(tmp_path / "backup")["objects"]
        assert len(saved) > len(stored) and set(saved) <= set(  # instances, series metadata, cubes: in the bucket
            open_backend("storage", f"s3://{buckets[1]}{s3}").keys())
        again = _cli("verify-backup", str(tmp_path / "backup"), "--archive", "--config", str(cfg2))
        assert again.returncode == 0 and f"{len(stored)} instance(s)" in _words(again), _words(again)
        server = start_server(restored, cfg2, dimse2, http2)
        try:
            assert _count(server) == len(stored)
            for f in stored:
                assert _retrieve(server, f) == f.read_bytes(), f.name
        finally:
            stop_server(server)
