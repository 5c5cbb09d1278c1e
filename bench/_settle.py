"""A benchmark that creates files waits out the last one's deletions on an ext4 without a journal.

Why: ext4 mounted without a journal (this VM's root file system: nothing under ``/proc/fs/jbd2``) will not reuse
an inode deleted in the last 60 seconds — 360 while its inode-table block is dirty, which it stays while new files
are being created next to it (``recently_deleted()`` in ``fs/ext4/ialloc.c``). Every file created then probes the
deleted inodes one by one: measured here, creating an empty file took 85–98 µs of CPU in ``/tmp`` minutes after a
benchmark had deleted its ≈ 5,000 files, and 21–29 µs once they were older; ``perf`` put 8 % of our DIMSE workers'
CPU in ``find_inode_bit`` then. Both servers pay it per instance, which pulls the ratio toward 1: a services-layout
run started right after an embedded one gave 1.30× at 4 associations, the same run ten minutes later 1.66×.

So each benchmark deletes its files through :func:`cleanup`, which notes the time, and the next one calls
:func:`settle` first, which waits for the rest of the 360 seconds when the file system has no journal
(``--no-settle`` in the benchmarks skips it; files deleted by anything else — a test run — are not known here).

Example
-------
>>> import tempfile
>>> settle(tempfile.gettempdir(), wait=False) >= 0
True
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

RECENT_SECONDS = 360  # RECENTCY_MIN (60) + RECENTCY_DIRTY (300), fs/ext4/ialloc.c
MARK = "cubepacs-bench-deleted"


def _journal_less(folder: str) -> bool:
    """Whether ``folder`` is on an ext4 file system without a journal."""
    st = os.stat(folder)
    device = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[2] == device and fields[fields.index("-") + 1] == "ext4":
            name = Path(fields[fields.index("-") + 2]).name
            jbd2 = Path("/proc/fs/jbd2")
            return not (jbd2.is_dir() and any(p.name.startswith(name + "-") for p in jbd2.iterdir()))
    return False


def settle(folder: str, wait: bool = True) -> float:
    """Seconds waited (with ``wait=False``: that would be waited) before creating files in ``folder``."""
    mark = Path(folder) / MARK
    try:
        left = RECENT_SECONDS - (time.time() - mark.stat().st_mtime)
    except FileNotFoundError:
        return 0.0
    if left <= 0 or not _journal_less(folder):
        return 0.0
    if wait:
        print(f"waiting {left:.0f} s: the last benchmark's deleted files are still recent to ext4 (no journal), "
              "and creating files next to them costs both servers extra (bench/_settle.py; --no-settle skips this)",
              flush=True)
        time.sleep(left)
    return left


def cleanup(path: Path) -> None:
    """Delete a benchmark's folder and note when (for the next benchmark's :func:`settle`)."""
    shutil.rmtree(path, ignore_errors=True)
    (path.parent / MARK).touch()
