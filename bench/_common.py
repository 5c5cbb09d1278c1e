"""Helpers the benchmarks share (bench/archive.py and bench/ingest.py both import this; neither imports the other)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx


def wait_http(url: str, headers: dict[str, str] | None = None, timeout: float = 60) -> None:
    """Wait until ``url`` answers anything below 500 (a server that has started), or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, headers=headers, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


def memory_mb(pid: int, field: str = "Pss") -> int:
    """Proportional set size (MB) of a server's whole process tree (cubepacs' DIMSE workers included; pages
    the processes share are counted once, split between them). ``field="Pss_Anon"``: only its anonymous memory
    (heaps; not the code and data pages of mapped libraries, which the kernel can drop and read back)."""
    total = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
            total += int(rollup.split(f"\n{field}:")[1].split()[0])
            pids += [int(c) for task in Path(f"/proc/{p}/task").glob("*")
                     for c in (task / "children").read_text().split()]
        except (OSError, IndexError):
            continue
    return total // 1024
