"""One contract for every storage backend: files, and S3 against a real SeaweedFS server started here."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import cubepacs
from cubepacs._registry import open_backend
from cubepacs.archive.storage.base import Storage, StorageFile
from cubepacs.cube.reader import CubeReader
from cubepacs.errors import ConfigError
from tests.conftest import SERIES


class StorageContract:
    """What every storage backend must do."""

    @pytest.fixture
    def storage(self) -> Storage:
        raise NotImplementedError

    def test_put_get_range_exists_delete(self, storage: Storage) -> None:
        storage.put("t/1.2/3.dcm", b"0123456789")
        assert storage.get("t/1.2/3.dcm") == b"0123456789"
        assert storage.get_range("t/1.2/3.dcm", 2, 5) == b"23456"
        assert storage.exists("t/1.2/3.dcm") and not storage.exists("t/1.2/4.dcm")
        storage.put("t/1.2/3.dcm", b"new")
        assert storage.get("t/1.2/3.dcm") == b"new"
        storage.delete("t/1.2/3.dcm")
        assert not storage.exists("t/1.2/3.dcm")
        with pytest.raises(KeyError):
            storage.get("t/1.2/3.dcm")

    def test_received_instance_is_stored_like_any_object(self, storage: Storage) -> None:
        storage.put_received("t/1.2/5.dcm", b"0123456789" * 1000)
        assert storage.get("t/1.2/5.dcm") == b"0123456789" * 1000
        assert storage.get_range("t/1.2/5.dcm", 9990, 20) == b"0123456789"

    def test_view_reads_like_get(self, storage: Storage) -> None:
        storage.put("t/1.2/6.dcm", b"abcdef" * 5000)
        storage.put("t/1.2/7.dcm", b"")
        view = storage.view("t/1.2/6.dcm")
        assert view[:] == b"abcdef" * 5000 and view[6:9] == b"abc" and view.find(b"fa") == 5
        assert storage.view("t/1.2/7.dcm")[:] == b""
        with pytest.raises(KeyError):
            storage.view("t/1.2/8.dcm")

    def test_open_read_reads_what_get_reads(self, storage: Storage) -> None:
        data = next(f for f in sorted(SERIES[0].iterdir()) if f.suffix != ".txt").read_bytes()  # a real file
        storage.put("t/1.2/9.dcm", data)
        with storage.open_read("t/1.2/9.dcm") as f:  # as a download reads it: a chunk at a time
            assert b"".join(iter(lambda: f.read(4096), b"")) == data == storage.get("t/1.2/9.dcm")
        with pytest.raises(KeyError):
            storage.open_read("t/1.2/10.dcm")

    def test_keys_cannot_escape(self, storage: Storage) -> None:
        with pytest.raises(ValueError, match="leaves"):
            storage.put("../../etc/x", b"x")

    def test_cube_frames_by_ranged_reads(self, storage: Storage, tmp_path: Path) -> None:
        series = next(s for s in SERIES if s.name.startswith("mr_ge_signa"))
        image = cubepacs.load_from_dicom_folder(series)
        cubepacs.save(image, tmp_path / "x.dcbs")
        data = (tmp_path / "x.dcbs").read_bytes()
        storage.put("t/cube.dcbs", data)
        reader = CubeReader(StorageFile(storage, "t/cube.dcbs"))
        before = getattr(storage, "range_reads", None)
        frame = reader.frame(42)
        assert (frame == image.frame(42)).all()
        if before is not None:  # header, meta, index, one frame: never the whole object
            assert storage.range_reads - before <= 4


class TestFile(StorageContract):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> Storage:
        return open_backend("storage", f"file://{tmp_path}/objects")  # type: ignore[no-any-return]


def _resident_pages(path: Path) -> int:
    """Pages of ``path`` in the OS page cache, as util-linux's ``fincore`` counts them."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "PAGES", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


needs_fincore = pytest.mark.skipif(shutil.which("fincore") is None or not hasattr(os, "posix_fadvise"),
                                   reason="needs util-linux fincore and posix_fadvise")


@needs_fincore
def test_received_files_leave_the_page_cache_but_their_header_unless_kept(tmp_path: Path) -> None:
    data = bytes(range(256)) * 4096  # 1 MB: 256 pages, the first 10,000 bytes its "header" (3 pages hold it)
    dropped = open_backend("storage", f"file://{tmp_path}/a")
    dropped.put_received("t/1/2.dcm", data, header_size=10_000)
    dropped.put_received("t/1/3.dcm", data)  # no header size given: all of it is header, kept
    dropped.put("t/1/cube.dcbs", data)  # anything else the archive writes (cubes, series JSON) stays cached
    assert _resident_pages(tmp_path / "a" / "t" / "1" / "2.dcm") == 3
    assert _resident_pages(tmp_path / "a" / "t" / "1" / "3.dcm") == 256
    assert _resident_pages(tmp_path / "a" / "t" / "1" / "cube.dcbs") == 256
    assert dropped.get("t/1/2.dcm") == data  # read back from the disk
    kept = open_backend("storage", f"file://{tmp_path}/b?received=keep")
    kept.put_received("t/1/2.dcm", data, header_size=10_000)
    assert _resident_pages(tmp_path / "b" / "t" / "1" / "2.dcm") == 256


@needs_fincore
def test_a_received_instance_keeps_its_header_cached(tmp_path: Path) -> None:
    """Through the ingest path, with a real CT file: pages before its Pixel Data stay, the rest is dropped."""
    from cubepacs.archive.ingest import ingest
    from cubepacs.archive.metadata import instance_metadata
    from cubepacs.archive.queue.embedded import EmbeddedQueue

    series = next(f for f in SERIES if f.name.startswith("ct_ge"))
    raw = sorted(series.glob("*.dcm"))[0].read_bytes()
    storage = open_backend("storage", f"file://{tmp_path}/s")
    ev = ingest(raw, "acme", storage, EmbeddedQueue(str(tmp_path / "q.db")))
    pixel = raw.index(b"\xe0\x7f\x10\x00")  # (7FE0,0010), little endian: where the header ends
    path = storage.local_path(ev["key"])
    assert _resident_pages(path) == pixel // 4096 + 1 < len(raw) // 4096
    # its metadata, from the file mapped (as a series' first /metadata reads it): no pixel page read back but
    # the last (the reader looks for trailing padding)
    doc = instance_metadata(storage.view(ev["key"]), "/r")
    assert doc == instance_metadata(raw, "/r") and doc["00080060"]["Value"] == ["CT"]
    assert _resident_pages(path) <= pixel // 4096 + 2


def test_file_storage_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"received=drop\|keep"):
        open_backend("storage", f"file://{tmp_path}/a?received=maybe")
    with pytest.raises(ConfigError, match="the only option"):
        open_backend("storage", f"file://{tmp_path}/a?fsync=off")


@pytest.mark.s3
class TestS3(StorageContract):
    @pytest.fixture
    def storage(self, seaweedfs: str) -> Any:
        return open_backend("storage", seaweedfs, access_key="test", secret_key="test")


@pytest.mark.s3
def test_log_tables_on_object_storage(seaweedfs: str) -> None:
    import duckdb
    from deltalake import DeltaTable

    from cubepacs.archive.observability.accesslog import OBJECT_SCHEMA, DeltaLog

    storage = open_backend("storage", seaweedfs, access_key="test", secret_key="test")
    uri, options = storage.delta_location("dicom_object_meta")
    assert uri.startswith("s3://cubepacs-test/") and uri.endswith("/logs/dicom_object_meta")
    log = DeltaLog(uri, options, batch=2, interval=None, schema=OBJECT_SCHEMA)
    for n in range(3):
        log.add(tenant_id="t", sop_uid=f"1.2.{n}", study_uid="1.2", series_uid="1.2.3", size=n)
    log.close()
    rows = DeltaTable(uri, storage_options=options).to_pyarrow_table()  # noqa: F841 - DuckDB reads it by name
    assert duckdb.sql("select count(*), sum(size) from rows").fetchall() == [(3, 3)]
