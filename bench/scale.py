"""Scale-out benchmark: indexing throughput with 1, 2 and 4 indexer processes on one bus and one index, and a
cube frame read from S3 by ranges versus downloading the whole object.

Usage: .venv/bin/python bench/scale.py [--events 4000]

Uses PostgreSQL on 127.0.0.1:5432 (a scratch database), librdkafka's mock Kafka cluster (the Kafka protocol on
127.0.0.1) and SeaweedFS (`weed mini`, started on 127.0.0.1 when port 8333 is free). Storage events are synthetic
(index rows only; the pixel path is measured by bench/archive.py); the cube is a real series.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def new_database() -> str:
    import psycopg

    name = f"cubepacs_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return ADMIN.rsplit("/", 1)[0] + "/" + name


def drop_database(url: str) -> None:
    import psycopg

    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def publish(bootstrap: str, topic: str, n: int, partitions: int) -> None:
    import json

    from confluent_kafka import Producer

    # the mock cluster creates topics on first use (its admin API times out here)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for k in range(n):
        study = f"1.2.826.0.1.3680043.10.7777.{k // 100}"
        ev = {"tenant": "bench", "study_uid": study, "series_uid": study + ".1", "sop_uid": f"{study}.1.{k}",
              "key": f"bench/{k}.dcm", "attrs": {"PatientID": f"P{k // 100}", "Modality": "CT",
                                                  "InstanceNumber": k % 100}}
        producer.produce(topic, json.dumps(ev).encode(), key=ev["series_uid"].encode())
    producer.flush(60)
    found = len(producer.list_topics(topic, timeout=10).topics[topic].partitions)
    print(f"  topic {topic}: {found} partition(s)", file=sys.stderr)


def indexed(index_url: str) -> int:
    import psycopg

    with psycopg.connect(index_url) as conn:
        row = conn.execute("select count(*) from dicom_instance").fetchone()
    return int(row[0]) if row else 0


def run_indexers(bootstrap: str, k: int, n: int) -> float:
    prefix = f"b{uuid.uuid4().hex[:6]}_"
    publish(bootstrap, prefix + "storage_queue", n, partitions=8)
    index_url = new_database()
    from cubepacs.archive.index.store import Index

    Index.from_url(index_url).close()  # schema first, so the processes do not race for it
    queue_url = f"kafka://{bootstrap}?topic_prefix={prefix}"
    procs = [subprocess.Popen([sys.executable, "-m", "cubepacs", "indexer", "--queue", queue_url, "--index",
                               index_url, "--data-dir", tempfile.mkdtemp()],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(k)]
    start = time.perf_counter()
    try:
        while indexed(index_url) < n:
            if time.perf_counter() - start > 600:
                raise TimeoutError("indexers did not finish")
            time.sleep(0.1)
        return n / (time.perf_counter() - start)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        drop_database(index_url)


def s3_reads(repeat: int) -> tuple[float, float, int, int]:
    import cubepacs
    from cubepacs._registry import open_backend
    from cubepacs.archive.storage.base import StorageFile
    from cubepacs.cube.reader import CubeReader

    weed = None
    if socket.socket().connect_ex(("127.0.0.1", 8333)) != 0:
        folder = tempfile.mkdtemp()
        exe = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        weed = subprocess.Popen([exe, "mini", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                                 "-admin.ui=false"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(8)
    try:
        storage = open_backend("storage", "s3://cubepacs-bench/x?endpoint=http://127.0.0.1:8333",
                               access_key="bench", secret_key="bench")
        storage.ensure_bucket()
        image = cubepacs.load_from_dicom_folder(ROOT.parent / "shared" / "data" / "series" /
                                                "ct_ge_lightspeedvct_chest_100sl")
        with tempfile.TemporaryDirectory() as tmp:
            cubepacs.save(image, Path(tmp) / "c.dcbs")
            data = (Path(tmp) / "c.dcbs").read_bytes()
        storage.put("ct.dcbs", data)
        ranged, whole = [], []
        for i in range(repeat):
            t = time.perf_counter()
            CubeReader(StorageFile(storage, "ct.dcbs")).frame(i % 100)
            ranged.append(time.perf_counter() - t)
            t = time.perf_counter()
            CubeReader(storage.get("ct.dcbs")).frame(i % 100)
            whole.append(time.perf_counter() - t)
        reader = CubeReader(StorageFile(storage, "ct.dcbs"))
        reader.frame(0)
        warm = []
        for i in range(repeat):  # an open reader (WADO-RS keeps them): one ranged GET per frame
            t = time.perf_counter()
            reader.frame(i % 100)
            warm.append(time.perf_counter() - t)
        print(f"  warm reader: {statistics.median(warm) * 1e3:.1f} ms per frame", file=sys.stderr)
        h = reader.header
        ranged_bytes = 96 + h.meta_length + h.index_length + int(reader.index["length"][50])
        return statistics.median(ranged), statistics.median(whole), ranged_bytes, len(data)
    finally:
        if weed is not None:
            weed.terminate()
            weed.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=4000)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    from confluent_kafka import Producer

    holder = Producer({"test.mock.num.brokers": 3, "log_level": 0})
    bootstrap = ",".join(f"{b.host}:{b.port}" for b in holder.list_topics(timeout=10).brokers.values())
    print(f"{os.cpu_count()} cores; {args.events} storage events per run", file=sys.stderr)
    rates = {k: run_indexers(bootstrap, k, args.events) for k in (1, 2, 4)}
    for k, r in rates.items():
        print(f"indexers={k}: {r:7.0f} events/s   ×{r / rates[1]:.2f} vs 1 indexer")
    ranged, whole, rbytes, wbytes = s3_reads(args.repeat)
    print(f"S3 frame read: ranged {ranged * 1e3:.1f} ms ({rbytes / 1e6:.2f} MB) vs whole object "
          f"{whole * 1e3:.1f} ms ({wbytes / 1e6:.1f} MB): ×{whole / ranged:.1f}")


if __name__ == "__main__":
    main()
