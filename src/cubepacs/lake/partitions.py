"""Plan balanced partitions from ZIP central directories, folder listings and cube files — no entry is read.

Partitions are balanced by compressed bytes: a ZIP larger than the target is split into entry ranges, small items
are packed together; the default aims at a few partitions per core.

Example
-------
>>> parts = plan(["../shared/data/series/ct_philips_ingenuity_tilt_54sl"], num_partitions=4)
>>> len(parts), sum(len(p.items) for p in parts)
(4, 55)
"""

from __future__ import annotations

import fnmatch
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from cubepacs.cube.format import MAGIC


@dataclass(frozen=True)
class WorkItem:
    """One unit of reading: a ZIP (or some of its entries), a plain file, or a cube."""

    kind: str  # "zip" | "file" | "cube"
    path: str
    entries: tuple[str, ...] = ()  # for "zip": the entries of this slice (empty: all)
    weight: int = 0  # compressed bytes


@dataclass
class Partition:
    """Work items read by one task."""

    index: int
    items: list[WorkItem] = field(default_factory=list)

    @property
    def weight(self) -> int:
        """Compressed bytes of the partition."""
        return sum(i.weight for i in self.items)


def _is_zip(path: Path) -> bool:
    return path.suffix.lower() == ".zip"


def _is_cube(path: Path) -> bool:
    if path.suffix.lower() != ".dcbs":
        return False
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def _walk(paths: list[str], recursive: bool) -> list[Path]:
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            walker = p.rglob("*") if recursive else p.glob("*")
            found.extend(sorted(f for f in walker if f.is_file() and not f.name.startswith(".")))
        elif p.exists():
            found.append(p)
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    return found


def zip_entries(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """Entries worth reading: files, not ``__MACOSX`` resource forks or hidden files."""
    out = []
    for info in zf.infolist():
        name = info.filename
        base = name.rsplit("/", 1)[-1]
        if not name:  # a nameless entry (crafted): nothing to call it by
            continue
        if info.is_dir() or name.startswith("__MACOSX/") or "/__MACOSX/" in name or base.startswith("."):
            continue
        out.append(info)
    return out


def _zip_items(path: Path, pattern: str | None) -> list[WorkItem]:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zip_entries(zf)
    except (zipfile.BadZipFile, OSError):
        return [WorkItem("zip", str(path), (), path.stat().st_size)]  # read_item reports the error row
    if pattern:
        infos = [i for i in infos if fnmatch.fnmatch(i.filename.lower(), pattern.lower())
                 or i.filename.lower().endswith(".zip")]
    return [WorkItem("zip", str(path), (i.filename,), max(i.compress_size, 1)) for i in infos]


def items_of(paths: list[str], pattern: str | None = None, recursive: bool = True) -> list[WorkItem]:
    """Every work item under ``paths`` (ZIPs expanded to one item per entry)."""
    items: list[WorkItem] = []
    for f in _walk(paths, recursive):
        if _is_zip(f):
            items.extend(_zip_items(f, pattern))
        elif _is_cube(f):
            items.append(WorkItem("cube", str(f), (), f.stat().st_size))
        elif not pattern or fnmatch.fnmatch(f.name.lower(), pattern.lower()):
            items.append(WorkItem("file", str(f), (), max(f.stat().st_size, 1)))
    return items


def _merge(items: list[WorkItem]) -> list[WorkItem]:
    """Join consecutive entries of the same ZIP into one item (one open of the archive per task)."""
    out: list[WorkItem] = []
    for item in items:
        last = out[-1] if out else None
        if last is not None and last.kind == "zip" == item.kind and last.path == item.path and item.entries:
            out[-1] = WorkItem("zip", last.path, last.entries + item.entries, last.weight + item.weight)
        else:
            out.append(item)
    return out


def plan(paths: list[str], num_partitions: int | None = None, pattern: str | None = None,
         recursive: bool = True) -> list[Partition]:
    """Balanced partitions over every item under ``paths`` (default: 3 per core)."""
    items = items_of(paths, pattern, recursive)
    if not items:
        return []
    n = max(1, min(num_partitions or 3 * (os.cpu_count() or 1), len(items)))
    target = sum(i.weight for i in items) / n
    parts: list[list[WorkItem]] = [[]]
    load = 0
    for item in items:
        if load >= target and len(parts) < n:
            parts.append([])
            load = 0
        parts[-1].append(item)
        load += item.weight
    return [Partition(k, _merge(p)) for k, p in enumerate(parts)]
