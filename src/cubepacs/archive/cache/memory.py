"""An in-process cache (the embedded default).

Connection string
-----------------
``memory://`` (optionally ``memory://?max_items=10000&max_bytes=134217728``).

Options
-------
``max_items``: entries kept; ``max_bytes``: their total size (default 128 MiB); the oldest go first.
Invalidation reaches only this process: when services run as separate processes, use ``redis://`` so the
indexer's invalidations reach the web servers.

Example
-------
>>> c = MemoryCache.from_url("memory://?max_items=5&max_bytes=10")
>>> c.set("a", b"123456"); c.set("b", b"123456"); c.get("a"), c.get("b")
(None, b'123456')
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from urllib.parse import parse_qsl, urlsplit

from cubepacs.archive.cache.base import Cache


class MemoryCache(Cache):
    """A bounded dict with expiry times."""

    def __init__(self, max_items: int = 10_000, max_bytes: int = 128 * 1024 * 1024) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._bytes = 0
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._generations: dict[str, int] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> MemoryCache:
        query = dict(parse_qsl(urlsplit(url).query))
        return cls(int(query.get("max_items", 10_000)), int(query.get("max_bytes", 128 * 1024 * 1024)))

    def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if item[0] < time.monotonic():
                del self._items[key]
                self._bytes -= len(item[1])
                return None
            return item[1]

    def set(self, key: str, value: bytes, ttl: float = 300.0) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old[1])
            self._items[key] = (time.monotonic() + ttl, value)
            self._bytes += len(value)
            while len(self._items) > self.max_items or self._bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= len(dropped)

    def generation(self, tenant: str) -> int:
        with self._lock:
            return self._generations.get(tenant, 0)

    def bump(self, tenant: str) -> None:
        with self._lock:
            self._generations[tenant] = self._generations.get(tenant, 0) + 1
