"""What durability costs on this disk: the writes a C-STORE makes before it is acknowledged, timed one by one.

Usage: .venv/bin/python bench/fsync.py [--folder /path/on/the/archive/disk] [--n 200]

A CT file of the shared data (≈ 520 KB) is written n times: without fsync, with fsync, and as the archive does
(temporary file, fsync, rename, folder fsync); then the folder fsync alone, and a SQLite insert in WAL mode with
``synchronous=FULL`` (the embedded queue's publish) and ``NORMAL``. Wall-clock milliseconds per operation.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "series" / "ct_ge_lightspeedvct_chest_100sl"


def timed(label: str, n: int, step: Callable[[int], object]) -> None:
    start = time.perf_counter()
    for k in range(n):
        step(k)
    print(f"{label:44} {(time.perf_counter() - start) / n * 1000:7.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", default=".", help="a folder on the disk to measure (a scratch folder is made in it)")
    ap.add_argument("--n", type=int, default=200, help="operations of each kind")
    args = ap.parse_args()
    data = sorted(DATA.iterdir())[0].read_bytes()
    root = Path(tempfile.mkdtemp(prefix="cubepacs-fsync-", dir=args.folder))

    def plain(k: int) -> None:
        (root / f"a{k}").write_bytes(data)

    def synced(k: int) -> None:
        with open(root / f"b{k}", "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def archived(k: int) -> None:
        with open(root / f".c{k}.tmp", "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(root / f".c{k}.tmp", root / f"c{k}")
        folder_sync(k)

    def folder_sync(_k: int) -> None:
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    try:
        print(f"{len(data)} bytes per file, {args.n} operations each, in {root}")
        timed("write", args.n, plain)
        timed("write + fsync", args.n, synced)
        timed("write + fsync + rename + folder fsync", args.n, archived)
        timed("folder fsync alone", args.n, folder_sync)
        conn = sqlite3.connect(root / "q.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE m (id INTEGER PRIMARY KEY, p TEXT)")
        for mode in ("FULL", "NORMAL"):
            conn.execute(f"PRAGMA synchronous={mode}")
            timed(f"SQLite WAL insert, synchronous={mode}", args.n,
                  lambda _k: conn.execute("INSERT INTO m (p) VALUES (?)", ("x" * 600,)))
        conn.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
