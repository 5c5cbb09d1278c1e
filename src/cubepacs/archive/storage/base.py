"""The storage interface every backend implements.

Example
-------
>>> issubclass(Storage, object)
True
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from cubepacs.archive.storage.guard import DiskGuard


class Storage(ABC):
    """Durable key → bytes storage. ``put`` returns only once the bytes are durable.

    ``guard``: when set (``service.open_backends``), ``put_received`` first asks it whether there is room
    (``storage/guard.py``) and raises ``StorageFullError`` when there is not.
    """

    guard: DiskGuard | None = None

    def admit(self) -> None:
        """Raise ``StorageFullError`` when new instances are refused (the free-space watermark)."""
        if self.guard is not None:
            self.guard.check()

    def refusal(self) -> str | None:
        """Why new instances are refused (the free-space watermark), or None (STOW-RS asks before it reads)."""
        return self.guard.refusal() if self.guard is not None else None

    @classmethod
    @abstractmethod
    def from_url(cls, url: str) -> Storage:
        """Open the storage named by ``url``."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` durably (atomic: readers see the old object or the new one)."""

    def put_received(self, key: str, data: bytes, header_size: int | None = None) -> None:
        """Store an instance just received (C-STORE, STOW-RS) as ``put`` does. A backend may choose not to keep
        it in memory, as most of it is read much later if at all — but for its first ``header_size`` bytes (the
        DICOM header before the pixel data; None: all), which a series' first ``/metadata`` reads (``FileStorage``
        drops the rest from the OS page cache)."""
        self.admit()
        self.put(key, data)

    PROBE_PREFIX = ".cubepacs-probe/"  # reserved: no instance key starts with a dot

    def probe(self) -> None:
        """Reach the storage for real or raise, naming what failed (``serve --check``, ``/readyz``): by default a
        put, get and delete of a probe object under :data:`PROBE_PREFIX`."""
        import uuid

        key = f"{self.PROBE_PREFIX}{uuid.uuid4().hex}"
        self.put(key, b"probe")
        try:
            if self.get(key) != b"probe":
                raise OSError(f"storage probe {key}: read back other bytes than were written")
        finally:
            self.delete(key)

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes; ``MissingObjectError`` (a KeyError) when absent."""

    def view(self, key: str) -> bytes:
        """The object's bytes for a reader that looks at a part of them (a header); KeyError when absent.
        ``get`` by default; ``FileStorage`` maps the file, so that only the pages read come from the disk."""
        return self.get(key)

    def open_read(self, key: str) -> IO[bytes]:
        """The object as a binary file read from its start (close it when done); ``MissingObjectError`` (a
        KeyError) when absent. A download reads it a chunk at a time (``web/zipstream.py``), so memory is bounded
        by a chunk — where the backend reads as the caller reads: ``FileStorage`` (the file itself) and
        ``S3Storage`` (the GET's body) do; by default the whole object is read first, as ``get``.

        Example
        -------
        >>> import tempfile
        >>> from cubepacs.archive.storage.file import FileStorage
        >>> s = FileStorage(tempfile.mkdtemp()); s.put("k", b"0123456789")
        >>> with s.open_read("k") as f:
        ...     f.read(4), f.read()
        (b'0123', b'456789')
        """
        return io.BytesIO(self.get(key))

    @abstractmethod
    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """True when ``key`` is stored."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when absent)."""

    def keys(self, prefix: str = "") -> list[str]:
        """Every key starting with ``prefix``, sorted (backends that can list override this)."""
        raise NotImplementedError(f"{type(self).__name__} cannot list its keys")


class StorageFile:
    """A read-only, seekable file over one stored object, reading byte ranges on demand (no whole download):
    what the cube reader needs to serve one frame of a cube kept on object storage.

    Example
    -------
    >>> import tempfile
    >>> from cubepacs.archive.storage.file import FileStorage
    >>> s = FileStorage(tempfile.mkdtemp()); s.put("k", b"0123456789")
    >>> f = StorageFile(s, "k"); _ = f.seek(3); f.read(4)
    b'3456'
    """

    def __init__(self, storage: Storage, key: str) -> None:
        self.storage = storage
        self.key = key
        self.name = key
        self.pos = 0

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence != 0:
            raise ValueError("StorageFile supports absolute seeks only")
        self.pos = offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            raise ValueError("StorageFile reads need a length")
        data = self.storage.get_range(self.key, self.pos, n)
        self.pos += len(data)
        return data
