"""Read-ahead for a viewer scrolling a series: the next frames decoded before they are asked for.

A viewer opening a series asks for one frame of each instance, one after the other, in display order; each first
request of an instance has to find its row in the index, read the file (or the cube's block) and decode the frame
— for a cube's HTJ2K frame of a 512² CT, ≈ 1.6 ms of decoding alone. Like a kernel's file read-ahead, this
notices two requests for nearby instances of one series (at most ``STEP`` apart in instance-number order, either
direction: a viewer's parallel requests arrive a little out of order) and then, on background threads
(``THREADS``: one per core but one, at most 4), keeps the next ``DEPTH`` instances' frame warm: their index rows
and decoded values put where ``wado.hot_frame_pieces`` finds them, so that the event loop answers those requests
at once. Requests in any other order get no read-ahead (and cost only a dictionary look-up here). Only
single-frame requests are followed (frame *f* of one instance, then frame *f* of its neighbour). Whatever the
read-ahead cannot do — a row gone, an undecodable frame — it leaves alone: the request itself will meet it and
answer it.

Example
-------
>>> ahead = ReadAhead(lambda key: [], lambda row, frame: None)
>>> ahead.seen(("t", "1", "1.1"), "1.1.1", 1)  # first request of a series: nothing known yet
>>> ahead.close()
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cachetools import LRUCache

from cubepacs.archive.web.hot import ROW_SECONDS

log = logging.getLogger(__name__)

DEPTH = 8  # instances kept warm ahead of a scrolling viewer
SERIES = 64  # series whose instance order is kept
STEP = 4  # the largest step between two requests still taken as scrolling (a viewer's parallel requests
#            arrive a little out of order)
MAX_PENDING = 16  # background tasks waiting at most (more viewers than that: the rest get no read-ahead)
THREADS = max(1, min(4, (os.cpu_count() or 1) - 1))  # a core left for the requests themselves (1 here, 2 vCPUs)

SeriesKey = tuple[str, str, str]  # tenant, study, series


class _Series:
    """What is known of one series: its rows in order, the last position asked, how far it is warm."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.loaded = time.monotonic()
        self.rows = rows
        self.position = {r["sop_uid"]: k for k, r in enumerate(rows)}
        self.last: int | None = None
        self.ahead: int | None = None  # the furthest position queued for warming, in the scrolling direction


class ReadAhead:
    """Notices sequential frame requests (``seen``) and warms what comes next on one background thread.

    ``rows(key)``: the series' frame-source rows in instance-number order (``Index.frame_sources``);
    ``warm(row, frame)``: put that instance's row and decoded frame in memory."""

    def __init__(self, rows: Callable[[SeriesKey], list[dict[str, Any]]],
                 warm: Callable[[dict[str, Any], int], None], depth: int = DEPTH, threads: int = THREADS) -> None:
        self._rows, self._warm, self._depth, self._threads = rows, warm, depth, max(1, threads)
        self._series: LRUCache[SeriesKey, _Series] = LRUCache(SERIES)
        self._last_sop: dict[SeriesKey, str] = {}
        self._lock = threading.Lock()
        self._pending = 0
        self._loading: set[SeriesKey] = set()  # series whose order is being read
        self._pool: ThreadPoolExecutor | None = None

    def seen(self, key: SeriesKey, sop: str, frame: int) -> None:
        """Frame ``frame`` of instance ``sop`` of series ``key`` was asked for (cheap: may queue work)."""
        with self._lock:
            series = self._series.get(key)
            if series is None or time.monotonic() - series.loaded > ROW_SECONDS:
                before = self._last_sop.get(key)
                self._last_sop[key] = sop
                if len(self._last_sop) > SERIES:
                    self._last_sop.pop(next(iter(self._last_sop)))
                if before is not None and before != sop and key not in self._loading:
                    if self._submit(self._load, key, before, sop, frame):  # a second instance: learn the order
                        self._loading.add(key)
                return
            self._step(key, series, sop, frame)

    def _step(self, key: SeriesKey, series: _Series, sop: str, frame: int) -> None:
        """Called with the lock held: move the series' position, queue warming when the scroll is sequential."""
        p = series.position.get(sop)
        last, series.last = series.last, p
        if p is None or last is None or not 0 < abs(p - last) <= STEP:
            series.ahead = None
            return
        d = 1 if p > last else -1
        ahead = series.ahead if series.ahead is not None and (series.ahead - p) * d > 0 else p
        if (ahead - p) * d > self._depth // 2:
            return  # still warm far enough ahead
        stop = max(-1, min(len(series.rows), p + d * (self._depth + 1)))
        targets = [series.rows[k] for k in range(ahead + d, stop, d)]
        shares = [targets[t::self._threads] for t in range(self._threads) if targets[t::self._threads]]
        # decoders release the GIL: one share per thread; when one cannot be queued, the next request tries again
        if all([self._submit(self._warm_all, share, frame) for share in shares]):
            series.ahead = ahead + d * len(targets)

    def _submit(self, fn: Callable[..., None], *args: Any) -> bool:
        """Queue ``fn(*args)`` on the background thread unless ``MAX_PENDING`` tasks wait already."""
        if self._pending >= MAX_PENDING:
            return False
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="cubepacs-readahead")
        self._pending += 1
        self._pool.submit(self._run, fn, *args)
        return True

    def _run(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:  # the request that needs it will meet the same failure and answer it
            log.debug("read-ahead failed", exc_info=True)
        finally:
            with self._lock:
                self._pending -= 1

    def _load(self, key: SeriesKey, before: str, sop: str, frame: int) -> None:
        """Learn the series' order, then act on the two requests seen so far."""
        try:
            series = _Series(self._rows(key))
        finally:
            with self._lock:
                self._loading.discard(key)
        with self._lock:
            self._series[key] = series
            series.last = series.position.get(before)
            self._step(key, series, sop, frame)

    def _warm_all(self, rows: list[dict[str, Any]], frame: int) -> None:
        for row in rows:
            try:
                self._warm(row, frame)
            except Exception:  # this instance only; the next ones may still be fine
                log.debug("read-ahead of %s failed", row.get("sop_uid"), exc_info=True)

    def close(self) -> None:
        """Stop the background thread (queued work is dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
