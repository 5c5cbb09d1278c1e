"""Benchmark the lake on ZIPs built from ../shared/data: core-milliseconds per file and files per second.

Usage: .venv/bin/python bench/lake.py [--copies N] [--no-spark]

Methods, on the same ZIPs in one run:
  (a) reference: extract every ZIP to a temporary folder, then pydicom.dcmread the whole file + to_json_dict()
  (b) the same full read, in memory, without extraction
  (c) cubepacs scan (no Spark): headers only, process pool, Delta output
  (d) Spark 4 local[N]: spark.read.format("dicomzip") → write.format("deltars"), measured once warm
core-ms per file = CPU time of every process involved (the JVM and Python workers for Spark) / files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
import zipfile
from io import BytesIO
from pathlib import Path

import pydicom

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TICK = os.sysconf("SC_CLK_TCK")


def build_zips(out: Path, copies: int) -> list[Path]:
    """One ZIP per series (and one of the single files), copied ``copies`` times under other names."""
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for folder in [*sorted((DATA / "series").iterdir()), DATA / "single"]:
        first = out / f"{folder.name}-0.zip"
        with zipfile.ZipFile(first, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for f in sorted(folder.iterdir()):
                zf.write(f, f"{folder.name}/{f.name}")
        made.append(first)
        for k in range(1, copies):
            copy = out / f"{folder.name}-{k}.zip"
            shutil.copyfile(first, copy)
            made.append(copy)
    return made


def _count_dicom(zips: list[Path]) -> int:
    n = 0
    for z in zips:
        with zipfile.ZipFile(z) as zf:
            n += sum(1 for i in zf.infolist() if not i.is_dir() and not i.filename.endswith((".txt", "DIRFILE")))
    return n


def reference_extract(zips: list[Path], tmp: Path) -> tuple[int, float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    files = 0
    for z in zips:
        target = tmp / z.stem
        with zipfile.ZipFile(z) as zf:
            zf.extractall(target)
        for f in sorted(target.rglob("*")):
            if f.is_file() and not f.name.endswith(".txt") and f.name != "DIRFILE":
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        pydicom.dcmread(f, force=True).to_json_dict()
                except Exception:
                    pass
                files += 1
        shutil.rmtree(target)
    return files, time.perf_counter() - t0, time.process_time() - c0


def reference_memory(zips: list[Path]) -> tuple[int, float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    files = 0
    for z in zips:
        with zipfile.ZipFile(z) as zf:
            for info in zf.infolist():
                if info.is_dir() or info.filename.endswith(".txt") or info.filename.endswith("DIRFILE"):
                    continue
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        pydicom.dcmread(BytesIO(zf.read(info)), force=True).to_json_dict()
                except Exception:
                    pass
                files += 1
    return files, time.perf_counter() - t0, time.process_time() - c0


def _proc_tree_cpu(root: int) -> float:
    """CPU seconds (user+system, with reaped children) of a process and all its live descendants."""
    stats: dict[int, tuple[int, float]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ppid = int(fields[1])
            cpu = sum(int(x) for x in fields[11:15]) / TICK
            stats[int(d)] = (ppid, cpu)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
            todo.extend(p for p, (pp, _) in stats.items() if pp == pid)
    return total


def spark_run(zips_dir: Path, table: Path, cores: int) -> tuple[float, float]:
    os.environ["PYSPARK_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    from cubepacs.lake.datasource import register

    spark = (SparkSession.builder.master(f"local[{cores}]").config("spark.ui.enabled", "false")
             .config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    register(spark)

    def job(path: Path, batch: str) -> None:
        df = spark.read.format("dicomzip").option("path", str(zips_dir)).load()
        df.write.format("deltars").option("path", str(path)).option("batch_id", batch).mode("append").save()

    job(table.with_name("warmup"), "warm")  # JVM JIT, Python workers started
    me = os.getpid()
    c0, t0 = _proc_tree_cpu(me), time.perf_counter()
    job(table, "measured")
    wall, cpu = time.perf_counter() - t0, _proc_tree_cpu(me) - c0
    spark.stop()
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=12, help="copies of each ZIP (default 12)")
    ap.add_argument("--no-spark", action="store_true")
    args = ap.parse_args()
    from cubepacs.lake.scan import scan

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        zips = build_zips(tmp / "zips", args.copies)
        n = _count_dicom(zips)
        size = sum(z.stat().st_size for z in zips)
        print(f"{len(zips)} ZIPs, {n} DICOM entries, {size / 1e6:.0f} MB; {cores} cores", file=sys.stderr)
        results: dict[str, tuple[int, float, float]] = {}
        results["(a) extract + pydicom full read + to_json"] = reference_extract(zips, tmp / "x")
        results["(b) in-memory pydicom full read + to_json"] = reference_memory(zips)
        r = scan([str(tmp / "zips")], str(tmp / "table"), workers=cores)
        results["(c) cubepacs scan (headers, process pool)"] = (r.files + r.errors, r.wall_s, r.cpu_s)
        if not args.no_spark:
            wall, cpu = spark_run(tmp / "zips", tmp / "spark_table", cores)
            results[f"(d) Spark local[{cores}] dicomzip → deltars (warm)"] = (r.files + r.errors, wall, cpu)
    print(f"\n{'method':<48} {'files':>6} {'wall s':>7} {'files/s':>8} {'core-ms/file':>13}")
    for name, (files, wall, cpu) in results.items():
        print(f"{name:<48} {files:>6} {wall:>7.2f} {files / wall:>8.0f} {1000 * cpu / files:>13.2f}")
    per = {k: 1000 * cpu / files for k, (files, _, cpu) in results.items()}
    keys = list(per)
    print(f"\n(a) / (c) core-ms per file: {per[keys[0]] / per[keys[2]]:.1f}×")
    print(f"(b) / (c) core-ms per file: {per[keys[1]] / per[keys[2]]:.1f}×")
    if len(keys) > 3:
        print(f"Spark / scan core-ms per file: {per[keys[3]] / per[keys[2]]:.2f}×")


if __name__ == "__main__":
    main()
