"""One contract for every cache backend: in-process and Redis (a real server on 127.0.0.1)."""

from __future__ import annotations

import time
import uuid

import pytest

from cubepacs._registry import open_backend
from cubepacs.archive.cache.base import Cache


class CacheContract:
    url: str

    @pytest.fixture
    def cache(self) -> Cache:
        return open_backend("cache", self.url)  # type: ignore[no-any-return]

    def test_set_get_expire(self, cache: Cache) -> None:
        key = f"k{uuid.uuid4().hex}"
        assert cache.get(key) is None
        cache.set(key, b"v", ttl=0.2)
        assert cache.get(key) == b"v"
        time.sleep(0.35)
        assert cache.get(key) is None

    def test_generations_invalidate_per_tenant(self, cache: Cache) -> None:
        a, b = f"a{uuid.uuid4().hex[:6]}", f"b{uuid.uuid4().hex[:6]}"
        ka, kb = cache.key(a, "qido", "/studies"), cache.key(b, "qido", "/studies")
        cache.set(ka, b"A")
        cache.set(kb, b"B")
        cache.bump(a)
        assert cache.get(cache.key(a, "qido", "/studies")) is None
        assert cache.get(cache.key(b, "qido", "/studies")) == b"B"


class TestMemory(CacheContract):
    url = "memory://"


@pytest.mark.redis
class TestRedis(CacheContract):
    url = f"redis://127.0.0.1:6379/14?prefix=t{uuid.uuid4().hex[:8]}:"
