"""Scan ZIPs, folders and cubes without Spark: the same reader in a process pool, into one Delta commit.

Example
-------
>>> import tempfile
>>> result = scan(["../shared/data/series/mr_ge_mr750_epi_fmri_150img"], tempfile.mkdtemp(), workers=1)
>>> result.files, result.errors, result.committed
(150, 0, True)
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from cubepacs.lake.delta import Part, commit, write_part
from cubepacs.lake.partitions import Partition, plan
from cubepacs.lake.reader import DEFAULT_BULK_THRESHOLD, DEFAULT_MAX_HEADER, DEFAULT_MAX_NESTED, read_item
from cubepacs.lake.schema import ARROW_SCHEMA, to_batch

BATCH_ROWS = 2048


@dataclass
class ScanResult:
    """What a scan did: counts, bytes, CPU and wall time, and whether its commit went in."""

    files: int = 0
    errors: int = 0
    compressed_bytes: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    committed: bool = False
    batch_id: str = ""

    @property
    def core_ms_per_file(self) -> float:
        """CPU time of the driver and of every partition task, divided by the rows produced, in milliseconds.

        Worker process start-up (a fork from a preloaded server) is not counted.
        """
        return 1000 * self.cpu_s / max(self.files + self.errors, 1)


def scan_partition(part: Partition, table_uri: str | None, bulk_threshold: int,
                   limits: tuple[int, int] = (DEFAULT_MAX_HEADER, DEFAULT_MAX_NESTED)
                   ) -> tuple[Part | None, int, int, float]:
    """Read one partition; write its Parquet part when ``table_uri`` is given. (part, files, errors, cpu s)."""
    start = time.process_time()
    files = errors = 0
    batches = []
    rows: list[dict[str, object]] = []
    for item in part.items:
        for row in read_item(item, bulk_threshold, *limits):
            rows.append(row)
            if row["error"] is None:
                files += 1
            else:
                errors += 1
            if len(rows) >= BATCH_ROWS:
                batches.append(to_batch(rows))
                rows = []
    if rows:
        batches.append(to_batch(rows))
    out = write_part(table_uri, batches, ARROW_SCHEMA) if table_uri is not None else None
    return out, files, errors, time.process_time() - start


def batch_id_of(parts: list[Partition], bulk_threshold: int) -> str:
    """A batch id from what is scanned only: canonical paths, entry names and content fingerprints, sorted, so
    that the same input gives the same id however it is named (relative, absolute) or partitioned."""
    from cubepacs.lake.reader import fingerprint

    keys = set()
    for p in parts:
        for item in p.items:
            path = os.path.realpath(item.path)
            for entry in item.entries or ("",):
                keys.add(f"{item.kind}\0{path}\0{entry}\0{fingerprint(path)}")
    h = hashlib.blake2b(digest_size=12)
    h.update(str(bulk_threshold).encode())
    for key in sorted(keys):
        h.update(key.encode() + b"\n")
    return h.hexdigest()


def scan(paths: list[str], table_uri: str, workers: int | None = None, num_partitions: int | None = None,
         pattern: str | None = None, recursive: bool = True, bulk_threshold: int = DEFAULT_BULK_THRESHOLD,
         batch_id: str | None = None, progress: Callable[[int, int], None] | None = None,
         max_header: int = DEFAULT_MAX_HEADER, max_nested: int = DEFAULT_MAX_NESTED) -> ScanResult:
    """Read every DICOM header under ``paths`` into the Delta table ``table_uri`` in one commit.

    The commit is idempotent per ``batch_id`` (default: derived from the inputs, so scanning unchanged inputs
    again adds nothing).
    """
    t0 = time.perf_counter()
    self_cpu0 = time.process_time()
    worker_cpu = 0.0
    parts = plan(paths, num_partitions, pattern, recursive)
    result = ScanResult(batch_id=batch_id or batch_id_of(parts, bulk_threshold))
    result.compressed_bytes = sum(p.weight for p in parts)
    written: list[Part] = []
    workers = workers or os.cpu_count() or 1
    with contextlib.ExitStack() as stack:
        if workers == 1:
            outcomes: Iterator[tuple[Part | None, int, int, float]] = (
                scan_partition(p, table_uri, bulk_threshold, (max_header, max_nested)) for p in parts)
        else:
            ctx = multiprocessing.get_context("forkserver")  # never fork a parent that runs delta-rs' threads
            ctx.set_forkserver_preload(["cubepacs.lake.scan"])
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=workers, mp_context=ctx))
            futures = [pool.submit(scan_partition, p, table_uri, bulk_threshold, (max_header, max_nested))
                       for p in parts]
            outcomes = (f.result() for f in futures)
        for n, (part, files, errors, cpu) in enumerate(outcomes, 1):
            if workers > 1:
                worker_cpu += cpu  # in-process partitions are already in this process's CPU time
            if part is not None:
                written.append(part)
            result.files += files
            result.errors += errors
            if progress:
                progress(n, len(parts))
    result.committed = commit(table_uri, written, ARROW_SCHEMA, app_id=f"cubepacs.scan.{result.batch_id}",
                              version=1, custom_metadata={"cubepacs.batch_id": result.batch_id})
    result.cpu_s = (time.process_time() - self_cpu0) + worker_cpu
    result.wall_s = time.perf_counter() - t0
    return result
