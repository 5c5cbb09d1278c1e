"""The indexer: consume storage events, upsert the index, acknowledge after the index write.

Replaying an event changes nothing (the instance row is the idempotency key), so at-least-once delivery gives
effectively-once indexing.

Example
-------
>>> import tempfile, os
>>> from cubepacs.archive.queue.embedded import EmbeddedQueue
>>> from cubepacs.archive.index.store import Index
>>> q = EmbeddedQueue(os.path.join(tempfile.mkdtemp(), "q.db"))
>>> q.publish("storage_queue", {"tenant": "t", "study_uid": "1", "series_uid": "1.1", "sop_uid": "1.1.1",
...                             "key": "t/1/1.1/1.1.1.dcm", "attrs": {}})
>>> Indexer(q, Index.from_url("sqlite://")).run_once()
1
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from cubepacs.archive.cache.base import Cache
from cubepacs.archive.index.store import Index
from cubepacs.archive.observability import metrics
from cubepacs.archive.observability.accesslog import DeltaLog, image_row, object_row
from cubepacs.archive.queue.base import IMAGE_TOPIC, LOG_TOPIC, STATE_TOPIC, STORAGE_TOPIC, Queue

log = logging.getLogger("cubepacs.indexer")
GROUP = "indexer"


class Indexer:
    """Moves storage events into the index."""

    def __init__(self, queue: Queue, index: Index, batch: int = 200, cache: Cache | None = None,
                 logs: dict[str, DeltaLog] | None = None, feeds: bool = False, linger: float = 0.2) -> None:
        self.queue = queue
        self.index = index
        self.batch = batch
        self.cache = cache
        self.logs = logs or {}
        self.feeds = feeds
        self.linger = linger
        self.polled = 0
        self.stopped = threading.Event()

    def run_once(self, timeout: float = 0.0) -> int:
        """Index one batch of waiting events; return how many changed the index."""
        messages = self.queue.poll(STORAGE_TOPIC, GROUP, self.batch, timeout)
        self.polled = len(messages)
        new = [m.payload["tenant"] for m in messages if m.payload.get("op") == "deleted"]  # only caches are stale
        stored = [m.payload for m in messages if m.payload.get("op") != "deleted"]
        for ev, changed in zip(stored, self.index.add_instances(stored) if stored else [], strict=True):
            if changed:
                new.append(ev["tenant"])
                self._record(ev)
        metrics.INDEXED.inc(len(new))
        if self.cache is not None:
            for tenant in set(new):  # cached QIDO answers and metadata of these tenants are now stale
                self.cache.bump(tenant)
        self.queue.ack(GROUP, messages)
        return len(new)

    def _record(self, ev: dict[str, Any]) -> None:
        """Log rows (Delta tables) and feed messages (Kafka topics for Doris) of one newly indexed instance."""
        obj, img = object_row(ev), image_row(ev)
        if "dicom_object_meta" in self.logs:
            self.logs["dicom_object_meta"].add(**obj)
        if "dicom_image_meta" in self.logs:
            self.logs["dicom_image_meta"].add(**img)
        if self.feeds:
            self.queue.publish(LOG_TOPIC, obj)
            self.queue.publish(IMAGE_TOPIC, img)
            state = self.index.search_series(ev["tenant"], {"SeriesInstanceUID": [ev["series_uid"]]},
                                             ev["study_uid"], limit=1)
            if state:
                self.queue.publish(STATE_TOPIC, {k: (v.isoformat() if hasattr(v, "isoformat") else v)
                                                 for k, v in state[0].items()})

    def run(self, poll_timeout: float = 0.5, max_backoff: float = 30.0) -> None:
        """Run until :meth:`stop`; a failing batch is not acknowledged and is retried with exponential backoff
        (a queue or index that is down is waited for, never skipped).

        After a batch smaller than ``batch`` the indexer lingers ``linger`` seconds, so that the events of a busy
        ingest are indexed together (one statement per batch and one series update per series, not per
        instance); the first event after a quiet spell is indexed at once.
        """
        delay = 0.5
        next_lag = 0.0
        while not self.stopped.is_set():
            try:
                self.run_once(poll_timeout)
                if 0 < self.polled < self.batch:
                    self.stopped.wait(self.linger)
                if time.monotonic() >= next_lag:  # the lag gauges, every few seconds
                    next_lag = time.monotonic() + 5
                    metrics.update_queue_lag(self.queue, STORAGE_TOPIC, GROUP)
                delay = 0.5
            except Exception as exc:
                log.warning("indexing failed (%s: %s); retrying in %.1f s", type(exc).__name__, exc, delay)
                self.stopped.wait(delay)
                delay = min(delay * 2, max_backoff)

    def stop(self) -> None:
        """Ask :meth:`run` to return."""
        self.stopped.set()
