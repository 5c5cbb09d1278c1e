"""Atomic, durable file writes: a temporary file in the target folder, fsync, rename, folder fsync.

Readers see the old file or the new one, never half of one; after return, the new one survives a crash.

Example
-------
>>> import tempfile, pathlib
>>> target = pathlib.Path(tempfile.mkdtemp()) / "a" / "x.bin"
>>> atomic_write(target, [b"ab", b"c"]); target.read_bytes()
b'abc'
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def atomic_write(path: Path, parts: Iterable[bytes | memoryview]) -> None:
    """Write ``parts`` to ``path`` atomically and durably (creating the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for p in parts:
                f.write(p)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
