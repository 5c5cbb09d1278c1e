"""Errors raised by cubepacs.

Every error derives from :class:`CubepacsError`; where a caller would naturally catch a builtin, the error
also subclasses it::

    CubepacsError
    ├── DicomReadError (ValueError)      a DICOM input that cannot be read; names the file and the offset
    ├── SeriesError (ValueError)         inputs that do not form one series (several series, none at all)
    ├── InvalidCubeError (ValueError)    a truncated or corrupted .dcbs file; names the block
    ├── CodecError (ValueError)          a codec that cannot encode or decode a frame losslessly
    ├── ConfigError (ValueError)         a bad setting or URL (unknown scheme, missing driver)
    ├── TenantError (PermissionError)    a request or association without a (known) tenant
    ├── MissingObjectError (KeyError)    a stored object the index names but the storage does not hold
    ├── BackendError (ConnectionError)   a storage, queue or index backend that does not answer
    │   └── StorageFullError             the disk is below its free-space watermark: new instances refused
    └── ListenError (OSError)            a port that cannot be listened on (taken, not permitted)

Example
-------
>>> from cubepacs.errors import InvalidCubeError, CubepacsError
>>> issubclass(InvalidCubeError, (CubepacsError, ValueError))
True
"""

from __future__ import annotations


class CubepacsError(Exception):
    """Root of all cubepacs errors."""


class DicomReadError(CubepacsError, ValueError):
    """A DICOM input could not be read.

    Attributes
    ----------
    source : str
        The file name (or ``<bytes #i>`` for in-memory input).
    offset : int or None
        Byte offset where the problem was found, when known.
    """

    def __init__(self, source: str, reason: str, offset: int | None = None) -> None:
        self.source = source
        self.reason = reason
        self.offset = offset
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{source}: {reason}{where}")


class SeriesError(CubepacsError, ValueError):
    """The inputs do not form exactly one series (none found, or several mixed together)."""


class InvalidCubeError(CubepacsError, ValueError):
    """A ``.dcbs`` file is truncated, corrupted or of an unknown version.

    Attributes
    ----------
    block : str
        The part of the file that failed (``header``, ``meta``, ``index``, ``frame 12``…).
    """

    def __init__(self, source: str, block: str, reason: str) -> None:
        self.source = source
        self.block = block
        self.reason = reason
        super().__init__(f"{source}: invalid cube ({block}): {reason}")


class CodecError(CubepacsError, ValueError):
    """A frame cannot be encoded or decoded with the requested codec."""


class ConfigError(CubepacsError, ValueError):
    """A setting or backend URL that cannot be used."""


class TenantError(CubepacsError, PermissionError):
    """No tenant, or an unknown one, for a request or an association."""


class MissingObjectError(CubepacsError, KeyError):
    """A storage key that names no object (a ``KeyError``, as the storage contract says)."""

    def __str__(self) -> str:  # KeyError's own str() quotes its argument
        return f"no stored object {self.args[0]!r}" if self.args else "no stored object"


class BackendError(CubepacsError, ConnectionError):
    """A backend (storage, queue, index) failed; the message never holds a password."""


class StorageFullError(BackendError):
    """The archive's disk is full or below its free-space watermark (``min_free_mb``): new instances are refused,
    reads go on (``archive/storage/guard.py``)."""


class ListenError(CubepacsError, OSError):
    """A listener that cannot be opened; the message names the address and port."""
