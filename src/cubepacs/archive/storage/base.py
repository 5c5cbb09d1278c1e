"""The storage interface every backend implements.

Example
-------
>>> issubclass(Storage, object)
True
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class Storage(ABC):
    """Durable key → bytes storage. ``put`` returns only once the bytes are durable."""

    @classmethod
    @abstractmethod
    def from_url(cls, url: str) -> Storage:
        """Open the storage named by ``url``."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` durably (atomic: readers see the old object or the new one)."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes; KeyError when absent."""

    @abstractmethod
    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """True when ``key`` is stored."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when absent)."""
