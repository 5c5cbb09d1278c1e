"""A shared cache in Redis, so that the indexer's invalidations reach every web process.

Connection string
-----------------
``redis://host:6379/1?prefix=site-a:`` (a password as ``redis://:secret@host:6379/1``; logged masked).

Options
-------
``prefix``: prepended to every key, so that deployments sharing a Redis never see each other's entries (default
``cubepacs:``). Values expire by Redis TTL; a tenant's generation is one Redis counter.

Example
-------
>>> RedisCache.from_url("redis://127.0.0.1:6379/14").get("nothing") is None  # doctest: +SKIP
True
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from cubepacs._registry import mask_url
from cubepacs.archive.cache.base import Cache
from cubepacs.errors import BackendError


class RedisCache(Cache):
    """Values with TTLs; generations as counters."""

    def __init__(self, url: str) -> None:
        import redis

        self.url = mask_url(url)
        query = dict(parse_qsl(urlsplit(url).query))
        self.prefix = query.pop("prefix", "cubepacs:")
        self.redis = redis.Redis.from_url(urlunsplit(urlsplit(url)._replace(query=urlencode(query))),
                                          socket_timeout=5)
        try:
            self.redis.ping()
        except Exception as exc:
            raise BackendError(f"cache {self.url} is not reachable: {type(exc).__name__}") from exc

    @classmethod
    def from_url(cls, url: str) -> RedisCache:
        return cls(url)

    def get(self, key: str) -> bytes | None:
        value: Any = self.redis.get(self.prefix + key)
        return bytes(value) if value is not None else None

    def set(self, key: str, value: bytes, ttl: float = 300.0) -> None:
        self.redis.set(self.prefix + key, value, px=int(ttl * 1000))

    def generation(self, tenant: str) -> int:
        value: Any = self.redis.get(f"{self.prefix}generation:{tenant}")
        return int(value or 0)

    def bump(self, tenant: str) -> None:
        self.redis.incr(f"{self.prefix}generation:{tenant}")

    def close(self) -> None:
        self.redis.close()
