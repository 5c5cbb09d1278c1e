"""Faults: a backend that goes down — C-STORE is not acknowledged when its event cannot be queued, errors are clear
and never show passwords; a full disk — new instances refused, reads go on, nothing dies, all resumes by itself."""

from __future__ import annotations

import errno
import io
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from pydicom import Dataset, dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from cubepacs._registry import mask_url, open_backend
from cubepacs.archive.dimse.scp import start_scp
from cubepacs.archive.index.store import Index
from cubepacs.archive.services.workers import METRICS_FILE_BYTES
from cubepacs.archive.storage.file import FileStorage
from cubepacs.archive.web import multipart
from cubepacs.errors import BackendError
from tests.archive.conftest import free_port, start_server, stop_server, wait_until, write_config
from tests.conftest import SERIES, SINGLES, dicom_files


@pytest.mark.redis
def test_c_store_is_refused_when_the_queue_is_down(tmp_path: Path) -> None:
    port = free_port()
    redis = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
                              "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    queue = open_backend("queue", f"redis://127.0.0.1:{port}/0")
    dimse = free_port()
    server = start_scp("127.0.0.1", dimse, "CUBEPACS", {"CUBEPACS": "t"}, FileStorage(tmp_path / "objects"), queue,
                       Index.from_url("sqlite://"))
    ds = dcmread(next(s for s in SINGLES if s.name == "ct_ge_small_signed.dcm"))
    ae = AE("SCU")
    ae.add_requested_context(CTImageStorage, ds.file_meta.TransferSyntaxUID)
    try:
        assoc = ae.associate("127.0.0.1", dimse, ae_title="CUBEPACS")
        assert assoc.send_c_store(ds).Status == 0x0000
        assoc.release()
        redis.terminate()
        redis.wait(timeout=10)
        assoc = ae.associate("127.0.0.1", dimse, ae_title="CUBEPACS")
        status = assoc.send_c_store(ds)
        assoc.release()
        assert status.Status == 0xA700  # out of resources: the event was not queued, so no success
    finally:
        server.shutdown()
        if redis.poll() is None:
            redis.kill()


def test_unreachable_backends_fail_clearly_without_passwords() -> None:
    with pytest.raises(BackendError, match=r"redis://:\*\*\*@127.0.0.1:1/0 is not reachable") as err:
        open_backend("queue", "redis://:s3cret@127.0.0.1:1/0")
    assert "s3cret" not in str(err.value)
    with pytest.raises(BackendError) as err2:
        open_backend("index", "postgresql://app:s3cret@127.0.0.1:1/db")
    assert "s3cret" not in str(err2.value) and "app:***@" in str(err2.value)
    assert mask_url("kafka://u:p@h:9092") == "kafka://u:***@h:9092"


# --- a full disk -------------------------------------------------------------------------------------------------

def _mount_tmpfs(folder: Path, size_mb: int) -> None:
    folder.mkdir(parents=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(folder)], check=False,
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"a small tmpfs cannot be mounted here (root needed): {res.stderr.strip()}")


def _fill(path: Path, leave_mb: float) -> None:
    """Write ``path`` until the file system has ``leave_mb`` MB free (0: until it refuses: ENOSPC)."""
    st = os.statvfs(path.parent)
    want = max(0, st.f_bavail * st.f_frsize - int(leave_mb * 1024**2))
    with open(path, "ab", buffering=0) as f:
        try:
            while want > 0:
                n = min(want, 1 << 20)
                f.write(b"\0" * n)
                want -= n
            if leave_mb == 0:
                while True:
                    f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def _c_store(port: int, ds: Dataset) -> int:
    ae = AE("FAULTS")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="CUBEPACS")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


def test_a_full_disk_refuses_new_instances_keeps_reads_and_recovers(tmp_path: Path) -> None:
    """The data folder on a 48 MB tmpfs with ``min_free_mb = 16`` and, on purpose, the runtime files (the
    memory-mapped metrics) there too — the layout that died with SIGBUS (exit 135) on the first ``/readyz`` of a
    full disk. Below the watermark and then on a disk with no byte left: C-STORE 0xA700, STOW-RS 507 with the
    reason, ``/readyz`` 503 naming the disk, ``/healthz`` 200, QIDO/WADO/metrics answer, the process lives; with
    the space back it all resumes by itself."""
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, 48)
    server = None
    try:
        data, dimse, http = disk, free_port(), free_port()  # (its log beside it: tmp_path/disk.log, not full)
        cfg = write_config(tmp_path / "full.toml", data, dimse, http, dimse_workers=2, min_free_mb=16,
                           run_dir=str(disk / "run"), quiet_seconds=3600.0, log_interval=3600.0)
        server = start_server(data, cfg, dimse, http)
        files = dicom_files(next(s for s in SERIES if s.name.startswith("mr_ge_mr750")))[:12]
        before, during, after = files[:8], files[8:10], files[10:]
        headers = server.headers()

        def count() -> int:
            r = httpx.get(f"{server.url}/instances", params={"limit": 1000}, headers=headers)
            return 0 if r.status_code == 204 else len(r.json())

        def same(f: Path) -> bool:
            """The instance of ``f`` retrieved over WADO-RS: the same elements as the file (pydicom; the file meta
            is the archive's own for a C-STORE)."""
            ds = dcmread(f, stop_before_pixels=True)
            r = httpx.get(f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/"
                          f"{ds.SOPInstanceUID}", headers=headers, timeout=30)
            assert r.status_code == 200, r.text
            (part,) = multipart.parse(r.content, r.headers["content-type"])
            got, sent = dcmread(io.BytesIO(part)), dcmread(f)
            return [e for e in got if e.tag.element] == [e for e in sent if e.tag.element]  # (pynetdicom sends no
            # group lengths)

        assert all(_c_store(dimse, dcmread(f)) == 0x0000 for f in before)
        wait_until(lambda: count() == len(before))
        assert httpx.get(f"http://127.0.0.1:{http}/readyz").status_code == 200
        # the runtime files are preallocated: every page prometheus-client writes through its mapping is backed
        for db in (disk / "run" / "metrics").glob("*.db"):
            assert db.stat().st_blocks * 512 >= METRICS_FILE_BYTES, db

        for phase, leave in (("below the watermark", 8.0), ("full", 0.0)):
            _fill(disk / "filler", leave)
            time.sleep(1.1)  # the guard reads the free space again at most every second
            for f in during:
                assert _c_store(dimse, dcmread(f)) == 0xA700, phase  # Out of Resources
            body, ctype = multipart.encode([during[0].read_bytes()], "application/dicom")
            r = httpx.post(f"{server.url}/studies", content=body, headers={**headers, "Content-Type": ctype})
            assert r.status_code == 507 and "disk full" in r.text and str(data) in r.text, (phase, r.text)
            ready = httpx.get(f"http://127.0.0.1:{http}/readyz")
            assert ready.status_code == 503 and "disk full" in ready.json()["disk"], ready.text
            assert httpx.get(f"http://127.0.0.1:{http}/healthz").status_code == 200
            assert count() == len(before)  # QIDO
            assert all(same(f) for f in before[:3]), phase  # WADO-RS
            text = httpx.get(f"http://127.0.0.1:{http}/metrics").text
            assert "cubepacs_disk_refusing 1.0" in text
            free = [float(x.rsplit(" ", 1)[1]) for x in text.splitlines()
                    if x.startswith("cubepacs_disk_free_bytes{") and f'path="{data}"' in x]
            assert free and free[0] < 16 * 1024**2
            assert server.proc.poll() is None, f"serve died ({phase}): exit {server.proc.returncode}"
        assert count() == len(before)  # nothing refused was indexed

        (disk / "filler").unlink()
        start = time.monotonic()
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{http}/readyz").status_code == 200, timeout=10)
        assert all(_c_store(dimse, dcmread(f)) == 0x0000 for f in during + after)
        wait_until(lambda: count() == len(files))
        recovered = time.monotonic() - start
        assert all(same(f) for f in during + after)
        assert "cubepacs_disk_refusing 0.0" in httpx.get(f"http://127.0.0.1:{http}/metrics").text
        stop_server(server)
        log = (tmp_path / "disk.log").read_text()
        refused = [x for x in log.splitlines() if "disk full:" in x]
        assert 1 <= len(refused) <= 3, refused  # once per process that was asked (web, two DIMSE workers)
        assert "MB free" in refused[0]
        assert "disk space back" in log
        assert "Traceback" not in log
        print(f"recovered in {recovered:.1f} s")
    finally:
        if server is not None:
            stop_server(server)
        subprocess.run(["umount", "-l", str(disk)], check=False)


# --- an object storage that is not there ---------------------------------------------------------------------

def _check(tmp_path: Path, storage_url: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """``cubepacs serve --check`` with the embedded queue and index and ``storage_url``; (result, seconds)."""
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "cubepacs", "serve", "--check", "--data-dir", str(tmp_path / "d"),
                          "--storage", storage_url], check=False, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return res, time.monotonic() - start


def _storage_line(out: str) -> str:
    """The ``storage`` result of ``serve --check`` (the terminal may have wrapped it)."""
    words = " ".join(out.split())
    return words[words.index("storage "):].split(" index ")[0].split(" queue ")[0]


@pytest.mark.s3
def test_s3_that_is_not_there_is_one_line_and_a_missing_bucket_is_created_only_when_asked(
        tmp_path: Path, seaweedfs: str) -> None:
    endpoint = seaweedfs.split("endpoint=", 1)[1]
    keys = "&access_key=test&secret_key=test"
    closed = free_port()
    res, took = _check(tmp_path, f"s3://pacs?endpoint=http://127.0.0.1:{closed}{keys}")
    assert res.returncode == 4, res.stdout + res.stderr
    line = _storage_line(res.stdout)
    assert f"S3 at http://127.0.0.1:{closed} is not reachable" in line and "test" not in line.split("reachable")[1]
    assert took < 30 and "Traceback" not in res.stdout + res.stderr

    bucket = f"missing-{uuid.uuid4().hex[:8]}"
    res, _ = _check(tmp_path, f"s3://{bucket}?endpoint={endpoint}{keys}")
    assert res.returncode == 4
    line = _storage_line(res.stdout)
    assert f"S3 bucket '{bucket}' does not exist at {endpoint}" in line and "create_bucket=true" in line

    res, _ = _check(tmp_path, f"s3://{bucket}/pfx?endpoint={endpoint}{keys}&create_bucket=true")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "storage  ok" in res.stdout
    storage = open_backend("storage", f"s3://{bucket}/pfx?endpoint={endpoint}", access_key="test", secret_key="test")
    storage.probe()  # the bucket is there now: HEAD, PUT, GET, DELETE of a probe object
    assert storage.keys() == []  # … which is gone again
    with pytest.raises(KeyError):
        storage.get("t/nothing.dcm")
    assert storage.exists("t/nothing.dcm") is False
    unreachable = open_backend("storage", f"s3://pacs?endpoint=http://127.0.0.1:{closed}", access_key="test",
                               secret_key="test")
    with pytest.raises(Exception) as err:  # not "absent": unknown (a C-STORE is then refused, not overwritten)
        unreachable.exists("t/x.dcm")
    assert "127.0.0.1" in str(err.value)


# --- an indexer that dies: its Kafka partitions go to the other --------------------------------------------------

_CONSUMER = """
import sys
from cubepacs._registry import open_backend
q = open_backend("queue", sys.argv[1])
while True:
    for m in q.poll("storage_queue", "indexer", 100, 0.5):
        print(m.payload["series_uid"], flush=True)
"""


@pytest.mark.kafka
def test_a_dead_indexers_partitions_are_taken_over_within_the_session_timeout(kafka_url: str) -> None:
    """Two consumers of the indexer group (librdkafka's mock cluster, 4 partitions); one is killed with -9. Every
    event published after the kill reaches the other within ``session_timeout_ms`` (5 s by default) plus the
    rebalance — it was ≈ 20 s with the former 10 s default."""
    url = f"{kafka_url}?topic_prefix=takeover{uuid.uuid4().hex[:6]}_"
    producer, survivor = open_backend("queue", url), open_backend("queue", url)
    assert survivor.session_timeout_ms == 5000
    producer.publish("storage_queue", {"series_uid": "0"})  # the topic made (the mock cluster: 4 partitions)
    other = subprocess.Popen([sys.executable, "-c", _CONSUMER, url], stdout=subprocess.PIPE, text=True)
    try:
        got: set[str] = set()
        mine = {f"1.2.{n}" for n in range(40)}
        for uid in sorted(mine):
            producer.publish("storage_queue", {"series_uid": uid})
        settle = time.monotonic() + 8  # both join the group and share its partitions
        while time.monotonic() < settle:
            got |= {m.payload["series_uid"] for m in survivor.poll("storage_queue", "indexer", 100, 0.2)}
        assert 0 < len(got & mine) < 40, "both consumers should hold partitions"
        other.kill()
        other.wait()
        later = {f"2.3.{n}" for n in range(40)}
        for uid in sorted(later):
            producer.publish("storage_queue", {"series_uid": uid})
        start = time.monotonic()
        while not later <= got and time.monotonic() - start < 30:
            got |= {m.payload["series_uid"] for m in survivor.poll("storage_queue", "indexer", 100, 0.2)}
        took = time.monotonic() - start
        assert later <= got, f"{len(later - got)} events never reached the surviving indexer"
        assert took < 5 + 6, f"takeover took {took:.1f} s"
        print(f"takeover in {took:.1f} s")
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
        assert other.stdout is not None
        other.stdout.close()
        producer.close()
        survivor.close()


def test_series_builds_wait_for_space_instead_of_spending_their_retries(tmp_path: Path) -> None:
    """Below the watermark the web worker builds nothing (its cube would not fit): the series stays due with its
    retries untouched, and is built once there is room."""
    from cubepacs.archive.ingest import ingest
    from cubepacs.archive.queue.embedded import EmbeddedQueue
    from cubepacs.archive.services.webworker import WebWorker
    from cubepacs.archive.storage.guard import DiskGuard

    storage, index = FileStorage(tmp_path / "objects"), Index.from_url("sqlite://")
    queue = EmbeddedQueue(str(tmp_path / "q.db"))
    for f in dicom_files(next(s for s in SERIES if s.name.startswith("mr_ge_mr750")))[:3]:
        index.add_instances([ingest(f.read_bytes(), "t", storage, queue)])
    worker = WebWorker(index, storage, quiet_seconds=0.0, max_retries=1)
    guard = DiskGuard.attach(storage, str(tmp_path), min_free_mb=1 << 40)  # more than any disk has
    assert worker.run_once() == 0
    (due,) = index.pending_series(0.0, 1)
    assert due["retry_times"] == 0
    guard.min_free, guard.interval = 0, 0.0  # room again
    assert worker.run_once() == 1 and not index.pending_series(0.0, 1)
    queue.close()
    index.close()
