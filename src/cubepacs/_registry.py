"""Backends chosen by URL: a table from scheme to ``module:Class`` with an install hint, imported on first use.

Example
-------
>>> mask_url("postgresql://app:s3cret@db:5432/pacs")
'postgresql://app:***@db:5432/pacs'
>>> try:
...     resolve("queue", "embdded:///tmp/q")
... except ValueError as exc:
...     print(exc)
unknown queue URL scheme 'embdded' (did you mean 'embedded'?); known: embedded, redis, kafka
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cubepacs.errors import ConfigError

# kind -> scheme -> ("module:Class", extra to install)
BACKENDS: dict[str, dict[str, tuple[str, str]]] = {
    "storage": {
        "file": ("cubepacs.archive.storage.file:FileStorage", ""),
        "s3": ("cubepacs.archive.storage.s3:S3Storage", "cubepacs[s3]"),
    },
    "queue": {
        "embedded": ("cubepacs.archive.queue.embedded:EmbeddedQueue", ""),
        "redis": ("cubepacs.archive.queue.redis:RedisQueue", "cubepacs[redis]"),
        "kafka": ("cubepacs.archive.queue.kafka:KafkaQueue", "cubepacs[kafka]"),
    },
    "cache": {
        "memory": ("cubepacs.archive.cache.memory:MemoryCache", ""),
        "redis": ("cubepacs.archive.cache.redis:RedisCache", "cubepacs[redis]"),
    },
    "index": {
        "sqlite": ("cubepacs.archive.index.store:Index", ""),
        "postgresql": ("cubepacs.archive.index.store:Index", "cubepacs[postgres]"),
    },
}
_CACHE: dict[str, type[Any]] = {}


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (for logs and errors)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def resolve(kind: str, url: str) -> type[Any]:
    """The backend class for ``url`` (its scheme, before any ``+driver``)."""
    scheme = urlsplit(url).scheme.split("+", 1)[0]
    table = BACKENDS[kind]
    if scheme not in table:
        near = difflib.get_close_matches(scheme, table, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError(f"unknown {kind} URL scheme {scheme!r}{hint}; known: {', '.join(table)}")
    target, extra = table[scheme]
    if target not in _CACHE:
        module, _, cls = target.partition(":")
        try:
            _CACHE[target] = getattr(importlib.import_module(module), cls)
        except ImportError as exc:
            need = f"; install it with: pip install '{extra}'" if extra else ""
            raise ConfigError(f"the {kind} backend for {mask_url(url)} needs {exc.name}{need}") from exc
    return _CACHE[target]


def open_backend(kind: str, url: str, **options: Any) -> Any:
    """Instantiate the backend for ``url`` through its ``from_url`` classmethod."""
    return resolve(kind, url).from_url(url, **options)
