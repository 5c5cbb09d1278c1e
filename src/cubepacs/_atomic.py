"""Atomic, durable file writes: a temporary file in the target folder, fsync, rename, folder fsync.

Readers see the old file or the new one, never half of one; after return, the new one survives a crash.

Example
-------
>>> import tempfile, pathlib
>>> target = pathlib.Path(tempfile.mkdtemp()) / "a" / "x.bin"
>>> atomic_write(target, [b"ab", b"c"]); target.read_bytes()
b'abc'
>>> import array
>>> atomic_write(target, [array.array("H", [1, 2])]); target.read_bytes()  # any buffer, written byte for byte
b'\\x01\\x00\\x02\\x00'
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterable
from pathlib import Path

_COUNTER = itertools.count()
_MADE: set[str] = set()  # folders made or found already (one removed since is made again on the next write)
_DONTNEED = getattr(os, "POSIX_FADV_DONTNEED", None)  # not on macOS: pages are kept there
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def atomic_write(path: Path, parts: Iterable[bytes | memoryview], drop_from: int | None = None) -> None:
    """Write ``parts`` to ``path`` atomically and durably (creating the folder). With ``drop_from``, once fsynced,
    the file's pages from that offset on (whole pages) are dropped from the OS page cache (``POSIX_FADV_DONTNEED``)
    — for data written now and read much later, whose pages the next write can then reuse (``docs/archive.md``,
    "Received files and the page cache")."""
    folder = os.path.dirname(path)
    if folder not in _MADE:
        os.makedirs(folder, exist_ok=True)
        if len(_MADE) > 100_000:
            _MADE.clear()
        _MADE.add(folder)
    # unique without a random name: process, thread and a counter (O_EXCL still refuses a clash)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}-{threading.get_ident()}-"
                               f"{next(_COUNTER)}.tmp")
    try:
        fd = os.open(tmp, _FLAGS, 0o600)
    except FileNotFoundError:  # the folder went away since (removed by someone else): make it again
        os.makedirs(folder, exist_ok=True)
        fd = os.open(tmp, _FLAGS, 0o600)
    try:
        try:
            _write(fd, parts, drop_from)
            os.fsync(fd)
            if drop_from is not None and _DONTNEED is not None:
                try:
                    os.posix_fadvise(fd, drop_from, 0, _DONTNEED)  # clean pages after the fsync: dropped now
                except OSError:  # only advice: a file system that refuses it keeps the pages, nothing else changes
                    pass
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write(fd: int, parts: Iterable[bytes | memoryview], cut: int | None) -> None:
    """Write ``parts`` in order; a part crossing offset ``cut`` is written in two ``write()`` calls split there.

    Why: the page cache keeps a large write in large folios (several pages each), and ``POSIX_FADV_DONTNEED``
    leaves a folio alone unless all of it is in the range — a 1 MB file written at once kept all 256 pages when
    asked to drop those after its first 8 KB (``fincore``). Split, the pages after ``cut`` are in folios of
    their own."""
    pos = 0
    for p in parts:
        view = memoryview(p)
        if view.itemsize != 1 or view.ndim != 1:
            view = view.cast("B")  # os.write counts bytes; slice in bytes too
        size = len(view)
        pieces = (view[: cut - pos], view[cut - pos :]) if cut is not None and pos < cut < pos + size else (view,)
        for piece in pieces:
            rest = piece
            while rest:
                rest = rest[os.write(fd, rest):]
        pos += size
