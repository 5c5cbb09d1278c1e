"""Files under a root folder.

Connection string
-----------------
``file:///srv/cubepacs/data`` (absolute) or ``file://./data`` (relative to the working folder).

Options
-------
``received=drop`` (the default) or ``received=keep``: whether a received instance's file (``put_received``)
stays in the OS page cache once it is durable. Dropped (all but its header: what a series' first ``/metadata``
reads before compaction), the next instance's write reuses its pages instead of
growing the cache into memory not touched before — on this project's VM the copy into new pages was a quarter
of the DIMSE workers' CPU (``docs/archive.md``, "Received files and the page cache"); kept, a frame asked right
after the C-STORE is read from memory rather than the disk. Writes go to a temporary file beside the target, are
fsynced, renamed, and the folder is fsynced.

Example
-------
>>> import tempfile
>>> s = FileStorage.from_url("file://" + tempfile.mkdtemp())
>>> s.put("t/1.2/3.dcm", b"abc"); s.get("t/1.2/3.dcm"), s.get_range("t/1.2/3.dcm", 1, 2)
(b'abc', b'bc')
>>> s.put_received("t/1.2/4.dcm", b"header" + b"pixels", header_size=6)  # durable; "pixels" left uncached
>>> s.view("t/1.2/4.dcm")[:6]  # mapped, not read: only the pages looked at come from the disk
b'header'
>>> FileStorage.from_url("file://" + tempfile.mkdtemp() + "?received=keep").keep_received
True
"""

from __future__ import annotations

import logging
import mmap
import os
from pathlib import Path
from typing import IO, cast
from urllib.parse import parse_qsl, urlsplit

from cubepacs._atomic import atomic_write
from cubepacs.archive.storage.base import Storage
from cubepacs.errors import BackendError, ConfigError, MissingObjectError

log = logging.getLogger("cubepacs.storage")


class FileStorage(Storage):
    """Objects as files under ``root``; keys are relative paths that may not leave it."""

    def __init__(self, root: str | os.PathLike[str], keep_received: bool = False) -> None:
        self.keep_received = keep_received
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._root = str(self.root)
        self._prefix = os.path.join(self._root, "")

    @classmethod
    def from_url(cls, url: str) -> FileStorage:
        parts = urlsplit(url)
        path = parts.netloc + parts.path
        if not path:
            raise ConfigError(f"file storage URL {url!r} names no folder")
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        received = options.pop("received", "drop")
        if options or received not in ("drop", "keep"):
            raise ConfigError(f"file storage URL {url!r}: the only option is received=drop|keep")
        return cls(path, keep_received=received == "keep")

    def _path(self, key: str) -> Path:
        # normpath, not resolve(): the key is checked lexically (no ".." may leave the root) without an lstat of
        # every folder on the way, which every C-STORE paid twice.
        path = os.path.normpath(os.path.join(self._root, key))
        if not path.startswith(self._prefix):
            raise ConfigError(f"storage key {key!r} leaves the storage root")
        return Path(path)

    def put(self, key: str, data: bytes) -> None:
        atomic_write(self._path(key), [data])

    def put_received(self, key: str, data: bytes, header_size: int | None = None) -> None:
        self.admit()
        drop = None if self.keep_received or header_size is None else header_size
        atomic_write(self._path(key), [data], drop_from=drop)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise MissingObjectError(key) from None

    def open_read(self, key: str) -> IO[bytes]:
        """The file itself, opened (read as the caller reads: a chunk in memory, not the file)."""
        try:
            return open(self._path(key), "rb")  # (the caller closes it)
        except FileNotFoundError:
            raise MissingObjectError(key) from None

    def view(self, key: str) -> bytes:
        """The file mapped read-only, read ahead of nothing (``MADV_RANDOM``): a reader of its header reads just
        those pages — cached, as a received file keeps them — not the pixel data the OS would read around them.
        Safe to map: a stored file is replaced by a rename, never rewritten or truncated in place."""
        try:
            with open(self._path(key), "rb") as f:
                if os.fstat(f.fileno()).st_size == 0:
                    return b""
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            raise MissingObjectError(key) from None
        if hasattr(mmap, "MADV_RANDOM"):
            mapped.madvise(mmap.MADV_RANDOM)
        return cast(bytes, mapped)  # bytes-like: slicing, find, struct, memoryview — what the DICOM readers use

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                f.seek(offset)
                return f.read(length)
        except FileNotFoundError:
            raise MissingObjectError(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def probe(self) -> None:
        """The root is a folder this process may write (no write: the free space is the guard's, ``guard.py``)."""
        if not self.root.is_dir():
            raise BackendError(f"storage folder {self.root} does not exist")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise BackendError(f"storage folder {self.root} is not writable (read-only file system or permissions)")

    def keys(self, prefix: str = "") -> list[str]:
        out = []
        for folder, _, files in os.walk(self.root):
            for name in files:
                if name.endswith(".tmp") and name.startswith("."):
                    continue
                key = os.path.relpath(os.path.join(folder, name), self.root).replace(os.sep, "/")
                if key.startswith(prefix):
                    out.append(key)
        return sorted(out)

    def clean_temporary(self, max_age: float = 600.0) -> int:
        """Remove temporary files (``.name.XXXX.tmp``) older than ``max_age`` seconds that a crash left behind
        (younger ones may be another process' writes in progress); returns how many were removed."""
        import time

        cutoff, removed = time.time() - max_age, 0
        for folder, _, files in os.walk(self.root):
            for name in files:
                if name.startswith(".") and name.endswith(".tmp"):
                    path = os.path.join(folder, name)
                    try:
                        if os.stat(path).st_mtime < cutoff:
                            os.unlink(path)
                            removed += 1
                    except OSError:
                        continue
        if removed:
            log.info("removed %d stale temporary file(s) under %s", removed, self.root)
        return removed

    def local_path(self, key: str) -> Path:
        """The file of ``key`` (lets the cube reader memory-map it)."""
        return self._path(key)
