"""A backend that goes away during ingest, then comes back: nothing acknowledged is lost, nothing is twice.

Each test runs ``cubepacs serve`` over one backend of its own (never the machine's shared PostgreSQL or Redis): a
PostgreSQL cluster made with ``initdb`` on a free port and restarted, a Redis stream queue stopped for 10 s, a
SeaweedFS S3 stopped for 10 s. A sender stores a real series one instance at a time, as a modality does: an
instance refused (0xA700) is sent again until it is acknowledged. Afterwards: acknowledged = stored = indexed,
each instance once (one index row, one object, the series' instance count right), and the time from the backend's
return to the archive's is measured (``docs/operations.md``, "Fault tests").
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pynetdicom import AE
from sqlalchemy import create_engine, text

from tests.archive.conftest import Server, free_port, start_server, stop_server, wait_until, write_config
from tests.conftest import SERIES, dicom_files

pytestmark = pytest.mark.slow
FILES = dicom_files(next(s for s in SERIES if s.name.startswith("mr_ge_mr750")))[:40]
OUTAGE = 10.0


class Sender:
    """Store ``FILES`` one by one (0.1 s apart) on one association at a time; a refused or failed C-STORE is
    retried every 0.25 s. ``acked``: SOP Instance UID → time acknowledged; ``refused``: how many were not."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.acked: dict[str, float] = {}
        self.refused = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        ae = AE("FAULTS")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        datasets = [dcmread(f) for f in FILES]
        for ds in datasets:
            ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = None
        for ds in datasets:
            while True:
                if assoc is None or not assoc.is_established:
                    assoc = ae.associate("127.0.0.1", self.port, ae_title="CUBEPACS")
                status = assoc.send_c_store(ds) if assoc.is_established else None
                if status is not None and getattr(status, "Status", None) == 0x0000:
                    self.acked[str(ds.SOPInstanceUID)] = time.monotonic()
                    break
                self.refused += 1
                if assoc.is_established and status is None:  # (no answer: the association is gone)
                    assoc.abort()
                time.sleep(0.25)
            time.sleep(0.1)
        if assoc is not None and assoc.is_established:
            assoc.release()

    def join(self, timeout: float = 120) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the sender did not finish"


def _during_ingest(server: Server, down: Callable[[], None], up: Callable[[], None]) -> tuple[Sender, float, float]:
    """Ingest while the backend goes down 1 s in and comes back ``OUTAGE`` s later: (the sender, seconds from the
    backend's return to the next instance acknowledged, seconds from its return to every instance acknowledged
    so far indexed)."""
    sender = Sender(server.dimse_port)
    time.sleep(1.0)
    down()
    time.sleep(OUTAGE)
    up()
    back = time.monotonic()
    so_far = set(sender.acked)
    wait_until(lambda: set(_indexed(server)) >= so_far, timeout=90)
    indexed = time.monotonic() - back
    sender.join()
    later = [t for t in sender.acked.values() if t >= back]
    return sender, (min(later) - back) if later else 0.0, indexed


def _indexed(server: Server) -> list[str]:
    r = httpx.get(f"{server.url}/instances", params={"limit": 10000, "includefield": "00080018"},
                  headers=server.headers(), timeout=30)
    return [] if r.status_code == 204 else [row["00080018"]["Value"][0] for row in r.json()]


def _check(server: Server, sender: Sender, objects: Callable[[], list[str]]) -> None:
    """acknowledged = stored = indexed, nothing twice."""
    wait_until(lambda: set(_indexed(server)) >= set(sender.acked), timeout=90)
    indexed = _indexed(server)
    assert len(sender.acked) == len(FILES)  # every instance was acknowledged in the end
    assert sorted(indexed) == sorted(sender.acked)  # each indexed once, nothing else
    stored = [k for k in objects() if k.endswith(".dcm")]
    assert len(stored) == len(FILES) and len(set(stored)) == len(stored)
    ds = dcmread(FILES[0], stop_before_pixels=True)
    r = httpx.get(f"{server.url}/studies/{ds.StudyInstanceUID}/series", headers=server.headers())
    assert r.json()[0]["00201209"]["Value"] == [len(FILES)]  # the series' count: no event counted twice


def _wait_port(port: int, timeout: float = 30) -> None:
    wait_until(lambda: subprocess.run(["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}"], check=False,
                                      capture_output=True).returncode == 0, timeout=timeout)


# --- PostgreSQL restarted ----------------------------------------------------------------------------------------

def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None)
    if found is None:
        pytest.skip(f"{name} not installed")
    return str(found)


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """A PostgreSQL cluster of this module alone (initdb, a free port); yields its URL, stop and start."""
    folder = Path(tempfile.mkdtemp(prefix="cubepacs-pg-"))  # (pytest's folders are root's alone)
    run_as: dict[str, object] = {}
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: as the postgres user, in a folder it owns
        shutil.chown(folder, "postgres")
        run_as = {"user": "postgres"}
    port = free_port()
    pgdata = folder / "data"
    subprocess.run([_pg_bin("initdb"), "-D", str(pgdata), "-A", "trust", "-U", "postgres"], check=True,
                   capture_output=True, **run_as)  # type: ignore[call-overload]
    ctl = [_pg_bin("pg_ctl"), "-D", str(pgdata), "-l", str(folder / "pg.log"), "-w",
           "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=on"]
    subprocess.run([*ctl, "start"], check=True, capture_output=True, **run_as)  # type: ignore[call-overload]

    def stop() -> None:
        subprocess.run([*ctl, "-m", "fast", "stop"], check=True, capture_output=True,
                       **run_as)  # type: ignore[call-overload]

    def start() -> None:
        subprocess.run([*ctl, "start"], check=True, capture_output=True, **run_as)  # type: ignore[call-overload]

    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", stop, start
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], check=False, capture_output=True,
                       **run_as)  # type: ignore[call-overload]
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.postgres
def test_postgresql_stopped_10_s_during_ingest(
        tmp_path: Path, own_postgres: tuple[str, Callable[[], None], Callable[[], None]]) -> None:
    url, stop, start = own_postgres
    data, dimse, http = tmp_path / "data", free_port(), free_port()
    cfg = write_config(tmp_path / "pg.toml", data, dimse, http, index_url=url, dimse_workers=1, quiet_seconds=3600.0)
    server = start_server(data, cfg, dimse, http)
    try:
        sender, _, indexed = _during_ingest(server, stop, start)
        assert sender.refused == 0  # storing needs no index: C-STOREs go on, the indexer waits and retries
        _check(server, sender, lambda: [str(p) for p in (data / "storage").rglob("*.dcm")])
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM dicom_instance")).scalar() == len(FILES)
        engine.dispose()
        print(f"PostgreSQL down {OUTAGE:.0f} s: 0 C-STORE refused, everything acknowledged indexed {indexed:.1f} s "
              "after PostgreSQL was back")
    finally:
        stop_server(server)


# --- Redis (the queue) stopped 10 s ------------------------------------------------------------------------------

@pytest.mark.redis
def test_redis_queue_stopped_10_s_during_ingest(tmp_path: Path) -> None:
    port = free_port()
    redis_cmd = [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                 "--dir", str(tmp_path), "--appendonly", "yes", "--appendfsync", "always", "--save", ""]
    redis = subprocess.Popen(redis_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_port(port)
    data, dimse, http = tmp_path / "data", free_port(), free_port()
    cfg = write_config(tmp_path / "redis.toml", data, dimse, http, queue_url=f"redis://127.0.0.1:{port}/0",
                       dimse_workers=1, quiet_seconds=3600.0)
    server = start_server(data, cfg, dimse, http)
    procs = [redis]
    try:
        def down() -> None:
            procs[0].send_signal(signal.SIGTERM)
            procs[0].wait(timeout=10)

        def up() -> None:
            procs[0] = subprocess.Popen(redis_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _wait_port(port)

        sender, recovered, indexed = _during_ingest(server, down, up)
        assert sender.refused > 0  # C-STOREs during the outage were refused, not acknowledged
        _check(server, sender, lambda: [str(p) for p in (data / "storage").rglob("*.dcm")])
        print(f"Redis down {OUTAGE:.0f} s: {sender.refused} C-STORE refused, the next acknowledged {recovered:.1f} s "
              f"and everything acknowledged indexed {indexed:.1f} s after Redis was back")
    finally:
        stop_server(server)
        if procs[0].poll() is None:
            procs[0].terminate()
            procs[0].wait(timeout=10)


# --- SeaweedFS (S3) stopped 10 s --------------------------------------------------------------------------------

@pytest.mark.s3
def test_s3_stopped_10_s_during_ingest(tmp_path: Path) -> None:
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3", "webdav", "admin")}
    cmd = [weed, "mini", f"-dir={tmp_path / 'weed'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false",
           *(f"-{name}.port={port}" for name, port in ports.items())]
    (tmp_path / "weed").mkdir()
    log = open(tmp_path / "weed.log", "ab")
    procs = [subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)]
    url = f"s3://faults?endpoint=http://127.0.0.1:{ports['s3']}&access_key=test&secret_key=test&create_bucket=true"
    from cubepacs._registry import open_backend

    _wait_port(ports["s3"], timeout=60)
    storage = None
    for _ in range(60):  # the S3 gateway answers before its filer is ready
        try:
            storage = open_backend("storage", url)
            storage.probe()
            break
        except Exception:
            time.sleep(0.5)
    assert storage is not None
    data, dimse, http = tmp_path / "data", free_port(), free_port()
    cfg = write_config(tmp_path / "s3.toml", data, dimse, http, storage_url=url, dimse_workers=1,
                       quiet_seconds=3600.0)
    server = start_server(data, cfg, dimse, http)
    try:
        def down() -> None:
            procs[0].kill()  # (as a crash: SeaweedFS's own shutdown takes seconds)
            procs[0].wait(timeout=30)

        def up() -> None:
            procs[0] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            _wait_port(ports["s3"], timeout=60)

        sender, recovered, indexed = _during_ingest(server, down, up)
        assert sender.refused > 0
        _check(server, sender, storage.keys)
        print(f"S3 down {OUTAGE:.0f} s: {sender.refused} C-STORE refused, the next acknowledged {recovered:.1f} s "
              f"and everything acknowledged indexed {indexed:.1f} s after SeaweedFS was back")
    finally:
        stop_server(server)
        if procs[0].poll() is None:
            procs[0].terminate()
            procs[0].wait(timeout=30)
        log.close()


# --- a Kafka broker down 10 s ------------------------------------------------------------------------------------

class MockKafka:
    """A librdkafka mock cluster of 3 brokers (the library's own test cluster), reached through its C API
    (ctypes) because confluent-kafka does not expose taking a broker down."""

    def __init__(self) -> None:
        import ctypes
        import glob

        import confluent_kafka

        path = glob.glob(str(Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs" / "librdkafka*"))
        if not path:
            pytest.skip("librdkafka's shared library is not where confluent-kafka's wheel puts it")
        lib = self.lib = ctypes.CDLL(path[0])
        lib.rd_kafka_conf_new.restype = ctypes.c_void_p
        lib.rd_kafka_conf_set.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                          ctypes.c_size_t]
        lib.rd_kafka_new.restype = ctypes.c_void_p
        lib.rd_kafka_new.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        lib.rd_kafka_destroy.argtypes = [ctypes.c_void_p]
        lib.rd_kafka_mock_cluster_new.restype = ctypes.c_void_p
        lib.rd_kafka_mock_cluster_new.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.rd_kafka_mock_cluster_destroy.argtypes = [ctypes.c_void_p]
        lib.rd_kafka_mock_cluster_bootstraps.restype = ctypes.c_char_p
        lib.rd_kafka_mock_cluster_bootstraps.argtypes = [ctypes.c_void_p]
        for name in ("rd_kafka_mock_broker_set_down", "rd_kafka_mock_broker_set_up"):
            getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_int32]
        lib.rd_kafka_mock_topic_create.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
        error = ctypes.create_string_buffer(512)
        conf = lib.rd_kafka_conf_new()
        lib.rd_kafka_conf_set(conf, b"log_level", b"0", error, 512)  # (it connects to nothing: no warning of it)
        self.rk = lib.rd_kafka_new(0, conf, error, 512)  # (0: a producer handle, holding the cluster)
        self.cluster = lib.rd_kafka_mock_cluster_new(self.rk, 3)
        self.bootstrap = lib.rd_kafka_mock_cluster_bootstraps(self.cluster).decode()

    def close(self) -> None:
        self.lib.rd_kafka_mock_cluster_destroy(self.cluster)
        self.lib.rd_kafka_destroy(self.rk)


@pytest.mark.kafka
def test_a_kafka_broker_down_10_s_during_ingest(tmp_path: Path) -> None:
    kafka = MockKafka()
    try:
        assert kafka.lib.rd_kafka_mock_topic_create(kafka.cluster, b"faults_storage_queue", 4, 3) == 0
        data, dimse, http = tmp_path / "data", free_port(), free_port()
        cfg = write_config(tmp_path / "kafka.toml", data, dimse, http, dimse_workers=1, quiet_seconds=3600.0,
                           queue_url=f"kafka://{kafka.bootstrap}?topic_prefix=faults_")
        server = start_server(data, cfg, dimse, http)
        try:
            sender, recovered, indexed = _during_ingest(server, lambda: kafka.lib.rd_kafka_mock_broker_set_down(
                kafka.cluster, 1), lambda: kafka.lib.rd_kafka_mock_broker_set_up(kafka.cluster, 1))
            _check(server, sender, lambda: [str(p) for p in (data / "storage").rglob("*.dcm")])
            print(f"Kafka broker 1 of 3 down {OUTAGE:.0f} s: {sender.refused} C-STORE refused, the next acknowledged "
                  f"{recovered:.1f} s and everything acknowledged indexed {indexed:.1f} s after it was back")
        finally:
            stop_server(server)
    finally:
        kafka.close()
