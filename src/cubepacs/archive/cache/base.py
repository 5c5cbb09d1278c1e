"""The cache interface, and invalidation by generation: every cached answer of a tenant carries the tenant's
generation number in its key, and the indexer bumps it when anything of the tenant changes — so no stale answer
is ever served, across processes, without listing keys to delete.

Example
-------
>>> from cubepacs.archive.cache.memory import MemoryCache
>>> c = MemoryCache()
>>> key = c.key("t", "qido", "/studies"); c.set(key, b"[]"); c.get(key)
b'[]'
>>> c.bump("t"); c.get(c.key("t", "qido", "/studies")) is None
True
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class Cache(ABC):
    """Bytes by key with a time to live; integer generations per tenant."""

    @classmethod
    @abstractmethod
    def from_url(cls, url: str) -> Cache:
        """Open the cache named by ``url``."""

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """The cached bytes, or None."""

    @abstractmethod
    def set(self, key: str, value: bytes, ttl: float = 300.0) -> None:
        """Cache ``value`` for ``ttl`` seconds."""

    @abstractmethod
    def generation(self, tenant: str) -> int:
        """The tenant's current generation."""

    @abstractmethod
    def bump(self, tenant: str) -> None:
        """Invalidate everything cached for ``tenant``."""

    def key(self, tenant: str, kind: str, what: str) -> str:
        """A cache key valid until the tenant's next change."""
        return f"cubepacs:{kind}:{tenant}:{self.generation(tenant)}:{what}"

    def close(self) -> None:  # noqa: B027 - optional
        """Release connections."""
