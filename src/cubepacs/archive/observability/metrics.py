"""Prometheus metrics (prometheus-client) of every service, and the readiness check of its backends.

Served at ``/metrics`` by the web service and, for the other services run alone, on ``metrics_port`` (a plain
HTTP listener of prometheus-client on ``host``). Names start with ``cubepacs_``.

Example
-------
>>> STORES.labels(tenant="t", status="0x0000").inc()
>>> b"cubepacs_cstore_total" in render()
True
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

STORES = Counter("cubepacs_cstore", "C-STORE requests handled", ["tenant", "status"])
STORE_SECONDS = Histogram("cubepacs_cstore_seconds", "C-STORE handling time (write and queue included)",
                          ["tenant"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
STORE_BYTES = Counter("cubepacs_cstore_bytes", "bytes stored by C-STORE", ["tenant"])
ASSOCIATIONS_OPEN = Gauge("cubepacs_associations_open", "DIMSE associations open", multiprocess_mode="livesum")
ASSOCIATIONS_REFUSED = Counter("cubepacs_associations_refused", "associations rejected or aborted", ["reason"])
QUEUE_WAITING = Gauge("cubepacs_queue_waiting", "storage events not yet indexed", multiprocess_mode="mostrecent")
QUEUE_OLDEST = Gauge("cubepacs_queue_oldest_seconds", "age of the oldest storage event not yet indexed",
                     multiprocess_mode="mostrecent")
INDEXED = Counter("cubepacs_indexed_instances", "instances the indexer added or replaced")
BUILDS = Counter("cubepacs_webworker_builds", "series built by the web worker", ["result"])
NOT_COMPACTED = Counter("cubepacs_instances_not_compacted", "instances left out of their series' cube (served "
                        "from their files): the builder could not put them in a cube that reads back")
REFUSED = Counter("cubepacs_instances_refused", "instances refused, never stored (unreadable, no UIDs, another "
                  "study than the request's)", ["tenant", "protocol"])
HTTP = Counter("cubepacs_http_requests", "HTTP requests", ["route", "method", "status"])
HTTP_SECONDS = Histogram("cubepacs_http_seconds", "HTTP request time", ["route"],
                         buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
CACHE = Counter("cubepacs_cache_lookups", "cache lookups", ["result"])
DISK_FREE = Gauge("cubepacs_disk_free_bytes", "free space on a folder the archive writes", ["path"],
                  multiprocess_mode="mostrecent")
DISK_REFUSING = Gauge("cubepacs_disk_refusing", "1 while new instances are refused (free space below min_free_mb)",
                      multiprocess_mode="mostrecent")
READ_AHEAD = Counter("cubepacs_frames_read_ahead", "frames decoded ahead of a viewer scrolling a series")


def registry() -> CollectorRegistry:
    """The registry to expose: this process' own, or — when DIMSE worker processes run (prometheus-client's
    multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR`` set before it was imported) — all processes' merged."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
    return merged


def render() -> bytes:
    """The metrics in Prometheus' text format."""
    return bytes(generate_latest(registry()))


CONTENT_TYPE = CONTENT_TYPE_LATEST


def update_queue_lag(queue: Any, topic: str, group: str) -> None:
    """Refresh the queue lag gauges from the backend (when it can tell)."""
    lag = queue.lag(topic, group)
    if lag is not None:
        QUEUE_WAITING.set(lag[0])
        QUEUE_OLDEST.set(lag[1])


def readiness(storage: Any, queue: Any, index: Any) -> dict[str, str]:
    """Each backend "ok" or the one-line reason it is not reachable (the storage with real requests:
    ``Storage.probe``), and ``disk``: "ok" or why new instances are refused (the free-space watermark)."""
    from sqlalchemy import text

    checks: dict[str, str] = {}

    def check(name: str, probe: Any) -> None:
        start = time.perf_counter()
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        checks[f"{name}_ms"] = f"{(time.perf_counter() - start) * 1000:.1f}"

    def index_probe() -> None:
        with index.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    check("index", index_probe)
    check("queue", queue.ping)
    check("storage", storage.probe)
    guard = getattr(storage, "guard", None)
    if guard is not None:
        check("disk", guard.check)
    return checks
