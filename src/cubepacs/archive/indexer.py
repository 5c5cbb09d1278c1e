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

from cubepacs.archive.cache.base import Cache
from cubepacs.archive.index.store import Index
from cubepacs.archive.queue.base import STORAGE_TOPIC, Queue

log = logging.getLogger("cubepacs.indexer")
GROUP = "indexer"


class Indexer:
    """Moves storage events into the index."""

    def __init__(self, queue: Queue, index: Index, batch: int = 200, cache: Cache | None = None) -> None:
        self.queue = queue
        self.index = index
        self.batch = batch
        self.cache = cache
        self.stopped = threading.Event()

    def run_once(self, timeout: float = 0.0) -> int:
        """Index one batch of waiting events; return how many were new."""
        messages = self.queue.poll(STORAGE_TOPIC, GROUP, self.batch, timeout)
        new = [m.payload["tenant"] for m in messages if self.index.add_instance(m.payload)]
        if self.cache is not None:
            for tenant in set(new):  # cached QIDO answers and metadata of these tenants are now stale
                self.cache.bump(tenant)
        self.queue.ack(GROUP, messages)
        return len(new)

    def run(self, poll_timeout: float = 0.5) -> None:
        """Run until :meth:`stop`; a failing batch is retried (not acknowledged) after a pause."""
        while not self.stopped.is_set():
            try:
                self.run_once(poll_timeout)
            except Exception:
                log.exception("indexing failed; retrying")
                self.stopped.wait(1.0)

    def stop(self) -> None:
        """Ask :meth:`run` to return."""
        self.stopped.set()
